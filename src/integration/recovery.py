"""Recovery after a restart: sessions, snapshots, journal replay and reconciliation with the venue.

A *session* is one account's run from a fresh start until it has nothing left
to do (a paper replay: its data ended). The journal marks it with
``SessionStarted`` and ``SessionEnded``; a session with no ``SessionEnded``
that says ``finished`` (an operator's stop, a crash) is recovered by the next
start, in four steps:

1. **Snapshot**: the newest state snapshot of the session (orders, the
   account's fills and funding, the drawdown's peak, the target weights) is loaded.
2. **Journal**: every journaled event after it is replayed into the order
   records and positions. Replay is idempotent (fills by trade id, funding by
   funding time), so a snapshot taken ahead of its journal sequence is harmless.
3. **Reconciliation** with the venue, which is always right: orders open in
   keel are queried; orders at the venue keel never heard of are adopted;
   fills and funding keel never applied are applied; positions and the
   wallet balance are compared. What cannot be explained is a *mismatch*: the
   ``ReconciliationCompleted`` event lists it and the system monitor halts trading.
4. **Clean slate**: orders still open are canceled (the execution algorithms
   that placed them did not survive the restart); only then does trading resume.

The feed resumes right after the last market event the venue processed (its
:class:`~keel.api.MarketCursor`); the strategies, the risk estimates and the
optimizer warm up on the recorded bars before it (``strategy.warmup_bars``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import structlog

from keel.api import MarketCursor
from keel.core.messages import (
    AllocationProposed,
    CancelAllOrders,
    MarketDataEvent,
    ReconciliationCompleted,
    SessionEnded,
    SessionStarted,
)
from keel.core.ports import BalanceReport, PositionReport
from keel.execution.order_manager import OrderBookkeeping
from keel.integration.pipeline import Pipeline
from keel.persistence import Journal, Snapshots
from keel.risk_management.position_manager import PositionManager

_log = structlog.get_logger("keel.recovery")

BALANCE_TOLERANCE = Decimal("0.00000001")
"""Largest wallet difference (USDT) that is rounding, not a mismatch."""


class RecoveredState(msgspec.Struct, frozen=True, kw_only=True):
    """What a state snapshot holds."""

    bookkeeping: OrderBookkeeping
    peak_equity: float
    allocations: dict[str, float] = {}


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """What a start does: begin session ``session`` afresh, or recover it.

    ``first_sequence`` is the journal sequence of the recovered session's first
    ``SessionStarted`` (its journal starts there); ``start_ts`` its start time.
    """

    session: int
    recover: bool
    first_sequence: int = 0
    start_ts: int = 0


def plan_session(journal: Journal) -> SessionPlan:
    """Decide from the journal whether the last session is unfinished (recover it) or a new one begins."""
    starts = journal.entries_of(SessionStarted)
    if not starts:
        return SessionPlan(session=1, recover=False)
    last_sequence, last = starts[-1]
    session = last.session  # type: ignore[attr-defined]
    ended = journal.latest_entry(SessionEnded)
    if ended is not None and ended[0] > last_sequence and ended[1].finished:  # type: ignore[attr-defined]
        return SessionPlan(session=session + 1, recover=False)
    first_sequence, first = next((s, m) for s, m in starts if m.session == session)  # type: ignore[attr-defined]
    return SessionPlan(session=session, recover=True, first_sequence=first_sequence, start_ts=first.ts_event)


def capture_state(pipeline: Pipeline) -> dict[str, Any]:
    """Return the snapshot of a pipeline's recoverable state (JSON-ready)."""
    state = RecoveredState(
        bookkeeping=pipeline.orders.snapshot(),
        peak_equity=pipeline.risk.peak_equity,
        allocations=pipeline.allocator.weights(),
    )
    return json.loads(msgspec.json.encode(state))


