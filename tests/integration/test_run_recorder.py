"""The run recorder: the equity curve a backtest writes at every bar time, in memory or spilled to a file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.messages import OrderFilled
from keel.core.orders import LiquiditySide, OrderSide
from keel.integration.run_recorder import EquityPoint, RunRecorder
from keel.risk_management.position_manager import PositionManager

BTC = "BTCUSDT"


def test_the_point_of_a_bar_time_is_the_books_equity_and_gross_exposure_at_its_marks(real_data) -> None:
    # Arrange
    bars = real_data.bars(BTC, 3)
    bus = EventBus()
    book = PositionManager(Decimal("10000"), bus, SimulatedClock(bars[0].open_time))
    book.start()
    bus.publish(
        OrderFilled(
            client_order_id="c-1",
            venue_order_id="1",
            symbol=BTC,
            trade_id="1",
            side=OrderSide.BUY,
            last_quantity=Decimal("0.010"),
            last_price=Decimal(repr(bars[0].close)),
            commission=Decimal("0.5"),
            liquidity_side=LiquiditySide.TAKER,
            ts_event=bars[0].ts_event,
            ts_init=bars[0].ts_event,
        )
    )
    bus.publish(bars[2])
    bus.drain()
    recorder = RunRecorder()

    # Act
    recorder.record_equity_of(book, bars[2].ts_event)

    # Assert
    close, entry = Decimal(repr(bars[2].close)), Decimal(repr(bars[0].close))
    equity = Decimal("10000") + Decimal("0.010") * (close - entry) - Decimal("0.5")
    assert recorder.equity == [EquityPoint(bars[2].ts_event, equity, Decimal("0.010") * close)]


def test_a_spilled_equity_curve_keeps_its_tail_in_memory_and_gives_back_every_point(tmp_path: Path) -> None:
    # Arrange
    recorder = RunRecorder()
    recorder.spill_equity(tmp_path / "equity-spill.csv", kept=3)
    points = [EquityPoint(ts, Decimal("10000") + Decimal(ts) / 7, Decimal(ts)) for ts in range(1, 11)]

    # Act
    for point in points:
        recorder.record_equity(point)

    # Assert
    assert len(recorder.equity) < 6 and recorder.equity[-1] == points[-1]
    assert recorder.equity_spilled + len(recorder.equity) == 10
    assert list(recorder.equity_curve()) == points
