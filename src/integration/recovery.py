"""Recovery after a restart: sessions, snapshots, journal replay and reconciliation with the venue.

A *session* is one account's run from a fresh start until it has nothing left
to do (a paper replay: its data ended). The journal marks it with
``SessionStarted`` and ``SessionEnded``; a session with no ``SessionEnded``
that says ``finished`` (an operator's stop, a crash) is recovered by the next
start, in five steps:

0. **History**: the session's market data up to the restart point (the
   venue's :class:`~keel.api.MarketCursor`) runs through the pipeline, which
   trades it on its own scratch venue exactly as the session did (same data,
   configuration and seed: same decisions). Everything a decision depends on
   comes out of it where the session left it: the strategies and their
   per-position state, the regime detectors, the strategy manager, the
   optimizer and allocator (previous weights, rebalance schedule, costs),
   the risk estimates and the drawdown, and the equity curve. Restarts are
   invisible to the strategy. The scratch venue is then replaced by the real
   one and the books by the journal's.
1. **Snapshot**: the newest state snapshot of the session (orders, the
   account's fills and funding, the drawdown, the target weights) is loaded.
2. **Journal**: every journaled event after it is replayed into the order
   records and positions; the reports' fills, rejections, liquidations and
   trading states are rebuilt from the session's journal. Replay is
   idempotent (fills by trade id, funding by funding time), so a snapshot
   taken ahead of its journal sequence is harmless.
3. **Reconciliation** with the venue, which is always right: orders open in
   keel are queried; orders at the venue keel never heard of are adopted;
   fills and funding keel never applied are applied; positions and the
   wallet balance are compared. What cannot be explained is a *mismatch*: the
   ``ReconciliationCompleted`` event lists it and the system monitor halts trading.
4. **Working orders**: the execution algorithms the history replay left
   working (each parent's schedule, fills and live child, where the session
   had them) are settled with the reconciled records
   (:meth:`~keel.execution.router.SmartOrderRouter.resume`) and go on, as do
   the ladders' level orders (:meth:`~keel.execution.ladder_executor.LadderExecutor.resume`); the
   venue's open orders they work are kept, any other open order (one placed
   by hand, or of a parent that did not survive) is canceled. Only then does
   trading resume.

The feed resumes right after the last market event the venue processed, so
a restart, with or without orders working at the venue, is invisible to the
venue as well. Where it is not, by construction: an order the session wrote
ahead but never sent (killed between the two) is rejected as never sent and
its parent ends (the next decision trades again), and a child the session
decided but never wrote ahead is decided again, under the next client order
id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import structlog

from keel.api import MarketCursor
from keel.core.clock import SimulatedClock
from keel.core.messages import (
    AllocationProposed,
    BarClosed,
    CancelOrder,
    MarketDataEvent,
    OrderFilled,
    OrderRejected,
    PositionLiquidated,
    ReconciliationCompleted,
    SessionEnded,
    SessionStarted,
    SetTradingState,
    TradingStateChanged,
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
    max_drawdown: float = 0.0
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
        max_drawdown=pipeline.risk.max_drawdown,
        allocations=pipeline.allocator.weights(),
    )
    return json.loads(msgspec.json.encode(state))


@dataclass(slots=True)
class ReplayedHistory:
    """What :func:`replay_history` ran: bars and events, and the bar time whose equity is not recorded yet."""

    bars: int = 0
    events: int = 0
    pending_bar_ts: int | None = None
    fills: list[OrderFilled] = field(default_factory=list)


def replay_history(pipeline: Pipeline, history: Iterable[MarketDataEvent]) -> ReplayedHistory:
    """Start the pipeline and run the session's market history up to the restart point through it.

    The pipeline trades the history on its own venue as the session did, so
    every decision's state (strategies, regimes, strategy manager, optimizer
    and allocator, risk estimates, drawdown) and the equity curve end where
    the session's did. Execution algorithms still working at the end are
    stopped. Call on a built pipeline whose venue is not the real one's
    store yet and whose order manager does not write ahead: nothing of the
    history reaches the journal or the real venue. :func:`restore_state`
    then puts the real books in place. The execution algorithms still working
    at the end stay working: :func:`reconcile` settles them with the venue.
    """
    bus, clock = pipeline.bus, pipeline.clock
    assert isinstance(clock, SimulatedClock)
    replayed = ReplayedHistory()
    pipeline.start()
    bus.drain()
    for event in history:
        ts = event.ts_event
        if replayed.pending_bar_ts is not None and ts != replayed.pending_bar_ts:
            pipeline.record_equity(replayed.pending_bar_ts)
            replayed.pending_bar_ts = None
        clock.advance_to(ts)
        bus.publish(event)
        bus.drain()
        replayed.events += 1
        if event.__class__ is BarClosed:
            replayed.bars += 1
            replayed.pending_bar_ts = ts
    replayed.fills = list(pipeline.recorder.fills)
    _log.info("history replayed", bars=replayed.bars, events=replayed.events, fills=len(replayed.fills))
    return replayed


def restore_state(
    pipeline: Pipeline,
    journal: Journal,
    snapshots: Snapshots,
    plan: SessionPlan,
    history: ReplayedHistory | None = None,
) -> int:
    """Put the session's books back: the newest snapshot, then the journal after it; return the events replayed.

    The order records and positions are rebuilt from nothing (whatever the
    history replay left in them goes), and so are the reports' fills,
    rejections, liquidations and trading states, from the session's whole
    journal. Call before the pipeline's bus runs: nothing is published and no
    venue is called.
    """
    orders, positions = pipeline.orders, pipeline.positions
    orders.restore(OrderBookkeeping(orders=[], commands=[], account_events=[]))
    positions.clear_books()
    after = plan.first_sequence
    latest = snapshots.latest(after_sequence=plan.first_sequence)
    if latest is not None:
        after, payload = latest
        state = msgspec.convert(payload, RecoveredState, strict=False)
        orders.restore(state.bookkeeping)
        for event in state.bookkeeping.account_events:
            positions.replay(event)
        pipeline.risk.restore_drawdown(state.peak_equity, state.max_drawdown)
        pipeline.allocator.restore_weights(state.allocations)
    replayed = 0
    for _sequence, message in journal.read(after):
        if isinstance(message, AllocationProposed):
            pipeline.allocator.restore_weights(message.weights)
        account_event = orders.replay(message)
        if account_event is not None:
            positions.replay(account_event)
        replayed += 1
    if history is not None:
        follow_journaled_trading_state(pipeline, journal)
    rebuild_records(pipeline, journal, plan)
    if history is not None:
        _check_history(history, pipeline.recorder.fills)
    _log.info("state restored", snapshot=latest is not None, replayed=replayed, orders=len(orders.orders))
    return replayed


def follow_journaled_trading_state(pipeline: Pipeline, journal: Journal) -> None:
    """Move the risk controller to the journal's last trading state when the history replay left it elsewhere.

    The replay knows the market but not the operator: a resume (or halt) the
    session journaled wins over the state the replay's limits reached.
    """
    last = journal.latest(TradingStateChanged)
    if isinstance(last, TradingStateChanged) and last.state is not pipeline.risk.trading_state:
        now = pipeline.clock.timestamp_ns()
        reason = f"as journaled before the restart: {last.reason}"
        pipeline.bus.publish(SetTradingState(state=last.state, reason=reason, ts_event=now, ts_init=now))
        pipeline.bus.drain()


def rebuild_records(pipeline: Pipeline, journal: Journal, plan: SessionPlan) -> None:
    """Rebuild the reports' fills (from the restored books), rejections, liquidations and trading states (journal)."""
    recorder = pipeline.recorder
    # In place: the recorder's bus handlers append to these very lists.
    recorder.fills[:] = [e for e in pipeline.orders.account_events() if isinstance(e, OrderFilled)]
    session = [message for _sequence, message in journal.read(plan.first_sequence)]
    recorder.rejections[:] = [m for m in session if isinstance(m, OrderRejected)]
    recorder.liquidations[:] = [m for m in session if isinstance(m, PositionLiquidated)]
    recorder.trading_states[:] = [m for m in session if isinstance(m, TradingStateChanged)]


