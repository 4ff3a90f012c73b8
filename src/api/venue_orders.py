"""The simulated venue's record of one order: what was asked, how it stands, how it may fill.

A :class:`VenueOrder` moves through keel's order state table
(:data:`keel.core.orders.ORDER_TRANSITIONS`) and carries the matching state
the venue needs: when it becomes active (after the latency), whether it was
marketable on arrival, whether its stop has triggered, and its place in the
queue at its price. :class:`OrderState` is its snapshot form.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from keel.core.fsm import StateMachine
from keel.core.messages import PositionSide, SubmitOrder, WorkingType
from keel.core.orders import ORDER_TRANSITIONS, OrderSide, OrderStatus, OrderType, TimeInForce
from keel.core.ports import OrderStatusReport

ZERO = Decimal(0)
TRIGGERED_TYPES = frozenset({OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET})


class OrderState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a :class:`VenueOrder` holds, for snapshot and restore."""

    command: SubmitOrder
    venue_order_id: str
    status: OrderStatus
    quantity: Decimal
    filled_quantity: Decimal
    filled_notional: Decimal
    commission: Decimal
    ts_last: int
    reason: str
    active_ts: int
    marketable: bool
    triggered: bool
    bars_seen: int
    queue_ahead: Decimal | None
    queue_price: Decimal | None


class VenueOrder:
    """One order at the simulated venue.

    Parameters
    ----------
    command
        The order as submitted.
    venue_order_id
        The venue's id.
    active_ts
        When the order reached the venue and may start to match (ns).
    """

    __slots__ = (
        "_fsm",
        "active_ts",
        "bars_seen",
        "command",
        "commission",
        "filled_notional",
        "filled_quantity",
        "marketable",
        "quantity",
        "queue_ahead",
        "queue_price",
        "reason",
        "triggered",
        "ts_last",
        "venue_order_id",
    )

    def __init__(self, command: SubmitOrder, venue_order_id: str, active_ts: int) -> None:
        self.command = command
        self.venue_order_id = venue_order_id
        self.active_ts = active_ts
        self.quantity = command.quantity
        self.filled_quantity = ZERO
        self.filled_notional = ZERO
        self.commission = ZERO
        self.ts_last = active_ts
        self.reason = ""
        self.marketable = False
        self.triggered = command.order_type not in TRIGGERED_TYPES
        self.bars_seen = 0
        self.queue_ahead: Decimal | None = None
        self.queue_price: Decimal | None = None
        self._fsm = StateMachine(ORDER_TRANSITIONS, OrderStatus.SUBMITTED, f"venue order {command.client_order_id}")

    # --- what was asked -----------------------------------------------------------------------

    @property
    def client_order_id(self) -> str:
        """Return the client order id."""
        return self.command.client_order_id

    @property
    def symbol(self) -> str:
        """Return the symbol."""
        return self.command.symbol

    @property
    def side(self) -> OrderSide:
        """Return the side."""
        return self.command.side

    @property
    def order_type(self) -> OrderType:
        """Return the order type."""
        return self.command.order_type

    @property
    def price(self) -> Decimal | None:
        """Return the limit price (None unless LIMIT)."""
        return self.command.price

    @property
    def position_side(self) -> PositionSide:
        """Return the position side the order works on."""
        return self.command.position_side

    @property
    def reduces_only(self) -> bool:
        """Return whether the order may only reduce a position (reduceOnly, closePosition, hedge close)."""
        return reduces_only(self.command)

    # --- how it stands ------------------------------------------------------------------------

    @property
    def status(self) -> OrderStatus:
        """Return the current status."""
        return self._fsm.state

    @property
    def is_working(self) -> bool:
        """Return whether the order can still trade."""
        return self._fsm.state in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)

    @property
    def remaining_quantity(self) -> Decimal:
        """Return the quantity still to fill."""
        return self.quantity - self.filled_quantity

    @property
    def takes_liquidity(self) -> bool:
        """Return whether the order executes as a taker when it matches."""
        return self.order_type is not OrderType.LIMIT or self.marketable

    def move(self, status: OrderStatus, ts: int, reason: str = "") -> None:
        """Move to ``status`` along the order state table."""
        self._fsm.move(status)
        self.ts_last = ts
        if reason:
            self.reason = reason

    def record_fill(self, quantity: Decimal, price: Decimal, commission: Decimal, ts: int) -> None:
        """Add a fill and move to PARTIALLY_FILLED or FILLED."""
        self.filled_quantity += quantity
        self.filled_notional += quantity * price
        self.commission += commission
        self.move(OrderStatus.FILLED if self.filled_quantity == self.quantity else OrderStatus.PARTIALLY_FILLED, ts)

    def report(self) -> OrderStatusReport:
        """Return the venue's status report of the order."""
        command = self.command
        return OrderStatusReport(
            client_order_id=command.client_order_id,
            venue_order_id=self.venue_order_id,
            symbol=command.symbol,
            side=command.side,
            order_type=command.order_type,
            time_in_force=command.time_in_force,
            status=self.status,
            quantity=self.quantity,
            price=command.price,
            filled_quantity=self.filled_quantity,
            average_price=None if self.filled_quantity == 0 else self.filled_notional / self.filled_quantity,
            reduce_only=command.reduce_only,
            ts_last=self.ts_last,
            stop_price=command.stop_price,
            position_side=command.position_side,
            close_position=command.close_position,
            working_type=command.working_type,
        )

    # --- snapshot -----------------------------------------------------------------------------

    def state(self) -> OrderState:
        """Return everything the order holds."""
        return OrderState(
            command=self.command,
            venue_order_id=self.venue_order_id,
            status=self.status,
            quantity=self.quantity,
            filled_quantity=self.filled_quantity,
            filled_notional=self.filled_notional,
            commission=self.commission,
            ts_last=self.ts_last,
            reason=self.reason,
            active_ts=self.active_ts,
            marketable=self.marketable,
            triggered=self.triggered,
            bars_seen=self.bars_seen,
            queue_ahead=self.queue_ahead,
            queue_price=self.queue_price,
        )

    @classmethod
    def from_state(cls, state: OrderState) -> VenueOrder:
        """Rebuild an order from :meth:`state`."""
        order = cls(state.command, state.venue_order_id, state.active_ts)
        order._fsm = StateMachine(ORDER_TRANSITIONS, state.status, f"venue order {state.command.client_order_id}")
        order.quantity = state.quantity
        order.filled_quantity = state.filled_quantity
        order.filled_notional = state.filled_notional
        order.commission = state.commission
        order.ts_last = state.ts_last
        order.reason = state.reason
        order.marketable = state.marketable
        order.triggered = state.triggered
        order.bars_seen = state.bars_seen
        order.queue_ahead = state.queue_ahead
        order.queue_price = state.queue_price
        return order


def reduces_only(command: SubmitOrder) -> bool:
    """Return whether an order may only reduce a position: reduceOnly, closePosition, or a hedge-mode close."""
    if command.reduce_only or command.close_position:
        return True
    if command.position_side is PositionSide.LONG:
        return command.side is OrderSide.SELL
    if command.position_side is PositionSide.SHORT:
        return command.side is OrderSide.BUY
    return False


def is_time_in_force(order: VenueOrder, *choices: TimeInForce) -> bool:
    """Return whether the order's time in force is one of ``choices``."""
    return order.command.time_in_force in choices


def triggers_on_mark(order: VenueOrder) -> bool:
    """Return whether a stop or take-profit order triggers on the mark price."""
    return order.command.working_type is WorkingType.MARK_PRICE
