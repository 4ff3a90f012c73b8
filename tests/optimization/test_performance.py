"""PerformanceEnhancer: metrics of the process and bounded tuning of the bus, snapshot and GC knobs."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.integration.paper import PaperSession
from keel.optimization.performance import PerformanceBounds, PerformanceEnhancer
from keel.optimization.space import apply_values
from keel.web import create_app


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
    # Arrange: the collector's knob held still (a collection that happens to fall within the short window
    # between two calls would move it: its own test drives it)
    bus = EventBus(capacity=2)
    bus.subscribe(type(real_data.bars("BTCUSDT", 1)[0]), lambda message: None)
    enhancer = PerformanceEnhancer(bus, bounds=PerformanceBounds(max_bus_capacity=3, gc_share_threshold=1.0))
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
    # Arrange: the collector's knob held still, as above
    clock = ManualClock()
    owner = SnapshotOwner(1000)
    enhancer = PerformanceEnhancer(state=owner, clock=clock, bounds=PerformanceBounds(gc_share_threshold=1.0))

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


def paper_config(run_dir: Path, **performance: object) -> KeelConfig:
    """One day of BTCUSDT replayed fast, with the given ``performance`` settings."""
    return apply_values(
        load_config("paper", environ={}),
        {
            "data.symbols": ("BTCUSDT",),
            "data.start": "2025-05-05",
            "data.end": "2025-05-06",
            "strategy.name": "moving_average_cross",
            "paper.speed": 300.0,
            "paper.status_interval_seconds": 3600.0,
            "run.output_dir": str(run_dir),
            **{f"performance.{key}": value for key, value in performance.items()},
        },
    )


async def metrics_while_tuning(session: PaperSession, rounds: int, churn: bool = False) -> str:
    """Run the session until its enhancer tuned ``rounds`` times; return /metrics as then served.

    ``churn`` makes the loop allocate container objects meanwhile, so collections run during the rounds
    whatever the session itself allocates.
    """
    app = create_app(session.orchestrator, api_token=None, audit=lambda *_: None)
    running = asyncio.create_task(session.run())
    while (session.performance is None or session.performance.rounds < rounds) and not running.done():
        if churn:
            _ = [[index] for index in range(5_000)]
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keel.test") as client:
        body = (await client.get("/metrics")).text
    session.request_stop("test finished")
    await running
    return body


def test_a_paper_session_tunes_within_its_configured_bounds_and_exports_the_figures(
    tmp_path: Path, restored_gc
) -> None:
    # Arrange: any time in collections calls for a higher threshold, bounded at twice the current one; the
    # test allocates meanwhile, so collections happen in the rounds however little the session allocates
    gc.set_threshold(700, 10, 10)
    config = paper_config(
        tmp_path, interval_seconds=0.05, gc_share_threshold=0.0, max_gc_threshold=1400, lag_threshold_ms=60_000.0
    )
    session = PaperSession(config, tmp_path / "run")

    # Act
    body = asyncio.run(metrics_while_tuning(session, rounds=5, churn=True))

    # Assert
    assert session.performance is not None
    assert [(c.knob, c.old, c.new) for c in session.performance.changes] == [("gc.threshold0", 700, 1400)]
    assert gc.get_threshold()[0] == 1400
    assert "keel_process_resident_memory_bytes" in body and 'keel_gc_collections_total{generation="0"}' in body
    assert "keel_gc_threshold" in body and "keel_state_snapshot_every" in body


def test_the_enhancer_is_off_when_the_configuration_says_so(tmp_path: Path) -> None:
    # Arrange
    session = PaperSession(paper_config(tmp_path, enabled=False), tmp_path / "run")

    async def run_briefly() -> str:
        app = create_app(session.orchestrator, api_token=None, audit=lambda *_: None)
        running = asyncio.create_task(session.run())
        while session.bars < 50 and not running.done():
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keel.test") as client:
            body = (await client.get("/metrics")).text
        session.request_stop("test finished")
        await running
        return body

    # Act
    body = asyncio.run(run_briefly())

    # Assert
    assert session.performance is None and "keel_process_" not in body
