"""Pre-trade risk: AllocationProposed in, OrderApproved / OrderDenied out, on a bus.

The position book is marked by real bars (BTCUSDT closes at 95502.7 and ETHUSDT
at 1827.53 at 2025-05-04 15:34 UTC, ``data/ohlcv/binance_usdm_1m_2025-05``);
positions are given to it as ``OrderFilled`` events at those marks.
"""

from __future__ import annotations

import functools
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, SimulatedClock
from keel.core.fsm import TradingState
from keel.core.instruments import Instrument, load_instruments
from keel.core.messages import (
    AllocationProposed,
    BarClosed,
    OrderApproved,
    OrderCanceled,
    OrderDenied,
    OrderFilled,
    OrderSubmitted,
    SetTradingState,
    TradingStateChanged,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderType
from keel.market_data.loaders import load_ohlcv
from keel.risk_management.position_manager import PositionManager
from keel.risk_management.risk_controller import DenialReason, RiskController

ROOT = Path(__file__).resolve().parents[2]
BARS_1M = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
INSTRUMENTS_FILE = ROOT / "config" / "instruments.yaml"

CAPITAL = Decimal("10000")
MINUTE_NS = 60_000 * NANOS_PER_MILLI
BTC = "BTCUSDT"
ETH = "ETHUSDT"
LARGE = Decimal("1000000")


@functools.cache
def instruments() -> dict[str, Instrument]:
    return load_instruments(INSTRUMENTS_FILE)


@functools.cache
def first_bar(symbol: str) -> BarClosed:
    row = next(load_ohlcv(BARS_1M / f"{symbol}_1m.csv.gz").frame.head(1).itertuples(index=False))
    open_time = int(row.open_time_ms) * NANOS_PER_MILLI
    return BarClosed(
        symbol=symbol,
        interval="1m",
        open_time=open_time,
        open=float(row.open),
        high=float(row.high),
        low=float(row.low),
        close=float(row.close),
        volume=float(row.volume),
        ts_event=open_time + MINUTE_NS,
        ts_init=open_time + MINUTE_NS,
    )


def mark(symbol: str) -> Decimal:
    return Decimal(repr(first_bar(symbol).close))


def floor_to(value: Decimal, step: str) -> Decimal:
    return value.quantize(Decimal(step), rounding=ROUND_DOWN)


class Desk:
    """PositionManager + RiskController on one bus, marked by real bars; outputs collected."""

    def __init__(
        self,
        *,
        max_order_notional: Decimal = LARGE,
        max_position_notional: Decimal = LARGE,
        max_leverage: float = 10.0,
        rebalance_threshold: float = 0.0,
        symbols: tuple[str, ...] = (BTC, ETH),
    ) -> None:
        self.clock = SimulatedClock(first_bar(BTC).ts_event)
        self.bus = EventBus()
        self.positions = PositionManager(CAPITAL, self.bus, self.clock)
        self.risk = RiskController(
            instruments(),
            self.positions,
            max_order_notional=max_order_notional,
            max_position_notional=max_position_notional,
            max_leverage=max_leverage,
            rebalance_threshold=rebalance_threshold,
            bus=self.bus,
            clock=self.clock,
        )
        self.positions.start()
        self.risk.start()
        self.approved: list[OrderApproved] = []
        self.denied: list[OrderDenied] = []
        self.state_changes: list[TradingStateChanged] = []
        self.bus.subscribe(OrderApproved, self.approved.append)
        self.bus.subscribe(OrderDenied, self.denied.append)
        self.bus.subscribe(TradingStateChanged, self.state_changes.append)
        for symbol in symbols:
            self.bus.publish(first_bar(symbol))
        self.bus.drain()
        self._trade_ids = iter(range(1, 1_000_000))
        self._filled = 0

    def propose(self, **weights: float) -> None:
        now = self.clock.timestamp_ns()
        self.bus.publish(AllocationProposed(weights=weights, reason="test", ts_event=now, ts_init=now))
        self.bus.drain()

    def set_state(self, state: TradingState) -> None:
        now = self.clock.timestamp_ns()
        self.bus.publish(SetTradingState(state=state, reason="operator", ts_event=now, ts_init=now))
        self.bus.drain()

    def fill(self, symbol: str, side: OrderSide, quantity: Decimal, *, submitted: bool = False) -> None:
        """Book a fill at the symbol's mark, commission-free, so equity stays at the capital.

        With ``submitted``, first publish the OrderSubmitted the order manager sends for an approved order.
        """
        now = self.clock.timestamp_ns()
        trade = str(next(self._trade_ids))
        if submitted:
            self.bus.publish(
                OrderSubmitted(
                    client_order_id=f"fill-{trade}",
                    symbol=symbol,
                    side=side,
                    quantity=quantity,
                    ts_event=now,
                    ts_init=now,
                )
            )
        self.bus.publish(
            OrderFilled(
                client_order_id=f"fill-{trade}",
                venue_order_id=trade,
                symbol=symbol,
                trade_id=trade,
                side=side,
                last_quantity=quantity,
                last_price=self.positions.marks[symbol],
                commission=Decimal(0),
                liquidity_side=LiquiditySide.TAKER,
                ts_event=now,
                ts_init=now,
            )
        )
        self.bus.drain()

    def fill_approved(self) -> None:
        """Fill every approved order not filled yet (a venue that fills at the mark)."""
        pending, self._filled = self.approved[self._filled :], len(self.approved)
        for order in pending:
            self.fill(order.symbol, order.side, order.quantity, submitted=True)


# --- sizing -----------------------------------------------------------------------------------------


def test_order_is_weight_times_equity_over_price_rounded_down_to_the_market_step() -> None:
    # Arrange
    desk = Desk()
    assert mark(BTC) == Decimal("95502.7")

    # Act
    desk.propose(BTCUSDT=0.5)

    # Assert
    (approved,) = desk.approved
    expected = floor_to(Decimal("0.5") * CAPITAL / mark(BTC), "0.001")  # 0.05235... -> 0.052
    assert expected == Decimal("0.052")
    assert approved.quantity == expected
    assert approved.symbol == BTC and approved.side is OrderSide.BUY
    assert approved.order_type is OrderType.MARKET and approved.price is None
    assert approved.reduce_only is False
    assert desk.denied == []
    assert desk.risk.approved == 1


def test_negative_weight_sells_and_a_lower_weight_reduces() -> None:
    # Arrange
    desk = Desk()
    desk.propose(ETHUSDT=-0.5)
    (opening,) = desk.approved
    desk.fill_approved()

    # Act
    desk.propose(ETHUSDT=-0.2)

    # Assert
    assert opening.side is OrderSide.SELL
    assert opening.quantity == floor_to(Decimal("5000") / mark(ETH), "0.001") == Decimal("2.735")
    reducing = desk.approved[1]
    target = Decimal("-0.2") * CAPITAL / mark(ETH)
    assert reducing.side is OrderSide.BUY
    assert reducing.quantity == floor_to(abs(target - Decimal("-2.735")), "0.001")
    assert reducing.reduce_only is True


def test_order_is_clipped_to_the_max_order_notional() -> None:
    # Arrange
    desk = Desk(max_order_notional=Decimal("2000"))

    # Act
    desk.propose(BTCUSDT=0.5)

    # Assert
    (approved,) = desk.approved
    assert approved.quantity == floor_to(Decimal("2000") / mark(BTC), "0.001") == Decimal("0.020")
    assert approved.quantity * mark(BTC) <= Decimal("2000")


def test_target_is_clipped_to_the_max_position_notional() -> None:
    # Arrange
    desk = Desk(max_position_notional=Decimal("3000"))

    # Act
    desk.propose(BTCUSDT=0.5)
    desk.fill_approved()
    desk.propose(BTCUSDT=0.9)

    # Assert
    (approved,) = desk.approved
    assert approved.quantity == floor_to(Decimal("3000") / mark(BTC), "0.001") == Decimal("0.031")
    assert desk.positions.exposure(BTC) <= Decimal("3000")


def test_order_that_would_exceed_max_leverage_is_denied() -> None:
    # Arrange
    desk = Desk(max_leverage=2.0)

    # Act
    desk.propose(BTCUSDT=3.0)

    # Assert
    assert desk.approved == []
    (denied,) = desk.denied
    assert denied.reason_code == DenialReason.MAX_LEVERAGE.value
    assert denied.quantity == floor_to(Decimal("30000") / mark(BTC), "0.001")
    assert denied.side is OrderSide.BUY
    assert denied.reason


def test_leverage_counts_the_orders_approved_earlier_in_the_same_allocation() -> None:
    # Arrange: 2x leverage; BTC and ETH each at 1.5x equity fit alone, not together.
    desk = Desk(max_leverage=2.0)

    # Act
    desk.propose(BTCUSDT=1.5, ETHUSDT=1.5)
    desk.fill_approved()

    # Assert
    assert desk.positions.gross_exposure() <= Decimal(2) * desk.positions.equity(), (
        f"approved {[(a.symbol, str(a.quantity)) for a in desk.approved]} take gross exposure to "
        f"{desk.positions.gross_exposure()} > 2 x equity {desk.positions.equity()}"
    )
    assert [d.reason_code for d in desk.denied] == [DenialReason.MAX_LEVERAGE.value]


def test_order_below_min_notional_is_denied() -> None:
    # Arrange: 0.01 x 10000 / 95502.7 = 0.00104 -> 0.001 BTC = 95.50 USDT < 100
    desk = Desk()

    # Act
    desk.propose(BTCUSDT=0.01)

    # Assert
    assert desk.approved == []
    (denied,) = desk.denied
    assert denied.reason_code == DenialReason.BELOW_MIN_NOTIONAL.value
    assert denied.quantity == Decimal("0.001")
    assert denied.quantity * mark(BTC) < instruments()[BTC].min_notional


def test_order_below_the_minimum_quantity_is_dropped_silently() -> None:
    # Arrange: 0.005 x 10000 / 95502.7 = 0.00052 BTC rounds down to nothing
    desk = Desk()

    # Act
    desk.propose(BTCUSDT=0.005)

    # Assert
    assert desk.approved == [] and desk.denied == []


def test_unchanged_weight_makes_no_order() -> None:
    # Arrange
    desk = Desk()
    desk.propose(BTCUSDT=0.5, ETHUSDT=-0.25)
    desk.fill_approved()
    count = len(desk.approved)

    # Act
    desk.propose(BTCUSDT=0.5, ETHUSDT=-0.25)

    # Assert
    assert count == 2
    assert len(desk.approved) == count and desk.denied == []


def test_symbol_without_a_price_or_an_instrument_is_denied() -> None:
    # Arrange
    desk = Desk(symbols=(BTC,))

    # Act
    desk.propose(ETHUSDT=0.5, DOGEUSDT=0.5)

    # Assert
    assert desk.approved == []
    assert {(d.symbol, d.reason_code) for d in desk.denied} == {
        (ETH, DenialReason.NO_PRICE.value),
        ("DOGEUSDT", DenialReason.UNKNOWN_INSTRUMENT.value),
    }


# --- trading state ------------------------------------------------------------------------------------


def test_set_trading_state_moves_the_state_and_publishes_the_change() -> None:
    # Arrange
    desk = Desk()

    # Act
    desk.set_state(TradingState.REDUCING)
    desk.set_state(TradingState.REDUCING)
    desk.set_state(TradingState.HALTED)
    desk.set_state(TradingState.ACTIVE)

    # Assert
    assert desk.risk.trading_state is TradingState.ACTIVE
    assert [(c.previous, c.state) for c in desk.state_changes] == [
        (TradingState.ACTIVE, TradingState.REDUCING),
        (TradingState.REDUCING, TradingState.HALTED),
        (TradingState.HALTED, TradingState.ACTIVE),
    ]
    assert all(c.reason == "operator" for c in desk.state_changes)


@pytest.mark.parametrize("weight", [0.5, 0.1, 0.0, -0.5])
def test_halted_denies_everything(weight: float) -> None:
    # Arrange: long 0.031 BTC, so 0.5 adds, 0.1 and 0.0 reduce, -0.5 flips
    desk = Desk()
    desk.fill(BTC, OrderSide.BUY, Decimal("0.031"))
    desk.set_state(TradingState.HALTED)

    # Act
    desk.propose(BTCUSDT=weight)

    # Assert
    assert desk.approved == []
    (denied,) = desk.denied
    assert denied.reason_code == DenialReason.TRADING_HALTED.value


def test_reducing_allows_only_orders_that_reduce_exposure() -> None:
    # Arrange
    desk = Desk()
    desk.fill(BTC, OrderSide.BUY, Decimal("0.031"))
    desk.set_state(TradingState.REDUCING)

    # Act
    desk.propose(BTCUSDT=0.5)  # adds
    desk.propose(BTCUSDT=-0.5)  # flips short: not a reduction
    desk.propose(BTCUSDT=0.1)  # reduces

    # Assert
    assert [d.reason_code for d in desk.denied] == [DenialReason.REDUCE_ONLY_STATE.value] * 2
    (approved,) = desk.approved
    assert approved.side is OrderSide.SELL and approved.reduce_only is True
    target = Decimal("0.1") * CAPITAL / mark(BTC)
    assert approved.quantity == floor_to(Decimal("0.031") - target, "0.001")


# --- properties -----------------------------------------------------------------------------------------

weights = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False)
allocations = st.lists(st.fixed_dictionaries({BTC: weights, ETH: weights}), min_size=1, max_size=6)
limits = {
    "max_leverage": st.floats(min_value=0.25, max_value=5.0, allow_nan=False),
    "max_position_notional": st.integers(min_value=50, max_value=40_000).map(Decimal),
    "max_order_notional": st.integers(min_value=50, max_value=40_000).map(Decimal),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=allocations, **limits)
