"""Objectives computed from equity curves."""

from __future__ import annotations

import numpy as np
import pytest

from keel.optimization.objectives import Objective, curve_metrics


def test_calmar_is_annual_return_over_drawdown() -> None:
    # Arrange
    equity = np.array([100.0, 110.0, 99.0, 121.0])

    # Act
    metrics = curve_metrics(equity, bars_per_year=3)

    # Assert
    assert metrics["max_drawdown"] == pytest.approx(0.1)
    assert metrics["calmar_ratio"] == pytest.approx(0.21 / 0.1)


def test_return_objective_ranks_every_capped_trial_above_every_breach() -> None:
    # Arrange
    objective = Objective.parse("return", max_drawdown=0.05)
    calm = np.array([100.0, 99.0, 100.5])
    wild = np.array([100.0, 80.0, 150.0])

    # Act
    calm_score, wild_score = objective.score(calm, 365)[0], objective.score(wild, 365)[0]

    # Assert
    assert calm_score == pytest.approx(0.005)
    assert wild_score < -1.0 < calm_score


def test_pareto_returns_return_and_drawdown_and_ranks_by_their_ratio() -> None:
    # Arrange
    objective = Objective.parse("pareto")

    # Act
    values = objective.score(np.array([100.0, 90.0, 120.0]), 365)

    # Assert
    assert objective.directions == ["maximize", "minimize"]
    assert values == pytest.approx((0.2, 0.1))
    assert objective.scalar(values) == pytest.approx(2.0)


def test_the_users_sharpe_ratio_name_is_accepted_and_unknown_names_refused() -> None:
    assert Objective.parse("sharpe_ratio").name == "sharpe"
    with pytest.raises(ValueError, match="unknown objective"):
        Objective.parse("alpha")
