"""The portfolio optimizer: Markowitz weights from return history and the strategies' views.

:class:`PortfolioOptimizer` is both a scikit-learn style estimator and a
pipeline component.

As an estimator, ``fit(returns)`` estimates the covariance (sample,
Ledoit-Wolf or EWMA) and expected returns (history blended with the
strategies' views), solves the configured objective under the configured
constraints with a compiled :class:`~keel.portfolio.markowitz.MarkowitzProblem`
(one per shape, re-solved with new numbers) and stores ``weights_``. It never
fails: when the solver fails it tries another solver, then the shrunk
minimum-variance weights, and when those fail too, or the problem has no
solution at all, it keeps the previous weights (or the current ones, or none);
``fallback_reason_`` records why. ``await optimize_weights(returns_data=df,
constraints={...}, objective=...)`` is the same as an awaitable returning an
:class:`OptimizationResult` whose ``weights`` maps each column to its weight,
except that constraints no weights can meet are a ValueError saying what to
relax, not held weights.

As a component on the bus it keeps a rolling window of bar closes per symbol,
the latest view of every strategy on every symbol (``SignalGenerated``:
signed strength x confidence), the risk layer's per-symbol caps and equity
(``RiskLimitsUpdated``) and the positions (``PositionChanged``); it
re-optimizes when a symbol's combined view changes direction, on its schedule
and on ``Rebalance``, and publishes ``AllocationProposed``. When the risk
layer moves to REDUCING it proposes the current targets scaled down
(:meth:`reduce_risk_exposure`). Views are weighted across strategies by an
:class:`~keel.portfolio.adaptive.AdaptiveAllocator` fed with each strategy's
per-bar return of following its views. Everything it uses at time t arrived
at or before t.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from keel.core.bus import EventBus
from keel.core.clock import Clock, SimulatedClock
from keel.core.component import Component
from keel.core.costs import CostModel
from keel.core.fsm import TradingState
from keel.core.messages import (
    AllocationProposed,
    BarClosed,
    ExecutionCompleted,
    PositionChanged,
    Rebalance,
    RiskLimitsUpdated,
    SignalAction,
    SignalGenerated,
    TradingStateChanged,
)
from keel.core.time_events import TimeEvent
from keel.portfolio.adaptive import AdaptiveAllocator
from keel.portfolio.estimators import (
    COVARIANCE_METHODS,
    blend_expected_returns,
    estimate_covariance,
    mean_returns,
    refuse_prices,
    require_numeric_columns,
    signal_scores,
    validate_returns,
)
from keel.portfolio.markowitz import (
    OBJECTIVES,
    InfeasibleProblemError,
    MarkowitzProblem,
    PortfolioConstraints,
    ProblemInputs,
    Solution,
    SolverFailedError,
    bounds_conflict,
    solve_with_fallbacks,
    structure_key,
)

_SIGN = {SignalAction.BUY: 1.0, SignalAction.SELL: -1.0, SignalAction.HOLD: 0.0}
_NO_WEIGHT = 1e-6
"""A weight under this (a millionth of equity) is none: the solver's zero up to its tolerance."""


@dataclass(frozen=True, slots=True)
class OptimizationResult:
    """The outcome of one optimization.

    ``expected_return``, ``volatility`` and ``sharpe_ratio`` are per bar of the
    input returns; ``status`` is ``"optimal"`` or ``"fallback"`` (then
    ``fallback_reason`` says why, and ``weights`` are the shrunk
    minimum-variance ones when the reason ends so, the previous ones otherwise).
    """

    weights: dict[str, float]
    expected_return: float
    volatility: float
    sharpe_ratio: float
    objective: str
    status: str
    fallback_reason: str
    solve_seconds: float


