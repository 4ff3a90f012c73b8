"""Markowitz problems as parameterized (DPP) cvxpy programs, compiled once and re-solved.

:class:`MarkowitzProblem` builds one cvxpy problem per number of assets,
objective and set of active constraints, with every number in it (expected
returns, the covariance factor, bounds, exposure limits, current weights,
costs, targets) a ``cvxpy.Parameter``. cvxpy compiles it once; a re-solve only
writes new parameter values, lets cvxpy map them onto the compiled problem
data and hands that data to Clarabel, whose solver object is updated in place
(same sparsity, so no new symbolic factorization). The first solve of each
problem also goes through ``Problem.solve`` and checks that both paths give
the same weights; if they ever differ, the problem keeps using
``Problem.solve``.

Objectives (``w`` the weights, ``mu`` the expected returns, ``F`` an upper
Cholesky factor of the covariance, ``c`` linear costs of trading away from the
current weights ``w0``; net return ``mu'w - c'|w - w0|``):

- ``max_sharpe``: the largest net return per unit of volatility. It is solved
  homogenized: ``w = y / k``, minimize ``|F y|^2`` with net return of ``y``
  equal to one (at least one, when there are costs) and every constraint
  multiplied by ``k``, which keeps the problem convex and DPP.
- ``min_volatility``: the smallest variance (costs, if any, as a penalty in
  variance units).
- ``mean_variance``: the largest ``net return - risk_aversion / 2 x variance``.
- ``efficient_return``: the smallest variance with a net return of at least the target.
- ``efficient_risk``: the largest net return with a volatility of at most the target.

From :data:`INTERIOR_POINT_FROM` assets, ``max_sharpe`` with costs is
re-solved by a structured dense interior-point method
(:mod:`keel.portfolio.interior_point`) once it reproduced the first
(cvxpy) solve; Clarabel's compiled path stays behind it as the reference and
takes over whenever it does not converge.

Inputs are rescaled so that the average asset variance is one before they
reach the solver (the weights do not change; the targets, costs and risk
aversion are rescaled with them), which keeps Clarabel well conditioned on
per-minute returns whose variances are around 1e-6.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import clarabel
import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from cvxpy.lin_ops import CONSTANT_ID
from threadpoolctl import ThreadpoolController

from keel.portfolio.interior_point import InteriorPointFailedError, SharpeWithCosts, solve_max_sharpe_with_costs

Objective = Literal["max_sharpe", "min_volatility", "mean_variance", "efficient_return", "efficient_risk"]
OBJECTIVES: tuple[str, ...] = ("max_sharpe", "min_volatility", "mean_variance", "efficient_return", "efficient_risk")
_TARGETED = frozenset({"efficient_return", "efficient_risk"})
_ACCEPTED = frozenset({"Solved", "AlmostSolved"})
_INFEASIBLE = frozenset({"PrimalInfeasible", "DualInfeasible", "AlmostPrimalInfeasible", "AlmostDualInfeasible"})
_CVXPY_INFEASIBLE = frozenset({cp.INFEASIBLE, cp.UNBOUNDED, cp.INFEASIBLE_INACCURATE, cp.UNBOUNDED_INACCURATE})
FEASIBILITY_TOLERANCE = 1e-6
"""How far (in weight) an alternative solver's or the minimum-variance weights may stray outside a constraint."""
CLARABEL_TOLERANCES = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}
"""Tighter than Clarabel's defaults (1e-8): the factor and the quadratic form then give the same weights to
well below 1e-7, and both closer to an SLSQP reference than the defaults did (1e-8 instead of 2e-7)."""
MINIMUM_VARIANCE_SHRINKAGE = 0.1
"""The minimum-variance fallback's shrinkage of the covariance towards its average variance times the identity."""
INTERIOR_POINT_FROM = 128
"""Assets from which max Sharpe with costs is solved by :mod:`keel.portfolio.interior_point` (measured: 15 ms
against Clarabel's 30 ms at N = 200, but 3.7 ms against 1.3 ms at N = 50, where Python's per-iteration cost rules)."""


class SolverFailedError(RuntimeError):
    """The solver found no usable weights; keep the previous weights and look at the reason."""


class InfeasibleProblemError(SolverFailedError):
    """The problem itself has no solution (no weights meet the constraints, or none earns): no solver helps."""


_OPTIONAL_NUMBERS = frozenset({"min_weight", "gross_leverage", "net_exposure", "turnover"})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _check_types(constraints: PortfolioConstraints) -> None:
    """Raise naming the first constraint whose value is not of its type (a string ``"0.05"``, ``True`` as a weight)."""
    for field in fields(constraints):
        name, value = field.name, getattr(constraints, field.name)
        if name == "long_short":
            good, wanted = isinstance(value, bool | np.bool_), "true or false"
        elif name == "net_exposure_bounds":
            good = value is None or (
                isinstance(value, tuple) and len(value) == 2 and all(_is_number(end) for end in value)
            )
            wanted = "None or a (lowest, highest) pair of numbers"
        elif name in _OPTIONAL_NUMBERS:
            good, wanted = value is None or _is_number(value), "None or a number"
        else:
            good, wanted = _is_number(value), "a number"
        if not good:
            raise ValueError(f"constraint {name} must be {wanted}, got {value!r}")


