"""Component lifecycle: READY -> STARTING -> RUNNING (<-> DEGRADED) -> STOPPING -> STOPPED.

Every long-lived part of keel (strategies, risk, execution, feeds) is a
:class:`Component`. Its state moves only along
:data:`~keel.core.fsm.COMPONENT_TRANSITIONS`, and every move is published as
a ``ComponentStateChanged`` event so the monitor and the dashboard see it.
"""

from __future__ import annotations

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.fsm import COMPONENT_TRANSITIONS, ComponentState, StateMachine
from keel.core.messages import ComponentStateChanged


class Component:
    """A named part of the system with a lifecycle, a bus and a clock.

    Subclasses subscribe to the bus in :meth:`on_start` and release
    resources in :meth:`on_stop`.

    Parameters
    ----------
    name
        Unique component name, used in logs, metrics and events.
    bus
        The event bus.
    clock
        The clock every timestamp is read from.
    """

    def __init__(self, name: str, bus: EventBus, clock: Clock) -> None:
        self.name = name
        self.bus = bus
        self.clock = clock
        self._lifecycle = StateMachine(COMPONENT_TRANSITIONS, ComponentState.READY, f"component {name}")

    @property
    def state(self) -> ComponentState:
        """Return the lifecycle state."""
        return self._lifecycle.state

    def start(self) -> None:
        """Run :meth:`on_start` and move to RUNNING (FAULTED if it raises)."""
        self._move(ComponentState.STARTING)
        try:
            self.on_start()
        except Exception as error:
            self._move(ComponentState.FAULTED, repr(error))
            raise
        self._move(ComponentState.RUNNING)

    def stop(self) -> None:
        """Run :meth:`on_stop` and move to STOPPED (nothing to do if never started, stopped or faulted)."""
        if self.state in (ComponentState.STOPPED, ComponentState.READY, ComponentState.FAULTED):
            return
        self._move(ComponentState.STOPPING)
        try:
            self.on_stop()
        except Exception as error:
            self._move(ComponentState.FAULTED, repr(error))
            raise
        self._move(ComponentState.STOPPED)

    def degrade(self, reason: str) -> None:
        """Mark the component degraded (it keeps running)."""
        if self.state is ComponentState.RUNNING:
            self._move(ComponentState.DEGRADED, reason)

    def recover(self, reason: str = "") -> None:
        """Return a degraded component to RUNNING."""
        if self.state is ComponentState.DEGRADED:
            self._move(ComponentState.RUNNING, reason)

    def on_start(self) -> None:
        """Subscribe to the bus and acquire resources; called by :meth:`start`."""

    def on_stop(self) -> None:
        """Release resources; called by :meth:`stop`."""

    def _move(self, target: ComponentState, reason: str = "") -> None:
        previous = self._lifecycle.move(target)
        now = self.clock.timestamp_ns()
        self.bus.publish(
            ComponentStateChanged(
                component=self.name,
                previous=previous,
                state=target,
                reason=reason,
                ts_event=now,
                ts_init=now,
            )
        )
