"""The Binance market-data feed against the local Binance replaying the real capture, with faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import pytest
import pytest_asyncio
import websockets

from keel.api.binance.local_binance import LocalBinance
from keel.api.binance.local_market import LocalMarket, Tape, capture_tape
from keel.api.binance.streams import (
    BinanceMarketStream,
    combined_stream_url,
    connection_groups,
    stream_names,
)
from keel.api.brackets import load_leverage_schedule
from keel.api.simulated_exchange import SimulatedExchange
from keel.core.clock import SimulatedClock
from keel.core.instruments import load_instruments
from keel.core.messages import BarClosed, BookUpdated, MarketDataEvent, TradeTick

ROOT = Path(__file__).resolve().parents[3]
CAPTURE = ROOT / "data" / "orderbook" / "raw" / "binance_usdm_btcusdt_20240808_ws.jsonl.gz"
TICKS = {"BTCUSDT": Decimal("0.1")}


@lru_cache(maxsize=1)
def real_capture() -> Tape:
    return capture_tape(CAPTURE)


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Yield to the loop until ``condition()`` holds (the sockets are real: delivery takes loop turns)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0)


@dataclass
class Market:
    """The local Binance playing the capture, and keel's market stream connected to it."""

    market: LocalMarket
    server: LocalBinance
    stream: BinanceMarketStream
    events: list[MarketDataEvent]
    waits: list[float]
    task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.task = asyncio.create_task(self.stream.run())
        await self.market.wait_for_connections(len(self.stream.groups))

    async def play(self, count: int) -> None:
        """Play ``count`` messages and wait until keel received every one sent."""
        before = self.stream.statistics.messages
        sent_before = self.market.diffs_withheld
        await self.market.play(count)
        withheld = self.market.diffs_withheld - sent_before
        await eventually(lambda: self.stream.statistics.messages >= before + count - withheld)

    async def synced(self) -> None:
        await eventually(
            lambda: self.stream.state.books["BTCUSDT"].is_synced and not self.stream.state.wanted_snapshots
        )

    def books_agree(self) -> bool:
        return self.stream.state.books["BTCUSDT"].top(50) == self.market.state.books["BTCUSDT"].top(50)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.server.stop()


async def make_market(**options: object) -> Market:
    instruments = load_instruments(ROOT / "config" / "instruments.yaml")
    tape = real_capture()
    clock = SimulatedClock(tape.messages[0].ts_ms * 1_000_000)
    exchange = SimulatedExchange(
        instruments,
        clock,
        initial_balance=Decimal("100000"),
        schedule=load_leverage_schedule(ROOT / "config" / "leverage_brackets.yaml"),
    )
    market = LocalMarket(tape, TICKS, exchange, clock)
    server = LocalBinance(exchange, clock, "key", "secret", market=market)
    base_url = await server.start()
    events: list[MarketDataEvent] = []
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    stream = BinanceMarketStream(
        base_url.replace("http", "ws"),
        base_url,
        TICKS,
        events.append,
        sleep=no_wait,
        **options,  # type: ignore[arg-type]
    )
    return Market(market, server, stream, events, waits)


@pytest_asyncio.fixture
async def market() -> AsyncIterator[Market]:
    made = await make_market()
    await made.connect()
    yield made
    await made.close()


def of(events: list[MarketDataEvent], kind: type[MarketDataEvent]) -> list[MarketDataEvent]:
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.asyncio
async def test_book_syncs_from_a_snapshot_and_the_diffs_to_the_venues_book(market: Market) -> None:
    # Act: the first 3,000 real messages (depth, trades, book tickers)
    await market.play(3000)
    await market.synced()

    # Assert
    statistics = market.stream.statistics
    assert statistics.snapshots == 1
    assert statistics.gaps == statistics.resyncs == statistics.malformed == 0
    assert market.books_agree()
    books = of(market.events, BookUpdated)
    assert books and books[-1].update_id == market.market.state.books["BTCUSDT"].last_update_id
    assert len(of(market.events, TradeTick)) == sum(1 for m in real_capture().messages[:3000] if "aggTrade" in m.stream)


@pytest.mark.asyncio
async def test_a_sequence_gap_in_the_diffs_resyncs_from_a_new_snapshot(market: Market) -> None:
    # Arrange
    await market.play(2000)
    await market.synced()

    # Act: one 100 ms diff never reaches keel
    market.market.gap_diffs = 1
    await market.play(2000)
    await market.synced()

    # Assert
    statistics = market.stream.statistics
    assert statistics.gaps == 1
    assert statistics.resyncs == 1
    assert statistics.snapshots == 2
    assert market.books_agree()


@pytest.mark.asyncio
async def test_a_connection_dropped_mid_message_reconnects_and_the_book_and_trades_go_on(market: Market) -> None:
    # Arrange
    await market.play(2000)
    await market.synced()
    trades_before = len(of(market.events, TradeTick))

    # Act: the next message is cut mid-frame; what is played while keel reconnects is lost to it
    market.market.drop_mid_message()
    await market.market.play(1)
    await eventually(lambda: market.stream.statistics.reconnects == 1)
    await market.market.wait_for_connections(1)
    await market.play(2000)
    await market.synced()

    # Assert
    statistics = market.stream.statistics
    assert statistics.connections == 2
    assert statistics.resyncs == 1
    assert len(market.waits) == 1 and 0 <= market.waits[0] <= 0.5
    assert market.books_agree()
    trades = of(market.events, TradeTick)
    assert len(trades) > trades_before
    ids = [int(t.trade_id[1:]) for t in trades]
    assert ids == sorted(set(ids))


