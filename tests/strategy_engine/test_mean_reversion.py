"""Mean reversion on real bars: z-score entries and exits checked in batch, regime filter, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from strategy_data import MAY_5, assert_no_lookahead, index_at, market_data, signals, transitions

from keel.strategy_engine import MeanReversionStrategy


@pytest.fixture(scope="module")
def week() -> dict:
    return market_data("ETHUSDT", start=index_at("ETHUSDT", MAY_5), count=7 * 1440)


@pytest.fixture(scope="module")
def views(week: dict) -> list:
    return signals(MeanReversionStrategy(), week)


@pytest.fixture(scope="module")
def batch(week: dict) -> tuple[np.ndarray, np.ndarray]:
    p = MeanReversionStrategy.default_parameters()
    close = pd.Series(week["close"])
    rolling = close.rolling(p["lookback"])
    z = ((close - rolling.mean()) / rolling.std(ddof=0)).to_numpy()
    window = p["trend_window"]
    ratio = (close.diff(window).abs() / close.diff().abs().rolling(window).sum()).to_numpy()
    return z, ratio


def test_entries_fade_z_score_extremes_only_while_not_trending(views: list, batch: tuple) -> None:
    # Arrange
    p = MeanReversionStrategy.default_parameters()
    z, ratio = batch

    # Act
    entries = [(i, new) for i, old, new in transitions(views) if old == "HOLD"]

    # Assert
    assert len(entries) >= 10
    for i, action in entries:
        assert ratio[i] < p["max_trend_strength"] + 1e-9
        if action == "BUY":
            assert z[i] <= -p["entry_z"] + 1e-6
        else:
            assert z[i] >= p["entry_z"] - 1e-6


def test_exits_are_reversion_to_the_mean_or_the_stop_band(views: list, batch: tuple) -> None:
    # Arrange
    p = MeanReversionStrategy.default_parameters()
    z, _ = batch

    # Act
    exits = [(i, old) for i, old, new in transitions(views) if new == "HOLD" and old != "HOLD"]

    # Assert
    assert len(exits) >= 10
    for i, old in exits:
        signed = z[i] if old == "BUY" else -z[i]
        assert signed >= -p["exit_z"] - 1e-6 or signed <= -p["stop_z"] + 1e-6


def test_the_filter_keeps_it_out_of_trends(week: dict) -> None:
    # Arrange
    strict = MeanReversionStrategy(max_trend_strength=0.05)
    loose = MeanReversionStrategy(max_trend_strength=1.0)

    # Act
    strict_entries = sum(old == "HOLD" for _, old, _ in transitions(signals(strict, week)))
    loose_entries = sum(old == "HOLD" for _, old, _ in transitions(signals(loose, week)))

    # Assert
    assert strict_entries < loose_entries


def test_views_carry_the_bands_set_at_entry(views: list) -> None:
    # Act
    held = [v for v in views if v is not None and v.action != "HOLD"]

    # Assert
    assert held
    for view in held:
        if view.action == "BUY":
            assert view.stop_loss < view.take_profit
        else:
            assert view.stop_loss > view.take_profit
        assert 0.0 < view.strength <= 1.0 and 0.0 < view.confidence <= 1.0


def test_lookahead_mean_reversion_up_to_t_ignores_later_bars() -> None:
    data = market_data("ETHUSDT", start=index_at("ETHUSDT", MAY_5), count=3000)
    assert_no_lookahead(MeanReversionStrategy, data, cut=1800)
