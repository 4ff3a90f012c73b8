"""UC-1.1's ``BinanceWebSocket().connect_orderbook(symbol)`` against the local Binance playing the real capture."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from local_binance_market import Binance, play_until, started_binance

from keel.api.binance.websocket import BinanceWebSocket
from keel.core.errors import RetryLaterError
from keel.core.messages import BookUpdated, MarketDataEvent, TradeTick
from keel.market_data.book_analyzer import OrderBookAnalyzer


@pytest_asyncio.fixture
async def binance() -> AsyncIterator[Binance]:
    """The local Binance playing the capture (nothing played yet)."""
    started = await started_binance()
    yield started
    await started.server.stop()


@pytest.mark.asyncio
async def test_connect_orderbook_returns_the_synced_book_and_keeps_it_current(binance: Binance) -> None:
    # Arrange
    events: list[MarketDataEvent] = []
    websocket = BinanceWebSocket(binance.url.replace("http", "ws"), binance.url, on_event=events.append)

    # Act
    connecting = asyncio.ensure_future(websocket.connect_orderbook("btcusdt"))
    await binance.market.wait_for_connections(1)
    await play_until(binance, connecting)
    first = await connecting
    await binance.market.play(3000)
    for _ in range(1000):
        if websocket.order_book("BTCUSDT").update_id == binance.market.state.books["BTCUSDT"].last_update_id:
            break
        await asyncio.sleep(0)
    latest = websocket.order_book("BTCUSDT")
    metrics = OrderBookAnalyzer().update(latest)
    health = websocket.health()
    await websocket.close()

    # Assert
    assert isinstance(first, BookUpdated) and first.symbol == "BTCUSDT"
    assert latest.update_id == binance.market.state.books["BTCUSDT"].last_update_id > first.update_id
    venue_top = binance.market.state.books["BTCUSDT"].top(20)
    assert [(float(p), float(q)) for p, q in venue_top[0]] == list(latest.bids)
    assert latest.bids[0][0] < latest.asks[0][0]
    assert metrics.spread > 0
    assert any(isinstance(event, TradeTick) for event in events)
    assert health["BTCUSDT"]["book_states"] == {"BTCUSDT": "synced"} and health["BTCUSDT"]["gaps"] == 0
    assert websocket.symbols == []


@pytest.mark.asyncio
async def test_a_callback_that_raises_is_counted_and_the_book_keeps_coming(binance: Binance) -> None:
    # Arrange
    def fails_on_trades(event: MarketDataEvent) -> None:
        if isinstance(event, TradeTick):
            raise ValueError("the user's handler fails")

    websocket = BinanceWebSocket(binance.url.replace("http", "ws"), binance.url, on_event=fails_on_trades)

    # Act
    connecting = asyncio.ensure_future(websocket.connect_orderbook("BTCUSDT"))
    await binance.market.wait_for_connections(1)
    await play_until(binance, connecting)
    first = await connecting
    await binance.market.play(3000)
    for _ in range(1000):
        if websocket.order_book("BTCUSDT").update_id == binance.market.state.books["BTCUSDT"].last_update_id:
            break
        await asyncio.sleep(0)
    latest = websocket.order_book("BTCUSDT")
    await websocket.close()

    # Assert
    assert websocket.callback_errors > 0
    assert latest.update_id == binance.market.state.books["BTCUSDT"].last_update_id > first.update_id


@pytest.mark.asyncio
async def test_an_unreachable_binance_is_a_retry_later_error_and_nothing_stays_followed() -> None:
    # Arrange: a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    websocket = BinanceWebSocket(f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}")

    # Act
    with pytest.raises(RetryLaterError) as raised:
        await websocket.connect_orderbook("BTCUSDT", timeout_seconds=0.5)

    # Assert
    assert "no synced order book of BTCUSDT" in str(raised.value)
    assert websocket.symbols == []
    with pytest.raises(KeyError, match="connect_orderbook"):
        websocket.order_book("BTCUSDT")


@pytest.mark.asyncio
async def test_a_symbol_without_an_instrument_specification_is_refused_with_the_fix() -> None:
    # Arrange
    websocket = BinanceWebSocket("ws://127.0.0.1:9", "http://127.0.0.1:9")

    # Act
    with pytest.raises(ValueError) as raised:
        await websocket.connect_orderbook("NOTACOINUSDT")

    # Assert
    assert "keel data instruments --download --symbols NOTACOINUSDT" in str(raised.value)
    assert websocket.symbols == []
