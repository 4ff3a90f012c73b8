"""Risk management: every order is approved and sized here, positions are booked here.

Holds :class:`PositionManager` (positions, P&L, fees, funding, equity) and the
walking skeleton's :class:`RiskController` (weights to sized orders, notional
and leverage limits, the ACTIVE / REDUCING / HALTED trading state). Kelly
sizing, VaR/CVaR and drawdown limits come next.
"""

from keel.risk_management.position_manager import PositionManager
from keel.risk_management.risk_controller import DenialReason, RiskController

__all__ = ["DenialReason", "PositionManager", "RiskController"]
