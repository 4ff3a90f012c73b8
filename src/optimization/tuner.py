"""HyperparameterTuner: Optuna studies whose every trial is a real walk-forward backtest.

A trial draws values for its search space, builds a configuration from them
and runs :class:`~keel.backtest.engine.BacktestEngine` on the train and test
window of every walk-forward fold. Its score is the out-of-sample (test)
score; the running mean after each fold is reported to the pruner. A trial
that raises is recorded as failed with its error and the study goes on.

Studies live in Optuna storage (SQLite by default, PostgreSQL to let worker
processes on several machines join the same study by name) and resume where
they stopped. When a study ends, :meth:`HyperparameterTuner.finish` re-runs the
winner on the held-out window and computes the deflated Sharpe ratio and the
probability of backtest overfitting.
"""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import structlog

from keel.backtest.engine import BacktestEngine, funding_coverage_end
from keel.config import KeelConfig, load_config
from keel.integration.pipeline import build_feed
from keel.integration.reports import BARS_PER_YEAR
from keel.market_data.feeds import use_prepared_data
from keel.optimization.cache import CacheManager, CacheSettings, PreparedDataCache, RegimeFitCache, backtest_key
from keel.optimization.objectives import Objective, curve_metrics
from keel.optimization.space import SearchSpace, apply_values, canonical_strategy, strategy_space
from keel.optimization.validation import (
    WalkForwardPlan,
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
    returns_of,
    sharpe_per_period,
    walk_forward,
)
from keel.strategy_engine.regime import use_regime_fit_store

_log = structlog.get_logger("keel.optimization")

# Bars per stored return period: hourly returns of 1m bars keep trial records small.
_PERIOD_BARS = {"1m": 60, "1h": 1}

# A backtest resets process-wide message ids, so jobs running in threads of one process take turns.
_ENGINE_LOCK = threading.Lock()

_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)

TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@dataclass(frozen=True, slots=True)
class Curve:
    """An equity curve and the metrics of one backtest window."""

    equity: np.ndarray
    metrics: dict[str, float]


