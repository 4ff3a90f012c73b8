"""The paper venue's durable store, on the real BTCUSDT 1m bars of 2025-05-04 and the real funding file.

The scripted run trades through the 16:00 UTC settlement (after bar 26) with
2 s of latency and up to 0.9 s of jitter, so requests are in flight between
operations, and with a 2 % participation cap, so the large bid fills in parts.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from venue_harness import (
    BARS_1M,
    Harness,
    money,
    real_bars,
    real_instruments,
    real_session,
    strip_ids,
    with_funding,
)

from keel.api import VenueStore
from keel.api.venue_state import MarketCursor, VenueCommit
from keel.core.errors import OperatorActionRequiredError
from keel.core.messages import BarClosed, BookUpdated, FundingPaid, MarketDataEvent, OrderCanceled, OrderFilled
from keel.core.orders import OrderSide, OrderType, TimeInForce

BTC = "BTCUSDT"
BARS = real_bars(BTC)
EVENTS: list[MarketDataEvent] = list(with_funding(BARS[:240]))
SETTINGS: dict[str, Any] = {
    "initial_balance": Decimal("1000000"),
    "participation_rate": Decimal("0.02"),
    "latency_ns": 2_000_000_000,
    "latency_jitter_ns": 900_000_000,
    "seed": 5,
}
Action = Callable[[Harness], None]


def close_of(index: int) -> Decimal:
    event = EVENTS[index]
    assert isinstance(event, BarClosed)
    return money(event.close)


def cancel(client_order_id: str) -> Action:
    return lambda venue: venue.run(venue.exchange.cancel_order(BTC, client_order_id))


ACTIONS: dict[int, list[Action]] = {
    1: [lambda v: v.submit(OrderSide.BUY, "0.500", client_order_id="entry")],
    2: [lambda v: v.limit(OrderSide.BUY, "8.000", close_of(2), client_order_id="big")],
    6: [lambda v: v.limit(OrderSide.SELL, "0.300", close_of(6) + 800, client_order_id="ask")],
    9: [
        lambda v: v.submit(
            OrderSide.SELL,
            "0.200",
            OrderType.STOP_MARKET,
            stop_price=close_of(9) - 300,
            reduce_only=True,
            client_order_id="stop",
        )
    ],
    15: [cancel("ask")],
    30: [lambda v: v.submit(OrderSide.SELL, "0.200", client_order_id="trim")],
    45: [lambda v: v.run(v.exchange.cancel_all_orders(BTC))],
    50: [
        lambda v: v.limit(OrderSide.BUY, "0.100", close_of(50) - 10, client_order_id="dip"),
        lambda v: v.limit(OrderSide.BUY, "0.100", close_of(50) - 900, TimeInForce.IOC, client_order_id="ioc"),
    ],
    60: [lambda v: v.run(v.exchange.set_leverage(BTC, 10))],
    70: [lambda v: v.submit(OrderSide.SELL, "0.100", client_order_id="reduce")],
    80: [lambda v: v.submit(OrderSide.BUY, "0.050", client_order_id="late")],
    85: [lambda v: v.limit(OrderSide.SELL, "0.100", close_of(85) + 400, client_order_id="late-ask")],
    120: [lambda v: v.limit(OrderSide.BUY, "2.000", close_of(120), client_order_id="second-big")],
    150: [lambda v: v.submit(OrderSide.SELL, "0.300", client_order_id="exit")],
    200: [lambda v: v.run(v.exchange.cancel_all_orders(BTC))],
    90: [lambda v: v.run(v.exchange.cancel_all_orders(BTC))],
}


def step(venue: Harness, index: int) -> None:
    """Feed event ``index`` and apply its actions."""
    venue.feed(EVENTS[index])
    for action in ACTIONS.get(index, []):
        action(venue)


def fresh_venue(**overrides: Any) -> Harness:
    return Harness(BARS[0].open_time, **{**SETTINGS, **overrides})


def loaded(store: VenueStore, at: Harness) -> Harness:
    """A fresh venue loaded from ``store``, its clock where ``at``'s is."""
    venue = fresh_venue()
    assert store.load_into(venue.exchange)
    venue.clock.advance_to(at.clock.timestamp_ns())
    return venue


@dataclass
class Follower:
    """A venue loaded from the store before event ``start``, run beside the live one until ``end``.

    ``live_start`` and ``live_end`` delimit the live venue's reports over the same events.
    """

    venue: Harness
    start: int
    end: int
    live_start: int
    live_end: int | None = None


# --- round trip -----------------------------------------------------------------------------------------


