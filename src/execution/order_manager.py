"""The order manager: every order's record, its state machine, and the venue calls.

Approved orders become ``SubmitOrder`` commands with deterministic client order
ids. Each order is recorded before it is sent, moves only through the order
state table, and every venue report passes through here before anything else
sees it: a fill whose trade id was already applied is dropped, so positions
can never double count a replayed or duplicated report.

A submit whose outcome is unknown (a timeout, a lost response) is resolved by
asking the venue about the same client order id: a known order takes the
venue's status, an unknown one is sent again under the same id, which the
venue's duplicate-id check makes safe. Account events that are not about
keel's own orders (the venue's liquidation orders and ``PositionLiquidated``,
funding) are published as they come.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import AmbiguousOutcomeError, KeelError, RequestRejectedError, RetryLaterError
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
    PositionLiquidated,
    SubmitOrder,
)
from keel.core.orders import ClientOrderIdGenerator, Order, OrderStatus, OrderType
from keel.core.ports import ExchangePort, OrderStatusReport

_log = structlog.get_logger("keel.execution")

VENUE_LIQUIDATION_PREFIX = "autoclose-"
"""Binance's client order id prefix of the liquidation orders the venue itself places."""

_AMBIGUOUS = (AmbiguousOutcomeError, RetryLaterError, TimeoutError)


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
    route_approvals
        Turn every ``OrderApproved`` into one order (True), or leave approvals
        to a router that sends child orders through this manager (False).
    max_resends
        How many times an order the venue does not know after an ambiguous
        submit is sent again under its own id before it is left unresolved.
    """

    def __init__(
        self,
        exchange: ExchangePort,
        client_order_ids: ClientOrderIdGenerator,
        bus: EventBus,
        clock: Clock,
        *,
        route_approvals: bool = True,
        max_resends: int = 3,
    ) -> None:
        super().__init__("execution.orders", bus, clock)
        self.exchange = exchange
        self._ids = client_order_ids
        self.orders: dict[str, Order] = {}
        self.duplicate_fills = 0
        self.unknown_reports = 0
        self.venue_errors = 0
        self.venue_latency_seconds: float | None = None
        self.venue_reports = 0
        self.resends = 0
        self.unresolved: set[str] = set()
        self._route_approvals = route_approvals
        self._max_resends = max_resends
        self._commands: dict[str, SubmitOrder] = {}
        self._resent: dict[str, int] = {}
        self._fills: list[OrderFilled] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def on_start(self) -> None:
        """Take venue reports; handle approvals and order commands."""
        self.exchange.set_report_handler(self.on_report)
        if self._route_approvals:
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

    def fills(self, client_order_id: str | None = None) -> list[OrderFilled]:
        """Return the applied fills (of one order, or of every order), in the order they were applied."""
        if client_order_id is None:
            return list(self._fills)
        return [fill for fill in self._fills if fill.client_order_id == client_order_id]

    def resolve_unresolved(self) -> None:
        """Query the venue again about every order whose submit outcome is still unknown."""
        for client_order_id in sorted(self.unresolved):
            self._resolve(self.orders[client_order_id])

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
        self._commands[order.client_order_id] = command
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
        """Apply a venue report to its order and publish it, unless it is a duplicate.

        Account events not about keel's orders (funding, the venue's own
        liquidation orders and their fills) are published as they come.
        """
        if isinstance(report, FundingPaid | PositionLiquidated):
            self.bus.publish(report)
            return
        order = self.orders.get(report.client_order_id)  # type: ignore[attr-defined]
        if order is None:
            if isinstance(report, OrderFilled) and report.client_order_id.startswith(VENUE_LIQUIDATION_PREFIX):
                self.venue_reports += 1
                self.bus.publish(report)
                return
            self.unknown_reports += 1
            _log.warning("report for an unknown order", report=type(report).__name__, report_id=report.id)
            return
        if self._is_resend_echo(order, report) or not self._apply(order, report):
            return
        if isinstance(report, OrderFilled):
            self._fills.append(report)
        self.bus.publish(report)

    def _is_resend_echo(self, order: Order, report: Event) -> bool:
        """A resend after an ambiguous submit that the venue refuses as a duplicate id: the first send arrived."""
        return (
            isinstance(report, OrderRejected)
            and report.code == BinanceErrorCode.DUPLICATED_CLIENT_ORDER_ID
            and order.client_order_id in self._resent
        )

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
        """A definitive refusal rejects the order; an ambiguous outcome is resolved by querying the venue."""
        if isinstance(error, _AMBIGUOUS):
            self._resolve(order)
            return
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

    def _resolve(self, order: Order) -> None:
        """Ask the venue about an order whose submit may or may not have reached it."""
        self.unresolved.add(order.client_order_id)
        self._call(self._query_and_settle(order), f"query {order.client_order_id}")

    async def _query_and_settle(self, order: Order) -> None:
        report = await self.exchange.query_order(order.symbol, order.client_order_id)
        if report is None:
            self._resend(order)
            return
        self.unresolved.discard(order.client_order_id)
        self._settle(order, report)

    def _resend(self, order: Order) -> None:
        """Send the same command again under the same id (the venue refuses a second copy)."""
        attempts = self._resent.get(order.client_order_id, 0)
        if attempts >= self._max_resends or order.is_closed:
            _log.error("order outcome unresolved", client_order_id=order.client_order_id, resends=attempts)
            return
        self._resent[order.client_order_id] = attempts + 1
        self.resends += 1
        self.unresolved.discard(order.client_order_id)
        self._call(
            self.exchange.submit_order(self._commands[order.client_order_id]),
            f"resend {order.client_order_id}",
            lambda error: self._submit_refused(order, error),
        )

    def _settle(self, order: Order, report: OrderStatusReport) -> None:
        """Take the venue's status of an order keel only knew as submitted (its fills arrive as reports)."""
        if order.status is not OrderStatus.SUBMITTED:
            return
        now = self.clock.timestamp_ns()
        status = report.status
        if status is OrderStatus.REJECTED:
            order.reject("rejected (found by query)", now)
            return
        order.accept(report.venue_order_id, now)
        if status is OrderStatus.CANCELED:
            order.cancel(now, "canceled (found by query)")
        elif status is OrderStatus.EXPIRED:
            order.expire(now, "expired (found by query)")

    def _cancel_refused(self, order: Order, error: BaseException) -> None:
        """A refused cancel puts the order back to working (unless a report closed it meanwhile)."""
        if isinstance(error, RequestRejectedError) and order.status is OrderStatus.PENDING_CANCEL:
            order.cancel_refused(str(error), self.clock.timestamp_ns())

    # --- running venue calls ---------------------------------------------------------

    def _call(
        self, call: Coroutine[Any, Any, None], what: str, on_error: Callable[[BaseException], None] | None = None
    ) -> None:
        """Run a venue coroutine: inline for a synchronous venue, as a task otherwise."""
        started = time.perf_counter()
        if self.exchange.is_synchronous:
            try:
                _run_to_completion(call)
            except KeelError as error:
                self._venue_failed(what, error, on_error)
            self.venue_latency_seconds = time.perf_counter() - started
            return
        task = asyncio.get_running_loop().create_task(call)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._task_done(done, what, on_error, started))

    def _task_done(
        self, task: asyncio.Task[None], what: str, on_error: Callable[[BaseException], None] | None, started: float
    ) -> None:
        self.venue_latency_seconds = time.perf_counter() - started
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
