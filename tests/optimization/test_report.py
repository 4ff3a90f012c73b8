"""Pruning on fold scores and the study outputs, on a tuner whose backtests are synthetic equity curves.

The synthetic curves make the fold scores known in advance (higher fast
periods earn more), so the pruner's decisions and the report can be checked
without running backtests.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import numpy as np
import optuna
import yaml

from keel.config import KeelConfig, load_config
from keel.optimization.cache import CacheManager
from keel.optimization.report import write_study_outputs
from keel.optimization.space import apply_values
from keel.optimization.tuner import Curve, HyperparameterTuner

FAST = "strategy.parameters.trend_following.fast_period"


class SyntheticTuner(HyperparameterTuner):
    """Each backtest is an equity curve whose drift grows with the fast period."""

    def evaluate(self, config: KeelConfig, start: datetime, end: datetime) -> Curve:
        drift = (config.strategy.parameters.trend_following.fast_period - 12) * 1e-5
        bars = int((end - start).total_seconds() // 60)
        returns = np.where(np.arange(bars) % 2 == 0, 1e-4, -1e-4) + drift
        equity = 10_000.0 * np.cumprod(np.concatenate([[1.0], 1.0 + returns]))
        return Curve(equity, {"total_return": float(equity[-1] / equity[0] - 1), "n_trades": 2.0})


def synthetic_tuner(tmp_path: Path, pruner: str) -> SyntheticTuner:
    config = apply_values(
        load_config("backtest"),
        {
            "data.symbols": ("BTCUSDT",),
            "data.start": "2025-05-10",
            "data.end": "2025-05-16",
            "tuning.train_days": 1.0,
            "tuning.test_days": 1.0,
            "tuning.holdout_days": 1.0,
            "tuning.pruner": pruner,
            "tuning.storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        },
    )
    return SyntheticTuner(config, cache=CacheManager(), study_name=f"synthetic-{pruner}")


def test_the_median_pruner_stops_trials_whose_first_folds_fall_behind(tmp_path: Path) -> None:
    # Arrange
    tuner = synthetic_tuner(tmp_path, "median")

    # Act
    tuner.optimize("trend_following", {"fast_period": (5, 20), "slow_period": (20, 50)}, trials=10, finish=False)

    # Assert
    trials = optuna.load_study(study_name="synthetic-median", storage=tuner.storage_url).trials
    pruned = [t for t in trials if t.state is optuna.trial.TrialState.PRUNED]
    complete = [t for t in trials if t.state is optuna.trial.TrialState.COMPLETE]
    assert pruned and complete
    assert all(len(t.intermediate_values) < len(tuner.plan().folds) for t in pruned)
    for trial in pruned:
        earlier = [t.intermediate_values[0] for t in complete if t.number < trial.number]
        assert trial.intermediate_values[0] < np.median(earlier)


def test_the_outputs_lead_with_the_held_out_result_and_best_yaml_is_a_config_layer(tmp_path: Path) -> None:
    # Arrange
    tuner = synthetic_tuner(tmp_path, "none")
    result = tuner.optimize(
        "trend_following",
        {"fast_period": (5, 20), "slow_period": (20, 50), "portfolio.allocator": ["markowitz", "equal_weight"]},
        trials=6,
    )
    study = optuna.load_study(study_name="synthetic-none", storage=tuner.storage_url)

    # Act
    folder = write_study_outputs(study, result, tmp_path / "out")

    # Assert
    html = (folder / "report.html").read_text()
    assert html.index("Held-out window") < html.index("Walk-forward") < html.index("Optimization history")
    assert html.count("<svg") >= 6 and "<script" not in html and "http" not in html
    with (folder / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["number"]) for r in rows] == list(range(6))
    layer = yaml.safe_load((folder / "best.yaml").read_text())
    assert layer["strategy"]["parameters"]["trend_following"]["fast_period"] == result.best_params[FAST]
    tuned = load_config("backtest", folder / "best.yaml")
    assert tuned.portfolio.allocator == result.best_params["portfolio.allocator"]
    assert result.best_params[FAST] >= 15  # the synthetic edge grows with the fast period


class IdleTuner(SyntheticTuner):
    """Each backtest is an account that never traded."""

    def evaluate(self, config: KeelConfig, start: datetime, end: datetime) -> Curve:
        bars = int((end - start).total_seconds() // 60)
        return Curve(np.full(bars + 1, 10_000.0), {"total_return": 0.0, "n_trades": 0.0})


def test_the_report_leads_with_the_warning_when_no_trial_traded(tmp_path: Path) -> None:
    # Arrange
    config = synthetic_tuner(tmp_path, "none").config
    tuner = IdleTuner(config, cache=CacheManager(), study_name="idle")
    result = tuner.optimize("trend_following", {"fast_period": (5, 20)}, trials=3)
    study = optuna.load_study(study_name="idle", storage=tuner.storage_url)

    # Act
    folder = write_study_outputs(study, result, tmp_path / "out")

    # Assert
    html = (folder / "report.html").read_text()
    assert html.index("Warning:") < html.index("Held-out window")
    assert "the winner&#x27;s parameters are arbitrary" in html and "3 without a trade" in html
