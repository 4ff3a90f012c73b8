"""A dense interior-point solver for max Sharpe with linear trading costs, exploiting the problem's structure.

The homogenized problem :class:`~keel.portfolio.markowitz.MarkowitzProblem`
compiles for ``max_sharpe`` with costs (``w = y / k``, ``t`` the traded
amounts) is::

    minimize    y' M y
    subject to  mu' y - c' t >= 1
                t >= y - w0 k,  t >= w0 k - y
                l k <= y <= u k,  sum(y) = net k,  k >= 0

Clarabel solves it through a sparse LDL factorization of a KKT system with a
dense ``N x N`` block, column by column. Here the same problem is solved by a
primal-dual interior-point method (Mehrotra's predictor-corrector, infeasible
start) whose Newton systems are reduced by hand: ``t`` is eliminated per asset,
the cost row is a rank-one term and ``k`` and the budget row are a border, so
each iteration costs one dense ``N x N`` Cholesky factorization (LAPACK) and a
few triangular solves. The caller keeps the Clarabel path as the reference:
this solver's weights are used only after they reproduced it, and any failure
to converge falls back to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from threadpoolctl import ThreadpoolController

TOLERANCE = 1e-10
"""Relative primal and dual residuals and duality gap at which the solve stops."""
MAX_ITERATIONS = 30
"""Twice the 13 to 16 iterations measured at N = 200: a problem not solved by then goes to Clarabel."""
STEP_FRACTION = 0.99
_blas: list[ThreadpoolController] = []


class InteriorPointFailedError(RuntimeError):
    """The interior-point iterations did not converge (or the Newton system could not be factorized)."""


@dataclass(frozen=True, slots=True)
class SharpeWithCosts:
    """The numbers of one homogenized max-Sharpe problem with costs (already in the solver's scaled units).

    Parameters
    ----------
    factor
        An upper-triangular ``(N, N)`` factor ``U`` of the covariance ``M = U'U``.
    expected_returns, costs, current_weights, lower, upper
        ``mu``, ``c``, ``w0``, ``l`` and ``u``, one per asset (bounds finite).
    net
        The sum of the weights (positive).
    """

    factor: np.ndarray
    expected_returns: np.ndarray
    costs: np.ndarray
    current_weights: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    net: float


@dataclass(frozen=True, slots=True)
class InteriorPointResult:
    """The homogenized solution: ``y``, ``k`` (weights ``y / k``) and the iterations taken."""

    y: np.ndarray
    k: float
    iterations: int


class _Newton:
    """The Newton system of one iteration, factorized once for the predictor and the corrector."""

    def __init__(self, problem: SharpeWithCosts, quadratic: np.ndarray, scaling: np.ndarray) -> None:
        n = len(problem.expected_returns)
        d1, d2, d3, d4 = (scaling[i * n : (i + 1) * n] for i in range(4))
        d5, d6 = scaling[4 * n], scaling[4 * n + 1]
        w0, lower, upper = problem.current_weights, problem.lower, problem.upper
        self.n = n
        self.e = d1 + d2
        self.b = d2 - d1
        schur = 2.0 * quadratic
        schur[np.diag_indices(n)] += 4.0 / (1.0 / d1 + 1.0 / d2) + d3 + d4
        try:
            self.factor = cho_factor(schur, lower=False, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError as error:
            raise InteriorPointFailedError(f"the Newton system is not positive definite: {error}") from error
        # The border: the cost row (rank one), the k column and the budget row.
        border = np.zeros((2 * n, 3))
        border[:n, 0] = -problem.expected_returns
        border[n:, 0] = problem.costs
        border[:n, 1] = -self.e * w0 - d3 * lower - d4 * upper
        border[n:, 1] = -self.b * w0
        border[:n, 2] = 1.0
        self.border = border
        self.border_solved = self._base_solve(border)
        kk = float(np.sum(self.e * w0 * w0 + d3 * lower * lower + d4 * upper * upper)) + d5
        corner = np.array([[-1.0 / d6, 0.0, 0.0], [0.0, kk, -problem.net], [0.0, -problem.net, 0.0]])
        self.small = corner - border.T @ self.border_solved

    def _base_solve(self, right: np.ndarray) -> np.ndarray:
        """Solve the (y, t) block without the border, eliminating t per asset."""
        n = self.n
        top, bottom = right[:n], right[n:]
        ratio = (self.b / self.e)[:, None] if right.ndim == 2 else self.b / self.e
        y = cho_solve(self.factor, top - ratio * bottom, check_finite=False)
        b, e = (self.b[:, None], self.e[:, None]) if right.ndim == 2 else (self.b, self.e)
        return np.concatenate([y, (bottom - b * y) / e])

    def solve(self, right_yt: np.ndarray, right_k: float, right_budget: float) -> tuple[np.ndarray, float, float]:
        """Return ``(dy dt, dk, d lambda)`` for the reduced right-hand side."""
        base = self._base_solve(right_yt)
        rest = np.array([0.0, right_k, right_budget]) - self.border.T @ base
        try:
            beta = np.linalg.solve(self.small, rest)
        except np.linalg.LinAlgError as error:
            raise InteriorPointFailedError(f"the bordered Newton system is singular: {error}") from error
        return base - self.border_solved @ beta, float(beta[1]), float(beta[2])


class _Iterate:
    """The constraint map G, its transpose and the residuals of the problem."""

    def __init__(self, problem: SharpeWithCosts) -> None:
        self.p = problem
        self.n = len(problem.expected_returns)
        self.h = np.zeros(4 * self.n + 2)
        self.h[-1] = -1.0

    def g(self, y: np.ndarray, t: np.ndarray, k: float) -> np.ndarray:
        p = self.p
        moved = y - p.current_weights * k
        return np.concatenate(
            [
                moved - t,
                -moved - t,
                p.lower * k - y,
                y - p.upper * k,
                [-k, float(p.costs @ t - p.expected_returns @ y)],
            ]
        )

    def g_transpose(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        p, n = self.p, self.n
        z1, z2, z3, z4 = z[:n], z[n : 2 * n], z[2 * n : 3 * n], z[3 * n : 4 * n]
        z5, z6 = z[4 * n], z[4 * n + 1]
        y = z1 - z2 - z3 + z4 - z6 * p.expected_returns
        t = z6 * p.costs - z1 - z2
        k = float(p.current_weights @ (z2 - z1) + p.lower @ z3 - p.upper @ z4) - z5
        return y, t, k


def _max_step(values: np.ndarray, steps: np.ndarray) -> float:
    falling = steps < 0
    if not falling.any():
        return 1.0
    return min(1.0, float(np.min(-values[falling] / steps[falling])))


def solve_max_sharpe_with_costs(
    problem: SharpeWithCosts, *, tolerance: float = TOLERANCE, max_iterations: int = MAX_ITERATIONS
) -> InteriorPointResult:
    """Solve the homogenized max-Sharpe problem with costs; return ``y``, ``k`` and the iterations.

    Raises
    ------
    InteriorPointFailedError
        If the iterations do not reach ``tolerance`` within ``max_iterations``
        (an infeasible problem ends here too: the caller's reference solver
        then tells infeasible from hard).
    """
    if not _blas:
        _blas.append(ThreadpoolController())
    # A 200 x 200 factorization takes 0.2 ms on one BLAS thread and ten times that in CPU on two busy cores.
    with _blas[0].limit(limits=1, user_api="blas"):
        return _solve(problem, tolerance, max_iterations)


@dataclass(slots=True)
class _Point:
    """A primal-dual iterate: weights ``y``, traded amounts ``t``, scale ``k``, the budget's multiplier, slacks
    ``s`` and multipliers ``z`` of the inequalities."""

    y: np.ndarray
    t: np.ndarray
    k: float
    multiplier: float
    s: np.ndarray
    z: np.ndarray

    def moved(self, step: _Point, alpha: float) -> _Point:
        return _Point(
            self.y + alpha * step.y,
            self.t + alpha * step.t,
            self.k + alpha * step.k,
            self.multiplier + alpha * step.multiplier,
            self.s + alpha * step.s,
            self.z + alpha * step.z,
        )

    def max_step(self, step: _Point) -> float:
        return min(_max_step(self.s, step.s), _max_step(self.z, step.z))


@dataclass(frozen=True, slots=True)
class _Residuals:
    dual_y: np.ndarray
    dual_t: np.ndarray
    dual_k: float
    budget: float
    primal: np.ndarray
    objective: float


def _residuals(ops: _Iterate, quadratic: np.ndarray, point: _Point) -> _Residuals:
    gy, gt, gk = ops.g_transpose(point.z)
    curvature = quadratic @ point.y
    return _Residuals(
        dual_y=2.0 * curvature + point.multiplier + gy,
        dual_t=gt,
        dual_k=gk - ops.p.net * point.multiplier,
        budget=float(point.y.sum()) - ops.p.net * point.k,
        primal=ops.g(point.y, point.t, point.k) + point.s - ops.h,
        objective=float(point.y @ curvature),
    )


def _direction(
    ops: _Iterate, newton: _Newton, point: _Point, residuals: _Residuals, complementarity: np.ndarray
) -> _Point:
    """Return the Newton step for the residuals with ``z * ds + s * dz = complementarity``."""
    s, z, n = point.s, point.z, ops.n
    wy, wt, wk = ops.g_transpose((z * residuals.primal + complementarity) / s)
    right = -np.concatenate([residuals.dual_y + wy, residuals.dual_t + wt])
    dyt, dk, dmultiplier = newton.solve(right, -residuals.dual_k - wk, -residuals.budget)
    dy, dt = dyt[:n], dyt[n:]
    ds = -residuals.primal - ops.g(dy, dt, dk)
    return _Point(dy, dt, dk, dmultiplier, ds, (complementarity - z * ds) / s)


def _start(ops: _Iterate, quadratic: np.ndarray) -> _Point:
    """Return the least-squares point of the constraints, its slacks shifted into the interior (as CVXOPT does)."""
    n = ops.n
    newton = _Newton(ops.p, quadratic, np.ones(4 * n + 2))
    gy, gt, gk = ops.g_transpose(ops.h)
    step, k, multiplier = newton.solve(np.concatenate([gy, gt]), gk, 0.0)
    y, t = step[:n], step[n:]
    s = ops.h - ops.g(y, t, k)
    z = -s
    return _Point(y, t, k, multiplier, s + max(0.0, 1.0 - float(s.min())), z + max(0.0, 1.0 - float(z.min())))


def _converged(point: _Point, residuals: _Residuals, tolerance: float) -> bool:
    scale = max(1.0, abs(residuals.objective))
    primal = max(float(np.max(np.abs(residuals.primal))), abs(residuals.budget))
    dual = max(float(np.max(np.abs(residuals.dual_y))), float(np.max(np.abs(residuals.dual_t))), abs(residuals.dual_k))
    return (
        primal <= tolerance * max(1.0, float(np.max(np.abs(point.y))))
        and dual <= tolerance * scale
        and float(point.s @ point.z) <= tolerance * scale
    )


def _solve(problem: SharpeWithCosts, tolerance: float, max_iterations: int) -> InteriorPointResult:
    ops = _Iterate(problem)
    quadratic = problem.factor.T @ problem.factor
    point = _start(ops, quadratic)
    count = len(point.s)
    for iteration in range(max_iterations + 1):
        residuals = _residuals(ops, quadratic, point)
        if _converged(point, residuals, tolerance):
            if not point.k > 0:
                raise InteriorPointFailedError(f"the scale variable ended at {point.k}")
            return InteriorPointResult(point.y, point.k, iteration)
        if iteration == max_iterations:
            break
        newton = _Newton(problem, quadratic, point.z / point.s)
        # Mehrotra: an affine step tells how far the gap can fall; the corrector centres by that much.
        gap = float(point.s @ point.z) / count
        affine = _direction(ops, newton, point, residuals, -point.s * point.z)
        ahead = point.moved(affine, point.max_step(affine))
        sigma = (float(ahead.s @ ahead.z) / count / gap) ** 3
        centring = -point.s * point.z - affine.s * affine.z + sigma * gap
        step = _direction(ops, newton, point, residuals, centring)
        point = point.moved(step, min(1.0, STEP_FRACTION * point.max_step(step)))
        if not (np.isfinite(point.y).all() and np.isfinite(point.s).all() and np.isfinite(point.z).all()):
            raise InteriorPointFailedError("the iterates stopped being finite")
    raise InteriorPointFailedError(f"no convergence in {max_iterations} iterations")
