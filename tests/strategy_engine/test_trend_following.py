"""Trend following on real bars: entries and exits checked against batch indicators, no look-ahead."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from strategy_data import MAY_5, assert_no_lookahead, index_at, market_data, signals, transitions

from keel.strategy_engine import TrendFollowingStrategy


@pytest.fixture(scope="module")
def week() -> dict:
    return market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=7 * 1440)


# Hourly-scale settings: a week of 1m bars holds enough of their trades to check the rules on.
PARAMETERS = {
    "fast_period": 20,
    "slow_period": 80,
    "channel_period": 60,
    "atr_period": 30,
    "stop_atr_multiple": 3.0,
    "take_profit_atr_multiple": 8.0,
    "min_trend_strength": 0.3,
}


@pytest.fixture(scope="module")
def views(week: dict) -> list:
    return signals(TrendFollowingStrategy(**PARAMETERS), week)


def efficiency(close: pd.Series, period: int) -> np.ndarray:
    return (close.diff(period).abs() / close.diff().abs().rolling(period).sum()).to_numpy()


def test_entries_are_breakouts_in_the_trends_direction_with_enough_efficiency(week: dict, views: list) -> None:
    # Arrange
    p = PARAMETERS
    close = pd.Series(week["close"])
    fast = close.ewm(span=p["fast_period"], adjust=False).mean().to_numpy()
    slow = close.ewm(span=p["slow_period"], adjust=False).mean().to_numpy()
    upper = pd.Series(week["high"]).rolling(p["channel_period"]).max().shift(1).to_numpy()
    lower = pd.Series(week["low"]).rolling(p["channel_period"]).min().shift(1).to_numpy()
    ratio = efficiency(close, p["channel_period"])

    # Act
    entries = [(i, new) for i, old, new in transitions(views) if old == "HOLD"]

    # Assert
    assert len(entries) >= 5
    for i, action in entries:
        assert ratio[i] >= p["min_trend_strength"] - 1e-9
        if action == "BUY":
            assert close[i] > upper[i] and fast[i] > slow[i]
        else:
            assert close[i] < lower[i] and fast[i] < slow[i]


def test_exits_are_a_stop_a_target_or_the_trend_turning(week: dict, views: list) -> None:
    # Arrange
    p = PARAMETERS
    close = pd.Series(week["close"])
    fast = close.ewm(span=p["fast_period"], adjust=False).mean().to_numpy()
    slow = close.ewm(span=p["slow_period"], adjust=False).mean().to_numpy()

    # Act
    exits = [(i, old) for i, old, new in transitions(views) if new == "HOLD" and old != "HOLD"]

    # Assert
    assert len(exits) >= 5
    for i, old in exits:
        held = views[i - 1]
        if old == "BUY":
            assert week["low"][i] <= held.stop_loss or week["high"][i] >= held.take_profit or fast[i] < slow[i]
        else:
            assert week["high"][i] >= held.stop_loss or week["low"][i] <= held.take_profit or fast[i] > slow[i]


def test_the_trailing_stop_only_tightens_and_strength_is_fixed_per_position(views: list) -> None:
    # Arrange
    held = [(i, v) for i, v in enumerate(views) if v is not None and v.action != "HOLD"]

    # Act
    pairs = [(a, b) for (i, a), (j, b) in itertools.pairwise(held) if j == i + 1 and a.action == b.action]

    # Assert
    assert len(pairs) > 100
    for before, after in pairs:
        if after.action == "BUY":
            assert after.stop_loss >= before.stop_loss
        else:
            assert after.stop_loss <= before.stop_loss
        assert (after.strength, after.confidence) == (before.strength, before.confidence)
        assert 0.0 <= after.strength <= 1.0 and 0.0 < after.confidence <= 1.0


def test_no_view_before_warmup(week: dict) -> None:
    # Arrange
    strategy = TrendFollowingStrategy()

    # Act
    early = signals(strategy, week, upto=strategy.warmup_bars - 2)

    # Assert
    assert early == [None] * (strategy.warmup_bars - 1)
    assert strategy.warmup_bars == strategy.parameters["channel_period"] + 1


def test_lookahead_trend_following_up_to_t_ignores_later_bars() -> None:
    data = market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=3000)
    assert_no_lookahead(lambda: TrendFollowingStrategy(**PARAMETERS), data, cut=2000)
