"""Grid trading on real bars: levels, fills that re-arm, the inventory cap, leaving the range, no look-ahead."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from strategy_data import MAY_5, assert_no_lookahead, index_at, market_data, signals

from keel.strategy_engine import GridTradingStrategy
from keel.strategy_engine.grid_trading import grid_levels

PARAMETERS = {"range_period": 240, "levels": 8, "max_inventory_levels": 3, "min_range_width": 0.004}


@pytest.fixture(scope="module")
def week() -> dict:
    return market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=7 * 1440)


@pytest.fixture(scope="module")
def views(week: dict) -> list:
    return signals(GridTradingStrategy(**PARAMETERS), week)


def test_levels_are_equal_steps_or_equal_ratios_between_the_bounds() -> None:
    # Act
    arithmetic = np.array(grid_levels(100.0, 200.0, 4, geometric=False))
    geometric = np.array(grid_levels(100.0, 200.0, 4, geometric=True))

    # Assert
    assert arithmetic.tolist() == [100.0, 125.0, 150.0, 175.0, 200.0]
    assert geometric[0] == pytest.approx(100.0) and geometric[-1] == pytest.approx(200.0)
    assert np.allclose(geometric[1:] / geometric[:-1], 2**0.25)
    with pytest.raises(ValueError, match="lower < upper"):
        grid_levels(200.0, 100.0, 4, geometric=False)


def test_each_inventory_change_is_a_fill_of_the_resting_level_the_bar_reached(week: dict, views: list) -> None:
    # Arrange
    held = [(i, v) for i, v in enumerate(views) if v is not None]

    # Act
    steps = []
    for (_, before), (i, after) in itertools.pairwise(held):
        old = before.metadata.get("inventory_levels", 0)
        new = after.metadata.get("inventory_levels", 0)
        if new != old and after.metadata.get("lower") == before.metadata.get("lower") and before.action != "HOLD":
            steps.append((i, old, new, before))

    # Assert
    assert len(steps) >= 20
    for i, old, new, before in steps:
        if new > old:
            assert week["low"][i] <= before.metadata["resting_buy"]
        else:
            assert week["high"][i] >= before.metadata["resting_sell"]


def test_inventory_never_exceeds_the_cap_and_strength_is_its_share(views: list) -> None:
    # Act
    positions = [v for v in views if v is not None and v.action != "HOLD"]

    # Assert
    assert {abs(v.metadata["inventory_levels"]) for v in positions} == {1, 2, 3}
    for v in positions:
        assert v.strength == pytest.approx(abs(v.metadata["inventory_levels"]) / 3)
        assert (v.action == "BUY") == (v.metadata["inventory_levels"] > 0)
        if abs(v.metadata["inventory_levels"]) == 3:
            side = "resting_buy" if v.action == "BUY" else "resting_sell"
            assert v.metadata[side] is None


def test_a_close_beyond_the_grid_flattens_it_and_without_rebalance_it_stays_flat(week: dict) -> None:
    # Arrange: a narrow grid that the week's moves leave
    narrow = {**PARAMETERS, "range_period": 60, "stop_buffer": 0.0}

    # Act
    rebuilt = signals(GridTradingStrategy(**narrow), week)
    stopped = signals(GridTradingStrategy(**narrow, rebalance=0), week)

    # Assert
    bounds = {(v.metadata["lower"], v.metadata["upper"]) for v in rebuilt if v is not None and v.action != "HOLD"}
    assert len(bounds) > 3
    active = [v is not None and (v.action != "HOLD" or v.metadata["grid_active"]) for v in stopped]
    first_exit = next(i for i in range(1, len(active)) if active[i - 1] and not active[i])
    assert not any(active[first_exit:])
    assert stopped[first_exit].action == "HOLD"


def test_lookahead_grid_trading_up_to_t_ignores_later_bars() -> None:
    data = market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=3000)
    assert_no_lookahead(lambda: GridTradingStrategy(**PARAMETERS), data, cut=2000)
