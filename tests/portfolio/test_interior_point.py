"""The dense interior-point path of max Sharpe with costs agrees with the compiled Clarabel reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keel.portfolio.interior_point import InteriorPointFailedError, SharpeWithCosts, solve_max_sharpe_with_costs
from keel.portfolio.markowitz import (
    INTERIOR_POINT_FROM,
    InfeasibleProblemError,
    MarkowitzProblem,
    PortfolioConstraints,
    ProblemInputs,
    covariance_factor,
)

COST = 0.0006
DAY = 1440


def lagged_panel(returns: np.ndarray, lags: int, end: int) -> np.ndarray:
    """Asset (symbol, j): the symbol's 1m returns over the day ending ``j`` days before ``end`` (real data only)."""
    return np.hstack([returns[end - j * DAY - DAY : end - j * DAY] for j in range(lags)])


def problem_inputs(
    panel: np.ndarray, lower: float, upper: float, current: np.ndarray, mean_sign: float = 1.0
) -> ProblemInputs:
    n = panel.shape[1]
    return ProblemInputs(
        expected_returns=mean_sign * panel.mean(axis=0),
        covariance=np.cov(panel, rowvar=False),
        lower=np.full(n, lower),
        upper=np.full(n, upper),
        current_weights=current,
        costs=np.full(n, COST),
    )


def test_two_hundred_assets_re_solve_by_interior_point_to_clarabels_weights(make_minute_returns) -> None:
    # Arrange: 200 lagged real series, long only with 5% caps, each re-solve an hour later from the last weights
    returns = make_minute_returns(21 * DAY).to_numpy()
    rules = PortfolioConstraints(max_weight=0.05, transaction_cost=COST)
    interior = MarkowitzProblem(200, "max_sharpe", rules)
    clarabel = MarkowitzProblem(200, "max_sharpe", rules, interior_point=False)
    current = np.full(200, 1.0 / 200)
    windows = [problem_inputs(lagged_panel(returns, 20, 20 * DAY + 60 * h), 0.0, 0.05, current) for h in range(3)]
    for problem in (interior, clarabel):
        problem.solve(windows[0], rules)

    # Act
    solved = []
    for window in windows[1:]:
        fast, reference = interior.solve(window, rules), clarabel.solve(window, rules)
        solved.append((fast, reference))

    # Assert
    assert INTERIOR_POINT_FROM <= 200
    for fast, reference in solved:
        assert fast.method == "interior_point" and reference.method == "compiled"
        np.testing.assert_allclose(fast.weights, reference.weights, rtol=0, atol=1e-6)
        assert fast.weights.sum() == pytest.approx(1.0, abs=1e-8)
        assert fast.weights.min() >= -1e-8 and fast.weights.max() <= 0.05 + 1e-8


def test_long_short_weights_with_costs_agree_with_clarabel(may_hourly: pd.DataFrame) -> None:
    # Arrange: 10 hourly real series, weights in [-0.3, 0.3], trading away from uneven current weights
    rules = PortfolioConstraints(max_weight=0.3, long_short=True, transaction_cost=COST)
    panel = may_hourly.to_numpy()
    current = np.linspace(-0.1, 0.3, 10)
    current = current / current.sum()
    interior = MarkowitzProblem(10, "max_sharpe", rules, interior_point=True)
    clarabel = MarkowitzProblem(10, "max_sharpe", rules, interior_point=False)
    windows = [problem_inputs(panel[:rows], -0.3, 0.3, current) for rows in (300, 450, 600)]
    for problem in (interior, clarabel):
        problem.solve(windows[0], rules)

    # Act
    solved = [(interior.solve(w, rules), clarabel.solve(w, rules)) for w in windows[1:]]

    # Assert
    for fast, reference in solved:
        assert fast.method == "interior_point"
        np.testing.assert_allclose(fast.weights, reference.weights, rtol=0, atol=1e-6)


def test_below_the_size_threshold_clarabel_keeps_solving(may_hourly: pd.DataFrame) -> None:
    # Arrange
    rules = PortfolioConstraints(max_weight=0.3, transaction_cost=COST)
    data = problem_inputs(may_hourly.to_numpy(), 0.0, 0.3, np.full(10, 0.1))
    problem = MarkowitzProblem(10, "max_sharpe", rules)
    problem.solve(data, rules)

    # Act
    again = problem.solve(data, rules)

    # Assert
    assert again.method == "compiled"


def test_an_infeasible_problem_still_reports_infeasible_through_the_reference(may_hourly: pd.DataFrame) -> None:
    # Arrange: the interior path switched on by a feasible first solve, then every expected return negative
    rules = PortfolioConstraints(max_weight=0.3, transaction_cost=COST)
    panel = may_hourly.to_numpy()
    problem = MarkowitzProblem(10, "max_sharpe", rules, interior_point=True)
    problem.solve(problem_inputs(panel, 0.0, 0.3, np.full(10, 0.1)), rules)
    losing = problem_inputs(panel, 0.0, 0.3, np.full(10, 0.1), mean_sign=-1.0)
    assert (losing.expected_returns < 0).all()

    # Act / Assert
    with pytest.raises(InfeasibleProblemError):
        problem.solve(losing, rules)


def test_too_few_iterations_is_a_failure_not_weights(may_hourly: pd.DataFrame) -> None:
    # Arrange
    panel = may_hourly.to_numpy()
    data = SharpeWithCosts(
        factor=covariance_factor(np.cov(panel, rowvar=False)),
        expected_returns=panel.mean(axis=0),
        costs=np.full(10, COST),
        current_weights=np.full(10, 0.1),
        lower=np.zeros(10),
        upper=np.full(10, 0.3),
        net=1.0,
    )

    # Act / Assert
    with pytest.raises(InteriorPointFailedError, match="no convergence in 2 iterations"):
        solve_max_sharpe_with_costs(data, max_iterations=2)