@dataclass(slots=True)
class TuningResult:
    """The outcome of a study: the winner, its held-out result and the overfitting statistics."""

    study_name: str
    objective: str
    best_params: dict[str, Any]
    best_value: float
    holdout: dict[str, float]
    in_sample: dict[str, float]
    deflated_sharpe: float
    pbo: float | None
    trials_run: int
    trials_complete: int
    trials_pruned: int
    trials_failed: int
    walk_forward: list[dict[str, Any]]
    holdout_window: tuple[str, str]
    equity_in_sample: list[float] = field(default_factory=list)
    equity_holdout: list[float] = field(default_factory=list)
    base_layer: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    trials_without_trades: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Return the headline numbers, the held-out result first."""
        return {
            "holdout": self.holdout,
            "deflated_sharpe": self.deflated_sharpe,
            "pbo": self.pbo,
            "best_params": self.best_params,
            "best_value": self.best_value,
            "in_sample": self.in_sample,
            "trials_run": self.trials_run,
            "trials_complete": self.trials_complete,
            "trials_pruned": self.trials_pruned,
            "trials_failed": self.trials_failed,
            "trials_without_trades": self.trials_without_trades,
            "warnings": self.warnings,
            "cache": self.cache,
        }


class OptimizationJob:
    """A study running in a worker thread; ``await job`` (or ``await job.wait()``) gives its result."""

    def __init__(self, study_name: str, task: asyncio.Task[TuningResult]) -> None:
        self.study_name = study_name
        self._task = task

    @property
    def done(self) -> bool:
        """Whether the study has finished."""
        return self._task.done()

    async def wait(self) -> TuningResult:
        """Wait for the study and return its result."""
        return await self._task

    def __await__(self) -> Any:
        return self._task.__await__()


class HyperparameterTuner:
    """Search strategy parameters and configuration keys with Optuna, scored out of sample.

    Parameters
    ----------
    config
        The base configuration (``load_config("backtest")`` when None); its
        ``tuning`` section sets storage, windows, pruner and cache, its
        ``data`` section the symbols and range, ``run.seed`` the sampler seed.
    storage
        Optuna storage URL overriding ``tuning.storage``.
    cache
        Backtest cache; one built from ``tuning.cache_url`` when None.
    study_name
        Name of the study; ``{strategy}-{objective}`` when None.
    """

    def __init__(
        self,
        config: KeelConfig | None = None,
        *,
        storage: str | None = None,
        cache: CacheManager | None = None,
        study_name: str | None = None,
    ) -> None:
        self.config = config if config is not None else load_config("backtest")
        self.storage_url = storage or self.config.tuning.storage
        self.cache = cache if cache is not None else CacheManager(self.config.tuning.cache_url, CacheSettings())
        self.prepared = PreparedDataCache(self.cache)
        self.regime_fits = RegimeFitCache(self.cache)
        self.study_name = study_name
        self.backtests_run = 0
        self._plan: WalkForwardPlan | None = None

    async def start_optimization(
        self,
        strategy_name: str,
        parameter_space: Mapping[str, Any] | None = None,
        objective: str = "sharpe_ratio",
        trials: int = 20,
    ) -> OptimizationJob:
        """Start a study in a worker thread and return its job at once.

        Parameters
        ----------
        strategy_name
            ``TrendFollowing`` or ``trend_following`` (any registered strategy).
        parameter_space
            Parameter name (or dotted configuration key) -> (low, high); the
            strategy's whole declared space when None.
        objective
            ``sharpe_ratio``, ``sortino``, ``calmar``, ``return`` or ``pareto``.
        trials
            Trials the study should hold when it ends (a resumed study runs only the rest).

        Raises
        ------
        ValueError
            At once, for an unknown strategy or objective, a parameter space
            the strategy does not have (an unknown name, a range outside its
            declared one or upside down), or fewer than one trial.
        """
        name = self.name_for(strategy_name, objective)
        strategy_space(strategy_name, parameter_space)
        _check_trials(trials)
        task = asyncio.create_task(asyncio.to_thread(self.optimize, strategy_name, parameter_space, objective, trials))
        return OptimizationJob(name, task)

    async def optimize_strategy_parameters(
        self,
        strategy: str,
        objective: str = "sharpe_ratio",
        trials: int = 20,
        parameter_space: Mapping[str, Any] | None = None,
    ) -> TuningResult:
        """Run a study to the end (in a worker thread) and return its result."""
        return await asyncio.to_thread(self.optimize, strategy, parameter_space, objective, trials)

    def name_for(self, strategy: str, objective: str) -> str:
        """Return the study name used for ``strategy`` and ``objective``."""
        return self.study_name or f"{canonical_strategy(strategy)}-{Objective.parse(objective).name}"

    def optimize(
        self,
        strategy: str,
        parameter_space: Mapping[str, Any] | None = None,
        objective: str = "sharpe_ratio",
        trials: int = 20,
        *,
        worker_index: int = 0,
        worker_trials: int | None = None,
        claim: Callable[[], bool] | None = None,
        callbacks: list[TrialCallback] | None = None,
        finish: bool = True,
    ) -> TuningResult:
        """Run (or resume) a study until it holds ``trials`` trials; return its result.

        ``worker_trials`` runs exactly that many trials in this process (the
        share of one of several local workers); ``claim`` is asked before each
        trial and trials run while it says yes (local workers drawing from one
        shared count, so one that finishes early takes the next trial);
        otherwise trials run until the study holds ``trials``. With ``finish``
        False the held-out re-run and the statistics are left out and only the
        trial counts are returned.
        """
        target = Objective.parse(objective, self.config.tuning.max_drawdown)
        space = strategy_space(strategy, parameter_space)
        _check_trials(trials)
        study = self.create_study(strategy, target, seed_offset=worker_index)
        base = self.base_config(strategy)
        run_objective = self._trial_function(base, space, target)
        catch = (Exception,)
        if claim is not None:
            while claim():
                study.optimize(run_objective, n_trials=1, catch=catch, callbacks=callbacks)
        elif worker_trials is not None:
            study.optimize(run_objective, n_trials=worker_trials, catch=catch, callbacks=callbacks)
        else:
            while count_trials(study) < trials:
                study.optimize(run_objective, n_trials=1, catch=catch, callbacks=callbacks)
        return self.finish(study, strategy) if finish else self.counts_only_result(study, target)

    def create_study(
        self,
        strategy: str,
        objective: Objective,
        seed_offset: int = 0,
        storage: optuna.storages.BaseStorage | None = None,
    ) -> optuna.Study:
        """Create the study, or load it when one of that name exists in the storage (``storage_url`` when None)."""
        name = self.study_name or f"{canonical_strategy(strategy)}-{objective.name}"
        storage = storage if storage is not None else open_storage(self.storage_url)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=self.config.run.seed + seed_offset, multivariate=True)
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            sampler=sampler,
            pruner=_pruner(self.config.tuning.pruner) if not objective.is_multi else optuna.pruners.NopPruner(),
            directions=[optuna.study.StudyDirection[direction.upper()] for direction in objective.directions],
            load_if_exists=True,
        )
        study.set_user_attr("strategy", canonical_strategy(strategy))
        study.set_user_attr("objective", objective.name)
        study.set_user_attr("max_drawdown", objective.max_drawdown)
        study.set_user_attr("setup", study_setup(self.config))
        return study

    def base_config(self, strategy: str) -> KeelConfig:
        """Return the configuration trials start from: only ``strategy`` runs."""
        section = canonical_strategy(strategy)
        if section == "moving_average_cross":
            return apply_values(self.config, {"strategy.name": section})
        return apply_values(self.config, {"strategy.name": "strategy_manager", "strategy.strategies": (section,)})

    def preload(self) -> None:
        """Parse the configured data files once (or take them from the cache), so every trial starts from arrays.

        Worker processes forked afterwards share what was loaded.
        """
        with use_prepared_data(self.prepared):
            build_feed(self.config)

    def plan(self) -> WalkForwardPlan:
        """Return the walk-forward folds and held-out window of the configured data range."""
        if self._plan is None:
            start, end = self._range()
            tuning = self.config.tuning
            self._plan = walk_forward(
                start,
                end,
                train=timedelta(days=tuning.train_days),
                test=timedelta(days=tuning.test_days),
                embargo=timedelta(hours=tuning.embargo_hours),
                holdout=timedelta(days=tuning.holdout_days),
                anchored=tuning.anchored,
            )
        return self._plan

    def evaluate(self, config: KeelConfig, start: datetime, end: datetime) -> Curve:
        """Backtest ``config`` on ``[start, end)``, through the cache; raise if any handler failed."""
        windowed = apply_values(config, {"data.start": start, "data.end": end})
        key = backtest_key(windowed)
        cached = self.cache.get(key, "backtest")
        if cached is not None:
            return Curve(np.asarray(cached["equity"], dtype=np.float64), cached["metrics"])
        with _ENGINE_LOCK, use_prepared_data(self.prepared), use_regime_fit_store(self.regime_fits):
            result = BacktestEngine(windowed).run()
        self.backtests_run += 1
        if result["handler_errors"]:
            raise RuntimeError(f"{result['handler_errors']} handler errors in the backtest {start} to {end}")
        equity = [float(point.equity) for point in result.pipeline.recorder.equity]
        metrics = {k: float(result[k]) for k in ("total_return", "sharpe_ratio", "max_drawdown", "n_trades")}
        self.cache.set(key, {"equity": equity, "metrics": metrics}, "backtest")
        return Curve(np.asarray(equity, dtype=np.float64), metrics)

    def _trial_function(
        self, base: KeelConfig, space: SearchSpace, objective: Objective
    ) -> Callable[[optuna.Trial], float | tuple[float, ...]]:
        plan = self.plan()
        bars_per_year = BARS_PER_YEAR[base.data.bar_interval]
        period = _PERIOD_BARS[base.data.bar_interval]

        def run_trial(trial: optuna.Trial) -> float | tuple[float, ...]:
            values = space.sample(trial)
            trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
            try:
                config = apply_values(base, values)
                folds: list[dict[str, Any]] = []
                tests: list[tuple[float, ...]] = []
                returns: list[float] = []
                trades = 0
                for fold in plan.folds:
                    train = self.evaluate(config, fold.train_start, fold.train_end)
                    test = self.evaluate(config, fold.test_start, fold.test_end)
                    trades += int(train.metrics["n_trades"] + test.metrics["n_trades"])
                    test_values = objective.score(test.equity, bars_per_year)
                    test_metrics = curve_metrics(test.equity, bars_per_year)
                    tests.append(test_values)
                    returns.extend(returns_of(test.equity[::period]).tolist())
                    folds.append(
                        {
                            "train": objective.scalar(objective.score(train.equity, bars_per_year)),
                            "test": objective.scalar(test_values),
                            "test_return": test_metrics["total_return"],
                            "test_drawdown": test_metrics["max_drawdown"],
                        }
                    )
                    if not objective.is_multi:
                        trial.report(float(np.mean([t[0] for t in tests])), fold.index)
                        if trial.should_prune():
                            trial.set_user_attr("folds", folds)
                            trial.set_user_attr("trades", trades)
                            raise optuna.TrialPruned(f"pruned after fold {fold.index}")
                trial.set_user_attr("folds", folds)
                trial.set_user_attr("trades", trades)
                trial.set_user_attr("oos_returns", [round(r, 10) for r in returns])
            except optuna.TrialPruned:
                raise
            except Exception as error:
                trial.set_user_attr("error", f"{type(error).__name__}: {error}")
                _log.warning("trial failed", trial=trial.number, error=f"{type(error).__name__}: {error}")
                raise
            if objective.is_multi:
                return (float(np.mean([t[0] for t in tests])), float(max(t[1] for t in tests)))
            return float(np.mean([t[0] for t in tests]))

        return run_trial

    def finish(self, study: optuna.Study, strategy: str | None = None) -> TuningResult:
        """Re-run the winner on the held-out window and compute the walk-forward table, DSR and PBO.

        Raises
        ------
        ValueError
            If no trial of the study completed.
        """
        strategy = strategy or study.user_attrs["strategy"]
        objective = Objective.parse(study.user_attrs["objective"], study.user_attrs.get("max_drawdown", 0.2))
        complete = [t for t in study.trials if t.state is optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise ValueError(f"study {study.study_name} has no completed trial")
        winner = max(complete, key=lambda t: (objective.scalar(tuple(t.values)), -t.number))
        base = self.base_config(strategy)
        config = apply_values(base, winner.params)
        plan = self.plan()
        bars_per_year = BARS_PER_YEAR[base.data.bar_interval]
        holdout = self.evaluate(config, plan.holdout_start, plan.holdout_end)
        in_sample = self.evaluate(config, plan.folds[0].train_start, plan.folds[-1].test_end)
        returns = np.asarray(winner.user_attrs.get("oos_returns", []), dtype=np.float64)
        matrix = [t.user_attrs["oos_returns"] for t in complete if "oos_returns" in t.user_attrs]
        sharpes = np.asarray([sharpe_per_period(np.asarray(r)) for r in matrix])
        lengths = {len(r) for r in matrix}
        pbo = probability_of_backtest_overfitting(np.asarray(matrix).T) if len(lengths) == 1 else None
        states = [t.state for t in study.trials]
        idle = sum(1 for t in complete if t.user_attrs.get("trades") == 0)
        return TuningResult(
            study_name=study.study_name,
            objective=objective.name,
            best_params=dict(winner.params),
            best_value=objective.scalar(tuple(winner.values)),
            holdout=_headline(holdout, bars_per_year),
            in_sample=_headline(in_sample, bars_per_year),
            deflated_sharpe=deflated_sharpe_ratio(returns, sharpes, count_trials(study)),
            pbo=pbo,
            trials_run=count_trials(study),
            trials_complete=len(complete),
            trials_pruned=states.count(optuna.trial.TrialState.PRUNED),
            trials_failed=states.count(optuna.trial.TrialState.FAIL),
            walk_forward=walk_forward_table(study, plan, objective),
            holdout_window=(plan.holdout_start.isoformat(), plan.holdout_end.isoformat()),
            equity_in_sample=in_sample.equity.tolist(),
            equity_holdout=holdout.equity.tolist(),
            base_layer=_base_layer(base, strategy),
            cache={**self.cache.get_performance_metrics(), "regime_fits": self.regime_fits.metrics()},
            trials_without_trades=idle,
            warnings=_idle_warnings(idle, len(complete)),
        )

    def counts_only_result(self, study: optuna.Study, objective: Objective) -> TuningResult:
        """Return the trial counts of a worker's study without the held-out re-run (workers leave it to the parent)."""
        states = [t.state for t in study.trials]
        return TuningResult(
            study_name=study.study_name,
            objective=objective.name,
            best_params={},
            best_value=float("nan"),
            holdout={},
            in_sample={},
            deflated_sharpe=float("nan"),
            pbo=None,
            trials_run=len(states),
            trials_complete=states.count(optuna.trial.TrialState.COMPLETE),
            trials_pruned=states.count(optuna.trial.TrialState.PRUNED),
            trials_failed=states.count(optuna.trial.TrialState.FAIL),
            walk_forward=[],
            holdout_window=("", ""),
        )

    def _range(self) -> tuple[datetime, datetime]:
        data = self.config.data
        start, end = data.start, data.end
        if start is None or end is None:
            with use_prepared_data(self.prepared):
                summary = build_feed(self.config).summary
            start = start or _from_ns(summary.first_ns)
            covered = funding_coverage_end(self.config, data.symbols)
            end = end or min(x for x in (covered, _from_ns(summary.last_ns + 60_000_000_000)) if x is not None)
        return start, end