def restore_state(pipeline: Pipeline, journal: Journal, snapshots: Snapshots, plan: SessionPlan) -> int:
    """Load the session's newest snapshot and replay the journal after it; return the events replayed.

    Call before the pipeline starts: nothing is published and no venue is called.
    """
    orders, positions = pipeline.orders, pipeline.positions
    after = plan.first_sequence
    latest = snapshots.latest(after_sequence=plan.first_sequence)
    if latest is not None:
        after, payload = latest
        state = msgspec.convert(payload, RecoveredState, strict=False)
        orders.restore(state.bookkeeping)
        for event in state.bookkeeping.account_events:
            positions.replay(event)
        pipeline.risk.restore_peak_equity(state.peak_equity)
        pipeline.allocator.restore_weights(state.allocations)
    replayed = 0
    for _sequence, message in journal.read(after):
        if isinstance(message, AllocationProposed):
            pipeline.allocator.restore_weights(message.weights)
        account_event = orders.replay(message)
        if account_event is not None:
            positions.replay(account_event)
        replayed += 1
    _log.info("state restored", snapshot=latest is not None, replayed=replayed, orders=len(orders.orders))
    return replayed


async def reconcile(pipeline: Pipeline, since_ns: int) -> ReconciliationCompleted:
    """Settle the restored state with the venue, publish ``ReconciliationCompleted`` and cancel leftovers.

    The bus must be running: settled reports reach the positions and the journal through it.
    """
    bus, venue = pipeline.bus, pipeline.exchange
    # The restart outlasted every request that was on its way: the venue has them all now.
    pipeline.deliver_in_flight()
    await bus.join()
    result = await pipeline.orders.reconcile(since_ns)
    await bus.join()
    mismatches = [
        *result.mismatches,
        *position_mismatches(pipeline.positions, await venue.positions()),
        *balance_mismatches(pipeline.positions, await venue.balances()),
    ]
    now = pipeline.clock.timestamp_ns()
    completed = ReconciliationCompleted(
        adopted_orders=tuple(result.adopted_orders),
        resolved_orders=tuple(result.resolved_orders),
        never_sent_orders=tuple(result.never_sent_orders),
        missed_fills=result.missed_fills,
        missed_funding=result.missed_funding,
        mismatches=tuple(mismatches),
        ts_event=now,
        ts_init=now,
    )
    bus.publish(completed)
    if pipeline.orders.open_orders():
        bus.publish(CancelAllOrders(symbol=None, reason="recovered after a restart", ts_event=now, ts_init=now))
    await bus.join()
    log = _log.warning if mismatches else _log.info
    log("reconciled with the venue", **{k: v for k, v in msgspec.structs.asdict(completed).items() if k != "id"})
    return completed


def position_mismatches(positions: PositionManager, venue: Iterable[PositionReport]) -> list[str]:
    """Describe every symbol whose quantity in keel differs from the venue's."""
    held = {report.symbol: report.quantity for report in venue}
    symbols = sorted(set(held) | {s for s, p in positions.positions.items() if p.quantity != 0})
    return [
        f"position {symbol}: keel {positions.quantity(symbol)}, venue {held.get(symbol, Decimal(0))}"
        for symbol in symbols
        if positions.quantity(symbol) != held.get(symbol, Decimal(0))
    ]


def balance_mismatches(positions: PositionManager, venue: BalanceReport) -> list[str]:
    """Describe a wallet balance that differs from the venue's by more than rounding."""
    wallet = positions.initial_capital + positions.realized_pnl() - positions.fees_paid + positions.funding_received
    if abs(wallet - venue.wallet_balance) <= BALANCE_TOLERANCE:
        return []
    return [f"wallet balance: keel {wallet}, venue {venue.wallet_balance}"]


def events_after(feed: Iterable[MarketDataEvent], cursor: MarketCursor | None) -> Iterator[MarketDataEvent]:
    """Yield the feed's events after ``cursor`` (every event when None).

    Events of the cursor's time up to and including the cursor's own event
    were processed before the restart and are skipped.
    """
    events = iter(feed)
    if cursor is not None:
        for event in events:
            if event.ts_event > cursor.ts_event:
                yield event
                break
            if event.ts_event == cursor.ts_event and MarketCursor.of(event) == cursor:
                break
    yield from events
