"""The bar-by-bar watch's shortcuts agree with the full checks they stand in for.

The watch asks ``_within_limits`` before it builds violations, and prices a
one-symbol book's parametric VaR without numpy; both must give what the full
checks give, on real BTCUSDT and ETHUSDT returns (May 2025).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.instruments import Instrument, load_instruments
from keel.risk_management.risk_controller import PortfolioState, RiskController
from keel.risk_management.var import parametric_var
from kit import real_bars

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@functools.cache
def instruments() -> dict[str, Instrument]:
    return load_instruments(ROOT / "config" / "instruments.yaml")


@functools.cache
def warmed_controller() -> RiskController:
    """A controller whose VaR window holds 300 bars of real returns of both symbols."""
    risk = RiskController(
        instruments(), symbols=SYMBOLS, var_window=300, min_var_observations=60, covariance_refresh_bars=1
    )
    bars = [bar for pair in zip(*(real_bars(s, 301) for s in SYMBOLS), strict=True) for bar in pair]
    risk.warm_up(bars)
    risk.estimate_var({"equity": 1.0, "positions": {}})  # refresh the cached covariance
    return risk


exposure = st.one_of(st.just(0.0), st.floats(min_value=-200_000.0, max_value=200_000.0))


@settings(max_examples=300, deadline=None)
@given(
    equity=st.floats(min_value=-1_000.0, max_value=50_000.0),
    btc=exposure,
    eth=exposure,
    drawdown=st.floats(min_value=0.0, max_value=0.5),
    var_limit=st.floats(min_value=0.001, max_value=0.5),
)
def test_within_limits_is_true_exactly_when_no_violation_is_found(
    equity: float, btc: float, eth: float, drawdown: float, var_limit: float
) -> None:
    # Arrange
    risk = warmed_controller()
    risk.limits = risk.limits.updated({"var_daily_pct": var_limit})
    risk.drawdown = drawdown
    exposures = {s: v for s, v in zip(SYMBOLS, (btc, eth), strict=True) if v != 0.0}
    state = PortfolioState(equity, exposures)

    # Act
    within = risk._within_limits(state)
    kept = risk.last_var
    violations = risk._state_violations(state)

    # Assert: the same answer, and the same VaR estimate kept for the status and the recovery check
    assert within == (violations == [])
    assert kept == risk.last_var


@settings(max_examples=300, deadline=None)
@given(symbol=st.sampled_from(SYMBOLS), value=st.floats(min_value=-1e6, max_value=1e6), other=exposure)
def test_parametric_var_without_numpy_is_numpys_to_the_bit(symbol: str, value: float, other: float) -> None:
    # Arrange
    risk = warmed_controller()
    exposures = {symbol: value}
    if other != 0.0:
        exposures[next(s for s in SYMBOLS if s != symbol)] = other
    vector = np.array([exposures.get(s, 0.0) for s in SYMBOLS])
    assert risk._covariance[0, 0] > 0 and risk._covariance[1, 1] > 0

    # Act
    shortcut = risk._parametric_var(exposures, 0.99)

    # Assert
    assert shortcut == parametric_var(vector, risk._covariance, 0.99)


def test_parametric_var_of_a_flat_book_is_numpys() -> None:
    # Arrange
    risk = warmed_controller()

    # Act
    shortcut = risk._parametric_var({}, 0.99)

    # Assert
    assert shortcut == parametric_var(np.zeros(len(SYMBOLS)), risk._covariance, 0.99) == (0.0, 0.0)
