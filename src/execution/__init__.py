"""Execution: approved orders become venue orders, and venue reports become keel events.

Holds :class:`OrderManager` (records, the order state machine, idempotent
client order ids, duplicate-fill protection, venue calls, and the account
events no order of keel's caused), :class:`SmartOrderRouter` (parents worked
as child orders in the AGGRESSIVE, PASSIVE, TWAP, VWAP and ADAPTIVE styles; a
user's order given to it is awaited for its analysis), :class:`ExecutionAlgorithms`
(TWAP paced by a market analysis, ADAPTIVE by market signals), the schedules
and the ADAPTIVE decision in ``algorithms``, the :class:`SlippageController` (arrival-price slippage limits) and the
transaction-cost analysis of finished parents in ``tca`` (the rows of
tca.csv).
"""

from keel.execution.algorithms import ExecutionStyle, MarketState, Slice, choose_style, twap_schedule, vwap_schedule
from keel.execution.execution_algorithms import ExecutionAlgorithms
from keel.execution.order_manager import VENUE_LIQUIDATION_PREFIX, OrderManager
from keel.execution.router import OrderTerms, ParentOrder, RouterSettings, SmartOrderRouter, order_terms
from keel.execution.slippage import SlippageAction, SlippageController
from keel.execution.tca import TCA_COLUMNS, Execution, implementation_shortfall, interval_vwap, spread_paid_bps, tca_row

__all__ = [
    "TCA_COLUMNS",
    "VENUE_LIQUIDATION_PREFIX",
    "Execution",
    "ExecutionAlgorithms",
    "ExecutionStyle",
    "MarketState",
    "OrderManager",
    "OrderTerms",
    "ParentOrder",
    "RouterSettings",
    "Slice",
    "SlippageAction",
    "SlippageController",
    "SmartOrderRouter",
    "choose_style",
    "implementation_shortfall",
    "interval_vwap",
    "order_terms",
    "spread_paid_bps",
    "tca_row",
    "twap_schedule",
    "vwap_schedule",
]
