"""The risk limits, validated, and changed at run time by name.

:class:`RiskLimits` holds every limit of the pre-trade checks and of the
portfolio monitor. :meth:`RiskLimits.updated` returns a copy with some limits
replaced, as ``RiskController.update_limits({'max_drawdown_pct': 0.10, ...})``
does (the user's UC-1.2); an unknown name or a value out of range is a
``ValueError`` naming it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from decimal import Decimal
from typing import Any

from keel.core.instruments import LARGEST_LEVERAGE

_FRACTIONS = frozenset({"var_daily_pct", "max_drawdown_pct", "halt_drawdown_pct", "var_recovery_fraction"})
_INTEGERS = frozenset({"max_orders_per_window"})
_LEVERAGES = frozenset({"max_leverage", "max_net_leverage"})


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Every limit the risk controller enforces.

    Parameters
    ----------
    max_order_notional
        Largest notional of one order (orders are clipped to it), USDT.
    max_position_notional
        Largest absolute position value per symbol (targets are clipped to it), USDT.
    max_leverage
        Largest gross exposure over equity after an order that adds exposure.
    max_net_leverage
        Largest absolute net exposure (longs minus shorts) over equity.
    var_daily_pct
        Largest daily VaR as a fraction of equity (orders that raise VaR above it are denied;
        the monitor moves to REDUCING above it).
    var_confidence
        VaR confidence level.
    var_recovery_fraction
        After a VaR breach, trading goes back to ACTIVE once VaR is below this fraction of the limit.
    max_drawdown_pct
        Drawdown from the equity peak that moves trading to REDUCING.
    halt_drawdown_pct
        Drawdown that moves trading to HALTED.
    max_orders_per_window, rate_window_seconds
        At most this many approved orders per rolling window.
    """

    max_order_notional: float = 50_000.0
    max_position_notional: float = 100_000.0
    max_leverage: float = 3.0
    max_net_leverage: float = 3.0
    var_daily_pct: float = 0.05
    var_confidence: float = 0.99
    var_recovery_fraction: float = 0.8
    max_drawdown_pct: float = 0.25
    halt_drawdown_pct: float = 0.35
    max_orders_per_window: int = 120
    rate_window_seconds: float = 60.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"risk limit {field.name} must be a positive finite number, got {value!r}")
            if field.name in _FRACTIONS and value > 1:
                raise ValueError(f"risk limit {field.name} is a fraction and must be at most 1, got {value}")
            if field.name in _LEVERAGES and value > LARGEST_LEVERAGE:
                raise ValueError(
                    f"risk limit {field.name} must be at most {LARGEST_LEVERAGE} (Binance's largest leverage), "
                    f"got {value}"
                )
            if field.name in _INTEGERS and int(value) != value:
                raise ValueError(f"risk limit {field.name} must be a whole number, got {value}")
        if not 0.5 < self.var_confidence < 1:
            raise ValueError(f"risk limit var_confidence must lie in (0.5, 1), got {self.var_confidence}")
        if self.halt_drawdown_pct < self.max_drawdown_pct:
            raise ValueError(
                f"halt_drawdown_pct ({self.halt_drawdown_pct}) must not be below max_drawdown_pct "
                f"({self.max_drawdown_pct}): trading halts only after it started reducing"
            )

    def updated(self, changes: Mapping[str, Any]) -> RiskLimits:
        """Return a copy with the named limits replaced.

        Raises
        ------
        ValueError
            For an unknown name, or a value that is not a finite number in
            range (a string such as ``"3"``, a boolean or None included),
            naming it; the limits are left as they were.
        """
        known = {field.name for field in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown risk limit {', '.join(unknown)}; expected one of {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
                raise ValueError(f"risk limit {name} must be a number, got {value!r}")
            number = float(value)
            if name in _INTEGERS and not number.is_integer():
                raise ValueError(f"risk limit {name} must be a whole number, got {value!r}")
            values[name] = int(number) if name in _INTEGERS else number
        return replace(self, **values)

    def as_dict(self) -> dict[str, float]:
        """Return the limits by name."""
        return {name: float(value) for name, value in asdict(self).items()}
