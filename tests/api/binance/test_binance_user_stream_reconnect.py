from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest

from conftest import Venue, real_bars
from keel.api.binance.user_stream import ListenKeyKeeper, UserEventMapper, UserStream
from keel.core.messages import Event, OrderFilled, SubmitOrder
from keel.core.orders import OrderSide, OrderType


async def _until(done: Callable[[], bool]) -> None:
    # Waits for socket I/O on 127.0.0.1 to land; simulated time does not move.
    async def poll() -> None:
        while not done():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout=20)


@pytest.mark.asyncio
async def test_binance_fault_reconnects_with_fills_in_flight_miss_and_repeat_no_fill(venue: Venue) -> None:
    received: list[Event] = []
    keeper = ListenKeyKeeper(venue.client, venue.adapter._sleep)

    async def catch_up(since_ns: int) -> list[OrderFilled]:
        return await venue.adapter.account_trades("BTCUSDT", since_ns)

    stream = UserStream(
        venue.server.base_url.replace("http://", "ws://"),
        keeper,
        UserEventMapper(),
        received.append,
        catch_up,
        venue.clock.timestamp_ns,
        venue.adapter._sleep,
    )
    running = True
    task = asyncio.create_task(stream.run(lambda: running))
    await _until(lambda: bool(venue.server.sockets))
    bars = real_bars("BTCUSDT", 162)[1:]
    reconnects = 0

    for n, bar in enumerate(bars[:160]):
        now = venue.clock.timestamp_ns()
        side = OrderSide.BUY if n % 2 == 0 else OrderSide.SELL
        await venue.adapter.submit_order(
            SubmitOrder(
                client_order_id=f"f-{n}",
                symbol="BTCUSDT",
                side=side,
                order_type=OrderType.MARKET,
                quantity=Decimal("0.010"),
                ts_event=now,
                ts_init=now,
            )
        )
        if n % 30 == 29:
            await keeper.keep_alive()
        if n % 4 != 3:  # the fill of this order happens while the stream is down
            await venue.server.drop_streams()
            reconnects += 1
        venue.feed(bar)
        await venue.server.publish()
        if n % 4 != 3:
            # Connected on both ends: the client counts its connection before the server registers it,
            # and a drop in between would close nothing.
            await _until(lambda c=reconnects: stream.connections > c and bool(venue.server.sockets))

    venue_fills = await venue.server.exchange.account_trades("BTCUSDT")
    await venue.adapter.balances()  # any request publishes what is pending
    await _until(lambda: len([e for e in received if isinstance(e, OrderFilled)]) >= len(venue_fills))
    running = False
    await venue.server.drop_streams()
    task.cancel()

    got = Counter(e.trade_id for e in received if isinstance(e, OrderFilled))
    assert len(venue_fills) == 160 and reconnects == 120
    assert set(got) == {f.trade_id for f in venue_fills}
    assert max(got.values()) == 1
    assert stream.connections == reconnects + 1
    assert stream.caught_up_fills > 0


@pytest.mark.asyncio
async def test_a_connection_dropped_in_the_handshake_is_tried_again(venue: Venue) -> None:
    # Arrange: Binance closes the first two connections before answering the upgrade
    venue.server.drop_handshakes = 2
    keeper = ListenKeyKeeper(venue.client, venue.adapter._sleep)

    async def catch_up(since_ns: int) -> list[OrderFilled]:
        return await venue.adapter.account_trades("BTCUSDT", since_ns)

    stream = UserStream(
        venue.server.base_url.replace("http://", "ws://"),
        keeper,
        UserEventMapper(),
        lambda _event: None,
        catch_up,
        venue.clock.timestamp_ns,
        venue.adapter._sleep,
    )
    running = True

    # Act
    task = asyncio.create_task(stream.run(lambda: running))
    await _until(lambda: stream.connected or task.done())
    running = False
    await venue.server.drop_streams()
    await asyncio.wait_for(task, timeout=20)

    # Assert: the stream connected on the third attempt; the run did not end on the dropped handshakes
    assert stream.connections == 1
    assert venue.server.drop_handshakes == 0
