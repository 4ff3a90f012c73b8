"""UC-4.1's ``BinanceExecutor(paper_trading=True).submit_order(order)``: paper orders on the local Binance's market."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio
from local_binance_market import Binance, play_until, started_binance

from keel.api.binance.executor import BinanceExecutor


@pytest_asyncio.fixture
async def binance() -> AsyncIterator[Binance]:
    """The local Binance playing the capture (nothing played yet)."""
    started = await started_binance()
    yield started
    await started.server.stop()


async def executor_on(binance: Binance) -> BinanceExecutor:
    """A paper executor on the local Binance, its BTCUSDT book synced."""
    executor = BinanceExecutor(
        paper_trading=True, initial_balance="10000", ws_url=binance.url.replace("http", "ws"), rest_url=binance.url
    )
    connecting = asyncio.ensure_future(executor.websocket.connect_orderbook("BTCUSDT"))
    await binance.market.wait_for_connections(1)
    await play_until(binance, connecting)
    await connecting
    return executor


@pytest.mark.asyncio
async def test_a_paper_market_order_fills_against_the_live_book_and_moves_the_paper_account(binance: Binance) -> None:
    # Arrange
    executor = await executor_on(binance)
    book = executor.websocket.order_book("BTCUSDT")

    # Act
    result = await executor.submit_order({"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.010"})
    positions = await executor.positions()
    balance = await executor.balance()
    await executor.close()

    # Assert
    assert (result["status"], result.filled_quantity) == ("FILLED", Decimal("0.010"))
    assert result.average_price is not None and result.average_price >= Decimal(str(book.asks[0][0]))
    assert result.commission > 0 and result.code is None
    assert positions == {"BTCUSDT": Decimal("0.010")}
    assert balance == Decimal("10000") - result.commission


@pytest.mark.asyncio
async def test_a_paper_limit_order_rests_until_canceled_and_a_bad_one_is_rejected_as_binance_would(
    binance: Binance,
) -> None:
    # Arrange
    executor = await executor_on(binance)
    # Half the best bid, on BTCUSDT's price grid (half of a bid ending in an odd tenth is off it, and rejected).
    tick = executor.instruments["BTCUSDT"].tick_size
    far_below = (
        Decimal(str(executor.websocket.order_book("BTCUSDT").bids[0][0])) / 2 / tick
    ).to_integral_value() * tick

    # Act
    resting = await executor.submit_order(
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.010", "price": str(far_below)}
    )
    canceled = await executor.cancel_order(resting.client_order_id)
    off_grid = await executor.submit_order({"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.0001"})
    await executor.close()

    # Assert
    assert resting.status == "NEW" and resting.filled_quantity == 0
    assert canceled.status == "CANCELED"
    assert off_grid.status == "REJECTED" and off_grid.code is not None and off_grid.reason
    assert await executor.positions() == {}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("order", "error", "message"),
    [
        ({"symbol": "BTCUSDT", "side": "BUY", "quantity": 0.01}, TypeError, "Decimal('0.01')"),
        ({"symbol": "BTCUSDT", "quantity": "0.01"}, ValueError, "missing ['side']"),
        ({"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01", "leverage": 3}, ValueError, "['leverage']"),
        ({"symbol": "BTCUSDT", "side": "BUY", "quantity": "NaN"}, ValueError, "not a finite number"),
    ],
)
async def test_an_order_that_is_not_one_is_refused_before_anything_is_sent(
    order: dict[str, object], error: type[Exception], message: str
) -> None:
    # Arrange
    executor = BinanceExecutor(ws_url="ws://127.0.0.1:9", rest_url="http://127.0.0.1:9")

    # Act
    with pytest.raises(error) as raised:
        await executor.submit_order(order)

    # Assert
    assert message in str(raised.value)
    assert executor.websocket.symbols == []


def test_live_orders_are_refused_because_they_go_through_the_risk_layer() -> None:
    # Act
    with pytest.raises(ValueError) as raised:
        BinanceExecutor(paper_trading=False)

    # Assert
    assert "risk layer" in str(raised.value) and "--mode live" in str(raised.value)
