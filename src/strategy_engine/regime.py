"""Market regime detection without look-ahead: a Gaussian HMM and a GARCH(1,1), both filtered bar by bar.

:class:`NoLookAheadRegimeDetector` turns one symbol's closes into, at each
bar, the filtered probabilities of four regimes (trending, mean-reverting,
high-volatility, low-volatility) and a one-bar-ahead volatility forecast,
using only the bars up to that one:

- features: per bar, Kaufman's efficiency ratio of log closes over
  ``trend_window`` bars (1 = straight trend, 0 = noise) and the log of the
  realized volatility of log returns over ``volatility_window`` bars;
- a 4-state diagonal Gaussian HMM is fitted by hmmlearn's EM on the last
  ``fit_window`` feature rows once ``min_fit_bars`` rows exist, then refitted
  every ``refit_interval`` rows, warm-started from the previous fit. Between
  fits the filtered (forward) probabilities advance by one O(K^2) step per bar
  (:class:`GaussianHmmFilter`), not by re-running hmmlearn;
- a zero-mean GARCH(1,1) is fitted by arch on the last ``fit_window``
  returns (in basis points) on the same schedule, and its conditional
  variance advances by one step per bar (:class:`Garch11Filter`);
- labels stay stable across refits: the first fit names its states by a fixed
  rule (highest efficiency is trending, lowest mean-reverting, highest
  volatility high-volatility, lowest low-volatility, assigned jointly by the
  Hungarian method on standardized state means), and each refit's states are
  matched to the previous fit's by the smallest total standardized distance
  between means, so a state keeps its name when EM returns states in another
  order. Only when the rule fits the new states clearly better than the
  matched names (by ``relabel_margin``) are they renamed by the rule, so
  names follow a real change of the market's structure, not EM's ordering.

The refit schedule counts bars, so a run stopped at t and a run that goes on
make identical decisions up to t. A failed fit (an exception, non-finite or
degenerate parameters, an unconverged or non-stationary GARCH) keeps the
previous model and is counted with its reason.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
from arch import arch_model
from hmmlearn.hmm import GaussianHMM
from scipy.optimize import linear_sum_assignment

from keel.core.messages import MarketRegime
from keel.strategy_engine.indicators import EfficiencyRatio, RollingMeanSquare

REGIMES: tuple[MarketRegime, ...] = (
    MarketRegime.TRENDING,
    MarketRegime.MEAN_REVERTING,
    MarketRegime.HIGH_VOLATILITY,
    MarketRegime.LOW_VOLATILITY,
)
"""The labelled regimes, in the order of every probability vector."""

N_STATES = len(REGIMES)
_EFFICIENCY, _VOLATILITY = 0, 1
_LOG_2PI = math.log(2.0 * math.pi)
# Realized variance floor (a 1e-6 bp move): log stays finite over flat windows.
_VARIANCE_FLOOR = 1e-20
# hmmlearn logs every EM step that loses likelihood or leaves a state unvisited; the detector
# checks the fitted model itself and records a failed fit with its reason instead.
_HMMLEARN_LOG = logging.getLogger("hmmlearn.base")


class RegimeState(NamedTuple):
    """The detector's view of one symbol after a bar (an immutable tuple: cheap to make every bar).

    Parameters
    ----------
    regime
        The most likely regime (UNKNOWN before the first HMM fit).
    probabilities
        Filtered probabilities in :data:`REGIMES` order, or None before the first fit.
    variance
        GARCH one-bar-ahead variance of the log return (a fraction squared), or None.
    long_run_variance
        The fitted GARCH's unconditional variance, or None.
    """

    regime: MarketRegime
    probabilities: tuple[float, ...] | None
    variance: float | None
    long_run_variance: float | None

    @property
    def volatility(self) -> float | None:
        """Return the one-bar-ahead volatility forecast (a fraction), or None."""
        return None if self.variance is None else math.sqrt(self.variance)

    def probability(self, regime: MarketRegime) -> float:
        """Return the filtered probability of ``regime`` (0 before the first fit)."""
        if self.probabilities is None or regime is MarketRegime.UNKNOWN:
            return 0.0
        return self.probabilities[REGIMES.index(regime)]

    def as_dict(self) -> dict[str, float]:
        """Return the probabilities keyed by regime value (empty before the first fit)."""
        if self.probabilities is None:
            return {}
        return {regime.value: p for regime, p in zip(REGIMES, self.probabilities, strict=True)}


UNKNOWN_STATE = RegimeState(MarketRegime.UNKNOWN, None, None, None)


class GaussianHmmFilter:
    """The forward recursion of a diagonal Gaussian HMM, one observation per call, O(K^2 + K D).

    ``probabilities`` after an update are the filtered state probabilities
    ``P(state_t | x_1..x_t)``: hmmlearn's forward variables normalized per step.

    Parameters
    ----------
    startprob
        Initial state distribution (K).
    transmat
        Transition matrix (K x K), rows summing to 1.
    means, variances
        Per-state means and diagonal variances (K x D).
    fast
        Use the unrolled update when K = 4 and D = 2 (the detector's shape);
        False always runs the plain loops (the reference the tests compare to).
    """

    def __init__(
        self,
        startprob: Sequence[float],
        transmat: Sequence[Sequence[float]],
        means: Sequence[Sequence[float]],
        variances: Sequence[Sequence[float]],
        *,
        fast: bool = True,
    ) -> None:
        start = np.asarray(startprob, dtype=float)
        trans = np.asarray(transmat, dtype=float)
        mean = np.asarray(means, dtype=float)
        var = np.asarray(variances, dtype=float)
        states = start.shape[0]
        if trans.shape != (states, states) or mean.shape[0] != states or var.shape != mean.shape:
            raise ValueError("HMM parameters have inconsistent shapes")
        if not (np.all(np.isfinite(trans)) and np.all(np.isfinite(mean)) and np.all(var > 0)):
            raise ValueError("HMM parameters must be finite with positive variances")
        self._start = start.tolist()
        self._columns = [tuple(trans[:, j].tolist()) for j in range(states)]
        self._means = [tuple(row) for row in mean.tolist()]
        self._half_precisions = [tuple(row) for row in (0.5 / var).tolist()]
        dimensions = mean.shape[1]
        self._log_norms = (-0.5 * (dimensions * _LOG_2PI + np.log(var).sum(axis=1))).tolist()
        self._unrolled = (
            [
                (log_norm, m[0], h[0], m[1], h[1])
                for log_norm, m, h in zip(self._log_norms, self._means, self._half_precisions, strict=True)
            ]
            if fast and (states, dimensions) == (4, 2)
            else None
        )
        self.probabilities: list[float] | None = None
        self.degenerate_updates = 0

    @classmethod
    def from_model(cls, model: GaussianHMM, *, fast: bool = True) -> GaussianHmmFilter:
        """Build the filter of a fitted hmmlearn ``GaussianHMM`` (diagonal covariances)."""
        if model.covariance_type != "diag":
            raise ValueError(f"the filter needs diagonal covariances, got {model.covariance_type!r}")
        return cls(model.startprob_, model.transmat_, model.means_, model._covars_, fast=fast)

    def reset(self) -> None:
        """Forget the past: the next update starts from the initial distribution."""
        self.probabilities = None

    def update(self, observation: Sequence[float]) -> list[float]:
        """Filter one more observation; return the new state probabilities."""
        previous = self.probabilities
        if self._unrolled is not None and previous is not None:
            return self._update_unrolled(observation, previous)
        log_likelihoods = []
        for log_norm, mean, half_precision in zip(self._log_norms, self._means, self._half_precisions, strict=True):
            value = log_norm
            for x, m, h in zip(observation, mean, half_precision, strict=True):
                d = x - m
                value -= d * d * h
            log_likelihoods.append(value)
        top = max(log_likelihoods)
        exp = math.exp
        if previous is None:
            alphas = [exp(value - top) * p for value, p in zip(log_likelihoods, self._start, strict=True)]
        else:
            alphas = []
            for value, column in zip(log_likelihoods, self._columns, strict=True):
                predicted = 0.0
                for p, a in zip(previous, column, strict=True):
                    predicted += p * a
                alphas.append(exp(value - top) * predicted)
        return self._normalize(alphas, previous)

    def _update_unrolled(self, observation: Sequence[float], previous: list[float]) -> list[float]:
        x0, x1 = observation
        log_likelihoods = [
            log_norm - (x0 - m0) * (x0 - m0) * h0 - (x1 - m1) * (x1 - m1) * h1
            for log_norm, m0, h0, m1, h1 in self._unrolled  # type: ignore[union-attr]
        ]
        top = max(log_likelihoods)
        p0, p1, p2, p3 = previous
        exp = math.exp
        alphas = [
            exp(value - top) * (p0 * a0 + p1 * a1 + p2 * a2 + p3 * a3)
            for value, (a0, a1, a2, a3) in zip(log_likelihoods, self._columns, strict=True)
        ]
        return self._normalize(alphas, previous)

    def _normalize(self, alphas: list[float], previous: list[float] | None) -> list[float]:
        total = sum(alphas)
        if not total > 0.0 or math.isinf(total):
            # No state can explain the observation: keep the prediction, count it.
            self.degenerate_updates += 1
            alphas = self._predict(previous)
            total = sum(alphas)
        self.probabilities = [a / total for a in alphas]
        return self.probabilities

    def _predict(self, previous: list[float] | None) -> list[float]:
        if previous is None:
            return list(self._start)
        return [sum(p * a for p, a in zip(previous, column, strict=True)) for column in self._columns]

    def filter(self, observations: np.ndarray) -> np.ndarray:
        """Reset, filter every row of ``observations`` and return the probabilities (T x K)."""
        self.reset()
        return np.array([self.update(row) for row in np.asarray(observations, dtype=float).tolist()])


class Garch11Filter:
    """The variance recursion of a zero-mean GARCH(1,1): ``s2[t+1] = omega + alpha r[t]^2 + beta s2[t]``.

    ``variance`` is the conditional variance of the next return; the order of
    the additions is arch's, so a run over the same returns reproduces its
    conditional variance.

    Parameters
    ----------
    omega, alpha, beta
        Fitted parameters (omega > 0, alpha, beta >= 0).
    variance
        The conditional variance of the next return.
    """

    __slots__ = ("alpha", "beta", "omega", "variance")

    def __init__(self, omega: float, alpha: float, beta: float, variance: float) -> None:
        if not (omega > 0.0 and alpha >= 0.0 and beta >= 0.0 and variance > 0.0):
            raise ValueError(
                f"GARCH(1,1) needs omega > 0, alpha, beta >= 0 and a positive variance, "
                f"got {omega}, {alpha}, {beta}, {variance}"
            )
        self.omega = omega
        self.alpha = alpha
        self.beta = beta
        self.variance = variance

    @classmethod
    def from_backcast(cls, omega: float, alpha: float, beta: float, backcast: float) -> Garch11Filter:
        """Start as arch does: the variance of the first return from the backcast value."""
        variance = omega
        variance += alpha * backcast
        variance += beta * backcast
        return cls(omega, alpha, beta, variance)

    @property
    def long_run_variance(self) -> float:
        """Return ``omega / (1 - alpha - beta)`` (inf when not stationary)."""
        persistence = self.alpha + self.beta
        return self.omega / (1.0 - persistence) if persistence < 1.0 else math.inf

    def update(self, residual: float) -> float:
        """Take the return that just happened; return the variance of the next one."""
        variance = self.omega
        variance += self.alpha * (residual * residual)
        variance += self.beta * self.variance
        self.variance = variance
        return variance


def label_scores(means: np.ndarray) -> np.ndarray:
    """Return how well each state fits each regime's description (regimes x states).

    The state means (K x 2: efficiency, log volatility) are standardized across
    states; trending scores the efficiency, mean-reverting its opposite,
    high-volatility the volatility and low-volatility its opposite.
    """
    spread = means.std(axis=0)
    z = np.divide(means - means.mean(axis=0), spread, out=np.zeros_like(means), where=spread > 0)
    return np.stack([z[:, _EFFICIENCY], -z[:, _EFFICIENCY], z[:, _VOLATILITY], -z[:, _VOLATILITY]])


def label_states(means: np.ndarray) -> list[int]:
    """Name a fit's states: return, for each regime of :data:`REGIMES`, the state index carrying it.

    The Hungarian method picks the one-to-one assignment with the highest total
    :func:`label_scores`.
    """
    labels, states = linear_sum_assignment(-label_scores(means))
    return [int(s) for _, s in sorted(zip(labels, states, strict=True))]


def assignment_score(means: np.ndarray, order: Sequence[int]) -> float:
    """Return the total :func:`label_scores` of naming state ``order[i]`` after regime ``i``."""
    scores = label_scores(means)
    return float(sum(scores[label, state] for label, state in enumerate(order)))


def match_states(previous_means: np.ndarray, previous_variances: np.ndarray, means: np.ndarray) -> list[int]:
    """Return, for each previous state, the new state closest to it (one-to-one, Hungarian).

    Distances are squared differences of means divided by the previous fit's
    average within-state variance of each feature.
    """
    scale = previous_variances.mean(axis=0)
    difference = previous_means[:, None, :] - means[None, :, :]
    cost = (difference * difference / scale).sum(axis=2)
    rows, columns = linear_sum_assignment(cost)
    return [int(c) for _, c in sorted(zip(rows, columns, strict=True))]


def reorder(model: GaussianHMM, order: Sequence[int]) -> GaussianHMM:
    """Permute a fitted model's states in place so that new state i is old state ``order[i]``."""
    index = np.asarray(order)
    startprob = model.startprob_[index]
    transmat = model.transmat_[np.ix_(index, index)]
    means = model.means_[index]
    covars = model._covars_[index]
    model.startprob_ = startprob
    model.transmat_ = transmat
    model.means_ = means
    model.covars_ = covars
    return model


class NoLookAheadRegimeDetector:
    """Filtered HMM regime probabilities and a GARCH(1,1) volatility forecast, bar by bar, past data only.

    Parameters
    ----------
    trend_window
        Bars in the efficiency-ratio feature.
    volatility_window
        Bars in the realized-volatility feature.
    fit_window
        Feature rows (and returns) the HMM and GARCH are fitted on.
    min_fit_bars
        Feature rows needed before the first fit.
    refit_interval
        Feature rows between fits.
    n_iter, refit_n_iter
        EM iterations of the first fit and of the warm-started refits.
    tol
        EM convergence tolerance (log-likelihood gain).
    min_covar
        Floor of the HMM's variances.
    return_scale
        Returns are multiplied by this before the GARCH fit (1e4: basis points).
    relabel_margin
        A refit keeps the names matched from the previous fit unless naming its
        states afresh by the rule scores this much higher (in standardized
        units; 0 renames by the rule at every fit, ``inf`` never does).

    Attributes
    ----------
    hmm_ : GaussianHMM or None
        The current HMM, its states in :data:`REGIMES` order.
    garch_params_ : tuple of float or None
        The current GARCH (omega, alpha, beta), in scaled units.
    state_ : RegimeState
        The view after the latest bar.
    last_observation_ : tuple of float or None
        The latest feature row (None while the feature windows fill).
    observations_ : int
        Feature rows seen so far.
    fit_window_start_ : int or None
        Index (in feature rows) of the first row of the last successful HMM fit.
    fits_, fit_failures_ : int
        Successful fits and failed fit attempts (HMM and GARCH counted apart).
    relabels_ : int
        Refits whose states were renamed by the rule rather than matched.
    last_fit_error_ : str
        Why the latest failed fit failed ("" if none did).
    """

    def __init__(
        self,
        trend_window: int = 120,
        volatility_window: int = 60,
        fit_window: int = 2880,
        min_fit_bars: int = 1440,
        refit_interval: int = 1440,
        n_iter: int = 50,
        refit_n_iter: int = 10,
        tol: float = 1e-3,
        min_covar: float = 1e-5,
        return_scale: float = 1e4,
        relabel_margin: float = 1.0,
    ) -> None:
        for name, value, low in (
            ("trend_window", trend_window, 2),
            ("volatility_window", volatility_window, 2),
            ("min_fit_bars", min_fit_bars, 10 * N_STATES),
            ("refit_interval", refit_interval, 1),
            ("n_iter", n_iter, 1),
            ("refit_n_iter", refit_n_iter, 1),
        ):
            if value < low:
                raise ValueError(f"regime detector {name} must be >= {low}, got {value}")
        if fit_window < min_fit_bars:
            raise ValueError(f"regime detector fit_window ({fit_window}) must be >= min_fit_bars ({min_fit_bars})")
        for name, number in (("tol", tol), ("min_covar", min_covar), ("return_scale", return_scale)):
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"regime detector {name} must be positive and finite, got {number}")
        if not relabel_margin >= 0:
            raise ValueError(f"regime detector relabel_margin must be >= 0, got {relabel_margin}")
        self.trend_window = trend_window
        self.volatility_window = volatility_window
        self.fit_window = fit_window
        self.min_fit_bars = min_fit_bars
        self.refit_interval = refit_interval
        self.n_iter = n_iter
        self.refit_n_iter = refit_n_iter
        self.tol = tol
        self.min_covar = min_covar
        self.return_scale = return_scale
        self.relabel_margin = relabel_margin
        self._efficiency = EfficiencyRatio(trend_window)
        self._realized = RollingMeanSquare(volatility_window)
        self._features: deque[tuple[float, float]] = deque(maxlen=fit_window)
        self._returns: deque[float] = deque(maxlen=fit_window)
        self._previous_log_close: float | None = None
        self._filter: GaussianHmmFilter | None = None
        self._garch: Garch11Filter | None = None
        self._last_fit_at: int | None = None
        self.hmm_: GaussianHMM | None = None
        self.garch_params_: tuple[float, float, float] | None = None
        self.state_: RegimeState = UNKNOWN_STATE
        self.last_observation_: tuple[float, float] | None = None
        self.observations_ = 0
        self.fit_window_start_: int | None = None
        self.fits_ = 0
        self.fit_failures_ = 0
        self.relabels_ = 0
        self.last_fit_error_ = ""

    @property
    def warmup_bars(self) -> int:
        """Return the bars needed before the first fit."""
        return max(self.trend_window, self.volatility_window) + self.min_fit_bars

    def fit(self, closes: Sequence[float]) -> NoLookAheadRegimeDetector:
        """Walk forward through ``closes`` (each bar seeing only its past) and return self."""
        for close in closes:
            self.update(float(close))
        return self

    def update(self, close: float) -> RegimeState:
        """Take the next close; return the regime view after it.

        Raises
        ------
        ValueError
            If the close is not a positive finite price.
        """
        if not (close > 0.0 and math.isfinite(close)):
            raise ValueError(f"regime detector needs a positive finite close, got {close!r}")
        log_close = math.log(close)
        efficiency = self._efficiency.update(log_close)
        previous = self._previous_log_close
        self._previous_log_close = log_close
        if previous is None:
            return self.state_
        log_return = log_close - previous
        scaled = log_return * self.return_scale
        self._returns.append(scaled)
        if self._garch is not None:
            self._garch.update(scaled)
        realized = self._realized.update(log_return)
        if not (self._efficiency.ready and self._realized.ready):
            return self._publish()
        observation = (efficiency, 0.5 * math.log(max(realized, _VARIANCE_FLOOR)))
        self.last_observation_ = observation
        self._features.append(observation)
        self.observations_ += 1
        if self._fit_due():
            self._refit()
        elif self._filter is not None:
            self._filter.update(observation)
        return self._publish()

    def _fit_due(self) -> bool:
        if self.observations_ < self.min_fit_bars:
            return False
        return self._last_fit_at is None or self.observations_ - self._last_fit_at >= self.refit_interval

    def _refit(self) -> None:
        self._last_fit_at = self.observations_
        features = np.array(self._features)
        self._fit_hmm(features)
        self._fit_garch(np.array(self._returns))

    def _fit_hmm(self, features: np.ndarray) -> None:
        previous = self.hmm_
        try:
            model = self._hmm_fitted_on(features, previous)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as error:
            self._fit_failed(f"HMM fit: {error}")
            if self._filter is not None:
                self._filter.update(features[-1].tolist())
            return
        self.hmm_ = model
        self.fit_window_start_ = self.observations_ - len(features)
        self.fits_ += 1
        fresh = GaussianHmmFilter.from_model(model)
        # The filtered probability at the window's end is the smoothed one at its last row.
        fresh.probabilities = model.predict_proba(features)[-1].tolist()
        self._filter = fresh

    def _hmm_fitted_on(self, features: np.ndarray, previous: GaussianHMM | None) -> GaussianHMM:
        model = GaussianHMM(
            n_components=N_STATES,
            covariance_type="diag",
            n_iter=self.n_iter if previous is None else self.refit_n_iter,
            tol=self.tol,
            min_covar=self.min_covar,
            params="stmc",
            init_params="",
            implementation="log",
        )
        if previous is None:
            _initialize_by_quadrants(model, features, self.min_covar)
        else:
            model.startprob_ = previous.startprob_.copy()
            model.transmat_ = previous.transmat_.copy()
            model.means_ = previous.means_.copy()
            model.covars_ = previous._covars_.copy()
        with warnings.catch_warnings(), np.errstate(all="ignore"), _quiet(_HMMLEARN_LOG):
            warnings.simplefilter("ignore")
            model.fit(features)
        _check_model(model)
        order = label_states(model.means_)
        if previous is not None:
            matched = match_states(previous.means_, previous._covars_, model.means_)
            if assignment_score(model.means_, order) - assignment_score(model.means_, matched) > self.relabel_margin:
                self.relabels_ += 1
            else:
                order = matched
        return reorder(model, order)

    def _fit_garch(self, returns: np.ndarray) -> None:
        starting = None if self.garch_params_ is None else np.array(self.garch_params_)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                result = arch_model(returns, mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False).fit(
                    disp="off", show_warning=False, starting_values=starting
                )
        except (ValueError, np.linalg.LinAlgError) as error:
            self._fit_failed(f"GARCH fit: {error}")
            return
        omega, alpha, beta = (float(v) for v in result.params.to_numpy())
        last_variance = float(result.conditional_volatility[-1]) ** 2
        if result.convergence_flag != 0:
            self._fit_failed(f"GARCH fit did not converge (flag {result.convergence_flag})")
            return
        if not (math.isfinite(omega + alpha + beta + last_variance) and omega > 0 and alpha + beta < 1.0):
            self._fit_failed(f"GARCH fit is not stationary: omega={omega}, alpha={alpha}, beta={beta}")
            return
        garch = Garch11Filter(omega, alpha, beta, last_variance)
        garch.update(float(returns[-1]))
        self._garch = garch
        self.garch_params_ = (omega, alpha, beta)
        self.fits_ += 1

    def _fit_failed(self, reason: str) -> None:
        self.fit_failures_ += 1
        self.last_fit_error_ = reason

    def _publish(self) -> RegimeState:
        variance = long_run = None
        garch = self._garch
        if garch is not None:
            scale = self.return_scale * self.return_scale
            variance = garch.variance / scale
            long_run = garch.long_run_variance / scale
        hmm_filter = self._filter
        if hmm_filter is None or hmm_filter.probabilities is None:
            self.state_ = RegimeState(MarketRegime.UNKNOWN, None, variance, long_run)
            return self.state_
        probabilities = tuple(hmm_filter.probabilities)
        self.state_ = RegimeState(REGIMES[probabilities.index(max(probabilities))], probabilities, variance, long_run)
        return self.state_


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Silence a logger below ERROR for the duration of a block."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _initialize_by_quadrants(model: GaussianHMM, features: np.ndarray, min_covar: float) -> None:
    """Start EM from the four quadrants split at the median efficiency and median volatility."""
    high_efficiency = features[:, _EFFICIENCY] >= np.median(features[:, _EFFICIENCY])
    high_volatility = features[:, _VOLATILITY] >= np.median(features[:, _VOLATILITY])
    groups = [
        high_efficiency & ~high_volatility,
        ~high_efficiency & ~high_volatility,
        high_efficiency & high_volatility,
        ~high_efficiency & high_volatility,
    ]
    if min(int(g.sum()) for g in groups) < 2:
        # Features that do not spread over all quadrants: split volatility into quartiles instead.
        ranks = np.argsort(np.argsort(features[:, _VOLATILITY], kind="stable"), kind="stable")
        groups = [ranks * N_STATES // len(features) == k for k in range(N_STATES)]
    model.startprob_ = np.full(N_STATES, 1.0 / N_STATES)
    stay = 0.95
    model.transmat_ = np.full((N_STATES, N_STATES), (1.0 - stay) / (N_STATES - 1)) + np.eye(N_STATES) * (
        stay - (1.0 - stay) / (N_STATES - 1)
    )
    model.means_ = np.array([features[g].mean(axis=0) for g in groups])
    model.covars_ = np.array([features[g].var(axis=0) + min_covar for g in groups])


def _check_model(model: GaussianHMM) -> None:
    """Raise ValueError when a fitted model cannot be filtered (non-finite, a dead state, zero variance)."""
    arrays = (model.startprob_, model.transmat_, model.means_, model._covars_)
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("fitted parameters are not finite")
    if not np.allclose(model.transmat_.sum(axis=1), 1.0):
        raise ValueError("a state of the fit has no transitions (it was never visited)")
    if not np.all(model._covars_ > 0):
        raise ValueError("a state of the fit has zero variance")
