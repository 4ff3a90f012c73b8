"""keel's backtest throughput against backtrader's, in the same run on the same bundled bars.

Measures, in one process, interleaved so machine load hits all alike:

- backtrader 1.9 (the ``bench`` extra: ``pip install -e '.[bench]'``) running an
  SMA(20/60) cross with orders (long above, short below, 95 % of the account)
  on the bundled BTCUSDT 1m month (42,747 bars), with its default preloaded,
  vectorized ``runonce`` mode, in bars per second;
- keel's 1-symbol moving-average cross (20/60) on the same bars through the
  whole pipeline: feed, bus, simulated venue with funding, strategy, equal
  weight, the full risk layer (sizing, VaR, leverage, drawdown), router, order
  manager, positions; bars per second and its ratio to backtrader's
  (goal: >= 5);
- keel's default pipeline (10 symbols; four strategies, regimes, Markowitz,
  risk, router, simulated venue with funding) over ``--pipeline-days`` days of
  1m bars, in bar events per second, and its ratio to backtrader's 1-symbol
  bars per second (goal: >= 2): once with everything computed in the replay
  (per CPU second, as below), and once as ``keel backtest`` runs it, the
  regime detectors (refits and per-bar views) and the bar-only strategies
  run ahead in the worker process, per wall-clock second against
  backtrader's wall-clock rate (``keel_pipeline_wall_*``, the median of
  ``--repeats`` runs), with the CPU seconds of both processes in that run
  beside it (``keel_pipeline_fit_worker_cpu_s`` is the worker's share).

Rates are per CPU second of this process (``time.process_time``) over the
whole run, so other load on a shared machine skews neither side. Backtrader's
runs start from a data frame already in memory; keel's backtests of one
process parse each data file once (``BacktestEngine.prepared_files``, as a
notebook's or a tuning job's do), so the first 1-symbol run and the in-replay
pipeline run (the other nine symbols) include parsing, the median 1-symbol
rate and the worker run do not. Libraries are imported before either side's clock starts:
backtrader's ``import backtrader``, and the regime fit libraries keel imports
lazily on its first refit (arch pulls in statsmodels and numba, about 1.4 s of
CPU once per process); ``keel_fit_libraries_import_cpu_s`` reports that
one-time cost. ``keel_compiled`` says whether keel's per-bar modules ran
compiled (see ``keel.compiled_modules``). Prints one JSON line.
``--quick`` runs one day of each, once (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

import keel
from keel.backtest import BacktestEngine
from keel.config import KeelConfig, load_config
from keel.core.log import configure_logging
from keel.market_data.loaders import load_ohlcv
from keel.strategy_engine.regime import load_fit_libraries

ROOT = Path(__file__).resolve().parents[1]
BTCUSDT_FILE = ROOT / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz"
MOVING_AVERAGE = {"KEEL_STRATEGY__NAME": "moving_average_cross", "KEEL_PORTFOLIO__ALLOCATOR": "equal_weight"}


def backtrader_frame(bars: int | None) -> pd.DataFrame:
    """The BTCUSDT bars as the data frame backtrader's PandasData reads (a datetime index)."""
    frame = load_ohlcv(BTCUSDT_FILE).frame
    frame = frame.iloc[:bars] if bars is not None else frame
    index = pd.to_datetime(frame["open_time_ms"], unit="ms")
    return pd.DataFrame(
        {c: frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}, index=index.to_numpy()
    )


def run_backtrader(frame: pd.DataFrame, fast: int, slow: int) -> tuple[float, float, int]:
    """Run backtrader's SMA cross with orders; return (bars per CPU second, per wall second, orders)."""
    import backtrader as bt

    class SmaCross(bt.Strategy):  # type: ignore[misc]
        params = (("fast", fast), ("slow", slow))

        def __init__(self) -> None:
            self.crossover = bt.ind.CrossOver(bt.ind.SMA(period=self.p.fast), bt.ind.SMA(period=self.p.slow))
            self.orders = 0

        def next(self) -> None:
            if self.crossover > 0:
                self.order_target_percent(target=0.95)
                self.orders += 1
            elif self.crossover < 0:
                self.order_target_percent(target=-0.95)
                self.orders += 1

    started, wall = time.process_time(), time.perf_counter()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame))
    cerebro.addstrategy(SmaCross)
    cerebro.broker.setcash(10_000_000.0)
    cerebro.broker.setcommission(commission=0.0005)
    strategy = cerebro.run()[0]
    cpu, wall = time.process_time() - started, time.perf_counter() - wall
    return len(frame) / cpu, len(frame) / wall, strategy.orders


def keel_config(environ: dict[str, str]) -> KeelConfig:
    return load_config("backtest", config_dir=ROOT / "config", environ=environ)


def run_keel(config: KeelConfig, symbols: list[str] | None, end: str | None) -> tuple[float, dict[str, Any]]:
    """Run one keel backtest; return (bar events per CPU second, metrics)."""
    started = time.process_time()
    result = BacktestEngine(config).run(symbols=symbols, end=end)
    return result["bars_processed"] / (time.process_time() - started), dict(result.metrics)


