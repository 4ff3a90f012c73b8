"""PerformanceEnhancer: process resource metrics and bounded tuning of the knobs that trade speed for work.

Metrics: CPU share since the last reading, resident memory, event-loop lag
(how late a scheduled callback runs), garbage-collector counts and pauses,
and the bus's depth, high-water mark and conflation count.

Knobs, each moved only within its configured bounds:

- ``bus.capacity``: market data is conflated once this many messages are
  queued; doubled while conflation happens (the process keeps up less well
  than the feed arrives), never above ``max_bus_capacity``.
- ``snapshot_every`` of the state manager: journaled events between state
  snapshots; doubled while the event loop lags (fewer snapshots, at the price
  of a longer replay after a crash), brought back toward its configured value
  when the lag is gone, never above ``max_snapshot_every``.
- the collector's generation-0 threshold: doubled while collections take a
  noticeable share of the time, never above ``max_gc_threshold``.

A paper session runs :meth:`PerformanceEnhancer.run` (``performance`` section
of the configuration: on by default, ``enabled: false`` turns it off,
``auto_tune: false`` keeps the metrics and leaves the knobs alone), and its
orchestrator exports :meth:`PerformanceEnhancer.resource_metrics` on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from keel.core.bus import EventBus

_log = structlog.get_logger("keel.performance")


class SnapshotKnob(Protocol):
    """What owns a snapshot interval (the state manager)."""

    snapshot_every: int


@dataclass(frozen=True, slots=True)
class PerformanceBounds:
    """Limits of the automatic tuning and the thresholds that trigger it."""

    max_bus_capacity: int = 100_000
    max_snapshot_every: int = 20_000
    max_gc_threshold: int = 50_000
    lag_threshold_ms: float = 50.0
    gc_share_threshold: float = 0.05


@dataclass(frozen=True, slots=True)
class KnobChange:
    """One knob moved by :meth:`PerformanceEnhancer.auto_tune_performance`."""

    knob: str
    old: int
    new: int
    reason: str


class PerformanceEnhancer:
    """Measure the process and tune its knobs within bounds.

    Parameters
    ----------
    bus
        The event bus (depth, conflation, capacity).
    state
        The state manager whose ``snapshot_every`` may be tuned; None leaves it alone.
    bounds
        Limits and thresholds.
    clock, cpu_clock
        Wall and process-CPU clocks in seconds (``time.monotonic``, ``time.process_time``).
    """

    def __init__(
        self,
        bus: EventBus | None = None,
        state: SnapshotKnob | None = None,
        bounds: PerformanceBounds | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.bus = bus
        self.state = state
        self.bounds = bounds if bounds is not None else PerformanceBounds()
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._last_wall = clock()
        self._last_cpu = cpu_clock()
        self._configured_snapshot_every = None if state is None else state.snapshot_every
        self._last_conflated = 0 if bus is None else bus.conflated
        self.lag_ms = 0.0
        self.max_lag_ms = 0.0
        self._gc_seconds = 0.0
        self._gc_started: float | None = None
        self._gc_window_start = clock()
        gc.callbacks.append(self._on_gc)
        self.changes: list[KnobChange] = []
        self.rounds = 0

    def close(self) -> None:
        """Stop timing the garbage collector."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = self._clock()
        elif self._gc_started is not None:
            self._gc_seconds += self._clock() - self._gc_started
            self._gc_started = None

    def schedule_lag_probe(self, loop: asyncio.AbstractEventLoop, delay: float = 0.0) -> asyncio.Handle:
        """Schedule one callback ``delay`` seconds ahead; when it runs, its lateness becomes the lag."""
        due = self._clock() + delay
        return loop.call_later(delay, self.record_lag, due)

    def record_lag(self, due: float) -> None:
        """Record how late a callback due at ``due`` ran."""
        self.lag_ms = max(0.0, (self._clock() - due) * 1000.0)
        self.max_lag_ms = max(self.max_lag_ms, self.lag_ms)

    async def monitor_event_loop(self, interval: float = 1.0) -> None:
        """Probe the running loop's lag every ``interval`` seconds until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            self.schedule_lag_probe(loop)
            await asyncio.sleep(interval)

    async def run(self, interval_seconds: float, *, auto_tune: bool = True, probe_seconds: float = 1.0) -> None:
        """Probe the loop's lag every ``probe_seconds`` and tune every ``interval_seconds`` until cancelled."""
        loop = asyncio.get_running_loop()
        probe = min(probe_seconds, interval_seconds)
        next_tune = self._clock() + interval_seconds
        while True:
            self.schedule_lag_probe(loop)
            await asyncio.sleep(probe)
            if self._clock() < next_tune:
                continue
            next_tune = self._clock() + interval_seconds
            self.rounds += 1
            if not auto_tune:
                continue
            for change in await self.auto_tune_performance():
                _log.info("performance knob moved", knob=change.knob, old=change.old, new=change.new, why=change.reason)

    def resource_metrics(self) -> dict[str, float]:
        """Return the metrics as flat numbers (the ``process`` part of ``/metrics``)."""
        metrics = self.get_real_time_metrics()
        flat = {
            "cpu_percent": float(metrics["cpu_percent"]),
            "resident_memory_bytes": float(metrics["rss_bytes"]),
            "max_resident_memory_bytes": float(metrics["max_rss_bytes"]),
            "event_loop_lag_seconds": metrics["event_loop_max_lag_ms"] / 1000.0,
            "gc_time_share": float(metrics["gc_time_share"]),
            "gc_threshold": float(metrics["gc_threshold"][0]),
        }
        for generation, collections in enumerate(metrics["gc_collections"]):
            flat[f"gc_collections_{generation}"] = float(collections)
        if "snapshot_every" in metrics:
            flat["snapshot_every"] = float(metrics["snapshot_every"])
        return flat

    def get_real_time_metrics(self) -> dict[str, Any]:
        """Return CPU share since the last call, RSS, event-loop lag, GC and bus figures."""
        wall, cpu = self._clock(), self._cpu_clock()
        elapsed = wall - self._last_wall
        cpu_share = (cpu - self._last_cpu) / elapsed if elapsed > 0 else 0.0
        self._last_wall, self._last_cpu = wall, cpu
        window = wall - self._gc_window_start
        metrics: dict[str, Any] = {
            "cpu_percent": round(100.0 * cpu_share, 2),
            "rss_bytes": resident_memory_bytes(),
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "event_loop_lag_ms": round(self.lag_ms, 3),
            "event_loop_max_lag_ms": round(self.max_lag_ms, 3),
            "gc_counts": list(gc.get_count()),
            "gc_collections": [s["collections"] for s in gc.get_stats()],
            "gc_threshold": list(gc.get_threshold()),
            "gc_time_share": self._gc_seconds / window if window > 0 else 0.0,
        }
        if self.bus is not None:
            metrics.update(
                {
                    "bus_depth": self.bus.depth,
                    "bus_high_water_mark": self.bus.high_water_mark,
                    "bus_capacity": self.bus.capacity,
                    "bus_conflated": self.bus.conflated,
                }
            )
        if self.state is not None:
            metrics["snapshot_every"] = self.state.snapshot_every
        return metrics

    async def auto_tune_performance(self) -> list[KnobChange]:
        """Move the knobs the metrics call for, within bounds; return what changed."""
        metrics = self.get_real_time_metrics()
        changes = [*self._tune_bus(), *self._tune_snapshots(metrics), *self._tune_gc(metrics)]
        self._gc_seconds, self._gc_window_start = 0.0, self._clock()
        self.max_lag_ms = 0.0
        self.changes.extend(changes)
        return changes

    def _tune_bus(self) -> list[KnobChange]:
        if self.bus is None:
            return []
        conflated = self.bus.conflated - self._last_conflated
        self._last_conflated = self.bus.conflated
        old = self.bus.capacity
        if conflated <= 0 or old >= self.bounds.max_bus_capacity:
            return []
        self.bus.capacity = min(old * 2, self.bounds.max_bus_capacity)
        return [KnobChange("bus.capacity", old, self.bus.capacity, f"{conflated} market-data messages conflated")]

    def _tune_snapshots(self, metrics: dict[str, Any]) -> list[KnobChange]:
        if self.state is None or self._configured_snapshot_every is None:
            return []
        old = self.state.snapshot_every
        lagging = metrics["event_loop_max_lag_ms"] > self.bounds.lag_threshold_ms
        if lagging and old < self.bounds.max_snapshot_every:
            new, reason = min(old * 2, self.bounds.max_snapshot_every), "event loop lagging"
        elif not lagging and old > self._configured_snapshot_every:
            new, reason = max(old // 2, self._configured_snapshot_every), "event loop keeping up"
        else:
            return []
        self.state.snapshot_every = new
        return [KnobChange("state.snapshot_every", old, new, reason)]

    def _tune_gc(self, metrics: dict[str, Any]) -> list[KnobChange]:
        threshold = gc.get_threshold()
        old = threshold[0]
        if metrics["gc_time_share"] <= self.bounds.gc_share_threshold or old >= self.bounds.max_gc_threshold:
            return []
        new = min(old * 2, self.bounds.max_gc_threshold)
        gc.set_threshold(new, *threshold[1:])
        return [KnobChange("gc.threshold0", old, new, f"collections took {metrics['gc_time_share']:.1%} of the time")]


def resident_memory_bytes() -> int:
    """Return the process's current resident memory (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
