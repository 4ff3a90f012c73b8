"""Covariance and expected-return estimators on real 1m returns, against plain references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import LedoitWolf

from keel.portfolio.estimators import (
    blend_expected_returns,
    estimate_covariance,
    ewma_weights,
    mean_returns,
    signal_scores,
)


def test_sample_and_ledoit_wolf_match_numpy_and_scikit_learn(make_minute_returns) -> None:
    # Arrange
    returns = make_minute_returns(1440).to_numpy()

    # Act
    sample = estimate_covariance(returns, "sample")
    shrunk = estimate_covariance(returns, "ledoit_wolf")

    # Assert
    np.testing.assert_allclose(sample, np.cov(returns, rowvar=False))
    np.testing.assert_allclose(shrunk, LedoitWolf().fit(returns).covariance_)


@pytest.mark.parametrize(("rows", "columns", "step"), [(1440, 10, 1), (600, 10, 60), (1440, 3, 1), (1440, 1, 1)])
def test_ledoit_wolf_equals_scikit_learn_to_the_bit(make_minute_returns, rows: int, columns: int, step: int) -> None:
    # Arrange: real 1m returns (and hourly sums of them), some columns only
    minutes = make_minute_returns(rows * step).to_numpy()[:, :columns]
    returns = minutes.reshape(rows, step, columns).sum(axis=1)

    # Act
    shrunk = estimate_covariance(returns, "ledoit_wolf")

    # Assert
    np.testing.assert_array_equal(shrunk, np.atleast_2d(LedoitWolf().fit(returns).covariance_))


def test_ewma_covariance_matches_a_plain_weighted_sum(make_minute_returns) -> None:
    # Arrange
    returns = make_minute_returns(600).to_numpy()
    decay = 0.5 ** (1 / 120)

    # Act
    ewma = estimate_covariance(returns, "ewma", halflife=120)

    # Assert: weights decay^(T-1-t), normalized; deviations from the weighted mean
    weights = np.array([decay ** (len(returns) - 1 - t) for t in range(len(returns))])
    weights /= weights.sum()
    mean = sum(w * r for w, r in zip(weights, returns, strict=True))
    expected = sum(w * np.outer(r - mean, r - mean) for w, r in zip(weights, returns, strict=True))
    np.testing.assert_allclose(ewma, expected, rtol=1e-10)
    assert ewma_weights(3, 1.0).tolist() == pytest.approx([1 / 7, 2 / 7, 4 / 7])


def test_means_and_blending(make_minute_returns) -> None:
    # Arrange
    returns = make_minute_returns(500).to_numpy()
    volatility = returns.std(axis=0, ddof=1)
    scores = np.linspace(-1, 1, returns.shape[1])

    # Act
    historical = mean_returns(returns)
    blended = blend_expected_returns(historical, scores, volatility, signal_weight=0.25, information_coefficient=0.05)

    # Assert
    np.testing.assert_allclose(historical, returns.mean(axis=0))
    np.testing.assert_allclose(blended, 0.75 * historical + 0.25 * 0.05 * volatility * scores)
    with pytest.raises(ValueError, match="signal weight"):
        blend_expected_returns(historical, scores, volatility, signal_weight=1.5, information_coefficient=0.05)


def test_signal_scores_weight_strategies_by_their_budgets() -> None:
    # Arrange
    views = {"trend": {"BTCUSDT": 0.8, "ETHUSDT": -0.5}, "reversion": {"BTCUSDT": -0.4}, "carry": {"SOLUSDT": 1.0}}

    # Act
    scores = signal_scores(views, {"trend": 0.5, "reversion": 0.3}, ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"])

    # Assert: carry has no budget and gets what is left (0.2)
    assert scores.tolist() == pytest.approx([0.5 * 0.8 - 0.3 * 0.4, -0.25, 0.2, 0.0])


def test_bad_returns_and_methods_are_named(make_minute_returns) -> None:
    # Arrange
    returns = make_minute_returns(100).to_numpy().copy()
    returns[3, 1] = np.inf

    # Act / Assert
    with pytest.raises(ValueError, match="NaN or infinite"):
        estimate_covariance(returns)
    with pytest.raises(ValueError, match="unknown covariance method 'robust'"):
        estimate_covariance(pd.DataFrame(make_minute_returns(100)).to_numpy(), "robust")
