"""Checks and conversions of market-data floats, on every bar's path (compiled: see ``keel.compiled_modules``).

Compiled, each is a plain C call from the other compiled modules, where
``math.isfinite`` or ``Decimal(repr(x))`` would box the float and call back
into Python on every bar.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Final


def finite(value: float) -> bool:
    """Return whether ``value`` is neither infinite nor NaN (``math.isfinite``)."""
    return not (math.isinf(value) or math.isnan(value))


class _LastConversion:
    """The last float :func:`decimal_of` converted, with its Decimal.

    A bar's close is converted twice in a row (by the venue and by the
    position book); the second conversion is a comparison. One attribute
    holds the pair, so a thread never reads a value with another's Decimal.
    """

    def __init__(self) -> None:
        self.pair: tuple[float, Decimal] = (math.nan, Decimal("NaN"))


_LAST: Final = _LastConversion()


def decimal_of(value: float) -> Decimal:
    """Return the shortest decimal that reads back as ``value`` (market data arrives as floats)."""
    last = _LAST.pair
    # Equal floats other than zero have one repr (0.0 and -0.0 differ); NaN equals nothing, so it never matches.
    if value == last[0] and value != 0.0:
        return last[1]
    converted = Decimal(repr(value))
    _LAST.pair = (value, converted)
    return converted