@pytest.mark.asyncio
async def test_a_connection_dropped_in_the_handshake_is_tried_again() -> None:
    # Arrange: Binance closes the first two connections before answering the upgrade
    made = await make_market()
    made.market.drop_handshakes = 2
    try:
        # Act
        await asyncio.wait_for(made.connect(), timeout=20)
        await made.play(2000)
        await made.synced()

        # Assert: connected on the third attempt, and the book follows the venue's
        assert made.stream.statistics.reconnects == 2
        assert made.stream.statistics.connections == 1
        assert made.books_agree()
    finally:
        await made.close()


@pytest.mark.asyncio
async def test_the_24h_close_by_the_server_is_a_reconnect_and_a_resync(market: Market) -> None:
    # Arrange
    await market.play(2000)
    await market.synced()

    # Act
    await market.market.force_disconnect()
    await eventually(lambda: market.stream.statistics.reconnects == 1)
    await market.market.wait_for_connections(1)
    await market.play(1500)
    await market.synced()

    # Assert
    assert market.stream.statistics.resyncs == 1
    assert market.books_agree()


@pytest.mark.asyncio
async def test_a_connection_near_its_24h_limit_is_replaced_before_the_old_one_closes() -> None:
    # Arrange: a connection lifetime of 0.2 s stands for 23.5 h
    made = await make_market(max_connection_seconds=0.2)
    try:
        await made.connect()
        await made.play(2000)
        await made.synced()

        # Act
        await eventually(lambda: made.stream.statistics.proactive_reconnects >= 1)
        await made.market.wait_for_connections(1)
        await made.play(1500)
        await made.synced()

        # Assert: no drop, so no resync; the book still follows the venue's
        statistics = made.stream.statistics
        assert statistics.reconnects == 0
        assert statistics.resyncs == 0
        assert statistics.connections >= 2
        assert made.books_agree()
    finally:
        await made.close()


@pytest.mark.asyncio
async def test_malformed_messages_are_counted_and_skipped(market: Market) -> None:
    # Arrange
    await market.play(500)
    events_before = len(market.events)
    bad_kline = {
        "stream": "btcusdt@kline_1m",
        "data": {
            "e": "kline",
            "E": 1,
            "s": "BTCUSDT",
            "k": {"t": 0, "T": 59_999, "i": "1m", "o": "1", "c": "NaN", "h": "2", "l": "1", "v": "1", "x": True},
        },
    }

    # Act
    messages = market.stream.statistics.messages
    await market.market.inject('{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade",')
    await market.market.inject(json.dumps(bad_kline))
    await eventually(lambda: market.stream.statistics.messages == messages + 2)

    # Assert
    assert market.stream.statistics.malformed == 2
    assert len(market.events) == events_before
    await market.play(500)
    assert len(market.events) > events_before


@pytest.mark.asyncio
async def test_only_closed_klines_become_bars(market: Market) -> None:
    # Arrange: the capture up to its second closed kline (open kline updates between)
    messages = real_capture().messages
    end = [n for n, m in enumerate(messages) if "kline" in m.stream and m.payload["k"]["x"]][1] + 1

    # Act
    await market.play(end)

    # Assert
    klines = [m for m in messages[:end] if "kline" in m.stream]
    closed = [m for m in klines if m.payload["k"]["x"]]
    bars = of(market.events, BarClosed)
    assert len(closed) < len(klines)
    assert [bar.open_time // 1_000_000 for bar in bars] == [m.payload["k"]["t"] for m in closed]  # type: ignore[attr-defined]


def test_more_than_200_streams_are_split_into_connections_of_200() -> None:
    # Arrange
    symbols = [f"S{n}USDT" for n in range(41)]

    # Act
    groups = connection_groups(stream_names(symbols))

    # Assert
    assert [len(group) for group in groups] == [200, 5]
    assert [name for group in groups for name in group] == stream_names(symbols)


@pytest.mark.asyncio
async def test_the_local_binance_refuses_201_streams_and_keel_opens_two_connections() -> None:
    # Arrange: 41 symbols of 5 streams each
    symbols = {f"S{n}USDT": Decimal("0.1") for n in range(40)} | TICKS
    made = await make_market()
    made.stream = BinanceMarketStream(
        made.stream.ws_url, made.stream.rest_url, symbols, made.events.append, sleep=made.stream._sleep
    )
    try:
        # Act
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(combined_stream_url(made.stream.ws_url, stream_names(symbols)[:201])):
                pass
        await made.connect()

        # Assert
        assert made.market.refused_connections == 1
        assert made.market.connections_made == 2
        assert sorted(len(s.streams) for s in made.market.subscribers) == [5, 200]
    finally:
        await made.close()
