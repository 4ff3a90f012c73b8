"""The Binance adapter as a conformance-suite market: adapter -> local Binance -> simulated exchange.

The local Binance listens on 127.0.0.1 and matches with a simulated exchange
fed the same recorded events as the simulated venues. Reports are what the
adapter produced from REST answers and the user-data WebSocket stream. The
market runs its own event loop; every call drains the stream before returning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
import msgspec
from venue_harness import Harness, money, real_instruments

from keel.api.binance.adapter import BinanceAdapter
from keel.api.binance.auth import ServerClock
from keel.api.binance.local_binance import LocalBinance
from keel.api.binance.rest import BinanceRestClient, RateLimiter
from keel.api.binance.user_stream import ListenKeyKeeper, UserStream
from keel.core.clock import NANOS_PER_MILLI
from keel.core.messages import BarClosed, BookUpdated, Event, MarketDataEvent
from keel.core.ports import ExchangePort

T = TypeVar("T")
KEY, SECRET = "conformance-key", "conformance-secret"


class _Text:
    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value


class BinanceMarket:
    """The Binance adapter against a local Binance replaying recorded events in batches."""

    def __init__(
        self, events: list[MarketDataEvent], batch: int, warm_up: int, max_open_orders: int, **settings: Any
    ) -> None:
        instruments = dict(real_instruments())
        instruments["BTCUSDT"] = msgspec.structs.replace(instruments["BTCUSDT"], max_open_orders=max_open_orders)
        settings.setdefault("initial_balance", Decimal("1000000"))
        self._harness = Harness(events[0].ts_event, instruments=instruments, **settings)
        self._loop = asyncio.new_event_loop()
        self.reports: list[Event] = []
        self.symbol = "BTCUSDT"
        self._events = events
        self._batch = batch
        self._next = 0
        self._bid = self._ask = Decimal(0)
        self._received = 0
        self._loop.run_until_complete(self._start())
        for _ in range(warm_up):
            self.step()

    async def _start(self) -> None:
        clock = self._harness.clock
        self.server = LocalBinance(self._harness.exchange, clock, KEY, SECRET)
        base_url = await self.server.start()
        self._session = aiohttp.ClientSession()

        def venue_ms() -> int:
            return clock.timestamp_ns() // NANOS_PER_MILLI

        async def sleep(seconds: float) -> None:
            clock.advance_to(clock.timestamp_ns() + int(seconds * 1_000_000_000))

        client = BinanceRestClient(
            base_url, _Text(KEY), _Text(SECRET), ServerClock(venue_ms), RateLimiter(venue_ms, sleep), self._session
        )
        self.adapter = BinanceAdapter(client, clock.timestamp_ns, sleep)
        self.adapter.set_report_handler(self.reports.append)
        self.port: ExchangePort = self.adapter
        await self.adapter.exchange_info()

        def on_stream(event: Event) -> None:
            self.reports.append(event)

        async def catch_up(since_ns: int) -> list[Any]:
            return await self.adapter.account_trades(self.symbol, since_ns)

        self._stream = UserStream(
            base_url.replace("http://", "ws://"),
            ListenKeyKeeper(client, sleep),
            self.adapter.events,
            on_stream,
            catch_up,
            clock.timestamp_ns,
            sleep,
            funding=self.adapter.funding_payments,
        )
        self._stream_task = asyncio.ensure_future(self._stream.run(lambda: True))
        # Connected once its REST catch-up is done: no bar moves the clock while a request is in flight.
        while not self._stream.connected:
            await asyncio.sleep(0.001)

    async def _drain(self) -> None:
        await self.server.publish()
        while self._stream.messages < self.server.events_sent:
            await asyncio.sleep(0.0005)

    def step(self) -> bool:
        if self._next >= len(self._events):
            return False
        batch = self._events[self._next : self._next + self._batch]
        self._next += self._batch
        for event in batch:
            self._harness.feed(event)
            if isinstance(event, BarClosed):
                self._bid = self._ask = money(event.close)
                self.adapter.set_mark_price(self.symbol, money(event.close))
            elif isinstance(event, BookUpdated):
                self._bid, self._ask = money(event.bids[0][0]), money(event.asks[0][0])
        self._loop.run_until_complete(self._drain())
        return True

    def touch(self) -> tuple[Decimal, Decimal]:
        return self._bid, self._ask

    def now(self) -> int:
        return self._harness.clock.timestamp_ns()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        async def call() -> T:
            result = await coroutine
            await self._drain()
            return result

        return self._loop.run_until_complete(call())

    def close(self) -> None:
        async def stop() -> None:
            self._stream_task.cancel()
            await self.server.drop_streams()
            await self._session.close()
            await self.server.stop()

        self._loop.run_until_complete(stop())
        self._loop.close()
