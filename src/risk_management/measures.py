"""What the risk watch measures of a portfolio: its state, its VaR estimate, a limit it breaks.

Kept apart from :mod:`keel.risk_management.risk_controller`, which is
compiled (see :mod:`keel.compiled_modules`): mypyc would drop the structs'
``frozen`` flag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec


class PortfolioState(msgspec.Struct, frozen=True):
    """Equity and signed notional exposure per symbol (negative is short), in USDT.

    A frozen msgspec struct (the watch builds one per bar; its constructor is
    a few times cheaper than a frozen dataclass's).
    """

    equity: float
    exposures: dict[str, float] = {}

    @classmethod
    def coerce(cls, value: PortfolioState | Mapping[str, Any]) -> PortfolioState:
        """Accept a PortfolioState or a mapping ``{'equity': ..., 'positions': {symbol: notional}}``.

        Raises
        ------
        ValueError
            If the mapping has no equity, or the equity or a notional is not a finite number (a NaN would
            pass every limit).
        """
        if isinstance(value, PortfolioState):
            return value
        if "equity" not in value:
            raise ValueError("a portfolio state needs 'equity' and 'positions' (signed notional per symbol)")
        equity = float(value["equity"])
        exposures = {str(s): float(v) for s, v in value.get("positions", value.get("exposures", {})).items()}
        if not math.isfinite(equity):
            raise ValueError(f"a portfolio state's equity must be a finite number, got {equity}")
        for symbol, notional in exposures.items():
            if not math.isfinite(notional):
                raise ValueError(f"a portfolio state's notional of {symbol} must be a finite number, got {notional}")
        return cls(equity, exposures)

    @property
    def gross(self) -> float:
        """Return the sum of absolute exposures."""
        return sum(abs(v) for v in self.exposures.values())

    @property
    def net(self) -> float:
        """Return longs minus shorts."""
        return sum(self.exposures.values())


@dataclass(frozen=True, slots=True)
class RiskViolation:
    """A limit a portfolio state breaks: its name, the measured value, the threshold, and a sentence."""

    limit: str
    value: float
    threshold: float
    message: str


class VaREstimate(msgspec.Struct, frozen=True):
    """Daily VaR and CVaR of a portfolio in USDT, by one method, from ``observations`` bars (one per watched bar)."""

    method: str
    var: float
    cvar: float
    observations: int