def run_keel_wall(config: KeelConfig, end: str) -> tuple[float, float, float, dict[str, Any]]:
    """Run the pipeline as ``keel backtest`` does.

    Returns bar events per wall second, the CPU seconds of this process and of the fit worker, and the metrics.
    """
    started, wall, worker = time.process_time(), time.perf_counter(), children_cpu_seconds()
    result = BacktestEngine(config).run(end=end)
    seconds = time.perf_counter() - wall
    cpu = time.process_time() - started
    return result["bars_processed"] / seconds, cpu, children_cpu_seconds() - worker, dict(result.metrics)


def children_cpu_seconds() -> float:
    """Return the CPU seconds the running child processes of this one have used (the fit worker), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one day of each, one repeat")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of the 1-symbol pair and of the pipeline with its worker (medians)"
    )
    parser.add_argument("--pipeline-days", type=float, default=7.0, help="days of the 10-symbol pipeline run")
    args = parser.parse_args()
    configure_logging("ERROR")  # the data-gap warnings of the bundled month, on stderr
    started = time.process_time()
    load_fit_libraries()
    import_seconds = time.process_time() - started
    repeats = 1 if args.quick else args.repeats
    moving_average = keel_config(MOVING_AVERAGE)
    default = keel_config({})
    inline_fits = keel_config({"KEEL_RUN__REGIME_FIT_WORKER": "false"})
    first_bar = datetime.fromtimestamp(int(load_ohlcv(BTCUSDT_FILE).frame["open_time_ms"].iloc[0]) / 1000, UTC)
    single_end = (first_bar + timedelta(days=1)).isoformat() if args.quick else None
    pipeline_days = 1.0 if args.quick else args.pipeline_days
    pipeline_end = (first_bar + timedelta(days=pipeline_days)).isoformat()

    backtrader_rates, backtrader_wall_rates, keel_rates = [], [], []
    metrics: dict[str, Any] = {}
    orders = 0
    for _ in range(repeats):
        rate, metrics = run_keel(moving_average, ["BTCUSDT"], single_end)
        keel_rates.append(rate)
        frame = backtrader_frame(metrics["bars_processed"])
        rate, wall_rate, orders = run_backtrader(
            frame, moving_average.strategy.fast_period, moving_average.strategy.slow_period
        )
        backtrader_rates.append(rate)
        backtrader_wall_rates.append(wall_rate)
    pipeline_rate, pipeline = run_keel(inline_fits, None, pipeline_end)
    run_keel_wall(default, (first_bar + timedelta(days=1)).isoformat())  # the worker starts and loads its libraries
    walls = []
    for _ in range(repeats):
        wall_run = run_keel_wall(default, pipeline_end)
        walled = wall_run[3]
        if walled["n_orders"] != pipeline["n_orders"] or walled["total_return"] != pipeline["total_return"]:
            raise SystemExit("the pipeline traded differently with its detectors and strategies in the worker process")
        walls.append(wall_run)
    # The run of the median wall-clock rate, with its own CPU seconds.
    wall_rate, wall_cpu, worker_cpu, _ = sorted(walls, key=lambda run: run[0])[len(walls) // 2]

    backtrader_rate = statistics.median(backtrader_rates)
    backtrader_wall_rate = statistics.median(backtrader_wall_rates)
    keel_rate = statistics.median(keel_rates)
    print(
        json.dumps(
            {
                "benchmark": "vs_backtrader",
                "bars": metrics["bars_processed"],
                "repeats": repeats,
                "backtrader_sma_cross_bars_per_s": round(backtrader_rate),
                "backtrader_orders": orders,
                "keel_ma_cross_bars_per_s": round(keel_rate),
                "keel_ma_cross_orders": metrics["n_orders"],
                "keel_ma_cross_vs_backtrader": round(keel_rate / backtrader_rate, 2),
                "pipeline_symbols": len(pipeline["symbols"]),
                "pipeline_days": pipeline_days,
                "pipeline_bar_events": pipeline["bars_processed"],
                "pipeline_orders": pipeline["n_orders"],
                "keel_pipeline_bar_events_per_s": round(pipeline_rate),
                "keel_pipeline_vs_backtrader": round(pipeline_rate / backtrader_rate, 2),
                "backtrader_sma_cross_wall_bars_per_s": round(backtrader_wall_rate),
                "keel_pipeline_wall_bar_events_per_s": round(wall_rate),
                "keel_pipeline_wall_vs_backtrader_wall": round(wall_rate / backtrader_wall_rate, 2),
                "keel_pipeline_wall_cpu_s": round(wall_cpu, 2),
                "keel_pipeline_fit_worker_cpu_s": round(worker_cpu, 2),
                "keel_fit_libraries_import_cpu_s": round(import_seconds, 2),
                "keel_compiled": keel.COMPILED,
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
