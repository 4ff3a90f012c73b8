"""Incremental indicators against plain batch computations (pandas / numpy) on real bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from strategy_data import bar_frame

from keel.strategy_engine.indicators import (
    AverageTrueRange,
    EfficiencyRatio,
    ExponentialMovingAverage,
    RollingExtremes,
    RollingMeanSquare,
    RollingMoments,
)

N = 5000


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return bar_frame("ETHUSDT").iloc[:N].reset_index(drop=True)


def test_ema_matches_pandas_ewm(bars: pd.DataFrame) -> None:
    # Arrange
    ema = ExponentialMovingAverage(20)

    # Act
    values = [ema.update(c) for c in bars["close"]]

    # Assert
    expected = bars["close"].ewm(span=20, adjust=False).mean().to_numpy()
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_atr_matches_wilder_smoothing_seeded_with_the_mean(bars: pd.DataFrame) -> None:
    # Arrange
    period = 14
    atr = AverageTrueRange(period)
    high, low, close = (bars[c].to_numpy() for c in ("high", "low", "close"))
    previous = np.concatenate([[np.nan], close[:-1]])
    true_range = np.nanmax(np.stack([high - low, np.abs(high - previous), np.abs(low - previous)]), axis=0)
    expected = np.full(len(close), np.nan)
    expected[period - 1] = true_range[:period].mean()
    for i in range(period, len(close)):
        expected[i] = (expected[i - 1] * (period - 1) + true_range[i]) / period

    # Act
    values = [atr.update(h, lo, c) for h, lo, c in zip(high, low, close, strict=True)]

    # Assert
    np.testing.assert_allclose(values, expected, rtol=1e-10)
    assert np.isnan(values[period - 2]) and atr.ready


def test_rolling_extremes_match_pandas_rolling_max_and_min(bars: pd.DataFrame) -> None:
    # Arrange
    extremes = RollingExtremes(60)
    highest, lowest = [], []

    # Act
    for h, lo in zip(bars["high"], bars["low"], strict=True):
        extremes.update(h, lo)
        highest.append(extremes.highest)
        lowest.append(extremes.lowest)

    # Assert
    expected_high = bars["high"].rolling(60, min_periods=1).max().to_numpy()
    expected_low = bars["low"].rolling(60, min_periods=1).min().to_numpy()
    assert np.array_equal(highest, expected_high)
    assert np.array_equal(lowest, expected_low)


def test_windowed_welford_matches_numpy_mean_and_std(bars: pd.DataFrame) -> None:
    # Arrange
    moments = RollingMoments(60)
    means, stds = [], []

    # Act
    for c in bars["close"]:
        moments.update(c)
        means.append(moments.mean)
        stds.append(moments.std)

    # Assert
    expected_mean = bars["close"].rolling(60).mean().to_numpy()[59:]
    expected_std = bars["close"].rolling(60).std(ddof=0).to_numpy()[59:]
    np.testing.assert_allclose(means[59:], expected_mean, rtol=1e-12)
    np.testing.assert_allclose(stds[59:], expected_std, rtol=1e-7)


def test_efficiency_ratio_matches_its_batch_definition(bars: pd.DataFrame) -> None:
    # Arrange
    period = 30
    ratio = EfficiencyRatio(period)
    log_close = np.log(bars["close"].to_numpy())
    net = np.abs(log_close[period:] - log_close[:-period])
    path = pd.Series(np.abs(np.diff(log_close))).rolling(period).sum().to_numpy()[period - 1 :]

    # Act
    values = [ratio.update(x) for x in log_close]

    # Assert
    np.testing.assert_allclose(values[period:], net / path, rtol=1e-8)
    assert np.all(np.isnan(values[:period]))
    assert all(0.0 <= v <= 1.0 for v in values[period:])


def test_rolling_mean_square_matches_numpy(bars: pd.DataFrame) -> None:
    # Arrange
    returns = np.diff(np.log(bars["close"].to_numpy()))
    mean_square = RollingMeanSquare(60)

    # Act
    values = [mean_square.update(r) for r in returns]

    # Assert
    expected = pd.Series(returns**2).rolling(60).mean().to_numpy()[59:]
    np.testing.assert_allclose(values[59:], expected, rtol=1e-8)


@pytest.mark.parametrize(
    "make", [ExponentialMovingAverage, AverageTrueRange, RollingExtremes, RollingMoments, EfficiencyRatio]
)
def test_a_window_below_its_minimum_is_refused(make: type) -> None:
    with pytest.raises(ValueError, match="period must be"):
        make(0)


def _run_all(highs: np.ndarray, lows: np.ndarray, closes: np.ndarray) -> list[tuple[float, ...]]:
    ema, atr, extremes = ExponentialMovingAverage(20), AverageTrueRange(14), RollingExtremes(60)
    moments, ratio, mean_square = RollingMoments(60), EfficiencyRatio(30), RollingMeanSquare(60)
    out = []
    for h, lo, c in zip(highs.tolist(), lows.tolist(), closes.tolist(), strict=True):
        extremes.update(h, lo)
        moments.update(c)
        out.append(
            (
                ema.update(c),
                atr.update(h, lo, c),
                extremes.highest,
                extremes.lowest,
                moments.mean,
                moments.std,
                ratio.update(c),
                mean_square.update(c),
            )
        )
    return out


def test_lookahead_indicator_values_up_to_t_ignore_later_bars(bars: pd.DataFrame) -> None:
    # Arrange
    cut = 3000
    high, low, close = (bars[c].to_numpy() for c in ("high", "low", "close"))
    noise = np.ones(len(close))
    noise[cut + 1 :] += np.random.default_rng(5).normal(0.0, 0.01, len(close) - cut - 1)

    # Act
    stopped = _run_all(high[: cut + 1], low[: cut + 1], close[: cut + 1])
    full = _run_all(high, low, close)
    changed = _run_all(high * noise, low * noise, close * noise)

    # Assert: NaN (before warm-up) equals NaN here, as it does not under ==
    np.testing.assert_array_equal(np.array(full[: cut + 1]), np.array(stopped))
    np.testing.assert_array_equal(np.array(changed[: cut + 1]), np.array(stopped))
    assert not np.array_equal(np.array(changed[cut + 1 :]), np.array(full[cut + 1 :]), equal_nan=True)
