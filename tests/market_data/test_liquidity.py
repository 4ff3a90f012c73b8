"""LiquidityProfiler on a month of real 1m bars: streaming equals the pandas reference; windows; no look-ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel.market_data.liquidity import LiquidityProfiler, corwin_schultz_spread, liquidity_profile_batch
from keel.market_data.loaders import load_ohlcv

BARS = Path(__file__).resolve().parents[2] / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz"


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_ohlcv(BARS).frame


def _profiler(bars: pd.DataFrame) -> LiquidityProfiler:
    profiler = LiquidityProfiler(bucket_minutes=30)
    for open_ms, high, low, volume in zip(
        bars["open_time_ms"].tolist(), bars["high"].tolist(), bars["low"].tolist(), bars["volume"].tolist(), strict=True
    ):
        profiler.update(open_ms * 1_000_000, high, low, volume)
    return profiler


def test_streaming_profile_equals_the_pandas_reference(bars: pd.DataFrame) -> None:
    # Act
    streamed = _profiler(bars).profile()
    reference = liquidity_profile_batch(bars, bucket_minutes=30)

    # Assert
    np.testing.assert_allclose(streamed.to_numpy(float), reference.to_numpy(float), rtol=1e-10)
    assert streamed["volume_share"].sum() == pytest.approx(1.0)
    assert (streamed["bars"] == 900).sum() >= 40


@pytest.mark.parametrize(("column", "value"), [("volume", np.nan), ("high", np.inf), ("low", -1.0)])
def test_a_malformed_bar_is_counted_and_left_out_of_the_profile(bars: pd.DataFrame, column: str, value: float) -> None:
    # Arrange: a day of real bars, and a copy of one of them spoilt, fed just before it
    day = bars.iloc[:1440]
    clean, spoilt = _profiler(day), LiquidityProfiler(bucket_minutes=30)
    row = day.iloc[700]
    bad = {"open_time": int(row["open_time_ms"]) * 1_000_000, "high": row["high"], "low": row["low"]}
    bad["volume"] = row["volume"]
    bad[column] = value

    # Act
    for index, (open_ms, high, low, volume) in enumerate(
        zip(
            day["open_time_ms"].tolist(), day["high"].tolist(), day["low"].tolist(), day["volume"].tolist(), strict=True
        )
    ):
        if index == 700:
            spoilt.update(**bad)
        spoilt.update(open_ms * 1_000_000, high, low, volume)

    # Assert: a NaN volume made its half hour's share NaN for good
    assert (spoilt.malformed_bars, clean.malformed_bars) == (1, 0)
    pd.testing.assert_frame_equal(spoilt.profile(), clean.profile())


def test_the_real_profile_peaks_when_us_markets_open(bars: pd.DataFrame) -> None:
    # Act
    profile = _profiler(bars).profile()

    # Assert: BTC volume is highest in the 13:30-14:00 UTC bucket (US cash open) or the hour around it
    busiest = int(profile["volume_share"].idxmax()) * 30
    assert 12 * 60 <= busiest <= 15 * 60
    assert profile["spread_bps"].notna().all() and (profile["spread_bps"] > 0).all()


def test_optimal_windows_are_ranked_and_disjoint(bars: pd.DataFrame) -> None:
    # Arrange
    profiler = _profiler(bars)

    # Act
    windows = profiler.find_optimal_execution_windows(duration_minutes=60, count=3)

    # Assert
    assert len(windows) == 3
    assert [w.score for w in windows] == sorted((w.score for w in windows), reverse=True)
    spans = [set(range(w.start_minute, w.end_minute)) for w in windows]
    assert not (spans[0] & spans[1] or spans[0] & spans[2] or spans[1] & spans[2])
    assert all(w.score == pytest.approx(w.volume_share / w.spread_bps) for w in windows)


def test_participation_and_schedule_follow_the_expected_volume(bars: pd.DataFrame) -> None:
    # Arrange
    profiler = _profiler(bars)
    minute_volume = bars.assign(minute=bars["open_time_ms"] // 60_000 % 1440).groupby("minute")["volume"].mean()

    # Act
    participation = profiler.expected_participation(100.0, 14 * 60, 60)
    schedule = profiler.volume_schedule(13 * 60, 120)

    # Assert
    expected_volume = profiler.expected_volume(14 * 60, 60)
    assert expected_volume == pytest.approx(minute_volume.loc[14 * 60 : 15 * 60 - 1].sum(), rel=0.02)
    assert participation == pytest.approx(100.0 / expected_volume)
    assert schedule.sum() == pytest.approx(1.0) and len(schedule) == 120
    assert schedule[60] > schedule[0]


def test_lookahead_the_profile_at_t_ignores_later_bars(bars: pd.DataFrame) -> None:
    # Arrange
    cut = 20_000
    later = bars.iloc[cut:].assign(volume=bars["volume"].iloc[cut:] * 10, high=bars["high"].iloc[cut:] * 1.01)

    # Act
    stopped = _profiler(bars.iloc[:cut]).profile()
    continued_profiler = _profiler(bars.iloc[:cut])
    snapshot = continued_profiler.profile()
    for open_ms, high, low, volume in zip(
        later["open_time_ms"].tolist(),
        later["high"].tolist(),
        later["low"].tolist(),
        later["volume"].tolist(),
        strict=True,
    ):
        continued_profiler.update(open_ms * 1_000_000, high, low, volume)

    # Assert
    pd.testing.assert_frame_equal(snapshot, stopped)
    assert not continued_profiler.profile().equals(stopped)


def test_the_spread_estimator_is_zero_for_identical_bars_and_positive_for_bouncing_ones() -> None:
    assert corwin_schultz_spread(101.0, 100.0, 101.0, 100.0) > 0
    assert corwin_schultz_spread(100.0, 99.0, 102.0, 101.0) == 0.0


def test_a_bucket_that_does_not_divide_the_day_is_refused() -> None:
    with pytest.raises(ValueError, match="divide a day"):
        LiquidityProfiler(bucket_minutes=7)
