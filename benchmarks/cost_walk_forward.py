"""Walk-forward choice of the cost defaults (no-trade horizon, resize band, execution) on the recorded bars.

Each candidate is a set of configuration overrides. Every candidate runs on
every fold window; the candidate chosen for a test window is the one with the
best net P&L on the windows before it (the first window is training only), so
no choice sees the window it is judged on. ``--budget 3`` makes the choice
among the candidates that traded at most a third of ``today``'s notional on
those windows (the issue's turnover goal). Prints one JSON line per run, the
walk-forward table, and writes ``walk_forward.json`` under ``--output``.

    .venv/bin/python benchmarks/cost_walk_forward.py --output runs/costs --jobs 2 --budget 3 \\
        --windows 2025-05-05,2025-05-12,2025-05-19,2025-05-26,2025-06-02

``--summarize DIR`` prints the before/after figures of finished ``keel backtest`` folders instead.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing
import sys
from pathlib import Path
from typing import Any

from keel.backtest import BacktestEngine
from keel.config import load_config

# The optimizer's defaults before this walk-forward chose risk aversion 250 and no scheduled rebalance;
# every candidate measured on them pins them, so its figures stay reproducible (trend following's windows
# likewise: pinned_trend).
PREVIOUS = {"risk_aversion": 100.0, "rebalance_interval_minutes": 480}
TODAY = {"portfolio": {"no_trade_band": False, **PREVIOUS}, "execution": {"default_style": "AGGRESSIVE"}}


def slower_trend(factor: int) -> dict[str, int]:
    """Return trend following's default windows ``factor`` times as long (the fast EMA at most its bound, 100)."""
    return {
        "fast_period": min(40 * factor, 100),
        "slow_period": 160 * factor,
        "channel_period": 160 * factor,
        "atr_period": 60 * factor,
    }


def candidate(
    horizon: int = 60,
    threshold: float = 0.1,
    smallest: float = 0.01,
    hold: bool = False,
    passive: tuple[float, float] | None = None,
    cadence: int = 1,
    persistence: int = 1,
    step: float = 0.0,
) -> dict[str, Any]:
    """Return the overrides of one candidate: band horizon, resize threshold, smallest order, hold band, execution.

    ``passive`` is ``(passive_time_limit_seconds, passive_adverse_bps)`` of PASSIVE execution; None: AGGRESSIVE.
    ``cadence`` and ``persistence`` are the optimizer's decision interval and signal persistence, bars;
    ``step`` its target-weight grid.
    """
    execution: dict[str, Any] = {"default_style": "AGGRESSIVE"}
    if passive is not None:
        execution = {
            "default_style": "PASSIVE",
            "passive_time_limit_seconds": passive[0],
            "passive_adverse_bps": passive[1],
        }
    portfolio = {
        **PREVIOUS,
        "no_trade_band": True,
        "edge_horizon_bars": horizon,
        "rebalance_threshold": threshold,
        "min_order_weight": smallest,
        "hold_band": hold,
        "decision_interval_bars": cadence,
        "signal_persistence_bars": persistence,
        "weight_step": step,
    }
    return {"portfolio": portfolio, "execution": execution}


