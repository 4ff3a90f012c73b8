"""The regime detector against hmmlearn and arch on real bars: filtering, variance, stable labels, no look-ahead."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
from arch import arch_model
from hmmlearn import _hmmc
from hmmlearn.hmm import GaussianHMM
from scipy.special import logsumexp
from strategy_data import bar_frame

from keel.core.messages import MarketRegime
from keel.strategy_engine.fit_worker import FitWorker
from keel.strategy_engine.regime import (
    REGIMES,
    Garch11Filter,
    GaussianHmmFilter,
    NoLookAheadRegimeDetector,
    RegimeFit,
    RegimeFitRequest,
    RegimeState,
    assignment_score,
    fit_regime_models,
    label_states,
    match_states,
    reorder,
    use_regime_fit_store,
)

SMALL = {"min_fit_bars": 600, "fit_window": 900, "refit_interval": 400}


@dataclass
class Walk:
    """A detector's run over real closes, bar by bar."""

    closes: np.ndarray
    detector: NoLookAheadRegimeDetector
    states: list[RegimeState]
    observations: list[tuple[float, float] | None]
    models: list[GaussianHMM | None]
    garch_params: list[tuple[float, float, float] | None]
    window_starts: list[int | None]
    fit_bars: list[int]


def walk(closes: np.ndarray, **settings: float) -> Walk:
    detector = NoLookAheadRegimeDetector(**settings)
    result = Walk(closes, detector, [], [], [], [], [], [])
    fits = 0
    for i, close in enumerate(closes.tolist()):
        result.states.append(detector.update(close))
        result.observations.append(detector.last_observation_)
        result.models.append(detector.hmm_)
        result.garch_params.append(detector.garch_params_)
        result.window_starts.append(detector.fit_window_start_)
        if detector.fits_ > fits:
            result.fit_bars.append(i)
            fits = detector.fits_
    return result


@pytest.fixture(scope="module")
def btc_walk() -> Walk:
    """BTCUSDT's first 3000 bars, refits every 400 bars, names matched at every refit."""
    return walk(bar_frame("BTCUSDT")["close"].to_numpy()[:3000], relabel_margin=float("inf"), **SMALL)


def forward_probabilities(model: GaussianHMM, features: np.ndarray) -> np.ndarray:
    """hmmlearn's forward pass: its log forward variables, normalized per row."""
    _, log_alpha = _hmmc.forward_log(model.startprob_, model.transmat_, model._compute_log_likelihood(features))
    return np.exp(log_alpha - logsumexp(log_alpha, axis=1, keepdims=True))


def features_of(run: Walk) -> np.ndarray:
    return np.array([o for o in run.observations if o is not None])


@pytest.mark.parametrize("fast", [True, False], ids=["unrolled", "reference"])
def test_incremental_probabilities_equal_hmmlearns_forward_pass(btc_walk: Walk, fast: bool) -> None:
    # Arrange
    model = btc_walk.detector.hmm_
    features = features_of(btc_walk)

    # Act
    filtered = GaussianHmmFilter.from_model(model, fast=fast).filter(features)

    # Assert
    np.testing.assert_allclose(filtered, forward_probabilities(model, features), rtol=0, atol=1e-8)
    for t in (0, 17, 400, len(features) - 1):
        # At the last row the smoothed posterior is the filtered one.
        np.testing.assert_allclose(filtered[t], model.predict_proba(features[: t + 1])[-1], rtol=0, atol=1e-8)


def test_unrolled_and_reference_updates_agree_bit_for_bit_closely(btc_walk: Walk) -> None:
    # Arrange
    model = btc_walk.detector.hmm_
    features = features_of(btc_walk)

    # Act
    fast = GaussianHmmFilter.from_model(model, fast=True).filter(features)
    plain = GaussianHmmFilter.from_model(model, fast=False).filter(features)

    # Assert
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-12)


def test_garch_variance_equals_arch_conditional_variance_on_real_returns() -> None:
    # Arrange
    closes = bar_frame("ETHUSDT")["close"].to_numpy()[:3001]
    returns = np.diff(np.log(closes)) * 1e4
    model = arch_model(returns, mean="Zero", vol="GARCH", p=1, q=1, rescale=False)
    result = model.fit(disp="off")
    omega, alpha, beta = result.params.to_numpy()
    garch = Garch11Filter.from_backcast(omega, alpha, beta, model.volatility.backcast(returns))
    variances = []

    # Act
    for r in returns.tolist():
        variances.append(garch.variance)
        garch.update(r)

    # Assert
    np.testing.assert_allclose(variances, result.conditional_volatility**2, rtol=0, atol=1e-8)
    forecast = result.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
    assert garch.variance == pytest.approx(forecast, abs=1e-8)


