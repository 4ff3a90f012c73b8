"""The order manager: every order's record, its state machine, and the venue calls.

Approved orders become ``SubmitOrder`` commands with deterministic client order
ids. Each order is recorded before it is sent, moves only through the order
state table, and every venue report passes through here before anything else
sees it: a fill whose trade id was already applied is dropped, so positions
can never double count a replayed or duplicated report.

A submit whose outcome is unknown (a timeout, a lost response, a lost
connection, any failure that is not the venue's definitive refusal) is
resolved by asking the venue about the same client order id: a known order
takes the venue's status, an unknown one is sent again under the same id,
which the venue's duplicate-id check makes safe. Until the venue answers, the
order is in :attr:`OrderManager.unresolved`, asked about again every
``resolve_interval_ns``. So every submit ends sent, rejected with a reason,
or unresolved and asked about; an order that cannot be written ahead is
rejected unsent. A cancel that fails without the venue's refusal is sent
again at the same interval while the order waits for it (in
:attr:`OrderManager.uncanceled`). Account events that are not about
keel's own orders (the venue's liquidation orders and ``PositionLiquidated``,
funding) are published as they come.

For crash recovery the manager writes every order ahead of its venue call
(:meth:`OrderManager.set_write_ahead`), keeps the account's event log (its
fills, the venue's liquidation fills, funding), rebuilds its records from a
snapshot and the journal (:meth:`OrderManager.restore`, :meth:`OrderManager.replay`)
and settles them with the venue (:meth:`OrderManager.reconcile`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import structlog

from keel.core.accounting import ZERO
from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import AmbiguousOutcomeError, RequestRejectedError, RetryLaterError
from keel.core.messages import (
    CancelAllOrders,
    CancelOrder,
    Event,
    FundingPaid,
    Message,
    OrderAccepted,
    OrderApproved,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionLiquidated,
    PositionSide,
    SubmitOrder,
    WorkingType,
)
from keel.core.orders import (
    ClientOrderIdGenerator,
    Order,
    OrderSide,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from keel.core.ports import ExchangePort, OrderStatusReport
from keel.core.time_events import TimeEvent

_log = structlog.get_logger("keel.execution")

VENUE_LIQUIDATION_PREFIX = "autoclose-"
"""Binance's client order id prefix of the liquidation orders the venue itself places."""

_AMBIGUOUS = (AmbiguousOutcomeError, RetryLaterError, TimeoutError)

AccountEvent = OrderFilled | FundingPaid
"""What changes the account's positions and balances: fills (keel's and the venue's own) and funding."""

WriteAhead = Callable[[SubmitOrder], None]
"""Makes an order durable before it is sent (the state manager's journal)."""


class OrderBookkeeping(msgspec.Struct, frozen=True, kw_only=True):
    """The order manager's whole state, for the state manager's snapshots."""

    orders: list[OrderSnapshot]
    commands: list[SubmitOrder]
    account_events: list[AccountEvent]


