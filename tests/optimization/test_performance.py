"""PerformanceEnhancer: metrics of the process and bounded tuning of the bus, snapshot and GC knobs."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from keel.core.bus import EventBus
from keel.optimization.performance import PerformanceBounds, PerformanceEnhancer


class ManualClock:
    """Seconds that move only when the test says (or by ``step`` on every reading)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 100.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class SnapshotOwner:
    """Holds a snapshot interval, as the state manager does."""

    def __init__(self, snapshot_every: int) -> None:
        self.snapshot_every = snapshot_every


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)


def test_metrics_cover_cpu_memory_gc_and_the_bus(real_data) -> None:
    # Arrange
    bus = EventBus(capacity=10)
    bus.publish(real_data.bars("BTCUSDT", 1)[0])
    enhancer = PerformanceEnhancer(bus)

    # Act
    metrics = enhancer.get_real_time_metrics()
    enhancer.close()

    # Assert
    assert metrics["rss_bytes"] > 10_000_000
    assert metrics["bus_depth"] == 1 and metrics["bus_capacity"] == 10
    assert len(metrics["gc_counts"]) == 3 and metrics["cpu_percent"] >= 0


def test_conflation_doubles_the_bus_capacity_up_to_its_bound(real_data) -> None:
    # Arrange
    bus = EventBus(capacity=2)
    bus.subscribe(type(real_data.bars("BTCUSDT", 1)[0]), lambda message: None)
    enhancer = PerformanceEnhancer(bus, bounds=PerformanceBounds(max_bus_capacity=3))
    for bar in real_data.bars("BTCUSDT", 5):
        bus.publish(bar)

    # Act
    first = asyncio.run(enhancer.auto_tune_performance())
    for bar in real_data.bars("ETHUSDT", 8):
        bus.publish(bar)
    second = asyncio.run(enhancer.auto_tune_performance())
    enhancer.close()

    # Assert
    assert [(c.knob, c.old, c.new) for c in first] == [("bus.capacity", 2, 3)]
    assert second == [] and bus.capacity == 3


def test_event_loop_lag_stretches_the_snapshot_interval_and_it_comes_back() -> None:
    # Arrange
    clock = ManualClock()
    owner = SnapshotOwner(1000)
    enhancer = PerformanceEnhancer(state=owner, clock=clock)

    async def lag_of(seconds: float) -> None:
        enhancer.schedule_lag_probe(asyncio.get_running_loop())
        clock.now += seconds
        await asyncio.sleep(0)

    # Act
    asyncio.run(lag_of(0.2))
    lagging = asyncio.run(enhancer.auto_tune_performance())
    asyncio.run(lag_of(0.0))
    recovered = asyncio.run(enhancer.auto_tune_performance())
    enhancer.close()

    # Assert
    assert [(c.knob, c.new) for c in lagging] == [("state.snapshot_every", 2000)]
    assert [(c.knob, c.new) for c in recovered] == [("state.snapshot_every", 1000)]
    assert owner.snapshot_every == 1000


def test_collections_taking_much_of_the_time_raise_the_gc_threshold(restored_gc) -> None:
    # Arrange
    gc.set_threshold(700, 10, 10)
    enhancer = PerformanceEnhancer(clock=ManualClock(step=1.0), bounds=PerformanceBounds(max_gc_threshold=1000))
    gc.collect()
    gc.collect()

    # Act
    changes = asyncio.run(enhancer.auto_tune_performance())
    enhancer.close()

    # Assert
    assert [(c.knob, c.old, c.new) for c in changes] == [("gc.threshold0", 700, 1000)]
    assert gc.get_threshold() == (1000, 10, 10)
