"""Property: whatever the depth stream drops, repeats or reorders, a published book is the venue's book."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from keel.api.binance.streams import MarketStreamState
from keel.core.messages import BookUpdated

Levels = dict[int, str]

level_changes = st.dictionaries(st.integers(900, 999), st.sampled_from(["0", "0.001", "0.5", "2"]), max_size=4)
ask_changes = st.dictionaries(st.integers(1001, 1100), st.sampled_from(["0", "0.002", "1", "3"]), max_size=4)
diffs = st.lists(st.tuples(level_changes, ask_changes), min_size=3, max_size=40)
# What happens to each event on its way: delivered, lost, sent twice, or swapped with the next one.
fates = st.lists(st.sampled_from(["ok", "ok", "ok", "ok", "lost", "twice", "swap"]), min_size=40, max_size=40)
delays = st.lists(st.integers(0, 3), min_size=60, max_size=60)


def price(tick: int) -> str:
    return f"{tick / 10:.1f}"


def diff_message(index: int, bids: Levels, asks: Levels) -> str:
    data = {
        "e": "depthUpdate",
        "E": 1_000 + index,
        "T": 1_000 + index,
        "s": "BTCUSDT",
        "U": 10 * index + 1,
        "u": 10 * index + 10,
        "pu": 10 * index,
        "b": [[price(t), q] for t, q in bids.items()],
        "a": [[price(t), q] for t, q in asks.items()],
    }
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": data})


def snapshot_message(update_id: int, bids: Levels, asks: Levels) -> str:
    return json.dumps(
        {
            "lastUpdateId": update_id,
            "E": 1,
            "T": 1,
            "bids": [[price(t), q] for t, q in bids.items() if q != "0"],
            "asks": [[price(t), q] for t, q in asks.items() if q != "0"],
        }
    )


def top(levels: Levels, best_first_descending: bool) -> tuple[tuple[float, float], ...]:
    live = [(t, q) for t, q in levels.items() if Decimal(q) > 0]
    live.sort(reverse=best_first_descending)
    return tuple((t / 10, float(q)) for t, q in live[:20])


def delivery_order(count: int, fate: list[str]) -> list[int]:
    order: list[int] = []
    index = 0
    while index < count:
        kind = fate[index % len(fate)]
        if kind == "lost":
            index += 1
        elif kind == "twice":
            order += [index, index]
            index += 1
        elif kind == "swap" and index + 1 < count:
            order += [index + 1, index]
            index += 2
        else:
            order.append(index)
            index += 1
    return order


@settings(max_examples=150, deadline=None)
@given(diffs, fates, delays)
def test_every_published_book_is_the_venues_book_at_that_update(
    changes: list[tuple[Levels, Levels]], fate: list[str], delay: list[int]
) -> None:
    # Arrange: the venue's book after each event (index 0 is the state before the first event)
    books: list[tuple[Levels, Levels]] = [({950: "1"}, {1050: "1"})]
    for bids, asks in changes:
        books.append(({**books[-1][0], **bids}, {**books[-1][1], **asks}))
    state = MarketStreamState({"BTCUSDT": Decimal("0.1")})
    published: list[BookUpdated] = []
    sent = 0  # events the venue has sent so far: its snapshot is its book after them
    waiting = -1  # deliveries left before an asked-for snapshot arrives

    # Act
    for step, index in enumerate(delivery_order(len(changes), fate)):
        sent = max(sent, index + 1)
        bids, asks = changes[index]
        published += [e for e in state.on_message(diff_message(index, bids, asks), 0) if isinstance(e, BookUpdated)]
        if state.wanted_snapshots and waiting < 0:
            waiting = delay[step % len(delay)]
        if waiting == 0:
            waiting = -1
            book_bids, book_asks = books[sent]
            message = snapshot_message(10 * sent, book_bids, book_asks)
            published += [e for e in state.on_snapshot("BTCUSDT", message, 0) if isinstance(e, BookUpdated)]
        elif waiting > 0:
            waiting -= 1

    # Assert
    for event in published:
        book_bids, book_asks = books[event.update_id // 10]
        assert event.bids == top(book_bids, best_first_descending=True)
        assert event.asks == top(book_asks, best_first_descending=False)
    assert state.statistics.books == len(published)
    book = state.books["BTCUSDT"]
    if book.is_synced:
        book_bids, book_asks = books[book.last_update_id // 10]
        assert book.top_ticks(100).bid_ticks.tolist() == sorted(
            (t for t, q in book_bids.items() if q != "0"), reverse=True
        )
        assert book.top_ticks(100).ask_ticks.tolist() == sorted(t for t, q in book_asks.items() if q != "0")
    assert state.statistics.malformed == 0
