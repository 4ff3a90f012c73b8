"""Grid trading on real bars: levels, the ladder of resting orders it states, leaving the range, no look-ahead.

The ladder's orders, their fills and re-arming are the execution layer's (tests/execution/test_ladder_executor.py).
"""

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


def ladders(views: list) -> list[tuple[int, object]]:
    """Return (bar, ladder) for every bar whose view carries a new ladder."""
    found, last = [], None
    for i, view in enumerate(views):
        if view is not None and view.ladder is not None and view is not last:
            found.append((i, view.ladder))
        last = view
    return found


def test_a_grid_is_a_ladder_of_buys_below_and_sells_above_the_level_nearest_the_close(week: dict, views: list) -> None:
    # Act
    built = [(i, ladder) for i, ladder in ladders(views) if ladder.prices]

    # Assert: one order per level, none at the level nearest the close, every level worth the same notional
    assert built
    for i, ladder in built:
        close = week["close"][i]
        empty = ladder.sides.index(None)
        assert abs(ladder.prices[empty] - close) == min(abs(p - close) for p in ladder.prices)
        assert set(ladder.sides[:empty]) <= {"BUY"} and set(ladder.sides[empty + 1 :]) <= {"SELL"}
        assert ladder.sides.count(None) == 1
        assert (ladder.level_notional, ladder.max_inventory_levels) == (500.0, 3)
        assert len(ladder.prices) == PARAMETERS["levels"] + 1


def test_the_grid_holds_no_weight_of_its_own(views: list) -> None:
    # Assert: its position is what its ladder fills, so every view is flat
    assert {(v.action, v.strength, v.confidence) for v in views if v is not None} == {("HOLD", 0.0, 0.0)}


def test_a_close_beyond_the_grid_ends_the_ladder_and_without_rebalance_it_stays_out(week: dict) -> None:
    # Arrange: a narrow grid that the week's moves leave
    narrow = {**PARAMETERS, "range_period": 60, "stop_buffer": 0.0}

    # Act
    rebuilt = ladders(signals(GridTradingStrategy(**narrow), week))
    stopped = ladders(signals(GridTradingStrategy(**narrow, rebalance=0), week))

    # Assert: with rebalance a grid follows each end; without it the first end is the last ladder
    ends = [i for i, ladder in rebuilt if not ladder.prices]
    assert len(ends) > 3
    for end, (i, ladder) in itertools.pairwise(rebuilt):
        if not end[1].prices:
            assert ladder.prices and i > end[0]
    for i, ladder in rebuilt:
        if not ladder.prices:
            previous = next(lad for j, lad in reversed(rebuilt) if j < i)
            close = week["close"][i]
            assert close < previous.prices[0] or close > previous.prices[-1]
    assert [bool(ladder.prices) for _, ladder in stopped] == [True, False]


def test_lookahead_grid_trading_up_to_t_ignores_later_bars() -> None:
    data = market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=3000)
    assert_no_lookahead(lambda: GridTradingStrategy(**PARAMETERS), data, cut=2000)