_MEASURED: dict[str, dict[str, Any]] = {
    "today": TODAY,
    "h60": candidate(),
    "h50": candidate(horizon=50),
    "h45": candidate(horizon=45),
    "h40": candidate(horizon=40),
    "h60-r50": candidate(threshold=0.5),
    "h45-r50": candidate(horizon=45, threshold=0.5),
    "h60-hold": candidate(hold=True),
    "h60-p60a10": candidate(passive=(60.0, 10.0)),
    "h50-p60a10": candidate(horizon=50, passive=(60.0, 10.0)),
    "h45-p60a10": candidate(horizon=45, passive=(60.0, 10.0)),
    "h40-p60a10": candidate(horizon=40, passive=(60.0, 10.0)),
    "h45-p120a20": candidate(horizon=45, passive=(120.0, 20.0)),
    "h45-p600a30": candidate(horizon=45, passive=(600.0, 30.0)),
    "h60-k5": candidate(cadence=5),
    "h60-k15": candidate(cadence=15),
    "h60-k60": candidate(cadence=60),
    "h60-m5": candidate(persistence=5),
    "h60-m15": candidate(persistence=15),
    "h60-k15-m15": candidate(cadence=15, persistence=15),
    "h40-m15": candidate(horizon=40, persistence=15),
    "h60-k5-m5": candidate(cadence=5, persistence=5),
    "h60-k10": candidate(cadence=10),
    "h60-g05": candidate(step=0.05),
    "h60-k5-g05": candidate(cadence=5, step=0.05),
    "h45-r50-k15": candidate(horizon=45, threshold=0.5, cadence=15),
    "h45-r50-m15": candidate(horizon=45, threshold=0.5, persistence=15),
    "h45-r50-k60": candidate(horizon=45, threshold=0.5, cadence=60),
    # Slower signals: the previous defaults, with a higher bar for a combined view to be a BUY or SELL (s)
    # and a larger score change before a view with the same action is news (p).
    "previous": {"portfolio": PREVIOUS},
    "s15": {"strategy": {"min_signal": 0.15}, "portfolio": PREVIOUS},
    "s30": {"strategy": {"min_signal": 0.3}, "portfolio": PREVIOUS},
    "p25": {"strategy": {"publish_step": 0.25}, "portfolio": PREVIOUS},
    "p50": {"strategy": {"publish_step": 0.5}, "portfolio": PREVIOUS},
    "s15-p25": {"strategy": {"min_signal": 0.15, "publish_step": 0.25}, "portfolio": PREVIOUS},
    "s30-p50": {"strategy": {"min_signal": 0.3, "publish_step": 0.5}, "portfolio": PREVIOUS},
    # The optimizer's own trade-off, on the previous defaults: a shorter holding period charges each
    # weight change more of its cost per bar (hp), a turnover cap per re-optimization (t), a higher
    # risk aversion (ra: smaller weights, so a weight change must earn more against the same cost),
    # and fewer (ri1440) or no (ri0) scheduled re-optimizations of every weight.
    "hp10": {"portfolio": {**PREVIOUS, "holding_period_bars": 10}},
    "hp3": {"portfolio": {**PREVIOUS, "holding_period_bars": 3}},
    "t20": {"portfolio": {**PREVIOUS, "turnover_limit": 0.2}},
    "t10": {"portfolio": {**PREVIOUS, "turnover_limit": 0.1}},
    "ra200": {"portfolio": {**PREVIOUS, "risk_aversion": 200.0}},
    "ra300": {"portfolio": {**PREVIOUS, "risk_aversion": 300.0}},
    "ra500": {"portfolio": {**PREVIOUS, "risk_aversion": 500.0}},
    "ra1000": {"portfolio": {**PREVIOUS, "risk_aversion": 1000.0}},
    "ri0": {"portfolio": {**PREVIOUS, "rebalance_interval_minutes": 0}},
    "ri1440": {"portfolio": {**PREVIOUS, "rebalance_interval_minutes": 1440}},
    "hp10-ri0": {"portfolio": {**PREVIOUS, "holding_period_bars": 10, "rebalance_interval_minutes": 0}},
    # Both together, and their neighbours. Under the 3x turnover budget the walk-forward chose ra250-ri0 on
    # the weeks before the last test week and on all four weeks: the shipped defaults.
    "ra150-ri0": {"portfolio": {**PREVIOUS, "risk_aversion": 150.0, "rebalance_interval_minutes": 0}},
    "ra200-ri0": {"portfolio": {**PREVIOUS, "risk_aversion": 200.0, "rebalance_interval_minutes": 0}},
    "ra250-ri0": {"portfolio": {**PREVIOUS, "risk_aversion": 250.0, "rebalance_interval_minutes": 0}},
    "ra300-ri0": {"portfolio": {**PREVIOUS, "risk_aversion": 300.0, "rebalance_interval_minutes": 0}},
    "ra300-ri0-p60a10": {
        "portfolio": {**PREVIOUS, "risk_aversion": 300.0, "rebalance_interval_minutes": 0},
        "execution": {"default_style": "PASSIVE", "passive_time_limit_seconds": 60.0, "passive_adverse_bps": 10.0},
    },
    "ra300-ri0-h45": {
        "portfolio": {**PREVIOUS, "risk_aversion": 300.0, "rebalance_interval_minutes": 0, "edge_horizon_bars": 45}
    },
    "default": {},
    # Slower signals on the optimizer's new defaults: the strategies' windows two and three times as long
    # (tf2 is the shipped default since; "default" equals it).
    "tf2": {"strategy": {"parameters": {"trend_following": slower_trend(2)}}},
    "tf3": {"strategy": {"parameters": {"trend_following": slower_trend(3)}}},
    "mr2": {"strategy": {"parameters": {"mean_reversion": {"lookback": 480, "trend_window": 480}}}},
    "tf2-mr2": {
        "strategy": {
            "parameters": {
                "trend_following": slower_trend(2),
                "mean_reversion": {"lookback": 480, "trend_window": 480},
            }
        }
    },
}


