"""The stream handler on the real capture: gaps ask for a snapshot, resync, crossed books are withheld."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest

from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.messages import BookUpdated, Message
from keel.market_data.order_book import OrderBook
from keel.market_data.sessions import load_session
from keel.market_data.stream_handler import MarketStreamHandler

DATA = Path(__file__).resolve().parents[2] / "data"
CAPTURE = DATA / "orderbook/raw/binance_usdm_btcusdt_20240808_ws.jsonl.gz"
SESSION = DATA / "orderbook/binance_usdm_BTCUSDT_2024-08-08"


@pytest.fixture(scope="module")
def capture() -> list[tuple[int, bytes]]:
    with gzip.open(CAPTURE, "rb") as stream:
        return [(int(ts), payload) for ts, _, payload in (line.rstrip(b"\n").partition(b" ") for line in stream)]


def _handler(requests: list[str]) -> tuple[MarketStreamHandler, list[Message], EventBus]:
    bus = EventBus(capacity=1_000_000)
    published: list[Message] = []
    bus.subscribe(BookUpdated, published.append)
    handler = MarketStreamHandler(
        "market_data", bus, SimulatedClock(0), {"BTCUSDT": Decimal("0.1")}, request_snapshot=requests.append
    )
    return handler, published, bus


def _feed(handler: MarketStreamHandler, lines: list[tuple[int, bytes]]) -> None:
    for ts, payload in lines:
        if payload.startswith(b'{"lastUpdateId"'):
            handler.on_snapshot("BTCUSDT", payload, ts)
        else:
            handler.on_payload(payload, ts)


def _rest_snapshot_after(update_id: int) -> bytes:
    """A REST depth response holding the real book right after diff event ``update_id``."""
    session = load_session(SESSION)
    book = OrderBook("BTCUSDT", session.tick_size)
    snapshot, diffs = session.snapshot, session.diffs
    book.apply_snapshot_ticks(
        snapshot.last_update_id,
        snapshot.bid_ticks,
        snapshot.bid_quantities,
        snapshot.ask_ticks,
        snapshot.ask_quantities,
    )
    for i in range(len(diffs)):
        b, a, e = diffs.bid_start[i], diffs.ask_start[i], diffs.bid_start[i + 1]
        book.apply_diff_ticks(
            int(diffs.first_update_id[i]), int(diffs.last_update_id[i]), int(diffs.previous_update_id[i]),
            diffs.ticks[b:a], diffs.quantities[b:a], diffs.ticks[a:e], diffs.quantities[a:e],
        )  # fmt: skip
        if book.last_update_id == update_id:
            break
    bids, asks = book.top(1000)
    document = {
        "lastUpdateId": update_id,
        "bids": [[str(p), str(q)] for p, q in bids],
        "asks": [[str(p), str(q)] for p, q in asks],
    }
    return json.dumps(document).encode()


def test_a_lost_depth_event_asks_once_for_a_snapshot_and_the_book_resyncs(capture) -> None:  # type: ignore[no-untyped-def]
    # Arrange: drop the 1000th depth event; later hand over a snapshot taken 50 events after the loss
    requests: list[str] = []
    handler, published, bus = _handler(requests)
    depth_lines = [i for i, (_, p) in enumerate(capture) if b"depthUpdate" in p]
    lost, resync_at = depth_lines[1000], depth_lines[1050]
    resync_id = json.loads(capture[resync_at][1])["data"]["u"]
    clean, clean_published, clean_bus = _handler([])
    _feed(clean, capture)
    clean_bus.drain()

    # Act
    _feed(handler, capture[:lost])
    _feed(handler, capture[lost + 1 : resync_at + 1])
    requested = list(requests)
    handler.on_snapshot("BTCUSDT", _rest_snapshot_after(resync_id), capture[resync_at][0])
    _feed(handler, capture[resync_at + 1 :])
    bus.drain()

    # Assert
    assert requested == ["BTCUSDT"] and handler.counts["depth_gap"] == 1
    assert handler.counts["snapshot_requests"] == 1
    after = [b for b in published if b.update_id >= resync_id]
    expected = [b for b in clean_published if b.update_id >= resync_id]
    assert [(b.update_id, b.bids, b.asks) for b in after] == [(b.update_id, b.bids, b.asks) for b in expected]
    assert all(b.update_id < json.loads(capture[lost][1])["data"]["u"] or b.update_id >= resync_id for b in published)


def test_a_crossed_book_is_withheld_and_resynced(capture) -> None:  # type: ignore[no-untyped-def]
    # Arrange: a real depth event whose bid side gains a level at the best ask
    requests: list[str] = []
    handler, published, bus = _handler(requests)
    depth_lines = [i for i, (_, p) in enumerate(capture) if b"depthUpdate" in p]
    target = depth_lines[500]
    _feed(handler, capture[:target])
    bus.drain()
    best_ask = handler.books["BTCUSDT"].best_ask()
    assert best_ask is not None
    document = json.loads(capture[target][1])
    document["data"]["b"].append([str(best_ask[0]), "1.000"])
    count_before = len(published)

    # Act
    handler.on_payload(json.dumps(document).encode(), capture[target][0])
    bus.drain()

    # Assert
    assert len(published) == count_before
    assert handler.counts["crossed_book"] == 1 and requests == ["BTCUSDT"]
    assert not handler.books["BTCUSDT"].is_synced