def test_approved_orders_are_on_the_step_grid_above_the_minimum_and_within_position_limits(
    sequence: list[dict[str, float]], max_leverage: float, max_position_notional: Decimal, max_order_notional: Decimal
) -> None:
    # Arrange
    desk = Desk(
        max_leverage=max_leverage, max_position_notional=max_position_notional, max_order_notional=max_order_notional
    )

    # Act / Assert
    for weights_of in sequence:
        already = len(desk.approved)
        desk.propose(**weights_of)
        for order in desk.approved[already:]:
            instrument = instruments()[order.symbol]
            step, minimum = instrument.market_step_size, instrument.market_min_quantity
            assert order.quantity >= minimum
            assert (order.quantity - minimum) % step == 0
            assert order.quantity * mark(order.symbol) <= max_order_notional
        desk.fill_approved()
        for symbol in (BTC, ETH):
            assert desk.positions.exposure(symbol) <= max_position_notional


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=allocations, **limits)
def test_no_approved_orders_take_gross_exposure_above_max_leverage_times_equity(
    sequence: list[dict[str, float]], max_leverage: float, max_position_notional: Decimal, max_order_notional: Decimal
) -> None:
    # Arrange
    desk = Desk(
        max_leverage=max_leverage, max_position_notional=max_position_notional, max_order_notional=max_order_notional
    )
    limit = Decimal(repr(max_leverage)) * CAPITAL

    # Act / Assert: every allocation's approved orders, once filled, stay within the limit
    for weights_of in sequence:
        desk.propose(**weights_of)
        desk.fill_approved()
        assert desk.positions.equity() == CAPITAL
        assert desk.positions.gross_exposure() <= limit


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequence=st.lists(st.sampled_from([BTC, ETH]).flatmap(lambda s: st.tuples(st.just(s), weights)), max_size=8),
    **limits,
)
def test_one_symbol_at_a_time_never_exceeds_max_leverage(
    sequence: list[tuple[str, float]], max_leverage: float, max_position_notional: Decimal, max_order_notional: Decimal
) -> None:
    # Arrange
    desk = Desk(
        max_leverage=max_leverage, max_position_notional=max_position_notional, max_order_notional=max_order_notional
    )
    limit = Decimal(repr(max_leverage)) * CAPITAL

    # Act / Assert
    for symbol, weight in sequence:
        desk.propose(**{symbol: weight})
        desk.fill_approved()
        assert desk.positions.gross_exposure() <= limit


