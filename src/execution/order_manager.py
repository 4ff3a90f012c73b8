"""The order manager: every order's record, its state machine, and the venue calls.

Approved orders become ``SubmitOrder`` commands with deterministic client order
ids. Each order is recorded before it is sent, moves only through the order
state table, and every venue report passes through here before anything else
sees it: a fill whose trade id was already applied is dropped, so positions
can never double count a replayed or duplicated report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import KeelError, RequestRejectedError
from keel.core.messages import (
    CancelAllOrders,
    CancelOrder,
    Event,
    FundingPaid,
    OrderAccepted,
    OrderApproved,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    SubmitOrder,
)
from keel.core.orders import ClientOrderIdGenerator, Order, OrderStatus, OrderType
from keel.core.ports import ExchangePort

_log = structlog.get_logger("keel.execution")


class OrderManager(Component):
    """Submit approved orders to the venue and keep their records.

    Parameters
    ----------
    exchange
        The venue.
    client_order_ids
        The deterministic id generator.
    bus, clock
        The event bus and the clock.
    """

    def __init__(
        self, exchange: ExchangePort, client_order_ids: ClientOrderIdGenerator, bus: EventBus, clock: Clock
    ) -> None:
        super().__init__("execution.orders", bus, clock)
        self.exchange = exchange
        self._ids = client_order_ids
        self.orders: dict[str, Order] = {}
        self.duplicate_fills = 0
        self.unknown_reports = 0
        self.venue_errors = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def on_start(self) -> None:
        """Take venue reports; handle approvals and order commands."""
        self.exchange.set_report_handler(self.on_report)
        self.bus.subscribe(OrderApproved, self.on_approved, name=self.name)
        self.bus.register(SubmitOrder, self.on_submit, name=self.name)
        self.bus.register(CancelOrder, self.on_cancel, name=self.name)
        self.bus.register(CancelAllOrders, self.on_cancel_all, name=self.name)

    def next_client_order_id(self) -> str:
        """Return a new client order id for an order this manager did not approve (an operator's)."""
        return self._ids.next_id()

    def open_orders(self) -> list[Order]:
        """Return the orders that can still trade, oldest first."""
        return [order for order in self.orders.values() if not order.is_closed]

    # --- commands ---------------------------------------------------------------------------

    def on_approved(self, approved: OrderApproved) -> None:
        """Turn an approved order into a SubmitOrder command with the next client id."""
        self.bus.publish(
            SubmitOrder(
                client_order_id=self._ids.next_id(),
                symbol=approved.symbol,
                side=approved.side,
                order_type=approved.order_type,
                quantity=approved.quantity,
                price=approved.price,
                reduce_only=approved.reduce_only,
                strategy=approved.strategy,
                ts_event=approved.ts_event,
                ts_init=self.clock.timestamp_ns(),
            )
        )

    def on_submit(self, command: SubmitOrder) -> None:
        """Record the order, mark it submitted, then send it."""
        if command.client_order_id in self.orders:
            _log.warning("duplicate submit ignored", client_order_id=command.client_order_id)
            return
        now = self.clock.timestamp_ns()
        order = Order(
            client_order_id=command.client_order_id,
            symbol=command.symbol,
            side=command.side,
            order_type=command.order_type,
            quantity=command.quantity,
            price=command.price if command.order_type is OrderType.LIMIT else None,
            time_in_force=command.time_in_force,
            reduce_only=command.reduce_only,
            stop_price=command.stop_price,
            strategy=command.strategy,
            ts_init=now,
        )
        self.orders[order.client_order_id] = order
        order.submit(now)
        self.bus.publish(
            OrderSubmitted(
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                side=order.side,
                quantity=order.quantity,
                ts_event=now,
                ts_init=now,
            )
        )
        self._call(
            self.exchange.submit_order(command),
            f"submit {order.client_order_id}",
            lambda error: self._submit_refused(order, error),
        )

    def on_cancel(self, command: CancelOrder) -> None:
        """Send a cancel for a working order."""
        order = self.orders.get(command.client_order_id)
        if order is None or order.is_closed:
            _log.warning("cancel of an unknown or closed order ignored", client_order_id=command.client_order_id)
            return
        order.request_cancel(self.clock.timestamp_ns())
        self._call(
            self.exchange.cancel_order(order.symbol, order.client_order_id),
            f"cancel {order.client_order_id}",
            lambda error: self._cancel_refused(order, error),
        )

    def on_cancel_all(self, command: CancelAllOrders) -> None:
        """Cancel every working order (of one symbol, or all)."""
        self._call(self.exchange.cancel_all_orders(command.symbol), f"cancel all ({command.reason})")

    # --- venue reports ------------------------------------------------------------------

    def on_report(self, report: Event) -> None:
        """Apply a venue report to its order and publish it, unless it is a duplicate."""
        if isinstance(report, FundingPaid):
            self.bus.publish(report)
            return
        order = self.orders.get(report.client_order_id)  # type: ignore[attr-defined]
        if order is None:
            self.unknown_reports += 1
            _log.warning("report for an unknown order", report=type(report).__name__, report_id=report.id)
            return
        if not self._apply(order, report):
            return
        self.bus.publish(report)

    def _apply(self, order: Order, report: Event) -> bool:
        if isinstance(report, OrderFilled):
            applied = order.apply_fill(
                trade_id=report.trade_id,
                quantity=report.last_quantity,
                price=report.last_price,
                commission=report.commission,
                ts=report.ts_event,
            )
            if not applied:
                self.duplicate_fills += 1
            return applied
        if isinstance(report, OrderAccepted):
            order.accept(report.venue_order_id, report.ts_event)
        elif isinstance(report, OrderRejected):
            order.reject(f"{report.code}: {report.reason}", report.ts_event)
        elif isinstance(report, OrderCanceled):
            order.cancel(report.ts_event, report.reason)
        elif isinstance(report, OrderExpired):
            order.expire(report.ts_event, report.reason)
        return True

    # --- venue refusals -----------------------------------------------------------------

    def _submit_refused(self, order: Order, error: BaseException) -> None:
        """A definitive refusal rejects the order; anything else leaves it for the query that resolves it."""
        if not isinstance(error, RequestRejectedError) or order.is_closed:
            return
        now = self.clock.timestamp_ns()
        self.on_report(
            OrderRejected(
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                code=error.code if error.code is not None else int(BinanceErrorCode.UNKNOWN),
                reason=str(error),
                ts_event=now,
                ts_init=now,
            )
        )

    def _cancel_refused(self, order: Order, error: BaseException) -> None:
        """A refused cancel puts the order back to working (unless a report closed it meanwhile)."""
        if isinstance(error, RequestRejectedError) and order.status is OrderStatus.PENDING_CANCEL:
            order.cancel_refused(str(error), self.clock.timestamp_ns())

    # --- running venue calls ---------------------------------------------------------

    def _call(
        self, call: Coroutine[Any, Any, None], what: str, on_error: Callable[[BaseException], None] | None = None
    ) -> None:
        """Run a venue coroutine: inline for a synchronous venue, as a task otherwise."""
        if self.exchange.is_synchronous:
            try:
                _run_to_completion(call)
            except KeelError as error:
                self._venue_failed(what, error, on_error)
            return
        task = asyncio.get_running_loop().create_task(call)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._task_done(done, what, on_error))

    def _task_done(self, task: asyncio.Task[None], what: str, on_error: Callable[[BaseException], None] | None) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._venue_failed(what, task.exception(), on_error)  # type: ignore[arg-type]

    def _venue_failed(self, what: str, error: BaseException, on_error: Callable[[BaseException], None] | None) -> None:
        self.venue_errors += 1
        _log.error("venue call failed", call=what, error=repr(error))
        if on_error is not None:
            on_error(error)


def _run_to_completion(call: Coroutine[Any, Any, None]) -> None:
    """Drive a coroutine that never suspends, without an event loop."""
    try:
        call.send(None)
    except StopIteration:
        return
    call.close()
    raise RuntimeError("a synchronous venue's coroutine suspended; declare is_synchronous = False")