def pinned_trend(overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a candidate's overrides with trend following's windows from before the walk-forward doubled them.

    Every candidate measured on those windows keeps them, so its figures stay
    reproducible; one that sets trend following's windows itself keeps its own.
    """
    strategy = overrides.get("strategy", {})
    parameters = strategy.get("parameters", {})
    if "trend_following" in parameters:
        return overrides
    parameters = {**parameters, "trend_following": slower_trend(1)}
    return {**overrides, "strategy": {**strategy, "parameters": parameters}}


CANDIDATES = {
    name: overrides if name == "default" else pinned_trend(overrides) for name, overrides in _MEASURED.items()
}


def summarize(folder: Path) -> dict[str, Any]:
    """Return fills, traded notional, maker share, fees, funding, gross and net P&L of a finished run folder."""
    metrics = json.loads((folder / "metrics.json").read_text())
    with (folder / "trades.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    notional = sum(float(r["quantity"]) * float(r["price"]) for r in rows)
    maker = sum(float(r["quantity"]) * float(r["price"]) for r in rows if r["liquidity_side"] == "MAKER")
    fees = float(metrics["fees_paid"])
    funding = float(metrics["funding_paid"])
    net = float(metrics["final_equity"]) - float(metrics["initial_capital"])
    return {
        "fills": len(rows),
        "notional": round(notional, 1),
        "maker_share": round(maker / notional, 3) if notional else 0.0,
        "fees": round(fees, 2),
        "funding_paid": round(funding, 2),
        "gross": round(net + fees + funding, 2),
        "net": round(net, 2),
        "wall_seconds": metrics["wall_seconds"],
    }


def run(name: str, overrides: dict[str, Any], start: str, end: str, output: Path, symbols: list[str] | None) -> dict:
    """Run one backtest of a candidate on one window and return its summary."""
    folder = output / f"{name}_{start}_{end}"
    if not (folder / "metrics.json").exists():
        config = load_config("backtest", overrides=overrides)
        result = BacktestEngine(config).run(symbols=symbols, start=start, end=end)
        result.write(folder)
    return {"candidate": name, "start": start, "end": end, **summarize(folder)}


def _run_job(job: tuple[str, str, str, Path, list[str] | None]) -> dict[str, Any]:
    name, start, end, output, symbols = job
    return run(name, CANDIDATES[name], start, end, output, symbols)


def walk_forward(
    windows: list[str],
    output: Path,
    symbols: list[str] | None,
    names: list[str],
    jobs: int = 1,
    budget: float | None = None,
) -> dict[str, Any]:
    """Run every candidate on every window; choose on the past windows, judge on the next one.

    The choice is the best net P&L over the past windows; with ``budget`` it is
    made among the candidates that traded at most ``1 / budget`` of the
    ``today`` candidate's notional over those windows (the turnover goal);
    ``chosen`` is None when no candidate kept to it.
    """
    spans = list(itertools.pairwise(windows))
    work = [(name, start, end, output, symbols) for start, end in spans for name in names]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for row in pool.imap(_run_job, work):
            results[row["candidate"], spans.index((row["start"], row["end"]))] = row
            print(json.dumps(row), flush=True)
    table = []
    for test in range(1, len(spans)):
        eligible = names
        if budget is not None:
            allowed = sum(results["today", k]["notional"] for k in range(test)) / budget
            eligible = [n for n in names if sum(results[n, k]["notional"] for k in range(test)) <= allowed]
        baseline = results["today", test] if "today" in names else {}
        chosen = max(eligible, key=lambda n: (sum(results[n, k]["net"] for k in range(test)), n), default=None)
        table.append(
            {
                "test_window": windows[test],
                "chosen_on": f"{windows[0]}..{windows[test]}",
                "chosen": chosen,
                **(results[chosen, test] if chosen is not None else {}),
                "today_notional": baseline.get("notional"),
                "today_gross": baseline.get("gross"),
                "today_net": baseline.get("net"),
            }
        )
    return {"runs": list(results.values()), "walk_forward": table}


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run the walk-forward or summarize finished folders."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("runs/costs"))
    parser.add_argument("--windows", default="2025-05-05,2025-05-12,2025-05-19,2025-05-26,2025-06-02")
    parser.add_argument("--symbols", default=None)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--summarize", type=Path, nargs="*")
    parser.add_argument("--jobs", type=int, default=1, help="backtests run at once")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="choose among candidates trading at most 1/BUDGET of today's notional",
    )
    args = parser.parse_args(argv)
    if args.summarize:
        for folder in args.summarize:
            print(json.dumps({"run": str(folder), **summarize(folder)}))
        return
    symbols = args.symbols.split(",") if args.symbols else None
    names = args.candidates.split(",")
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        sys.exit(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(CANDIDATES)}")
    if args.budget is not None and "today" not in names:
        sys.exit("--budget needs the today candidate")
    report = walk_forward(args.windows.split(","), args.output, symbols, names, args.jobs, args.budget)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "walk_forward.json").write_text(json.dumps(report, indent=1))
    for row in report["walk_forward"]:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
