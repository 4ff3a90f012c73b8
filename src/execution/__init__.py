"""Execution: approved orders become venue orders, and venue reports become keel events.

Holds :class:`OrderManager` (records, the order state machine, idempotent
client order ids, duplicate-fill protection, venue calls). The smart order
router, TWAP/VWAP/adaptive algorithms, slippage control and transaction-cost
analysis come next.
"""

from keel.execution.order_manager import OrderManager

__all__ = ["OrderManager"]
