"""The state manager: every event that changes trading state goes to the journal.

:class:`StateManager` appends target allocations, order lifecycle events, fills, positions,
funding, liquidations, risk-limit changes and trading-state changes to the
journal (:class:`keel.persistence.Journal`) in publish order. It buffers
appends and flushes them in one transaction every ``flush_every`` events, at
once for control events (a trading-state change must survive a crash), and
when it stops. On start it reads the journal's last trading state, so a HALTED
(or REDUCING) system stays so across a restart until an operator resumes it.

Orders are written ahead: :meth:`StateManager.write_ahead` appends the
``SubmitOrder`` command (after everything buffered before it) before the order
manager calls the venue, so every order the venue may have is in the journal.
Every ``snapshot_every`` journaled events it stores a snapshot of the state
``capture`` returns, tied to the journal sequence it includes; recovery
(:mod:`keel.integration.recovery`) loads the newest one and replays the
journal after it.
"""

from __future__ import annotations

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
    SessionEnded,
    SessionStarted,
    SetTradingState,
    SubmitOrder,
    TradingStateChanged,
)
from keel.persistence import Journal, Snapshots

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
)
"""The events that change trading state, and so are journaled."""

StateCapture = Callable[[], Mapping[str, Any]]
"""Returns the state a snapshot stores (JSON-serializable)."""


class StateManager(Component):
    """Journal state-changing events; restore the trading state on start.

    Parameters
    ----------
    journal
        Where events are appended.
    bus, clock
        The event bus and the clock.
    flush_every
        Events buffered before one write (control events are written at once).
    snapshots, capture, snapshot_every
        Where snapshots go, what they hold, and how many journaled events
        apart they are taken (no snapshots when ``snapshots`` or ``capture`` is None).
    """

    def __init__(
        self,
        journal: Journal,
        bus: EventBus,
        clock: Clock,
        *,
        flush_every: int = 100,
        snapshots: Snapshots | None = None,
        capture: StateCapture | None = None,
        snapshot_every: int = 1000,
    ) -> None:
        super().__init__("integration.state", bus, clock)
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {snapshot_every}")
        self.journal = journal
        self.flush_every = flush_every
        self.snapshot_every = snapshot_every
        self.journaled = 0
        self.snapshots_taken = 0
        self.restored_state: TradingStateChanged | None = None
        self._snapshots = snapshots
        self._capture = capture
        self._buffer: list[Message] = []
        self._since_snapshot = 0

    def on_start(self) -> None:
        """Journal from now on; put back a trading state other than ACTIVE left by the last run."""
        self.restored_state = self.last_trading_state()
        for kind in JOURNALED:
            self.bus.subscribe(kind, self.on_event, name=self.name)
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
        """Write whatever is buffered."""
        self.flush()

    def on_event(self, event: Message) -> None:
        """Buffer one event; write the buffer when it is full or the event is a control event."""
        self._buffer.append(event)
        if event.lane is Lane.CONTROL or len(self._buffer) >= self.flush_every:
            self.flush()

    def write_ahead(self, command: SubmitOrder) -> None:
        """Journal an order command, after everything buffered, before it goes to the venue."""
        self._buffer.append(command)
        self.flush()

    def flush(self) -> None:
        """Append the buffered events to the journal in one transaction; take a snapshot when one is due."""
        if not self._buffer:
            return
        buffered, self._buffer = self._buffer, []
        sequence = self.journal.append(buffered)
        self.journaled += len(buffered)
        self._since_snapshot += len(buffered)
        if self._since_snapshot >= self.snapshot_every:
            self.take_snapshot(sequence)

    def take_snapshot(self, journal_sequence: int) -> None:
        """Store the captured state as of ``journal_sequence`` (everything journaled up to it)."""
        if self._snapshots is None or self._capture is None:
            return
        self._snapshots.save(self.clock.timestamp_ns(), journal_sequence, self._capture())
        self._since_snapshot = 0
        self.snapshots_taken += 1

    def last_trading_state(self) -> TradingStateChanged | None:
        """Return the newest journaled trading-state change, or None."""
        latest = self.journal.latest(TradingStateChanged)
        return latest if isinstance(latest, TradingStateChanged) else None
