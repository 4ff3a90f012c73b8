"""Search spaces from the strategies' declared parameters: types, scales, ordering by construction."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.config import KeelConfig
from keel.optimization.space import Dimension, SearchSpace, apply_values, config_dimension, nest, strategy_space

FAST = "strategy.parameters.trend_following.fast_period"
SLOW = "strategy.parameters.trend_following.slow_period"
STRENGTH = "strategy.parameters.trend_following.min_trend_strength"


class RandomSuggester:
    """Draws like an Optuna trial, from a seeded generator, and records the ranges it was offered."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.ranges: dict[str, tuple[float, float, bool]] = {}

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        self.ranges[name] = (low, high, log)
        return self.random.randint(low, high)

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        self.ranges[name] = (low, high, log)
        return self.random.uniform(low, high)

    def suggest_categorical(self, name: str, choices: list[object]) -> object:
        return self.random.choice(choices)


def test_the_users_space_maps_to_trend_following_keys_with_their_declared_types() -> None:
    # Arrange
    bounds = {"fast_period": (5, 20), "slow_period": (20, 50), "min_trend_strength": (0.1, 0.5)}

    # Act
    space = strategy_space("TrendFollowing", bounds)

    # Assert
    by_key = {d.key: d for d in space.dimensions}
    assert by_key[FAST] == Dimension(FAST, int, 5, 20, False)
    assert by_key[SLOW].kind is int
    assert by_key[STRENGTH].kind is float


def test_the_whole_declared_space_uses_a_log_scale_where_the_range_spans_a_decade() -> None:
    # Act
    space = strategy_space("trend_following")

    # Assert
    by_key = {d.key: d for d in space.dimensions}
    assert by_key[FAST].log and by_key[FAST].kind is int
    assert not by_key[STRENGTH].log  # the range starts at 0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_fast_is_always_below_slow_without_discarding_samples(seed: int) -> None:
    # Arrange
    space = strategy_space("trend_following", {"slow_period": (20, 50), "fast_period": (5, 45)})
    suggester = RandomSuggester(seed)

    # Act
    values = space.sample(suggester)

    # Assert
    assert isinstance(values[FAST], int) and isinstance(values[SLOW], int)
    assert values[FAST] < values[SLOW]
    assert suggester.ranges[SLOW][0] >= max(20, values[FAST] + 1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_mean_reversion_bands_come_out_in_order(seed: int) -> None:
    # Arrange
    space = strategy_space("mean_reversion", {"exit_z": (0.0, 3.0), "entry_z": (0.5, 5.0), "stop_z": (1.0, 10.0)})

    # Act
    values = space.sample(RandomSuggester(seed))

    # Assert
    keys = [f"strategy.parameters.mean_reversion.{k}" for k in ("exit_z", "entry_z", "stop_z")]
    assert values[keys[0]] < values[keys[1]] < values[keys[2]]
    apply_values(KeelConfig(), values)  # the configuration accepts every sample


def test_a_range_outside_the_declared_one_is_refused_naming_the_parameter() -> None:
    with pytest.raises(ValueError, match="fast_period"):
        strategy_space("trend_following", {"fast_period": (1, 20)})


def test_an_unknown_parameter_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="has no parameter fast"):
        strategy_space("trend_following", {"fast": (5, 20)})


def test_any_numeric_configuration_key_is_tunable_typed_like_its_value() -> None:
    # Act
    space = strategy_space(
        "trend_following",
        {"fast_period": (5, 20), "risk.max_leverage": (1.0, 5.0), "risk.var_window_bars": (100, 2000)},
    )

    # Assert
    by_key = {d.key: d for d in space.dimensions}
    assert by_key["risk.max_leverage"].kind is float
    assert by_key["risk.var_window_bars"] == Dimension("risk.var_window_bars", int, 100, 2000, True)


def test_a_key_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="not a number"):
        config_dimension("data.bars", 1, 2)


def test_applied_values_land_in_the_configuration_and_nest_into_a_layer() -> None:
    # Act
    config = apply_values(KeelConfig(), {FAST: 7, SLOW: 30, "risk.max_leverage": 2.0})
    layer = nest({FAST: 7, "risk.max_leverage": 2.0})

    # Assert
    assert config.strategy.parameters.trend_following.fast_period == 7
    assert config.risk.max_leverage == 2.0
    assert layer == {"strategy": {"parameters": {"trend_following": {"fast_period": 7}}}, "risk": {"max_leverage": 2.0}}


def test_ordered_ranges_that_cannot_be_satisfied_are_refused() -> None:
    with pytest.raises(ValueError, match="leaves no room"):
        SearchSpace((Dimension(FAST, int, 60, 100), Dimension(SLOW, int, 10, 50)))


def test_a_configuration_key_with_a_list_is_searched_over_those_values() -> None:
    # Arrange
    space = strategy_space(
        "trend_following", {"fast_period": (5, 20), "portfolio.allocator": ["markowitz", "equal_weight"]}
    )

    # Act
    drawn = {space.sample(RandomSuggester(seed))["portfolio.allocator"] for seed in range(20)}

    # Assert
    assert drawn == {"markowitz", "equal_weight"}
    assert apply_values(KeelConfig(), {"portfolio.allocator": "equal_weight"}).portfolio.allocator == "equal_weight"


def test_a_choice_the_configuration_refuses_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"portfolio\.allocator: 'kelly' is not a valid value"):
        strategy_space("trend_following", {"portfolio.allocator": ["markowitz", "kelly"]})


def test_a_range_of_a_numeric_key_the_configuration_refuses_is_refused_naming_the_key() -> None:
    # Act / Assert: a study would otherwise run trials with a negative leverage limit
    with pytest.raises(ValueError, match=r"risk\.max_leverage: -5\.0 is not a valid value \(Input should be greater"):
        strategy_space("trend_following", {"risk.max_leverage": (-5.0, 5.0)})


def test_a_fractional_range_of_an_integer_key_is_refused_rather_than_truncated() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match=r"bus\.capacity is an integer; got range \(100\.5, 2000\.7\)"):
        config_dimension("bus.capacity", 100.5, 2000.7)


def test_a_range_of_a_numeric_key_that_is_not_finite_is_refused() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="is not finite"):
        config_dimension("risk.max_leverage", 1.0, float("inf"))
