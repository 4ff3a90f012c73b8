"""Volatility breakout on real bars: the three gates checked in batch, exits, no look-ahead."""

from __future__ import annotations

import pandas as pd
import pytest
from strategy_data import MAY_5, assert_no_lookahead, index_at, market_data, signals, transitions

from keel.strategy_engine import VolatilityBreakoutStrategy


@pytest.fixture(scope="module")
def week() -> dict:
    return market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=7 * 1440)


@pytest.fixture(scope="module")
def views(week: dict) -> list:
    return signals(VolatilityBreakoutStrategy(), week)


def test_entries_pass_the_breakout_and_volume_gates(week: dict, views: list) -> None:
    # Arrange
    p = VolatilityBreakoutStrategy().parameters
    n = p["range_period"]
    upper = pd.Series(week["high"]).rolling(n).max().shift(1).to_numpy()
    lower = pd.Series(week["low"]).rolling(n).min().shift(1).to_numpy()
    mean_volume = pd.Series(week["volume"]).rolling(n).mean().shift(1).to_numpy()

    # Act
    entries = [(i, new) for i, old, new in transitions(views) if old == "HOLD"]

    # Assert
    assert len(entries) >= 10
    for i, action in entries:
        mid, half = (upper[i] + lower[i]) / 2, (upper[i] - lower[i]) / 2
        assert week["volume"][i] >= p["volume_multiple"] * mean_volume[i] * (1 - 1e-9)
        if action == "BUY":
            assert week["close"][i] > mid + p["breakout_k"] * half
        else:
            assert week["close"][i] < mid - p["breakout_k"] * half
        assert views[i].metadata["atr_ratio"] > 0


def test_no_entry_without_a_recent_squeeze(week: dict) -> None:
    # Arrange: a squeeze threshold no market meets
    strict = VolatilityBreakoutStrategy(squeeze_ratio=0.1, squeeze_memory=1)
    loose = VolatilityBreakoutStrategy(squeeze_ratio=1.5)

    # Act
    strict_views = signals(strict, week)
    loose_views = signals(loose, week)

    # Assert
    assert all(v is None or v.action == "HOLD" for v in strict_views)
    assert len(transitions(loose_views)) > len(transitions(signals(VolatilityBreakoutStrategy(), week)))


def test_exits_are_the_stop_the_target_or_the_time_limit(week: dict, views: list) -> None:
    # Arrange
    limit = VolatilityBreakoutStrategy().parameters["max_hold_bars"]

    # Act
    changes = transitions(views)
    exits = [(i, old, changes[k - 1][0]) for k, (i, old, new) in enumerate(changes) if new == "HOLD" and k > 0]

    # Assert
    assert len(exits) >= 10
    for i, old, entered in exits:
        held = views[i - 1]
        timed_out = i - entered >= limit
        if old == "BUY":
            assert week["low"][i] <= held.stop_loss or week["high"][i] >= held.take_profit or timed_out
        else:
            assert week["high"][i] >= held.stop_loss or week["low"][i] <= held.take_profit or timed_out


def test_lookahead_volatility_breakout_up_to_t_ignores_later_bars() -> None:
    data = market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=3000)
    assert_no_lookahead(VolatilityBreakoutStrategy, data, cut=2000)