def study_setup(config: KeelConfig) -> dict[str, Any]:
    """Return the configuration a study's trials start from (secrets left out), to rebuild its report."""
    return config.model_dump(mode="json", exclude={"secrets"})


def config_of_study(study: optuna.Study, fallback: KeelConfig) -> KeelConfig:
    """Return the configuration stored with a study, or ``fallback`` for a study without one."""
    setup = study.user_attrs.get("setup")
    return fallback if setup is None else KeelConfig.model_validate(setup)


def walk_forward_table(study: optuna.Study, plan: WalkForwardPlan, objective: Objective) -> list[dict[str, Any]]:
    """Per fold: the trial a walk-forward run would pick on its train score, and that trial's test score."""
    rows = []
    finished = [t for t in study.trials if len(t.user_attrs.get("folds", [])) == len(plan.folds)]
    for fold in plan.folds:
        if not finished:
            break
        chosen = max(finished, key=lambda t: (t.user_attrs["folds"][fold.index]["train"], -t.number))
        scores = chosen.user_attrs["folds"][fold.index]
        rows.append(
            {
                "fold": fold.index,
                "train": f"{fold.train_start:%Y-%m-%d %H:%M} to {fold.train_end:%Y-%m-%d %H:%M}",
                "test": f"{fold.test_start:%Y-%m-%d %H:%M} to {fold.test_end:%Y-%m-%d %H:%M}",
                "trial": chosen.number,
                "train_score": scores["train"],
                "test_score": scores["test"],
                "test_return": scores["test_return"],
                "test_drawdown": scores["test_drawdown"],
            }
        )
    return rows


