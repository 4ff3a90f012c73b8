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

A fit is a pure function of its :class:`RegimeFitRequest` (the window's
features and returns, the previous fit, the settings):
:func:`fit_regime_models`. The fit started at feature row ``n`` is applied at
row ``n + fit_delay_bars``; until then the previous model filters on, and at
that row the new model's filter and variance are advanced through the rows
after ``n``. With the default delay 0 it is applied on the bar it started at
(the backtests' semantics). A delay of at least 1 lets paper and live runs
fit in a worker (:meth:`NoLookAheadRegimeDetector.use_executor`) off the
event loop; where the fit ran never changes a result, because the model is
applied at the same bar whether the worker finished early or had to be waited
for. hmmlearn, arch and scipy are imported by the fit itself, so a process
that never fits (or fits in a worker process) never loads them. Fits can be
shared through a :class:`RegimeFitStore` installed with
:func:`use_regime_fit_store` (tuning trials on the same data fit once) or
given to one detector (:meth:`NoLookAheadRegimeDetector.use_fit_store`): a
backtest's detectors take theirs from a worker process that made them ahead
of the replay (:mod:`keel.strategy_engine.regime_prefetch`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import structlog
from numpy.typing import ArrayLike

from keel.core.messages import MarketRegime
from keel.strategy_engine.indicators import EfficiencyRatio, RollingMeanSquare

if TYPE_CHECKING:
    from hmmlearn.hmm import GaussianHMM

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
_log = structlog.get_logger("keel.strategy.regime")


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
        startprob: ArrayLike,
        transmat: ArrayLike,
        means: ArrayLike,
        variances: ArrayLike,
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

    @classmethod
    def from_parameters(cls, parameters: HmmParameters, *, fast: bool = True) -> GaussianHmmFilter:
        """Build the filter of fitted HMM parameters."""
        return cls(parameters.startprob, parameters.transmat, parameters.means, parameters.covars, fast=fast)

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
        """:meth:`update` for 4 states and 2 features, written out: the same operations in the same order."""
        x0, x1 = observation
        (n0, m00, h00, m01, h01), (n1, m10, h10, m11, h11), (n2, m20, h20, m21, h21), (n3, m30, h30, m31, h31) = (
            self._unrolled  # type: ignore[misc]
        )
        d0, d1, d2, d3 = x0 - m00, x0 - m10, x0 - m20, x0 - m30
        e0, e1, e2, e3 = x1 - m01, x1 - m11, x1 - m21, x1 - m31
        l0 = n0 - d0 * d0 * h00 - e0 * e0 * h01
        l1 = n1 - d1 * d1 * h10 - e1 * e1 * h11
        l2 = n2 - d2 * d2 * h20 - e2 * e2 * h21
        l3 = n3 - d3 * d3 * h30 - e3 * e3 * h31
        top = max(l0, l1, l2, l3)
        p0, p1, p2, p3 = previous
        c0, c1, c2, c3 = self._columns
        exp = math.exp
        a0 = exp(l0 - top) * (p0 * c0[0] + p1 * c0[1] + p2 * c0[2] + p3 * c0[3])
        a1 = exp(l1 - top) * (p0 * c1[0] + p1 * c1[1] + p2 * c1[2] + p3 * c1[3])
        a2 = exp(l2 - top) * (p0 * c2[0] + p1 * c2[1] + p2 * c2[2] + p3 * c2[3])
        a3 = exp(l3 - top) * (p0 * c3[0] + p1 * c3[1] + p2 * c3[2] + p3 * c3[3])
        total = a0 + a1 + a2 + a3
        if not total > 0.0 or math.isinf(total):
            return self._normalize([a0, a1, a2, a3], previous)
        self.probabilities = probabilities = [a0 / total, a1 / total, a2 / total, a3 / total]
        return probabilities

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
    from scipy.optimize import linear_sum_assignment

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
    from scipy.optimize import linear_sum_assignment

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


class HmmParameters(NamedTuple):
    """A fitted diagonal Gaussian HMM, its states in :data:`REGIMES` order (arrays: startprob, K x K, K x D, K x D)."""

    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covars: np.ndarray

    @classmethod
    def of(cls, model: GaussianHMM) -> HmmParameters:
        """Return the parameters of a fitted hmmlearn ``GaussianHMM`` with diagonal covariances."""
        return cls(model.startprob_, model.transmat_, model.means_, model._covars_)

    def model(self, min_covar: float = 1e-5) -> GaussianHMM:
        """Return an hmmlearn ``GaussianHMM`` holding these parameters."""
        from hmmlearn.hmm import GaussianHMM

        model = GaussianHMM(n_components=len(self.startprob), covariance_type="diag", min_covar=min_covar)
        model.startprob_ = self.startprob.copy()
        model.transmat_ = self.transmat.copy()
        model.means_ = self.means.copy()
        model.covars_ = self.covars.copy()
        model.n_features = self.means.shape[1]
        return model


class RegimeFitRequest(NamedTuple):
    """Everything one refit depends on: the window's features and returns, the previous fit, the settings.

    Parameters
    ----------
    features
        The window's feature rows (T x 2: efficiency, log volatility).
    returns
        The window's scaled returns (T).
    previous_hmm, previous_garch
        The last successful fits (warm starts), or None.
    n_iter, tol, min_covar, relabel_margin
        EM iterations, tolerance, variance floor; the renaming margin.
    """

    features: np.ndarray
    returns: np.ndarray
    previous_hmm: HmmParameters | None
    previous_garch: tuple[float, float, float] | None
    n_iter: int
    tol: float
    min_covar: float
    relabel_margin: float

    def key(self) -> str:
        """Return a digest of every input: equal digests, equal fits."""
        digest = hashlib.blake2b(digest_size=20, person=_FIT_KEY_VERSION)
        digest.update(repr((self.n_iter, self.tol, self.min_covar, self.relabel_margin)).encode())
        digest.update(repr((self.features.shape, self.returns.shape, self.previous_garch)).encode())
        for array in (self.features, self.returns, *(self.previous_hmm or ())):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        return digest.hexdigest()


class RegimeFit(NamedTuple):
    """The outcome of one refit (a failed half carries its reason and leaves the previous model in place).

    Parameters
    ----------
    hmm
        The fitted HMM, states in :data:`REGIMES` order, or None if its fit failed.
    probabilities
        Filtered probabilities at the window's last row under ``hmm``.
    relabeled
        The states were renamed by the rule rather than matched to the previous fit's.
    hmm_error
        Why the HMM fit failed ("" if it did not).
    garch
        The fitted GARCH (omega, alpha, beta), scaled units, or None if its fit failed.
    garch_variance
        Its variance of the return after the window's last one.
    garch_error
        Why the GARCH fit failed ("" if it did not).
    """

    hmm: HmmParameters | None
    probabilities: tuple[float, ...] | None
    relabeled: bool
    hmm_error: str
    garch: tuple[float, float, float] | None
    garch_variance: float | None
    garch_error: str


class RegimeFitStore(Protocol):
    """Keeps refits by :meth:`RegimeFitRequest.key`, so equal requests are fitted once."""

    def get(self, key: str) -> RegimeFit | None:
        """Return the fit stored under ``key``, or None."""
        ...

    def put(self, key: str, fit: RegimeFit) -> None:
        """Store ``fit`` under ``key``."""
        ...


_FIT_KEY_VERSION = b"keel-regime-1"
_FIT_STORE: ContextVar[RegimeFitStore | None] = ContextVar("keel_regime_fits", default=None)


@contextmanager
def use_regime_fit_store(store: RegimeFitStore | None) -> Iterator[None]:
    """Let the detectors built inside the block take their refits from ``store`` (and put new ones in it)."""
    token = _FIT_STORE.set(store)
    try:
        yield
    finally:
        _FIT_STORE.reset(token)


def installed_regime_fit_store() -> RegimeFitStore | None:
    """Return the store that detectors built now would use (None: they fit everything themselves)."""
    return _FIT_STORE.get()


def fit_regime_models(request: RegimeFitRequest) -> RegimeFit:
    """Fit the HMM and the GARCH of one refit (a pure function: it runs inline, in a thread or in a process)."""
    hmm, probabilities, relabeled, hmm_error = _fit_hmm(request)
    garch, garch_variance, garch_error = _fit_garch(request)
    return RegimeFit(hmm, probabilities, relabeled, hmm_error, garch, garch_variance, garch_error)


def load_fit_libraries() -> None:
    """Import what a fit uses (a worker process calls it once at start, so the first fit does not wait for it)."""
    import scipy.optimize  # noqa: F401

    import keel.strategy_engine.garch_estimation  # arch
    import keel.strategy_engine.hmm_estimation  # noqa: F401  (hmmlearn)


def _fit_hmm(request: RegimeFitRequest) -> tuple[HmmParameters | None, tuple[float, ...] | None, bool, str]:
    from keel.strategy_engine.hmm_estimation import last_state_probabilities

    try:
        model, relabeled = _hmm_fitted_on(request)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as error:
        return None, None, False, f"HMM fit: {error}"
    # The filtered probability at the window's end is the smoothed one at its last row.
    probabilities = last_state_probabilities(model, request.features)
    return HmmParameters.of(model), probabilities, relabeled, ""


def started_hmm(request: RegimeFitRequest, model_class: type[GaussianHMM] | None = None) -> GaussianHMM:
    """Return a refit's HMM before EM: its settings, started from the previous fit or the feature quadrants.

    ``model_class`` is :class:`~keel.strategy_engine.hmm_estimation.GaussianHmmEstimator`
    (what a refit uses) when None; hmmlearn's own ``GaussianHMM`` gives the same fit.
    """
    if model_class is None:
        from keel.strategy_engine.hmm_estimation import GaussianHmmEstimator

        model_class = GaussianHmmEstimator
    model = model_class(
        n_components=N_STATES,
        covariance_type="diag",
        n_iter=request.n_iter,
        tol=request.tol,
        min_covar=request.min_covar,
        params="stmc",
        init_params="",
        implementation="log",
    )
    previous = request.previous_hmm
    if previous is None:
        _initialize_by_quadrants(model, request.features, request.min_covar)
    else:
        model.startprob_ = previous.startprob.copy()
        model.transmat_ = previous.transmat.copy()
        model.means_ = previous.means.copy()
        model.covars_ = previous.covars.copy()
    return model


def _hmm_fitted_on(request: RegimeFitRequest) -> tuple[GaussianHMM, bool]:
    features, previous = request.features, request.previous_hmm
    model = started_hmm(request)
    with warnings.catch_warnings(), np.errstate(all="ignore"), _quiet(_HMMLEARN_LOG):
        warnings.simplefilter("ignore")
        model.fit(features)
    _check_model(model)
    order = label_states(model.means_)
    relabeled = False
    if previous is not None:
        matched = match_states(previous.means, previous.covars, model.means_)
        if assignment_score(model.means_, order) - assignment_score(model.means_, matched) > request.relabel_margin:
            relabeled = True
        else:
            order = matched
    return reorder(model, order), relabeled


def _fit_garch(request: RegimeFitRequest) -> tuple[tuple[float, float, float] | None, float | None, str]:
    from keel.strategy_engine.garch_estimation import fit_zero_mean_garch

    returns = request.returns
    starting = None if request.previous_garch is None else np.array(request.previous_garch)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            result = fit_zero_mean_garch(returns, starting)
    except (ValueError, np.linalg.LinAlgError) as error:
        return None, None, f"GARCH fit: {error}"
    omega, alpha, beta = (float(v) for v in result.params.to_numpy())
    last_variance = float(result.conditional_volatility[-1]) ** 2
    if result.convergence_flag != 0:
        return None, None, f"GARCH fit did not converge (flag {result.convergence_flag})"
    if not (math.isfinite(omega + alpha + beta + last_variance) and omega > 0 and alpha + beta < 1.0):
        return None, None, f"GARCH fit is not stationary: omega={omega}, alpha={alpha}, beta={beta}"
    garch = Garch11Filter(omega, alpha, beta, last_variance)
    return (omega, alpha, beta), garch.update(float(returns[-1])), ""


class _PendingFit(NamedTuple):
    """A refit under way: applied at feature row ``apply_at``."""

    request: RegimeFitRequest
    future: Future[RegimeFit]
    apply_at: int
    window_start: int
    key: str | None
    cached: bool


def _completed(function: Callable[[RegimeFitRequest], RegimeFit], request: RegimeFitRequest) -> Future[RegimeFit]:
    future: Future[RegimeFit] = Future()
    try:
        future.set_result(function(request))
    except Exception as error:
        future.set_exception(error)
    return future


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
    fit_delay_bars
        Feature rows between the row a fit starts at and the row it is applied
        at (0: the same row; below ``refit_interval``). A worker set by
        :meth:`use_executor` fits meanwhile.

    Attributes
    ----------
    hmm_ : GaussianHMM or None
        The current HMM, its states in :data:`REGIMES` order.
    hmm_parameters_ : HmmParameters or None
        The same parameters as arrays.
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
    fits_from_store_ : int
        Refits taken from the installed :class:`RegimeFitStore` instead of fitted.
    worker_failures_ : int
        Times the executor failed (a worker process died); the refit then ran inline, as do the later ones.
    relabels_ : int
        Refits whose states were renamed by the rule rather than matched.
    last_fit_error_ : str
        Why the latest failed fit failed ("" if none did).
    """

    fit_function: Callable[[RegimeFitRequest], RegimeFit] = staticmethod(fit_regime_models)

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
        fit_delay_bars: int = 0,
    ) -> None:
        for name, value, low in (
            ("trend_window", trend_window, 2),
            ("volatility_window", volatility_window, 2),
            ("min_fit_bars", min_fit_bars, 10 * N_STATES),
            ("refit_interval", refit_interval, 1),
            ("n_iter", n_iter, 1),
            ("refit_n_iter", refit_n_iter, 1),
            ("fit_delay_bars", fit_delay_bars, 0),
        ):
            if value < low:
                raise ValueError(f"regime detector {name} must be >= {low}, got {value}")
        if fit_window < min_fit_bars:
            raise ValueError(f"regime detector fit_window ({fit_window}) must be >= min_fit_bars ({min_fit_bars})")
        if fit_delay_bars and fit_delay_bars >= refit_interval:
            raise ValueError(
                f"regime detector fit_delay_bars ({fit_delay_bars}) must be below refit_interval ({refit_interval})"
            )
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
        self.fit_delay_bars = fit_delay_bars
        self._efficiency = EfficiencyRatio(trend_window)
        self._realized = RollingMeanSquare(volatility_window)
        self._features: deque[tuple[float, float]] = deque(maxlen=fit_window)
        self._returns: deque[float] = deque(maxlen=fit_window)
        self._previous_log_close: float | None = None
        self._filter: GaussianHmmFilter | None = None
        self._garch: Garch11Filter | None = None
        self._windows_full = False
        self._long_run_variance: float | None = None
        self._last_fit_at: int | None = None
        self._pending: _PendingFit | None = None
        self._executor: Executor | None = None
        self._store = _FIT_STORE.get()
        self._hmm_model: GaussianHMM | None = None
        self.hmm_parameters_: HmmParameters | None = None
        self.garch_params_: tuple[float, float, float] | None = None
        self.state_: RegimeState = UNKNOWN_STATE
        self.last_observation_: tuple[float, float] | None = None
        self.observations_ = 0
        self.fit_window_start_: int | None = None
        self.fits_ = 0
        self.fit_failures_ = 0
        self.fits_from_store_ = 0
        self.worker_failures_ = 0
        self.relabels_ = 0
        self.last_fit_error_ = ""

    @property
    def warmup_bars(self) -> int:
        """Return the bars needed before the first fit."""
        return max(self.trend_window, self.volatility_window) + self.min_fit_bars

    def refit_closes(self, closes: int) -> range:
        """Return the indices of the closes a fresh detector fed ``closes`` valid closes starts its refits at.

        The first refit comes with close ``warmup_bars - 1`` (0-based), then
        one every ``refit_interval`` closes. A close the detector refuses (not
        a positive finite price) moves the later ones.
        """
        return range(self.warmup_bars - 1, closes, self.refit_interval)

    @property
    def hmm_(self) -> GaussianHMM | None:
        """Return the current HMM as an hmmlearn ``GaussianHMM`` (built on first use after each fit)."""
        if self._hmm_model is None and self.hmm_parameters_ is not None:
            self._hmm_model = self.hmm_parameters_.model(self.min_covar)
        return self._hmm_model

    def use_fit_store(self, store: RegimeFitStore | None) -> None:
        """Take refits from ``store`` from the next refit on (None: fit every one); results do not depend on it."""
        self._store = store

    def use_executor(self, executor: Executor | None) -> None:
        """Fit in ``executor`` from the next refit on (None: inline); results do not depend on it."""
        self._executor = executor

    def fit_due_next(self) -> Future[RegimeFit] | None:
        """Return the refit the next feature row applies (wait for it off the loop), or None."""
        pending = self._pending
        if pending is None or self.observations_ + 1 < pending.apply_at:
            return None
        return pending.future

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
        if not self._windows_full:
            # Both windows stay full once they are: asked until then only.
            if not (self._efficiency.ready and self._realized.ready):
                return self._publish()
            self._windows_full = True
        observation = (efficiency, 0.5 * math.log(max(realized, _VARIANCE_FLOOR)))
        self.last_observation_ = observation
        self._features.append(observation)
        self.observations_ += 1
        if self._fit_due():
            self._refit()
        if self._pending is not None and self.observations_ >= self._pending.apply_at:
            self._apply(self._pending)
        elif self._filter is not None:
            self._filter.update(observation)
        return self._publish()

    def _fit_due(self) -> bool:
        if self.observations_ < self.min_fit_bars:
            return False
        return self._last_fit_at is None or self.observations_ - self._last_fit_at >= self.refit_interval

    def _refit(self) -> None:
        """Start the refit due at this row: from the store, inline, or in the executor."""
        self._last_fit_at = self.observations_
        previous = self.hmm_parameters_
        request = RegimeFitRequest(
            np.array(self._features),
            np.array(self._returns),
            previous,
            self.garch_params_,
            self.n_iter if previous is None else self.refit_n_iter,
            self.tol,
            self.min_covar,
            self.relabel_margin,
        )
        store = self._store
        key = None if store is None else request.key()
        stored = None if store is None or key is None else store.get(key)
        if stored is not None:
            future: Future[RegimeFit] = Future()
            future.set_result(stored)
        elif self._executor is None:
            future = _completed(self.fit_function, request)
        else:
            future = self._submit(self._executor, request)
        window_start = self.observations_ - len(request.features)
        apply_at = self.observations_ + self.fit_delay_bars
        self._pending = _PendingFit(request, future, apply_at, window_start, key, stored is not None)

    def _submit(self, executor: Executor, request: RegimeFitRequest) -> Future[RegimeFit]:
        try:
            return executor.submit(self.fit_function, request)
        except (BrokenExecutor, RuntimeError) as error:
            return self._inline_after(error, request)

    def _inline_after(self, error: BaseException, request: RegimeFitRequest) -> Future[RegimeFit]:
        """Fit inline from now on: the worker is gone (the same fit, so the same decisions)."""
        self._executor = None
        self.worker_failures_ += 1
        _log.warning("regime fit worker failed: fitting inline", error=repr(error))
        return _completed(self.fit_function, request)

    def _apply(self, pending: _PendingFit) -> None:
        """Apply a refit (waiting for it if it is not done) and bring it forward to the current row."""
        self._pending = None
        try:
            fit = pending.future.result()
        except BrokenExecutor as error:
            fit = self._inline_after(error, pending.request).result()
        if pending.cached:
            self.fits_from_store_ += 1
        elif pending.key is not None and self._store is not None:
            self._store.put(pending.key, fit)
        late = self.observations_ - (pending.apply_at - self.fit_delay_bars)
        if fit.hmm is None:
            self._fit_failed(fit.hmm_error)
            if self._filter is not None:
                self._filter.update(self._features[-1])
        else:
            self.hmm_parameters_ = fit.hmm
            self._hmm_model = None
            self.fit_window_start_ = pending.window_start
            self.fits_ += 1
            self.relabels_ += fit.relabeled
            fresh = GaussianHmmFilter.from_parameters(fit.hmm)
            fresh.probabilities = list(fit.probabilities or ())
            for row in list(self._features)[len(self._features) - late :] if late else ():
                fresh.update(row)
            self._filter = fresh
        if fit.garch is None:
            self._fit_failed(fit.garch_error)
            return
        assert fit.garch_variance is not None
        garch = Garch11Filter(*fit.garch, fit.garch_variance)
        for residual in list(self._returns)[len(self._returns) - late :] if late else ():
            garch.update(residual)
        self._garch = garch
        self._long_run_variance = garch.long_run_variance / (self.return_scale * self.return_scale)
        self.garch_params_ = fit.garch
        self.fits_ += 1

    def _fit_failed(self, reason: str) -> None:
        self.fit_failures_ += 1
        self.last_fit_error_ = reason

    def _publish(self) -> RegimeState:
        variance = long_run = None
        garch = self._garch
        if garch is not None:
            variance = garch.variance / (self.return_scale * self.return_scale)
            long_run = self._long_run_variance  # the filter's, divided when it was fitted
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
