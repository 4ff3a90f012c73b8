"""One generic finite-state machine driven by transition tables.

A table maps each state to the set of states it may move to. The machine
refuses any other move with :class:`~keel.core.errors.InvalidTransitionError`,
so an impossible sequence of venue events is caught where it happens instead
of silently corrupting an order or a component.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Generic, TypeVar

from keel.core.errors import InvalidTransitionError

S = TypeVar("S", bound=Enum)

TransitionTable = Mapping[S, frozenset[S]]


class StateMachine(Generic[S]):
    """Hold a current state and move it only along a transition table.

    Parameters
    ----------
    table
        For every state, the set of states it may move to. A state with an
        empty set is terminal.
    initial
        The starting state; it must be a key of ``table``.
    name
        What the machine belongs to, used in error messages.
    """

    __slots__ = ("_name", "_state", "_table")

    def __init__(self, table: TransitionTable[S], initial: S, name: str = "") -> None:
        if initial not in table:
            raise InvalidTransitionError(f"{name}: initial state {initial.name} is not in the table")
        self._table = table
        self._state = initial
        self._name = name

    @property
    def state(self) -> S:
        """Return the current state."""
        return self._state

    def can_move(self, target: S) -> bool:
        """Return whether a move to ``target`` is allowed from the current state."""
        return target in self._table[self._state]

    def move(self, target: S) -> S:
        """Move to ``target`` and return the previous state.

        Raises
        ------
        InvalidTransitionError
            If the table does not allow the move.
        """
        previous = self._state
        if target not in self._table[previous]:
            raise InvalidTransitionError(f"{self._name}: cannot move from {previous.name} to {target.name}")
        self._state = target
        return previous

    def is_terminal(self) -> bool:
        """Return whether no move is possible from the current state."""
        return not self._table[self._state]


class ComponentState(Enum):
    """Lifecycle of a running component."""

    READY = "READY"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAULTED = "FAULTED"


COMPONENT_TRANSITIONS: TransitionTable[ComponentState] = {
    ComponentState.READY: frozenset({ComponentState.STARTING, ComponentState.FAULTED}),
    ComponentState.STARTING: frozenset({ComponentState.RUNNING, ComponentState.STOPPING, ComponentState.FAULTED}),
    ComponentState.RUNNING: frozenset({ComponentState.DEGRADED, ComponentState.STOPPING, ComponentState.FAULTED}),
    ComponentState.DEGRADED: frozenset({ComponentState.RUNNING, ComponentState.STOPPING, ComponentState.FAULTED}),
    ComponentState.STOPPING: frozenset({ComponentState.STOPPED, ComponentState.FAULTED}),
    ComponentState.STOPPED: frozenset({ComponentState.STARTING}),
    ComponentState.FAULTED: frozenset(),
}


class TradingState(Enum):
    """What the risk layer lets through.

    ACTIVE lets every approved order through; REDUCING only orders that reduce
    exposure; HALTED only cancels.
    """

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


TRADING_STATE_TRANSITIONS: TransitionTable[TradingState] = {
    TradingState.ACTIVE: frozenset({TradingState.REDUCING, TradingState.HALTED}),
    TradingState.REDUCING: frozenset({TradingState.ACTIVE, TradingState.HALTED}),
    # Leaving HALTED is always an explicit operator resume (to ACTIVE) or a
    # deliberate step down to REDUCING; nothing automatic moves it.
    TradingState.HALTED: frozenset({TradingState.ACTIVE, TradingState.REDUCING}),
}
