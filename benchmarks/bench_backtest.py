"""Bars per second of the skeleton backtest on the bundled BTCUSDT 1m bars (43k bars).

Runs the full pipeline (feed -> bus -> simulated exchange -> moving-average
cross -> equal weight -> risk -> order manager -> fills -> positions) and, in
the same process, a plain Python loop computing the same strategy's signals
on the same closes with no pipeline at all, as the reference for the cost of
the event-driven machinery (``bench_vs_backtrader.py`` measures backtrader
on the same bars).

One more run, not timed for the rate, times every bus handler call and
reports where a bar's time goes: ``per_bar_us`` gives, for each handler that
costs at least 0.1 microsecond a bar, its time over the run divided by the
bars (the bus's own dispatch included, per call), and ``outside_handlers_us``
the rest of that run (the feed, the clock, the bus's queue, the equity curve).
The clock reads of that run add about 0.1 microsecond a handler call.

Prints one JSON line. ``--quick`` runs one day of data once (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import keel
from keel.backtest import BacktestEngine
from keel.config import KeelConfig, load_config
from keel.integration.replay import RecordedRun
from keel.market_data.feeds import use_prepared_data
from keel.market_data.loaders import load_ohlcv

ROOT = Path(__file__).resolve().parents[1]


def plain_loop_bars_per_second(closes: list[float], fast: int, slow: int) -> float:
    started = time.perf_counter()
    fast_window: deque[float] = deque()
    slow_window: deque[float] = deque()
    fast_sum = slow_sum = 0.0
    direction = 0
    signals = 0
    for close in closes:
        fast_window.append(close)
        slow_window.append(close)
        fast_sum += close
        slow_sum += close
        if len(fast_window) > fast:
            fast_sum -= fast_window.popleft()
        if len(slow_window) > slow:
            slow_sum -= slow_window.popleft()
        if len(slow_window) == slow:
            new = 1 if fast_sum / fast > slow_sum / slow else -1
            if new != direction:
                direction = new
                signals += 1
    return len(closes) / (time.perf_counter() - started)


def handler_breakdown(config: KeelConfig) -> tuple[dict[str, float], float]:
    """Replay once timing every handler call; return each handler's microseconds a bar and the rest's."""
    with use_prepared_data(BacktestEngine.prepared_files):
        run = RecordedRun(config, measure_latency=True)
        started = time.perf_counter_ns()
        run.replay()
        elapsed = time.perf_counter_ns() - started
    stats = run.pipeline.bus.handler_stats()
    total_ns: dict[str, int] = {}
    for handler in stats:  # a component may subscribe one name to several message types
        total_ns[handler.name] = total_ns.get(handler.name, 0) + handler.total_ns
    per_bar = {name: ns / run.bars / 1e3 for name, ns in total_ns.items() if ns / run.bars >= 100}
    outside = (elapsed - sum(total_ns.values())) / run.bars / 1e3
    return {name: round(us, 2) for name, us in sorted(per_bar.items(), key=lambda kv: -kv[1])}, round(outside, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one day, one repeat")
    args = parser.parse_args()
    # The walking skeleton's pipeline: the moving-average cross and equal weights.
    environment = {"KEEL_STRATEGY__NAME": "moving_average_cross", "KEEL_PORTFOLIO__ALLOCATOR": "equal_weight"}
    config = load_config("backtest", config_dir=ROOT / "config", environ=environment)
    config = config.model_copy(update={"data": config.data.model_copy(update={"root": ROOT / "data"})})
    config = config.model_copy(
        update={"exchange": config.exchange.model_copy(update={"instruments": ROOT / "config/instruments.yaml"})}
    )
    end = "2025-05-06" if args.quick else None
    repeats = 1 if args.quick else 3
    engine = BacktestEngine(config)
    rates, bars, trades = [], 0, 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = engine.run(symbols=["BTCUSDT"], end=end)
        elapsed = time.perf_counter() - started
        bars, trades = result["bars_processed"], result["n_trades"]
        rates.append(bars / elapsed)
    closes = load_ohlcv(ROOT / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz").frame["close"].tolist()
    closes = closes[:bars]
    reference = statistics.median(
        plain_loop_bars_per_second(closes, config.strategy.fast_period, config.strategy.slow_period)
        for _ in range(repeats)
    )
    keel_rate = statistics.median(rates)
    single = config.data.model_copy(update={"symbols": ("BTCUSDT",), "end": result.config.data.end})
    per_bar, outside = handler_breakdown(config.model_copy(update={"data": single}))
    print(
        json.dumps(
            {
                "benchmark": "backtest",
                "symbol": "BTCUSDT",
                "bars": bars,
                "trades": trades,
                "repeats": repeats,
                "keel_backtest_bars_per_s": round(keel_rate),
                "plain_loop_signals_bars_per_s": round(reference),
                "pipeline_cost_ratio": round(reference / keel_rate, 1),
                "per_bar_us": per_bar,
                "outside_handlers_us": outside,
                "keel_compiled": keel.COMPILED,
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
