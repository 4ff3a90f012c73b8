"""Execution styles and their schedules: how much of a parent order should have traded by when.

Pure functions, no state: :func:`twap_schedule` (equal slices over a horizon,
sizes and times randomized within bounds by a seeded generator),
:func:`vwap_schedule` (slices weighted by the liquidity profile's volume
curve) and :func:`choose_style` (the ADAPTIVE decision from urgency, spread,
book imbalance, VPIN and the impact estimate).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

import numpy as np


class ExecutionStyle(Enum):
    """How a parent order is worked."""

    AGGRESSIVE = "AGGRESSIVE"
    PASSIVE = "PASSIVE"
    TWAP = "TWAP"
    VWAP = "VWAP"
    ADAPTIVE = "ADAPTIVE"


@dataclass(frozen=True, slots=True)
class Slice:
    """One step of a schedule: by ``ts`` (ns) the parent should have traded ``fraction`` of itself in total."""

    ts: int
    fraction: float


def twap_schedule(
    start_ns: int, horizon_ns: int, slices: int, *, seed: int, size_jitter: float = 0.0, time_jitter: float = 0.0
) -> list[Slice]:
    """Return a TWAP schedule: ``slices`` cumulative targets spread evenly over the horizon.

    Parameters
    ----------
    start_ns, horizon_ns
        When the schedule starts and how long it runs (ns, horizon > 0).
    slices
        Number of slices (>= 1); the first is due at ``start_ns``.
    seed
        Seed of the randomization (same seed, same schedule).
    size_jitter
        Each slice's size is scaled by a uniform draw in ``[1 - j, 1 + j]`` before normalizing (0 <= j < 1).
    time_jitter
        Each slice time after the first moves by a uniform draw of up to ``j`` of the slice interval (0 <= j < 0.5).

    Raises
    ------
    ValueError
        For a non-positive horizon or slice count, or jitter outside its bounds.
    """
    if horizon_ns <= 0 or slices < 1:
        raise ValueError(f"TWAP needs a positive horizon and slice count, got {horizon_ns} ns and {slices}")
    if not 0 <= size_jitter < 1 or not 0 <= time_jitter < 0.5:
        raise ValueError(f"size_jitter must lie in [0, 1), time_jitter in [0, 0.5), got {size_jitter}, {time_jitter}")
    rng = random.Random(seed)
    sizes = np.array([1.0 + rng.uniform(-size_jitter, size_jitter) for _ in range(slices)])
    cumulative = np.cumsum(sizes / sizes.sum())
    interval = horizon_ns / slices
    times = [start_ns] + [
        round(start_ns + k * interval + rng.uniform(-time_jitter, time_jitter) * interval) for k in range(1, slices)
    ]
    return [Slice(ts, float(fraction)) for ts, fraction in zip(times, cumulative, strict=True)]


def vwap_schedule(start_ns: int, minute_fractions: np.ndarray) -> list[Slice]:
    """Return a VWAP schedule from per-minute volume fractions (the liquidity profile's ``volume_schedule``).

    Raises
    ------
    ValueError
        If the fractions are empty, negative, not finite or do not sum to a positive number.
    """
    weights = np.asarray(minute_fractions, dtype=float)
    if weights.size == 0 or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("VWAP needs finite, non-negative minute volume fractions with a positive sum")
    cumulative = np.cumsum(weights / weights.sum())
    minute = 60_000_000_000
    return [Slice(start_ns + k * minute, float(fraction)) for k, fraction in enumerate(cumulative)]


@dataclass(frozen=True, slots=True)
class MarketState:
    """What ADAPTIVE looks at; None where an analyzer has no value yet."""

    spread_bps: float
    imbalance: float
    vpin: float | None = None
    impact_bps: float | None = None


def choose_style(
    urgency: float, side_sign: int, market: MarketState, *, toxic_vpin: float = 0.6, wide_spread_bps: float = 2.0
) -> ExecutionStyle:
    """Return the style ADAPTIVE works with now.

    High urgency, or toxic flow (VPIN above ``toxic_vpin``) that makes
    waiting costly, takes liquidity. A wide spread or a book leaning against
    the order (imbalance on the order's own side makes the touch likely to
    move away) favours posting when urgency is low. A large expected impact
    spreads the order over time (TWAP); otherwise it posts passively.

    Parameters
    ----------
    urgency
        In [0, 1]: 0 patient, 1 immediate.
    side_sign
        +1 for a buy, -1 for a sell.
    market
        Spread (bps), book imbalance in [-1, 1] (positive: more bids), VPIN, impact estimate (bps).

    Raises
    ------
    ValueError
        For urgency outside [0, 1] or a side sign other than +1/-1.
    """
    if not 0 <= urgency <= 1 or side_sign not in (1, -1):
        raise ValueError(f"urgency must lie in [0, 1] and side_sign be +1 or -1, got {urgency}, {side_sign}")
    if urgency >= 0.8 or (market.vpin is not None and market.vpin >= toxic_vpin):
        return ExecutionStyle.AGGRESSIVE
    pressure = market.imbalance * side_sign  # > 0: the book leans with the order, the price may run away
    if urgency >= 0.5 and pressure > 0.5 and market.spread_bps < wide_spread_bps:
        return ExecutionStyle.AGGRESSIVE
    if market.impact_bps is not None and market.impact_bps > market.spread_bps:
        return ExecutionStyle.TWAP
    return ExecutionStyle.PASSIVE