def test_a_venue_loaded_from_the_store_at_any_point_equals_the_live_one_and_continues_the_same(
    tmp_path: Path,
) -> None:
    # Arrange: the live venue commits every operation; ten random load points, each followed for 25 events
    live = fresh_venue()
    store = VenueStore(tmp_path / "venue.sqlite")
    store.attach(live.exchange)
    points = set(random.Random(20250504).sample(range(1, len(EVENTS)), 10)) | {3, 10, 28}
    followers: list[Follower] = []
    snapshots: list[dict[str, Any]] = []

    # Act / Assert
    for index in range(len(EVENTS)):
        if index in points:
            follower = loaded(store, live)
            assert follower.exchange.snapshot() == live.exchange.snapshot()
            snapshots.append(msgspec.json.decode(live.exchange.snapshot()))
            followers.append(Follower(follower, index, index + 25, len(live.reports)))
        step(live, index)
        for follower in followers:
            if follower.start <= index < follower.end:
                step(follower.venue, index)
                follower.live_end = len(live.reports)
    for follower in followers:
        assert strip_ids(follower.venue.reports) == strip_ids(live.reports[follower.live_start : follower.live_end])
    assert sum(len(f.venue.reports) for f in followers) >= 15
    assert loaded(store, live).exchange.snapshot() == live.exchange.snapshot()
    big_fills = [f for f in live.of_type(OrderFilled) if f.client_order_id == "big"]
    assert len(big_fills) >= 3 and live.of_type(FundingPaid)
    assert any(s["in_flight"] for s in snapshots)
    assert any(o["status"] == "PARTIALLY_FILLED" for s in snapshots for o in s["orders"])


def test_a_venue_on_the_recorded_book_round_trips_through_the_store(tmp_path: Path) -> None:
    # Arrange: the real BTCUSDT book session with 20 ms of latency; a resting bid, a market order, a cancel
    session = real_session()[:3000]
    settings = {"initial_balance": Decimal("1000000"), "latency_ns": 20_000_000}
    live = Harness(session[0].ts_event, **settings)
    store = VenueStore(tmp_path / "venue.sqlite")
    store.attach(live.exchange)
    live.feed(*session[:400])
    bid = money(next(e for e in reversed(session[:400]) if isinstance(e, BookUpdated)).bids[0][0])
    live.limit(OrderSide.BUY, "5.000", bid, client_order_id="bid")
    live.submit(OrderSide.SELL, "0.100", client_order_id="sell")
    live.feed(*session[400:1500])
    live.run(live.exchange.cancel_order(BTC, "bid"))
    copy = Harness(session[0].ts_event, **settings)

    # Act
    found = store.load_into(copy.exchange)
    copy.clock.advance_to(live.clock.timestamp_ns())
    live.reports.clear()
    live.feed(*session[1500:])
    copy.feed(*session[1500:])

    # Assert
    assert found and live.of_type(OrderCanceled)
    assert strip_ids(copy.reports) == strip_ids(live.reports)
    assert copy.exchange.snapshot() == live.exchange.snapshot()
    assert store.load_into(copy.exchange) and copy.exchange.snapshot() == live.exchange.snapshot()


def test_attaching_a_venue_that_already_traded_writes_it_whole(tmp_path: Path) -> None:
    # Arrange
    venue = fresh_venue()
    for index in range(40):
        step(venue, index)
    store = VenueStore(tmp_path / "venue.sqlite")

    # Act
    store.attach(venue.exchange)

    # Assert
    assert loaded(store, venue).exchange.snapshot() == venue.exchange.snapshot()
    with pytest.raises(ValueError, match="already follows"):
        store.attach(fresh_venue().exchange)


