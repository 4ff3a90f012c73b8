"""The state manager: every event that changes trading state goes to the journal.

:class:`StateManager` numbers target allocations, order lifecycle events,
fills, positions, funding, liquidations, risk-limit changes and
trading-state changes in publish order (their journal sequence) and hands
them to a :class:`~keel.persistence.write_behind.JournalWriter`, which writes
them to the journal from a thread of its own: every ``flush_every`` events,
at most ``flush_interval_seconds`` after an event, at once for control events
(a trading-state change must survive a crash), and when it stops. The
database is so kept out of the trading loop: while it cannot be reached the
entries go to a local spill file, the manager marks itself DEGRADED with the
reason (the system monitor moves the trading state), and once the database
answers again the spill file is copied into the journal and the manager is
RUNNING again. On start it reads the journal's last trading state, so a
HALTED (or REDUCING) system stays so across a restart until an operator
resumes it.

Orders are written ahead: :meth:`StateManager.write_ahead` returns only once
the ``SubmitOrder`` command (and everything numbered before it) is in the
journal or in the spill file, before the order manager calls the venue, so
every order the venue may have is recorded. Every ``snapshot_every``
journaled events, and every ``snapshot_interval_ns`` of the clock's time when
something was journaled since the last one, it stores a snapshot of the
state ``capture`` returns, tied to the journal sequence it includes; recovery
(:mod:`keel.integration.recovery`) loads the newest one and replays the
journal after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.fsm import TradingState
from keel.core.messages import (
    AllocationProposed,
    FundingPaid,
    Lane,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionChanged,
    PositionLiquidated,
    ReconciliationCompleted,
    RiskLimitsUpdated,
    ScheduleFired,
    ScheduleMisfired,
    SessionEnded,
    SessionStarted,
    SetTradingState,
    StrategyGateEvaluated,
    SubmitOrder,
    TradingStateChanged,
)
from keel.core.time_events import TimeEvent
from keel.persistence import Journal, Snapshots
from keel.persistence.write_behind import JournalWriter, SpillFile

_log = structlog.get_logger("keel.state")

JOURNALED = (
    AllocationProposed,
    OrderSubmitted,
    OrderAccepted,
    OrderRejected,
    OrderFilled,
    OrderCanceled,
    OrderExpired,
    PositionChanged,
    FundingPaid,
    PositionLiquidated,
    RiskLimitsUpdated,
    TradingStateChanged,
    SessionStarted,
    SessionEnded,
    ReconciliationCompleted,
    StrategyGateEvaluated,
    ScheduleFired,
    ScheduleMisfired,
)
"""The events that change trading state, and so are journaled."""

WATCH_INTERVAL_SECONDS = 0.25
"""How often (wall clock) the state manager looks for a database call that hangs."""

StateCapture = Callable[[], Mapping[str, Any]]
"""Returns the state a snapshot stores (JSON-serializable, built afresh: it is written from another thread)."""


class StateManager(Component):
    """Journal state-changing events off the trading loop; restore the trading state on start.

    Parameters
    ----------
    journal
        Where events are appended.
    bus, clock
        The event bus and the clock.
    spill
        Where events go while the database cannot be reached.
    flush_every, flush_interval_seconds
        Events buffered before one write, and the longest (wall-clock) wait
        of a buffered event (control events and orders are written at once).
    snapshots, capture, snapshot_every, snapshot_interval_ns
        Where snapshots go, what they hold, and how many journaled events
        or how much clock time apart they are taken (no snapshots when
        ``snapshots`` or ``capture`` is None; none on time when the interval is None).
    buffer_capacity
        Events held in memory at most; past it they go to the spill file.
    durable_timeout_seconds
        How long an order's write-ahead waits for the database before it writes the spill file.
    stall_timeout_seconds
        How long one database call may go unanswered before the database counts as out (a hang).
    """

    def __init__(
        self,
        journal: Journal,
        bus: EventBus,
        clock: Clock,
        *,
        spill: SpillFile,
        flush_every: int = 100,
        flush_interval_seconds: float = 1.0,
        snapshots: Snapshots | None = None,
        capture: StateCapture | None = None,
        snapshot_every: int = 1000,
        snapshot_interval_ns: int | None = None,
        buffer_capacity: int = 10_000,
        durable_timeout_seconds: float = 0.5,
        stall_timeout_seconds: float = 5.0,
    ) -> None:
        super().__init__("integration.state", bus, clock)
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {snapshot_every}")
        if snapshot_interval_ns is not None and snapshot_interval_ns <= 0:
            raise ValueError(f"snapshot_interval_ns must be positive, got {snapshot_interval_ns}")
        self.journal = journal
        self.spill = spill
        self.flush_every = flush_every
        self.flush_interval_seconds = flush_interval_seconds
        self.snapshot_every = snapshot_every
        self.snapshot_interval_ns = snapshot_interval_ns
        self.buffer_capacity = buffer_capacity
        self.durable_timeout_seconds = durable_timeout_seconds
        self.stall_timeout_seconds = stall_timeout_seconds
        self.journaled = 0
        self.snapshots_taken = 0
        self.restored_state: TradingStateChanged | None = None
        self.writer: JournalWriter | None = None
        self._snapshots = snapshots
        self._capture = capture
        self._since_snapshot = 0
        self._availability: deque[str | None] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def on_start(self) -> None:
        """Start the journal writer; put back a trading state other than ACTIVE left by the last run."""
        self.restored_state = self.last_trading_state()
        first = max(self.journal.last_sequence(), self.spill.last_sequence()) + 1
        self.writer = JournalWriter(
            self.journal,
            self.spill,
            first_sequence=first,
            snapshots=self._snapshots,
            flush_every=self.flush_every,
            flush_interval=self.flush_interval_seconds,
            capacity=max(self.buffer_capacity, self.flush_every),
            durable_timeout=self.durable_timeout_seconds,
            stall_timeout=self.stall_timeout_seconds,
            on_availability=self._availability_changed,
        )
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.writer.start()
        self._watch()
        for kind in JOURNALED:
            self.bus.subscribe(kind, self.on_event, name=self.name)
        if self.snapshot_interval_ns is not None:
            self.clock.set_timer(f"{self.name}.snapshot", self.snapshot_interval_ns, self.on_snapshot_timer)
        last = self.restored_state
        if last is not None and last.state is not TradingState.ACTIVE:
            now = self.clock.timestamp_ns()
            _log.warning("trading state restored from the journal", state=last.state.value, reason=last.reason)
            self.bus.publish(
                SetTradingState(
                    state=last.state, reason=f"restored after restart: {last.reason}", ts_event=now, ts_init=now
                )
            )

    def on_stop(self) -> None:
        """Write whatever is buffered (to the database, or the spill file) and stop the writer."""
        self.clock.cancel_timer(f"{self.name}.snapshot")
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.writer is not None:
            self.writer.close()
        self.apply_database_changes()

    def on_event(self, event: Message) -> None:
        """Hand one event to the writer (control events are written at once)."""
        self.apply_database_changes()
        sequence = self._writer().add([event], urgent=event.lane is Lane.CONTROL)
        self._journaled(1, sequence)

    def write_ahead(self, command: SubmitOrder) -> None:
        """Journal an order command, after everything before it; return once it is durable.

        Durable means in the database or, while that cannot be reached (or
        answer in time), in the spill file.

        Raises
        ------
        OSError
            If neither the database nor the spill file could take it: the order must not be sent.
        """
        self.apply_database_changes()
        sequence = self._writer().add_durably([command])
        self._journaled(1, sequence)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every event handed over so far is written; return whether it is."""
        return self.writer is not None and self.writer.flush(timeout)

    def on_snapshot_timer(self, _event: TimeEvent) -> None:
        """Take a snapshot on time when something was journaled since the last one."""
        if self._since_snapshot and self.writer is not None:
            self.take_snapshot(self.writer.last_sequence)

    def take_snapshot(self, journal_sequence: int) -> None:
        """Store the captured state as of ``journal_sequence`` (everything journaled up to it)."""
        if self._snapshots is None or self._capture is None or self.writer is None:
            return
        if not self.writer.available:
            return  # it could not be stored: the next one is taken once the database is back
        self.writer.add_snapshot(self.clock.timestamp_ns(), journal_sequence, self._capture())
        self._since_snapshot = 0
        self.snapshots_taken += 1

    def last_trading_state(self) -> TradingStateChanged | None:
        """Return the newest journaled trading-state change, or None."""
        latest = self.journal.latest(TradingStateChanged)
        return latest if isinstance(latest, TradingStateChanged) else None

    def database_outage(self) -> str | None:
        """Return why the database cannot be reached, or None while it can."""
        return None if self.writer is None else self.writer.outage

    def apply_database_changes(self) -> None:
        """Turn the writer's reports into this component's state: DEGRADED during an outage, RUNNING after."""
        while self._availability:
            reason = self._availability.popleft()
            if reason is not None:
                self.degrade(f"{reason}; journal kept in {self.spill.path}")
            else:
                self.recover("database reachable again; spill file copied into the journal")

    def _watch(self) -> None:
        """Every quarter second of wall-clock time: notice a database that hangs, apply availability changes."""
        if self.writer is not None:
            self.writer.watch()
        self.apply_database_changes()
        if self._loop is not None:
            self._watchdog = self._loop.call_later(WATCH_INTERVAL_SECONDS, self._watch)

    def _availability_changed(self, reason: str | None) -> None:
        """Called from the writer's thread: pass the change to the trading loop's thread."""
        self._availability.append(reason)
        loop = self._loop
        if loop is not None:
            # A closed loop raises: the next event or the stop applies the change then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.apply_database_changes)

    def _journaled(self, count: int, sequence: int) -> None:
        self.journaled += count
        self._since_snapshot += count
        if self._since_snapshot >= self.snapshot_every:
            self.take_snapshot(sequence)

    def _writer(self) -> JournalWriter:
        if self.writer is None:
            raise RuntimeError("the state manager journals only once started")
        return self.writer
