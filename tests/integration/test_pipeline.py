"""The pipeline wiring shared by backtest and paper runs."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, SimulatedClock
from keel.core.error_codes import BinanceErrorCode
from keel.core.fsm import ComponentState, TradingState
from keel.core.instruments import load_instruments
from keel.core.messages import (
    BarClosed,
    FundingRateUpdated,
    OrderRejected,
    PositionSide,
    SetTradingState,
    SignalAction,
    SignalGenerated,
    SubmitOrder,
)
from keel.core.orders import OrderSide, OrderType
from keel.core.ports import ExchangePort
from keel.integration.pipeline import EquityPoint, RunRecorder, build_pipeline
from keel.market_data.feeds import RecordedBarFeed


def test_a_raising_handler_degrades_its_component_and_the_run_goes_on() -> None:
    # Arrange
    config = load_config("backtest", environ={})
    bus = EventBus()
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), bus, SimulatedClock(0))
    pipeline.start()
    bus.drain()

    def broken_risk_handler(bar: BarClosed) -> None:
        raise ArithmeticError("bug in a risk handler")

    bus.subscribe(BarClosed, broken_risk_handler, name="risk.controller.volatility")
    bar = BarClosed(
        symbol="BTCUSDT",
        interval="1m",
        open_time=0,
        open=95505.4,
        high=95505.5,
        low=95502.7,
        close=95502.7,
        volume=16.536,
        ts_event=60_000_000_000,
        ts_init=60_000_000_000,
    )

    # Act
    bus.publish(bar)
    bus.drain()

    # Assert
    assert bus.handler_errors == 1
    assert pipeline.risk.state is ComponentState.DEGRADED
    assert pipeline.orders.state is ComponentState.RUNNING
    assert pipeline.positions.marks["BTCUSDT"] == Decimal("95502.7")


def test_the_venues_liquidation_reaches_the_position_book_and_the_recorder() -> None:
    # Arrange: BTCUSDT only, isolated at 100x; a 0.1 BTC long sent through the order manager on
    # the real bars of 2025-05-04 (the strategies may trade too).
    base = load_config("backtest", environ={})
    config = base.model_copy(
        update={
            "data": base.data.model_copy(update={"symbols": ("BTCUSDT",)}),
            "exchange": base.exchange.model_copy(update={"margin_type": "ISOLATED", "leverage": 100}),
            "strategy": base.strategy.model_copy(
                update={"name": "moving_average_cross", "fast_period": 900, "slow_period": 1000}
            ),
            "portfolio": base.portfolio.model_copy(update={"rebalance_interval_minutes": 0}),
        }
    )
    root = Path(__file__).resolve().parents[2]
    feed = RecordedBarFeed(
        root / "data" / config.data.bars,
        ("BTCUSDT",),
        "1m",
        root / "data" / config.data.funding,
        end_ns=1_746_403_200_000 * NANOS_PER_MILLI,
    )
    events = list(feed)
    clock = SimulatedClock(events[0].ts_event)
    bus = EventBus()
    pipeline = build_pipeline(config, load_instruments(root / "config" / "instruments.yaml"), bus, clock)
    pipeline.start()
    bus.drain()

    # Act
    for index, event in enumerate(events):
        clock.advance_to(event.ts_event)
        bus.publish(event)
        bus.drain()
        if index == 0:
            bus.publish(
                SubmitOrder(
                    client_order_id="manual-1",
                    symbol="BTCUSDT",
                    side=OrderSide.BUY,
                    order_type=OrderType.MARKET,
                    quantity=Decimal("0.100"),
                    ts_event=event.ts_event,
                    ts_init=event.ts_event,
                )
            )
            bus.drain()

    # Assert: whatever else the strategies traded, every liquidation's fill reached the books
    liquidations = pipeline.recorder.liquidations
    assert liquidations and pipeline.recorder.fills[0].client_order_id == "manual-1"
    fill_ids = [f.client_order_id for f in pipeline.recorder.fills]
    assert all(liquidation.client_order_id in fill_ids for liquidation in liquidations)
    assert pipeline.positions.quantity("BTCUSDT") == pipeline.exchange.account.quantity(("BTCUSDT", PositionSide.BOTH))
    assert pipeline.positions.fees_paid == pipeline.exchange.fees_paid
    assert any(isinstance(e, FundingRateUpdated) for e in events)
    assert pipeline.positions.equity() == pipeline.exchange.balance().margin_balance
    assert pipeline.orders.unknown_reports == 0


# --- orders the venue never rejects ---------------------------------------------------------------

_NEVER_REJECTED = {
    int(BinanceErrorCode.REDUCE_ONLY_REJECT),
    int(BinanceErrorCode.MIN_NOTIONAL),
    int(BinanceErrorCode.MARGIN_NOT_SUFFICIENT),
}
_PROPERTY_SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT")
_START_PRICES = {"BTCUSDT": 95502.7, "ETHUSDT": 1827.53, "XRPUSDT": 2.2}
# 2025-05-05 00:00 UTC: a funding time; the runs end long before the next one.
_PROPERTY_START_NS = 1_746_403_200_000 * NANOS_PER_MILLI

_signals = st.lists(
    st.tuples(st.sampled_from(_PROPERTY_SYMBOLS), st.sampled_from(list(SignalAction))), min_size=0, max_size=3
)
_steps = st.lists(
    st.tuples(
        st.lists(st.floats(-0.02, 0.02), min_size=3, max_size=3),  # each symbol's return over the bar
        st.sampled_from([0.5, 20.0, 1e6]),  # volume: the venue fills 10% of it, so IOC children may expire
        _signals,
    ),
    min_size=5,
    max_size=40,
)


def _property_config(gross_exposure: float, leverage: int, max_leverage: float, style: str) -> KeelConfig:
    base = load_config("backtest", environ={})
    return base.model_copy(
        update={
            "data": base.data.model_copy(update={"symbols": _PROPERTY_SYMBOLS, "start": None, "end": None}),
            "exchange": base.exchange.model_copy(update={"leverage": leverage}),
            "strategy": base.strategy.model_copy(
                update={"name": "moving_average_cross", "fast_period": 900, "slow_period": 1000, "warmup_bars": 0}
            ),
            "portfolio": base.portfolio.model_copy(
                update={
                    "allocator": "equal_weight",
                    "gross_exposure": gross_exposure,
                    "rebalance_threshold": 0.0,
                    "rebalance_interval_minutes": 1,
                    "no_trade_band": False,  # every random target is ordered: the cost rule would skip most
                }
            ),
            "risk": base.risk.model_copy(update={"max_leverage": max_leverage, "max_net_leverage": max_leverage}),
            "execution": base.execution.model_copy(update={"default_style": style, "twap_horizon_seconds": 180.0}),
        }
    )


def _bar(symbol: str, open_time: int, open_: float, close: float, volume: float) -> BarClosed:
    return BarClosed(
        symbol=symbol,
        interval="1m",
        open_time=open_time,
        open=open_,
        high=max(open_, close),
        low=min(open_, close),
        close=close,
        volume=volume,
        ts_event=open_time + NANOS_PER_MINUTE,
        ts_init=open_time + NANOS_PER_MINUTE,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=_steps,
    gross_exposure=st.sampled_from([0.002, 0.01, 0.05, 0.5, 2.0, 4.0]),
    leverage=st.sampled_from([1, 2, 5, 20]),
    max_leverage=st.sampled_from([1.0, 3.0, 6.0]),
    style=st.sampled_from(["AGGRESSIVE", "TWAP", "PASSIVE"]),
)
def test_random_targets_through_allocator_risk_and_router_are_never_rejected_by_the_venue(
    steps: list[tuple[list[float], float, list[tuple[str, SignalAction]]]],
    gross_exposure: float,
    leverage: int,
    max_leverage: float,
    style: str,
) -> None:
    # Arrange: the pipeline as a backtest wires it, the equal-weight allocator rebalancing every minute
    # (drifting prices make small orders, a small gross exposure dust-sized positions), signals at random.
    config = _property_config(gross_exposure, leverage, max_leverage, style)
    clock = SimulatedClock(_PROPERTY_START_NS)
    bus = EventBus()
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), bus, clock)
    rejected: list[OrderRejected] = []
    bus.subscribe(OrderRejected, rejected.append, name="test.rejections")
    pipeline.start()
    bus.drain()
    prices = dict(_START_PRICES)

    def run_bar(index: int, returns: list[float], volume: float) -> None:
        open_time = _PROPERTY_START_NS + index * NANOS_PER_MINUTE
        clock.advance_to(open_time + NANOS_PER_MINUTE)
        bus.drain()
        for symbol, change in zip(_PROPERTY_SYMBOLS, returns, strict=True):
            close = prices[symbol] * (1.0 + change)
            bus.publish(_bar(symbol, open_time, prices[symbol], close, volume))
            bus.drain()
            prices[symbol] = close

    # Act
    for index, (returns, volume, signals) in enumerate(steps):
        run_bar(index, returns, volume)
        for symbol, action in signals:
            now = clock.timestamp_ns()
            bus.publish(
                SignalGenerated(
                    strategy="random", symbol=symbol, action=action, strength=1.0, confidence=1.0, ts_event=now,
                    ts_init=now,
                )
            )  # fmt: skip
            bus.drain()
    now = clock.timestamp_ns()
    bus.publish(SetTradingState(state=TradingState.HALTED, reason="end of the test", ts_event=now, ts_init=now))
    bus.drain()
    for index in range(len(steps), len(steps) + 2):
        run_bar(index, [0.0, 0.0, 0.0], 1e6)

    # Assert: no order the venue should never reject was rejected; after a halt nothing stays on its way;
    # the position book agrees with the venue.
    assert [(r.code, r.reason) for r in rejected if r.code in _NEVER_REJECTED] == []
    for symbol in _PROPERTY_SYMBOLS:
        assert pipeline.risk.pending(symbol) == 0
        venue = pipeline.exchange.account.quantity((symbol, PositionSide.BOTH))
        assert pipeline.positions.quantity(symbol) == pipeline.orders.position(symbol) == venue


class _OtherVenue:
    name = "other"


def test_the_pipeline_holds_its_venue_by_the_exchange_port() -> None:
    # Arrange
    config = load_config("backtest", environ={})
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), EventBus(), SimulatedClock(0))
    elsewhere = dataclasses.replace(pipeline, exchange=_OtherVenue())

    # Act
    simulated = pipeline.simulated_exchange()

    # Assert
    assert isinstance(pipeline.exchange, ExchangePort)
    assert simulated is pipeline.exchange
    with pytest.raises(TypeError, match="the venue other is not the simulated exchange"):
        elsewhere.simulated_exchange()


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
