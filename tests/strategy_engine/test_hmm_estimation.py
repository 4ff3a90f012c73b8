"""The faster HMM fit against stock hmmlearn and scipy, bit for bit, on real refits of the bundled bars."""

from __future__ import annotations

import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import logsumexp
from strategy_data import bar_frame

from keel.strategy_engine.hmm_estimation import GaussianHmmEstimator, last_state_probabilities, log_normalize_rows
from keel.strategy_engine.regime import (
    N_STATES,
    NoLookAheadRegimeDetector,
    RegimeFit,
    RegimeFitRequest,
    fit_regime_models,
    started_hmm,
)


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)


@pytest.fixture(scope="module")
def requests() -> list[RegimeFitRequest]:
    """Every refit request of a detector walked over two symbols' first 3,000 real bars (first fits and refits)."""
    made: list[RegimeFitRequest] = []

    def recorded(request: RegimeFitRequest) -> RegimeFit:
        made.append(request)
        return fit_regime_models(request)

    for symbol in ("BTCUSDT", "ETHUSDT"):
        detector = NoLookAheadRegimeDetector(min_fit_bars=600, fit_window=900, refit_interval=400)
        detector.fit_function = recorded
        detector.fit(bar_frame(symbol)["close"].to_numpy()[:3000])
    return made


def fitted(model_class: type[GaussianHMM], request: RegimeFitRequest) -> GaussianHMM:
    return started_hmm(request, model_class).fit(request.features)


def test_refits_equal_stock_hmmlearn_to_the_bit(requests: list[RegimeFitRequest]) -> None:
    assert len(requests) >= 8
    assert any(r.previous_hmm is None for r in requests) and any(r.previous_hmm is not None for r in requests)
    for request in requests:
        stock = fitted(GaussianHMM, request)

        fast = fitted(GaussianHmmEstimator, request)

        assert fast.monitor_.iter == stock.monitor_.iter
        for name in ("startprob_", "transmat_", "means_", "_covars_"):
            np.testing.assert_array_equal(bits(getattr(fast, name)), bits(getattr(stock, name)), err_msg=name)


def test_last_state_probabilities_equal_predict_proba_to_the_bit(requests: list[RegimeFitRequest]) -> None:
    for request in requests:
        model = fitted(GaussianHMM, request)

        probabilities = last_state_probabilities(model, request.features)

        expected = model.predict_proba(request.features)[-1]
        np.testing.assert_array_equal(bits(np.array(probabilities)), bits(expected))


log_lattices = arrays(
    np.float64,
    st.tuples(st.integers(1, 40), st.just(N_STATES)),
    elements=st.one_of(
        st.floats(-800.0, 60.0, allow_nan=False),
        st.sampled_from([0.0, -1.0, -745.0, -np.inf]),  # ties, underflow, impossible states
    ),
)


@given(log_lattices)
def test_log_normalize_rows_equals_scipys_logsumexp_to_the_bit(lattice: np.ndarray) -> None:
    expected = lattice.copy()
    with np.errstate(all="ignore"):
        expected -= logsumexp(expected, 1, keepdims=True)

    with np.errstate(invalid="ignore"):
        normalized = log_normalize_rows(lattice.copy())

    np.testing.assert_array_equal(bits(normalized), bits(expected))


def test_a_row_of_impossible_states_is_left_to_scipy() -> None:
    lattice = np.array([[-np.inf] * N_STATES, [0.0, -1.0, -2.0, -3.0]])
    expected = lattice.copy()
    with np.errstate(all="ignore"):
        expected -= logsumexp(expected, 1, keepdims=True)

    with np.errstate(invalid="ignore"):
        normalized = log_normalize_rows(lattice.copy())

    assert np.isnan(normalized[0]).all()
    np.testing.assert_array_equal(bits(normalized[1]), bits(expected[1]))
