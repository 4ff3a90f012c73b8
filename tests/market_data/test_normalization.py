"""Binance USD-M payload normalization on the real WebSocket capture and on payloads built from real rows."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.messages import (
    BarClosed,
    BookTickerUpdated,
    BookUpdated,
    LiquidationReported,
    MarkPriceUpdated,
    Message,
    TradeTick,
)
from keel.core.orders import OrderSide
from keel.market_data.feeds import RecordedBarFeed, RecordedSessionFeed
from keel.market_data.normalization import BinanceUsdmNormalizer, DepthDiff
from keel.market_data.stream_handler import MarketStreamHandler

DATA = Path(__file__).resolve().parents[2] / "data"
CAPTURE = DATA / "orderbook/raw/binance_usdm_btcusdt_20240808_ws.jsonl.gz"
SESSION = DATA / "orderbook/binance_usdm_BTCUSDT_2024-08-08"
TRADES = DATA / "trades/binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"
TICKS = {"BTCUSDT": Decimal("0.1")}


def _capture_lines() -> list[tuple[int, bytes]]:
    with gzip.open(CAPTURE, "rb") as stream:
        return [(int(ts), payload) for ts, _, payload in (line.rstrip(b"\n").partition(b" ") for line in stream)]


def _replay(lines: list[tuple[int, bytes]]) -> tuple[MarketStreamHandler, list[Message]]:
    """Feed capture lines to a stream handler; return it and everything it published."""
    bus = EventBus(capacity=1_000_000)
    published: list[Message] = []
    bus.subscribe_all(published.append)
    handler = MarketStreamHandler("market_data", bus, SimulatedClock(0), TICKS)
    for ts, payload in lines:
        if payload.startswith(b'{"lastUpdateId"'):
            handler.on_snapshot("BTCUSDT", payload, ts)
        else:
            handler.on_payload(payload, ts)
    bus.drain()
    return handler, published


@pytest.fixture(scope="module")
def capture() -> list[tuple[int, bytes]]:
    return _capture_lines()


@pytest.fixture(scope="module")
def replayed(capture) -> tuple[MarketStreamHandler, list[Message]]:  # type: ignore[no-untyped-def]
    return _replay(capture)


@pytest.fixture(scope="module")
def session_events() -> list[Message]:
    return list(RecordedSessionFeed(SESSION, TRADES))


def test_the_whole_capture_parses_with_nothing_rejected(replayed) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    handler, published = replayed

    # Act
    kinds = Counter(type(e) for e in published)

    # Assert
    assert handler.normalizer.accepted == {
        "bookTicker": 66_089,
        "trade": 21_313,
        "depthUpdate": 6_551,
        "depthSnapshot": 1,
    }
    assert sum(handler.rejected.values()) == 0
    assert kinds[BookTickerUpdated] == 66_089 and kinds[TradeTick] == 21_313
    assert handler.counts["depth_applied"] == 6_547 and handler.books["BTCUSDT"].dropped == 4


def test_capture_events_equal_the_recorded_session_files(replayed, session_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    _, published = replayed

    # Act
    def by_kind(events: list[Message], kind: type) -> list[tuple]:
        fields = {
            TradeTick: ("trade_id", "price", "quantity", "aggressor_side", "ts_event"),
            BookTickerUpdated: ("update_id", "bid_price", "bid_quantity", "ask_price", "ask_quantity", "ts_event"),
        }[kind]
        return [tuple(getattr(e, name) for name in fields) for e in events if type(e) is kind]

    # Assert
    assert by_kind(published, TradeTick) == by_kind(session_events, TradeTick)
    assert by_kind(published, BookTickerUpdated) == by_kind(session_events, BookTickerUpdated)


def test_capture_books_equal_the_books_rebuilt_from_the_session_files(replayed, session_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    _, published = replayed
    from_files = {e.update_id: e for e in session_events if isinstance(e, BookUpdated)}

    # Act
    books = [e for e in published if isinstance(e, BookUpdated)]

    # Assert: the capture's snapshot arrives after two applicable diffs, which it replays in one update
    assert len(books) == len(from_files) - 1
    for book in books:
        assert (book.bids, book.asks) == (from_files[book.update_id].bids, from_files[book.update_id].asks)


def _edit(payload: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    document = json.loads(payload)
    change(document["data"])
    return json.dumps(document).encode()


def _first(capture, event_type: str, skip: int = 0) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    matches = [(ts, p) for ts, p in capture if f'"e":"{event_type}"'.encode() in p]
    return matches[skip]


def test_bad_payloads_are_counted_per_reason_and_never_published(capture, replayed) -> None:  # type: ignore[no-untyped-def]
    # Arrange: real payloads, each broken one way, then a ticker repeated and an older one replayed
    trade_ts, trade = _first(capture, "trade", 100)
    ticker_ts, ticker = _first(capture, "bookTicker", 300)
    _, old_ticker = _first(capture, "bookTicker", 200)
    depth_ts, depth = _first(capture, "depthUpdate", 20)
    bad = [
        (trade_ts, _edit(trade, lambda d: d.update(p="NaN", t=d["t"] + 10**9))),
        (trade_ts, _edit(trade, lambda d: d.update(q="-0.004", t=d["t"] + 10**9))),
        (trade_ts, _edit(trade, lambda d: d.update(p="0", t=d["t"] + 10**9))),
        (trade_ts, _edit(trade, lambda d: d.pop("p"))),
        (trade_ts, _edit(trade, lambda d: d.update(e="trades"))),
        (trade_ts, trade[:57]),
        (ticker_ts, _edit(ticker, lambda d: d.update(B="-1.0", u=d["u"] + 10**9))),
        (ticker_ts, _edit(ticker, lambda d: d.update(a="Infinity", u=d["u"] + 10**9))),
        (depth_ts, _edit(depth, lambda d: d["b"].append(["61800.25", "1.0"]))),
        (depth_ts, _edit(depth, lambda d: d["a"].append(list(d["a"][0])))),
    ]
    position = next(i for i, (ts, p) in enumerate(capture) if ts >= ticker_ts and b'"e":"bookTicker"' in p) + 1
    lines = [*capture[:position], *bad, capture[position - 1], (ticker_ts, old_ticker), *capture[position:]]
    lines = [*lines, (trade_ts, trade)]  # an old trade replayed at the end: out of order

    # Act
    handler, published = _replay(lines)

    # Assert
    assert handler.rejected == {
        "not_finite": 2,
        "negative": 2,
        "non_positive_price": 1,
        "missing_field": 1,
        "unknown_event": 1,
        "malformed_json": 1,
        "off_tick_grid": 1,
        "repeated_level": 1,
        "duplicate": 1,
        "out_of_order": 2,
    }
    clean = replayed[1]
    assert [type(e) for e in published] == [type(e) for e in clean]


def test_mark_price_payloads_of_the_real_1s_stream_become_mark_price_events() -> None:
    # Arrange: markPriceUpdate payloads carrying the recorded 1s mark-price rows' exact text
    rows = pd.read_csv(DATA / "funding/binance_usdm_BTCUSDT_2023-04-04_markprice_1s.csv.gz", dtype=str)
    normalizer = BinanceUsdmNormalizer(TICKS)
    payloads = [
        json.dumps(
            {
                "e": "markPriceUpdate",
                "E": int(row.event_time_ms),
                "s": "BTCUSDT",
                "p": row.mark_price,
                "i": row.index_price,
                "P": row.est_settle_price,
                "r": row.funding_rate,
                "T": int(row.next_funding_time_ms),
            }
        )
        for row in rows.itertuples()
    ]

    # Act
    events = [normalizer.parse(payload, 1) for payload in payloads]

    # Assert
    assert all(isinstance(e, MarkPriceUpdated) for e in events)
    assert [e.mark_price for e in events] == [Decimal(t) for t in rows["mark_price"]]  # type: ignore[union-attr]
    assert [e.funding_rate for e in events] == [Decimal(t) for t in rows["funding_rate"]]  # type: ignore[union-attr]
    assert {e.next_funding_time for e in events} == {int(t) * 1_000_000 for t in rows["next_funding_time_ms"]}  # type: ignore[union-attr]
    assert normalizer.parse(payloads[5], 1) is None and normalizer.rejected == {"out_of_order": 1}


def test_final_klines_of_real_bars_become_the_same_bars_and_open_ones_are_skipped() -> None:
    # Arrange: kline payloads carrying 60 real BTCUSDT 1m bars
    start = 1_746_403_200_000_000_000
    bars = list(
        RecordedBarFeed(
            DATA / "ohlcv/binance_usdm_1m_2025-05", ["BTCUSDT"], "1m", None, start, start + 3_600_000_000_000
        )
    )
    normalizer = BinanceUsdmNormalizer(TICKS)

    def kline(bar: BarClosed, final: bool) -> str:
        open_ms = bar.open_time // 1_000_000
        fields = {"o": bar.open, "h": bar.high, "l": bar.low, "c": bar.close, "v": bar.volume}
        k = {
            "t": open_ms,
            "T": open_ms + 59_999,
            "s": "BTCUSDT",
            "i": "1m",
            "x": final,
            **{n: repr(v) for n, v in fields.items()},
        }
        return json.dumps({"e": "kline", "E": open_ms + 60_000, "s": "BTCUSDT", "k": k})

    # Act
    open_results = [normalizer.parse(kline(bar, False), 1) for bar in bars[:5]]
    closed = [normalizer.parse(kline(bar, True), bar.ts_event) for bar in bars]

    # Assert
    assert open_results == [None] * 5 and normalizer.skipped == {"kline": 5}
    fields = ("symbol", "interval", "open_time", "open", "high", "low", "close", "volume", "ts_event")
    assert [tuple(getattr(b, f) for f in fields) for b in closed] == [
        tuple(getattr(b, f) for f in fields) for b in bars
    ]
    broken = json.loads(kline(bars[0], True))
    broken["k"]["h"] = repr(bars[0].low / 2)
    broken["k"]["t"] += 3_600_000
    broken["k"]["T"] += 3_600_000
    assert normalizer.parse(json.dumps(broken), 1) is None and normalizer.rejected == {"bad_value": 1}


def test_aggregate_trades_of_the_real_tape_sum_their_fills() -> None:
    # Arrange: Binance aggregates fills of one taker order at one price and time into one aggTrade
    trades = pd.read_csv(TRADES, dtype={"price": str, "qty": str}).head(3_000)
    key = (trades["time_ms"].astype(str) + trades["price"] + trades["is_buyer_maker"].astype(str)).ne(
        (trades["time_ms"].astype(str) + trades["price"] + trades["is_buyer_maker"].astype(str)).shift()
    )
    trades["aggregate"] = key.cumsum()
    groups = trades.groupby("aggregate", sort=True)
    normalizer = BinanceUsdmNormalizer(TICKS)
    payloads = [
        json.dumps(
            {
                "e": "aggTrade",
                "E": int(g["time_ms"].iloc[0]),
                "s": "BTCUSDT",
                "a": int(a),
                "p": g["price"].iloc[0],
                "q": str(sum(Decimal(q) for q in g["qty"])),
                "f": int(g["trade_id"].iloc[0]),
                "l": int(g["trade_id"].iloc[-1]),
                "T": int(g["time_ms"].iloc[0]),
                "m": bool(g["is_buyer_maker"].iloc[0]),
            }
        )
        for a, g in groups
    ]

    # Act
    ticks = [normalizer.parse(p, 1) for p in payloads]

    # Assert
    assert all(isinstance(t, TradeTick) for t in ticks)
    assert len(ticks) < len(trades)
    total = sum(t.quantity for t in ticks)  # type: ignore[union-attr]
    assert total == pytest.approx(float(sum(Decimal(q) for q in trades["qty"])), rel=1e-12)
    assert ticks[0].trade_id == f"a{groups.ngroup().iloc[0] + 1}"  # type: ignore[union-attr]


def test_a_liquidation_order_becomes_a_liquidation_event() -> None:
    # Arrange: the forceOrder example payload of Binance's USD-M stream documentation
    payload = (
        '{"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC",'
        '"q":"0.014","p":"9910","ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}'
    )
    normalizer = BinanceUsdmNormalizer(TICKS)

    # Act
    event = normalizer.parse(payload, 7)

    # Assert
    assert isinstance(event, LiquidationReported)
    assert (event.symbol, event.side, event.price, event.quantity, event.status) == (
        "BTCUSDT",
        OrderSide.SELL,
        9910.0,
        0.014,
        "FILLED",
    )
    assert event.ts_event == 1568014460893 * 1_000_000 and event.ts_init == 7


def test_depth_of_a_symbol_without_tick_size_is_rejected(capture) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    normalizer = BinanceUsdmNormalizer({})
    _, depth = _first(capture, "depthUpdate")

    # Act
    result = normalizer.parse(depth, 1)

    # Assert
    assert result is None and normalizer.rejected == {"no_tick_size": 1}


def test_a_depth_payload_keeps_its_update_ids_and_levels(capture) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    normalizer = BinanceUsdmNormalizer(TICKS)
    _, payload = _first(capture, "depthUpdate")
    data = json.loads(payload)["data"]

    # Act
    diff = normalizer.parse(payload, 1)

    # Assert
    assert isinstance(diff, DepthDiff)
    assert (diff.first_update_id, diff.last_update_id, diff.previous_update_id) == (data["U"], data["u"], data["pu"])
    assert diff.bid_ticks.tolist() == [round(Decimal(p) / Decimal("0.1")) for p, _ in data["b"]]
    assert diff.ask_quantities.tolist() == [float(q) for _, q in data["a"]]
