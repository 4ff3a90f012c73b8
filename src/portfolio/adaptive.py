"""Performance-based allocation of the signal budget across strategies.

:class:`AdaptiveAllocator` keeps, per strategy, an exponentially decaying
mean and variance of its per-bar returns (the return of following its views,
see :class:`~keel.portfolio.optimizer.PortfolioOptimizer`), and gives each
strategy a share proportional to its decayed risk-adjusted return (mean over
standard deviation, negative counted as zero), then projected onto the floors
and caps so the shares still sum to one. Strategies with too little history,
or all strategies when none has earned anything, share equally. Updates use
each bar once, in time order, so the shares at t depend on bars up to t only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


def project_onto_bounds(raw: Mapping[str, float], floor: float, cap: float) -> dict[str, float]:
    """Return shares proportional to ``raw`` (negatives count as 0), each in [floor, cap], summing to one.

    The shares are ``clip(scale x raw, floor, cap)`` with the one scale that
    makes them sum to one, found by bisection (the sum grows with the scale).
    When the bounds cannot hold (``n x floor > 1`` or ``n x cap < 1``) they are
    widened to ``1 / n``; when nothing is positive every share is ``1 / n``.
    """
    names = sorted(raw)
    if not names:
        return {}
    n = len(names)
    low, high = min(floor, 1.0 / n), max(cap, 1.0 / n)
    values = [max(0.0, raw[name]) if math.isfinite(raw[name]) else 0.0 for name in names]
    if _total(values) <= 0:
        return dict.fromkeys(names, 1.0 / n)
    # A tiny common part lets strategies at zero rise above the floor when the others are capped.
    top = max(values)
    values = [value / top + 1e-12 for value in values]
    small, large = 0.0, 1.0
    while _total(_clipped(large, values, low, high)) < 1.0:
        large *= 2.0
    for _ in range(64):
        middle = 0.5 * (small + large)
        if _total(_clipped(middle, values, low, high)) < 1.0:
            small = middle
        else:
            large = middle
    shares = _clipped(large, values, low, high)
    total = _total(shares)
    return {name: share / total for name, share in zip(names, shares, strict=True)}


def _clipped(scale: float, values: list[float], low: float, high: float) -> list[float]:
    return [min(max(scale * value, low), high) for value in values]


def _total(values: list[float]) -> float:
    """Return the sum in order (as numpy sums a handful of values; Python 3.12's ``sum`` compensates)."""
    total = 0.0
    for value in values:
        total += value
    return total


class AdaptiveAllocator:
    """Share a budget across strategies by their decayed risk-adjusted performance.

    Parameters
    ----------
    halflife
        Bars after which an observation's weight halves.
    floor, cap
        Smallest and largest share of any strategy.
    min_observations
        Bars a strategy needs before its performance counts.
    """

    def __init__(self, halflife: float = 1440.0, floor: float = 0.05, cap: float = 0.6, min_observations: int = 60):
        if not halflife > 0:
            raise ValueError(f"half-life must be positive, got {halflife}")
        if not 0.0 <= floor <= cap <= 1.0:
            raise ValueError(f"need 0 <= floor <= cap <= 1, got floor {floor} and cap {cap}")
        if min_observations < 1:
            raise ValueError(f"min_observations must be at least 1, got {min_observations}")
        self.halflife = halflife
        self.floor = floor
        self.cap = cap
        self.min_observations = min_observations

    def _state(self) -> dict[str, list[float]]:
        if not hasattr(self, "moments_"):
            self.moments_: dict[str, list[float]] = {}
            self._shares: dict[str, float] | None = None
        return self.moments_

    def partial_fit(self, returns: Mapping[str, float]) -> AdaptiveAllocator:
        """Take one bar of per-strategy returns. Non-finite returns are skipped."""
        moments = self._state()
        decay = 0.5 ** (1.0 / self.halflife)
        for strategy, value in returns.items():
            if not math.isfinite(value):
                continue
            # [count, decayed weight sum, weighted mean, weighted sum of squared deviations] (West, 1979)
            count, total, mean, squares = moments.get(strategy, [0.0, 0.0, 0.0, 0.0])
            total = decay * total + 1.0
            delta = value - mean
            mean += delta / total
            squares = decay * squares + delta * (value - mean)
            moments[strategy] = [count + 1.0, total, mean, squares]
        self._shares = None
        return self

    def fit(self, frame: Iterable[Mapping[str, float]]) -> AdaptiveAllocator:
        """Start over and take every bar of ``frame`` (rows of per-strategy returns) in order."""
        if hasattr(self, "moments_"):
            del self.moments_
        self._state()
        for row in frame:
            self.partial_fit(row)
        return self

    def add_strategy(self, strategy: str) -> None:
        """Make a strategy known (it shares equally until it has history)."""
        self._state().setdefault(strategy, [0.0, 0.0, 0.0, 0.0])
        self._shares = None

    @property
    def scores_(self) -> dict[str, float]:
        """Return each strategy's decayed mean over standard deviation (0 while unseasoned or negative)."""
        scores = {}
        for strategy, (count, total, mean, squares) in self._state().items():
            spread = math.sqrt(squares / total) if total > 0 and squares > 0 else 0.0
            seasoned = count >= self.min_observations and spread > 0
            scores[strategy] = max(0.0, mean / spread) if seasoned else 0.0
        return scores

    @property
    def weights_(self) -> dict[str, float]:
        """Return each strategy's share (computed when read after new data)."""
        self._state()
        if self._shares is None:
            self._shares = project_onto_bounds(self.scores_, self.floor, self.cap)
        return dict(self._shares)