def test_a_closed_store_stops_following_and_reopens_with_what_it_held(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "venue.sqlite"
    venue = fresh_venue()
    store = VenueStore(path)
    store.attach(venue.exchange)
    for index in range(20):
        step(venue, index)
    at_close = venue.exchange.snapshot()

    # Act
    store.close()
    for index in range(20, 30):
        step(venue, index)
    reopened = VenueStore(path)

    # Assert
    restored = loaded(reopened, venue)
    assert restored.exchange.snapshot() == at_close != venue.exchange.snapshot()


def test_the_saved_state_holds_the_venues_cursor_without_loading_it(tmp_path: Path) -> None:
    # Arrange
    venue = fresh_venue()
    store = VenueStore(tmp_path / "venue.sqlite")
    before = store.saved_state()
    store.attach(venue.exchange)
    for index in range(12):
        step(venue, index)

    # Act
    saved = store.saved_state()

    # Assert
    assert before is None
    assert saved is not None and saved.cursor == venue.exchange.cursor is not None


def test_an_empty_store_loads_nothing_and_reset_empties_a_store(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "venue.sqlite"
    venue = fresh_venue()
    store = VenueStore(path)
    empty = fresh_venue()
    untouched = empty.exchange.snapshot()
    nothing = store.load_into(empty.exchange)
    store.attach(venue.exchange)
    step(venue, 0)
    step(venue, 1)

    # Act
    with pytest.raises(ValueError, match="close it before resetting"):
        store.reset()
    store.close()
    reopened = VenueStore(path)
    reopened.reset()

    # Assert
    assert nothing is False and empty.exchange.snapshot() == untouched
    assert reopened.load_into(fresh_venue().exchange) is False


# --- crashes --------------------------------------------------------------------------------------------


def run_until_killed(path: Path, kill_after: int, channel: Any) -> None:
    """In a forked child: run the scripted venue, committing to ``path``; SIGKILL itself right after commit N."""
    venue = fresh_venue()
    store = VenueStore(path)
    commits = 0

    def write_then_maybe_die(commit: VenueCommit) -> None:
        nonlocal commits
        store.commit(commit)
        commits += 1
        if commits == kill_after:
            channel.send_bytes(venue.exchange.snapshot())
            os.kill(os.getpid(), signal.SIGKILL)

    venue.exchange.set_commit_handler(write_then_maybe_die)
    for index in range(len(EVENTS)):
        step(venue, index)
    channel.send_bytes(b"finished without being killed")


@pytest.mark.parametrize("kill_after", [1, 2, 33, 171])
def test_a_store_whose_writer_was_killed_loads_the_last_committed_state(tmp_path: Path, kill_after: int) -> None:
    # Arrange
    path = tmp_path / "venue.sqlite"
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=run_until_killed, args=(path, kill_after, sender))

    # Act
    child.start()
    sender.close()
    committed = receiver.recv_bytes()
    child.join(timeout=60)
    venue = fresh_venue()
    store = VenueStore(path)
    found = store.load_into(venue.exchange)

    # Assert
    assert child.exitcode == -signal.SIGKILL
    assert found and venue.exchange.snapshot() == committed
    cursor = venue.exchange.cursor
    resume = 0 if cursor is None else [MarketCursor.of(e) for e in EVENTS].index(cursor) + 1
    for index in range(resume, resume + 5):
        step(venue, index)


# --- refusals -------------------------------------------------------------------------------------------


def test_a_file_that_is_not_a_sqlite_database_is_refused_with_what_to_do(tmp_path: Path) -> None:
    # Arrange: a real recorded bar file where the store should be
    path = tmp_path / "venue.sqlite"
    shutil.copy(BARS_1M / "BTCUSDT_1m.csv.gz", path)

    # Act
    with pytest.raises(OperatorActionRequiredError) as refused:
        VenueStore(path)

    # Assert
    assert str(path) in str(refused.value) and "to start a fresh paper account" in str(refused.value)


def test_another_sqlite_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    # Arrange: a SQLite database of something else (the real funding rows of 2025-05-04)
    path = tmp_path / "keel.sqlite"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE funding (symbol TEXT, time_ms INTEGER, rate TEXT)")
        other.execute("INSERT INTO funding VALUES ('BTCUSDT', 1746374400000, '0.00003745')")
    other.close()
    before = path.read_bytes()

    # Act
    with pytest.raises(OperatorActionRequiredError) as refused:
        VenueStore(path)

    # Assert
    assert str(path) in str(refused.value) and "file of its own" in str(refused.value)
    assert path.read_bytes() == before


def test_a_damaged_store_is_refused_on_load(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "venue.sqlite"
    store = VenueStore(path)
    venue = fresh_venue()
    store.attach(venue.exchange)
    for index in range(5):
        step(venue, index)
    store.close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE orders SET state = X'7B7D'")
    raw.close()

    # Act
    with pytest.raises(OperatorActionRequiredError) as refused:
        VenueStore(path).load_into(fresh_venue().exchange)

    # Assert
    assert str(path) in str(refused.value) and "to start a fresh paper account" in str(refused.value)


def test_a_store_of_another_layout_or_another_venue_is_refused(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "venue.sqlite"
    store = VenueStore(path)
    venue = fresh_venue()
    store.attach(venue.exchange)
    step(venue, 0)
    only_btc = fresh_venue(instruments={BTC: real_instruments()[BTC]})

    # Act
    with pytest.raises(OperatorActionRequiredError) as other_venue:
        store.load_into(only_btc.exchange)
    store.close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(OperatorActionRequiredError) as other_layout:
        VenueStore(path)

    # Assert
    assert str(path) in str(other_venue.value) and "configure the same instruments" in str(other_venue.value)
    assert str(path) in str(other_layout.value) and "layout 99" in str(other_layout.value)


def test_a_store_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    # Act
    with pytest.raises(OperatorActionRequiredError) as refused:
        VenueStore(tmp_path / "missing" / "venue.sqlite")

    # Assert
    assert "directory does not exist" in str(refused.value)
