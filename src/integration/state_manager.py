"""The state manager: every event that changes trading state goes to the journal.

:class:`StateManager` appends order lifecycle events, fills, positions,
funding, liquidations, risk-limit changes and trading-state changes to the
journal (:class:`keel.persistence.Journal`) in publish order. It buffers
appends and flushes them in one transaction every ``flush_every`` events, at
once for control events (a trading-state change must survive a crash), and
when it stops. On start it reads the journal's last trading state, so a HALTED
(or REDUCING) system stays so across a restart until an operator resumes it.
"""

from __future__ import annotations

import structlog

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.fsm import TradingState
from keel.core.messages import (
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
    RiskLimitsUpdated,
    SetTradingState,
    TradingStateChanged,
)
from keel.persistence import Journal

_log = structlog.get_logger("keel.state")

JOURNALED = (
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
)
"""The events that change trading state, and so are journaled."""


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
    """

    def __init__(self, journal: Journal, bus: EventBus, clock: Clock, *, flush_every: int = 100) -> None:
        super().__init__("integration.state", bus, clock)
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.journal = journal
        self.flush_every = flush_every
        self.journaled = 0
        self.restored_state: TradingStateChanged | None = None
        self._buffer: list[Message] = []

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

    def flush(self) -> None:
        """Append the buffered events to the journal in one transaction."""
        if not self._buffer:
            return
        buffered, self._buffer = self._buffer, []
        self.journal.append(buffered)
        self.journaled += len(buffered)

    def last_trading_state(self) -> TradingStateChanged | None:
        """Return the newest journaled trading-state change, or None."""
        latest = self.journal.latest(TradingStateChanged)
        return latest if isinstance(latest, TradingStateChanged) else None