class PortfolioOptimizer(Component):
    """Markowitz optimization with costs, caps and signal-blended expected returns.

    Parameters
    ----------
    objective
        ``max_sharpe``, ``min_volatility``, ``mean_variance``, ``efficient_return`` or ``efficient_risk``.
    covariance
        ``sample``, ``ledoit_wolf`` or ``ewma``.
    constraints
        A :class:`PortfolioConstraints` or a mapping of its fields.
    risk_aversion
        ``mean_variance``'s risk aversion (per-bar units).
    target_return, target_volatility
        Per-bar targets of ``efficient_return`` and ``efficient_risk``.
    risk_free_rate
        Per-bar rate subtracted from expected returns by ``max_sharpe``.
    halflife
        Half-life in bars of the EWMA covariance.
    mean_halflife
        Half-life of an exponentially weighted mean return; None for the plain mean.
    signal_weight
        Weight of the views in the expected returns, in [0, 1].
    information_coefficient
        Scale of a view: a score ``s`` implies ``IC x volatility x s`` per bar.
    symbols
        The universe traded on the bus (not needed for ``fit``).
    lookback
        Bars of history kept per symbol.
    min_history
        Bars a symbol needs before it gets a weight.
    rebalance_interval_ns
        Time between scheduled rebalances (epoch-aligned); 0 for none.
    reduce_factor
        What :meth:`reduce_risk_exposure` multiplies the targets by.
    decision_interval_bars
        A change of a symbol's combined view direction is acted on only at
        every this many bar times (counted from the first bar of the run); 1
        acts on the signal itself.
    signal_persistence_bars
        Bar times a changed direction must hold (seen at each new bar time)
        before it is acted on; a change that reverts earlier is dropped.
    weight_step
        The optimized weights are cut toward zero to a multiple of this (so
        no bound is crossed and small re-optimizations leave them alone); 0
        for none.
    allocator
        Shares of the strategies in the views; a default one when None.
    cost_assumption, cost_feedback_weight
        Without ``costs``: the assumed one-way cost that ``transaction_cost``
        stands for, scaled per symbol by the measured implementation shortfall
        (EWMA with this weight).
    costs, holding_bars
        The shared cost model: with it (and a positive ``transaction_cost``
        constraint, which then only switches the penalty on) each asset's cost
        per unit of weight traded is the model's expected one-way cost spread
        over ``holding_bars``.
    bus, clock
        The event bus and clock; private ones when used as a plain estimator.

    Attributes
    ----------
    views_not_worth_costs : int
        Direction changes of a symbol's view that the cost-penalized solve
        gave no weight (under a millionth of equity).
    views_before_history : int
        Direction changes of a symbol's view that came while no symbol had
        ``min_history`` bars, so no weights could be solved (each counted once).
    """

    def __init__(
        self,
        *,
        objective: str = "max_sharpe",
        covariance: str = "ledoit_wolf",
        constraints: PortfolioConstraints | Mapping[str, Any] | None = None,
        risk_aversion: float = 1.0,
        target_return: float | None = None,
        target_volatility: float | None = None,
        risk_free_rate: float = 0.0,
        halflife: float = 240.0,
        mean_halflife: float | None = None,
        signal_weight: float = 0.8,
        information_coefficient: float = 0.05,
        symbols: Sequence[str] = (),
        lookback: int = 1440,
        min_history: int = 60,
        rebalance_interval_ns: int = 0,
        reduce_factor: float = 0.5,
        decision_interval_bars: int = 1,
        signal_persistence_bars: int = 1,
        weight_step: float = 0.0,
        allocator: AdaptiveAllocator | None = None,
        cost_assumption: float | None = None,
        cost_feedback_weight: float = 0.2,
        costs: CostModel | None = None,
        holding_bars: float = 30.0,
        bus: EventBus | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__("portfolio.optimizer", bus or EventBus(), clock or SimulatedClock(0))
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
        if covariance not in COVARIANCE_METHODS:
            raise ValueError(f"unknown covariance {covariance!r}; expected one of {', '.join(COVARIANCE_METHODS)}")
        if not 0.0 <= reduce_factor < 1.0:
            raise ValueError(f"reduce_factor must lie in [0, 1), got {reduce_factor}")
        if lookback < 2 or min_history < 2 or min_history > lookback + 1:
            raise ValueError(f"need 2 <= min_history <= lookback + 1, got {min_history} and {lookback}")
        self.objective = objective
        self.covariance = covariance
        self.constraints = PortfolioConstraints.from_mapping(
            constraints if isinstance(constraints, Mapping) else None,
            constraints if isinstance(constraints, PortfolioConstraints) else None,
        )
        self.risk_aversion = risk_aversion
        self.target_return = target_return
        self.target_volatility = target_volatility
        self.risk_free_rate = risk_free_rate
        self.halflife = halflife
        self.mean_halflife = mean_halflife
        self.signal_weight = signal_weight
        self.information_coefficient = information_coefficient
        self.symbols = tuple(symbols)
        self.lookback = lookback
        self.min_history = min_history
        self.rebalance_interval_ns = rebalance_interval_ns
        self.reduce_factor = reduce_factor
        if decision_interval_bars < 1 or signal_persistence_bars < 1:
            raise ValueError(
                "decision_interval_bars and signal_persistence_bars must be at least 1, "
                f"got {decision_interval_bars} and {signal_persistence_bars}"
            )
        self.decision_interval_bars = decision_interval_bars
        if not 0.0 <= weight_step < 1.0:
            raise ValueError(f"weight_step must lie in [0, 1), got {weight_step}")
        self.weight_step = weight_step
        self.signal_persistence_bars = signal_persistence_bars
        self._bar_count = 0
        # Symbol -> (changed direction, bar count when it was first seen) awaiting the decision time.
        self._pending: dict[str, tuple[float, int]] = {}
        self.allocator = allocator if allocator is not None else AdaptiveAllocator()
        if cost_assumption is not None and not cost_assumption > 0:
            raise ValueError(f"cost_assumption must be positive, got {cost_assumption}")
        if not 0.0 < cost_feedback_weight <= 1.0:
            raise ValueError(f"cost_feedback_weight must lie in (0, 1], got {cost_feedback_weight}")
        self.cost_assumption = cost_assumption
        self.cost_feedback_weight = cost_feedback_weight
        self.measured_costs_: dict[str, float] = {}
        if not holding_bars > 0:
            raise ValueError(f"holding_bars must be positive, got {holding_bars}")
        self.costs = costs
        self.holding_bars = holding_bars
        self._problems: dict[tuple[object, ...], MarkowitzProblem] = {}
        self._compiled_for = 0
        self._closes: dict[str, _CloseWindow] = {s: _CloseWindow(lookback + 1) for s in self.symbols}
        self._views: dict[str, dict[str, float]] = {}
        self._direction: dict[str, float] = {}
        self.views_not_worth_costs = 0
        self.views_before_history = 0
        # The direction last counted in views_before_history, by symbol (emptied once the weights can be solved).
        self._waiting: dict[str, float] = {}
        self._caps: dict[str, float] = {}
        self._limits: dict[str, float] = {}
        self._equity: float | None = None
        self._quantities: dict[str, float] = {}
        self._targets: dict[str, float] = {}
        self._bar_ts: int | None = None
        self._strategy_bar: dict[str, float] = {}
        self.fallbacks = 0
        self.solves = 0

    # --- estimator ------------------------------------------------------------------------

    def fit(
        self,
        returns: pd.DataFrame | np.ndarray,
        expected_returns: Sequence[float] | np.ndarray | None = None,
        *,
        current_weights: Sequence[float] | np.ndarray | None = None,
        caps: Sequence[float] | np.ndarray | None = None,
        constraints: PortfolioConstraints | None = None,
        objective: str | None = None,
    ) -> PortfolioOptimizer:
        """Optimize weights for ``returns`` (bars x assets) and store them in ``weights_``.

        Parameters
        ----------
        returns
            Per-bar returns, one column per asset, rows in time order.
        expected_returns
            Per-bar expected returns; estimated from ``returns`` (and the views) when None.
        current_weights
            Weights held now, for turnover and costs; zeros when None.
        caps
            Per-asset largest absolute weight from the risk layer.
        constraints, objective
            Override the configured ones for this fit.

        Returns
        -------
        PortfolioOptimizer
            self, with ``weights_``, ``assets_``, ``expected_returns_``,
            ``covariance_``, ``status_``, ``fallback_reason_``, ``method_``
            (``"compiled"`` or ``"interior_point"``, ``"alternative"``,
            ``"minimum_variance"`` or ``"held"``: which step of the fallback
            chain gave the weights) and
            ``solve_seconds_``.
        """
        array, assets = _returns_array(returns)
        return self._fit_array(array, assets, expected_returns, current_weights, caps, constraints, objective)

    def _fit_array(
        self,
        array: np.ndarray,
        assets: list[str],
        expected_returns: Sequence[float] | np.ndarray | None,
        current_weights: Sequence[float] | np.ndarray | None,
        caps: Sequence[float] | np.ndarray | None,
        constraints: PortfolioConstraints | None,
        objective: str | None,
        *,
        refuse_infeasible: bool = False,
    ) -> PortfolioOptimizer:
        """:meth:`fit` on validated returns with their asset names (no frame built on the bus's path).

        With ``refuse_infeasible`` a problem without a solution raises ValueError, leaving the fit as it was.
        """
        n = array.shape[1]
        chosen = objective or self.objective
        if chosen not in OBJECTIVES:
            raise ValueError(f"unknown objective {chosen!r}; expected one of {', '.join(OBJECTIVES)}")
        rules = constraints or self.constraints
        covariance = estimate_covariance(array, self.covariance, halflife=self.halflife)
        mu = self._expected_returns(array, assets, covariance, expected_returns)
        current = _vector(current_weights, n, 0.0, "current_weights")
        limit = _vector(caps, n, math.inf, "caps")
        lower = np.maximum(rules.lower_bound, -limit)
        upper = np.minimum(rules.max_weight, limit)
        previous = self._previous_weights(assets, current)
        started = time.perf_counter()
        try:
            solution = self._solve(chosen, rules, mu, covariance, lower, upper, current, assets)
        except SolverFailedError as error:
            if refuse_infeasible and isinstance(error, InfeasibleProblemError):
                raise ValueError(
                    f"no weights meet the constraints with objective {chosen} on these returns ({error}): relax "
                    "min_weight, max_weight, gross_leverage, turnover or the net exposure, or choose another objective"
                ) from error
            weights, self.method_ = previous, "held"
            self.status_, self.fallback_reason_ = "fallback", str(error)
            self.fallbacks += 1
        else:
            weights, self.method_ = solution.weights, solution.method
            if solution.method == "minimum_variance":
                reason = "; ".join(solution.failures)
                self.status_, self.fallback_reason_ = "fallback", f"{reason}: shrunk minimum-variance weights"
                self.fallbacks += 1
            else:
                self.status_, self.fallback_reason_ = "optimal", ""
        self.solve_seconds_ = time.perf_counter() - started
        self.assets_ = assets
        self.objective_ = chosen
        self.expected_returns_ = mu
        self.covariance_ = covariance
        self.weights_ = weights
        return self

    def _expected_returns(
        self,
        array: np.ndarray,
        assets: list[str],
        covariance: np.ndarray,
        given: Sequence[float] | np.ndarray | None,
    ) -> np.ndarray:
        if given is not None:
            mu = np.asarray(given, dtype=np.float64)
            if mu.shape != (len(assets),):
                raise ValueError(f"expected_returns must be {len(assets)} numbers, one per asset, got shape {mu.shape}")
            if not np.isfinite(mu).all():
                raise ValueError(f"expected_returns must be finite numbers, got {mu.tolist()}")
            return mu
        historical = mean_returns(array, halflife=self.mean_halflife)
        scores = signal_scores(self._views, getattr(self.allocator, "weights_", {}), assets)
        if not scores.any():
            return historical
        return blend_expected_returns(
            historical,
            scores,
            np.sqrt(np.diag(covariance)),
            signal_weight=self.signal_weight,
            information_coefficient=self.information_coefficient,
        )

    def _previous_weights(self, assets: list[str], current: np.ndarray) -> np.ndarray:
        if getattr(self, "assets_", None) == assets:
            return np.array(self.weights_, dtype=np.float64)
        return current.copy()

    def _solve(
        self,
        objective: str,
        rules: PortfolioConstraints,
        mu: np.ndarray,
        covariance: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        current: np.ndarray,
        assets: list[str],
    ) -> Solution:
        problem = self._problem(objective, rules, len(mu))
        inputs = self._problem_inputs(objective, rules, mu, covariance, lower, upper, current, assets)
        self.solves += 1
        return solve_with_fallbacks(problem, inputs, rules)

    def _problem(self, objective: str, rules: PortfolioConstraints, n_assets: int) -> MarkowitzProblem:
        """Return the compiled problem of this shape (made on first use and kept)."""
        key = structure_key(n_assets, objective, rules)
        problem = self._problems.get(key)
        if problem is None:
            problem = self._problems[key] = MarkowitzProblem(n_assets, objective, rules)
        return problem

    def _problem_inputs(
        self,
        objective: str,
        rules: PortfolioConstraints,
        mu: np.ndarray,
        covariance: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        current: np.ndarray,
        assets: list[str],
    ) -> ProblemInputs:
        shift = self.risk_free_rate if objective == "max_sharpe" else 0.0
        target = self.target_return if objective == "efficient_return" else self.target_volatility
        return ProblemInputs(
            expected_returns=mu - shift,
            covariance=covariance,
            lower=lower,
            upper=upper,
            current_weights=current,
            costs=self._cost_vector(rules.transaction_cost, assets),
            risk_aversion=self.risk_aversion,
            target=target,
        )

    @property
    def compiled_sizes(self) -> tuple[int, ...]:
        """Return the numbers of assets of the problems compiled so far (solved at least once), ascending."""
        return tuple(sorted(problem.n_assets for problem in self._problems.values() if problem.solves))

    def _compile_for_new_history(self) -> None:
        """At a new bar time: compile the problem when the number of symbols with enough history changed.

        Checked at the same point of the bars whether they arrive live or in
        :meth:`warm_up`, so a warmed-up optimizer solves exactly as one fed
        the same bars on the bus.
        """
        if self._compiled_for == len(self._closes):
            return  # every symbol has enough history, and a window never shrinks
        ready = sum(len(closes) > self.min_history for closes in self._closes.values())
        if ready != self._compiled_for:
            self._compiled_for = ready
            self.compile_problem()

    def compile_problem(self) -> bool:
        """Compile the problem of the symbols that have enough history now, without proposing or keeping weights.

        A problem's first solve canonicalizes it through cvxpy and checks the
        faster paths against it (a hundred milliseconds and more, once per
        shape). The optimizer calls this at the first bar time after the
        number of symbols with enough history changed, so in a paper or live
        session that warmed up the cost falls on set-up (:meth:`warm_up`),
        not on the first rebalance on the event loop. The weights, their
        status and the solve count are left as they were. Return whether a
        problem was compiled (False: too little history, or the solver failed).
        """
        assets, closes = self._panel()
        if len(closes) < 3:
            return False
        array = np.asfortranarray(closes[1:] / closes[:-1] - 1.0)
        rules, n = self._risk_constraints(), len(assets)
        lower = np.full(n, rules.lower_bound)
        upper = np.full(n, rules.max_weight)
        try:
            covariance = estimate_covariance(array, self.covariance, halflife=self.halflife)
            mu = mean_returns(array, halflife=self.mean_halflife)
            inputs = self._problem_inputs(self.objective, rules, mu, covariance, lower, upper, np.zeros(n), assets)
            self._problem(self.objective, rules, n).solve(inputs, rules)
        except (SolverFailedError, ValueError):
            return False  # the first rebalance compiles it then, and its fallback chain deals with the failure
        return True

    def _cost_vector(self, assumed: float, assets: list[str]) -> np.ndarray:
        """Return each asset's linear cost: the cost model's, else the assumption scaled by what execution measured."""
        if self.costs is not None and assumed > 0:
            return np.array([self.costs.cost_rate(asset) / self.holding_bars for asset in assets])
        if self.cost_assumption is None:
            return np.full(len(assets), assumed)
        scale = [self.measured_costs_.get(asset, self.cost_assumption) / self.cost_assumption for asset in assets]
        return assumed * np.asarray(scale, dtype=np.float64)

    def on_execution(self, report: ExecutionCompleted) -> None:
        """Learn a symbol's one-way cost from a finished parent's implementation shortfall (EWMA)."""
        if report.filled_quantity <= 0 or not math.isfinite(report.implementation_shortfall_bps):
            return
        observed = max(0.0, report.implementation_shortfall_bps) / 1e4
        previous = self.measured_costs_.get(report.symbol)
        weight = self.cost_feedback_weight
        self.measured_costs_[report.symbol] = (
            observed if previous is None else (1 - weight) * previous + weight * observed
        )

    def result(self) -> OptimizationResult:
        """Return the last fit as an :class:`OptimizationResult`."""
        weights = np.asarray(self.weights_, dtype=np.float64)
        expected = float(weights @ self.expected_returns_)
        volatility = float(math.sqrt(max(0.0, weights @ self.covariance_ @ weights)))
        excess = expected - (self.risk_free_rate if self.objective_ == "max_sharpe" else 0.0)
        return OptimizationResult(
            weights={asset: float(w) for asset, w in zip(self.assets_, weights, strict=True)},
            expected_return=expected,
            volatility=volatility,
            sharpe_ratio=excess / volatility if volatility > 0 else 0.0,
            objective=self.objective_,
            status=self.status_,
            fallback_reason=self.fallback_reason_,
            solve_seconds=self.solve_seconds_,
        )

    async def optimize_weights(
        self,
        returns_data: pd.DataFrame,
        constraints: PortfolioConstraints | Mapping[str, Any] | None = None,
        objective: str | None = None,
        expected_returns: Sequence[float] | np.ndarray | None = None,
    ) -> OptimizationResult:
        """Optimize weights for a frame of returns (one column per asset), as in the user's UC-3.1.

        ``constraints`` is a mapping of :class:`PortfolioConstraints` fields
        (``{'min_weight': 0.05, 'max_weight': 0.6}``) laid over the configured
        constraints, or a full :class:`PortfolioConstraints`. Unlike the
        pipeline's rebalance, it answers constraints nothing can meet with an
        error, not with held (or all-zero) weights.

        Raises
        ------
        TypeError
            If ``returns_data`` is not a DataFrame.
        ValueError
            For a constraint of the wrong type or range; for constraints no
            weights can meet together (``min_weight`` x assets above the net
            exposure, ``max_weight`` x assets below it, ``min_weight`` above
            ``max_weight``, a gross leverage below what they need), naming
            them and what to relax, before any solve; or when the solver finds
            no weights meeting the constraints on these returns. The
            optimizer's last fit is kept then.
        """
        if not isinstance(returns_data, pd.DataFrame):
            raise TypeError(f"returns_data must be a pandas DataFrame of returns, got {type(returns_data).__name__}")
        rules = (
            constraints
            if isinstance(constraints, PortfolioConstraints)
            else PortfolioConstraints.from_mapping(constraints, self.constraints)
        )
        array, assets = _returns_array(returns_data)
        conflict = bounds_conflict(len(assets), rules)
        if conflict is not None:
            raise ValueError(f"the constraints cannot all hold: {conflict}")
        self._fit_array(array, assets, expected_returns, None, None, rules, objective, refuse_infeasible=True)
        return self.result()

    # --- component ------------------------------------------------------------------------

    def on_start(self) -> None:
        """Subscribe to bars, views, positions, risk limits and trading states; start the schedule."""
        self.bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.history")
        self.bus.subscribe(SignalGenerated, self.on_signal, name=self.name)
        self.bus.subscribe(PositionChanged, self.on_position, name=f"{self.name}.positions")
        self.bus.subscribe(RiskLimitsUpdated, self.on_limits, name=f"{self.name}.limits")
        self.bus.subscribe(TradingStateChanged, self.on_trading_state, name=f"{self.name}.state")
        self.bus.subscribe(ExecutionCompleted, self.on_execution, name=f"{self.name}.costs")
        self.bus.register(Rebalance, self.on_rebalance, name=self.name)
        if self.rebalance_interval_ns:
            self.clock.set_timer(f"{self.name}.rebalance", self.rebalance_interval_ns, self._rebalance_due)

    def on_stop(self) -> None:
        """Stop the rebalance schedule."""
        self.clock.cancel_timer(f"{self.name}.rebalance")

    def _rebalance_due(self, event: TimeEvent) -> None:
        self.bus.publish(Rebalance(reason="scheduled", ts_event=event.ts, ts_init=self.clock.timestamp_ns()))

    def warm_up(self, bars: Iterable[BarClosed]) -> int:
        """Keep the closes of recorded bars from before the run (nothing is proposed); return how many.

        The first allocation of the run then estimates from a full history,
        and the problem of the symbols warmed up is compiled here
        (:meth:`compile_problem`), not on the run's first rebalance.
        """
        count = 0
        for bar in bars:
            closes = self._closes.get(bar.symbol)
            if closes is not None and math.isfinite(bar.close) and bar.close > 0:
                if bar.ts_event != self._bar_ts:
                    self._compile_for_new_history()
                closes.append(bar.ts_event, bar.close)
                self._bar_ts = bar.ts_event
                count += 1
        return count

    def on_bar(self, bar: BarClosed) -> None:
        """Keep the close; credit each strategy with the bar's return on its view."""
        closes = self._closes.get(bar.symbol)
        close, ts = bar.close, bar.ts_event
        if closes is None or not math.isfinite(close) or close <= 0:
            return
        if ts != self._bar_ts:
            if self._bar_ts is not None:
                self._close_strategy_bar()
                self._bar_count += 1
            self._compile_for_new_history()
            self._bar_ts = ts
            if self._pending:
                self._decide_pending(ts)
        last = closes.last_close
        if last is not None and self._views:
            change = close / last - 1.0
            symbol, strategy_bar = bar.symbol, self._strategy_bar
            for strategy, views in self._views.items():
                strategy_bar[strategy] = strategy_bar.get(strategy, 0.0) + views.get(symbol, 0.0) * change
        closes.append(ts, close)

    def _close_strategy_bar(self) -> None:
        if self._views:
            universe = len(self.symbols)
            self.allocator.partial_fit({s: self._strategy_bar.get(s, 0.0) / universe for s in self._views})
        self._strategy_bar = {}

    def on_signal(self, signal: SignalGenerated) -> None:
        """Record the strategy's view; re-optimize when the symbol's combined view changes direction."""
        if signal.symbol not in self._closes:
            return
        view = _SIGN[signal.action] * signal.strength * signal.confidence
        if not math.isfinite(view):
            return
        if signal.strategy not in self._views:
            self.allocator.add_strategy(signal.strategy)
        self._views.setdefault(signal.strategy, {})[signal.symbol] = view
        combined = signal_scores(self._views, self.allocator.weights_, [signal.symbol])[0]
        direction = float(np.sign(combined))
        if self._direction.get(signal.symbol, 0.0) == direction:
            self._pending.pop(signal.symbol, None)
            return
        if self.decision_interval_bars > 1 or self.signal_persistence_bars > 1:
            seen = self._pending.get(signal.symbol)
            if seen is None or seen[0] != direction:
                self._pending[signal.symbol] = (direction, self._bar_count)
            return
        targets = self._optimized_targets()
        # Only a proposal consumes the change: a signal before enough history is seen again later.
        if targets:
            self._direction[signal.symbol] = direction
            self._count_unweighted(targets, {signal.symbol: direction})
        else:
            self._count_waiting({signal.symbol: direction})
        self._propose(targets, f"{signal.strategy} {signal.action.value} {signal.symbol}", signal.ts_event)

    def _decide_pending(self, ts: int) -> None:
        """At a new bar time, act on the direction changes that held long enough, if it is a decision time.

        Only the views and closes of earlier bar times are used: the new bar
        time's own bars and signals have not been seen yet.
        """
        if self._bar_count % self.decision_interval_bars:
            return
        ready = [
            symbol
            for symbol, (_, first) in self._pending.items()
            if self._bar_count - first >= self.signal_persistence_bars
        ]
        if not ready:
            return
        targets = self._optimized_targets()
        if not targets:
            self._count_waiting({symbol: self._pending[symbol][0] for symbol in ready})
            return
        for symbol in ready:
            self._direction[symbol] = self._pending.pop(symbol)[0]
        self._count_unweighted(targets, {symbol: self._direction[symbol] for symbol in ready})
        self._propose(targets, f"view change {','.join(sorted(ready))}", ts)

    def _count_waiting(self, directions: Mapping[str, float]) -> None:
        """Count the direction changes no weights could be solved for yet (too little history), once each."""
        for symbol, direction in directions.items():
            if self._waiting.get(symbol) != direction:
                self._waiting[symbol] = direction
                self.views_before_history += 1

    def _count_unweighted(self, targets: Mapping[str, float], directions: Mapping[str, float]) -> None:
        """Count the new non-zero directions the solve gave no weight, when it priced trading costs."""
        if self.costs is None and self.cost_assumption is None:
            return
        for symbol, direction in directions.items():
            if direction != 0.0 and abs(targets.get(symbol, 0.0)) < _NO_WEIGHT:
                self.views_not_worth_costs += 1

    def on_position(self, change: PositionChanged) -> None:
        """Keep the position quantity for the current weights."""
        self._quantities[change.symbol] = float(change.quantity)

    def on_limits(self, update: RiskLimitsUpdated) -> None:
        """Take the risk layer's caps, limits and equity."""
        self._caps = dict(update.position_weight_caps)
        self._limits = dict(update.limits)
        self._equity = update.equity if update.equity > 0 else None

    def on_trading_state(self, change: TradingStateChanged) -> None:
        """Scale the targets down when the risk layer starts reducing."""
        if change.state is TradingState.REDUCING:
            self._propose(self._reduced_targets(), f"reduce risk ({change.reason})", change.ts_event)

    def on_rebalance(self, command: Rebalance) -> None:
        """Re-optimize and propose."""
        self._propose(self._optimized_targets(), f"rebalance ({command.reason})", command.ts_event)

    async def rebalance_portfolio(self, reason: str = "operator") -> OptimizationResult | None:
        """Re-optimize on the history held now and propose the weights, as in the user's UC-1.2.

        Returns the optimization, or None while no symbol has ``min_history`` bars.
        """
        targets = self._optimized_targets()
        self._propose(targets, f"rebalance ({reason})", self.clock.timestamp_ns())
        return self.result() if hasattr(self, "weights_") and targets else None

    async def reduce_risk_exposure(self, factor: float | None = None) -> dict[str, float]:
        """Propose the current targets multiplied by ``factor`` (``reduce_factor`` when None); return them."""
        targets = self._reduced_targets(factor)
        self._propose(targets, "reduce risk exposure", self.clock.timestamp_ns())
        return targets

    def weights(self) -> dict[str, float]:
        """Return the weights last proposed."""
        return dict(self._targets)

    def restore_weights(self, weights: Mapping[str, float]) -> None:
        """Put back the weights last proposed before a restart (nothing is published)."""
        self._targets = dict(weights)

    def _reduced_targets(self, factor: float | None = None) -> dict[str, float]:
        scale = self.reduce_factor if factor is None else factor
        if not 0.0 <= scale < 1.0:
            raise ValueError(f"a reduction factor must lie in [0, 1), got {scale}")
        return {symbol: weight * scale for symbol, weight in self._targets.items()}

    def _optimized_targets(self) -> dict[str, float]:
        assets, closes = self._panel()
        if not assets:
            return {}
        returns = closes[1:] / closes[:-1] - 1.0
        equity = self._equity
        marks = dict(zip(assets, closes[-1], strict=True))
        current = [self._quantities.get(s, 0.0) * marks[s] / equity if equity else 0.0 for s in assets]
        caps = [self._caps.get(s, math.inf) for s in assets]
        # Column-major, as a frame's values are: fit() on a frame sums the same floats in the same order.
        array = validate_returns(np.asfortranarray(returns))
        self._fit_array(array, assets, None, current, caps, self._risk_constraints(), None)
        weights = self.weights_
        if self.weight_step > 0:
            # The small epsilon keeps a weight that is a multiple up to rounding on its multiple; where it
            # would lift a weight a hair above the solver's (a cap the solve reached), the solver's stands.
            cut = np.trunc(weights / self.weight_step + np.sign(weights) * 1e-9) * self.weight_step
            weights = np.where(np.abs(cut) > np.abs(weights), weights, cut)
        targets = dict.fromkeys(self.symbols, 0.0)
        targets.update({s: float(w) for s, w in zip(assets, weights, strict=True)})
        return targets

    def _risk_constraints(self) -> PortfolioConstraints:
        """Tighten the gross leverage to the risk layer's limit."""
        limit = self._limits.get("max_leverage")
        rules = self.constraints
        if limit is None or rules.gross_leverage is None or rules.gross_leverage <= limit:
            return rules
        return PortfolioConstraints.from_mapping({"gross_leverage": limit}, rules)

    def _panel(self) -> tuple[list[str], np.ndarray]:
        """Return the symbols with enough history and their closes on common, completed bar times.

        The latest bar time is left out: its bars may still be arriving, and
        which of them arrived first must not change the weights.
        """
        ready = [s for s in self.symbols if len(self._closes[s]) > self.min_history]
        if not ready:
            return [], np.empty((0, 0))
        windows = [self._closes[s] for s in ready]
        closes = _closes_on_one_grid(windows, self._bar_ts)
        if closes is None:
            closes = self._closes_by_search(windows)
        if len(closes) < self.min_history:
            return [], np.empty((0, 0))
        return ready, closes

    def _closes_by_search(self, windows: list[_CloseWindow]) -> np.ndarray:
        """The closes of ``windows`` at their common completed bar times, for windows of any bar times."""
        # Each symbol's bar times rise strictly, so its closes at the common times are found by binary search.
        first = windows[0].times()
        kept = first != self._bar_ts
        like_first = [True, *(np.array_equal(window.times(), first) for window in windows[1:])]
        if all(like_first):
            # The usual case, every symbol on the same bar times: no search needed.
            closes = np.column_stack([window.closes()[kept] for window in windows])
        else:
            # Only the windows whose times differ from the first one's narrow the common times or need a search.
            times = first[kept]
            for window, same in zip(windows, like_first, strict=True):
                if not same:
                    times = _common_times(times, window.times())
            at_first = np.searchsorted(first, times)
            closes = np.column_stack(
                [
                    window.closes()[at_first if same else np.searchsorted(window.times(), times)]
                    for window, same in zip(windows, like_first, strict=True)
                ]
            )
        return closes

    def _propose(self, targets: dict[str, float], reason: str, ts: int) -> None:
        if not targets:
            return
        self._targets = dict(targets)
        self.bus.publish(
            AllocationProposed(weights=dict(targets), reason=reason, ts_event=ts, ts_init=self.clock.timestamp_ns())
        )


class _CloseWindow:
    """The last ``size`` (bar time, close) pairs of one symbol, as two numpy arrays (append amortized O(1)).

    The arrays hold twice the window; when the end is reached the window is
    copied back to the front, so reading it is a slice, never a conversion.
    It also follows where the latest run of equal steps between bar times
    began, so :meth:`step` tells a gapless window in O(1).
    """

    __slots__ = (
        "_appended",
        "_closes",
        "_end",
        "_last_ts",
        "_run_from",
        "_start",
        "_step",
        "_times",
        "last_close",
        "size",
    )

    def __init__(self, size: int) -> None:
        self.size = size
        self._times = np.empty(2 * size, dtype=np.int64)
        self._closes = np.empty(2 * size, dtype=np.float64)
        self._start = self._end = 0
        self.last_close: float | None = None
        self._appended = 0
        self._last_ts = 0
        self._step = 0
        self._run_from = 0
        """The number of the bar (counted over every append) where the run of steps equal to ``_step`` starts."""

    def __len__(self) -> int:
        return self._end - self._start

    def append(self, ts: int, close: float) -> None:
        """Add a bar's close, dropping the oldest once the window is full."""
        if self._appended:
            step = ts - self._last_ts
            if step != self._step:
                self._step = step
                self._run_from = self._appended - 1
        self._appended += 1
        self._last_ts = ts
        end = self._end
        if end == len(self._times):
            kept = self.size - 1
            self._times[:kept] = self._times[end - kept : end]
            self._closes[:kept] = self._closes[end - kept : end]
            self._start, end = 0, kept
        self._times[end] = ts
        self._closes[end] = close
        self._end = end + 1
        if self._end - self._start > self.size:
            self._start += 1
        self.last_close = close

    def step(self) -> int | None:
        """Return the step between every two neighbouring bar times of the window (None: fewer than two, or unequal)."""
        count = self._end - self._start
        if count < 2 or self._run_from > self._appended - count:
            return None
        return self._step

    def first_time(self) -> int:
        """Return the oldest bar time in the window (the window must not be empty)."""
        return int(self._times[self._start])

    def last_time(self) -> int:
        """Return the newest bar time in the window (the window must not be empty)."""
        return self._last_ts

    def times(self) -> np.ndarray:
        """Return the bar times in the window, oldest first (a view)."""
        return self._times[self._start : self._end]

    def closes(self) -> np.ndarray:
        """Return the closes in the window, oldest first (a view)."""
        return self._closes[self._start : self._end]


def _closes_on_one_grid(windows: Sequence[_CloseWindow], latest: int | None) -> np.ndarray | None:
    """The closes of ``windows`` at their common bar times before ``latest``, when each window is a gapless run.

    The usual case: every window steps by the same interval on the same grid,
    with no bar missing, and they differ at most in where they start and end
    (a symbol whose bar of the latest time has not arrived yet ends one bar
    earlier). Then the common times are one run and each window's part of it
    a slice. None when any window has a gap, another step or grid, or bars
    after ``latest``: :meth:`PortfolioOptimizer._closes_by_search` takes those.
    """
    step = windows[0].step()
    if step is None or step <= 0:
        return None
    origin = windows[0].first_time()
    start, end = origin, windows[0].last_time()
    firsts = []
    for window in windows:
        low = window.first_time()
        if window.step() != step or (low - origin) % step:
            return None
        firsts.append(low)
        start, end = max(start, low), min(end, window.last_time())
    if latest is not None:
        if end > latest:
            return None
        if end == latest:
            end -= step  # the latest bar time's bars may still be arriving
    if end < start:
        return np.empty((0, len(windows)))
    rows = (end - start) // step + 1
    columns = []
    for window, low in zip(windows, firsts, strict=True):
        offset = (start - low) // step
        columns.append(window.closes()[offset : offset + rows])
    return np.column_stack(columns)


def _common_times(times: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Return the ``times`` also in ``other`` (both strictly rising): ``np.intersect1d`` by binary search."""
    positions = np.minimum(np.searchsorted(other, times), len(other) - 1)
    return times[other[positions] == times]


def _returns_array(returns: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Return validated per-bar returns and their asset names (``asset_i`` for an array's columns)."""
    assets = [str(c) for c in returns.columns] if isinstance(returns, pd.DataFrame) else None
    if assets is not None and len(set(assets)) < len(assets):
        twice = sorted({asset for asset in assets if assets.count(asset) > 1})
        raise ValueError(f"returns name an asset twice: {', '.join(twice)}")
    if isinstance(returns, pd.DataFrame):
        require_numeric_columns(returns)
    array = validate_returns(np.asarray(returns, dtype=np.float64), names=assets)
    refuse_prices(array)
    return array, assets or [f"asset_{i}" for i in range(array.shape[1])]


def _vector(values: Sequence[float] | np.ndarray | None, n: int, default: float, name: str) -> np.ndarray:
    if values is None:
        return np.full(n, default)
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,) or np.isnan(array).any():
        raise ValueError(f"{name} must be {n} numbers, got shape {array.shape}")
    return array
