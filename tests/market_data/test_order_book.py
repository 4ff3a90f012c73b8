"""The local order book: Binance USD-M sync rules on the real session, exact levels, crossed books, properties."""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.orders import OrderSide
from keel.market_data.order_book import BookSyncState, BookUnavailableError, DiffResult, OrderBook

SESSION = Path(__file__).resolve().parents[2] / "data/orderbook/binance_usdm_BTCUSDT_2024-08-08"
TICK = Decimal("0.1")


def _text_rows(name: str) -> pd.DataFrame:
    """The session file with prices and quantities kept as the exchange's text."""
    with gzip.open(SESSION / name, "rt") as stream:
        return pd.read_csv(stream, dtype={"price": str, "qty": str})


@pytest.fixture(scope="module")
def snapshot() -> tuple[int, list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    """The real REST snapshot as decimals: (lastUpdateId, bids, asks)."""
    rows = _text_rows("snapshot.csv.gz")
    levels = {
        side: [(Decimal(p), Decimal(q)) for p, q in zip(g["price"], g["qty"], strict=True)]
        for side, g in rows.groupby("side")
    }
    return int(rows["last_update_id"].iloc[0]), levels["b"], levels["a"]


@pytest.fixture(scope="module")
def diff_events() -> list[tuple[int, int, int, list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]]:
    """The first 300 real diff events as decimals: (U, u, pu, bids, asks)."""
    rows = _text_rows("depth_diff.csv.gz")
    events = []
    for (first, last, previous), group in rows.groupby(
        ["first_update_id", "last_update_id", "prev_last_update_id"], sort=False
    ):
        sides = {
            side: [(Decimal(p), Decimal(q)) for p, q in zip(g["price"], g["qty"], strict=True)]
            for side, g in group.groupby("side")
        }
        events.append((int(first), int(last), int(previous), sides.get("b", []), sides.get("a", [])))
        if len(events) == 300:
            break
    return events


@pytest.fixture(scope="module")
def book_ticker() -> dict[int, tuple[Decimal, Decimal, Decimal, Decimal]]:
    """The recorded bookTicker by update id, as decimals."""
    with gzip.open(SESSION / "bbo.csv.gz", "rt") as stream:
        rows = pd.read_csv(stream, dtype=str)
    return {
        int(u): (Decimal(bp), Decimal(bq), Decimal(ap), Decimal(aq))
        for u, bp, bq, ap, aq in zip(
            rows["update_id"], rows["bid_price"], rows["bid_qty"], rows["ask_price"], rows["ask_qty"], strict=True
        )
    }


def _synced_book(snapshot, diff_events) -> OrderBook:  # type: ignore[no-untyped-def]
    book = OrderBook("BTCUSDT", TICK)
    book.apply_snapshot(*snapshot)
    for event in diff_events:
        book.apply_diff(*event)
    return book


def test_the_snapshot_is_read_back_exactly(snapshot) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    last_update_id, bids, asks = snapshot
    book = OrderBook("BTCUSDT", TICK)

    # Act
    book.apply_snapshot(last_update_id, bids, asks)
    top_bids, top_asks = book.top(1000)

    # Assert
    assert book.state is BookSyncState.SYNCING
    assert book.last_update_id == last_update_id
    assert top_bids == sorted(bids, reverse=True)
    assert top_asks == sorted(asks)
    assert book.best_bid() == (Decimal("61800.20"), Decimal("2.909"))


def test_binance_usdm_rules_on_the_real_diff_stream(snapshot, diff_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    last_update_id = snapshot[0]
    book = OrderBook("BTCUSDT", TICK)
    book.apply_snapshot(*snapshot)

    # Act
    results = [book.apply_diff(*event) for event in diff_events]

    # Assert
    stale = [event[1] < last_update_id for event in diff_events]
    assert results[: sum(stale)] == [DiffResult.DROPPED] * sum(stale) == [DiffResult.DROPPED] * 4
    first_applied = diff_events[sum(stale)]
    assert first_applied[0] <= last_update_id <= first_applied[1]
    assert results[sum(stale) :] == [DiffResult.APPLIED] * (len(diff_events) - 4)
    assert book.state is BookSyncState.SYNCED
    assert book.last_update_id == diff_events[-1][1]


def test_rebuilt_best_levels_equal_the_recorded_book_ticker(snapshot, diff_events, book_ticker) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    book = OrderBook("BTCUSDT", TICK)
    book.apply_snapshot(*snapshot)
    compared = 0

    # Act / Assert
    for event in diff_events:
        if book.apply_diff(*event) is DiffResult.APPLIED and event[1] in book_ticker:
            bid_price, bid_quantity, ask_price, ask_quantity = book_ticker[event[1]]
            assert book.best_bid() == (bid_price, bid_quantity)
            assert book.best_ask() == (ask_price, ask_quantity)
            compared += 1
    assert compared >= 20


def test_a_broken_chain_is_a_gap_and_a_new_snapshot_resyncs(snapshot, diff_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    book = _synced_book(snapshot, diff_events[:100])
    skipped, following = diff_events[100], diff_events[101:110]

    # Act
    gap = book.apply_diff(*following[0])
    buffered = [book.apply_diff(*event) for event in following[1:]]
    awaiting = book.state
    reference = _synced_book(snapshot, diff_events[:110])
    top_bids, top_asks = reference.top(50)
    book.apply_snapshot(skipped[1], *_levels_after(snapshot, diff_events[:101]))

    # Assert
    assert gap is DiffResult.GAP and book.gaps == 1
    assert buffered == [DiffResult.BUFFERED] * 8
    assert awaiting is BookSyncState.AWAITING_SNAPSHOT
    assert book.state is BookSyncState.SYNCED
    assert book.last_update_id == following[-1][1]
    assert book.top(50) == (top_bids, top_asks)


def _levels_after(snapshot, events):  # type: ignore[no-untyped-def]
    """The full book after ``events``, as a snapshot would give it (bids, asks)."""
    book = _synced_book(snapshot, events)
    return book.top(5000)


def test_diffs_before_the_snapshot_are_buffered_and_replayed(snapshot, diff_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    book = OrderBook("BTCUSDT", TICK)

    # Act
    early = [book.apply_diff(*event) for event in diff_events[:50]]
    book.apply_snapshot(*snapshot)

    # Assert
    assert early == [DiffResult.BUFFERED] * 50
    assert book.state is BookSyncState.SYNCED
    assert (book.dropped, book.applied) == (4, 46)
    assert book.top(20) == _synced_book(snapshot, diff_events[:50]).top(20)


def test_a_snapshot_newer_than_the_first_buffered_event_is_a_gap(snapshot, diff_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    book = OrderBook("BTCUSDT", TICK)
    book.apply_snapshot(*snapshot)
    later_event = diff_events[20]

    # Act
    result = book.apply_diff(*later_event)

    # Assert
    assert later_event[0] > snapshot[0]
    assert result is DiffResult.GAP
    assert book.state is BookSyncState.AWAITING_SNAPSHOT
    assert book.best_bid() is None


def test_a_replayed_old_event_is_dropped_not_applied(snapshot, diff_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    book = _synced_book(snapshot, diff_events[:60])
    before = book.top(20)

    # Act
    result = book.apply_diff(*diff_events[30])

    # Assert
    assert result is DiffResult.DROPPED
    assert book.top(20) == before
    assert book.state is BookSyncState.SYNCED


def test_a_crossed_book_is_never_published(snapshot, diff_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    book = _synced_book(snapshot, diff_events[:10])
    best_ask = book.best_ask()
    assert best_ask is not None
    last = book.last_update_id

    # Act
    book.apply_diff(last + 1, last + 2, last, [(best_ask[0], Decimal("1.000"))], [])

    # Assert
    assert book.is_crossed()
    with pytest.raises(BookUnavailableError, match="crossed"):
        book.to_event(1, 1)


def test_a_book_without_snapshot_is_not_published() -> None:
    book = OrderBook("BTCUSDT", TICK)

    with pytest.raises(BookUnavailableError, match="awaiting_snapshot"):
        book.to_event(1, 1)


def test_to_event_carries_the_top_levels_as_exact_floats(snapshot, diff_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    book = _synced_book(snapshot, diff_events[:30])

    # Act
    event = book.to_event(ts_event=5, ts_init=6, depth=20)

    # Assert
    bids, asks = book.top(20)
    assert event.update_id == book.last_update_id and event.symbol == "BTCUSDT"
    assert event.bids == tuple((float(p), float(q)) for p, q in bids)
    assert event.asks == tuple((float(p), float(q)) for p, q in asks)
    assert len(event.bids) == len(event.asks) == 20


@pytest.mark.parametrize(
    ("price", "quantity", "problem"),
    [
        (Decimal("61800.25"), Decimal("1"), "not a multiple of the tick size"),
        (Decimal("-5.0"), Decimal("1"), "positive finite"),
        (Decimal("NaN"), Decimal("1"), "positive finite"),
        (Decimal("61800.2"), Decimal("-0.001"), "finite and >= 0"),
        (Decimal("61800.2"), Decimal("Infinity"), "finite and >= 0"),
    ],
)
def test_malformed_levels_are_refused_and_leave_the_book_unchanged(
    snapshot, diff_events, price: Decimal, quantity: Decimal, problem: str
) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    book = _synced_book(snapshot, diff_events[:10])
    before, last = book.top(20), book.last_update_id

    # Act / Assert
    with pytest.raises(ValueError, match=problem):
        book.apply_diff(last + 1, last + 2, last, [(price, quantity)], [])
    assert book.top(20) == before and book.last_update_id == last


def test_a_price_twice_on_one_side_of_one_event_is_refused(snapshot) -> None:  # type: ignore[no-untyped-def]
    book = OrderBook("BTCUSDT", TICK)

    with pytest.raises(ValueError, match="appears twice"):
        book.apply_snapshot(1, [(Decimal("61800.2"), Decimal("1")), (Decimal("61800.2"), Decimal("2"))], [])


def test_quantity_at_reads_one_level(snapshot) -> None:  # type: ignore[no-untyped-def]
    book = OrderBook("BTCUSDT", TICK)
    book.apply_snapshot(*snapshot)

    assert book.quantity_at(OrderSide.BUY, Decimal("61800.00")) == Decimal("20.004")
    assert book.quantity_at(OrderSide.SELL, Decimal("61800.00")) == Decimal(0)


def test_spot_rules_chain_on_first_update_id(snapshot) -> None:  # type: ignore[no-untyped-def]
    # Arrange: spot events carry no pu; U must follow the previous u + 1
    book = OrderBook("BTCUSDT", TICK)
    last_update_id = snapshot[0]
    book.apply_snapshot(*snapshot)
    level = [(Decimal("61700.0"), Decimal("0.5"))]

    # Act
    first = book.apply_diff(last_update_id + 1, last_update_id + 3, None, level, [])
    second = book.apply_diff(last_update_id + 4, last_update_id + 4, None, [], [])
    gap = book.apply_diff(last_update_id + 6, last_update_id + 7, None, [], [])

    # Assert
    assert (first, second, gap) == (DiffResult.APPLIED, DiffResult.APPLIED, DiffResult.GAP)


def test_the_tick_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tick size"):
        OrderBook("BTCUSDT", Decimal(0))


# --- properties: the dense book against a plain dictionary book ---------------------------------

_level = st.tuples(
    st.one_of(st.integers(600_000, 600_400), st.integers(1, 5_000_000)),
    st.sampled_from([0.0, 0.001, 0.5, 1.25, 7.0]),
)


@settings(max_examples=80, deadline=None)
@given(
    updates=st.lists(
        st.tuples(
            st.lists(_level, max_size=8, unique_by=lambda x: x[0]),
            st.lists(_level, max_size=8, unique_by=lambda x: x[0]),
        ),
        max_size=40,
    ),
    depth=st.integers(1, 30),
)
def test_levels_match_a_plain_dictionary_book(updates, depth: int) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    book = OrderBook("BTCUSDT", TICK)
    book.apply_snapshot_ticks(1, np.array([599_990]), np.array([1.0]), np.array([600_500]), np.array([2.0]))
    reference = {"b": {599_990: 1.0}, "a": {600_500: 2.0}}
    last = 1

    # Act
    for bids, asks in updates:
        arrays = [np.array([t for t, _ in side], dtype=np.int64) for side in (bids, asks)]
        quantities = [np.array([q for _, q in side], dtype=np.float64) for side in (bids, asks)]
        book.apply_diff_ticks(last, last + 1, last, arrays[0], quantities[0], arrays[1], quantities[1])
        last += 1
        for name, side in (("b", bids), ("a", asks)):
            for tick, quantity in side:
                if quantity:
                    reference[name][tick] = quantity
                else:
                    reference[name].pop(tick, None)

    # Assert
    top = book.top_ticks(depth)
    expected_bids = sorted(reference["b"].items(), reverse=True)[:depth]
    expected_asks = sorted(reference["a"].items())[:depth]
    assert list(zip(top.bid_ticks.tolist(), top.bid_quantities.tolist(), strict=True)) == expected_bids
    assert list(zip(top.ask_ticks.tolist(), top.ask_quantities.tolist(), strict=True)) == expected_asks
    assert book.best_bid_tick() == (expected_bids[0][0] if expected_bids else None)
    assert book.best_ask_tick() == (expected_asks[0][0] if expected_asks else None)


@settings(max_examples=80, deadline=None)
@given(
    updates=st.lists(
        st.tuples(
            st.lists(_level, max_size=8, unique_by=lambda x: x[0]),
            st.lists(_level, max_size=8, unique_by=lambda x: x[0]),
        ),
        max_size=40,
    ),
    depths=st.lists(st.integers(0, 30), min_size=1, max_size=3),
)
def test_published_events_match_a_plain_dictionary_book(updates, depths: list[int]) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    book = OrderBook("BTCUSDT", TICK)
    book.apply_snapshot_ticks(1, np.array([599_990]), np.array([1.0]), np.array([600_500]), np.array([2.0]))
    reference = {"b": {599_990: 1.0}, "a": {600_500: 2.0}}
    last = 1

    for bids, asks in updates:
        arrays = [np.array([t for t, _ in side], dtype=np.int64) for side in (bids, asks)]
        quantities = [np.array([q for _, q in side], dtype=np.float64) for side in (bids, asks)]
        book.apply_diff_ticks(last, last + 1, last, arrays[0], quantities[0], arrays[1], quantities[1])
        last += 1
        for name, side in (("b", bids), ("a", asks)):
            for tick, quantity in side:
                if quantity:
                    reference[name][tick] = quantity
                else:
                    reference[name].pop(tick, None)
        crossed = bool(reference["b"]) and bool(reference["a"]) and max(reference["b"]) >= min(reference["a"])

        for depth in depths:
            # Act
            if crossed:
                with pytest.raises(BookUnavailableError, match="crossed"):
                    book.to_event(last, last, depth)
                continue
            event = book.to_event(last, last, depth)

            # Assert
            expected_bids = [(float(TICK * t), q) for t, q in sorted(reference["b"].items(), reverse=True)[:depth]]
            expected_asks = [(float(TICK * t), q) for t, q in sorted(reference["a"].items())[:depth]]
            assert list(event.bids) == expected_bids and list(event.asks) == expected_asks
            bid_prices, bid_quantities, ask_prices, ask_quantities = book.published_levels  # type: ignore[misc]
            assert list(zip(bid_prices.tolist(), bid_quantities.tolist(), strict=True)) == expected_bids
            assert list(zip(ask_prices.tolist(), ask_quantities.tolist(), strict=True)) == expected_asks