def test_between_refits_the_detector_equals_hmmlearn_and_arch_on_its_fit_window(btc_walk: Walk) -> None:
    # Arrange: the bars from the second refit up to the third, and the windows that refit used
    run = btc_walk
    fit_bar, next_fit_bar = run.fit_bars[1], run.fit_bars[2]
    segment = range(fit_bar, next_fit_bar)
    model = run.models[fit_bar]
    features = features_of(run)
    last_row = sum(o is not None for o in run.observations[:next_fit_bar]) - 1
    window_features = features[run.window_starts[fit_bar] : last_row + 1]
    # Return k is the move into bar k + 1; the refit at bar T used returns T - W .. T - 1.
    returns = np.diff(np.log(run.closes)) * run.detector.return_scale
    window = run.detector.fit_window
    garch_returns = returns[fit_bar - window : next_fit_bar]
    garch = arch_model(garch_returns, mean="Zero", vol="GARCH", p=1, q=1, rescale=False)
    arch_variance = garch.fix(np.array(run.garch_params[fit_bar])).conditional_volatility ** 2

    # Act
    probabilities = np.array([run.states[t].probabilities for t in segment])
    variances = np.array([run.states[t].variance for t in segment]) * run.detector.return_scale**2

    # Assert
    assert all(run.models[t] is model for t in segment)
    np.testing.assert_allclose(probabilities, forward_probabilities(model, window_features)[-len(segment) :], atol=1e-8)
    np.testing.assert_allclose(variances, arch_variance[window:], rtol=0, atol=1e-8)


def test_a_refit_whose_states_come_back_in_another_order_keeps_their_names(btc_walk: Walk) -> None:
    # Arrange: the fitted model, its states shuffled, then refitted by EM on the same window
    detector = btc_walk.detector
    reference = detector.hmm_
    start = detector.fit_window_start_
    features = features_of(btc_walk)[start : start + detector.fit_window]
    shuffled = reorder(_copy(reference), [2, 0, 3, 1])
    refit = GaussianHMM(4, "diag", n_iter=10, tol=1e-3, min_covar=1e-5, params="stmc", init_params="")
    refit.startprob_, refit.transmat_ = shuffled.startprob_, shuffled.transmat_
    refit.means_, refit.covars_ = shuffled.means_, shuffled._covars_
    refit.fit(features)

    # Act
    order = match_states(reference.means_, reference._covars_, refit.means_)

    # Assert
    assert order == [1, 3, 0, 2]
    renamed = reorder(refit, order)
    scale = np.sqrt(reference._covars_.mean(axis=0))
    assert np.all(np.abs(renamed.means_ - reference.means_) / scale < 0.5)


def test_the_first_fit_names_states_by_the_best_assignment_of_the_rule(btc_walk: Walk) -> None:
    # Arrange
    means = btc_walk.models[btc_walk.fit_bars[0]].means_

    # Act
    order = label_states(means)

    # Assert: the best of all 24 namings, and the model handed out is already in that order
    best = max(itertools.permutations(range(4)), key=lambda p: assignment_score(means, p))
    assert assignment_score(means, order) == pytest.approx(assignment_score(means, best))
    assert order == [0, 1, 2, 3]


def test_names_stay_with_the_matched_states_across_refits(btc_walk: Walk) -> None:
    # Arrange
    fits = [btc_walk.models[i] for i in btc_walk.fit_bars]

    # Act
    steps = list(itertools.pairwise(fits))

    # Assert: every refit's state i is the one closest (one-to-one) to the previous fit's state i
    assert len(steps) >= 4 and all(previous is not current for previous, current in steps)
    for previous, current in steps:
        assert match_states(previous.means_, previous._covars_, current.means_) == [0, 1, 2, 3]


def test_with_no_margin_every_fit_is_named_by_the_rule() -> None:
    # Arrange
    closes = bar_frame("ETHUSDT")["close"].to_numpy()[:2400]

    # Act
    run = walk(closes, relabel_margin=0.0, **SMALL)

    # Assert
    assert len(run.fit_bars) >= 4
    assert all(label_states(run.models[i].means_) == [0, 1, 2, 3] for i in run.fit_bars)


