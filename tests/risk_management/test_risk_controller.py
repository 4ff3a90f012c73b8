"""Pre-trade risk: AllocationProposed in, OrderApproved / OrderDenied out, on a bus.

The position book is marked by real bars (BTCUSDT closes at 95502.7 and ETHUSDT
at 1827.53 at 2025-05-04 15:34 UTC, ``data/ohlcv/binance_usdm_1m_2025-05``);
positions are given to it as ``OrderFilled`` events at those marks.
"""

from __future__ import annotations

import functools
import re
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, SimulatedClock
from keel.core.costs import CostModel, CostSettings
from keel.core.errors import RiskRefusedError
from keel.core.fsm import TradingState
from keel.core.instruments import Instrument, load_instruments
from keel.core.messages import (
    AllocationProposed,
    BarClosed,
    ExecutionCompleted,
    MarketRegime,
    OrderApproved,
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    RiskBreached,
    RiskLimitsUpdated,
    SetTradingState,
    SignalAction,
    SignalGenerated,
    TargetQuantityProposed,
    TradingStateChanged,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderType
from keel.market_data.loaders import load_ohlcv
from keel.risk_management.limits import RiskLimits
from keel.risk_management.position_manager import PositionManager
from keel.risk_management.risk_controller import DenialReason, RiskController
from keel.risk_management.sizing import PositionSizer
from kit import real_bars

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
        **options: object,
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
            symbols=symbols,
            bus=self.bus,
            clock=self.clock,
            **options,  # type: ignore[arg-type]
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

    def fill(
        self,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        *,
        submitted: bool = False,
        approval_id: int | None = None,
        client_order_id: str | None = None,
    ) -> None:
        """Book a fill at the symbol's mark, commission-free, so equity stays at the capital.

        With ``submitted``, first publish the OrderSubmitted the order manager sends for the approved order
        ``approval_id``. ``client_order_id`` fills an order already submitted under that id.
        """
        now = self.clock.timestamp_ns()
        trade = str(next(self._trade_ids))
        order_id = client_order_id or f"fill-{trade}"
        if submitted:
            self.bus.publish(
                OrderSubmitted(
                    client_order_id=order_id,
                    symbol=symbol,
                    side=side,
                    quantity=quantity,
                    approval_id=approval_id,
                    ts_event=now,
                    ts_init=now,
                )
            )
        self.bus.publish(
            OrderFilled(
                client_order_id=order_id,
                venue_order_id=trade,
                symbol=symbol,
                trade_id=trade,
                side=side,
                last_quantity=quantity,
                last_price=self.positions.reference_marks()[symbol],
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
            self.fill(order.symbol, order.side, order.quantity, submitted=True, approval_id=order.id)


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


def test_a_canceled_child_stays_pending_while_its_parent_works_and_is_released_when_the_parent_ends() -> None:
    # Arrange
    desk = Desk()
    desk.propose(BTCUSDT=0.5)
    (approved,) = desk.approved
    submit(desk, approved, "keel-1")
    assert desk.risk.pending(BTC) == approved.quantity
    now = desk.clock.timestamp_ns()

    # Act: the child is canceled (its parent may send it again), then the parent ends
    desk.bus.publish(OrderCanceled(client_order_id="keel-1", symbol=BTC, ts_event=now, ts_init=now))
    desk.bus.drain()
    desk.propose(BTCUSDT=0.5)
    pending_while_working = desk.risk.pending(BTC)
    approvals_while_working = len(desk.approved)
    completed(desk, approved, Decimal(0))
    desk.propose(BTCUSDT=0.5)

    # Assert: no second approval while the parent could still send the first; one after it ended
    assert pending_while_working == approved.quantity and approvals_while_working == 1
    assert len(desk.approved) == 2
    assert desk.risk.pending(BTC) == approved.quantity


def test_an_expired_child_leftover_is_not_approved_twice_while_its_parent_retries() -> None:
    # Arrange: an IOC child fills 0.100 of the approval and its leftover expires
    desk = Desk()
    desk.propose(ETHUSDT=0.5)
    (approved,) = desk.approved
    submit(desk, approved, "keel-1")
    desk.fill(ETH, OrderSide.BUY, Decimal("0.100"), client_order_id="keel-1")
    now = desk.clock.timestamp_ns()
    desk.bus.publish(
        OrderExpired(client_order_id="keel-1", symbol=ETH, reason="IOC leftover", ts_event=now, ts_init=now)
    )
    desk.bus.drain()

    # Act: the allocation is proposed again before the parent sends the leftover
    desk.propose(ETHUSDT=0.5)

    # Assert: the leftover is still on its way, so nothing more is approved
    assert desk.risk.pending(ETH) == approved.quantity - Decimal("0.100")
    assert len(desk.approved) == 1


def test_a_non_finite_weight_is_denied_and_never_reaches_an_order() -> None:
    # Arrange
    desk = Desk()

    # Act
    desk.propose(BTCUSDT=float("nan"), ETHUSDT=float("inf"))

    # Assert
    assert desk.approved == []
    assert [d.reason_code for d in desk.denied] == ["INVALID_TARGET", "INVALID_TARGET"]


# --- limits, VaR, drawdown, rate, and the user's calls ------------------------------------------------


def feed(desk: Desk, count: int, start: int = 1) -> None:
    """Publish ``count`` real minutes of BTCUSDT and ETHUSDT bars (both start at 15:33 UTC), BTC first."""
    for btc, eth in zip(real_bars(BTC, count, start), real_bars(ETH, count, start), strict=True):
        assert btc.ts_event == eth.ts_event
        desk.clock.advance_to(btc.ts_event)
        desk.bus.publish(btc)
        desk.bus.publish(eth)
        desk.bus.drain()


def buy_view(desk: Desk, symbol: str) -> None:
    """A strong BUY view, so the Kelly edge of a long is positive whatever the recent drift."""
    now = desk.clock.timestamp_ns()
    desk.bus.publish(
        SignalGenerated(
            strategy="trend",
            symbol=symbol,
            action=SignalAction.BUY,
            strength=1.0,
            confidence=1.0,
            ts_event=now,
            ts_init=now,
        )
    )
    desk.bus.drain()


def collect(desk: Desk, kind: type) -> list:
    found: list = []
    desk.bus.subscribe(kind, found.append)
    return found


def test_update_limits_as_the_user_calls_it() -> None:
    # Arrange
    desk = Desk()
    updates = collect(desk, RiskLimitsUpdated)

    # Act
    limits = desk.risk.update_limits({"max_drawdown_pct": 0.10, "var_daily_pct": 0.015, "max_leverage": 8.0})
    desk.bus.drain()

    # Assert
    assert (limits.max_drawdown_pct, limits.var_daily_pct, limits.max_leverage) == (0.10, 0.015, 8.0)
    assert desk.risk.limits is limits
    (update,) = updates
    assert update.limits["max_leverage"] == 8.0 and update.limits["var_daily_pct"] == 0.015
    assert update.equity == float(CAPITAL)
    assert set(update.position_weight_caps) >= {BTC, ETH}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_drawdown": 0.1}, "unknown risk limit max_drawdown"),
        ({"var_daily_pct": 1.5}, "var_daily_pct is a fraction"),
        ({"max_leverage": -2}, "max_leverage must be a positive"),
        ({"max_leverage": "high"}, "max_leverage must be a number"),
        ({"max_drawdown_pct": 0.5}, "halt_drawdown_pct"),
    ],
)
def test_update_limits_refuses_bad_limits_and_keeps_the_old_ones(changes: dict, message: str) -> None:
    # Arrange
    desk = Desk()
    before = desk.risk.limits

    # Act / Assert
    with pytest.raises(ValueError, match=message):
        desk.risk.update_limits(changes)
    assert desk.risk.limits is before


@pytest.mark.parametrize("value", ["3", "1e1", b"3", None, True, float("nan"), float("inf")], ids=repr)
def test_update_limits_refuses_a_value_that_is_not_a_finite_number_and_changes_no_limit(value: object) -> None:
    # Arrange: the string "3" became a leverage of 3 here while the control API refused it
    desk = Desk()
    before = desk.risk.limits
    updates = collect(desk, RiskLimitsUpdated)

    # Act / Assert
    with pytest.raises(ValueError, match=rf"risk limit max_leverage must be a .*number, got {re.escape(repr(value))}"):
        desk.risk.update_limits({"max_drawdown_pct": 0.1, "max_leverage": value})
    desk.bus.drain()
    assert desk.risk.limits is before
    assert updates == []


def test_var_limit_denies_an_order_that_raises_daily_var_above_it() -> None:
    # Arrange: 200 real minutes give the covariance; 1% daily VaR on 10,000 USDT is 100 USDT
    desk = Desk(var_window=200, min_var_observations=60, covariance_refresh_bars=1)
    feed(desk, 200)
    desk.risk.update_limits({"var_daily_pct": 0.01})
    buy_view(desk, BTC)

    # Act
    desk.propose(BTCUSDT=2.0)
    desk.propose(BTCUSDT=0.05)

    # Assert
    (denied,) = desk.denied
    assert denied.reason_code == DenialReason.VAR_LIMIT.value
    (approved,) = desk.approved
    assert approved.quantity * mark(BTC) < Decimal("1000")


def test_net_leverage_limit_denies_a_second_long_but_allows_a_hedge() -> None:
    # Arrange
    desk = Desk(max_leverage=5.0, limits=RiskLimits(max_net_leverage=0.5))

    # Act
    desk.propose(BTCUSDT=0.4, ETHUSDT=0.4)
    desk.fill_approved()
    desk.propose(BTCUSDT=0.4, ETHUSDT=-0.4)

    # Assert
    assert [d.reason_code for d in desk.denied] == [DenialReason.MAX_NET_LEVERAGE.value]
    assert [(a.symbol, a.side) for a in desk.approved] == [(BTC, OrderSide.BUY), (ETH, OrderSide.SELL)]


def test_order_rate_limit_denies_beyond_the_window_and_frees_up_after_it() -> None:
    # Arrange
    desk = Desk(limits=RiskLimits(max_orders_per_window=2, rate_window_seconds=60))

    # Act
    desk.propose(BTCUSDT=0.2, ETHUSDT=0.2)
    desk.propose(BTCUSDT=0.4)
    desk.clock.advance_to(desk.clock.timestamp_ns() + 61 * 1_000_000_000)
    desk.propose(BTCUSDT=0.4)

    # Assert
    assert [d.reason_code for d in desk.denied] == [DenialReason.ORDER_RATE_LIMIT.value]
    assert len(desk.approved) == 3


def test_drawdown_moves_trading_to_reducing_then_halted_with_reasons() -> None:
    # Arrange: 5x long BTCUSDT (on a 10x account) from 15:34 UTC; BTC falls 2.2% from its high within the next 11 hours
    desk = Desk(
        limits=RiskLimits(max_drawdown_pct=0.01, halt_drawdown_pct=0.02, max_leverage=10.0, max_net_leverage=10.0),
        sizer=PositionSizer(leverage=10.0),
    )
    breaches = collect(desk, RiskBreached)
    desk.propose(BTCUSDT=5.0)
    desk.fill_approved()

    # Act
    feed(desk, 700)

    # Assert
    assert [b.limit for b in breaches][:2] == ["max_drawdown_pct", "halt_drawdown_pct"]
    assert [b.state for b in breaches][:2] == [TradingState.REDUCING, TradingState.HALTED]
    assert [c.state for c in desk.state_changes] == [TradingState.REDUCING, TradingState.HALTED]
    assert "drawdown" in desk.state_changes[0].reason
    assert desk.risk.trading_state is TradingState.HALTED
    assert desk.risk.drawdown >= 0.02


def test_the_drawdown_keeps_its_peak_and_deepest_value_and_a_restore_never_lowers_them() -> None:
    # Arrange: equity 10,000 -> 11,000 -> 9,900 -> 10,450
    desk = Desk()
    risk = desk.risk

    # Act
    for equity in (10_000.0, 11_000.0, 9_900.0, 10_450.0):
        risk.update_drawdown(equity)

    # Assert: 5% below the 11,000 peak now, 10% at the deepest
    assert risk.peak_equity == 11_000.0
    assert risk.drawdown == pytest.approx(0.05)
    assert risk.max_drawdown == pytest.approx(0.10)
    risk.restore_drawdown(peak=10_500.0, max_drawdown=0.02)
    assert (risk.peak_equity, risk.max_drawdown) == (11_000.0, pytest.approx(0.10))
    risk.restore_drawdown(peak=12_000.0, max_drawdown=0.2)
    assert (risk.peak_equity, risk.max_drawdown) == (12_000.0, 0.2)


@pytest.mark.parametrize("capital", [float("nan"), float("inf"), -5.0, 0.0])
def test_a_risk_controller_refuses_a_starting_capital_that_is_not_a_positive_number(capital: float) -> None:
    # Act / Assert: a NaN capital made every equity NaN, a negative one a book that could not trade
    with pytest.raises(ValueError, match="initial_capital_usdt must be a positive finite number"):
        RiskController(initial_capital_usdt=capital)


@pytest.mark.parametrize("capital", [Decimal("NaN"), Decimal("Infinity"), 10_000.0])
def test_a_position_book_refuses_a_capital_that_is_not_a_finite_decimal(capital: object) -> None:
    # Arrange
    book = PositionManager(CAPITAL, EventBus(), SimulatedClock(0))

    # Act / Assert: at construction and when a live account's opening balance is booked
    with pytest.raises(ValueError, match="initial capital must be a finite Decimal"):
        PositionManager(capital, EventBus(), SimulatedClock(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="initial capital must be a finite Decimal"):
        book.initial_capital = capital  # type: ignore[assignment]
    assert book.initial_capital == CAPITAL


@pytest.mark.parametrize("equity", [float("nan"), float("inf"), float("-inf"), True, "9500", None])
def test_a_non_finite_equity_is_refused_and_leaves_the_drawdown_as_it_was(equity: float) -> None:
    # Arrange: 10% below an 11,000 peak
    risk = Desk().risk
    risk.update_drawdown(11_000.0)
    risk.update_drawdown(9_900.0)

    # Act / Assert: an infinite equity would have become the peak for good, a NaN the drawdown
    with pytest.raises(ValueError, match="equity must be a finite number"):
        risk.update_drawdown(equity)
    assert (risk.peak_equity, risk.drawdown, risk.max_drawdown) == (11_000.0, pytest.approx(0.1), pytest.approx(0.1))


@pytest.mark.parametrize(
    ("portfolio_state", "named"),
    [
        ({"equity": float("nan"), "positions": {BTC: 1_000.0}}, "equity"),
        ({"equity": 10_000.0, "positions": {BTC: 1_000.0, ETH: float("inf")}}, f"notional of {ETH}"),
        ({"equity": 10_000.0, "exposures": {BTC: float("nan")}}, f"notional of {BTC}"),
    ],
    ids=["NaN equity", "infinite notional", "NaN exposure"],
)
def test_a_portfolio_state_with_a_non_finite_number_is_refused_by_name(
    portfolio_state: dict[str, object], named: str
) -> None:
    # Arrange: NaN compares false with every limit, so it would pass them all
    risk = Desk().risk

    # Act / Assert
    for check in (risk.check_var_limit, risk.check_leverage_limit, risk.estimate_var):
        with pytest.raises(ValueError, match=f"{named} must be a finite number"):
            check(portfolio_state)


def test_a_var_breach_reduces_and_clears_itself_when_the_limit_is_raised() -> None:
    # Arrange: a 2x BTC position; its daily VaR is far above 0.5% of equity
    desk = Desk(var_window=120, min_var_observations=60, covariance_refresh_bars=1)
    breaches = collect(desk, RiskBreached)
    desk.propose(BTCUSDT=2.0)
    desk.fill_approved()
    desk.risk.update_limits({"var_daily_pct": 0.005})
    feed(desk, 121)

    # Act
    desk.risk.update_limits({"var_daily_pct": 0.9})
    desk.bus.drain()

    # Assert
    assert breaches and breaches[0].limit == "var_daily_pct"
    assert [c.state for c in desk.state_changes] == [TradingState.REDUCING, TradingState.ACTIVE]
    assert desk.risk.trading_state is TradingState.ACTIVE


def test_check_var_limit_with_a_portfolio_state_as_the_user_calls_it() -> None:
    # Arrange
    desk = Desk(var_window=300, min_var_observations=60, covariance_refresh_bars=1)
    feed(desk, 300)
    risk_controller = desk.risk
    portfolio_state = {"equity": 10_000.0, "positions": {BTC: 40_000.0, ETH: -10_000.0}}

    # Act
    var_violations = risk_controller.check_var_limit(portfolio_state)
    small = risk_controller.check_var_limit({"equity": 10_000.0, "positions": {BTC: 500.0}})
    estimates = {m: risk_controller.estimate_var(portfolio_state, m) for m in ("historical", "parametric", "ewma")}

    # Assert
    (violation,) = var_violations
    assert violation.limit == "var_daily_pct" and violation.value > violation.threshold
    assert small == []
    for estimate in estimates.values():
        assert 0 < estimate.var <= estimate.cvar
        assert estimate.observations == 299


def test_check_var_limit_without_enough_return_history_says_so_instead_of_passing() -> None:
    # Arrange: a controller that has seen 10 bars, fewer than the 60 its VaR needs
    desk = Desk(var_window=300, min_var_observations=60, covariance_refresh_bars=1)
    feed(desk, 10)
    portfolio_state = {"equity": 10_000.0, "positions": {BTC: 400_000.0}}

    # Act / Assert
    with pytest.raises(ValueError, match=r"warm_up"):
        desk.risk.check_var_limit(portfolio_state)


def test_check_var_limit_refuses_a_position_in_a_symbol_it_has_no_returns_for() -> None:
    # Arrange: the controller follows BTCUSDT and ETHUSDT; the state also holds SOLUSDT
    desk = Desk(var_window=300, min_var_observations=60, covariance_refresh_bars=1)
    feed(desk, 300)
    portfolio_state = {"equity": 10_000.0, "positions": {BTC: 500.0, "SOLUSDT": 400_000.0}}

    # Act / Assert
    with pytest.raises(ValueError, match="SOLUSDT"):
        desk.risk.check_var_limit(portfolio_state)


@pytest.mark.parametrize("method", ["historical", "parametric", "ewma"])
def test_estimate_var_refuses_a_position_in_a_symbol_it_has_no_returns_for(method: str) -> None:
    # Arrange: the controller follows BTCUSDT and ETHUSDT; the state also holds SOLUSDT
    desk = Desk(var_window=300, min_var_observations=60, covariance_refresh_bars=1)
    feed(desk, 300)
    portfolio_state = {"equity": 10_000.0, "positions": {BTC: 500.0, "SOLUSDT": 400_000.0}}

    # Act / Assert
    with pytest.raises(ValueError, match="SOLUSDT"):
        desk.risk.estimate_var(portfolio_state, method)


def test_historical_var_is_the_empirical_loss_quantile_of_the_window() -> None:
    # Arrange
    desk = Desk(var_window=300, min_var_observations=60)
    feed(desk, 300)
    closes = np.array([[b.close for b in real_bars(s, 300, 1)] for s in (BTC, ETH)]).T
    returns = closes[1:] / closes[:-1] - 1.0
    exposures = np.array([10_000.0, 5_000.0])
    pnl = returns @ exposures

    # Act
    estimate = desk.risk.estimate_var({"equity": 10_000.0, "positions": {BTC: 10_000.0, ETH: 5_000.0}}, "historical")

    # Assert
    worst = np.sort(pnl)[: int(np.ceil(len(pnl) * 0.01))]
    assert estimate.var == pytest.approx(-worst.max() * np.sqrt(1440), rel=1e-12)
    assert estimate.cvar == pytest.approx(-worst.mean() * np.sqrt(1440), rel=1e-12)


def test_kelly_fraction_is_fractional_and_regime_aware() -> None:
    # Arrange: the first 300 real BTCUSDT 1m returns
    closes = np.array([b.close for b in real_bars(BTC, 301, 1)])
    returns = closes[1:] / closes[:-1] - 1.0
    risk = Desk().risk

    # Act
    trending = risk.calculate_optimal_position_fraction(returns, regime="trending")
    volatile = risk.calculate_optimal_position_fraction(returns, regime=MarketRegime.HIGH_VOLATILITY)
    full = risk.calculate_optimal_position_fraction(returns, regime="TRENDING", fractional=1.0)
    against = risk.calculate_optimal_position_fraction(-returns)

    # Assert
    edge = returns.mean() / returns.var(ddof=1)
    assert (returns.mean() > 0) and trending == pytest.approx(0.25 * edge)
    assert volatile == pytest.approx(0.5 * trending)
    assert full == pytest.approx(edge)
    assert against == 0.0


def test_the_sizer_clips_the_target_to_its_smallest_limit() -> None:
    # Arrange: a VaR budget of 0.2% of equity per position binds long before leverage
    desk = Desk(
        var_window=200, min_var_observations=60, covariance_refresh_bars=1, sizer=PositionSizer(var_budget_pct=0.002)
    )
    feed(desk, 200)
    buy_view(desk, BTC)
    now_mark = desk.positions.marks[BTC]

    # Act
    desk.propose(BTCUSDT=1.0)

    # Assert
    (approved,) = desk.approved
    limits = desk.risk._size_limits(BTC, float(CAPITAL), desk.risk._edge(BTC, 1.0), float(now_mark))
    assert limits.binding in ("var_budget", "kelly")
    assert float(approved.quantity * now_mark) <= limits.notional * (1 + 1e-9)


def test_approvals_carry_the_strongest_strategy_and_limits_are_published_at_start() -> None:
    # Arrange
    desk = Desk()
    now = desk.clock.timestamp_ns()
    for strategy, strength in (("trend", 0.9), ("mean_reversion", 0.3)):
        desk.bus.publish(
            SignalGenerated(
                strategy=strategy,
                symbol=BTC,
                action=SignalAction.BUY,
                strength=strength,
                confidence=1.0,
                ts_event=now,
                ts_init=now,
            )
        )
    desk.bus.drain()

    # Act
    desk.propose(BTCUSDT=0.3)

    # Assert
    (approved,) = desk.approved
    assert approved.strategy == "trend"


# --- properties: signals, prices and fills never take exposure above a cap ------------------------------

actions = st.lists(
    st.one_of(
        st.tuples(st.just("bars"), st.integers(min_value=1, max_value=30)),
        st.tuples(st.just("signal"), st.sampled_from([BTC, ETH]), st.sampled_from(list(SignalAction))),
        st.tuples(st.just("allocate"), weights, weights),
        st.tuples(st.just("fill"), st.floats(min_value=0.0, max_value=1.0)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=actions, **limits)
def test_no_sequence_of_signals_prices_and_fills_takes_exposure_above_a_cap_after_approval(
    sequence: list[tuple], max_leverage: float, max_position_notional: Decimal, max_order_notional: Decimal
) -> None:
    # Arrange
    desk = Desk(
        max_leverage=max_leverage,
        max_position_notional=max_position_notional,
        max_order_notional=max_order_notional,
        var_window=120,
        min_var_observations=30,
        covariance_refresh_bars=10,
    )
    minute = 1
    leverage = Decimal(repr(max_leverage))

    # Act / Assert
    for action in sequence:
        if action[0] == "bars":
            feed(desk, action[1], minute)
            minute += action[1]
        elif action[0] == "signal":
            now = desk.clock.timestamp_ns()
            desk.bus.publish(
                SignalGenerated(
                    strategy="s",
                    symbol=action[1],
                    action=action[2],
                    strength=1.0,
                    confidence=0.7,
                    ts_event=now,
                    ts_init=now,
                )
            )
            desk.bus.drain()
        elif action[0] == "allocate":
            # Approvals price orders at the marks of the last completed bar time; so does this check.
            marks = desk.positions.reference_marks()
            before = {s: abs(desk.positions.quantity(s)) * marks[s] for s in (BTC, ETH)}
            gross_before = sum(before.values())
            already = len(desk.approved)
            desk.propose(BTCUSDT=action[1], ETHUSDT=action[2])
            for order in desk.approved[already:]:
                instrument = instruments()[order.symbol]
                violation = instrument.check_order(
                    side=order.side.value,
                    price=None,
                    quantity=order.quantity,
                    reference_price=marks[order.symbol],
                    market=True,
                    reduce_only=order.reduce_only,
                )
                assert violation is None, violation
                assert order.quantity * marks[order.symbol] <= max_order_notional
            desk.fill_approved()
            after = {s: abs(desk.positions.quantity(s)) * marks[s] for s in (BTC, ETH)}
            for symbol in (BTC, ETH):
                assert after[symbol] <= max(max_position_notional, before[symbol])
            assert sum(after.values()) <= max(leverage * desk.positions.equity(marks), gross_before)
        else:
            fraction = Decimal(repr(action[1]))
            desk.fill_approved() if fraction > Decimal("0.5") else None


def test_warm_up_leaves_the_estimates_a_live_run_of_the_same_bars_leaves_and_publishes_nothing(real_data) -> None:
    # Arrange: 120 real minutes of BTCUSDT and ETHUSDT after the desks' first bars, interleaved by time
    history = sorted(
        [*real_data.bars(BTC, 120, start=1), *real_data.bars(ETH, 120, start=1)],
        key=lambda bar: (bar.ts_event, bar.symbol),
    )
    live, warmed = Desk(), Desk()
    published: list[object] = []
    warmed.bus.subscribe_all(published.append)

    # Act
    for bar in history:
        live.bus.publish(bar)
        live.bus.drain()
    count = warmed.risk.warm_up(history)
    warmed.bus.drain()

    # Assert
    assert count == len(history)
    assert published == []
    np.testing.assert_array_equal(warmed.risk._window.returns(), live.risk._window.returns())
    assert warmed.risk._atr == live.risk._atr
    assert len(warmed.risk._window) >= warmed.risk.min_var_observations


# --- orders the venue never rejects ----------------------------------------------------------------


def submit(desk: Desk, approved: OrderApproved, client_order_id: str) -> None:
    """Publish the OrderSubmitted of an approved order that reached the venue and has not filled."""
    now = desk.clock.timestamp_ns()
    desk.bus.publish(
        OrderSubmitted(
            client_order_id=client_order_id,
            symbol=approved.symbol,
            side=approved.side,
            quantity=approved.quantity,
            approval_id=approved.id,
            ts_event=now,
            ts_init=now,
        )
    )
    desk.bus.drain()


def completed(desk: Desk, approved: OrderApproved, filled: Decimal) -> None:
    """Publish the ExecutionCompleted of the router's parent order that worked ``approved``."""
    now = desk.clock.timestamp_ns()
    price = desk.positions.reference_marks()[approved.symbol]
    desk.bus.publish(
        ExecutionCompleted(
            parent_order_id="P-1",
            symbol=approved.symbol,
            side=approved.side,
            strategy=approved.strategy,
            style="AGGRESSIVE",
            quantity=approved.quantity,
            filled_quantity=filled,
            arrival_price=price,
            average_price=None,
            final_price=price,
            interval_vwap=None,
            fees=Decimal(0),
            implementation_shortfall=Decimal(0),
            implementation_shortfall_bps=0.0,
            spread_paid_bps=0.0,
            estimated_impact_bps=None,
            realized_impact_bps=0.0,
            child_orders=0,
            reason="horizon ended",
            approval_id=approved.id,
            ts_event=now,
            ts_init=now,
        )
    )
    desk.bus.drain()


def test_reduce_only_is_decided_against_the_booked_position_not_the_orders_still_working() -> None:
    # Arrange: a BUY of 2.735 ETH is at the venue, unfilled; nothing is booked yet
    desk = Desk()
    desk.propose(ETHUSDT=0.5)
    (opening,) = desk.approved
    submit(desk, opening, "keel-1")

    # Act: a lower target before the fill
    desk.propose(ETHUSDT=0.1)

    # Assert: the SELL lowers the projection, but at the venue there is nothing to reduce
    selling = desk.approved[1]
    assert selling.side is OrderSide.SELL
    assert selling.quantity == floor_to(Decimal("2.735") - Decimal("0.1") * CAPITAL / mark(ETH), "0.001")
    assert selling.reduce_only is False


def test_a_reduce_only_order_leaves_what_the_orders_already_on_their_way_take() -> None:
    # Arrange: long 1.000 ETH; a reduce-only SELL of about half of it is at the venue, unfilled
    desk = Desk()
    desk.fill(ETH, OrderSide.BUY, Decimal("1.000"))
    desk.propose(ETHUSDT=float(Decimal("0.5") * mark(ETH) / CAPITAL))
    (first,) = desk.approved
    submit(desk, first, "keel-1")

    # Act: a short target: the next SELL would flip the position once the first one fills
    desk.propose(ETHUSDT=float(Decimal("-0.3") * mark(ETH) / CAPITAL))

    # Assert
    second = desk.approved[1]
    assert first.side is OrderSide.SELL and first.reduce_only is True
    assert second.side is OrderSide.SELL and second.quantity > Decimal("1.000") - first.quantity
    assert second.reduce_only is False


def test_dust_below_the_minimum_notional_is_closed_reduce_only_once_with_the_reason() -> None:
    # Arrange: short 0.001 ETH (1.83 USDT; ETHUSDT's minimum notional is 20)
    desk = Desk()
    desk.fill(ETH, OrderSide.SELL, Decimal("0.001"))
    small = float(Decimal("15") / CAPITAL)  # a 15 USDT long: below the minimum notional too

    # Act
    desk.propose(ETHUSDT=small)
    desk.fill_approved()
    desk.propose(ETHUSDT=small)

    # Assert: the dust was closed by one reduce-only BUY; the opening order is denied each time
    (closing,) = desk.approved
    assert (closing.side, closing.quantity, closing.reduce_only) == (OrderSide.BUY, Decimal("0.001"), True)
    assert desk.positions.quantity(ETH) == 0
    assert [d.reason_code for d in desk.denied] == [DenialReason.BELOW_MIN_NOTIONAL.value] * 2
    assert "closed reduce-only" in desk.denied[0].reason and "-0.001" in desk.denied[0].reason


def test_a_position_below_the_lot_size_is_written_off_once() -> None:
    # Arrange: 0.0004 ETH held, below ETHUSDT's minimum quantity 0.001: no order can close it
    desk = Desk()
    desk.fill(ETH, OrderSide.BUY, Decimal("0.0004"))

    # Act
    desk.propose(ETHUSDT=0.0)
    desk.propose(ETHUSDT=0.0)

    # Assert
    assert desk.approved == []
    (written_off,) = desk.denied
    assert written_off.reason_code == DenialReason.DUST_WRITTEN_OFF.value
    assert written_off.quantity == Decimal("0.0004") and written_off.side is OrderSide.SELL


def test_what_a_finished_parent_order_never_sent_stops_counting_as_pending() -> None:
    # Arrange: an approved BUY whose parent order ended without sending anything
    desk = Desk()
    desk.propose(BTCUSDT=0.5)
    (first,) = desk.approved
    assert desk.risk.pending(BTC) == first.quantity

    # Act
    completed(desk, first, Decimal(0))
    desk.propose(BTCUSDT=0.5)

    # Assert
    assert desk.risk.pending(BTC) == first.quantity
    assert [a.quantity for a in desk.approved] == [first.quantity, first.quantity]


def test_the_order_the_venue_rejected_is_not_approved_again_against_the_same_position() -> None:
    # Arrange: the venue rejected the first BUY
    desk = Desk()
    desk.propose(ETHUSDT=0.5)
    (first,) = desk.approved
    submit(desk, first, "keel-1")
    now = desk.clock.timestamp_ns()
    desk.bus.publish(
        OrderRejected(client_order_id="keel-1", symbol=ETH, code=-2019, reason="Margin is insufficient.",
                      ts_event=now, ts_init=now)
    )  # fmt: skip
    desk.bus.drain()
    completed(desk, first, Decimal(0))

    # Act: the same target, then the same target once the position moved
    desk.propose(ETHUSDT=0.5)
    desk.fill(ETH, OrderSide.BUY, Decimal("0.100"))
    desk.propose(ETHUSDT=0.5)

    # Assert
    (repeated,) = desk.denied
    assert repeated.reason_code == DenialReason.VENUE_REJECTED.value and "-2019" in repeated.reason
    assert [a.quantity for a in desk.approved] == [first.quantity, first.quantity - Decimal("0.100")]


def test_an_order_the_margin_does_not_cover_is_denied() -> None:
    # Arrange: a 2x account, risk allowing 10x gross
    desk = Desk(limits=RiskLimits(max_leverage=10.0, max_net_leverage=10.0), sizer=PositionSizer(leverage=2.0))

    # Act
    desk.propose(BTCUSDT=3.0)
    desk.propose(BTCUSDT=1.5)

    # Assert: 3x (clipped to the 2x the account allows) needs all the equity as margin; 1.5x fits
    (denied,) = desk.denied
    assert denied.reason_code == DenialReason.INSUFFICIENT_MARGIN.value
    (approved,) = desk.approved
    assert approved.quantity == floor_to(Decimal("1.5") * CAPITAL / mark(BTC), "0.001")


def test_a_zero_target_closes_a_position_of_thousands_of_steps_exactly() -> None:
    # Arrange: 348.2 XRP is 3,482 steps of 0.1 (the float rounding's margin alone would leave 0.1 behind)
    desk = Desk(symbols=(BTC, ETH, "XRPUSDT"))
    desk.fill("XRPUSDT", OrderSide.BUY, Decimal("348.2"))

    # Act
    desk.propose(XRPUSDT=0.0)

    # Assert
    (closing,) = desk.approved
    assert (closing.side, closing.quantity, closing.reduce_only) == (OrderSide.SELL, Decimal("348.2"), True)


# --- the cost rule: no-trade band and smallest order ----------------------------------------------------


def free_costs() -> CostModel:
    return CostModel(instruments(), CostSettings(maker_fee=0.0, taker_fee=0.0, slippage_bps=0.0))


def test_exposure_without_an_edge_that_pays_its_round_trip_is_not_added() -> None:
    # Arrange: no view and no return history yet, so no edge; trading costs the instruments' fees
    costly = Desk(costs=CostModel(instruments()), holding_bars=240)
    free = Desk(costs=free_costs(), holding_bars=240)

    # Act
    costly.propose(BTCUSDT=0.5)
    free.propose(BTCUSDT=0.5)

    # Assert
    assert costly.approved == [] and costly.denied == []
    (approved,) = free.approved
    assert approved.quantity == Decimal("0.052")


def test_a_flip_the_cost_model_does_not_pay_for_stops_at_flat() -> None:
    # Arrange: long ETH, then a view to be short that earns nothing over its costs
    desk = Desk(costs=free_costs())
    desk.propose(ETHUSDT=0.5)
    desk.fill_approved()
    desk.risk.costs = CostModel(instruments())

    # Act
    desk.propose(ETHUSDT=-0.5)

    # Assert: one sell of exactly the long, reduce-only
    opening, closing = desk.approved
    assert closing.side is OrderSide.SELL
    assert closing.quantity == opening.quantity
    assert closing.reduce_only is True


def test_the_hold_band_keeps_a_position_until_closing_pays_its_cost() -> None:
    # Arrange: long ETH bought for free; then trading costs the instruments' fees, and no view has an edge
    desk = Desk(costs=free_costs(), hold_band=True)
    desk.propose(ETHUSDT=0.5)
    desk.fill_approved()
    desk.risk.costs = CostModel(instruments())

    # Act: a flat target, then a short one that does not pay for itself
    desk.propose(ETHUSDT=0.0)
    desk.propose(ETHUSDT=-0.5)

    # Assert: the long is kept
    (opening,) = desk.approved
    assert desk.denied == []

    # Act: closing costs nothing now
    desk.risk.costs = free_costs()
    desk.propose(ETHUSDT=0.0)

    # Assert: it closes
    _, closing = desk.approved
    assert (closing.side, closing.quantity, closing.reduce_only) == (OrderSide.SELL, opening.quantity, True)


def test_the_hold_band_lets_a_reducing_desk_close() -> None:
    # Arrange: a long the cost model would keep, and the risk layer reducing
    desk = Desk(costs=free_costs(), hold_band=True)
    desk.propose(ETHUSDT=0.5)
    desk.fill_approved()
    desk.risk.costs = CostModel(instruments())
    desk.set_state(TradingState.REDUCING)

    # Act
    desk.propose(ETHUSDT=0.0)

    # Assert
    opening, closing = desk.approved
    assert (closing.side, closing.quantity) == (OrderSide.SELL, opening.quantity)


def test_orders_smaller_than_the_smallest_worth_sending_are_not_sent_unless_they_close() -> None:
    # Arrange: the smallest order is 10 % of the 10,000 equity
    desk = Desk(costs=free_costs(), min_order_weight=0.1)

    # Act / Assert: 500 USDT is too small to open; 5,000 opens; a 500 USDT trim is skipped; flat closes
    desk.propose(BTCUSDT=0.05)
    assert desk.approved == []
    desk.propose(BTCUSDT=0.5)
    desk.fill_approved()
    desk.propose(BTCUSDT=0.45)
    desk.propose(BTCUSDT=0.0)
    opening, closing = desk.approved
    assert closing.side is OrderSide.SELL and closing.quantity == opening.quantity


# --- strategies' own positions (target quantities) ----------------------------------------------------------


def own(desk: Desk, quantity: float, strategy: str = "scheduled_dca") -> None:
    now = desk.clock.timestamp_ns()
    desk.bus.publish(
        TargetQuantityProposed(
            strategy=strategy,
            symbol=BTC,
            quantity=quantity,
            reference_price=float(mark(BTC)),
            reason="test",
            ts_event=now,
            ts_init=now,
        )
    )
    desk.bus.drain()


def test_a_target_quantity_orders_its_change_at_once_booked_to_its_strategy() -> None:
    # Arrange: 1000 USDT of BTC at 95502.7 is 0.01047 BTC
    desk = Desk()

    # Act
    own(desk, 1000.0 / float(mark(BTC)))

    # Assert: rounded down to the step, within one step of the notional
    (approved,) = desk.approved
    assert (approved.side, approved.quantity, approved.strategy) == (OrderSide.BUY, Decimal("0.010"), "scheduled_dca")
    assert abs(approved.quantity * mark(BTC) - 1000) <= Decimal("0.001") * mark(BTC)


def test_the_weights_leave_a_strategys_own_position_alone_and_its_next_change_makes_up_the_rounding() -> None:
    # Arrange: one slice of 0.01047 BTC bought as 0.010
    desk = Desk()
    own(desk, 0.01047)
    desk.fill_approved()

    # Act: a flat allocation, then a second slice (0.02094 in all)
    desk.propose(BTCUSDT=0.0)
    own(desk, 0.02094)

    # Assert: the flat weight sold nothing; the second buy is 0.010 + 0.00094 of rounding -> 0.010 (0.02094 - 0.010)
    assert [(a.side, a.quantity) for a in desk.approved] == [
        (OrderSide.BUY, Decimal("0.010")),
        (OrderSide.BUY, Decimal("0.010")),
    ]


def test_a_target_of_zero_sells_exactly_what_was_approved_and_a_refused_buy_is_never_sold() -> None:
    # Arrange: one buy approved and filled, a second refused while REDUCING
    desk = Desk()
    own(desk, 0.01047)
    desk.fill_approved()
    desk.set_state(TradingState.REDUCING)
    own(desk, 0.02094)
    desk.set_state(TradingState.ACTIVE)

    # Act: the take-profit
    own(desk, 0.0)

    # Assert
    assert [(d.reason_code, d.strategy) for d in desk.denied] == [
        (DenialReason.REDUCE_ONLY_STATE.value, "scheduled_dca")
    ]
    assert [(a.side, a.quantity) for a in desk.approved] == [
        (OrderSide.BUY, Decimal("0.010")),
        (OrderSide.SELL, Decimal("0.010")),
    ]


def test_own_positions_beyond_the_position_limit_are_cut_with_the_reason() -> None:
    # Arrange: 2000 USDT of room at most
    desk = Desk(max_position_notional=Decimal("2000"))

    # Act: 0.05 BTC is about 4775 USDT
    own(desk, 0.05)

    # Assert
    (denied,) = desk.denied
    assert (denied.reason_code, denied.strategy) == (DenialReason.POSITION_LIMIT.value, "scheduled_dca")
    (approved,) = desk.approved
    assert approved.quantity == floor_to(Decimal(2000) / mark(BTC), "0.001")


# --- orders placed by hand ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "side", "quantity", "reduce_only", "reason"),
    [
        (TradingState.HALTED, OrderSide.BUY, "0.010", False, DenialReason.TRADING_HALTED),
        (TradingState.HALTED, OrderSide.SELL, "0.010", False, DenialReason.TRADING_HALTED),  # shrinks, not reduce_only
        (TradingState.REDUCING, OrderSide.BUY, "0.010", False, DenialReason.REDUCE_ONLY_STATE),
        (TradingState.REDUCING, OrderSide.SELL, "0.050", False, DenialReason.REDUCE_ONLY_STATE),  # flips short
    ],
)
def test_an_order_by_hand_the_trading_state_forbids_is_refused_and_reported(
    state: TradingState, side: OrderSide, quantity: str, reduce_only: bool, reason: DenialReason
) -> None:
    # Arrange: long 0.031 BTC
    desk = Desk()
    desk.fill(BTC, OrderSide.BUY, Decimal("0.031"))
    desk.set_state(state)

    # Act
    with pytest.raises(RiskRefusedError) as raised:
        desk.risk.check_manual_order(BTC, side, Decimal(quantity), reduce_only)
    desk.bus.drain()

    # Assert: the caller is told why; the denial is on the bus under "manual"
    assert reason.value in str(raised.value)
    (denied,) = desk.denied
    assert (denied.reason_code, denied.strategy, denied.quantity) == (reason.value, "manual", Decimal(quantity))


@pytest.mark.parametrize(
    ("state", "side", "quantity", "reduce_only"),
    [
        (TradingState.ACTIVE, OrderSide.BUY, "0.010", False),
        (TradingState.HALTED, OrderSide.SELL, "0.031", True),  # closing by hand after an emergency stop
        (TradingState.REDUCING, OrderSide.SELL, "0.010", False),  # shrinks the long
    ],
)
def test_an_order_by_hand_within_the_rules_passes(
    state: TradingState, side: OrderSide, quantity: str, reduce_only: bool
) -> None:
    # Arrange
    desk = Desk()
    desk.fill(BTC, OrderSide.BUY, Decimal("0.031"))
    desk.set_state(state)

    # Act
    desk.risk.check_manual_order(BTC, side, Decimal(quantity), reduce_only)
    desk.bus.drain()

    # Assert
    assert desk.denied == []


@pytest.mark.parametrize(
    ("limits", "quantity", "reason"),
    [
        ({"max_order_notional": Decimal("1000")}, "0.020", DenialReason.ORDER_NOTIONAL),
        ({"max_position_notional": Decimal("3000")}, "0.010", DenialReason.POSITION_LIMIT),
        ({"max_leverage": 0.5}, "0.040", DenialReason.MAX_LEVERAGE),
    ],
)
def test_an_order_by_hand_beyond_a_limit_is_refused_naming_it(
    limits: dict[str, object], quantity: str, reason: DenialReason
) -> None:
    # Arrange: long 0.031 BTC (about 3,200 USDT at the first bar's close) on 10,000 USDT
    desk = Desk(**limits)  # type: ignore[arg-type]
    desk.fill(BTC, OrderSide.BUY, Decimal("0.031"))

    # Act
    with pytest.raises(RiskRefusedError) as raised:
        desk.risk.check_manual_order(BTC, OrderSide.BUY, Decimal(quantity), False)

    # Assert
    assert reason.value in str(raised.value)


def test_orders_by_hand_count_toward_the_orders_per_window_limit_with_the_approvals() -> None:
    # Arrange: two orders a minute at most
    desk = Desk(limits=RiskLimits(max_orders_per_window=2, rate_window_seconds=60))
    small = Decimal("0.002")

    # Act: two orders by hand pass, the third and the next allocation are refused
    desk.risk.check_manual_order(BTC, OrderSide.BUY, small, False)
    desk.risk.check_manual_order(ETH, OrderSide.BUY, small, False)
    with pytest.raises(RiskRefusedError) as raised:
        desk.risk.check_manual_order(BTC, OrderSide.BUY, small, False)
    desk.propose(BTCUSDT=0.2)

    # Assert
    assert DenialReason.ORDER_RATE_LIMIT.value in str(raised.value)
    assert [d.reason_code for d in desk.denied] == [DenialReason.ORDER_RATE_LIMIT.value] * 2
    assert desk.approved == []