@dataclass(slots=True)
class Reconciliation:
    """What :meth:`OrderManager.reconcile` found and settled."""

    adopted_orders: list[str] = field(default_factory=list)
    resolved_orders: list[str] = field(default_factory=list)
    never_sent_orders: list[str] = field(default_factory=list)
    missed_fills: int = 0
    missed_funding: int = 0
    mismatches: list[str] = field(default_factory=list)


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
    resolve_interval_ns
        How long (clock time) after an unanswered query the venue is asked
        again about the orders whose submit outcome is still unknown.

    Attributes
    ----------
    finished_orders_kept : int or None
        How many finished orders (filled, canceled, rejected, expired) stay in
        :attr:`orders` besides the open ones; older ones are forgotten, with
        their commands (the journal keeps them). None keeps every order (backtests).
    orders_forgotten : int
        Finished orders forgotten so far.
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
        resolve_interval_ns: int = 5_000_000_000,
    ) -> None:
        super().__init__("execution.orders", bus, clock)
        self.exchange = exchange
        self._ids = client_order_ids
        self.orders: dict[str, Order] = {}
        self.finished_orders_kept: int | None = None
        self.orders_forgotten = 0
        self._sweep_at = 0
        self.duplicate_fills = 0
        self.unknown_reports = 0
        self.venue_errors = 0
        self.venue_unreachable = 0
        self.venue_latency_seconds: float | None = None
        self.venue_reports = 0
        self.resends = 0
        self.unresolved: set[str] = set()
        self.uncanceled: set[str] = set()
        self._route_approvals = route_approvals
        self._max_resends = max_resends
        self._resolve_interval_ns = resolve_interval_ns
        self._resolve_armed = False
        self._querying: set[str] = set()
        self._gave_up: set[str] = set()
        self._commands: dict[str, SubmitOrder] = {}
        self._resent: dict[str, int] = {}
        self._fills: list[OrderFilled] = []
        self._account_events: list[AccountEvent] = []
        self._venue_trade_ids: set[str] = set()
        self._funding_keys: set[tuple[str, int]] = set()
        self._net: dict[str, Decimal] = {}
        self._write_ahead: WriteAhead | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def on_start(self) -> None:
        """Take venue reports; handle approvals and order commands."""
        self.exchange.set_report_handler(self.on_report)
        if self._route_approvals:
            self.bus.subscribe(OrderApproved, self.on_approved, name=self.name)
        self.bus.register(SubmitOrder, self.on_submit, name=self.name)
        self.bus.register(CancelOrder, self.on_cancel, name=self.name)
        self.bus.register(CancelAllOrders, self.on_cancel_all, name=self.name)

    def on_stop(self) -> None:
        """Stop asking the venue about unresolved orders."""
        self.clock.cancel_timer(f"{self.name}.unresolved")
        self._resolve_armed = False

    def set_write_ahead(self, write_ahead: WriteAhead | None) -> None:
        """Make every order durable through ``write_ahead`` before its venue call (None: no journal)."""
        self._write_ahead = write_ahead

    def account_events(self) -> list[AccountEvent]:
        """Return every fill and funding payment applied to the account, in the order they were applied."""
        return list(self._account_events)

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

    def position(self, symbol: str) -> Decimal:
        """Return the signed position the venue holds in ``symbol``: the sum of every fill applied so far.

        It moves with each venue report as it arrives, ahead of the bus that
        carries the fills to the position book, so an order sized from it fits
        the venue's state when it is sent.
        """
        return self._net.get(symbol, ZERO)

    def open_reduce_only(self, symbol: str, side: OrderSide) -> Decimal:
        """Return the unfilled quantity of the open reduce-only orders of ``symbol`` on ``side``."""
        return sum(
            (
                order.remaining_quantity
                for order in self.orders.values()
                if order.reduce_only and order.symbol == symbol and order.side is side and not order.is_closed
            ),
            ZERO,
        )

    def resolve_unresolved(self) -> None:
        """Query the venue again about every order whose submit outcome is still unknown; send failed cancels again."""
        for client_order_id in sorted(self.unresolved):
            order = self.orders[client_order_id]
            if order.is_closed:
                self.unresolved.discard(client_order_id)
            else:
                self._resolve(order)
        for client_order_id in sorted(self.uncanceled):
            self.uncanceled.discard(client_order_id)
            order = self.orders[client_order_id]
            if order.status is OrderStatus.PENDING_CANCEL:
                self._send_cancel(order)

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
                approval_id=approved.id,
                ts_event=approved.ts_event,
                ts_init=self.clock.timestamp_ns(),
            )
        )

    def on_submit(self, command: SubmitOrder) -> None:
        """Record the order, mark it submitted, then send it.

        A command that cannot be an order (a field of the wrong type, a
        quantity or price that is not a positive Decimal) is not recorded nor
        sent: an ``OrderRejected`` says why, with the venue's code for it.
        """
        if command.client_order_id in self.orders:
            _log.warning("duplicate submit ignored", client_order_id=command.client_order_id)
            return
        now = self.clock.timestamp_ns()
        problem = malformed_order(command)
        if problem is not None:
            code, reason = problem
            _log.error("order not sent: malformed", client_order_id=command.client_order_id, reason=reason)
            self.bus.publish(
                OrderRejected(
                    client_order_id=command.client_order_id,
                    symbol=command.symbol,
                    code=int(code),
                    reason=f"not sent: {reason}",
                    ts_event=now,
                    ts_init=now,
                )
            )
            return
        order = self._record(command, now)
        if self._write_ahead is not None:
            try:
                self._write_ahead(command)
            except Exception as error:
                _log.error("order not sent: it could not be written ahead", client_order_id=command.client_order_id)
                self._reject(order, int(BinanceErrorCode.UNKNOWN), f"not sent: could not be recorded first ({error!r})")
                return
        self.bus.publish(
            OrderSubmitted(
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                side=order.side,
                quantity=order.quantity,
                approval_id=command.approval_id,
                ts_event=now,
                ts_init=now,
            )
        )
        self._call(
            self.exchange.submit_order(command),
            f"submit {order.client_order_id}",
            lambda error: self._submit_refused(order, error),
        )

    def _record(self, command: SubmitOrder, ts: int) -> Order:
        """Create the order of a command, marked submitted."""
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
            ts_init=ts,
        )
        self.orders[order.client_order_id] = order
        self._commands[order.client_order_id] = command
        self._ids.observe(order.client_order_id)
        order.submit(ts)
        if self.finished_orders_kept is not None and len(self.orders) > self._sweep_at:
            self._forget_finished(self.finished_orders_kept)
        return order

    def _forget_finished(self, kept: int) -> None:
        """Forget the oldest finished orders beyond ``kept`` (open ones stay); sweep again ``kept`` orders later."""
        finished = [client_order_id for client_order_id, order in self.orders.items() if order.is_closed]
        for client_order_id in finished[: max(0, len(finished) - kept)]:
            del self.orders[client_order_id]
            self._commands.pop(client_order_id, None)
            self.orders_forgotten += 1
        self._sweep_at = len(self.orders) + max(kept, 1)

    def on_cancel(self, command: CancelOrder) -> None:
        """Send a cancel for a working order."""
        order = self.orders.get(command.client_order_id)
        if order is None or order.is_closed:
            _log.warning("cancel of an unknown or closed order ignored", client_order_id=command.client_order_id)
            return
        if order.status is not OrderStatus.PENDING_CANCEL:  # a cancel asked again (after a restart) is sent again
            order.request_cancel(self.clock.timestamp_ns())
        self._send_cancel(order)

    def _send_cancel(self, order: Order) -> None:
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
        if self._take(report):
            self.bus.publish(report)

    def _take(self, report: Event) -> bool:
        """Apply a report to keel's records; return whether it is new (and so to be published)."""
        if isinstance(report, PositionLiquidated):
            return True
        if isinstance(report, FundingPaid):
            return self._take_funding(report)
        order = self.orders.get(report.client_order_id)  # type: ignore[attr-defined]
        if order is None:
            if isinstance(report, OrderFilled) and report.client_order_id.startswith(VENUE_LIQUIDATION_PREFIX):
                return self._take_venue_fill(report)
            self.unknown_reports += 1
            _log.warning("report for an unknown order", report=type(report).__name__, report_id=report.id)
            return False
        if self._is_resend_echo(order, report) or not self._apply(order, report):
            return False
        if isinstance(report, OrderFilled):
            self._fills.append(report)
            self._account_events.append(report)
            self._book(report)
        return True

    def _book(self, fill: OrderFilled) -> None:
        self._net[fill.symbol] = self._net.get(fill.symbol, ZERO) + fill.last_quantity * fill.side.sign

    def _take_funding(self, payment: FundingPaid) -> bool:
        key = (payment.symbol, payment.funding_time)
        if key in self._funding_keys:
            return False
        self._funding_keys.add(key)
        self._account_events.append(payment)
        return True

    def _take_venue_fill(self, fill: OrderFilled) -> bool:
        if fill.trade_id in self._venue_trade_ids:
            self.duplicate_fills += 1
            return False
        self._venue_trade_ids.add(fill.trade_id)
        self._account_events.append(fill)
        self._book(fill)
        self.venue_reports += 1
        return True

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

    # --- recovery ------------------------------------------------------------------------

    def snapshot(self) -> OrderBookkeeping:
        """Return the orders, their commands and the account's event log."""
        return OrderBookkeeping(
            orders=[order.snapshot() for order in self.orders.values()],
            commands=list(self._commands.values()),
            account_events=list(self._account_events),
        )

    def restore(self, bookkeeping: OrderBookkeeping) -> None:
        """Replace the records with a :meth:`snapshot` (before the manager starts)."""
        self.orders = {s.client_order_id: Order.from_snapshot(s) for s in bookkeeping.orders}
        self._commands = {c.client_order_id: c for c in bookkeeping.commands}
        self.unresolved = set()
        self.uncanceled = set()
        self._resent = {}
        self._account_events = []
        self._fills = []
        self._venue_trade_ids = set()
        self._funding_keys = set()
        self._net = {}
        for client_order_id in self.orders:
            self._ids.observe(client_order_id)
        for event in bookkeeping.account_events:
            self._log_account_event(event)

    def _log_account_event(self, event: AccountEvent) -> None:
        self._account_events.append(event)
        if isinstance(event, FundingPaid):
            self._funding_keys.add((event.symbol, event.funding_time))
            return
        self._book(event)
        if event.client_order_id in self.orders:
            self._fills.append(event)
        else:
            self._venue_trade_ids.add(event.trade_id)

    def replay(self, message: Message) -> AccountEvent | None:
        """Apply one journaled message to the records, publishing nothing and calling no venue.

        Returns the message when it is a new account event (for the positions
        to replay too), None otherwise.
        """
        if isinstance(message, SubmitOrder):
            if message.client_order_id not in self.orders:
                self._record(message, message.ts_init)
            return None
        if isinstance(message, OrderAccepted | OrderRejected | OrderCanceled | OrderExpired | OrderFilled):
            new = self._take(message)
            return message if new and isinstance(message, OrderFilled) else None
        if isinstance(message, FundingPaid):
            return message if self._take(message) else None
        return None

    async def reconcile(self, since_ns: int) -> Reconciliation:
        """Settle keel's orders and account events with the venue's (the venue is right).

        Orders open in keel are queried: the venue's status and fills are
        applied, and an order the venue does not know is closed as never sent.
        Orders at the venue that keel does not know are adopted (and journaled
        through the write-ahead). The venue's fills and funding since
        ``since_ns`` that keel never applied are applied now. Everything
        applied is published like any venue report.
        """
        result = Reconciliation()
        venue = self.exchange
        statuses = await self._venue_statuses(result)
        trades = await venue.account_trades(None, since_ns)
        await self._adopt_traded(trades, statuses, result)
        for client_order_id, report in statuses.items():
            if report is not None and self.orders[client_order_id].status is OrderStatus.SUBMITTED:
                self._publish_settlement(OrderAccepted, client_order_id, venue_order_id=report.venue_order_id)
        result.missed_fills = sum(
            self._apply_missed(trade) for trade in trades if self._is_known(trade.client_order_id)
        )
        for client_order_id, report in statuses.items():
            self._close_settled(client_order_id, report, result)
        result.missed_funding = sum(self._apply_missed(payment) for payment in await venue.funding_payments(since_ns))
        return result

    async def _venue_statuses(self, result: Reconciliation) -> dict[str, OrderStatusReport | None]:
        """Query every order open in keel; adopt the venue's open orders keel does not know."""
        statuses: dict[str, OrderStatusReport | None] = {}
        for order in self.open_orders():
            statuses[order.client_order_id] = await self.exchange.query_order(order.symbol, order.client_order_id)
        for report in await self.exchange.open_orders():
            if report.client_order_id not in self.orders:
                self._adopt(report, result)
                statuses[report.client_order_id] = report
        return statuses

    async def _adopt_traded(
        self, trades: list[OrderFilled], statuses: dict[str, OrderStatusReport | None], result: Reconciliation
    ) -> None:
        """Adopt the orders of venue trades keel does not know (closed ones the open-order query missed)."""
        for trade in trades:
            if self._is_known(trade.client_order_id):
                continue
            report = await self.exchange.query_order(trade.symbol, trade.client_order_id)
            if report is None:
                result.mismatches.append(f"fill {trade.trade_id} of an order the venue cannot find")
                continue
            self._adopt(report, result)
            statuses[report.client_order_id] = report

    def _is_known(self, client_order_id: str) -> bool:
        """Whether reports of this order are keel's to apply (its own orders and the venue's liquidations)."""
        return client_order_id in self.orders or client_order_id.startswith(VENUE_LIQUIDATION_PREFIX)

    def _apply_missed(self, event: AccountEvent) -> bool:
        """Apply and publish a venue record keel never applied; return whether it was missed."""
        if not self._take(event):
            return False
        self.bus.publish(event)
        return True

    def _adopt(self, report: OrderStatusReport, result: Reconciliation) -> None:
        """Take an order the venue has and keel does not: record and journal it."""
        command = SubmitOrder(
            client_order_id=report.client_order_id,
            symbol=report.symbol,
            side=report.side,
            order_type=report.order_type,
            quantity=report.quantity,
            price=report.price,
            time_in_force=report.time_in_force,
            reduce_only=report.reduce_only,
            stop_price=report.stop_price,
            strategy="adopted",
            ts_event=report.ts_last,
            ts_init=self.clock.timestamp_ns(),
        )
        self._record(command, command.ts_init)
        if self._write_ahead is not None:
            self._write_ahead(command)
        result.adopted_orders.append(report.client_order_id)
        _log.warning("order adopted from the venue", client_order_id=report.client_order_id)

    def _close_settled(self, client_order_id: str, report: OrderStatusReport | None, result: Reconciliation) -> None:
        """Close an order the venue closed (or never had); note a fill total the fills do not explain."""
        order = self.orders[client_order_id]
        result.resolved_orders.append(client_order_id)
        if report is None:
            if order.is_closed:
                return
            if order.status is OrderStatus.SUBMITTED:
                result.never_sent_orders.append(client_order_id)
                self._publish_settlement(
                    OrderRejected,
                    client_order_id,
                    code=int(BinanceErrorCode.NO_SUCH_ORDER),
                    reason="the venue does not know the order after a restart: it was never sent",
                )
                return
            # The venue had acknowledged it: it ended there while keel was down and was dropped since
            # (Binance keeps canceled or expired orders without fills queryable for 3 days only).
            if order.filled_quantity:
                result.mismatches.append(
                    f"order {client_order_id}: filled {order.filled_quantity}, but the venue no longer knows it"
                )
            self._publish_settlement(
                OrderCanceled,
                client_order_id,
                reason="the venue no longer knows this acknowledged order after a restart: it ended there",
            )
            return
        if report.filled_quantity != order.filled_quantity:
            result.mismatches.append(
                f"order {client_order_id}: venue filled {report.filled_quantity}, its fills add up to "
                f"{order.filled_quantity}"
            )
        if order.is_closed:
            return
        if report.status is OrderStatus.CANCELED:
            self._publish_settlement(
                OrderCanceled, client_order_id, reason="canceled (found at restart)", ts_event=report.ts_last
            )
        elif report.status is OrderStatus.EXPIRED:
            self._publish_settlement(
                OrderExpired, client_order_id, reason="expired (found at restart)", ts_event=report.ts_last
            )
        elif report.status is OrderStatus.REJECTED:
            self._publish_settlement(
                OrderRejected, client_order_id, code=int(BinanceErrorCode.UNKNOWN), reason="rejected (found at restart)"
            )

    def _publish_settlement(
        self, kind: type[Event], client_order_id: str, ts_event: int | None = None, **fields: Any
    ) -> None:
        """Apply a closing report found at the venue, at the venue's time of it when known (now otherwise)."""
        now = self.clock.timestamp_ns()
        order = self.orders[client_order_id]
        ts = now if ts_event is None else ts_event
        self.on_report(kind(client_order_id=client_order_id, symbol=order.symbol, ts_event=ts, ts_init=now, **fields))  # type: ignore[call-arg]

    # --- venue refusals -----------------------------------------------------------------

    def _submit_refused(self, order: Order, error: BaseException) -> None:
        """A definitive refusal rejects the order; any other failure may or may not have reached the venue: ask it."""
        if order.is_closed:
            return
        if isinstance(error, RequestRejectedError):
            code = error.code if error.code is not None else int(BinanceErrorCode.UNKNOWN)
            self._reject(order, code, str(error))
            return
        self._resolve(order)

    def _reject(self, order: Order, code: int, reason: str) -> None:
        now = self.clock.timestamp_ns()
        self.on_report(
            OrderRejected(
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                code=code,
                reason=reason,
                ts_event=now,
                ts_init=now,
            )
        )

    def _resolve(self, order: Order) -> None:
        """Ask the venue about an order whose submit may or may not have reached it (again later, if unanswered)."""
        client_order_id = order.client_order_id
        self.unresolved.add(client_order_id)
        self._arm_resolve_timer()
        if client_order_id in self._querying:
            return
        self._querying.add(client_order_id)
        self._call(self._query_and_settle(order), f"query {client_order_id}")

    def _arm_resolve_timer(self) -> None:
        if self._resolve_armed:
            return
        self._resolve_armed = True
        name = f"{self.name}.unresolved"
        self.clock.set_alert(name, self.clock.timestamp_ns() + self._resolve_interval_ns, self._on_resolve_timer)

    def _on_resolve_timer(self, _event: TimeEvent) -> None:
        self._resolve_armed = False
        self.resolve_unresolved()

    async def _query_and_settle(self, order: Order) -> None:
        try:
            report = await self.exchange.query_order(order.symbol, order.client_order_id)
        finally:
            self._querying.discard(order.client_order_id)
        if report is None:
            self._resend(order)
            return
        self.unresolved.discard(order.client_order_id)
        self._settle(order, report)

    def _resend(self, order: Order) -> None:
        """Send the same command again under the same id (the venue refuses a second copy)."""
        attempts = self._resent.get(order.client_order_id, 0)
        if attempts >= self._max_resends or order.is_closed:
            if order.client_order_id not in self._gave_up:
                self._gave_up.add(order.client_order_id)
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
        """A refused cancel puts the order back to working (unless a report closed it meanwhile).

        Any other failure (no answer, a 5xx, a wait asked for) may have left the order working at the
        venue: the cancel is sent again at the next resolve interval while the order still waits for it.
        """
        if order.status is not OrderStatus.PENDING_CANCEL:
            return
        if isinstance(error, RequestRejectedError):
            order.cancel_refused(str(error), self.clock.timestamp_ns())
            return
        self.uncanceled.add(order.client_order_id)
        self._arm_resolve_timer()

    # --- running venue calls ---------------------------------------------------------

    def _call(
        self, call: Coroutine[Any, Any, None], what: str, on_error: Callable[[BaseException], None] | None = None
    ) -> None:
        """Run a venue coroutine: inline for a synchronous venue, as a task otherwise."""
        started = time.perf_counter()
        if self.exchange.is_synchronous:
            try:
                _run_to_completion(call)
            except Exception as error:
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
        if isinstance(error, (*_AMBIGUOUS, ConnectionError)):
            self.venue_unreachable += 1
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


