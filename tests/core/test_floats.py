"""The per-bar float helpers agree with the library calls they stand for."""

from __future__ import annotations

import math
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from keel.core.floats import decimal_of, finite

SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 1.7976931348623157e308, 0.1, 104_512.3]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_finite_is_math_isfinite(value: float) -> None:
    assert finite(value) is math.isfinite(value)


def test_finite_of_the_special_values() -> None:
    assert [finite(value) for value in SPECIAL] == [math.isfinite(value) for value in SPECIAL]


def same_decimal(first: Decimal, second: Decimal) -> bool:
    """Equal and written alike (Decimal('0.0') == Decimal('-0.0'), NaN equals nothing)."""
    return str(first) == str(second)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=20))
def test_decimal_of_is_the_shortest_repr_in_any_order_of_calls(values: list[float]) -> None:
    for value in values + values[::-1]:
        assert same_decimal(decimal_of(value), Decimal(repr(value)))


def test_a_repeated_value_is_converted_once_and_zeros_keep_their_sign() -> None:
    first = decimal_of(104_512.3)

    again = decimal_of(104_512.3)

    assert again is first
    assert str(decimal_of(0.0)) == "0.0"
    assert str(decimal_of(-0.0)) == "-0.0"
    assert str(decimal_of(0.0)) == "0.0"
    assert decimal_of(math.nan).is_nan()
    assert same_decimal(decimal_of(math.inf), Decimal("Infinity"))
