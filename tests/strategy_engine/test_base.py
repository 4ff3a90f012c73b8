"""The strategy contract: signals, the incremental base, and the user's own strategy (UC-2.1, UC-2.2)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from strategy_data import MAY_5, events, feed, index_at, market_data

from keel.backtest import BacktestEngine
from keel.core.messages import SignalAction
from keel.strategy_engine import BaseStrategy, StrategySignal, TrendFollowingStrategy
from keel.strategy_engine.base import IncrementalStrategy
from keel.strategy_engine.history import bar_at
from keel.strategy_engine.mean_reversion import MeanReversionStrategy
from keel.strategy_engine.moving_average_cross import MovingAverageCrossStrategy
from keel.strategy_engine.range_trading import RangeTradingStrategy


class VolatilityBreakoutStrategy(BaseStrategy):
    """The strategy of the user's UC-2.1, as written there (plus the volatility helper it calls)."""

    def __init__(self, **parameters: Any) -> None:
        super().__init__("VolatilityBreakout", parameters)
        self.lookback_period = parameters.get("lookback_period", 20)
        self.volatility_threshold = parameters.get("volatility_threshold", 2.0)

    def generate_signal(self, market_data: dict, current_index: int) -> StrategySignal:
        volatility = self._calculate_volatility(market_data, current_index)
        if volatility > self.volatility_threshold:
            return StrategySignal(
                symbol=market_data["symbol"],
                action="BUY",
                strength=min(volatility / self.volatility_threshold, 1.0),
                confidence=0.8,
            )
        return StrategySignal(market_data["symbol"], "HOLD", 0.0, 0.0)

    def _calculate_volatility(self, market_data: dict, current_index: int) -> float:
        """Return the latest absolute log return in standard deviations of the previous ones."""
        if current_index < self.lookback_period:
            return 0.0
        window = np.asarray(market_data["close"][current_index - self.lookback_period : current_index + 1])
        returns = np.diff(np.log(window))
        spread = returns[:-1].std()
        return float(abs(returns[-1]) / spread) if spread > 0 else 0.0


def test_signal_fields_are_validated() -> None:
    with pytest.raises(ValueError, match="strength"):
        StrategySignal("BTCUSDT", "BUY", 1.5, 0.5)
    with pytest.raises(ValueError, match="confidence"):
        StrategySignal("BTCUSDT", "BUY", 0.5, math.nan)
    with pytest.raises(ValueError, match="action"):
        StrategySignal("BTCUSDT", "LONG", 0.5, 0.5)
    with pytest.raises(ValueError, match="stop_loss"):
        StrategySignal("BTCUSDT", "SELL", 0.5, 0.5, stop_loss=-1.0)
    with pytest.raises(ValueError, match="take_profit"):
        StrategySignal("BTCUSDT", "SELL", 0.5, 0.5, take_profit=math.inf)
    with pytest.raises(ValueError, match="signal symbol must be a symbol's name, got ''"):
        StrategySignal("", "BUY", 0.5, 0.5)


def test_signal_accepts_the_enum_and_scores_direction_strength_confidence() -> None:
    # Act
    signal = StrategySignal("ETHUSDT", SignalAction.SELL, 0.5, 0.8, stop_loss=2600.0)

    # Assert
    assert signal.action == "SELL"
    assert signal.direction == -1
    assert signal.score == pytest.approx(-0.4)


def test_the_users_strategy_runs_on_arrays_and_on_bar_events_alike() -> None:
    # Arrange
    data = market_data("BTCUSDT", count=3000)
    as_arrays = VolatilityBreakoutStrategy(lookback_period=20)
    on_events = VolatilityBreakoutStrategy(lookback_period=20)

    # Act
    from_arrays = [as_arrays.generate_signal(data, i) for i in range(3000)]
    from_events = feed(on_events, events("BTCUSDT", data=data))

    # Assert
    assert from_arrays == from_events
    assert 10 < sum(s.action == "BUY" for s in from_arrays) < 3000


