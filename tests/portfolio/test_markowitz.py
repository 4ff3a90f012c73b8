"""The compiled Markowitz problems against scipy's SLSQP and PyPortfolioOpt, on the bundled real returns.

Hourly returns of the 10 symbols are sampled from the May 2025 1m closes
(every mean is positive there, so long-only max Sharpe exists); the bundled
March 2025 1h returns (almost every mean negative) exercise long/short and
infeasible problems.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from pypfopt import EfficientFrontier
from scipy.optimize import minimize

from keel.portfolio.markowitz import (
    MINIMUM_VARIANCE_SHRINKAGE,
    InfeasibleProblemError,
    MarkowitzProblem,
    PortfolioConstraints,
    ProblemInputs,
    SolverFailedError,
    constraint_violation,
    covariance_factor,
    minimum_variance_weights,
    solve_with_fallbacks,
)

TOLERANCE = 1e-4


def inputs(
    returns: pd.DataFrame,
    rules: PortfolioConstraints,
    *,
    current: np.ndarray | None = None,
    cost: float = 0.0,
    risk_aversion: float = 1.0,
    target: float | None = None,
) -> ProblemInputs:
    n = returns.shape[1]
    return ProblemInputs(
        expected_returns=returns.mean().to_numpy(),
        covariance=returns.cov().to_numpy(),
        lower=np.full(n, rules.lower_bound),
        upper=np.full(n, rules.max_weight),
        current_weights=np.zeros(n) if current is None else current,
        costs=np.full(n, cost),
        risk_aversion=risk_aversion,
        target=target,
    )


def frontier(returns: pd.DataFrame, bounds: tuple[float, float]) -> EfficientFrontier:
    return EfficientFrontier(returns.mean(), returns.cov(), weight_bounds=bounds, solver="CLARABEL")


def pypfopt_weights(ef: EfficientFrontier) -> np.ndarray:
    return np.array(list(ef.clean_weights(rounding=None).values()))


def slsqp(objective, n: int, bounds: tuple[float, float], constraints: list[dict], ftol: float = 1e-15) -> np.ndarray:
    result = minimize(
        objective,
        np.full(n, 1.0 / n),
        method="SLSQP",
        bounds=[bounds] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}, *constraints],
        options={"ftol": ftol, "maxiter": 1000},
    )
    # SLSQP may stop at its precision limit ("positive directional derivative") on an optimal point:
    # accept it when the point is feasible.
    assert result.success or result.status == 8, result.message
    assert abs(result.x.sum() - 1.0) < 1e-8
    assert all(c["fun"](result.x) > -1e-7 for c in constraints)
    return result.x


def test_max_sharpe_matches_slsqp_and_pypfopt_on_real_hourly_returns(may_hourly: pd.DataFrame) -> None:
    # Arrange
    rules = PortfolioConstraints(min_weight=0.05, max_weight=0.6)
    problem = MarkowitzProblem(10, "max_sharpe", rules)
    mu, cov = may_hourly.mean().to_numpy(), may_hourly.cov().to_numpy()

    # Act
    ours = problem.solve(inputs(may_hourly, rules), rules).weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ef = frontier(may_hourly, (0.05, 0.6))
        ef.max_sharpe(risk_free_rate=0.0)
    theirs = pypfopt_weights(ef)
    reference = slsqp(lambda w: -(mu @ w) / np.sqrt(w @ cov @ w), 10, (0.05, 0.6), [])

    # Assert
    assert np.abs(ours - theirs).max() < TOLERANCE
    assert np.abs(ours - reference).max() < TOLERANCE
    assert ours.sum() == pytest.approx(1.0, abs=1e-9)
    assert ours.min() >= 0.05 - 1e-9 and ours.max() <= 0.6 + 1e-9


@pytest.mark.parametrize("hours", [200, 400, 719])
def test_re_solving_the_compiled_problem_equals_a_fresh_one(may_hourly: pd.DataFrame, hours: int) -> None:
    # Arrange: one problem solved on a first window, then re-solved on another
    rules = PortfolioConstraints(min_weight=0.0, max_weight=0.4)
    reused = MarkowitzProblem(10, "max_sharpe", rules)
    reused.solve(inputs(may_hourly.head(300), rules), rules)
    window = may_hourly.head(hours)

    # Act
    again = reused.solve(inputs(window, rules), rules).weights
    fresh = MarkowitzProblem(10, "max_sharpe", rules).solve(inputs(window, rules), rules).weights

    # Assert
    assert reused.solves == 2
    assert np.abs(again - fresh).max() < 1e-7


def test_min_volatility_matches_slsqp_and_pypfopt(march_hourly: pd.DataFrame) -> None:
    # Arrange
    rules = PortfolioConstraints(max_weight=0.5)
    cov = march_hourly.cov().to_numpy()

    # Act
    ours = MarkowitzProblem(9, "min_volatility", rules).solve(inputs(march_hourly, rules), rules).weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ef = frontier(march_hourly, (0.0, 0.5))
        ef.min_volatility()
    reference = slsqp(lambda w: 1e4 * (w @ cov @ w), 9, (0.0, 0.5), [])

    # Assert
    assert np.abs(ours - pypfopt_weights(ef)).max() < TOLERANCE
    assert np.abs(ours - reference).max() < TOLERANCE


def test_mean_variance_matches_pypfopt_quadratic_utility_long_short(march_hourly: pd.DataFrame) -> None:
    # Arrange: weights in [-1, 1], summing to one, risk aversion 200 (per-bar units)
    rules = PortfolioConstraints(max_weight=1.0, long_short=True)

    # Act
    ours = (
        MarkowitzProblem(9, "mean_variance", rules)
        .solve(inputs(march_hourly, rules, risk_aversion=200.0), rules)
        .weights
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ef = frontier(march_hourly, (-1.0, 1.0))
        ef.max_quadratic_utility(risk_aversion=200.0)

    # Assert
    assert np.abs(ours - pypfopt_weights(ef)).max() < TOLERANCE
    assert (ours < 0).any(), "negative expected returns should be shorted"


def test_efficient_return_and_risk_match_slsqp_and_beat_pypfopt(may_hourly: pd.DataFrame) -> None:
    # PyPortfolioOpt stops these two early here (weights summing to 0.9997 and 0.999998: its inputs are
    # not rescaled, so Clarabel's tolerances are loose for variances of 1e-5); SLSQP is the reference.
    # Arrange
    rules = PortfolioConstraints(max_weight=0.5)
    target_return = float(may_hourly.mean().median())
    target_risk = float(may_hourly.std().min()) * 1.1
    mu, cov = may_hourly.mean().to_numpy(), may_hourly.cov().to_numpy()

    # Act
    at_return = (
        MarkowitzProblem(10, "efficient_return", rules)
        .solve(inputs(may_hourly, rules, target=target_return), rules)
        .weights
    )
    at_risk = (
        MarkowitzProblem(10, "efficient_risk", rules)
        .solve(inputs(may_hourly, rules, target=target_risk), rules)
        .weights
    )
    least_variance = slsqp(
        lambda w: 1e4 * (w @ cov @ w),
        10,
        (0.0, 0.5),
        [{"type": "ineq", "fun": lambda w: 1e4 * (mu @ w - target_return)}],
    )
    most_return = slsqp(
        lambda w: -1e4 * (mu @ w),
        10,
        (0.0, 0.5),
        [{"type": "ineq", "fun": lambda w: 1e3 * (target_risk - np.sqrt(w @ cov @ w))}],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ef_risk = frontier(may_hourly, (0.0, 0.5))
        ef_risk.efficient_risk(target_risk)

    # Assert
    assert np.abs(at_return - least_variance).max() < TOLERANCE
    assert np.abs(at_risk - most_return).max() < TOLERANCE
    assert np.abs(at_risk - pypfopt_weights(ef_risk)).max() < 1e-3
    assert mu @ at_risk >= mu @ pypfopt_weights(ef_risk)
    assert np.sqrt(at_risk @ cov @ at_risk) <= target_risk * (1 + 1e-6)
    assert mu @ at_return >= target_return * (1 - 1e-6)


def test_costs_keep_the_current_weights_when_trading_costs_more_than_it_gains(may_hourly: pd.DataFrame) -> None:
    # Arrange: hold equal weights; a cost of 1% per unit traded dwarfs hourly returns of ~1e-4
    rules = PortfolioConstraints(max_weight=0.6, transaction_cost=0.01)
    current = np.full(10, 0.1)
    cheap = PortfolioConstraints(max_weight=0.6, transaction_cost=1e-7)

    # Act
    held = MarkowitzProblem(10, "max_sharpe", rules).solve(inputs(may_hourly, rules, current=current, cost=0.01), rules)
    traded = MarkowitzProblem(10, "max_sharpe", cheap).solve(
        inputs(may_hourly, cheap, current=current, cost=1e-7), cheap
    )

    # Assert
    assert np.abs(held.weights - current).max() < 1e-6
    assert np.abs(traded.weights - current).sum() > 0.1


def test_turnover_limit_bounds_the_weight_change(may_hourly: pd.DataFrame) -> None:
    # Arrange
    rules = PortfolioConstraints(max_weight=0.6, turnover=0.2)
    current = np.full(10, 0.1)

    # Act
    weights = MarkowitzProblem(10, "max_sharpe", rules).solve(inputs(may_hourly, rules, current=current), rules).weights

    # Assert
    assert np.abs(weights - current).sum() <= 0.2 + 1e-7
    assert np.abs(weights - current).sum() > 0.19


def test_gross_and_net_exposure_limits_hold_long_short(march_hourly: pd.DataFrame) -> None:
    # Arrange: a free net exposure within [-0.5, 0.5] and gross leverage 1.5
    rules = PortfolioConstraints(
        long_short=True, max_weight=1.0, gross_leverage=1.5, net_exposure=None, net_exposure_bounds=(-0.5, 0.5)
    )

    # Act
    weights = (
        MarkowitzProblem(9, "mean_variance", rules)
        .solve(inputs(march_hourly, rules, risk_aversion=20.0), rules)
        .weights
    )

    # Assert
    assert np.abs(weights).sum() <= 1.5 + 1e-7
    assert -0.5 - 1e-7 <= weights.sum() <= 0.5 + 1e-7
    assert np.abs(weights).sum() > 1.4, "a low risk aversion should use the leverage"


def test_per_asset_caps_tighten_the_bounds(may_hourly: pd.DataFrame) -> None:
    # Arrange: the risk layer caps ETHUSDT (the best performer) at 5%
    rules = PortfolioConstraints(max_weight=0.6)
    data = inputs(may_hourly, rules)
    upper = data.upper.copy()
    upper[1] = 0.05
    capped = ProblemInputs(data.expected_returns, data.covariance, data.lower, upper, data.current_weights, data.costs)

    # Act
    weights = MarkowitzProblem(10, "max_sharpe", rules).solve(capped, rules).weights

    # Assert
    assert weights[1] <= 0.05 + 1e-9


def test_long_only_max_sharpe_without_a_positive_return_is_a_solver_failure(march_hourly: pd.DataFrame) -> None:
    # Arrange: in March 2025 every symbol but BNB lost; with 5% floors no long-only mix earns anything
    rules = PortfolioConstraints(min_weight=0.05, max_weight=0.6)

    # Act / Assert
    with pytest.raises(SolverFailedError, match=r"(?i)infeasible"):
        MarkowitzProblem(9, "max_sharpe", rules).solve(inputs(march_hourly, rules), rules)


def test_max_sharpe_needs_a_fixed_positive_net_exposure() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="net_exposure"):
        MarkowitzProblem(3, "max_sharpe", PortfolioConstraints(net_exposure=None))


def test_bad_constraints_are_named() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match=r"min_weight 0\.7 is above max_weight 0\.6"):
        PortfolioConstraints(min_weight=0.7, max_weight=0.6)
    with pytest.raises(ValueError, match="unknown constraint max_wieght"):
        PortfolioConstraints.from_mapping({"max_wieght": 0.6})
    with pytest.raises(ValueError, match="turnover must be positive"):
        PortfolioConstraints(turnover=0.0)


def test_a_covariance_with_nan_is_refused_before_the_solver(may_hourly: pd.DataFrame) -> None:
    # Arrange
    covariance = may_hourly.cov().to_numpy().copy()
    covariance[2, 3] = np.nan

    # Act / Assert
    with pytest.raises(SolverFailedError, match="NaN"):
        covariance_factor(covariance)


def test_two_hundred_assets_from_lagged_real_returns_solve(make_minute_returns) -> None:
    # Arrange: asset (symbol, j) = the symbol's 1m returns lagged by j days, j = 0..19 (real data only)
    returns = make_minute_returns(21 * 1440).to_numpy()
    blocks = [returns[20 * 1440 - j * 1440 : 21 * 1440 - j * 1440] for j in range(20)]
    panel = np.hstack(blocks)
    mu = panel.mean(axis=0)
    n = panel.shape[1]
    rules = PortfolioConstraints(max_weight=0.05)
    data = ProblemInputs(mu, np.cov(panel, rowvar=False), np.zeros(n), np.full(n, 0.05), np.zeros(n), np.zeros(n))

    # Act
    solution = MarkowitzProblem(n, "max_sharpe", rules).solve(data, rules)

    # Assert
    assert n == 200
    assert solution.weights.sum() == pytest.approx(1.0, abs=1e-7)
    assert solution.weights.max() <= 0.05 + 1e-8


# --- the fallback chain ---------------------------------------------------------------------------


COSTLY = PortfolioConstraints(max_weight=0.3, transaction_cost=0.0006)


def test_a_solver_error_falls_back_to_the_alternative_solver_with_the_same_weights(may_hourly: pd.DataFrame) -> None:
    # Arrange: Clarabel stopped after 2 iterations (an interior-point method needs about 10)
    data = inputs(may_hourly, COSTLY, current=np.full(10, 0.1), cost=0.0006)
    reference = MarkowitzProblem(10, "max_sharpe", COSTLY).solve(data, COSTLY)
    starved = MarkowitzProblem(10, "max_sharpe", COSTLY, max_iterations=2)

    # Act
    solution = solve_with_fallbacks(starved, data, COSTLY)

    # Assert
    assert solution.method == "alternative"
    assert len(solution.failures) == 1
    np.testing.assert_allclose(solution.weights, reference.weights, atol=1e-6)


def test_a_failed_compiled_re_solve_also_falls_back(may_hourly: pd.DataFrame) -> None:
    # Arrange: a compiled problem whose direct path runs out of iterations after its first solve
    data = inputs(may_hourly, COSTLY, current=np.full(10, 0.1), cost=0.0006)
    problem = MarkowitzProblem(10, "max_sharpe", COSTLY)
    first = solve_with_fallbacks(problem, data, COSTLY)
    assert problem._direct is not None
    problem._direct._settings.max_iter = 2
    problem._direct._solver = None

    # Act
    again = solve_with_fallbacks(problem, data, COSTLY)

    # Assert
    assert first.method == "compiled"
    assert again.method == "alternative" and "MaxIterations" in again.failures[0]
    np.testing.assert_allclose(again.weights, first.weights, atol=1e-6)


def test_when_both_solvers_fail_the_shrunk_minimum_variance_weights_are_used(may_hourly: pd.DataFrame) -> None:
    # Arrange
    data = inputs(may_hourly, COSTLY, current=np.full(10, 0.1), cost=0.0006)
    starved = MarkowitzProblem(10, "max_sharpe", COSTLY, max_iterations=2, alternative_max_iterations=2)

    # Act
    solution = solve_with_fallbacks(starved, data, COSTLY)

    # Assert
    assert solution.method == "minimum_variance"
    assert len(solution.failures) == 2
    assert constraint_violation(solution.weights, data, COSTLY) == ""
    np.testing.assert_allclose(solution.weights, minimum_variance_weights(data, COSTLY))


def test_minimum_variance_weights_are_the_closed_form_when_no_bound_binds(may_hourly: pd.DataFrame) -> None:
    # Arrange: bounds far away, so only the sum of weights constrains them
    rules = PortfolioConstraints(min_weight=-5.0, max_weight=5.0)
    data = inputs(may_hourly, rules)
    covariance = may_hourly.cov().to_numpy()
    average = np.mean(np.diag(covariance))
    shrunk = (1 - MINIMUM_VARIANCE_SHRINKAGE) * covariance + MINIMUM_VARIANCE_SHRINKAGE * average * np.eye(10)
    direction = np.linalg.solve(shrunk, np.ones(10))

    # Act
    weights = minimum_variance_weights(data, rules)

    # Assert
    np.testing.assert_allclose(weights, direction / direction.sum(), atol=1e-9)


def test_minimum_variance_weights_keep_the_bounds_and_the_net_exposure(may_hourly: pd.DataFrame) -> None:
    # Arrange: a 12% cap binds on the low-volatility symbols
    rules = PortfolioConstraints(max_weight=0.12)
    data = inputs(may_hourly, rules)

    # Act
    weights = minimum_variance_weights(data, rules)

    # Assert
    assert weights.sum() == pytest.approx(1.0, abs=1e-9)
    assert weights.min() >= 0 and weights.max() <= 0.12 + 1e-12
    assert np.isclose(weights, 0.12).any()


def test_an_ill_conditioned_covariance_still_gives_weights_within_the_constraints(may_hourly: pd.DataFrame) -> None:
    # Arrange: BTC twice (the copy off by 1e-9 of noise) and a symbol with a billionth of the variance
    panel = may_hourly.to_numpy().copy()
    panel = np.column_stack([panel, panel[:, 0] + 1e-9 * np.sin(np.arange(len(panel)))])
    panel[:, 3] = panel[:, 3] * 1e-5 + 1e-4
    n = panel.shape[1]
    rules = PortfolioConstraints(max_weight=0.3, transaction_cost=0.0006)
    data = ProblemInputs(
        panel.mean(axis=0), np.cov(panel, rowvar=False), np.zeros(n), np.full(n, 0.3), np.full(n, 1 / n),
        np.full(n, 0.0006),
    )  # fmt: skip

    # Act
    solution = solve_with_fallbacks(MarkowitzProblem(n, "max_sharpe", rules), data, rules)

    # Assert
    assert np.linalg.cond(data.covariance) > 1e10
    assert constraint_violation(solution.weights, data, rules) == ""


def test_an_infeasible_problem_is_not_handed_to_the_fallbacks(march_hourly: pd.DataFrame) -> None:
    # Arrange: no long-only mix with 5% floors earns anything in March 2025
    rules = PortfolioConstraints(min_weight=0.05, max_weight=0.6)

    # Act / Assert
    with pytest.raises(InfeasibleProblemError, match=r"(?i)infeasible"):
        solve_with_fallbacks(MarkowitzProblem(9, "max_sharpe", rules), inputs(march_hourly, rules), rules)


@pytest.mark.parametrize(
    ("objective", "rules", "target", "reason"),
    [
        (
            "min_volatility",
            PortfolioConstraints(min_weight=0.2, max_weight=0.6),
            None,
            "the 10 weights' lower bounds (min_weight) sum to 2, above the net exposure 1",
        ),
        (
            "min_volatility",
            PortfolioConstraints(max_weight=0.05),
            None,
            "upper bounds (max_weight, tightened by the risk layer's caps) sum to 0.5, below the net exposure 1",
        ),
        (
            "min_volatility",
            PortfolioConstraints(long_short=True, max_weight=0.5, gross_leverage=0.8),
            None,
            "need a gross leverage of at least 1, above the limit 0.8",
        ),
        ("efficient_return", PortfolioConstraints(max_weight=0.6), 1.0, "the target return 1 a bar is above the best"),
    ],
    ids=["floors above the net exposure", "caps below it", "gross below the net", "target out of reach"],
)
def test_an_infeasible_problem_says_which_constraints_leave_no_solution(
    may_hourly: pd.DataFrame, objective: str, rules: PortfolioConstraints, target: float | None, reason: str
) -> None:
    # Act / Assert
    with pytest.raises(InfeasibleProblemError, match=re.escape(reason)):
        solve_with_fallbacks(MarkowitzProblem(10, objective, rules), inputs(may_hourly, rules, target=target), rules)


def test_max_sharpe_without_a_positive_return_says_so(march_hourly: pd.DataFrame) -> None:
    # Arrange: in March 2025 every symbol but BNB lost; with 5% floors no long-only mix earns anything
    rules = PortfolioConstraints(min_weight=0.05, max_weight=0.6)

    # Act / Assert
    with pytest.raises(InfeasibleProblemError, match="no weights within the bounds have a positive expected return"):
        solve_with_fallbacks(MarkowitzProblem(9, "max_sharpe", rules), inputs(march_hourly, rules), rules)


def test_when_every_step_fails_the_error_names_each_failure(may_hourly: pd.DataFrame) -> None:
    # Arrange
    data = inputs(may_hourly, COSTLY, cost=0.0006)
    broken = ProblemInputs(
        data.expected_returns, np.where(np.eye(10) > 0, np.nan, data.covariance), data.lower, data.upper,
        data.current_weights, data.costs,
    )  # fmt: skip

    # Act / Assert
    with pytest.raises(SolverFailedError, match=r"NaN.*; .*NaN.*; minimum variance: .*NaN"):
        solve_with_fallbacks(MarkowitzProblem(10, "max_sharpe", COSTLY), broken, COSTLY)


def test_minimum_variance_refuses_bounds_that_cannot_hold_the_net_exposure(may_hourly: pd.DataFrame) -> None:
    # Arrange: ten assets capped at 5% cannot sum to one
    rules = PortfolioConstraints(max_weight=0.05)

    # Act / Assert
    with pytest.raises(SolverFailedError, match="cannot sum to the net exposure"):
        minimum_variance_weights(inputs(may_hourly, rules), rules)


@pytest.mark.parametrize("objective", ["max_sharpe", "min_volatility", "mean_variance", "efficient_return"])
def test_the_quadratic_form_re_solves_to_the_factor_forms_weights(may_hourly: pd.DataFrame, objective: str) -> None:
    # Arrange: costs and a turnover limit; first solve on one window, re-solves on two others
    rules = PortfolioConstraints(max_weight=0.3, transaction_cost=0.0006, turnover=1.5)
    target = float(may_hourly.mean().mean()) if objective == "efficient_return" else None
    problems = [MarkowitzProblem(10, objective, rules, quadratic_form=form) for form in (True, False)]
    for problem in problems:
        problem.solve(inputs(may_hourly.head(300), rules, current=np.full(10, 0.1), cost=0.0006, target=target), rules)

    # Act
    solved = [
        [problem.solve(inputs(window, rules, current=np.full(10, 0.1), cost=0.0006, target=target), rules).weights
         for window in (may_hourly.head(200), may_hourly.head(600))]
        for problem in problems
    ]  # fmt: skip

    # Assert
    assert type(problems[0]._direct).__name__ == "_QuadraticPath"
    assert type(problems[1]._direct).__name__ == "_DirectPath"
    np.testing.assert_allclose(solved[0], solved[1], atol=1e-7)
