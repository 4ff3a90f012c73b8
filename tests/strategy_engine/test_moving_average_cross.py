"""The skeleton's moving-average cross, kept as an example, and the runner of a single strategy, on real bars."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.fsm import ComponentState
from keel.core.messages import BarClosed, SignalAction, SignalGenerated, StrategyError
from keel.strategy_engine import BaseStrategy, MovingAverageCrossStrategy, StrategyRunner, StrategySignal
from kit import real_bars, with_closes

MINUTE_NS = 60_000_000_000


def signals_of(strategy: BaseStrategy, bars: list[BarClosed]) -> list[tuple[int, str]]:
    out = []
    for bar in bars:
        signal = strategy.on_bar(bar)
        if signal is not None:
            out.append((bar.ts_event, signal.action))
    return out


@pytest.mark.parametrize(("fast_period", "slow_period"), [(20, 60), (1, 2), (7, 8), (3, 250)])
def test_signals_follow_the_sign_of_fast_minus_slow_computed_in_batch(fast_period: int, slow_period: int) -> None:
    # Arrange
    bars = real_bars("BTCUSDT", 3000)
    closes = np.array([b.close for b in bars])
    fast = np.convolve(closes, np.ones(fast_period) / fast_period, mode="valid")[slow_period - fast_period :]
    slow = np.convolve(closes, np.ones(slow_period) / slow_period, mode="valid")
    direction = np.sign(fast - slow)
    expected = []
    previous = 0
    for i, d in enumerate(direction):
        if d != 0 and d != previous:
            expected.append((bars[i + slow_period - 1].ts_event, "BUY" if d > 0 else "SELL"))
            previous = d

    # Act
    actual = signals_of(MovingAverageCrossStrategy(fast_period, slow_period), bars)

    # Assert
    assert len(actual) > 10
    assert actual == expected


def test_no_signal_before_warmup() -> None:
    # Arrange
    strategy = MovingAverageCrossStrategy(5, 30)

    # Act
    actual = signals_of(strategy, real_bars("ETHUSDT", 29))

    # Assert
    assert actual == []
    assert strategy.warmup_bars == 30


def test_equal_means_are_a_tie_not_a_cross() -> None:
    # Arrange: each real close held for two bars, so on every second bar the 1-bar and 2-bar means are equal
    bars = list(real_bars("BTCUSDT", 3000))
    closes = [bars[i // 2].close for i in range(len(bars))]
    repeated = with_closes(bars, closes)
    strategy = MovingAverageCrossStrategy(1, 2)

    # Act
    signals = signals_of(strategy, repeated)

    # Assert: the running sums' rounding never makes a cross of a tie
    repeat_times = {bar.ts_event for i, bar in enumerate(repeated) if i % 2 == 1}
    assert len(signals) > 10
    assert [ts for ts, _ in signals if ts in repeat_times] == []


def test_lookahead_signals_up_to_t_do_not_depend_on_later_bars() -> None:
    # Arrange: the same real bars, then the tail after t replaced by a perturbed copy
    bars = list(real_bars("SOLUSDT", 2000))
    cut = 1200
    rng = np.random.default_rng(7)
    perturbed_closes = [b.close for b in bars[:cut]] + [b.close * (1 + rng.normal(0, 0.01)) for b in bars[cut:]]
    perturbed = bars[:cut] + with_closes(bars, perturbed_closes)[cut:]

    # Act
    stopped_at_t = signals_of(MovingAverageCrossStrategy(20, 60), bars[:cut])
    full = signals_of(MovingAverageCrossStrategy(20, 60), bars)
    changed_future = signals_of(MovingAverageCrossStrategy(20, 60), perturbed)

    # Assert
    t = bars[cut - 1].ts_event
    assert [s for s in full if s[0] <= t] == stopped_at_t
    assert [s for s in changed_future if s[0] <= t] == stopped_at_t


def test_invalid_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="fast_period < slow_period"):
        MovingAverageCrossStrategy(60, 20)


def test_signal_values_are_validated() -> None:
    with pytest.raises(ValueError, match="strength"):
        StrategySignal("BTCUSDT", "BUY", 1.5, 0.5)
    with pytest.raises(ValueError, match="action"):
        StrategySignal("BTCUSDT", "LONG", 0.5, 0.5)


class _Exploding(BaseStrategy):
    def __init__(self) -> None:
        super().__init__("exploding")
        self.calls = 0

    def generate_signal(self, market_data: Mapping[str, Any], current_index: int) -> StrategySignal | None:
        self.calls += 1
        if self.calls == 2:
            raise ZeroDivisionError("bad strategy code")
        return StrategySignal(market_data["symbol"], "BUY", 1.0, 0.5)


def test_runner_publishes_signals_and_survives_a_raising_strategy() -> None:
    # Arrange
    bus = EventBus()
    clock = SimulatedClock(0)
    strategy = _Exploding()
    runner = StrategyRunner(strategy, bus, clock)
    signals: list[SignalGenerated] = []
    errors: list[StrategyError] = []
    bus.subscribe(SignalGenerated, signals.append)
    bus.subscribe(StrategyError, errors.append)
    runner.start()

    # Act
    for bar in real_bars("BTCUSDT", 3):
        bus.publish(bar)
        bus.drain()

    # Assert: the view of bar 1 stands through the error on bar 2, so only one signal is news
    assert strategy.calls == 3
    assert [(s.strategy, s.action, s.strength, s.confidence) for s in signals] == [
        ("exploding", SignalAction.BUY, 1.0, 0.5)
    ]
    assert [(e.strategy, e.symbol, e.error_type, e.message) for e in errors] == [
        ("exploding", "BTCUSDT", "ZeroDivisionError", "bad strategy code")
    ]
    assert runner.errors == 1
    assert runner.state is ComponentState.DEGRADED
    assert bus.handler_errors == 0


def test_the_cross_runs_through_the_runner_with_the_same_signals() -> None:
    # Arrange
    bus = EventBus()
    runner = StrategyRunner(MovingAverageCrossStrategy(20, 60), bus, SimulatedClock(0))
    published: list[SignalGenerated] = []
    bus.subscribe(SignalGenerated, published.append)
    runner.start()
    bars = real_bars("ETHUSDT", 2000)

    # Act
    for bar in bars:
        bus.publish(bar)
        bus.drain()

    # Assert
    assert [(s.ts_event, s.action.value) for s in published] == signals_of(MovingAverageCrossStrategy(20, 60), bars)