# --- orders approved and not yet filled ----------------------------------------------------------


def test_a_second_allocation_before_the_fill_does_not_order_again() -> None:
    # Arrange
    desk = Desk()
    desk.propose(BTCUSDT=0.5)

    # Act: the same target again while the first order is unfilled, then after it filled
    desk.propose(BTCUSDT=0.5)
    desk.fill_approved()
    desk.propose(BTCUSDT=0.5)

    # Assert
    assert len(desk.approved) == 1
    assert desk.risk.pending(BTC) == 0


def test_a_canceled_order_releases_its_pending_quantity() -> None:
    # Arrange
    desk = Desk()
    desk.propose(BTCUSDT=0.5)
    (approved,) = desk.approved
    now = desk.clock.timestamp_ns()
    desk.bus.publish(
        OrderSubmitted(
            client_order_id="keel-1",
            symbol=BTC,
            side=approved.side,
            quantity=approved.quantity,
            ts_event=now,
            ts_init=now,
        )
    )
    desk.bus.drain()
    assert desk.risk.pending(BTC) == approved.quantity

    # Act
    desk.bus.publish(OrderCanceled(client_order_id="keel-1", symbol=BTC, ts_event=now, ts_init=now))
    desk.bus.drain()
    desk.propose(BTCUSDT=0.5)

    # Assert
    assert desk.risk.pending(BTC) == approved.quantity
    assert len(desk.approved) == 2


def test_a_non_finite_weight_is_denied_and_never_reaches_an_order() -> None:
    # Arrange
    desk = Desk()

    # Act
    desk.propose(BTCUSDT=float("nan"), ETHUSDT=float("inf"))

    # Assert
    assert desk.approved == []
    assert [d.reason_code for d in desk.denied] == ["INVALID_TARGET", "INVALID_TARGET"]
