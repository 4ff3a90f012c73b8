"""VaR and CVaR estimators and the EWMA covariance, on real 1m returns."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.market_data.loaders import load_ohlcv
from keel.risk_management.var import (
    EwmaCovariance,
    historical_var,
    normal_quantile,
    parametric_var,
    sample_covariance,
)

BARS_1M = Path(__file__).resolve().parents[2] / "data" / "ohlcv" / "binance_usdm_1m_2025-05"


@functools.cache
def returns() -> np.ndarray:
    closes = np.column_stack(
        [load_ohlcv(BARS_1M / f"{s}_1m.csv.gz").frame["close"].head(2001).to_numpy() for s in ("BTCUSDT", "ETHUSDT")]
    )
    return closes[1:] / closes[:-1] - 1.0


def test_historical_var_and_cvar_are_the_loss_quantile_and_the_tail_mean() -> None:
    # Arrange
    pnl = returns() @ np.array([20_000.0, -5_000.0])

    # Act
    var, cvar = historical_var(pnl, 0.99)

    # Assert: 2000 outcomes, the 20 worst
    worst = np.sort(pnl)[:20]
    assert var == pytest.approx(-worst[-1])
    assert cvar == pytest.approx(-worst.mean())
    assert cvar >= var > 0


def test_parametric_var_is_z_sigma_and_cvar_the_normal_tail_mean() -> None:
    # Arrange
    covariance = np.cov(returns(), rowvar=False)
    exposures = np.array([20_000.0, -5_000.0])
    sigma = np.sqrt(exposures @ covariance @ exposures)

    # Act
    var, cvar = parametric_var(exposures, covariance, 0.99)

    # Assert
    assert normal_quantile(0.99) == pytest.approx(2.3263478740408408)
    assert var == pytest.approx(2.3263478740408408 * sigma)
    assert cvar == pytest.approx(sigma * np.exp(-0.5 * 2.3263478740408408**2) / np.sqrt(2 * np.pi) / 0.01)


def test_ewma_covariance_matches_the_recursion_written_out() -> None:
    # Arrange
    data = returns()[:500]
    model = EwmaCovariance(2, decay=0.97)

    # Act
    for row in data:
        model.update(row)

    # Assert: S_0 = r_0 r_0', S_t = 0.97 S_(t-1) + 0.03 r_t r_t'
    expected = np.outer(data[0], data[0])
    for row in data[1:]:
        expected = 0.97 * expected + 0.03 * np.outer(row, row)
    np.testing.assert_allclose(model.covariance, expected, rtol=1e-12)


def test_lookahead_ewma_up_to_t_ignores_later_rows() -> None:
    # Arrange
    data = returns()
    cut = 700
    stopped, full, perturbed = EwmaCovariance(2), EwmaCovariance(2), EwmaCovariance(2)
    changed = data.copy()
    changed[cut:] *= -3.0

    # Act
    at_t = []
    for index, row in enumerate(data):
        full.update(row)
        perturbed.update(changed[index])
        if index < cut:
            stopped.update(row)
        if index == cut - 1:
            at_t = [full.covariance.copy(), perturbed.covariance.copy()]

    # Assert
    assert np.array_equal(at_t[0], stopped.covariance)
    assert np.array_equal(at_t[1], stopped.covariance)


def test_bad_confidence_is_named() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="confidence"):
        normal_quantile(1.5)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(2, 2000),
    start=st.integers(0, 1),
    columns=st.integers(1, 2),
    scale=st.sampled_from([1.0, 1e-3, 37.5]),
)
def test_sample_covariance_is_numpys_cov_to_the_bit(rows: int, start: int, columns: int, scale: float) -> None:
    # Arrange: a window of real returns, as the risk controller's return window hands it over (a fresh array)
    window = np.ascontiguousarray(returns()[start : start + rows, :columns] * scale)

    # Act
    fast = sample_covariance(window.copy())

    # Assert
    reference = np.atleast_2d(np.cov(window, rowvar=False))
    assert fast.shape == reference.shape
    assert fast.tobytes() == reference.tobytes()


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(2, 1500), columns=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_sample_covariance_is_numpys_cov_to_the_bit_for_wide_windows(rows: int, columns: int, seed: int) -> None:
    # Arrange: heavy-tailed returns of up to 12 symbols (the pipeline's universe is 10)
    window = np.random.default_rng(seed).standard_t(3, size=(rows, columns)) * 1e-3

    # Act
    fast = sample_covariance(window.copy())

    # Assert
    reference = np.atleast_2d(np.cov(window, rowvar=False))
    assert fast.shape == reference.shape
    assert fast.tobytes() == reference.tobytes()
