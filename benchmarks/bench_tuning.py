"""Trials per minute of keel tune: 1 worker vs 2 workers on PostgreSQL, and a cached re-run vs a cold one.

Each trial is a full walk-forward set of backtests (train and test window of
every fold). The worker runs go through ``keel tune --workers N`` (worker
processes joining one study by name), both in this one run so they see the
same machine load. Two rates are given per run: ``trials_per_minute_*`` over
the study's trial phase (first trial started to last trial finished, from the
storage: what more trials cost) and ``end_to_end_*`` over the whole command
(imports, data loading, the held-out re-run and the report included). Pruning
is off, and the 2-worker study runs the 1-worker study's parameter sets (queued
in it), so both runs do the same work. ``cpu_seconds_*`` is the CPU time of
each command with its workers: equal CPU for equal trials means the work
split without overhead, and the wall-time speedup is then bounded by the cores
the machine had free, which ``free_core_speedup`` measures just before the
runs (two processes burning CPU against one: 2.0 on an idle two-core
machine, less when other work shares it). The cache runs use one in-process tuner
whose second study, with the same seed, finds every backtest cached.

The regime runs turn the regime detector on (its defaults) and run the same
study three times: without the regime fit cache (every trial makes its own
refits, ``regime_uncached_cpu_seconds``), cold (the first trial's refits are
read by the later trials, ``regime_cold_cpu_seconds``), and again in a fresh
tuner sharing only the cold run's fit cache, so every refit is read
(``regime_cached_cpu_seconds``); CPU time of this process. ``--skip-workers`` leaves out the PostgreSQL worker runs.

Without ``--storage`` a throwaway PostgreSQL server is started on 127.0.0.1.
The default size is small (1 symbol, 3 days, 4 trials); ``--symbols``,
``--days`` and ``--trials`` scale it (the issue's study: 10 symbols, a month).
Prints one JSON line. ``--quick`` runs 2 trials and skips the 2-worker run's repeat.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pwd
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import date, timedelta
from pathlib import Path

import optuna
import yaml

from keel.config import KeelConfig, load_config
from keel.optimization.cache import CacheManager, RegimeFitCache
from keel.optimization.space import apply_values
from keel.optimization.tuner import HyperparameterTuner
from keel.strategy_engine.regime import load_fit_libraries

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"fast_period": (5, 20), "slow_period": (20, 50), "min_trend_strength": (0.1, 0.5)}


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a PostgreSQL server on a free loopback port (as user postgres when run as root); yield its URL."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    root = Path(tempfile.mkdtemp(prefix="keel-bench-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = {"check": True, "capture_output": True}
    subprocess.run([*prefix, str(binaries / "initdb"), "-D", str(data), "-U", "keel", "--auth=trust"], **run)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
        **run,
    )
    try:
        yield f"postgresql+psycopg://keel@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def _burn() -> None:
    total = 0
    for i in range(4_000_000):
        total += i * i


def free_core_speedup() -> float:
    """Return how much faster two CPU-bound processes finish their work than one does it twice."""
    context = multiprocessing.get_context("fork")

    def wall(count: int) -> float:
        processes = [context.Process(target=_burn) for _ in range(count)]
        started = time.perf_counter()
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        return time.perf_counter() - started

    return round(2 * wall(1) / wall(2), 2)


def children_cpu_seconds() -> float:
    """Return the CPU time (user and system) of every finished child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tune_seconds(
    storage: str, study: str, workers: int, trials: int, args: argparse.Namespace, config_file: Path
) -> tuple[float, float, float]:
    """Run ``keel tune``; return its wall time, the span of its study's trials and its CPU time."""
    output = Path(tempfile.mkdtemp(prefix="keel-bench-tune-"))
    command = [sys.executable, "-m", "keel.cli", "tune", "--strategy", "trend_following", "--trials", str(trials)]
    command += ["--storage", storage, "--study", study, "--workers", str(workers), "--output", str(output)]
    command += ["--config", str(config_file), "--symbols", args.symbols, "--start", args.start, "--end", args.end]
    for name, (low, high) in SPACE.items():
        command += ["--param", f"{name}={low}:{high}"]
    cpu = children_cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"keel tune --workers {workers} failed ({done.returncode}): {done.stderr[-3000:]}")
    elapsed = time.perf_counter() - started
    cpu = children_cpu_seconds() - cpu
    shutil.rmtree(output, ignore_errors=True)
    finished = optuna.load_study(study_name=study, storage=storage).trials
    span = max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)
    return elapsed, span.total_seconds(), cpu


def queue_same_trials(storage: str, source: str, target: str) -> None:
    """Queue the parameters of ``source``'s trials in a new study ``target``, so both runs do the same backtests.

    A trial's cost depends on its parameters (how often the strategy trades);
    without this the two studies' samplers would draw different trials and the
    rate ratio would partly measure which parameters each happened to draw.
    """
    study = optuna.create_study(study_name=target, storage=storage, direction="maximize")
    for trial in optuna.load_study(study_name=source, storage=storage).trials:
        study.enqueue_trial(trial.params)


