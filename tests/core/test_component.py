"""Tests of keel.core.component: the lifecycle and the ComponentStateChanged events it publishes."""

from __future__ import annotations

import pytest

from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.component import Component
from keel.core.errors import InvalidTransitionError
from keel.core.fsm import ComponentState
from keel.core.messages import ComponentStateChanged

S = ComponentState
START_NS = 1_740_787_200_000_000_000


class Collector:
    """Subscribes to ComponentStateChanged and keeps what the bus delivers."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[ComponentStateChanged] = []
        bus.subscribe(ComponentStateChanged, self.events.append, name="collector")

    def moves(self) -> list[tuple[ComponentState, ComponentState]]:
        return [(event.previous, event.state) for event in self.events]


class RecordingComponent(Component):
    """A hand-written component that records its hooks and can be told to fail."""

    def __init__(self, name: str, bus: EventBus, clock: SimulatedClock) -> None:
        super().__init__(name, bus, clock)
        self.calls: list[str] = []
        self.fail_on_start: Exception | None = None
        self.fail_on_stop: Exception | None = None

    def on_start(self) -> None:
        self.calls.append("on_start")
        if self.fail_on_start is not None:
            raise self.fail_on_start

    def on_stop(self) -> None:
        self.calls.append("on_stop")
        if self.fail_on_stop is not None:
            raise self.fail_on_stop


def make_component(
    name: str = "feed",
) -> tuple[RecordingComponent, EventBus, SimulatedClock, Collector]:
    bus = EventBus(100)
    clock = SimulatedClock(START_NS)
    collector = Collector(bus)
    return RecordingComponent(name, bus, clock), bus, clock, collector


def test_a_new_component_is_ready_and_publishes_nothing() -> None:
    component, bus, _, collector = make_component()

    bus.drain()

    assert component.state is S.READY
    assert collector.events == []


def test_start_then_stop_publishes_the_whole_lifecycle() -> None:
    component, bus, clock, collector = make_component("binance_feed")

    component.start()
    assert component.state is S.RUNNING
    clock.advance_to(START_NS + 5_000)
    component.stop()
    bus.drain()

    assert component.state is S.STOPPED
    assert component.calls == ["on_start", "on_stop"]
    assert collector.moves() == [
        (S.READY, S.STARTING),
        (S.STARTING, S.RUNNING),
        (S.RUNNING, S.STOPPING),
        (S.STOPPING, S.STOPPED),
    ]
    assert {event.component for event in collector.events} == {"binance_feed"}
    assert [event.ts_event for event in collector.events] == [START_NS] * 2 + [START_NS + 5_000] * 2
    assert all(event.ts_init == event.ts_event for event in collector.events)


def test_a_stopped_component_can_start_again() -> None:
    component, bus, _, collector = make_component()
    component.start()
    component.stop()

    component.start()
    bus.drain()

    assert component.state is S.RUNNING
    assert collector.moves()[-2:] == [(S.STOPPED, S.STARTING), (S.STARTING, S.RUNNING)]
    assert component.calls == ["on_start", "on_stop", "on_start"]


def test_stop_is_a_no_op_when_ready_or_stopped() -> None:
    component, bus, _, collector = make_component()

    component.stop()
    component.start()
    component.stop()
    component.stop()
    bus.drain()

    assert component.state is S.STOPPED
    assert component.calls == ["on_start", "on_stop"]
    assert len(collector.events) == 4


def test_start_twice_raises_and_keeps_running() -> None:
    component, bus, _, collector = make_component()
    component.start()

    with pytest.raises(InvalidTransitionError):
        component.start()

    bus.drain()
    assert component.state is S.RUNNING
    assert component.calls == ["on_start"]
    assert len(collector.events) == 2


def test_degrade_and_recover_publish_their_reasons() -> None:
    component, bus, _, collector = make_component()
    component.start()

    component.degrade("handler raised ValueError")
    assert component.state is S.DEGRADED
    component.degrade("again")  # already degraded: no-op
    component.recover("healthy")
    component.recover("again")  # already running: no-op
    bus.drain()

    assert component.state is S.RUNNING
    assert [(e.previous, e.state, e.reason) for e in collector.events[2:]] == [
        (S.RUNNING, S.DEGRADED, "handler raised ValueError"),
        (S.DEGRADED, S.RUNNING, "healthy"),
    ]


def test_degrade_before_start_is_ignored() -> None:
    component, bus, _, collector = make_component()

    component.degrade("too early")
    bus.drain()

    assert component.state is S.READY
    assert collector.events == []


def test_a_degraded_component_can_stop() -> None:
    component, bus, _, collector = make_component()
    component.start()
    component.degrade("slow")

    component.stop()
    bus.drain()

    assert component.state is S.STOPPED
    assert collector.moves()[-2:] == [(S.DEGRADED, S.STOPPING), (S.STOPPING, S.STOPPED)]


def test_an_on_start_that_raises_leaves_the_component_faulted_and_reraises() -> None:
    component, bus, _, collector = make_component()
    error = ConnectionError("exchange unreachable")
    component.fail_on_start = error

    with pytest.raises(ConnectionError) as raised:
        component.start()
    bus.drain()

    assert raised.value is error
    assert component.state is S.FAULTED
    assert collector.moves() == [(S.READY, S.STARTING), (S.STARTING, S.FAULTED)]
    assert collector.events[-1].reason == repr(error)


def test_an_on_stop_that_raises_leaves_the_component_faulted_and_reraises() -> None:
    component, bus, _, collector = make_component()
    component.start()
    component.fail_on_stop = OSError("socket already closed")

    with pytest.raises(OSError):
        component.stop()
    bus.drain()

    assert component.state is S.FAULTED
    assert collector.moves()[-2:] == [(S.RUNNING, S.STOPPING), (S.STOPPING, S.FAULTED)]


def test_a_faulted_component_cannot_start_again() -> None:
    component, _, _, _ = make_component()
    component.fail_on_start = RuntimeError("boom")
    with pytest.raises(RuntimeError):
        component.start()
    component.fail_on_start = None

    with pytest.raises(InvalidTransitionError):
        component.start()

    assert component.state is S.FAULTED
    assert component.calls == ["on_start"]