def test_lookahead_regime_outputs_up_to_t_do_not_depend_on_later_bars() -> None:
    # Arrange: real closes; the tail after t multiplied by noise
    closes = bar_frame("SOLUSDT")["close"].to_numpy()[:2200]
    cut = 1500
    rng = np.random.default_rng(3)
    changed = closes.copy()
    changed[cut + 1 :] *= 1.0 + rng.normal(0.0, 0.01, len(closes) - cut - 1)

    # Act
    stopped = walk(closes[: cut + 1], **SMALL).states
    full = walk(closes, **SMALL).states
    perturbed = walk(changed, **SMALL).states

    # Assert
    assert sum(s.regime is not MarketRegime.UNKNOWN for s in stopped) > 500
    assert full[: cut + 1] == stopped
    assert perturbed[: cut + 1] == stopped
    assert perturbed[cut + 1 :] != full[cut + 1 :]


def _singular_refit(request: RegimeFitRequest) -> RegimeFit:
    """The real fit, except that a refit's HMM fails as a singular EM step would."""
    fit = fit_regime_models(request)
    if request.previous_hmm is None:
        return fit
    return fit._replace(hmm=None, probabilities=None, hmm_error="HMM fit: covariance became singular")


class _FailingRefit(NoLookAheadRegimeDetector):
    """A detector whose second HMM fit fails."""

    fit_function = staticmethod(_singular_refit)


def test_refits_start_at_the_closes_refit_closes_names() -> None:
    # Arrange: the fit function notes the close each refit was asked on
    closes = bar_frame("BTCUSDT")["close"].to_numpy()[:3000].tolist()
    detector = NoLookAheadRegimeDetector(**SMALL)
    asked_on: list[int] = []
    current = 0

    def noted(request: RegimeFitRequest) -> RegimeFit:
        asked_on.append(current)
        return fit_regime_models(request)

    detector.fit_function = noted

    # Act
    for current, close in enumerate(closes):  # noqa: B007  (noted reads it)
        detector.update(close)

    # Assert
    assert len(asked_on) >= 4
    assert asked_on == list(detector.refit_closes(len(closes)))


def test_a_failed_refit_keeps_the_previous_model_and_filters_on() -> None:
    # Arrange
    closes = bar_frame("BTCUSDT")["close"].to_numpy()[:1600]
    detector = _FailingRefit(**SMALL)

    # Act
    states = [detector.update(c) for c in closes.tolist()]

    # Assert
    assert detector.fit_failures_ == 2
    assert detector.last_fit_error_ == "HMM fit: covariance became singular"
    assert detector.fit_window_start_ == 0
    assert states[-1].probabilities is not None
    assert states[-1].probabilities != states[-2].probabilities


