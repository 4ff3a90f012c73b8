"""The backtest gate's rule and verdict: a strategy must show a Sharpe ratio, a drawdown and trades before it may trade.

A :class:`GateRule` says what a strategy's backtest over the last
``window_days`` of data must show; :func:`judge` turns the backtest's
figures into a :class:`GateVerdict` with every reason it failed. The
backtest itself is the full one (simulated venue, funding, risk, router):
:mod:`keel.integration.strategy_gate` runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DAY_NS = 86_400_000_000_000


@dataclass(frozen=True, slots=True)
class GateRule:
    """What a strategy must show over the window before it may trade.

    Parameters
    ----------
    min_sharpe
        Smallest annualized Sharpe ratio (None: not checked).
    max_drawdown
        Largest drawdown, a fraction of the equity peak (None: not checked).
    min_trades
        Fewest trades (fills).
    window_days
        Days of the most recent data the backtest covers.
    """

    min_sharpe: float | None = None
    max_drawdown: float | None = None
    min_trades: int = 0
    window_days: float = 30.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_days) and self.window_days > 0):
            raise ValueError(f"gate window_days must be positive, got {self.window_days!r}")
        if self.min_trades < 0:
            raise ValueError(f"gate min_trades must be >= 0, got {self.min_trades!r}")
        if self.max_drawdown is not None and not self.max_drawdown >= 0:
            raise ValueError(f"gate max_drawdown must be >= 0, got {self.max_drawdown!r}")


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """The outcome of a gate check: the backtest's figures, and why the strategy failed (None: it passed)."""

    strategy: str
    passed: bool
    reason: str | None
    sharpe: float | None
    max_drawdown: float
    trades: int
    bars: int
    window_start: int | None
    window_end: int | None

    def as_dict(self) -> dict[str, Any]:
        """Return the verdict as plain JSON-compatible data."""
        return {
            "strategy": self.strategy,
            "passed": self.passed,
            "reason": self.reason,
            "sharpe": self.sharpe,
            "max_drawdown": self.max_drawdown,
            "trades": self.trades,
            "bars": self.bars,
            "window_start": self.window_start,
            "window_end": self.window_end,
        }


def judge(
    name: str,
    rule: GateRule,
    sharpe: float | None,
    drawdown: float,
    trades: int,
    *,
    bars: int = 0,
    window_start: int | None = None,
    window_end: int | None = None,
    failure: str | None = None,
) -> GateVerdict:
    """Return the verdict of ``rule`` on a backtest's figures.

    Parameters
    ----------
    name
        The strategy.
    rule
        What it must show.
    sharpe, drawdown, trades
        The backtest's annualized Sharpe ratio (None: undefined), maximum
        drawdown (a fraction) and trades.
    bars, window_start, window_end
        The bars the backtest processed and the times of its first and last.
    failure
        Why the backtest could not give figures (the strategy fails with it).
    """
    reasons = [failure] if failure else []
    if rule.min_sharpe is not None and (sharpe is None or sharpe < rule.min_sharpe):
        shown = "undefined" if sharpe is None else f"{sharpe:.2f}"
        reasons.append(f"Sharpe {shown} < {rule.min_sharpe:g}")
    if rule.max_drawdown is not None and drawdown > rule.max_drawdown:
        reasons.append(f"max drawdown {drawdown:.2%} > {rule.max_drawdown:.2%}")
    if trades < rule.min_trades:
        reasons.append(f"{trades} trades < {rule.min_trades}")
    reason = None
    if reasons:
        reason = f"backtest gate over the last {rule.window_days:g} days failed: " + "; ".join(reasons)
    return GateVerdict(name, not reasons, reason, sharpe, drawdown, trades, bars, window_start, window_end)
