"""What a trial is scored on: Sharpe, Sortino, Calmar, return under a drawdown cap, or return vs drawdown.

Scores are computed from a backtest's equity curve, so every objective sees
the same numbers the backtest report shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keel.integration.reports import performance_metrics

_ALIASES = {
    "sharpe": "sharpe",
    "sharpe_ratio": "sharpe",
    "sortino": "sortino",
    "sortino_ratio": "sortino",
    "calmar": "calmar",
    "calmar_ratio": "calmar",
    "return": "return",
    "total_return": "return",
    "pareto": "pareto",
    "return_vs_drawdown": "pareto",
}


@dataclass(frozen=True, slots=True)
class Objective:
    """A scoring rule for trials.

    Parameters
    ----------
    name
        ``sharpe``, ``sortino``, ``calmar``, ``return`` or ``pareto``.
    max_drawdown
        For ``return``: a trial whose drawdown exceeds this scores below every
        trial that respects it (``-1 - excess``).
    """

    name: str
    max_drawdown: float = 0.2

    @classmethod
    def parse(cls, text: str, max_drawdown: float = 0.2) -> Objective:
        """Return the objective named ``text`` (``sharpe_ratio`` and ``sharpe`` alike).

        Raises
        ------
        ValueError
            If the name is unknown.
        """
        name = _ALIASES.get(text.strip().lower())
        if name is None:
            raise ValueError(f"unknown objective {text!r}; expected one of: {', '.join(sorted(_ALIASES))}")
        if not 0 < max_drawdown <= 1:
            raise ValueError(f"max_drawdown must lie in (0, 1], got {max_drawdown}")
        return cls(name, max_drawdown)

    @property
    def directions(self) -> list[str]:
        """Optuna directions: one maximize, or maximize return and minimize drawdown."""
        return ["maximize", "minimize"] if self.name == "pareto" else ["maximize"]

    @property
    def is_multi(self) -> bool:
        """Whether the study is multi-objective (a Pareto front, no single best)."""
        return self.name == "pareto"

    def score(self, equity: np.ndarray, bars_per_year: float) -> tuple[float, ...]:
        """Return the objective value(s) of an equity curve."""
        metrics = curve_metrics(equity, bars_per_year)
        if self.name == "pareto":
            return (metrics["total_return"], metrics["max_drawdown"])
        if self.name == "return":
            excess = metrics["max_drawdown"] - self.max_drawdown
            return (metrics["total_return"] if excess <= 0 else -1.0 - excess,)
        return (metrics[f"{self.name}_ratio"],)

    def scalar(self, values: tuple[float, ...]) -> float:
        """Return one number ranking trials: the value, or return over drawdown for ``pareto``."""
        if self.name != "pareto":
            return values[0]
        total_return, drawdown = values
        return total_return / max(drawdown, 1e-4)


def curve_metrics(equity: np.ndarray, bars_per_year: float) -> dict[str, float]:
    """Return total return, Sharpe, Sortino, Calmar and max drawdown of an equity curve."""
    metrics = performance_metrics(equity.tolist(), bars_per_year)
    bars = max(len(equity) - 1, 1)
    annual = (1.0 + metrics["total_return"]) ** (bars_per_year / bars) - 1.0 if metrics["total_return"] > -1 else -1.0
    drawdown = metrics["max_drawdown"]
    metrics["calmar_ratio"] = annual / drawdown if drawdown > 0 else 0.0
    return metrics