@dataclass(frozen=True, slots=True)
class PortfolioConstraints:
    """Limits on the weights (signed fractions of equity).

    Parameters
    ----------
    min_weight
        Lower bound of every weight; None means 0 (long only) or
        ``-max_weight`` (long/short).
    max_weight
        Upper bound of every weight.
    long_short
        Allow negative weights (sets the default ``min_weight``).
    gross_leverage
        Largest sum of absolute weights; None for no limit.
    net_exposure
        The sum of weights, exactly; None leaves it free within ``net_exposure_bounds``.
    net_exposure_bounds
        ``(lowest, highest)`` sum of weights when ``net_exposure`` is None.
    turnover
        Largest sum of absolute weight changes from the current weights; None for no limit.
    transaction_cost
        Linear cost per unit of weight traded, in per-bar return units
        (taker fee + slippage, e.g. 0.0006); 0 for none.
    """

    min_weight: float | None = None
    max_weight: float = 1.0
    long_short: bool = False
    gross_leverage: float | None = None
    net_exposure: float | None = 1.0
    net_exposure_bounds: tuple[float, float] | None = None
    turnover: float | None = None
    transaction_cost: float = 0.0

    def __post_init__(self) -> None:
        _check_types(self)
        for field in fields(self):
            value = getattr(self, field.name)
            numbers = value if isinstance(value, tuple) else (value,)
            for number in numbers:
                if isinstance(number, float | int) and not isinstance(number, bool) and not math.isfinite(number):
                    raise ValueError(f"constraint {field.name} must be finite, got {value}")
        if self.lower_bound > self.max_weight:
            raise ValueError(
                f"min_weight {self.lower_bound} is above max_weight {self.max_weight}: no weight can lie between "
                "them; lower min_weight or raise max_weight"
            )
        for name in ("gross_leverage", "turnover"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"constraint {name} must be positive, got {value}")
        if self.transaction_cost < 0:
            raise ValueError(f"transaction_cost must not be negative, got {self.transaction_cost}")
        if self.net_exposure_bounds is not None:
            low, high = self.net_exposure_bounds
            if low > high:
                raise ValueError(f"net_exposure_bounds ({low}, {high}) has its low end above its high end")

    @property
    def lower_bound(self) -> float:
        """Return the effective lower bound of every weight."""
        if self.min_weight is not None:
            return self.min_weight
        return -self.max_weight if self.long_short else 0.0

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any] | None, base: PortfolioConstraints | None = None
    ) -> PortfolioConstraints:
        """Return ``base`` (default constraints when None) with the keys of ``values`` replaced.

        Raises
        ------
        ValueError
            For an unknown key, naming the known ones, or a value of the wrong type or out of range, naming it.
        """
        start = cls() if base is None else base
        if not values:
            return start
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown constraint {', '.join(unknown)}; expected one of {', '.join(sorted(known))}")
        update = dict(values)
        if isinstance(update.get("net_exposure_bounds"), list):
            update["net_exposure_bounds"] = tuple(update["net_exposure_bounds"])
        return replace(start, **update)


@dataclass(frozen=True, slots=True)
class ProblemInputs:
    """The numbers of one solve, in per-bar units.

    Parameters
    ----------
    expected_returns
        ``mu``, one per asset.
    covariance
        The ``(N, N)`` covariance.
    lower, upper
        Per-asset weight bounds (the constraints' bounds tightened by the risk layer's caps).
    current_weights
        ``w0`` for turnover and costs.
    costs
        Per-asset linear cost rates.
    risk_aversion
        ``mean_variance``'s risk aversion.
    target
        Net return (``efficient_return``) or volatility (``efficient_risk``) target.
    """

    expected_returns: np.ndarray
    covariance: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    current_weights: np.ndarray
    costs: np.ndarray
    risk_aversion: float = 1.0
    target: float | None = None


@dataclass(frozen=True, slots=True)
class Solution:
    """Weights found by one solve, with the solver's status and iteration count."""

    weights: np.ndarray
    status: str
    iterations: int
    method: str = "compiled"
    failures: tuple[str, ...] = ()


def structure_key(n_assets: int, objective: str, constraints: PortfolioConstraints) -> tuple[object, ...]:
    """Return what decides a problem's shape (its parameters' values do not)."""
    net_mode = "fixed" if constraints.net_exposure is not None else "range" if constraints.net_exposure_bounds else ""
    return (
        n_assets,
        objective,
        constraints.gross_leverage is not None,
        net_mode,
        constraints.turnover is not None,
        constraints.transaction_cost > 0,
    )