def _check_history(history: ReplayedHistory, journaled: list[OrderFilled]) -> None:
    """Warn when the journal's fills are not where the history replay's begin (the replay decided differently)."""
    replay = [(f.trade_id, f.last_quantity, f.last_price) for f in history.fills[: len(journaled)]]
    if replay != [(f.trade_id, f.last_quantity, f.last_price) for f in journaled]:
        _log.warning(
            "the history replay traded differently from the journal: decisions after the restart may differ",
            replayed_fills=len(history.fills),
            journaled_fills=len(journaled),
        )


async def reconcile(pipeline: Pipeline, since_ns: int) -> ReconciliationCompleted:
    """Settle the restored state with the venue, publish ``ReconciliationCompleted``, resume the working orders.

    The parents the history replay left working go on with their children
    (:meth:`~keel.execution.router.SmartOrderRouter.resume`); every other
    order open at the venue is canceled.

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
    # A mismatch halts trading here, and a halt stops every parent: only then is it known which go on.
    await bus.join()
    working = pipeline.router.resume()
    if pipeline.ladders is not None:
        working |= pipeline.ladders.resume()
    for order in pipeline.orders.open_orders():
        if order.client_order_id not in working:
            cancel = CancelOrder(client_order_id=order.client_order_id, symbol=order.symbol, ts_event=now, ts_init=now)
            bus.publish(cancel)
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


def events_until(feed: Iterable[MarketDataEvent], cursor: MarketCursor) -> Iterator[MarketDataEvent]:
    """Yield the feed's events up to and including ``cursor`` (those :func:`events_after` skips)."""
    for event in feed:
        if event.ts_event > cursor.ts_event:
            return
        yield event
        if event.ts_event == cursor.ts_event and MarketCursor.of(event) == cursor:
            return


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