_ENUM_FIELDS = (
    ("side", OrderSide, BinanceErrorCode.INVALID_SIDE),
    ("order_type", OrderType, BinanceErrorCode.INVALID_ORDER_TYPE),
    ("time_in_force", TimeInForce, BinanceErrorCode.INVALID_TIF),
    ("position_side", PositionSide, BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED),
    ("working_type", WorkingType, BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED),
)


def malformed_order(command: SubmitOrder) -> tuple[BinanceErrorCode, str] | None:
    """Return why ``command`` cannot be an order (the venue's code for it and a sentence), or None.

    Commands are not type-checked when built, so a caller's ``"BUY"`` or
    float quantity would otherwise reach the venue.
    """
    for name, kind, code in _ENUM_FIELDS:
        value = getattr(command, name)
        if not isinstance(value, kind):
            members = ", ".join(member.name for member in kind)
            return code, f"{name} must be {kind.__name__}.<member> (one of {members}), got {value!r}"
    for name in ("quantity", "price", "stop_price"):
        value = getattr(command, name)
        if value is None and name != "quantity":
            continue
        if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
            return (
                BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED,
                f"{name} must be a positive Decimal, got {value!r}",
            )
    if command.order_type is OrderType.LIMIT and command.price is None:
        return BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, "a LIMIT order needs a price"
    return None
