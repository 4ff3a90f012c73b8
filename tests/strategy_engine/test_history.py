"""Per-symbol market history: the user's market_data shape over real bars, bounded and read-only."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_data import MINUTE_NS, market_data

from keel.strategy_engine.history import MARKET_DATA_KEYS, SymbolHistory, bar_at


def fill(history: SymbolHistory, data: dict, count: int) -> None:
    for i in range(count):
        history.append_bar(
            int(data["timestamp"][i]),
            float(data["open"][i]),
            float(data["high"][i]),
            float(data["low"][i]),
            float(data["close"][i]),
            float(data["volume"][i]),
        )


def test_the_view_holds_the_bars_in_order_with_the_users_keys() -> None:
    # Arrange
    data = market_data("BTCUSDT", count=1000)
    history = SymbolHistory("BTCUSDT")

    # Act
    fill(history, data, 1000)
    view = history.view()

    # Assert
    assert set(view) == set(MARKET_DATA_KEYS)
    assert view["symbol"] == "BTCUSDT"
    for key in ("timestamp", "open", "high", "low", "close", "volume"):
        assert np.array_equal(view[key], data[key])
    assert view.bar(999) == bar_at(data, 999) == bar_at(view, 999)
    assert view.bar(10) == bar_at(data, 10)


def test_a_bounded_history_keeps_exactly_the_most_recent_bars() -> None:
    # Arrange
    data = market_data("ETHUSDT", count=3000)
    history = SymbolHistory("ETHUSDT", capacity=500)

    # Act
    fill(history, data, 3000)

    # Assert
    assert len(history) == 500
    assert np.array_equal(history.view()["close"], data["close"][2500:])
    assert history.view().bar(0)[0] == int(data["timestamp"][2500])


def test_views_are_read_only() -> None:
    # Arrange
    history = SymbolHistory("SOLUSDT")
    fill(history, market_data("SOLUSDT", count=10), 10)

    # Act / Assert
    with pytest.raises(ValueError, match="read-only"):
        history.view()["close"][0] = 1.0


def test_funding_rows_are_kept_with_nan_for_a_missing_mark_price() -> None:
    # Arrange
    history = SymbolHistory("BTCUSDT")
    data = market_data("BTCUSDT", count=1)

    # Act
    history.append_funding(int(data["funding_time"][0]), float(data["funding_rate"][0]), None)
    history.append_funding(int(data["funding_time"][1]), float(data["funding_rate"][1]), float(data["mark_price"][1]))

    # Assert
    view = history.view()
    assert list(view["funding_time"]) == list(data["funding_time"][:2])
    assert np.isnan(view["mark_price"][0]) and view["mark_price"][1] == data["mark_price"][1]
    assert view.last_funding_time == data["funding_time"][1]


def test_bar_at_reads_a_plain_dict_and_uses_the_index_without_timestamps() -> None:
    # Arrange
    data = market_data("BTCUSDT", count=5)
    closes_only = {"symbol": "BTCUSDT", "close": list(data["close"])}

    # Act / Assert
    assert bar_at(data, 3)[0] == int(data["timestamp"][3])
    assert bar_at(closes_only, 3) == (3, data["close"][3], data["close"][3], data["close"][3], data["close"][3], 0.0)
    with pytest.raises(IndexError):
        bar_at(closes_only, 5)
    assert data["timestamp"][1] - data["timestamp"][0] == MINUTE_NS


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.one_of(st.none(), st.integers(min_value=1, max_value=300)),
    reads=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=6),
)
def test_columns_read_at_any_time_equal_a_plain_list_of_the_kept_bars(capacity: int | None, reads: list[int]) -> None:
    # Arrange: rows are written into the arrays in blocks; reads between blocks must see every row
    data = market_data("BTCUSDT", count=sum(reads))
    history = SymbolHistory("BTCUSDT", capacity)
    plain: list[tuple[int, float, float, float, float, float]] = []
    done = 0

    for count in reads:
        # Act
        for i in range(done, done + count):
            row = bar_at(data, i)
            history.append_bar(*row)
            plain.append(row)
        done += count
        kept = plain if capacity is None else plain[-capacity:]
        view = history.view()

        # Assert
        assert len(history) == len(kept)
        for k, key in enumerate(("timestamp", "open", "high", "low", "close", "volume")):
            assert view[key].tolist() == [row[k] for row in kept]
        assert [history.bar(i) for i in range(len(kept))] == kept