def test_unknown_before_the_first_fit_then_probabilities_that_sum_to_one(btc_walk: Walk) -> None:
    # Arrange
    first_fit = btc_walk.fit_bars[0]

    # Act
    before, after = btc_walk.states[first_fit - 1], btc_walk.states[first_fit:]

    # Assert
    assert before.regime is MarketRegime.UNKNOWN and before.probabilities is None
    assert all(abs(sum(s.probabilities) - 1.0) < 1e-12 for s in after)
    assert {s.regime for s in after} <= set(REGIMES)
    assert all(s.volatility is not None and 0 < s.volatility < 0.01 for s in after)
    assert after[0].probability(MarketRegime.UNKNOWN) == 0.0
    assert set(after[0].as_dict()) == {r.value for r in REGIMES}


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"trend_window": 1}, "trend_window must be >= 2"),
        ({"min_fit_bars": 1000, "fit_window": 500}, "fit_window"),
        ({"tol": float("nan")}, "tol must be positive"),
        ({"relabel_margin": -1.0}, "relabel_margin"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NoLookAheadRegimeDetector(**settings)


def test_a_close_that_is_not_a_price_is_refused() -> None:
    with pytest.raises(ValueError, match="positive finite close"):
        NoLookAheadRegimeDetector().update(float("nan"))


def _copy(model: GaussianHMM) -> GaussianHMM:
    twin = GaussianHMM(4, "diag", init_params="")
    twin.startprob_ = model.startprob_.copy()
    twin.transmat_ = model.transmat_.copy()
    twin.means_ = model.means_.copy()
    twin.covars_ = model._covars_.copy()
    return twin


def delayed_walk(closes: np.ndarray, delay: int, executor: Executor | None = None) -> Walk:
    detector = NoLookAheadRegimeDetector(fit_delay_bars=delay, **SMALL)
    detector.use_executor(executor)
    result = Walk(closes, detector, [], [], [], [], [], [])
    for i, close in enumerate(closes.tolist()):
        result.states.append(detector.update(close))
        if detector.fits_ > len(result.fit_bars):
            result.fit_bars.extend([i] * (detector.fits_ - len(result.fit_bars)))
    return result


def test_a_delayed_refit_changes_only_the_bars_between_its_start_and_its_use(btc_walk: Walk) -> None:
    # Arrange
    delay = 7
    closes = btc_walk.closes
    inline = walk(closes, relabel_margin=float("inf"), **SMALL)
    first_fit = inline.fit_bars[0]

    # Act
    delayed = walk(closes, relabel_margin=float("inf"), fit_delay_bars=delay, **SMALL)

    # Assert: before the first fit is used the regime is unknown; after each fit's use the views are
    # the inline ones exactly (the new model is brought forward over the bars it was late)
    fit_starts = sorted(set(inline.fit_bars))
    late = {bar for start in fit_starts for bar in range(start, start + delay)}
    assert all(s.regime is MarketRegime.UNKNOWN for s in delayed.states[: first_fit + delay])
    assert [s for i, s in enumerate(delayed.states) if i not in late] == [
        s for i, s in enumerate(inline.states) if i not in late
    ]
    assert any(delayed.states[i] != inline.states[i] for i in late if i > first_fit + delay)
    assert delayed.detector.fits_ == inline.detector.fits_


@pytest.mark.parametrize("worker", ["thread", "process_pool", "fit_worker"])
def test_where_a_delayed_refit_runs_never_changes_the_views(worker: str) -> None:
    # Arrange
    closes = bar_frame("ETHUSDT")["close"].to_numpy()[:2000]
    inline = delayed_walk(closes, delay=2)
    executor: Executor
    if worker == "thread":
        executor = ThreadPoolExecutor(max_workers=1)
    elif worker == "process_pool":
        executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    else:
        executor = FitWorker()

    # Act
    with executor:
        elsewhere = delayed_walk(closes, delay=2, executor=executor)

    # Assert
    assert len(inline.fit_bars) >= 4
    assert elsewhere.states == inline.states
    assert elsewhere.fit_bars == inline.fit_bars


class _CountingStore:
    """A regime fit store in a dict, counting what it was asked."""

    def __init__(self) -> None:
        self.fits: dict[str, RegimeFit] = {}
        self.hits = 0

    def get(self, key: str) -> RegimeFit | None:
        fit = self.fits.get(key)
        self.hits += fit is not None
        return fit

    def put(self, key: str, fit: RegimeFit) -> None:
        self.fits[key] = fit


def test_a_fit_store_serves_the_second_detector_the_same_fits() -> None:
    # Arrange
    closes = bar_frame("BTCUSDT")["close"].to_numpy()[:2000]
    plain = walk(closes, **SMALL)
    store = _CountingStore()

    # Act
    with use_regime_fit_store(store):
        first = walk(closes, **SMALL)
        second = walk(closes, **SMALL)

    # Assert
    assert first.states == plain.states == second.states
    assert first.detector.fits_from_store_ == 0
    assert second.detector.fits_from_store_ == len(store.fits) == store.hits >= 3


def test_a_refit_delay_must_be_below_the_refit_interval() -> None:
    with pytest.raises(ValueError, match="fit_delay_bars"):
        NoLookAheadRegimeDetector(fit_delay_bars=400, **SMALL)


def _fit_that_kills_its_worker(request: RegimeFitRequest) -> RegimeFit:
    """The real fit in the test's own process; in a worker process it dies as a killed worker would."""
    if os.getpid() != int(os.environ["KEEL_TEST_FITTING_PID"]):
        os._exit(1)
    return fit_regime_models(request)


class _DyingWorker(NoLookAheadRegimeDetector):
    """A detector whose worker process dies at its first refit."""

    fit_function = staticmethod(_fit_that_kills_its_worker)


def test_a_dead_fit_worker_leaves_the_refits_inline_with_the_same_views(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange
    closes = bar_frame("ETHUSDT")["close"].to_numpy()[:2000]
    inline = delayed_walk(closes, delay=2)
    detector = _DyingWorker(fit_delay_bars=2, **SMALL)
    monkeypatch.setenv("KEEL_TEST_FITTING_PID", str(os.getpid()))

    # Act
    with FitWorker() as executor:
        detector.use_executor(executor)
        states = [detector.update(close) for close in closes.tolist()]

    # Assert
    assert states == inline.states
    assert detector.worker_failures_ == 1
