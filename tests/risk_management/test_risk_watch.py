"""The bar-by-bar watch's shortcuts agree with the full checks they stand in for.

The watch asks ``_within_limits`` before it builds violations, prices a
one-symbol book's parametric VaR without numpy, and skips a bar that changed
none of its inputs; each must give what the full checks give, on real BTCUSDT
and ETHUSDT returns (May 2025).
"""

from __future__ import annotations

import functools
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.instruments import Instrument, load_instruments
from keel.core.messages import Message, OrderFilled, RiskBreached, RiskLimitsUpdated, TradingStateChanged
from keel.core.orders import LiquiditySide, OrderSide
from keel.risk_management.measures import PortfolioState
from keel.risk_management.position_manager import PositionManager
from keel.risk_management.risk_controller import RiskController
from keel.risk_management.var import parametric_var
from kit import real_bars

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@functools.cache
def instruments() -> dict[str, Instrument]:
    return load_instruments(ROOT / "config" / "instruments.yaml")


@functools.cache
def warmed_controller() -> RiskController:
    """A controller whose VaR window holds 300 bars of real returns of both symbols."""
    risk = RiskController(
        instruments(), symbols=SYMBOLS, var_window=300, min_var_observations=60, covariance_refresh_bars=1
    )
    bars = [bar for pair in zip(*(real_bars(s, 301) for s in SYMBOLS), strict=True) for bar in pair]
    risk.warm_up(bars)
    risk.estimate_var({"equity": 1.0, "positions": {}})  # refresh the cached covariance
    return risk


exposure = st.one_of(st.just(0.0), st.floats(min_value=-200_000.0, max_value=200_000.0))


@settings(max_examples=300, deadline=None)
@given(
    equity=st.floats(min_value=-1_000.0, max_value=50_000.0),
    btc=exposure,
    eth=exposure,
    drawdown=st.floats(min_value=0.0, max_value=0.5),
    var_limit=st.floats(min_value=0.001, max_value=0.5),
)
def test_within_limits_is_true_exactly_when_no_violation_is_found(
    equity: float, btc: float, eth: float, drawdown: float, var_limit: float
) -> None:
    # Arrange
    risk = warmed_controller()
    risk.limits = risk.limits.updated({"var_daily_pct": var_limit})
    risk.drawdown = drawdown
    exposures = {s: v for s, v in zip(SYMBOLS, (btc, eth), strict=True) if v != 0.0}
    state = PortfolioState(equity, exposures)

    # Act
    within = risk._within_limits(state)
    kept = risk.last_var
    violations = risk._state_violations(state)

    # Assert: the same answer, and the same VaR estimate kept for the status and the recovery check
    assert within == (violations == [])
    assert kept == risk.last_var


@settings(max_examples=300, deadline=None)
@given(symbol=st.sampled_from(SYMBOLS), value=st.floats(min_value=-1e6, max_value=1e6), other=exposure)
def test_parametric_var_without_numpy_is_numpys_to_the_bit(symbol: str, value: float, other: float) -> None:
    # Arrange
    risk = warmed_controller()
    exposures = {symbol: value}
    if other != 0.0:
        exposures[next(s for s in SYMBOLS if s != symbol)] = other
    vector = np.array([exposures.get(s, 0.0) for s in SYMBOLS])
    assert risk._covariance[0, 0] > 0 and risk._covariance[1, 1] > 0

    # Act
    shortcut = risk._parametric_var(exposures, 0.99)

    # Assert
    assert shortcut == parametric_var(vector, risk._covariance, 0.99)


def test_parametric_var_of_a_flat_book_is_numpys() -> None:
    # Arrange
    risk = warmed_controller()

    # Act
    shortcut = risk._parametric_var({}, 0.99)

    # Assert
    assert shortcut == parametric_var(np.zeros(len(SYMBOLS)), risk._covariance, 0.99) == (0.0, 0.0)


class _EveryBarWatch(RiskController):
    """The reference: the watch's full checks on every bar, never skipped."""

    def _watch(self, ts: int) -> None:
        self._refresh_estimates()
        self._watch_anew(ts)


