"""HyperparameterTuner: the user's calls, walk-forward trials through the real backtest engine.

Each study is tiny (one symbol, three days, two folds, three or four trials) and
they share one in-process cache, so a repeated trial costs no backtest.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import optuna
import pytest

from keel.config import KeelConfig, load_config
from keel.optimization.cache import CacheManager
from keel.optimization.objectives import Objective
from keel.optimization.space import apply_values
from keel.optimization.tuner import Curve, HyperparameterTuner, count_trials

FAST = "strategy.parameters.trend_following.fast_period"
SLOW = "strategy.parameters.trend_following.slow_period"
STRENGTH = "strategy.parameters.trend_following.min_trend_strength"
USER_SPACE = {"fast_period": (5, 20), "slow_period": (20, 50), "min_trend_strength": (0.1, 0.5)}


def small_config(storage: Path) -> KeelConfig:
    """Three days of BTCUSDT: two 1-day/12-hour folds and a 12-hour held-out window; trend following trades."""
    return apply_values(
        load_config("backtest"),
        {
            "data.symbols": ("BTCUSDT",),
            "data.start": "2025-05-10",
            "data.end": "2025-05-13",
            "strategy.regime.enabled": False,
            "strategy.warmup_bars": 200,
            # A short channel and no cost band, so the trend follower trades within the one-day folds
            # (with its default channel of 320 bars it does not enter in these days at all).
            "strategy.parameters.trend_following.channel_period": 20,
            "portfolio.no_trade_band": False,
            "tuning.train_days": 1.0,
            "tuning.test_days": 0.5,
            "tuning.embargo_hours": 1.0,
            "tuning.holdout_days": 0.5,
            "tuning.storage": f"sqlite:///{storage}",
        },
    )


@pytest.fixture(scope="module")
def shared_cache() -> CacheManager:
    return CacheManager()


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optuna") / "optuna.db"


@pytest.fixture(scope="module")
def user_study(storage: Path, shared_cache: CacheManager) -> tuple[HyperparameterTuner, object]:
    tuner = HyperparameterTuner(small_config(storage), cache=shared_cache, study_name="user")

    async def run() -> object:
        job = await tuner.start_optimization(strategy_name="TrendFollowing", parameter_space=USER_SPACE, trials=4)
        return await job

    return tuner, asyncio.run(run())


def test_the_users_start_optimization_call_tunes_trend_following_out_of_sample(user_study) -> None:
    # Arrange
    tuner, result = user_study
    study = optuna.load_study(study_name="user", storage=tuner.storage_url)
    plan = tuner.plan()

    # Assert
    assert result.trials_run == 4 and result.trials_complete + result.trials_pruned == 4
    assert set(result.best_params) == {FAST, SLOW, "strategy.parameters.trend_following.min_trend_strength"}
    assert result.best_params[FAST] < result.best_params[SLOW]
    assert datetime.fromisoformat(result.holdout_window[0]) >= plan.folds[-1].test_end
    assert 0.0 <= result.deflated_sharpe <= 1.0
    assert len(result.walk_forward) == len(plan.folds) == 2
    assert result.equity_holdout and result.equity_in_sample
    complete = [t for t in study.trials if t.state is optuna.trial.TrialState.COMPLETE]
    assert all(sorted(t.intermediate_values) == [0, 1] for t in complete)


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"fast_prd": (5, 20)}, "trend_following has no parameter fast_prd"),
        ({"fast_period": (20, 5)}, "low 20 is above high 5"),
        ({"fast_period": (5, 5000)}, r"range \(5, 5000\) leaves \[5, 100\]"),
        ({"fast_period": 10}, r"fast_period: a range is \(low, high\) of two finite numbers, got 10"),
        ({"fast_period": ("a", 20)}, r"got \('a', 20\)"),
        ({"min_trend_strength": (0.1, float("nan"))}, r"got \(0.1, nan\)"),
    ],
    ids=["unknown name", "upside down", "outside the declared range", "a number", "a word", "NaN"],
)
def test_start_optimization_refuses_a_space_the_strategy_does_not_have_before_starting(
    tmp_path: Path, space: dict[str, object], match: str
) -> None:
    # Arrange
    tuner = HyperparameterTuner(small_config(tmp_path / "optuna.db"), cache=CacheManager())

    async def start() -> None:
        await tuner.start_optimization(strategy_name="TrendFollowing", parameter_space=space, trials=4)

    # Act / Assert: the error comes from the call, not from awaiting the job later; no study was created
    with pytest.raises(ValueError, match=match):
        asyncio.run(start())
    assert not (tmp_path / "optuna.db").exists() or not optuna.get_all_study_names(tuner.storage_url)


@pytest.mark.parametrize("trials", [0, -3])
def test_start_optimization_refuses_fewer_than_one_trial_before_starting(tmp_path: Path, trials: int) -> None:
    # Arrange
    tuner = HyperparameterTuner(small_config(tmp_path / "optuna.db"), cache=CacheManager())

    async def start() -> None:
        await tuner.start_optimization(strategy_name="TrendFollowing", trials=trials)

    # Act / Assert: a job of no trials was started, and created its study, with no result to give
    with pytest.raises(ValueError, match=f"trials must be a whole number of at least 1, got {trials}"):
        asyncio.run(start())
    assert not (tmp_path / "optuna.db").exists()


def test_each_trial_is_the_real_engines_backtest(user_study) -> None:
    # Arrange
    tuner, result = user_study
    config = apply_values(tuner.base_config("trend_following"), result.best_params)
    plan = tuner.plan()

    # Act
    fresh = HyperparameterTuner(config, cache=CacheManager()).evaluate(config, plan.holdout_start, plan.holdout_end)

    # Assert
    assert isinstance(fresh, Curve)
    assert fresh.equity.tolist() == result.equity_holdout


def test_the_same_seed_gives_the_same_trials_and_costs_no_backtest_the_second_time(
    user_study, storage: Path, shared_cache: CacheManager
) -> None:
    # Arrange
    first_tuner, _ = user_study
    again = HyperparameterTuner(small_config(storage), cache=shared_cache, study_name="user-again")

    # Act
    asyncio.run(again.optimize_strategy_parameters(strategy="TrendFollowing", trials=4, parameter_space=USER_SPACE))

    # Assert
    first = optuna.load_study(study_name="user", storage=first_tuner.storage_url).trials
    second = optuna.load_study(study_name="user-again", storage=again.storage_url).trials
    assert [t.params for t in second] == [t.params for t in first]
    assert again.backtests_run == 0


class ExplodingTuner(HyperparameterTuner):
    """A tuner whose backtests raise for fast periods above 12, as a broken configuration would."""

    def evaluate(self, config: KeelConfig, start: datetime, end: datetime) -> Curve:
        if config.strategy.parameters.trend_following.fast_period > 12:
            raise RuntimeError("simulated venue crashed")
        return super().evaluate(config, start, end)


def test_a_failed_trial_is_recorded_with_its_error_and_the_study_goes_on(
    storage: Path, shared_cache: CacheManager
) -> None:
    # Arrange
    tuner = ExplodingTuner(small_config(storage), cache=shared_cache, study_name="exploding")

    # Act
    tuner.optimize("trend_following", {"fast_period": (5, 20), "slow_period": (20, 50)}, trials=4, finish=False)

    # Assert
    trials = optuna.load_study(study_name="exploding", storage=tuner.storage_url).trials
    failed = [t for t in trials if t.state is optuna.trial.TrialState.FAIL]
    assert len(trials) == 4
    assert failed and all(t.user_attrs["error"] == "RuntimeError: simulated venue crashed" for t in failed)
    assert all(t.params[FAST] > 12 for t in failed)


def test_a_pareto_study_trades_return_against_drawdown(storage: Path, shared_cache: CacheManager) -> None:
    # Arrange
    tuner = HyperparameterTuner(small_config(storage), cache=shared_cache, study_name="pareto")

    # Act
    result = tuner.optimize("trend_following", USER_SPACE, objective="pareto", trials=3)

    # Assert
    study = optuna.load_study(study_name="pareto", storage=tuner.storage_url)
    assert len(study.directions) == 2 and study.best_trials
    assert result.objective == "pareto" and result.trials_complete == 3


def test_a_study_resumes_and_only_runs_the_missing_trials(storage: Path, shared_cache: CacheManager) -> None:
    # Arrange
    tuner = HyperparameterTuner(small_config(storage), cache=shared_cache, study_name="resumed")
    tuner.optimize("trend_following", USER_SPACE, trials=2, finish=False)

    # Act
    tuner.optimize("trend_following", USER_SPACE, trials=3, finish=False)

    # Assert
    trials = optuna.load_study(study_name="resumed", storage=tuner.storage_url).trials
    assert [t.number for t in trials] == [0, 1, 2]


def test_enqueued_trials_are_run_as_part_of_the_study_not_counted_as_done(
    storage: Path, shared_cache: CacheManager
) -> None:
    # Arrange: the study exists with two parameter sets queued in it
    tuner = HyperparameterTuner(small_config(storage), cache=shared_cache, study_name="queued")
    study = tuner.create_study("trend_following", Objective.parse("sharpe_ratio"))
    queued = [{FAST: 7, SLOW: 30, STRENGTH: 0.2}, {FAST: 12, SLOW: 45, STRENGTH: 0.4}]
    for params in queued:
        study.enqueue_trial(params)

    # Act
    tuner.optimize("trend_following", USER_SPACE, trials=3, finish=False)

    # Assert: three trials, the queued ones first and with their parameters
    trials = optuna.load_study(study_name="queued", storage=tuner.storage_url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert [{k: t.params[k] for k in queued[0]} for t in trials[:2]] == queued


def test_queued_trials_are_still_to_run_so_workers_share_them() -> None:
    # Arrange: one finished trial and two queued
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    study.enqueue_trial({FAST: 7})
    study.enqueue_trial({FAST: 12})

    # Act
    done = count_trials(study)

    # Assert: the local workers of `keel tune --workers N` are given the queued trials to run
    assert done == 1


class InterruptedTuner(HyperparameterTuner):
    """A tuner whose first backtest is interrupted, as by Ctrl-C."""

    interrupted = False

    def evaluate(self, config: KeelConfig, start: datetime, end: datetime) -> Curve:
        if not InterruptedTuner.interrupted:
            InterruptedTuner.interrupted = True
            raise KeyboardInterrupt
        return super().evaluate(config, start, end)


def test_a_study_interrupted_by_ctrl_c_resumes_and_runs_the_interrupted_trial_again(
    storage: Path, shared_cache: CacheManager
) -> None:
    # Arrange
    tuner = InterruptedTuner(small_config(storage), cache=shared_cache, study_name="interrupted")
    with pytest.raises(KeyboardInterrupt):
        tuner.optimize("trend_following", USER_SPACE, trials=2, finish=False)

    # Act
    tuner.optimize("trend_following", USER_SPACE, trials=2, finish=False)

    # Assert
    states = [t.state for t in optuna.load_study(study_name="interrupted", storage=tuner.storage_url).trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.COMPLETE]


def test_a_study_in_which_no_trial_traded_warns_that_its_winner_is_arbitrary(tmp_path: Path) -> None:
    # Arrange: the strategy's default channel of 320 bars, which gives no entry in these three days
    config = apply_values(
        small_config(tmp_path / "optuna.db"), {"strategy.parameters.trend_following.channel_period": 320}
    )
    tuner = HyperparameterTuner(config, cache=CacheManager(), study_name="idle")

    # Act
    result = tuner.optimize("trend_following", {FAST: (5, 20)}, "sharpe", 2)

    # Assert
    assert result.trials_without_trades == result.trials_complete == 2
    assert len(result.warnings) == 1 and "the winner's parameters are arbitrary" in result.warnings[0]
    assert result.summary()["warnings"] == result.warnings


def test_a_study_whose_trials_traded_has_no_warning(user_study) -> None:
    # Arrange
    _, result = user_study

    # Act
    summary = result.summary()

    # Assert
    assert result.trials_without_trades < result.trials_complete and summary["warnings"] == []
