"""Risk management: every order is approved and sized here, positions are booked here.

- :class:`RiskController`: pre-trade approval (sizing, per-order and
  per-position notional, minimum notional, order rate, gross and net
  leverage, daily VaR), the portfolio monitor (drawdown, VaR/CVaR,
  leverage) and the ACTIVE / REDUCING / HALTED trading state; limits change
  at run time with ``update_limits``.
- :class:`RiskLimits`: the limits, validated.
- :class:`PositionSizer`: fractional, regime-aware Kelly, ATR, VaR-budget and
  liquidation-safety sizes, on the exchange's step grid.
- :class:`PositionManager`: positions, lifecycle, P&L at the mark, fees and
  funding, per symbol and per strategy.
- VaR and CVaR estimators (historical, parametric, EWMA) in
  :mod:`keel.risk_management.var`.
"""

from keel.risk_management.limits import RiskLimits
from keel.risk_management.measures import PortfolioState, RiskViolation, VaREstimate
from keel.risk_management.position_manager import PnL, PositionLifecycle, PositionManager
from keel.risk_management.risk_controller import DenialReason, RiskController
from keel.risk_management.sizing import PositionSizer, SizeDecision, SizeLimits, StepGrid, kelly_fraction
from keel.risk_management.var import EwmaCovariance, historical_var, parametric_var

__all__ = [
    "DenialReason",
    "EwmaCovariance",
    "PnL",
    "PortfolioState",
    "PositionLifecycle",
    "PositionManager",
    "PositionSizer",
    "RiskController",
    "RiskLimits",
    "RiskViolation",
    "SizeDecision",
    "SizeLimits",
    "StepGrid",
    "VaREstimate",
    "historical_var",
    "kelly_fraction",
    "parametric_var",
]
