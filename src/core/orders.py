"""Orders: FIX vocabulary enums, the order state table, and the order record.

An :class:`Order` is keel's own record of one order. It changes only through
its methods, each of which moves the order's state machine; a move the table
does not allow raises, and a fill whose trade id was already applied is
ignored, so a replayed or duplicated execution report cannot double count.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import Enum

import msgspec

from keel.core.errors import InvalidTransitionError
from keel.core.fsm import StateMachine, TransitionTable


class OrderSide(Enum):
    """Direction of an order."""

    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        """Return +1 for BUY and -1 for SELL."""
        return 1 if self is OrderSide.BUY else -1

    def opposite(self) -> OrderSide:
        """Return the other side."""
        return OrderSide.SELL if self is OrderSide.BUY else OrderSide.BUY


class OrderType(Enum):
    """Order types of Binance USD-M that keel uses."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"


class TimeInForce(Enum):
    """How long an order stays working; GTX is Binance's post-only."""

    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTX = "GTX"


class LiquiditySide(Enum):
    """Whether a fill added liquidity (MAKER) or took it (TAKER)."""

    MAKER = "MAKER"
    TAKER = "TAKER"


class OrderStatus(Enum):
    """Where an order is in its life."""

    INITIALIZED = "INITIALIZED"
    DENIED = "DENIED"
    SUBMITTED = "SUBMITTED"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


_S = OrderStatus
ORDER_TRANSITIONS: TransitionTable[OrderStatus] = {
    _S.INITIALIZED: frozenset({_S.SUBMITTED, _S.DENIED}),
    _S.DENIED: frozenset(),
    # A fill or a cancel may reach us before the venue's acknowledgement: the
    # user-data stream and the REST response race each other.
    _S.SUBMITTED: frozenset(
        {
            _S.ACCEPTED,
            _S.REJECTED,
            _S.PARTIALLY_FILLED,
            _S.FILLED,
            _S.PENDING_CANCEL,
            _S.CANCELED,
            _S.EXPIRED,
        }
    ),
    _S.ACCEPTED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.PENDING_CANCEL, _S.CANCELED, _S.EXPIRED}),
    _S.PARTIALLY_FILLED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.PENDING_CANCEL, _S.CANCELED, _S.EXPIRED}),
    # A fill can win the race against our cancel request; a refused cancel
    # (the order already traded away or the venue said no) goes back to working.
    _S.PENDING_CANCEL: frozenset({_S.CANCELED, _S.PARTIALLY_FILLED, _S.FILLED, _S.ACCEPTED, _S.EXPIRED}),
    # A trade executed just before the cancel can be reported after the cancel
    # confirmation. The order stays CANCELED (or EXPIRED) and the fill counts.
    _S.CANCELED: frozenset({_S.CANCELED}),
    _S.EXPIRED: frozenset({_S.EXPIRED}),
    _S.FILLED: frozenset(),
    _S.REJECTED: frozenset(),
}

CLOSED_STATUSES = frozenset({_S.DENIED, _S.FILLED, _S.CANCELED, _S.REJECTED, _S.EXPIRED})

_CLIENT_ID_PATTERN = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


class ClientOrderIdGenerator:
    """Make deterministic client order ids: the same namespace and sequence give the same id.

    Binance accepts ``^[.A-Z:/a-z0-9_-]{1,36}$``. An id is
    ``{namespace}-{sequence}``; after a restart the generator is resumed from
    the last sequence the journal saw, so an intent never gets a second id.

    Parameters
    ----------
    namespace
        A short tag for the run or account (letters, digits, ``_.:/``).
    next_sequence
        The sequence number the next id gets.
    """

    __slots__ = ("_namespace", "_next")

    def __init__(self, namespace: str, next_sequence: int = 1) -> None:
        if not _CLIENT_ID_PATTERN.fullmatch(namespace) or len(namespace) > 20 or "-" in namespace:
            raise ValueError(f"client order id namespace {namespace!r} must be 1-20 characters of [.A-Z:/a-z0-9_]")
        if next_sequence < 1:
            raise ValueError(f"next_sequence must be >= 1, got {next_sequence}")
        self._namespace = namespace
        self._next = next_sequence

    @property
    def next_sequence(self) -> int:
        """Return the sequence the next id will carry."""
        return self._next

    def next_id(self) -> str:
        """Return the next client order id and advance the sequence.

        Raises
        ------
        OverflowError
            If the id would exceed Binance's 36 characters (use a shorter namespace).
        """
        client_order_id = f"{self._namespace}-{self._next}"
        if len(client_order_id) > 36:
            raise OverflowError(f"client order id {client_order_id!r} exceeds Binance's 36 characters")
        self._next += 1
        return client_order_id

    def observe(self, client_order_id: str) -> None:
        """Move past an id this namespace already issued (a restart resumes after the journal's ids)."""
        namespace, _, sequence = client_order_id.rpartition("-")
        if namespace == self._namespace and sequence.isdigit():
            self._next = max(self._next, int(sequence) + 1)


class OrderSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything an :class:`Order` holds, for the state manager's snapshots."""

    client_order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    time_in_force: TimeInForce
    reduce_only: bool
    stop_price: Decimal | None
    strategy: str
    ts_init: int
    ts_last: int
    venue_order_id: str | None
    status: OrderStatus
    filled_quantity: Decimal
    filled_notional: Decimal
    commission: Decimal
    reason: str
    trade_ids: list[str]


class Order:
    """keel's record of one order and everything the venue reported about it.

    Parameters
    ----------
    client_order_id
        The deterministic id keel sent with the order.
    symbol, side, order_type, quantity
        What was asked for. ``quantity`` is a positive Decimal.
    price
        Limit price (Decimal), None for market and stop-market orders.
    time_in_force
        GTC by default; ignored by the venue for MARKET orders.
    reduce_only
        Whether the order may only reduce a position.
    stop_price
        Trigger price for STOP_MARKET and TAKE_PROFIT_MARKET.
    strategy
        The strategy (or ``"manual"``) the order belongs to.
    ts_init
        When the order was created, integer nanoseconds.
    """

    __slots__ = (
        "_fsm",
        "_notional",
        "_trade_ids",
        "average_price",
        "client_order_id",
        "commission",
        "filled_quantity",
        "order_type",
        "price",
        "quantity",
        "reason",
        "reduce_only",
        "side",
        "stop_price",
        "strategy",
        "symbol",
        "time_in_force",
        "ts_init",
        "ts_last",
        "venue_order_id",
    )

    def __init__(
        self,
        *,
        client_order_id: str,
        symbol: str,
        side: OrderSide,
        order_type: OrderType,
        quantity: Decimal,
        price: Decimal | None = None,
        time_in_force: TimeInForce = TimeInForce.GTC,
        reduce_only: bool = False,
        stop_price: Decimal | None = None,
        strategy: str = "manual",
        ts_init: int = 0,
    ) -> None:
        if not quantity.is_finite() or quantity <= 0:
            raise ValueError(f"order {client_order_id}: quantity must be a positive number, got {quantity}")
        if price is not None and (not price.is_finite() or price <= 0):
            raise ValueError(f"order {client_order_id}: price must be a positive number, got {price}")
        if order_type is OrderType.LIMIT and price is None:
            raise ValueError(f"order {client_order_id}: a LIMIT order needs a price")
        self.client_order_id = client_order_id
        self.symbol = symbol
        self.side = side
        self.order_type = order_type
        self.quantity = quantity
        self.price = price
        self.time_in_force = time_in_force
        self.reduce_only = reduce_only
        self.stop_price = stop_price
        self.strategy = strategy
        self.ts_init = ts_init
        self.ts_last = ts_init
        self.venue_order_id: str | None = None
        self.filled_quantity = Decimal(0)
        self.average_price: Decimal | None = None
        self.commission = Decimal(0)
        self.reason = ""
        self._fsm = StateMachine(ORDER_TRANSITIONS, OrderStatus.INITIALIZED, f"order {client_order_id}")
        self._trade_ids: set[str] = set()
        self._notional = Decimal(0)

    def __repr__(self) -> str:
        return (
            f"Order({self.client_order_id}, {self.symbol}, {self.side.value} {self.quantity} "
            f"{self.order_type.value} @ {self.price}, {self.status.value}, filled={self.filled_quantity})"
        )

    @property
    def status(self) -> OrderStatus:
        """Return the current status."""
        return self._fsm.state

    @property
    def is_closed(self) -> bool:
        """Return whether the order can no longer trade (late fills aside)."""
        return self._fsm.state in CLOSED_STATUSES

    @property
    def remaining_quantity(self) -> Decimal:
        """Return the quantity still to fill."""
        return self.quantity - self.filled_quantity

    def deny(self, reason: str, ts: int) -> None:
        """Mark the order refused locally (by risk) before it was ever sent."""
        self._move(OrderStatus.DENIED, ts)
        self.reason = reason

    def submit(self, ts: int) -> None:
        """Mark the order sent to the venue."""
        self._move(OrderStatus.SUBMITTED, ts)

    def accept(self, venue_order_id: str, ts: int) -> None:
        """Record the venue's acknowledgement."""
        self.venue_order_id = venue_order_id
        if self.status in (OrderStatus.SUBMITTED,):
            self._move(OrderStatus.ACCEPTED, ts)

    def reject(self, reason: str, ts: int) -> None:
        """Record the venue's refusal."""
        self._move(OrderStatus.REJECTED, ts)
        self.reason = reason

    def request_cancel(self, ts: int) -> None:
        """Record that a cancel was sent and not yet confirmed."""
        self._move(OrderStatus.PENDING_CANCEL, ts)

    def cancel_refused(self, reason: str, ts: int) -> None:
        """Go back to working after the venue refused a cancel."""
        target = OrderStatus.PARTIALLY_FILLED if self.filled_quantity > 0 else OrderStatus.ACCEPTED
        self._move(target, ts)
        self.reason = reason

    def cancel(self, ts: int, reason: str = "") -> None:
        """Record the venue's cancel confirmation."""
        self._move(OrderStatus.CANCELED, ts)
        self.reason = reason

    def expire(self, ts: int, reason: str = "") -> None:
        """Record that the venue expired the order (IOC/FOK/GTX leftovers)."""
        self._move(OrderStatus.EXPIRED, ts)
        self.reason = reason

    def apply_fill(self, *, trade_id: str, quantity: Decimal, price: Decimal, commission: Decimal, ts: int) -> bool:
        """Apply one fill; return False, changing nothing, if its trade id was already applied.

        Raises
        ------
        InvalidTransitionError
            If the fill would exceed the order quantity or the status forbids fills.
        """
        if trade_id in self._trade_ids:
            return False
        if quantity <= 0 or price <= 0:
            raise ValueError(f"order {self.client_order_id}: fill {trade_id} has non-positive quantity or price")
        filled = self.filled_quantity + quantity
        if filled > self.quantity:
            raise InvalidTransitionError(
                f"order {self.client_order_id}: fill {trade_id} of {quantity} exceeds the remaining "
                f"{self.remaining_quantity}"
            )
        target: OrderStatus
        if self.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
            target = self.status
        elif filled == self.quantity:
            target = OrderStatus.FILLED
        else:
            target = OrderStatus.PARTIALLY_FILLED
        self._move(target, ts)
        self._trade_ids.add(trade_id)
        self._notional += quantity * price
        self.filled_quantity = filled
        self.average_price = self._notional / filled
        self.commission += commission
        return True

    def snapshot(self) -> OrderSnapshot:
        """Return the order's whole state."""
        return OrderSnapshot(
            client_order_id=self.client_order_id,
            symbol=self.symbol,
            side=self.side,
            order_type=self.order_type,
            quantity=self.quantity,
            price=self.price,
            time_in_force=self.time_in_force,
            reduce_only=self.reduce_only,
            stop_price=self.stop_price,
            strategy=self.strategy,
            ts_init=self.ts_init,
            ts_last=self.ts_last,
            venue_order_id=self.venue_order_id,
            status=self.status,
            filled_quantity=self.filled_quantity,
            filled_notional=self._notional,
            commission=self.commission,
            reason=self.reason,
            trade_ids=sorted(self._trade_ids),
        )

    @classmethod
    def from_snapshot(cls, snapshot: OrderSnapshot) -> Order:
        """Rebuild an order from :meth:`snapshot`."""
        order = cls(
            client_order_id=snapshot.client_order_id,
            symbol=snapshot.symbol,
            side=snapshot.side,
            order_type=snapshot.order_type,
            quantity=snapshot.quantity,
            price=snapshot.price,
            time_in_force=snapshot.time_in_force,
            reduce_only=snapshot.reduce_only,
            stop_price=snapshot.stop_price,
            strategy=snapshot.strategy,
            ts_init=snapshot.ts_init,
        )
        order.ts_last = snapshot.ts_last
        order.venue_order_id = snapshot.venue_order_id
        order.filled_quantity = snapshot.filled_quantity
        order._notional = snapshot.filled_notional
        order.average_price = snapshot.filled_notional / snapshot.filled_quantity if snapshot.filled_quantity else None
        order.commission = snapshot.commission
        order.reason = snapshot.reason
        order._trade_ids = set(snapshot.trade_ids)
        order._fsm = StateMachine(ORDER_TRANSITIONS, snapshot.status, f"order {snapshot.client_order_id}")
        return order

    def _move(self, target: OrderStatus, ts: int) -> None:
        self._fsm.move(target)
        self.ts_last = ts
