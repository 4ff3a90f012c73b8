"""The compiled kernels against their plain Python counterparts."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.messages import TradeTick
from keel.market_data._kernels import exact_sum

_finite = st.floats(min_value=-1e200, max_value=1e200, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(_finite, st.sampled_from([1e16, -1e16, 1.0, 0.1, -0.1, 5e-324])), max_size=60))
def test_exact_sum_equals_math_fsum(values: list[float]) -> None:
    # Arrange
    array = np.array(values, dtype=np.float64)

    # Act
    compiled = exact_sum(array)

    # Assert
    assert compiled == math.fsum(values)


def test_exact_sum_of_the_real_squared_returns_equals_math_fsum(btc_trades: list[TradeTick]) -> None:
    # Arrange
    prices = np.array([t.price for t in btc_trades])
    squared = np.log(prices[1:] / prices[:-1]) ** 2

    # Act
    compiled = [exact_sum(squared[start : start + 200]) for start in range(0, squared.size, 200)]

    # Assert
    assert compiled == [math.fsum(squared[start : start + 200].tolist()) for start in range(0, squared.size, 200)]
