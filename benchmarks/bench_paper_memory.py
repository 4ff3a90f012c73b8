"""Memory and event-loop lag of a paper run: the 10 default symbols, 24 hours of bundled 1m bars, replayed flat out.

The paper configuration (``config/paper.yaml``: database journal, state
snapshots, the simulated venue with its state file, the whole pipeline) runs
``--hours`` of data (default 24, from 2025-05-06) at a replay speed so high
that no event waits for the wall clock. While it runs, the process's resident
set size (``/proc/self/statm``) is sampled with the bars replayed so far, and
every lateness the paper session's own :class:`~keel.integration.system_monitor.LoopLagProbe`
measures (the figure ``keel_event_loop_lag_seconds`` exports, a wake-up every
50 ms) is kept. A 24-hour replay takes a few seconds, so that probe sees only
a hundred or so wake-ups and its p99 is the second-worst of them; a second
probe on the same loop, started and stopped with the session's (from the start
of trading to the end of the data), wakes every 10 ms (``loop_lag_10ms_*``):
five times the samples, for a p99 that is an estimate rather than an outlier.

Reference measured in the same run: the RSS after the session was set up
and before the first bar, and the loop lag of the 10 ms probe on the idle
loop before the replay starts. Prints one JSON line: RSS peak and growth
over the second half of the bars (goal <= 2 %), peak (goal <= 300 MB), loop
lag p99 (goal <= 5 ms). ``rss_fit_worker_peak_mb`` is the regime fit worker
process's own resident set (the refits run there, off the event loop; it is
not part of the RSS figures above).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from keel.config import KeelConfig, load_config
from keel.integration.paper import PaperSession
from keel.integration.system_monitor import LoopLagProbe

START = datetime(2025, 5, 6, tzinfo=UTC)
SAMPLE_SECONDS = 0.02
FINE_LAG_SECONDS = 0.01
IDLE_SECONDS = 1.0
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | str = "self") -> int:
    """Return the resident set size of this process (or of process ``pid``; 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE
    except FileNotFoundError:
        return 0


def worker_rss_bytes(session: PaperSession) -> int:
    """Return the resident set size of the session's regime fit worker processes (0 without one)."""
    worker = session.fit_worker
    return 0 if worker is None else rss_bytes(worker.pid)


class RecordingProbe(LoopLagProbe):
    """The paper session's loop-lag probe, keeping every lateness it measures."""

    def __init__(self, interval_seconds: float = 0.05) -> None:
        super().__init__(interval_seconds)
        self.lateness: list[float] = []

    def record(self, lateness_seconds: float) -> None:
        super().record(lateness_seconds)
        self.lateness.append(max(0.0, lateness_seconds))


class SessionProbe(RecordingProbe):
    """The session's probe, running a finer one beside it: both measure exactly while the session trades."""

    def __init__(self, companion: RecordingProbe) -> None:
        super().__init__()
        self.companion = companion

    async def run(self) -> None:
        companion = asyncio.create_task(self.companion.run())
        try:
            await super().run()
        finally:
            companion.cancel()


def paper_config(output_dir: Path, hours: float) -> KeelConfig:
    """The paper configuration over ``hours`` of the 10 default symbols, replayed as fast as it goes."""
    config = load_config("paper", environ={})
    end = START + timedelta(hours=hours)
    data = config.data.model_validate({**config.data.model_dump(), "start": START.isoformat(), "end": end.isoformat()})
    run = config.run.model_copy(update={"output_dir": output_dir})
    paper = config.paper.model_copy(update={"speed": 1e9, "status_interval_seconds": 3600.0})
    return config.model_copy(update={"data": data, "paper": paper, "run": run})


async def measure(
    session: PaperSession,
) -> tuple[list[tuple[int, int]], list[float], RecordingProbe, RecordingProbe, int]:
    """Run the session; return (bars, RSS) samples, idle lateness, the session's and the 10 ms probe, worker peak."""
    idle = RecordingProbe(FINE_LAG_SECONDS)
    idle_task = asyncio.create_task(idle.run())
    await asyncio.sleep(IDLE_SECONDS)
    idle_task.cancel()
    fine = RecordingProbe(FINE_LAG_SECONDS)
    probe = SessionProbe(fine)
    session.loop_lag = probe
    samples: list[tuple[int, int]] = [(0, rss_bytes())]
    worker_peak = 0
    run = asyncio.create_task(session.run())
    while not run.done():
        samples.append((session.bars, rss_bytes()))
        worker_peak = max(worker_peak, worker_rss_bytes(session))
        await asyncio.sleep(SAMPLE_SECONDS)
    await run
    return samples, idle.lateness, probe, fine, worker_peak


def summarize(samples: list[tuple[int, int]], total_bars: int) -> dict[str, float]:
    """Return the RSS figures: after set-up, peak, at the half-way bar, at the last bar, growth over the second half."""
    mb = 1024 * 1024
    running = [(bars, rss) for bars, rss in samples if bars > 0]
    half = next(rss for bars, rss in running if bars >= total_bars // 2)
    last = max(running)[1]
    return {
        "rss_after_setup_mb": round(samples[0][1] / mb, 1),
        "rss_peak_mb": round(max(rss for _, rss in samples) / mb, 1),
        "rss_half_way_mb": round(half / mb, 1),
        "rss_end_mb": round(last / mb, 1),
        "rss_growth_second_half_percent": round((last - half) / half * 100, 2),
    }


def lag_figures(name: str, lateness: list[float]) -> dict[str, float | int | None]:
    """Return a probe's lateness p99 and max (ms), its sample count and how many samples were over 5 ms."""
    if not lateness:
        return {f"{name}_p99_ms": None, f"{name}_max_ms": None, f"{name}_samples": 0, f"{name}_over_5ms": 0}
    return {
        f"{name}_p99_ms": round(float(np.percentile(lateness, 99)) * 1e3, 2),
        f"{name}_max_ms": round(max(lateness) * 1e3, 2),
        f"{name}_samples": len(lateness),
        f"{name}_over_5ms": sum(late > 0.005 for late in lateness),
    }


def main() -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="hours of bars to replay (default 24)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-paper-memory-") as folder:
        config = paper_config(Path(folder), args.hours)
        session = PaperSession(config, Path(folder) / "run")
        gc.collect()
        started = time.perf_counter()
        samples, idle, probe, fine, worker_peak = asyncio.run(measure(session))
        seconds = time.perf_counter() - started - IDLE_SECONDS
    bars = session.bars
    result = {
        "benchmark": "paper_memory",
        "symbols": len(config.data.symbols),
        "hours": args.hours,
        "bars": bars,
        "events": session.events,
        "seconds": round(seconds, 1),
        **summarize(samples, bars),
        "rss_fit_worker_peak_mb": round(worker_peak / (1024 * 1024), 1),
        **lag_figures("loop_lag", probe.lateness),
        **lag_figures("loop_lag_10ms", fine.lateness),
        "reference_idle_loop_lag_p99_ms": round(float(np.percentile(idle, 99)) * 1e3, 2) if idle else None,
        "goal_rss_mb": 300,
        "goal_rss_growth_percent": 2,
        "goal_loop_lag_p99_ms": 5,
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
