"""Tests of keel.core.fsm: the generic state machine run against each transition table.

The three tables (orders, component lifecycle, trading state) are checked
exhaustively: every listed move is accepted, every other (state, target) pair
of the enum product is refused and changes nothing, and a hypothesis model
(a plain dict lookup) agrees with the machine on random target sequences.
"""

from __future__ import annotations

from enum import Enum
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.errors import InvalidTransitionError
from keel.core.fsm import (
    COMPONENT_TRANSITIONS,
    TRADING_STATE_TRANSITIONS,
    ComponentState,
    StateMachine,
    TradingState,
    TransitionTable,
)
from keel.core.orders import ORDER_TRANSITIONS, OrderStatus

TABLES: dict[str, tuple[TransitionTable, type[Enum]]] = {
    "order": (ORDER_TRANSITIONS, OrderStatus),
    "component": (COMPONENT_TRANSITIONS, ComponentState),
    "trading_state": (TRADING_STATE_TRANSITIONS, TradingState),
}

ALLOWED = [
    pytest.param(table, source, target, id=f"{name}:{source.name}->{target.name}")
    for name, (table, _) in TABLES.items()
    for source, targets in table.items()
    for target in sorted(targets, key=lambda state: state.name)
]

FORBIDDEN = [
    pytest.param(table, source, target, id=f"{name}:{source.name}->{target.name}")
    for name, (table, states) in TABLES.items()
    for source, target in product(states, states)
    if target not in table[source]
]

TERMINAL = {
    "order": {OrderStatus.DENIED, OrderStatus.FILLED, OrderStatus.REJECTED},
    "component": {ComponentState.FAULTED},
    "trading_state": set(),
}


@pytest.mark.parametrize("name", TABLES)
def test_table_has_a_row_for_every_state_and_targets_only_its_own_states(name: str) -> None:
    table, states = TABLES[name]

    assert set(table) == set(states)
    for targets in table.values():
        assert isinstance(targets, frozenset)
        assert targets <= set(states)


@pytest.mark.parametrize(("table", "source", "target"), ALLOWED)
def test_every_listed_transition_is_accepted(table: TransitionTable, source: Enum, target: Enum) -> None:
    machine = StateMachine(table, source, "test")

    assert machine.can_move(target)
    previous = machine.move(target)

    assert previous is source
    assert machine.state is target


@pytest.mark.parametrize(("table", "source", "target"), FORBIDDEN)
def test_every_unlisted_transition_raises_and_leaves_the_state_unchanged(
    table: TransitionTable, source: Enum, target: Enum
) -> None:
    machine = StateMachine(table, source, "test")

    assert not machine.can_move(target)
    with pytest.raises(InvalidTransitionError):
        machine.move(target)

    assert machine.state is source


def test_the_tables_split_the_enum_product_exactly() -> None:
    for name, (table, states) in TABLES.items():
        allowed = sum(len(targets) for targets in table.values())
        forbidden = sum(1 for s, t in product(states, states) if t not in table[s])
        assert allowed + forbidden == len(states) ** 2, name


@pytest.mark.parametrize("name", TABLES)
def test_terminal_states_have_no_moves(name: str) -> None:
    table, states = TABLES[name]

    terminal = {state for state in states if StateMachine(table, state).is_terminal()}

    assert terminal == TERMINAL[name]
    for state in terminal:
        machine = StateMachine(table, state)
        for target in states:
            assert not machine.can_move(target)
            with pytest.raises(InvalidTransitionError):
                machine.move(target)
            assert machine.state is state


def test_an_initial_state_outside_the_table_is_refused() -> None:
    partial_table = {TradingState.ACTIVE: frozenset({TradingState.HALTED})}

    with pytest.raises(InvalidTransitionError):
        StateMachine(partial_table, TradingState.HALTED, "partial")


def test_the_error_names_the_machine_and_both_states() -> None:
    machine = StateMachine(COMPONENT_TRANSITIONS, ComponentState.READY, "component feed")

    with pytest.raises(InvalidTransitionError) as raised:
        machine.move(ComponentState.STOPPED)

    assert "component feed" in str(raised.value)
    assert "READY" in str(raised.value)
    assert "STOPPED" in str(raised.value)


@st.composite
def _runs(draw: st.DrawFn) -> tuple[TransitionTable, Enum, list[Enum]]:
    table, states = draw(st.sampled_from(list(TABLES.values())))
    members = list(states)
    initial = draw(st.sampled_from(members))
    targets = draw(st.lists(st.sampled_from(members), max_size=40))
    return table, initial, targets


@settings(max_examples=200, deadline=None)
@given(_runs())
def test_machine_agrees_with_a_dict_lookup_model(run: tuple[TransitionTable, Enum, list[Enum]]) -> None:
    table, initial, targets = run
    machine = StateMachine(table, initial, "model")
    model_state = initial

    for target in targets:
        allowed = target in table[model_state]
        assert machine.can_move(target) is allowed
        if allowed:
            assert machine.move(target) is model_state
            model_state = target
        else:
            with pytest.raises(InvalidTransitionError):
                machine.move(target)

        assert machine.state is model_state
        assert machine.state in table
        assert machine.is_terminal() is (not table[model_state])
