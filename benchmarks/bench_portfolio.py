"""Re-solve time of keel's compiled max-Sharpe problem against PyPortfolioOpt on the same inputs.

Data: the bundled Binance USD-M 1m closes of the 10 symbols (inner-joined on
bar time), as simple returns. With only 10 real series, larger universes are
built from the same real data: asset ``(symbol, j)`` is the symbol's return
series lagged by ``j`` whole days (j = 0 .. N/10 - 1), so N = 50 uses 5 lags
and N = 200 uses 20. Each re-solve uses a 1440-bar window ending one hour
later than the previous one, so expected returns and covariance change every
time; both sides get the same sample mean and sample covariance and solve
max Sharpe (risk-free rate 0) with long-only bounds ``[0, cap]`` and weights
summing to one, ``cap = 0.25, 0.10, 0.05`` for N = 10, 50, 200. Timed per
solve: keel writes the new parameter values into the problem compiled once
(Cholesky factor included) and re-solves; PyPortfolioOpt builds
``EfficientFrontier(mu, cov, weight_bounds)`` and calls ``max_sharpe()``,
once with its default solver (what a user gets) and once with Clarabel (the
solver keel uses). Windows where no long-only portfolio under the cap has a
positive expected return (so no max-Sharpe portfolio exists) are skipped.

Prints one JSON line: per N the median milliseconds of keel, PyPortfolioOpt
default and PyPortfolioOpt with Clarabel, the speed-ups, how many solves each
failed, and the largest weight difference from PyPortfolioOpt with Clarabel
and (N <= 50, first 5 windows) from scipy's SLSQP. PyPortfolioOpt's
solutions are on unscaled per-minute inputs, where Clarabel's default
tolerances stop early (weights summing to 0.9998 were seen); SLSQP is the
tighter reference.

``costs_n200``: max Sharpe with linear trading costs (0.0006 per unit of
weight traded, from the previous solve's weights) at N = 200, each window
re-solved by keel's default (the structured dense interior-point path,
``keel.portfolio.interior_point``) and, as references in the same run, by the
compiled Clarabel problem with the variance as a quadratic form (what keel used
before) and in the factor form; medians of the thread's CPU time (robust to
other processes on a shared machine; keel's slowest too), the goal is 25 ms,
with the largest weight difference from each reference and how many re-solves
failed.
``--quick`` runs 3 solves per size.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from keel.market_data.loaders import load_ohlcv
from keel.portfolio.markowitz import (
    MarkowitzProblem,
    PortfolioConstraints,
    ProblemInputs,
    SolverFailedError,
    solve_with_fallbacks,
)

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = (
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "LINKUSDT",
    "LTCUSDT",
    "BCHUSDT",
    "AVAXUSDT",
    "SUIUSDT",
)
DAY = 1440
WINDOW = 1440
STEP = 60
CAPS = {10: 0.25, 50: 0.10, 200: 0.05}
SLSQP_WINDOWS = 5


def load_returns() -> np.ndarray:
    folder = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
    closes = pd.concat(
        [load_ohlcv(folder / f"{s}_1m.csv.gz").frame.set_index("open_time_ms")["close"].rename(s) for s in SYMBOLS],
        axis=1,
        join="inner",
    )
    return closes.pct_change().dropna().to_numpy()


def window(returns: np.ndarray, n: int, end: int) -> np.ndarray:
    """Columns (symbol, lag j): the symbol's returns over the WINDOW bars ending ``j`` days before ``end``."""
    lags = n // len(SYMBOLS)
    blocks = [returns[end - j * DAY - WINDOW : end - j * DAY] for j in range(lags)]
    return np.hstack(blocks)