def covariance_factor(covariance: np.ndarray) -> np.ndarray:
    """Return an upper-triangular ``U`` with ``U'U = covariance`` (a tiny ridge if it is only semidefinite).

    Raises
    ------
    SolverFailedError
        If the matrix is not symmetric positive semidefinite.
    """
    matrix = np.asarray(covariance, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise SolverFailedError("covariance holds NaN or infinite values")
    matrix = 0.5 * (matrix + matrix.T)
    scale = float(np.mean(np.diag(matrix)))
    if not scale > 0:
        raise SolverFailedError("covariance has no positive variance")
    for ridge in (0.0, 1e-12, 1e-10, 1e-8):
        try:
            return _cholesky(matrix + ridge * scale * np.eye(len(matrix))).T
        except np.linalg.LinAlgError:
            continue
    raise SolverFailedError("covariance is not positive semidefinite")


_BLAS_THREADS_FROM = 64
_blas: list[ThreadpoolController] = []


def _cholesky(matrix: np.ndarray) -> np.ndarray:
    """Return the lower Cholesky factor, with BLAS on one thread for large matrices.

    OpenBLAS threads woken right after Clarabel's own worker threads ran were
    measured stalling a 200 x 200 factorization for 250 ms on two cores; one
    thread does it in a fraction of a millisecond.
    """
    if len(matrix) < _BLAS_THREADS_FROM:
        return np.linalg.cholesky(matrix)
    if not _blas:
        _blas.append(ThreadpoolController())
    with _blas[0].limit(limits=1, user_api="blas"):
        return np.linalg.cholesky(matrix)


class MarkowitzProblem:
    """One compiled Markowitz problem, re-solved with new numbers.

    Parameters
    ----------
    n_assets
        Number of assets.
    objective
        One of :data:`OBJECTIVES`.
    constraints
        Decides which constraints exist (their values are set per solve).
    max_iterations, alternative_max_iterations
        Clarabel's and the alternative solver's iteration limits (their
        defaults when None); reaching one is a solver failure.
    quadratic_form
        Re-solve with the variance as a quadratic form (:class:`_QuadraticPath`,
        about twice as fast at N = 200) when it reproduces the first solve;
        False keeps the factor form.
    interior_point
        For max Sharpe with costs and no gross-leverage or turnover limit:
        re-solve with the structured dense interior-point method
        (:mod:`keel.portfolio.interior_point`, ``Solution.method``
        ``"interior_point"``) when it reproduces the first solve, falling back
        to the compiled Clarabel path whenever it does not converge. None
        (default) uses it from :data:`INTERIOR_POINT_FROM` assets, True at
        any size, False never.
    """

    def __init__(
        self,
        n_assets: int,
        objective: str,
        constraints: PortfolioConstraints,
        *,
        max_iterations: int | None = None,
        alternative_max_iterations: int | None = None,
        quadratic_form: bool = True,
        interior_point: bool | None = None,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
        if n_assets < 1:
            raise ValueError(f"a portfolio needs at least one asset, got {n_assets}")
        if objective == "max_sharpe" and (constraints.net_exposure is None or constraints.net_exposure <= 0):
            raise ValueError(
                "max_sharpe needs a positive fixed net_exposure (the sum of weights) to set the portfolio's scale; "
                "use mean_variance or efficient_risk for a free net exposure"
            )
        self.n_assets = n_assets
        self.objective = objective
        self.max_iterations = max_iterations
        self.alternative_max_iterations = alternative_max_iterations
        self.quadratic_form = quadratic_form
        self.key = structure_key(n_assets, objective, constraints)
        self._has_costs = constraints.transaction_cost > 0
        self._params: dict[str, cp.Parameter] = {}
        self._upper = np.triu_indices(n_assets)
        self._constraints = constraints
        self._problem, self._weights, self._scale_variable = self._build(constraints)
        self._direct: _DirectPath | None = None
        self._checked = False
        self._interior_wanted = (
            (n_assets >= INTERIOR_POINT_FROM if interior_point is None else interior_point)
            and objective == "max_sharpe"
            and self._has_costs
            and constraints.gross_leverage is None
            and constraints.turnover is None
        )
        self._interior = False
        self.solves = 0

    # --- building -----------------------------------------------------------------------

    def _parameter(self, name: str, shape: tuple[int, ...] | int = ()) -> cp.Parameter:
        # No attributes (nonneg, sparsity): cvxpy would swap such parameters for
        # reduced copies, and the direct path writes values by parameter id.
        # A second build (the quadratic form) shares the first one's parameters.
        if name in self._params:
            return self._params[name]
        parameter = cp.Parameter(shape, name=name)
        self._params[name] = parameter
        return parameter

    def _triangular(self, name: str) -> Any:
        """Return an upper-triangular matrix expression whose entries are one vector parameter.

        Only the upper triangle reaches the compiled problem, so the solver's
        matrix has ``N (N + 1) / 2`` entries from it, not ``N^2`` with zeros.
        """
        n = self.n_assets
        rows, columns = self._upper
        count = len(rows)
        scatter = sp.csc_matrix((np.ones(count), (columns * n + rows, np.arange(count))), shape=(n * n, count))
        return cp.reshape(scatter @ self._parameter(name, count), (n, n), order="F")

    def _build(
        self, constraints: PortfolioConstraints, quadratic_form: bool = False
    ) -> tuple[cp.Problem, cp.Variable, cp.Variable | None]:
        """Return the problem, its weights and its scale variable.

        With ``quadratic_form`` the objective's variance is ``y' M y`` with a
        placeholder ``M`` (:func:`quadratic_placeholder`) that
        :class:`_QuadraticPath` overwrites with the covariance at each solve.
        """
        n = self.n_assets
        mu = self._parameter("mu", n)
        factor = self._triangular("factor")
        lower = self._parameter("lower", n)
        upper = self._parameter("upper", n)
        y = cp.Variable(n, name="y")
        homogenized = self.objective == "max_sharpe"
        # In max_sharpe every constant is multiplied by the scale variable k (w = y / k).
        k = cp.Variable(name="k") if homogenized else None
        unit: Any = k if k is not None else 1.0
        rules: list[Any] = [y >= cp.multiply(lower, unit), y <= cp.multiply(upper, unit)]
        if k is not None:
            rules.append(k >= 0)
        traded = self._traded(constraints, y, unit, rules)
        drag = 0 if traded is None else self._parameter("costs", n) @ traded
        if constraints.gross_leverage is not None:
            rules.append(cp.norm1(y) <= self._parameter("gross") * unit)
        if constraints.net_exposure is not None:
            rules.append(cp.sum(y) == self._parameter("net") * unit)
        elif constraints.net_exposure_bounds is not None:
            rules.append(cp.sum(y) >= self._parameter("net_low") * unit)
            rules.append(cp.sum(y) <= self._parameter("net_high") * unit)
        if quadratic_form:
            variance = cp.quad_form(y, cp.psd_wrap(quadratic_placeholder(n)))
        else:
            variance = cp.sum_squares(factor @ y)
        objective = self._objective(mu, factor, y, variance, drag, rules, quadratic_form)
        return cp.Problem(objective, rules), y, k

    def _traded(self, constraints: PortfolioConstraints, y: cp.Variable, unit: Any, rules: list[Any]) -> Any:
        """Add ``t >= |y - w0 x unit|`` when turnover or costs need it; return ``t`` or None."""
        if constraints.turnover is None and not self._has_costs:
            return None
        current = self._parameter("current", self.n_assets)
        traded = cp.Variable(self.n_assets, name="traded")
        change = y - cp.multiply(current, unit)
        rules += [traded >= change, traded >= -change]
        if constraints.turnover is not None:
            rules.append(cp.sum(traded) <= self._parameter("turnover") * unit)
        return traded

    def _objective(
        self,
        mu: cp.Parameter,
        factor: Any,
        y: cp.Variable,
        variance: Any,
        drag: Any,
        rules: list[Any],
        quadratic_form: bool = False,
    ) -> cp.Minimize:
        objective = self.objective
        if objective == "max_sharpe":
            rules.append(mu @ y - drag >= 1 if self._has_costs else mu @ y == 1)
            return cp.Minimize(variance)
        if objective == "min_volatility":
            return cp.Minimize(variance + drag)
        if objective == "mean_variance":
            # The risk aversion is folded into a second factor so every product stays DPP.
            weighted = self._triangular("risk_factor")
            risk = variance if quadratic_form else cp.sum_squares(weighted @ y)
            return cp.Minimize(risk - mu @ y + drag)
        target = self._parameter("target")
        if objective == "efficient_return":
            rules.append(mu @ y - drag >= target)
            return cp.Minimize(variance)
        rules.append(cp.norm(factor @ y, 2) <= target)
        return cp.Minimize(drag - mu @ y)

    # --- solving --------------------------------------------------------------------------

    def solve(self, inputs: ProblemInputs, constraints: PortfolioConstraints) -> Solution:
        """Write the inputs into the parameters and solve.

        Raises
        ------
        SolverFailedError
            If the inputs are unusable or the solver reports anything but a solution.
        """
        values = self._values(inputs, constraints)
        self.solves += 1
        if self._interior:
            try:
                return self._solve_interior(values)
            except InteriorPointFailedError:
                pass  # the compiled path below is the reference; it also tells an infeasible problem apart
        if self._direct is not None:
            return self._direct.solve({self._params[name].id: value for name, value in values.items()})
        for name, value in values.items():
            self._params[name].value = value
        solution = self._solve_with_cvxpy()
        if not self._checked:
            self._checked = True
            quadratic = _QuadraticPath.compile_quadratic(self, solution) if self.quadratic_form else None
            self._direct = quadratic or _DirectPath.compile(self, solution)
            self._interior = self._interior_wanted and self._interior_reproduces(values, solution)
        return solution

    def _solve_interior(self, values: Mapping[str, np.ndarray]) -> Solution:
        factor = np.zeros((self.n_assets, self.n_assets))
        factor[self._upper] = values["factor"]
        problem = SharpeWithCosts(
            factor,
            values["mu"],
            values["costs"],
            values["current"],
            values["lower"],
            values["upper"],
            float(values["net"]),
        )
        result = solve_max_sharpe_with_costs(problem)
        try:
            weights = _unscale(result.y, result.k)
        except SolverFailedError as error:
            raise InteriorPointFailedError(str(error)) from error
        return Solution(weights, "Solved", result.iterations, method="interior_point")

    def _interior_reproduces(self, values: Mapping[str, np.ndarray], reference: Solution) -> bool:
        try:
            trial = self._solve_interior(values)
        except InteriorPointFailedError:
            return False
        return bool(np.allclose(trial.weights, reference.weights, rtol=0, atol=1e-7))

    def _values(self, inputs: ProblemInputs, constraints: PortfolioConstraints) -> dict[str, np.ndarray]:
        """Return every parameter's value for ``inputs``, rescaled to unit average variance."""
        n = self.n_assets
        mu = np.asarray(inputs.expected_returns, dtype=np.float64)
        if mu.shape != (n,) or not np.isfinite(mu).all():
            raise SolverFailedError(f"expected returns must be {n} finite numbers")
        if self.objective == "max_sharpe" and not mu.any():
            raise InfeasibleProblemError("every expected return is zero: max_sharpe has no direction")
        factor = covariance_factor(inputs.covariance)
        if factor.shape != (n, n):
            raise SolverFailedError(f"covariance must be {n} x {n}, got {factor.shape}")
        # s multiplies every return-unit number; weights do not change.
        s = 1.0 / math.sqrt(float(np.mean(np.sum(factor * factor, axis=0))))
        values: dict[str, Any] = {
            "mu": mu * s,
            "factor": (factor * s)[self._upper],
            "lower": np.asarray(inputs.lower, dtype=np.float64),
            "upper": np.asarray(inputs.upper, dtype=np.float64),
        }
        cost_scale = s * s if self.objective == "min_volatility" else s
        optional = {
            "costs": np.asarray(inputs.costs, dtype=np.float64) * cost_scale,
            "current": np.asarray(inputs.current_weights, dtype=np.float64),
            "gross": constraints.gross_leverage,
            "net": constraints.net_exposure,
            "net_low": None if constraints.net_exposure_bounds is None else constraints.net_exposure_bounds[0],
            "net_high": None if constraints.net_exposure_bounds is None else constraints.net_exposure_bounds[1],
            "turnover": constraints.turnover,
        }
        if self.objective == "mean_variance":
            if not inputs.risk_aversion > 0:
                raise SolverFailedError(f"risk aversion must be positive, got {inputs.risk_aversion}")
            optional["risk_factor"] = (factor * s * math.sqrt(inputs.risk_aversion / (2.0 * s)))[self._upper]
        if self.objective in _TARGETED:
            if inputs.target is None or not math.isfinite(inputs.target):
                raise SolverFailedError(f"{self.objective} needs a finite target")
            optional["target"] = inputs.target * s
        values.update({name: value for name, value in optional.items() if name in self._params})
        return {name: np.asarray(value, dtype=np.float64) for name, value in values.items()}

    def solve_alternative(self, inputs: ProblemInputs, constraints: PortfolioConstraints) -> Solution:
        """Solve the same problem with another solver (OSQP, or SCS when a cone constraint needs it).

        The weights are accepted only within :data:`FEASIBILITY_TOLERANCE` of
        every constraint.

        Raises
        ------
        SolverFailedError
            If the inputs are unusable, the solver fails or its weights break a constraint.
        """
        values = self._values(inputs, constraints)
        for name, value in values.items():
            self._params[name].value = value
        if self.objective == "efficient_risk":
            options: dict[str, Any] = {"solver": cp.SCS, "eps_abs": 1e-9, "eps_rel": 1e-9}
        else:
            options = {"solver": cp.OSQP, "eps_abs": 1e-10, "eps_rel": 1e-10, "polish": True}
        if self.alternative_max_iterations is not None:
            options["max_iters" if options["solver"] == cp.SCS else "max_iter"] = self.alternative_max_iterations
        solution = self._solve_with_cvxpy(options)
        violation = constraint_violation(solution.weights, inputs, constraints)
        if violation:
            raise SolverFailedError(f"{options['solver']}'s weights break a constraint: {violation}")
        return replace(solution, method="alternative")

    def _solve_with_cvxpy(self, options: Mapping[str, Any] | None = None) -> Solution:
        if options is None:
            options = {"solver": cp.CLARABEL, **CLARABEL_TOLERANCES}
            if self.max_iterations is not None:
                options["max_iter"] = self.max_iterations
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self._problem.solve(**options)
            except cp.error.SolverError as error:
                raise SolverFailedError(f"{options['solver']} failed: {error}") from error
        status = self._problem.status
        if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            failure = InfeasibleProblemError if status in _CVXPY_INFEASIBLE else SolverFailedError
            raise failure(f"the problem is {status}")
        if self._weights.value is None or (self._scale_variable is not None and self._scale_variable.value is None):
            raise SolverFailedError(f"{options['solver']} returned no weights")
        y = np.asarray(self._weights.value, dtype=np.float64)
        k = None if self._scale_variable is None else float(self._scale_variable.value)
        iterations = self._problem.solver_stats.num_iters or 0
        return Solution(_unscale(y, k), "Solved" if status == cp.OPTIMAL else "AlmostSolved", int(iterations))


def solve_with_fallbacks(
    problem: MarkowitzProblem, inputs: ProblemInputs, constraints: PortfolioConstraints
) -> Solution:
    """Solve, falling back on a solver failure: the compiled problem, another solver, minimum variance.

    The compiled problem (its Clarabel solver kept between solves) first; on
    a solver failure the same problem with another solver
    (:meth:`MarkowitzProblem.solve_alternative`); then the shrunk
    minimum-variance weights (:func:`minimum_variance_weights`, status
    ``"MinimumVariance"``). ``Solution.method`` says which step gave the
    weights and ``Solution.failures`` why the earlier ones did not.

    Raises
    ------
    InfeasibleProblemError
        At once, if the problem has no solution: the caller holds its weights.
    SolverFailedError
        If every step failed (the caller holds its weights); the message lists each failure.
    """
    failures: list[str] = []
    for step in (problem.solve, problem.solve_alternative):
        try:
            solution = step(inputs, constraints)
        except InfeasibleProblemError as error:
            reason = infeasibility_reason(problem.objective, inputs, constraints)
            if reason is None:
                raise
            raise InfeasibleProblemError(f"{error}: {reason}") from error
        except SolverFailedError as error:
            failures.append(str(error))
            continue
        return replace(solution, failures=tuple(failures))
    try:
        weights = minimum_variance_weights(inputs, constraints)
    except SolverFailedError as error:
        failures.append(str(error))
        raise SolverFailedError("; ".join(failures)) from error
    return Solution(weights, "MinimumVariance", 0, method="minimum_variance", failures=tuple(failures))


def infeasibility_reason(objective: str, inputs: ProblemInputs, constraints: PortfolioConstraints) -> str | None:
    """Say which constraints leave a problem without a solution, when it is one of the plain cases (else None).

    The cases: per-asset bounds that cannot sum to the net exposure (or into
    its bounds), bounds that need more gross leverage than allowed, a target
    return above what the bounds allow, and ``max_sharpe`` when no weights
    within the bounds have a positive expected return (before costs).
    """
    lower, upper = np.asarray(inputs.lower, dtype=np.float64), np.asarray(inputs.upper, dtype=np.float64)
    n, tolerance = len(lower), FEASIBILITY_TOLERANCE
    low_sum, high_sum = float(lower.sum()), float(upper.sum())
    net_low, net_high = _net_range(constraints)
    if low_sum > net_high + tolerance:
        return f"the {n} weights' lower bounds (min_weight) sum to {low_sum:g}, above the net exposure {net_high:g}"
    if high_sum < net_low - tolerance:
        return (
            f"the {n} weights' upper bounds (max_weight, tightened by the risk layer's caps) sum to {high_sum:g}, "
            f"below the net exposure {net_low:g}"
        )
    # Every weight's nearest value to zero, and the net exposure's, bound the gross leverage from below.
    least_gross = max(
        float(np.where((lower <= 0) & (upper >= 0), 0.0, np.minimum(abs(lower), abs(upper))).sum()),
        0.0 if net_low <= 0.0 <= net_high else min(abs(net_low), abs(net_high)),
    )
    if constraints.gross_leverage is not None and least_gross > constraints.gross_leverage + tolerance:
        return (
            f"the weight bounds and the net exposure need a gross leverage of at least {least_gross:g}, "
            f"above the limit {constraints.gross_leverage:g}"
        )
    best = _best_return(np.asarray(inputs.expected_returns, dtype=np.float64), lower, upper, net_low, net_high)
    if objective == "max_sharpe" and best <= 0.0:
        return (
            f"no weights within the bounds have a positive expected return (the best is {best:.3g} a bar), "
            "so max_sharpe has none to maximize: min_volatility and mean_variance have a solution"
        )
    if objective == "efficient_return" and inputs.target is not None and best < inputs.target - tolerance:
        return f"the target return {inputs.target:.3g} a bar is above the best the bounds allow, {best:.3g}"
    return None


def bounds_conflict(n_assets: int, constraints: PortfolioConstraints) -> str | None:
    """Say which constraints no ``n_assets`` weights can meet together, and what to relax (None when some can).

    Pure arithmetic, before any solve: every weight lies in ``[lower_bound,
    max_weight]``, so the weights sum to between ``n_assets`` times each
    bound, which must reach the net exposure (``net_exposure``, the sum of
    the weights: 1 is fully invested; else ``net_exposure_bounds``), and the
    bounds and net exposure need a least gross leverage, which must not pass
    ``gross_leverage``.

    Parameters
    ----------
    n_assets
        The number of weights.
    constraints
        The constraints on them.

    Returns
    -------
    str or None
        The conflict and the constraint to relax by how much, or None.
    """
    n, tolerance = n_assets, FEASIBILITY_TOLERANCE
    low, high = constraints.lower_bound, constraints.max_weight
    net_low, net_high = _net_range(constraints)
    fixed = constraints.net_exposure is not None
    if n * low > net_high + tolerance:
        net = (
            f"net exposure {net_high:g} (net_exposure, the sum of the weights)"
            if fixed
            else f"highest net exposure {net_high:g} (net_exposure_bounds)"
        )
        return (
            f"min_weight {low:g} x {n} assets = {n * low:g} is above the {net}: lower min_weight to at most "
            f"{net_high / n:g}, or raise {'net_exposure' if fixed else 'net_exposure_bounds'}"
        )
    if n * high < net_low - tolerance:
        net = (
            f"net exposure {net_low:g} (net_exposure, the sum of the weights)"
            if fixed
            else f"lowest net exposure {net_low:g} (net_exposure_bounds)"
        )
        return (
            f"max_weight {high:g} x {n} assets = {n * high:g} is below the {net}: raise max_weight to at least "
            f"{net_low / n:g}, or lower {'net_exposure' if fixed else 'net_exposure_bounds'}"
        )
    nearest_zero = 0.0 if low <= 0.0 <= high else min(abs(low), abs(high))
    least_gross = max(n * nearest_zero, 0.0 if net_low <= 0.0 <= net_high else min(abs(net_low), abs(net_high)))
    if constraints.gross_leverage is not None and least_gross > constraints.gross_leverage + tolerance:
        return (
            f"min_weight {low:g}, max_weight {high:g} and the net exposure need a gross leverage of at least "
            f"{least_gross:g}, above gross_leverage {constraints.gross_leverage:g}: raise gross_leverage to at least "
            f"{least_gross:g}, or bring the net exposure and the weight bounds nearer zero"
        )
    return None


def _net_range(constraints: PortfolioConstraints) -> tuple[float, float]:
    """Return the lowest and highest sum of the weights the constraints allow."""
    if constraints.net_exposure is not None:
        return constraints.net_exposure, constraints.net_exposure
    if constraints.net_exposure_bounds is not None:
        return constraints.net_exposure_bounds
    return -math.inf, math.inf


def _best_return(mu: np.ndarray, lower: np.ndarray, upper: np.ndarray, least: float, most: float) -> float:
    """Return the largest ``mu @ w`` with ``lower <= w <= upper`` and ``least <= sum(w) <= most``.

    From the lower bounds, the best assets are filled first: those that earn up to ``most``, the rest only as
    far as ``least`` needs. Other constraints only lower it: it bounds the best of the whole problem.
    """
    weights = lower.copy()
    total = float(lower.sum())
    for i in np.argsort(-mu, kind="stable"):
        room = float(upper[i] - lower[i])
        added = min(room, (most if mu[i] > 0.0 else least) - total)
        if added > 0.0:
            weights[i] += added
            total += added
    return float(mu @ weights)


def minimum_variance_weights(inputs: ProblemInputs, constraints: PortfolioConstraints) -> np.ndarray:
    """Return the minimum-variance weights of a shrunk covariance, moved onto the bounds and the net exposure.

    The covariance is shrunk by :data:`MINIMUM_VARIANCE_SHRINKAGE` towards
    its average variance times the identity (so it is well conditioned), its
    fully invested minimum-variance portfolio scaled to the net exposure
    (the fixed one, else the exposure bound nearest zero) and projected onto
    the per-asset bounds keeping that sum. No solver is involved.

    Raises
    ------
    SolverFailedError
        For a covariance that is not finite or has no variance, bounds that
        cannot hold the net exposure, or weights that break the gross
        leverage or turnover limit.
    """
    matrix = np.asarray(inputs.covariance, dtype=np.float64)
    n = len(matrix)
    if matrix.shape != (n, n) or not np.isfinite(matrix).all():
        raise SolverFailedError("minimum variance: covariance holds NaN or infinite values")
    matrix = 0.5 * (matrix + matrix.T)
    scale = float(np.mean(np.diag(matrix)))
    if not scale > 0:
        raise SolverFailedError("minimum variance: covariance has no positive variance")
    shrunk = (1.0 - MINIMUM_VARIANCE_SHRINKAGE) * matrix + MINIMUM_VARIANCE_SHRINKAGE * scale * np.eye(n)
    try:
        direction = np.linalg.solve(shrunk, np.ones(n))
    except np.linalg.LinAlgError as error:
        raise SolverFailedError(f"minimum variance: {error}") from error
    net = _net_target(constraints)
    total = float(direction.sum())
    start = direction / total * net if abs(total) > 0 and np.isfinite(total) else np.full(n, net / n)
    lower, upper = np.asarray(inputs.lower, dtype=np.float64), np.asarray(inputs.upper, dtype=np.float64)
    weights = _project(start, lower, upper, net)
    violation = constraint_violation(weights, inputs, constraints)
    if violation:
        raise SolverFailedError(f"minimum variance: {violation}")
    return weights


def constraint_violation(weights: np.ndarray, inputs: ProblemInputs, constraints: PortfolioConstraints) -> str:
    """Return which constraint ``weights`` break by more than :data:`FEASIBILITY_TOLERANCE` ("" for none)."""
    tolerance = FEASIBILITY_TOLERANCE
    if not np.isfinite(weights).all():
        return "weights are not finite"
    if (weights < np.asarray(inputs.lower) - tolerance).any() or (weights > np.asarray(inputs.upper) + tolerance).any():
        return "a weight lies outside its bounds"
    total = float(weights.sum())
    if constraints.net_exposure is not None and abs(total - constraints.net_exposure) > tolerance:
        return f"net exposure {total:.6g} is not {constraints.net_exposure}"
    if constraints.net_exposure_bounds is not None:
        low, high = constraints.net_exposure_bounds
        if not low - tolerance <= total <= high + tolerance:
            return f"net exposure {total:.6g} lies outside [{low}, {high}]"
    gross = float(np.abs(weights).sum())
    if constraints.gross_leverage is not None and gross > constraints.gross_leverage + tolerance:
        return f"gross leverage {gross:.6g} is above {constraints.gross_leverage}"
    traded = float(np.abs(weights - np.asarray(inputs.current_weights)).sum())
    if constraints.turnover is not None and traded > constraints.turnover + tolerance:
        return f"turnover {traded:.6g} is above {constraints.turnover}"
    return ""


def _net_target(constraints: PortfolioConstraints) -> float:
    if constraints.net_exposure is not None:
        return constraints.net_exposure
    if constraints.net_exposure_bounds is not None:
        low, high = constraints.net_exposure_bounds
        return min(max(0.0, low), high)
    return 0.0


def _project(start: np.ndarray, lower: np.ndarray, upper: np.ndarray, net: float) -> np.ndarray:
    """Return ``clip(start - tau, lower, upper)`` with ``tau`` found so that the weights sum to ``net``.

    Raises
    ------
    SolverFailedError
        If the bounds cannot hold ``net``.
    """
    if float(lower.sum()) > net + FEASIBILITY_TOLERANCE or float(upper.sum()) < net - FEASIBILITY_TOLERANCE:
        raise SolverFailedError(f"minimum variance: the weight bounds cannot sum to the net exposure {net}")
    # The sum falls as tau rises: bisect between a tau that clips everything to upper and one to lower.
    low_tau = float(np.min(start - upper)) - 1.0
    high_tau = float(np.max(start - lower)) + 1.0
    for _ in range(200):
        tau = 0.5 * (low_tau + high_tau)
        if float(np.clip(start - tau, lower, upper).sum()) > net:
            low_tau = tau
        else:
            high_tau = tau
    return np.asarray(np.clip(start - 0.5 * (low_tau + high_tau), lower, upper), dtype=np.float64)


def _unscale(y: np.ndarray, k: float | None) -> np.ndarray:
    if k is None:
        weights = y
    elif k > 1e-12:
        weights = y / k
    else:
        raise InfeasibleProblemError(f"max_sharpe's scale variable is {k}: no portfolio with a positive net return")
    if not np.isfinite(weights).all():
        raise SolverFailedError("the solver returned non-finite weights")
    return weights


class _DirectPath:
    """cvxpy's compiled program, fed parameter values by id, handed to a reused Clarabel solver.

    ``get_problem_data`` returns the parameterized program cvxpy compiled
    (``data["param_prob"]``); applying new values to it is the same step
    ``Problem.solve`` takes, without re-validating every parameter or
    re-running the reduction chain's bookkeeping.
    """

    def __init__(
        self, program: Any, y_slice: slice, k_index: int | None, dims: Any, max_iterations: int | None = None
    ) -> None:
        self._program = program
        self._y = y_slice
        self._k = k_index
        self._cones = _cones(dims)
        self._quadratic: Any = None
        self._solver: Any = None
        self._settings = clarabel.DefaultSettings()
        self._settings.verbose = False
        self._settings.presolve_enable = False
        for name, value in CLARABEL_TOLERANCES.items():
            setattr(self._settings, name, value)
        if max_iterations is not None:
            self._settings.max_iter = max_iterations
        self._map: _ParameterMap | None = None

    @classmethod
    def compile(
        cls,
        problem: MarkowitzProblem,
        reference: Solution,
        built: tuple[cp.Problem, cp.Variable, cp.Variable | None] | None = None,
    ) -> _DirectPath | None:
        """Return the direct path if it reproduces ``reference`` (solved by ``Problem.solve``), else None.

        ``built`` is another build of the problem (its cvxpy problem, weights
        and scale variable) to compile instead of the problem's own.
        """
        program, weights, scale = built or (problem._problem, problem._weights, problem._scale_variable)
        data, inverse = _problem_data(program)
        # The last reduction that placed the variables is the one whose layout the solver sees.
        offsets = next(
            (i.var_offsets for i in reversed(inverse) if weights.id in (getattr(i, "var_offsets", None) or {})),
            None,
        )
        dims = data["dims"]
        if offsets is None or data.get("lower_bounds") is not None or data.get("upper_bounds") is not None:
            return None
        if dims.exp or dims.psd or dims.p3d or dims.pnd:
            return None
        start = offsets[weights.id]
        k = None if scale is None else offsets[scale.id]
        path = cls(data["param_prob"], slice(start, start + problem.n_assets), k, dims, problem.max_iterations)
        values = {parameter.id: np.asarray(parameter.value) for parameter in problem._params.values()}
        expected = path._apply(values)
        path._map = _ParameterMap.build(path._program, values, expected)
        if not path._attach(problem, expected[0]):
            return None
        try:
            trial = path.solve(values)
        except SolverFailedError:
            return None
        return path if np.allclose(trial.weights, reference.weights, rtol=0, atol=1e-7) else None

    def _attach(self, problem: MarkowitzProblem, quadratic: Any) -> bool:
        """Take what the path needs beyond the compiled program; return whether it can work."""
        return True

    def _data(self, values: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Return the nonzeros of (P triangle, q, A, b) on the compiled sparsity (None: use cvxpy's own path)."""
        return self._map.apply(values) if self._map is not None else None

    def solve(self, values: Mapping[int, np.ndarray]) -> Solution:
        """Apply parameter values (by id) to the compiled program and solve it."""
        data = self._data(values)
        if data is None:
            quadratic, linear, matrix, bound = self._apply(values)
            result = self._run(quadratic, linear, matrix, bound)
        else:
            result = self._run_values(*data)
        status = str(result.status)
        if status not in _ACCEPTED:
            self._solver = None
            failure = InfeasibleProblemError if status in _INFEASIBLE else SolverFailedError
            raise failure(f"Clarabel stopped with status {status}")
        x = np.asarray(result.x)
        k = None if self._k is None else float(x[self._k])
        return Solution(_unscale(x[self._y], k), status, int(result.iterations))

    def _apply(self, values: Mapping[int, np.ndarray]) -> tuple[Any, np.ndarray, Any, np.ndarray]:
        """Return Clarabel's (P upper triangle, q, A, b) through cvxpy's own parameter application."""
        if self._program.P is None:
            linear, _, matrix, bound = self._program.apply_parameters(values)
            quadratic = None
        else:
            quadratic, linear, _, matrix, bound = self._program.apply_parameters(values, quad_obj=True)
        return self._triangle(quadratic, len(linear)), linear, (-matrix).tocsc(), np.atleast_1d(bound)

    def _triangle(self, quadratic: Any, size: int) -> Any:
        """Return the upper triangle of P, reusing the last one when P did not change."""
        if quadratic is None:
            quadratic = sp.csc_matrix((size, size))
        last = self._quadratic
        if (
            last is not None
            and last[0].shape == quadratic.shape
            and last[0].nnz == quadratic.nnz
            and np.array_equal(last[0].data, quadratic.data)
            and np.array_equal(last[0].indices, quadratic.indices)
        ):
            return last[1]
        triangle = sp.triu(quadratic, format="csc")
        self._quadratic = (quadratic, triangle)
        return triangle

    def _run_values(self, quadratic: np.ndarray, linear: np.ndarray, matrix: np.ndarray, bound: np.ndarray) -> Any:
        """Solve with new nonzero values on the fixed sparsity of the compiled program."""
        assert self._map is not None
        if self._solver is not None:
            self._solver.update(P=quadratic, q=linear, A=matrix, b=bound)
            return self._solver.solve()
        shape_p, shape_a = self._map.quadratic_template, self._map.matrix_template
        return self._run(
            sp.csc_matrix((quadratic, shape_p.indices, shape_p.indptr), shape=shape_p.shape),
            linear,
            sp.csc_matrix((matrix, shape_a.indices, shape_a.indptr), shape=shape_a.shape),
            bound,
        )

    def _run(self, quadratic: Any, linear: np.ndarray, matrix: Any, bound: np.ndarray) -> Any:
        solver = self._solver
        if solver is not None:
            try:
                solver.update(P=quadratic, q=linear, A=matrix, b=bound)
            except Exception:  # the sparsity changed (a value hit exactly zero): set up anew
                solver = None
        if solver is None:
            solver = clarabel.DefaultSolver(quadratic, linear, matrix, bound, self._cones, self._settings)
            self._solver = solver
        return solver.solve()


def quadratic_placeholder(n: int) -> np.ndarray:
    """Return the stand-in matrix of the quadratic form: positive definite, every entry nonzero (a dense P)."""
    return np.ones((n, n)) + n * np.eye(n)


class _QuadraticPath(_DirectPath):
    """The direct path of the problem built with its variance as ``y' M y``, M written in at each solve.

    The factor form (``|F y|^2``) hands Clarabel ``N`` helper variables and
    ``N (N + 1) / 2`` constraint entries linking them to ``y``; the
    quadratic form puts the same numbers, ``M = F'F``, straight into P's
    ``y`` block, a smaller system that factorizes in about half the time.
    cvxpy cannot take ``M`` as a parameter there (not DPP), so the program
    is compiled with :func:`quadratic_placeholder` and P's nonzeros are
    replaced by ``M``'s (cvxpy's P is ``2 M``) from the factor's values.
    """

    _source: int
    _rows: np.ndarray
    _columns: np.ndarray
    _upper: tuple[np.ndarray, np.ndarray]
    _n: int

    @classmethod
    def compile_quadratic(cls, problem: MarkowitzProblem, reference: Solution) -> _DirectPath | None:
        """Return the quadratic-form path if it reproduces ``reference``, else None (efficient_risk: None)."""
        if problem.objective == "efficient_risk":
            return None
        built = problem._build(problem._constraints, quadratic_form=True)
        return cls.compile(problem, reference, built)

    def _attach(self, problem: MarkowitzProblem, quadratic: Any) -> bool:
        if self._map is None or self._map.quadratic_template is None:
            return False
        n = problem.n_assets
        triangle = sp.csc_matrix(quadratic)
        columns = np.repeat(np.arange(triangle.shape[1]), np.diff(triangle.indptr))
        rows = triangle.indices - self._y.start
        columns = columns - self._y.start
        inside = rows.min() >= 0 and columns.min() >= 0 and max(rows.max(), columns.max()) < n
        if triangle.nnz != n * (n + 1) // 2 or not inside:
            return False
        if not np.array_equal(triangle.data, 2.0 * quadratic_placeholder(n)[rows, columns]):
            return False
        # Measured at N = 200 with costs: a third less time per solve, the same iterations and weights
        # (to 1e-17); a solve it would leave inaccurate fails the status check and the fallbacks take over.
        self._settings.iterative_refinement_enable = False
        source = "risk_factor" if problem.objective == "mean_variance" else "factor"
        self._source = problem._params[source].id
        self._rows, self._columns, self._upper, self._n = rows, columns, problem._upper, n
        return True

    def _data(self, values: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        data = super()._data(values)
        if data is None:
            raise SolverFailedError("the quadratic form's parameter map failed")
        factor = np.zeros((self._n, self._n))
        factor[self._upper] = values[self._source]
        matrix = factor.T @ factor
        return 2.0 * matrix[self._rows, self._columns], data[1], data[2], data[3]


class _ParameterMap:
    """The affine map from parameter values to the nonzeros of Clarabel's P, q, A, b.

    DPP guarantees the problem data is affine in the parameters; cvxpy keeps
    that map as sparse tensors on its compiled program. Multiplying them by
    the parameter vector gives the new nonzero values on the fixed sparsity,
    which Clarabel takes as plain arrays. It reads attributes of cvxpy's
    compiled program that are not public API, so :meth:`build` checks it
    against cvxpy's own ``apply_parameters`` and returns None on any
    difference (the caller then keeps cvxpy's path).
    """

    def __init__(self, program: Any, quadratic: Any, matrix: Any) -> None:
        self._columns = dict(program.param_id_to_col)
        self._sizes = dict(program.param_id_to_size)
        self._length = program.total_param_size + 1
        self._constant = self._columns.pop(CONSTANT_ID)
        self._variables = program.x.size
        self._linear = sp.csr_matrix(program.q)
        self._matrix = program.reduced_A.reduced_mat
        indices, indptr, shape = program.reduced_A.problem_data_index
        self._matrix_count = int(indptr[self._variables])
        self._bound_rows = np.asarray(indices[self._matrix_count :])
        self._rows = shape[0]
        self._quadratic: Any = None if program.P is None else program.reduced_P
        self.quadratic_template = quadratic
        self.matrix_template = matrix
        # P = 2I on sum_squares' helper variables in every objective here: no parameter reaches it.
        self._fixed_quadratic = self._parameter_free(program)

    def _parameter_free(self, program: Any) -> np.ndarray | None:
        if self._quadratic is None:
            return np.zeros(0)
        mapping = sp.csc_matrix(self._quadratic.reduced_mat)
        touched = np.flatnonzero(np.diff(mapping.indptr))
        return self.quadratic_template.data.copy() if set(touched) <= {self._constant} else None

    @classmethod
    def build(cls, program: Any, values: Mapping[int, np.ndarray], expected: tuple[Any, ...]) -> _ParameterMap | None:
        """Return the map if it reproduces ``expected`` (cvxpy's P triangle, q, A, b) exactly, else None."""
        quadratic, linear, matrix, bound = expected
        try:
            mapping = cls(program, quadratic, matrix)
            ours = mapping.apply(values)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
        if ours is None or quadratic.nnz != len(ours[0]) or matrix.nnz != len(ours[2]):
            return None
        same = (
            np.array_equal(ours[0], quadratic.data)
            and np.array_equal(ours[1], linear)
            and np.array_equal(ours[2], matrix.data)
            and np.array_equal(ours[3], bound)
        )
        return mapping if same else None

    def apply(self, values: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Return (P triangle nonzeros, q, A nonzeros, b) for parameter values by id."""
        vector = np.zeros(self._length)
        vector[self._constant] = 1.0
        for identifier, column in self._columns.items():
            vector[column : column + self._sizes[identifier]] = np.ravel(values[identifier], order="F")
        linear = self._linear @ vector
        flat = self._matrix @ vector
        bound = np.zeros(self._rows)
        bound[self._bound_rows] = flat[self._matrix_count :]
        quadratic = self._fixed_quadratic
        if quadratic is None:
            quadratic = self._upper_triangle(vector)
            if quadratic is None:
                return None
        return quadratic, linear[: self._variables], -flat[: self._matrix_count], bound

    def _upper_triangle(self, vector: np.ndarray) -> np.ndarray | None:
        """Return P's upper-triangle nonzeros in the template's order."""
        reduced = self._quadratic
        flat = reduced.reduced_mat @ vector
        indices, indptr, shape = reduced.problem_data_index
        full = sp.csc_matrix((flat, indices, indptr), shape=shape)
        upper = sp.triu(full, format="csc")
        template = self.quadratic_template
        if upper.nnz != template.nnz or not np.array_equal(upper.indices, template.indices):
            return None
        return upper.data


def _problem_data(problem: cp.Problem) -> tuple[dict[str, Any], Any]:
    """Return Clarabel's problem data for the parameters' current values (cvxpy reuses its compilation)."""
    with warnings.catch_warnings():
        # cvxpy warns when its own code reads a sparse parameter densely.
        warnings.simplefilter("ignore")
        data, _, inverse = problem.get_problem_data(cp.CLARABEL, enforce_dpp=True)
    return data, inverse


def _cones(dims: Any) -> list[Any]:
    cones: list[Any] = []
    if dims.zero:
        cones.append(clarabel.ZeroConeT(dims.zero))
    if dims.nonneg:
        cones.append(clarabel.NonnegativeConeT(dims.nonneg))
    cones.extend(clarabel.SecondOrderConeT(size) for size in dims.soc)
    return cones