class _Watched:
    """A controller and its book on their own bus, fed real BTCUSDT bars and fills; what they publish, kept."""

    def __init__(self, kind: type[RiskController], var_limit: float) -> None:
        bars = real_bars("BTCUSDT", 1)
        self.clock = SimulatedClock(bars[0].ts_event)
        self.bus = EventBus()
        self.positions = PositionManager(Decimal("10000"), self.bus, self.clock)
        self.risk = kind(
            instruments(),
            self.positions,
            symbols=("BTCUSDT",),
            var_daily_pct=var_limit,
            max_leverage=4.0,
            var_window=20,
            min_var_observations=10,
            covariance_refresh_bars=7,
            bus=self.bus,
            clock=self.clock,
        )
        self.published: list[Message] = []
        for kind_ in (RiskBreached, RiskLimitsUpdated, TradingStateChanged):
            self.bus.subscribe(kind_, self.published.append)
        self.positions.start()
        self.risk.start()
        self.bus.drain()

    def step(self, message: Message) -> None:
        self.clock.advance_to(max(self.clock.timestamp_ns(), message.ts_event))
        self.bus.publish(message)
        self.bus.drain()

    def seen(self) -> tuple[object, ...]:
        risk = self.risk
        return (
            risk.trading_state,
            risk.drawdown,
            risk.max_drawdown,
            risk.last_var,
            risk.breaches,
            [
                (type(m).__name__, {k: v for k, v in msgspec.structs.asdict(m).items() if k != "id"})
                for m in self.published
            ],
        )


def test_a_python_subclass_overriding_the_watch_is_what_the_bars_call() -> None:
    # Arrange: compiled (keel.compiled_modules), the controller's own calls must still reach a Python override;
    # the reference watch of the test below depends on it
    watched_at: list[int] = []

    class Recording(RiskController):
        def _watch(self, ts: int) -> None:
            watched_at.append(ts)
            super()._watch(ts)

    watched = _Watched(Recording, 0.05)
    bars = real_bars("BTCUSDT", 5)

    # Act
    for bar in bars:
        watched.step(bar)

    # Assert: each bar time is watched once the next one arrives
    assert watched_at == [bar.ts_event for bar in bars[:-1]]


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(0, 2000),
    var_limit=st.sampled_from([0.001, 0.005, 0.05]),
    fills=st.lists(st.tuples(st.integers(0, 119), st.integers(-30, 30)), max_size=12),
    limit_changes=st.lists(st.tuples(st.integers(0, 119), st.sampled_from([0.002, 0.01, 0.2])), max_size=3),
)
def test_watch_that_skips_unchanged_bars_sees_what_the_every_bar_watch_sees(
    start: int, var_limit: float, fills: list[tuple[int, int]], limit_changes: list[tuple[int, float]]
) -> None:
    # Arrange: 120 real bars; fills of whole thousandths of a BTC (opening, adding, closing, flipping) at bar closes
    bars = real_bars("BTCUSDT", 120, start)
    skipping, reference = _Watched(RiskController, var_limit), _Watched(_EveryBarWatch, var_limit)
    fills_at: dict[int, list[int]] = {}
    for index, size in fills:
        fills_at.setdefault(index, []).append(size)
    changes_at = dict(limit_changes)

    # Act
    observed, expected = [], []
    for index, bar in enumerate(bars):
        for watched in (skipping, reference):
            watched.step(bar)
            for number, size in enumerate(fills_at.get(index, [])):
                if size:
                    watched.step(
                        OrderFilled(
                            client_order_id=f"fill-{index}-{number}",
                            venue_order_id=f"{index}-{number}",
                            symbol="BTCUSDT",
                            trade_id=f"{index}-{number}",
                            side=OrderSide.BUY if size > 0 else OrderSide.SELL,
                            last_quantity=Decimal(abs(size)) / 1000,
                            last_price=Decimal(repr(bar.close)),
                            commission=Decimal("0.01"),
                            liquidity_side=LiquiditySide.TAKER,
                            ts_event=bar.ts_event,
                            ts_init=bar.ts_event,
                        )
                    )
            if index in changes_at:
                watched.risk.update_limits({"var_daily_pct": changes_at[index]})
        observed.append(skipping.seen())
        expected.append(reference.seen())

    # Assert: the same states, drawdowns, VaR estimates and published events after every bar
    assert observed == expected