def count_trials(study: optuna.Study) -> int:
    """Return the trials a worker must not repeat: finished, running, or failed with an error.

    A trial failed by Ctrl-C or a crash (no recorded error) does not count, so
    a resumed study runs it again; nor does a queued (waiting) trial, which the
    next trial started runs.
    """
    state = optuna.trial.TrialState
    return sum(
        t.state in (state.COMPLETE, state.PRUNED, state.RUNNING) or (t.state is state.FAIL and "error" in t.user_attrs)
        for t in study.get_trials(deepcopy=False)
    )


def count_finished(study: optuna.Study) -> tuple[int, float | None]:
    """Return the number of finished trials and the best score so far (None before the first)."""
    objective = Objective.parse(study.user_attrs.get("objective", "sharpe"))
    finished = study.get_trials(deepcopy=False, states=_FINISHED)
    scores = [objective.scalar(tuple(t.values)) for t in finished if t.state is optuna.trial.TrialState.COMPLETE]
    return len(finished), max(scores) if scores else None


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open Optuna RDB storage with heartbeats, so trials of a crashed worker are failed and retried.

    A SQLite file's folder is created when missing.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=30,
            grace_period=90,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


def _from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def _idle_warnings(idle: int, complete: int) -> list[str]:
    """Say when no completed trial traded: their scores are all alike and the winner is arbitrary."""
    if idle == 0 or idle < complete:
        return []
    return [
        f"none of the {complete} completed trials traded in any walk-forward window: every score is that of an "
        "idle account, so the winner's parameters are arbitrary. Tune over a longer range (--start, --end), "
        "or backtest the strategy and read views_not_worth_costs and views_before_history in its metrics.json: "
        "its views may not pay their trading costs, or come before the optimizer has enough history."
    ]


def _headline(curve: Curve, bars_per_year: float) -> dict[str, float]:
    metrics = curve_metrics(curve.equity, bars_per_year)
    metrics["n_trades"] = curve.metrics.get("n_trades", 0.0)
    return metrics


def _base_layer(base: KeelConfig, strategy: str) -> dict[str, Any]:
    section = canonical_strategy(strategy)
    if section == "moving_average_cross":
        return {"strategy": {"name": section}}
    return {"strategy": {"name": "strategy_manager", "strategies": list(base.strategy.strategies)}}


def _check_trials(trials: int) -> None:
    """Raise unless ``trials`` is a whole number of at least one (a study of none has no result)."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a whole number of at least 1, got {trials!r}")
