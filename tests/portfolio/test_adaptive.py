"""AdaptiveAllocator: decayed risk-adjusted shares with floors and caps, on strategies following real returns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.portfolio.adaptive import AdaptiveAllocator, project_onto_bounds


def strategy_rows(returns: np.ndarray) -> list[dict[str, float]]:
    """Three strategies on real 1m BTC returns: long, short, and long half the time."""
    rows = []
    for t, r in enumerate(returns):
        rows.append({"long": float(r), "short": float(-r), "half": float(r if t % 2 else 0.0)})
    return rows


def test_the_strategy_that_earned_gets_the_most_within_floor_and_cap(make_minute_returns) -> None:
    # Arrange: the first day of real BTCUSDT 1m returns (BTC fell slightly that day)
    btc = make_minute_returns(1440)["BTCUSDT"].to_numpy()
    assert btc.mean() < 0

    # Act
    allocator = AdaptiveAllocator(halflife=720, floor=0.1, cap=0.6).fit(strategy_rows(btc))

    # Assert
    weights = allocator.weights_
    assert sum(weights.values()) == pytest.approx(1.0)
    assert allocator.scores_["short"] > 0 == allocator.scores_["long"]
    assert weights["short"] > weights["half"]
    assert weights["long"] == pytest.approx(0.1, abs=1e-9)
    assert max(weights.values()) <= 0.6 + 1e-12


def test_new_strategies_share_equally_until_seasoned() -> None:
    # Arrange
    allocator = AdaptiveAllocator(min_observations=50)

    # Act
    allocator.add_strategy("a")
    allocator.add_strategy("b")
    allocator.partial_fit({"a": 0.01, "b": -0.01})

    # Assert
    assert allocator.weights_ == {"a": 0.5, "b": 0.5}


@given(
    raw=st.dictionaries(st.sampled_from("abcdef"), st.floats(min_value=0, max_value=10), min_size=1),
    floor=st.floats(min_value=0, max_value=0.3),
    cap=st.floats(min_value=0.3, max_value=1.0),
)
def test_projection_respects_bounds_and_sums_to_one(raw: dict[str, float], floor: float, cap: float) -> None:
    # Act
    shares = project_onto_bounds(raw, floor, cap)

    # Assert
    n = len(raw)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(min(floor, 1 / n) - 1e-9 <= s <= max(cap, 1 / n) + 1e-9 for s in shares.values())


def test_lookahead_shares_up_to_t_ignore_later_bars(make_minute_returns) -> None:
    # Arrange
    btc = make_minute_returns(1000)["BTCUSDT"].to_numpy()
    rows = strategy_rows(btc)
    cut = 600
    perturbed = rows[:cut] + [{k: -5 * v for k, v in row.items()} for row in rows[cut:]]

    # Act
    full, changed, stopped = AdaptiveAllocator(), AdaptiveAllocator(), AdaptiveAllocator().fit(rows[:cut])
    at_t = []
    for index, (row, other) in enumerate(zip(rows, perturbed, strict=True)):
        full.partial_fit(row)
        changed.partial_fit(other)
        if index == cut - 1:
            at_t = [dict(full.weights_), dict(changed.weights_)]

    # Assert
    assert at_t[0] == stopped.weights_ == at_t[1]
    assert full.weights_ != changed.weights_


def numpy_projection(raw: dict[str, float], floor: float, cap: float) -> dict[str, float]:
    """The plain numpy reference of :func:`project_onto_bounds` (what it computed before it ran on floats)."""
    names = sorted(raw)
    n = len(names)
    low, high = min(floor, 1.0 / n), max(cap, 1.0 / n)
    values = np.array([max(0.0, raw[name]) if np.isfinite(raw[name]) else 0.0 for name in names])
    if values.sum() <= 0:
        return dict.fromkeys(names, 1.0 / n)
    values = values / values.max() + 1e-12
    small, large = 0.0, 1.0
    while np.clip(large * values, low, high).sum() < 1.0:
        large *= 2.0
    for _ in range(64):
        middle = 0.5 * (small + large)
        if np.clip(middle * values, low, high).sum() < 1.0:
            small = middle
        else:
            large = middle
    shares = np.clip(large * values, low, high)
    return {name: float(share) for name, share in zip(names, shares / shares.sum(), strict=True)}


@given(
    st.lists(st.floats(-3.0, 3.0) | st.just(0.0) | st.just(float("nan")), min_size=1, max_size=7),
    st.floats(0.0, 0.3),
    st.floats(0.3, 1.0),
)
def test_the_projection_equals_its_numpy_reference_to_the_bit(scores: list[float], floor: float, cap: float) -> None:
    # Arrange
    raw = {f"strategy_{i}": score for i, score in enumerate(scores)}

    # Act
    shares = project_onto_bounds(raw, floor, cap)

    # Assert
    assert shares == numpy_projection(raw, floor, cap)
