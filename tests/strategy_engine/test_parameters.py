"""Declared strategy parameters: defaults, types and ranges checked at construction."""

from __future__ import annotations

import math

import pytest

from keel.strategy_engine import MeanReversionStrategy, Parameter, TrendFollowingStrategy
from keel.strategy_engine.parameters import validate_parameters

SPACE = {
    "period": Parameter(int, 20, 5, 100, "bars"),
    "threshold": Parameter(float, 0.3, 0.0, 1.0, "a fraction"),
}


def test_missing_values_take_their_defaults_and_given_ones_their_type() -> None:
    # Act
    values = validate_parameters("demo", SPACE, {"period": 30.0})

    # Assert
    assert values == {"period": 30, "threshold": 0.3}
    assert isinstance(values["period"], int)


@pytest.mark.parametrize(
    ("given", "error", "match"),
    [
        ({"speed": 3}, ValueError, "demo has no parameter speed"),
        ({"period": 4}, ValueError, r"period must lie in \[5, 100\]"),
        ({"period": 20.5}, TypeError, "period must be an integer"),
        ({"period": True}, TypeError, "period must be int"),
        ({"threshold": "high"}, TypeError, "threshold must be float"),
        ({"threshold": math.nan}, ValueError, "threshold must be finite"),
        ({"threshold": math.inf}, ValueError, "threshold must be finite"),
    ],
)
def test_bad_values_name_the_owner_and_the_parameter(given: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        validate_parameters("demo", SPACE, given)


def test_a_declaration_with_its_default_outside_its_range_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        Parameter(int, 1, 5, 100, "bars")


def test_strategies_validate_on_construction_and_check_cross_constraints() -> None:
    with pytest.raises(ValueError, match="trend_following parameter fast_period must lie in"):
        TrendFollowingStrategy(fast_period=1)
    with pytest.raises(ValueError, match="fast_period < slow_period"):
        TrendFollowingStrategy(fast_period=50, slow_period=40)
    with pytest.raises(ValueError, match="exit_z < entry_z < stop_z"):
        MeanReversionStrategy(entry_z=1.0, exit_z=1.5)


def test_default_parameters_are_the_declared_defaults() -> None:
    # Act
    strategy = TrendFollowingStrategy()

    # Assert
    assert strategy.parameters == TrendFollowingStrategy.default_parameters()
    assert strategy.parameters["fast_period"] == TrendFollowingStrategy.parameter_space["fast_period"].default