def test_the_users_strategy_is_backtestable_as_written() -> None:
    # Arrange
    engine = BacktestEngine()
    strategy = VolatilityBreakoutStrategy(lookback_period=20)

    # Act
    results = asyncio.run(
        engine.run_backtest(
            strategy=strategy,
            start_date="2025-05-10",
            end_date="2025-05-11",
            initial_capital=10000.0,
            symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"],
        )
    )

    # Assert
    runner = results.pipeline.strategy
    assert results["bars_processed"] == 3 * 1440
    assert results["handler_errors"] == 0
    assert runner.errors == 0 and runner.manager.signals_published > 0
    # Its HOLD on quiet bars is "no new view": it buys spikes and holds, not a round trip per spike.
    assert 0 < results["n_trades"] < 60
    assert isinstance(results["sharpe_ratio"], float)


def test_random_access_rebuilds_the_same_signals_as_a_sequential_run() -> None:
    # Arrange
    data = market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=2000)
    hourly = {"fast_period": 20, "slow_period": 80, "channel_period": 60, "atr_period": 30}
    sequential = TrendFollowingStrategy(**hourly)
    expected = [sequential.generate_signal(data, i) for i in range(2000)]
    jumping = TrendFollowingStrategy(**hourly)

    # Act
    picked = {i: jumping.generate_signal(data, i) for i in (1999, 700, 1500, 1501, 30)}

    # Assert
    assert sum(s is not None and s.action != "HOLD" for s in expected) > 5
    assert picked == {i: expected[i] for i in picked}


def test_a_repeated_call_returns_the_same_view_object() -> None:
    # Arrange
    data = market_data("BTCUSDT", count=500)
    strategy = TrendFollowingStrategy()
    first = [strategy.generate_signal(data, i) for i in range(500)][-1]

    # Act
    again = strategy.generate_signal(data, 499)

    # Assert
    assert again is first


def test_signal_after_a_known_bar_is_generate_signal_bar_by_bar_and_after_a_gap() -> None:
    # Arrange: real BTCUSDT bars; one trend follower asked the usual way, one with the bar and its predecessor's key
    data = market_data("BTCUSDT", count=1500)
    usual, told = TrendFollowingStrategy(), TrendFollowingStrategy()
    keys = data["timestamp"]
    # Bar 900 is skipped: the bar after it does not follow the state, so it is rebuilt from the data.
    indexes = [i for i in range(len(keys)) if i != 900]

    # Act
    expected = [usual.generate_signal(data, i) for i in indexes]
    observed = []
    for i in indexes:
        bar = bar_at(data, i)
        previous_key = int(keys[i - 1]) if i > 0 else None
        observed.append(told.signal_after("BTCUSDT", data, i, bar, previous_key))

    # Assert
    assert sum(s is not None for s in expected) > 10
    assert [None if s is None else (s.action, s.strength, s.confidence, s.metadata) for s in observed] == [
        None if s is None else (s.action, s.strength, s.confidence, s.metadata) for s in expected
    ]


BAR_ONLY = [
    TrendFollowingStrategy(fast_period=20, slow_period=80, channel_period=60, atr_period=30),
    MeanReversionStrategy(),
    RangeTradingStrategy(),
    MovingAverageCrossStrategy(),
]


@pytest.mark.parametrize("strategy", BAR_ONLY, ids=lambda s: type(s).__name__)
def test_a_bar_only_strategy_stepped_on_the_bar_alone_signals_as_on_the_whole_market_data(
    strategy: IncrementalStrategy,
) -> None:
    # Arrange: real ETHUSDT bars; a blank copy stepped with nothing but the bar and the symbol
    data = market_data("ETHUSDT", count=2000)
    blank = strategy.blank_copy()
    state = blank.symbol_state("ETHUSDT")
    bare = {"symbol": "ETHUSDT"}

    # Act
    expected = [strategy.generate_signal(data, i) for i in range(2000)]
    observed = []
    for i in range(2000):
        bar = bar_at(data, i)
        state.bars += 1
        state.last_key = bar[0]
        state.last_signal = blank.step(state, bare, i, bar)
        observed.append(state.last_signal)

    # Assert
    assert strategy.reads_bar_only and blank.parameters == strategy.parameters
    assert sum(s is not None for s in expected) > 10
    assert [None if s is None else (s.action, s.strength, s.confidence, s.metadata) for s in observed] == [
        None if s is None else (s.action, s.strength, s.confidence, s.metadata) for s in expected
    ]
