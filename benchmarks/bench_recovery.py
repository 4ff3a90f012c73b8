"""How long a restart takes to recover a paper session: snapshot, journal replay, reconciliation.

A paper session trades real BTCUSDT and ETHUSDT 1m bars with the fast
moving-average cross (about 600 orders a day) until its data ends, leaving its
journal, snapshots and the venue's own state behind. The benchmark then
rebuilds the pipeline as a restart does and measures:

- ``restore_ms``: the newest snapshot plus the journal after it
  (``persistence.snapshot_every`` = 1000, the default);
- ``full_replay_ms``, the reference measured in the same run: the whole
  journal replayed without any snapshot;
- ``reconcile_ms``: querying the venue, applying what it has and keel has not,
  comparing positions and the balance.

Goal: a day of trading recovers in under a second (restore + reconcile).
Prints one JSON line. ``--quick`` trades six hours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from keel.api import VenueStore
from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.instruments import load_instruments
from keel.core.log import configure_logging
from keel.core.messages import SessionStarted
from keel.integration.paper import PaperSession
from keel.integration.pipeline import Pipeline, build_pipeline
from keel.integration.recovery import SessionPlan, reconcile, restore_state
from keel.persistence import Database, Journal, Snapshots

ROOT = Path(__file__).resolve().parents[1]


def session_config(folder: Path, hours: int) -> KeelConfig:
    config = load_config("paper", environ={})
    data = config.data.model_validate(
        {
            **config.data.model_dump(),
            "root": ROOT / "data",
            "symbols": ("BTCUSDT", "ETHUSDT"),
            "start": "2025-05-05T00:00:00Z",
            "end": f"2025-05-{5 + hours // 24:02d}T{hours % 24:02d}:00:00Z",
        }
    )
    strategy = config.strategy.model_copy(update={"name": "moving_average_cross", "fast_period": 3, "slow_period": 8})
    return config.model_copy(
        update={
            "data": data,
            "strategy": strategy,
            "exchange": config.exchange.model_copy(update={"instruments": ROOT / "config" / "instruments.yaml"}),
            "paper": config.paper.model_copy(update={"speed": 1.0e9, "status_interval_seconds": 3600.0}),
            "run": config.run.model_copy(update={"output_dir": folder}),
        }
    )


def rebuilt(config: KeelConfig) -> Pipeline:
    """A pipeline as a restart builds it, its venue loaded from the venue's own store."""
    instruments = load_instruments(config.exchange.instruments)
    pipeline = build_pipeline(config, instruments, EventBus(config.bus.capacity), SimulatedClock(0))
    store = VenueStore(Path(config.run.output_dir) / config.paper.venue_state_file)
    store.load_into(pipeline.exchange)
    store.close()
    return pipeline


def timed_restore(config: KeelConfig, journal: Journal, snapshots: Snapshots, plan: SessionPlan) -> tuple[float, int]:
    pipeline = rebuilt(config)
    started = time.perf_counter()
    replayed = restore_state(pipeline, journal, snapshots, plan)
    return (time.perf_counter() - started) * 1e3, replayed


async def timed_reconcile(pipeline: Pipeline, since_ns: int) -> float:
    bus_task = asyncio.create_task(pipeline.bus.run())
    pipeline.start()
    await pipeline.bus.join()
    started = time.perf_counter()
    await reconcile(pipeline, since_ns)
    elapsed = (time.perf_counter() - started) * 1e3
    pipeline.bus.stop()
    await bus_task
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="trade six hours, measure once")
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configure_logging("WARNING")
    hours, repeats = (6, 1) if args.quick else (args.hours, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        config = session_config(Path(folder), hours)
        session = PaperSession(config, Path(folder) / "run")
        asyncio.run(session.run())
        database = Database(f"sqlite:///{Path(folder) / 'keel.db'}")
        journal, snapshots = Journal(database), Snapshots(database)
        first_sequence, started = journal.entries_of(SessionStarted)[0]
        plan = SessionPlan(session=1, recover=True, first_sequence=first_sequence, start_ts=started.ts_event)
        empty = Database(f"sqlite:///{Path(folder) / 'empty.db'}")
        empty.migrate()
        restore, full, reconciling = [], [], []
        for _ in range(repeats):
            elapsed, _replayed = timed_restore(config, journal, snapshots, plan)
            restore.append(elapsed)
            elapsed, journal_entries = timed_restore(config, journal, Snapshots(empty), plan)
            full.append(elapsed)
            pipeline = rebuilt(config)
            restore_state(pipeline, journal, snapshots, plan)
            reconciling.append(asyncio.run(timed_reconcile(pipeline, plan.start_ts)))
        orders = len(session.pipeline.orders.orders)
        fills = session.pipeline.positions.fills
        database.dispose()
        empty.dispose()
    recovery = statistics.median(restore) + statistics.median(reconciling)
    print(
        json.dumps(
            {
                "benchmark": "recovery",
                "hours_traded": hours,
                "orders": orders,
                "fills": fills,
                "journal_entries": journal_entries,
                "restore_ms": round(statistics.median(restore), 2),
                "full_replay_ms": round(statistics.median(full), 2),
                "reconcile_ms": round(statistics.median(reconciling), 2),
                "recovery_ms": round(recovery, 2),
                "goal_ms_per_day": 1000.0,
                "meets_goal": recovery * 24 / hours <= 1000.0,
                "repeats": repeats,
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
