"""Range trading on real bars: detected channels, entries at their edges, exits, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from strategy_data import MAY_5, assert_no_lookahead, index_at, market_data, signals, transitions

from keel.strategy_engine import RangeTradingStrategy


@pytest.fixture(scope="module")
def week() -> dict:
    return market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=7 * 1440)


@pytest.fixture(scope="module")
def views(week: dict) -> list:
    return signals(RangeTradingStrategy(), week)


def test_entries_happen_at_the_edges_of_a_detected_range(week: dict, views: list) -> None:
    # Arrange
    p = RangeTradingStrategy.default_parameters()
    period = p["range_period"]
    close = pd.Series(week["close"])
    upper = pd.Series(week["high"]).rolling(period).max().shift(1).to_numpy()
    lower = pd.Series(week["low"]).rolling(period).min().shift(1).to_numpy()
    ratio = (close.diff(period).abs() / close.diff().abs().rolling(period).sum()).to_numpy()
    position = (week["close"] - lower) / (upper - lower)
    width = 2 * (upper - lower) / (upper + lower)

    # Act
    entries = [(i, new) for i, old, new in transitions(views) if old == "HOLD"]

    # Assert
    assert len(entries) >= 5
    for i, action in entries:
        assert p["min_range_width"] <= width[i] <= p["max_range_width"]
        assert ratio[i] < p["max_trend_strength"] + 1e-9
        if action == "BUY":
            assert 0.0 <= position[i] <= p["entry_band"]
            assert views[i].take_profit == pytest.approx((upper[i] + lower[i]) / 2)
        else:
            assert 1.0 - p["entry_band"] <= position[i] <= 1.0


def test_exits_are_the_middle_of_the_range_or_the_stop(week: dict, views: list) -> None:
    # Act
    exits = [(i, old) for i, old, new in transitions(views) if new == "HOLD" and old != "HOLD"]

    # Assert
    assert len(exits) >= 5
    for i, old in exits:
        held, close = views[i - 1], week["close"][i]
        if old == "BUY":
            assert close >= held.take_profit or close <= held.stop_loss
        else:
            assert close <= held.take_profit or close >= held.stop_loss


def test_a_range_narrower_than_the_minimum_width_is_not_traded(week: dict) -> None:
    # Arrange
    fussy = RangeTradingStrategy(min_range_width=0.09, max_range_width=0.1)

    # Act
    views = signals(fussy, week)

    # Assert
    assert all(v is None or v.action == "HOLD" for v in views)
    assert np.isfinite(views[-1].metadata["range_width"])


def test_lookahead_range_trading_up_to_t_ignores_later_bars() -> None:
    data = market_data("SUIUSDT", start=index_at("SUIUSDT", MAY_5), count=3000)
    assert_no_lookahead(RangeTradingStrategy, data, cut=2100)
