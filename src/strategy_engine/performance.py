"""Per-strategy performance: what a strategy's own views would have earned, bar by bar.

Several strategies share one position per symbol, so fills cannot be
attributed to one of them. Instead each strategy's view is marked to market
as a signed exposure (``direction * strength * confidence`` of one unit of
notional per symbol): over each bar it earns ``exposure * (close / previous
close - 1)`` and every change of exposure pays ``fee_rate * |change|``. The
exposure in force over a bar is the one set at the previous bar's close, so
the record uses past data only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mypy_extensions import mypyc_attr


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(slots=True)
class StrategyPerformance:
    """Running totals of one strategy's marked-to-market views, over all symbols."""

    bars: int = 0
    exposed_bars: int = 0
    winning_bars: int = 0
    losing_bars: int = 0
    exposure_changes: int = 0
    errors: int = 0
    total_return: float = 0.0
    fees: float = 0.0
    peak: float = 0.0
    max_drawdown: float = 0.0
    _sum_squares: float = 0.0

    def record(self, held: float, bar_return: float, new: float, fee_rate: float) -> None:
        """Add one bar: the exposure ``held`` over it earned ``bar_return``; then it changed to ``new``."""
        if held == 0.0 and new == 0.0:
            # Flat throughout: no result, no fee, totals unchanged.
            self.bars += 1
            return
        pnl = held * bar_return
        if held != 0.0:
            self.exposed_bars += 1
            if pnl > 0.0:
                self.winning_bars += 1
            elif pnl < 0.0:
                self.losing_bars += 1
        if new != held:
            self.exposure_changes += 1
            cost = fee_rate * abs(new - held)
            self.fees += cost
            pnl -= cost
        self.bars += 1
        total = self.total_return = self.total_return + pnl
        self._sum_squares += pnl * pnl
        # max() by hand (the same comparisons): this runs for every strategy on every bar.
        if total > self.peak:
            self.peak = total
        drawdown = self.peak - total
        if drawdown > self.max_drawdown:
            self.max_drawdown = drawdown

    @property
    def hit_rate(self) -> float | None:
        """Return the share of exposed bars that earned money (None before any)."""
        decided = self.winning_bars + self.losing_bars
        return self.winning_bars / decided if decided else None

    @property
    def sharpe_per_bar(self) -> float | None:
        """Return mean over standard deviation of the per-bar results (None until it has a spread)."""
        if self.bars < 2:
            return None
        mean = self.total_return / self.bars
        variance = self._sum_squares / self.bars - mean * mean
        return mean / math.sqrt(variance) if variance > 0.0 else None

    def as_dict(self) -> dict[str, Any]:
        """Return the totals as plain JSON-compatible data."""
        return {
            "bars": self.bars,
            "exposed_bars": self.exposed_bars,
            "exposure_changes": self.exposure_changes,
            "errors": self.errors,
            "total_return": self.total_return,
            "fees": self.fees,
            "max_drawdown": self.max_drawdown,
            "hit_rate": self.hit_rate,
            "sharpe_per_bar": self.sharpe_per_bar,
        }
