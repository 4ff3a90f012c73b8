"""Declared strategy parameters: type, range and default, checked once at construction.

A strategy class lists its tunable parameters in ``parameter_space`` as
:class:`Parameter` entries. :func:`validate_parameters` fills defaults, rejects
unknown names, wrong types, NaN and out-of-range values with an error naming
the strategy and the parameter; the tuner reads the same declarations to know
what to search.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Parameter:
    """One tunable parameter of a strategy.

    Parameters
    ----------
    kind
        ``int`` or ``float``.
    default
        The value used when none is given; must lie in ``[low, high]``.
    low, high
        The closed range of valid (and searched) values.
    description
        What the parameter does, in one line.
    """

    kind: type
    default: int | float
    low: int | float
    high: int | float
    description: str

    def __post_init__(self) -> None:
        if self.kind not in (int, float):
            raise TypeError(f"parameter kind must be int or float, got {self.kind!r}")
        if not self.low <= self.default <= self.high:
            raise ValueError(f"default {self.default!r} lies outside [{self.low}, {self.high}]")

    def describe(self) -> str:
        """Return the parameter's one-line documentation: what it does, then its range."""
        return f"{self.description}, {self.low:g} to {self.high:g}"

    def validate(self, owner: str, name: str, value: Any) -> int | float:
        """Return ``value`` as this parameter's type, or raise naming ``owner`` and ``name``.

        Raises
        ------
        TypeError
            If the value is not a number of the right kind (a bool is not a number;
            a float is accepted for an int parameter only when it is integral).
        ValueError
            If the value is NaN, infinite or outside ``[low, high]``.
        """
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{owner} parameter {name} must be {self.kind.__name__}, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{owner} parameter {name} must be finite, got {value!r}")
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise TypeError(f"{owner} parameter {name} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if not self.low <= value <= self.high:
            raise ValueError(f"{owner} parameter {name} must lie in [{self.low}, {self.high}], got {value!r}")
        return value


def validate_parameters(
    owner: str, space: Mapping[str, Parameter], values: Mapping[str, Any]
) -> dict[str, int | float]:
    """Return every parameter of ``space``: the given values checked, the rest defaulted.

    Parameters
    ----------
    owner
        Who the parameters belong to (named in errors).
    space
        The declared parameters.
    values
        The values given by the caller.

    Raises
    ------
    ValueError
        If a name is not declared, or a value is out of range or not finite.
    TypeError
        If a value has the wrong type.
    """
    unknown = sorted(set(values) - set(space))
    if unknown:
        raise ValueError(f"{owner} has no parameter {', '.join(unknown)}; expected some of: {', '.join(space)}")
    return {
        name: spec.validate(owner, name, values[name]) if name in values else spec.default
        for name, spec in space.items()
    }
