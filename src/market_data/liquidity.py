"""Intraday liquidity profile from 1m bars: when volume is high and spreads are low.

:class:`LiquidityProfiler` groups bars by time of day (UTC) into buckets of
``bucket_minutes`` and keeps, per bucket, the mean bar volume and the mean
spread estimated from the bars' highs and lows (Corwin and Schultz, 2012:
the two-bar estimator on the bar and the one before it, so the estimate at a
bar uses no later bar; negative estimates count as zero). It is updated bar by
bar (``on_bar``); :func:`liquidity_profile_batch` is the plain pandas
reference a test holds equal to it.

From the profile it answers what execution needs: each bucket's share of the
day's volume, :meth:`LiquidityProfiler.find_optimal_execution_windows`
(windows ranked by volume share per bps of spread),
:meth:`LiquidityProfiler.expected_participation` (an order's share of the
volume expected in a window) and :meth:`LiquidityProfiler.volume_schedule`
(the fractions a VWAP schedule trades per bucket).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from keel.core.clock import NANOS_PER_MINUTE
from keel.core.messages import BarClosed

MINUTES_PER_DAY = 24 * 60
_DENOMINATOR = 3.0 - 2.0 * math.sqrt(2.0)


def corwin_schultz_spread(high: float, low: float, previous_high: float, previous_low: float) -> float:
    """Return the Corwin-Schultz spread estimate (a fraction of price, >= 0) from two consecutive bars."""
    beta = math.log(high / low) ** 2 + math.log(previous_high / previous_low) ** 2
    gamma = math.log(max(high, previous_high) / min(low, previous_low)) ** 2
    alpha = (math.sqrt(2.0 * beta) - math.sqrt(beta)) / _DENOMINATOR - math.sqrt(gamma / _DENOMINATOR)
    spread = 2.0 * (math.exp(alpha) - 1.0) / (1.0 + math.exp(alpha))
    return max(spread, 0.0)


@dataclass(frozen=True, slots=True)
class ExecutionWindow:
    """A time-of-day window (UTC minutes ``[start_minute, end_minute)``) and its expected liquidity."""

    start_minute: int
    end_minute: int
    volume_share: float
    spread_bps: float
    score: float


class LiquidityProfiler:
    """Time-of-day volume and spread profile of one symbol (see module doc).

    Parameters
    ----------
    bucket_minutes
        Bucket length; must divide a day.
    bar_minutes
        Length of the bars fed in.
    """

    def __init__(self, bucket_minutes: int = 30, bar_minutes: int = 1) -> None:
        if bucket_minutes <= 0 or MINUTES_PER_DAY % bucket_minutes:
            raise ValueError(f"bucket_minutes must divide a day (1440 minutes), got {bucket_minutes}")
        self.bucket_minutes = bucket_minutes
        self.bar_minutes = bar_minutes
        buckets = MINUTES_PER_DAY // bucket_minutes
        self._volume = np.zeros(buckets)
        self._bars = np.zeros(buckets, dtype=np.int64)
        self._spread = np.zeros(buckets)
        self._spread_bars = np.zeros(buckets, dtype=np.int64)
        self._previous: tuple[int, float, float] | None = None
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._score: np.ndarray | None = None
        self.malformed_bars = 0

    @property
    def buckets(self) -> int:
        """Return the number of buckets in a day."""
        return len(self._volume)

    def bucket_of(self, ts: int) -> int:
        """Return the bucket of a time (ns)."""
        return int(ts // NANOS_PER_MINUTE % MINUTES_PER_DAY) // self.bucket_minutes

    def on_bar(self, bar: BarClosed) -> None:
        """Add one bar (bars of one symbol, in time order)."""
        self.update(bar.open_time, bar.high, bar.low, bar.volume)

    def update(self, open_time: int, high: float, low: float, volume: float) -> None:
        """Add one bar given as plain values (see :meth:`on_bar`).

        A bar whose high and low are not positive finite prices (low at most
        high) or whose volume is not a finite number of at least zero is
        counted in :attr:`malformed_bars` and left out: one NaN would spoil its
        time of day for good.
        """
        if not (
            math.isfinite(high) and math.isfinite(low) and 0.0 < low <= high and math.isfinite(volume) and volume >= 0.0
        ):
            self.malformed_bars += 1
            return
        bucket = self.bucket_of(open_time)
        self._cache = self._score = None
        self._volume[bucket] += volume
        self._bars[bucket] += 1
        previous = self._previous
        if previous is not None and open_time - previous[0] == self.bar_minutes * NANOS_PER_MINUTE:
            self._spread[bucket] += corwin_schultz_spread(high, low, previous[1], previous[2])
            self._spread_bars[bucket] += 1
        self._previous = (open_time, high, low)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return mean volume, volume share and spread (bps) per bucket, NaN where unknown (cached per bar)."""
        if self._cache is None:
            self._cache = self._compute()
        return self._cache

    def _compute(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_volume = np.where(self._bars > 0, self._volume / np.maximum(self._bars, 1), np.nan)
            spread = np.where(self._spread_bars > 0, self._spread / np.maximum(self._spread_bars, 1) * 1e4, np.nan)
        total = np.nansum(mean_volume)
        share = mean_volume / total if total > 0 else np.full(self.buckets, np.nan)
        return mean_volume, share, spread

    def profile(self) -> pd.DataFrame:
        """Return one row per bucket: ``start_minute``, ``bars``, ``mean_volume``, ``volume_share``, ``spread_bps``.

        ``volume_share`` is the bucket's share of the sum of mean volumes
        (NaN without bars); ``spread_bps`` is NaN where no bar pair was seen.
        """
        mean_volume, share, spread = self._arrays()
        return pd.DataFrame(
            {
                "start_minute": np.arange(self.buckets) * self.bucket_minutes,
                "bars": self._bars.copy(),
                "mean_volume": mean_volume,
                "volume_share": share,
                "spread_bps": spread,
            }
        )

    def expected_volume_share(self, ts: int) -> float | None:
        """Return the volume share of the bucket holding ``ts`` (None before it has bars)."""
        share = self._arrays()[1][self.bucket_of(ts)]
        return None if np.isnan(share) else float(share)

    def liquidity_score(self, ts: int) -> float | None:
        """Return the bucket's volume share per bps of spread relative to the day's average (1 = average)."""
        if self._score is None:
            _, share, spread = self._arrays()
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = share / spread
            finite = ratio[np.isfinite(ratio)]
            mean = finite.mean() if finite.size else np.nan
            self._score = ratio / mean if mean > 0 else np.full(self.buckets, np.nan)
        value = self._score[self.bucket_of(ts)]
        return float(value) if np.isfinite(value) else None

    def find_optimal_execution_windows(self, duration_minutes: int = 60, count: int = 3) -> list[ExecutionWindow]:
        """Return the ``count`` best non-overlapping windows of ``duration_minutes`` (a multiple of the bucket).

        Windows are scored by expected volume share divided by mean spread in
        bps, best first; windows with a bucket lacking data are skipped.
        """
        if duration_minutes <= 0 or duration_minutes % self.bucket_minutes:
            raise ValueError(f"duration must be a positive multiple of {self.bucket_minutes} minutes")
        width = duration_minutes // self.bucket_minutes
        profile = self.profile()
        shares = profile["volume_share"].to_numpy()
        spreads = profile["spread_bps"].to_numpy()
        candidates = []
        for start in range(self.buckets):
            window = [(start + k) % self.buckets for k in range(width)]
            share, spread = shares[window].sum(), spreads[window].mean()
            if np.isnan(share) or np.isnan(spread) or spread <= 0:
                continue
            candidates.append((share / spread, start, share, spread))
        candidates.sort(key=lambda item: (-item[0], item[1]))
        chosen: list[ExecutionWindow] = []
        taken: set[int] = set()
        for score, start, share, spread in candidates:
            hours = {(start + k) % self.buckets for k in range(width)}
            if hours & taken:
                continue
            taken |= hours
            begin = start * self.bucket_minutes
            chosen.append(ExecutionWindow(begin, begin + duration_minutes, float(share), float(spread), float(score)))
            if len(chosen) == count:
                break
        return chosen

    def expected_volume(self, start_minute: int, duration_minutes: int) -> float:
        """Return the volume expected from ``start_minute`` (UTC) over ``duration_minutes``, from mean bar volumes."""
        mean_volume = np.nan_to_num(self.profile()["mean_volume"].to_numpy())
        per_minute = mean_volume / self.bar_minutes
        minutes = (np.arange(duration_minutes) + start_minute) % MINUTES_PER_DAY
        return float(per_minute[minutes // self.bucket_minutes].sum())

    def expected_participation(self, order_size: float, start_minute: int, duration_minutes: int) -> float | None:
        """Return ``order_size`` over the volume expected in the window (None when none is expected)."""
        volume = self.expected_volume(start_minute, duration_minutes)
        return order_size / volume if volume > 0 else None

    def volume_schedule(self, start_minute: int, duration_minutes: int) -> np.ndarray:
        """Return per-minute fractions of an order for a VWAP schedule over the window (they sum to 1)."""
        mean_volume = np.nan_to_num(self.profile()["mean_volume"].to_numpy())
        minutes = (np.arange(duration_minutes) + start_minute) % MINUTES_PER_DAY
        weights = mean_volume[minutes // self.bucket_minutes]
        total = weights.sum()
        return weights / total if total > 0 else np.full(duration_minutes, 1.0 / duration_minutes)


def liquidity_profile_batch(bars: pd.DataFrame, bucket_minutes: int = 30, bar_minutes: int = 1) -> pd.DataFrame:
    """Compute :meth:`LiquidityProfiler.profile` of a whole bar frame with pandas (the plain reference).

    Parameters
    ----------
    bars
        ``open_time_ms``, ``high``, ``low``, ``volume`` in time order.
    """
    open_ms = bars["open_time_ms"].to_numpy(np.int64)
    bucket = (open_ms // 60_000 % MINUTES_PER_DAY) // bucket_minutes
    high, low = bars["high"].to_numpy(), bars["low"].to_numpy()
    beta = np.log(high / low) ** 2
    beta = beta + np.r_[np.nan, beta[:-1]]
    gamma = np.log(np.maximum(high, np.r_[np.nan, high[:-1]]) / np.minimum(low, np.r_[np.nan, low[:-1]])) ** 2
    alpha = (np.sqrt(2 * beta) - np.sqrt(beta)) / _DENOMINATOR - np.sqrt(gamma / _DENOMINATOR)
    spread = np.maximum(2 * (np.exp(alpha) - 1) / (1 + np.exp(alpha)), 0.0)
    adjacent = np.r_[False, np.diff(open_ms) == bar_minutes * 60_000]
    frame = pd.DataFrame(
        {"bucket": bucket, "volume": bars["volume"].to_numpy(), "spread": np.where(adjacent, spread, np.nan)}
    )
    grouped = frame.groupby("bucket")
    buckets = pd.RangeIndex(MINUTES_PER_DAY // bucket_minutes)
    mean_volume = grouped["volume"].mean().reindex(buckets)
    return pd.DataFrame(
        {
            "start_minute": buckets * bucket_minutes,
            "bars": grouped.size().reindex(buckets, fill_value=0).to_numpy(),
            "mean_volume": mean_volume.to_numpy(),
            "volume_share": (mean_volume / mean_volume.sum()).to_numpy(),
            "spread_bps": (grouped["spread"].mean() * 1e4).reindex(buckets).to_numpy(),
        }
    )