def keel_solve(problem: MarkowitzProblem, rules: PortfolioConstraints, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    n = len(mu)
    inputs = ProblemInputs(
        expected_returns=mu,
        covariance=cov,
        lower=np.zeros(n),
        upper=np.full(n, rules.max_weight),
        current_weights=np.zeros(n),
        costs=np.zeros(n),
    )
    return problem.solve(inputs, rules).weights


def pypfopt_solve(mu: np.ndarray, cov: np.ndarray, cap: float, solver: str | None) -> np.ndarray:
    from pypfopt import EfficientFrontier

    frontier = EfficientFrontier(mu, cov, weight_bounds=(0.0, cap), solver=solver)
    frontier.max_sharpe(risk_free_rate=0.0)
    return np.asarray(list(frontier.clean_weights(rounding=None).values()), dtype=np.float64)


def slsqp(mu: np.ndarray, cov: np.ndarray, cap: float) -> np.ndarray:
    """Return scipy SLSQP's max-Sharpe weights (the plain reference; too slow to time at N = 200)."""
    n = len(mu)
    result = minimize(
        lambda w: -(mu @ w) / np.sqrt(w @ cov @ w),
        np.full(n, 1.0 / n),
        method="SLSQP",
        bounds=[(0.0, cap)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    return result.x


def best_return(mu: np.ndarray, cap: float) -> float:
    """Return the largest expected return of long-only weights summing to one, each at most ``cap``."""
    total, left = 0.0, 1.0
    for value in np.sort(mu)[::-1]:
        take = min(cap, left)
        total += take * value
        left -= take
    return total


def timed(solve: object) -> tuple[np.ndarray | None, float | None]:
    started = time.perf_counter()
    try:
        weights = solve()  # type: ignore[operator]
    except Exception:  # keel's SolverFailedError, PyPortfolioOpt's OptimizationError or a cvxpy SolverError
        return None, None
    return weights, (time.perf_counter() - started) * 1e3


def run_size(returns: np.ndarray, n: int, solves: int) -> dict[str, float | int | None]:
    cap = CAPS[n]
    rules = PortfolioConstraints(max_weight=cap)
    problem = MarkowitzProblem(n, "max_sharpe", rules)
    first_end = (n // len(SYMBOLS) - 1) * DAY + WINDOW
    times: dict[str, list[float]] = {"keel": [], "pypfopt_default": [], "pypfopt_clarabel": []}
    failures = dict.fromkeys(times, 0)
    skipped = 0
    difference = slsqp_difference = 0.0
    slsqp_checked = 0
    end = first_end
    warmed = False
    while len(times["keel"]) + failures["keel"] < solves and end <= len(returns):
        data = window(returns, n, end)
        end += STEP
        mu, cov = data.mean(axis=0), np.cov(data, rowvar=False)
        if best_return(mu, cap) <= 0:
            skipped += 1
            continue
        if not warmed:
            keel_solve(problem, rules, mu, cov)  # the one-off compilation is not a re-solve
            warmed = True
        solvers = {
            "keel": functools.partial(keel_solve, problem, rules, mu, cov),
            "pypfopt_default": functools.partial(pypfopt_solve, mu, cov, cap, None),
            "pypfopt_clarabel": functools.partial(pypfopt_solve, mu, cov, cap, "CLARABEL"),
        }
        weights = {}
        for name, solve in solvers.items():
            weights[name], elapsed = timed(solve)
            if elapsed is None:
                failures[name] += 1
            else:
                times[name].append(elapsed)
        if weights["keel"] is not None and weights["pypfopt_clarabel"] is not None:
            difference = max(difference, float(np.max(np.abs(weights["keel"] - weights["pypfopt_clarabel"]))))
        if weights["keel"] is not None and n <= 50 and slsqp_checked < SLSQP_WINDOWS:
            slsqp_checked += 1
            slsqp_difference = max(slsqp_difference, float(np.max(np.abs(weights["keel"] - slsqp(mu, cov, cap)))))
    medians = {name: statistics.median(values) if values else None for name, values in times.items()}
    keel = medians["keel"]
    result: dict[str, float | int | None] = {f"{name}_ms": _round(value) for name, value in medians.items()}
    for name in ("pypfopt_default", "pypfopt_clarabel"):
        reference = medians[name]
        result[f"speedup_vs_{name}"] = _round(reference / keel) if keel and reference else None
    result.update({f"{name}_failures": count for name, count in failures.items()})
    result.update(
        {
            "solves": len(times["keel"]),
            "windows_skipped": skipped,
            "max_weight_difference_vs_pypfopt_clarabel": difference,
            "max_weight_difference_vs_slsqp": slsqp_difference if slsqp_checked else None,
            "slsqp_windows": slsqp_checked,
        }
    )
    return result


def run_costs(returns: np.ndarray, solves: int, n: int = 200) -> dict[str, float | int | None]:
    """Time max Sharpe with costs at N = 200: the quadratic form against the factor form, same windows."""
    cap, cost = CAPS[n], 0.0006
    rules = PortfolioConstraints(max_weight=cap, transaction_cost=cost)
    problems = {
        "keel": MarkowitzProblem(n, "max_sharpe", rules),
        "clarabel": MarkowitzProblem(n, "max_sharpe", rules, interior_point=False),
        "factor_form": MarkowitzProblem(n, "max_sharpe", rules, quadratic_form=False, interior_point=False),
    }
    methods: set[str] = set()
    times: dict[str, list[float]] = {form: [] for form in problems}
    failures = dict.fromkeys(problems, 0)
    current = np.full(n, 1.0 / n)
    differences = {"clarabel": 0.0, "factor_form": 0.0}
    end = (n // len(SYMBOLS) - 1) * DAY + WINDOW
    warmed = False
    while len(times["keel"]) < solves and end <= len(returns):
        data = window(returns, n, end)
        end += STEP
        mu, cov = data.mean(axis=0), np.cov(data, rowvar=False)
        if best_return(mu, cap) <= 0:
            continue
        inputs = ProblemInputs(mu, cov, np.zeros(n), np.full(n, cap), current, np.full(n, cost))
        if not warmed:
            for problem in problems.values():
                problem.solve(inputs, rules)  # the one-off compilation is not a re-solve
            warmed = True
        weights = {}
        for form, problem in problems.items():
            started = time.thread_time()
            try:
                solution = solve_with_fallbacks(problem, inputs, rules)
            except SolverFailedError:
                failures[form] += 1
                continue
            times[form].append((time.thread_time() - started) * 1e3)
            weights[form] = solution.weights
            if form == "keel":
                methods.add(solution.method)
        for form in differences:
            if "keel" in weights and form in weights:
                differences[form] = max(differences[form], float(np.max(np.abs(weights["keel"] - weights[form]))))
        current = weights.get("keel", current)
    keel, clarabel, factor = (statistics.median(times[form]) for form in problems)
    return {
        "keel_cpu_ms": _round(keel),
        "keel_cpu_ms_max": _round(max(times["keel"])),
        "keel_methods": sorted(methods),
        "clarabel_cpu_ms": _round(clarabel),
        "factor_form_cpu_ms": _round(factor),
        "speedup_vs_clarabel": _round(clarabel / keel),
        "speedup_vs_factor_form": _round(factor / keel),
        "goal_ms": 25,
        "solves": len(times["keel"]),
        "failures": failures,
        "max_weight_difference_vs_clarabel": differences["clarabel"],
        "max_weight_difference_vs_factor_form": differences["factor_form"],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 solves per size (a smoke test)")
    args = parser.parse_args()
    solves = 3 if args.quick else 40
    returns = load_returns()
    results: dict[str, object] = {"benchmark": "portfolio_max_sharpe_resolve", "solves_per_size": solves}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in (10, 50, 200):
            results[f"n{n}"] = run_size(returns, n, solves if n < 200 else max(3, solves // 4))
        results["costs_n200"] = run_costs(returns, max(3, solves // 4))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