def worker_runs(args: argparse.Namespace, trials: int, config_file: Path, stamp: str) -> dict[str, float]:
    """Run the study with 1 and with 2 ``keel tune`` workers on PostgreSQL; return their rates."""
    with nullcontext(args.storage) if args.storage else throwaway_postgres() as storage:
        free_cores = free_core_speedup()
        one, one_trials, one_cpu = tune_seconds(storage, f"bench-1-{stamp}", 1, trials, args, config_file)
        queue_same_trials(storage, f"bench-1-{stamp}", f"bench-2-{stamp}")
        two, two_trials, two_cpu = tune_seconds(storage, f"bench-2-{stamp}", 2, trials, args, config_file)
    return {
        "trials_per_minute_1_worker": round(60 * trials / one_trials, 2),
        "trials_per_minute_2_workers": round(60 * trials / two_trials, 2),
        "speedup_2_workers": round(one_trials / two_trials, 2),
        "end_to_end_seconds_1_worker": round(one, 2),
        "end_to_end_seconds_2_workers": round(two, 2),
        "end_to_end_speedup_2_workers": round(one / two, 2),
        "cpu_seconds_1_worker": round(one_cpu, 1),
        "cpu_seconds_2_workers": round(two_cpu, 1),
        "free_core_speedup": free_cores,
    }


def regime_runs(base: KeelConfig, storage: str, trials: int) -> dict[str, float]:
    """Run a regime-on study without the regime fit cache, cold, then cached in a tuner sharing only that cache."""
    config = apply_values(base, {"strategy.regime.enabled": True, "strategy.warmup_bars": 1440})
    uncached = HyperparameterTuner(config, storage=storage, cache=CacheManager(), study_name="bench-regime-uncached")
    uncached.regime_fits = RegimeFitCache(CacheManager(), max_entries=0)  # holds nothing: every trial fits
    cold = HyperparameterTuner(config, storage=storage, cache=CacheManager(), study_name="bench-regime-cold")
    warm = HyperparameterTuner(config, storage=storage, cache=CacheManager(), study_name="bench-regime-cached")
    warm.regime_fits = cold.regime_fits
    load_fit_libraries()  # imported before the clock starts: the cold run is charged its fits, not the imports
    seconds = []
    # The cold run goes first: any first-run cost of this process is charged to it, not to the baseline.
    for tuner in (cold, uncached, warm):
        started = time.process_time()
        tuner.optimize("trend_following", SPACE, trials=trials, finish=False)
        seconds.append(time.process_time() - started)
    fits = cold.regime_fits.metrics()
    return {
        "regime_uncached_cpu_seconds": round(seconds[1], 2),
        "regime_cold_cpu_seconds": round(seconds[0], 2),
        "regime_cached_cpu_seconds": round(seconds[2], 2),
        "regime_cold_vs_uncached_speedup": round(seconds[1] / max(seconds[0], 1e-9), 2),
        "regime_cached_speedup": round(seconds[0] / max(seconds[2], 1e-9), 2),
        "regime_fits_made": fits["misses"],
        "regime_fits_read": fits["hits"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 trials")
    parser.add_argument("--storage", help="PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--symbols", default="BTCUSDT")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--skip-workers", action="store_true", help="only the in-process cache runs")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = 2 if args.quick else args.trials
    args.start = "2025-05-10"
    args.end = (date(2025, 5, 10) + timedelta(days=args.days)).isoformat()
    days = float(args.days)
    layer = {
        "strategy": {"warmup_bars": 200, "regime": {"enabled": False}},
        "tuning": {
            "train_days": days / 3,
            "test_days": days / 6,
            "embargo_hours": 1.0,
            "holdout_days": days / 6,
            "pruner": "none",
        },
    }
    config_file = Path(tempfile.mkdtemp(prefix="keel-bench-cfg-")) / "bench.yaml"
    config_file.write_text(yaml.safe_dump(layer))
    stamp = str(int(time.time()))
    workers: dict[str, float] = {}
    if not args.skip_workers:
        workers = worker_runs(args, trials, config_file, stamp)
    base = apply_values(
        load_config("backtest", config_file, config_dir=ROOT / "config"),
        {"data.symbols": tuple(args.symbols.split(",")), "data.start": args.start, "data.end": args.end},
    )
    cache = CacheManager()
    sqlite = f"sqlite:///{config_file.parent / 'optuna.db'}"
    timings = []
    for name in ("cold", "cached"):
        tuner = HyperparameterTuner(base, storage=sqlite, cache=cache, study_name=f"bench-{name}")
        started = time.perf_counter()
        tuner.optimize("trend_following", SPACE, trials=trials, finish=False)
        timings.append(time.perf_counter() - started)
    regime = regime_runs(base, sqlite, trials)
    print(
        json.dumps(
            {
                "benchmark": "tuning",
                "symbols": args.symbols,
                "days": args.days,
                "trials": trials,
                **workers,
                **regime,
                "cold_seconds": round(timings[0], 2),
                "cached_seconds": round(timings[1], 2),
                "cached_speedup": round(timings[0] / max(timings[1], 1e-9), 1),
                "cache_hit_rate": round(cache.get_performance_metrics()["hit_rate"], 3),
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
