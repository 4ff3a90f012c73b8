"""Fixtures: a local Binance on 127.0.0.1 and the adapter wired to it, on one simulated clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest_asyncio

from keel.api.binance.adapter import BinanceAdapter
from keel.api.binance.auth import ServerClock
from keel.api.binance.local_binance import LocalBinance
from keel.api.binance.rest import BinanceRestClient, RateLimiter
from keel.api.brackets import load_leverage_schedule
from keel.api.simulated_exchange import SimulatedExchange
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, SimulatedClock
from keel.core.instruments import load_instruments
from keel.core.messages import BarClosed, Event
from keel.market_data.loaders import load_ohlcv

ROOT = Path(__file__).resolve().parents[3]
API_KEY = "local-key"
SECRET = "local-secret"


class Text:
    """A secret stand-in with ``reveal``, as ``keel.config.Secret`` has."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value


def real_bars(symbol: str, count: int) -> list[BarClosed]:
    """The first ``count`` real 1m bars of ``symbol`` in May 2025."""
    path = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05" / f"{symbol}_1m.csv.gz"
    frame = load_ohlcv(path).frame.head(count)
    bars = []
    for row in frame.itertuples(index=False):
        start = int(row.open_time_ms) * NANOS_PER_MILLI
        bars.append(
            BarClosed(
                symbol=symbol,
                interval="1m",
                open_time=start,
                open=float(row.open),
                high=float(row.high),
                low=float(row.low),
                close=float(row.close),
                volume=float(row.volume),
                ts_event=start + NANOS_PER_MINUTE,
                ts_init=start + NANOS_PER_MINUTE,
            )
        )
    return bars


@dataclass
class Venue:
    """The local Binance, the adapter on it, the shared clock and the adapter's reports."""

    server: LocalBinance
    adapter: BinanceAdapter
    client: BinanceRestClient
    clock: SimulatedClock
    skew_ms: list[int]
    reports: list[Event]
    bars: list[BarClosed]

    def feed(self, bar: BarClosed) -> None:
        self.clock.advance_to(max(self.clock.timestamp_ns(), bar.ts_event))
        self.server.exchange.on_bar(bar)


async def make_venue(session: aiohttp.ClientSession, weight_limit: int = 2_400, client_budget: int = 1_920) -> Venue:
    """Build a local Binance fed one real BTCUSDT bar, and an adapter pointed at it."""
    bars = real_bars("BTCUSDT", 3)
    clock = SimulatedClock(bars[0].open_time)
    exchange = SimulatedExchange(
        load_instruments(ROOT / "config" / "instruments.yaml"),
        clock,
        initial_balance=Decimal("100000"),
        schedule=load_leverage_schedule(ROOT / "config" / "leverage_brackets.yaml"),
    )
    server = LocalBinance(exchange, clock, API_KEY, SECRET, weight_limit=weight_limit)
    base_url = await server.start()
    skew_ms = [0]

    def local_ms() -> int:
        return clock.timestamp_ns() // NANOS_PER_MILLI + skew_ms[0]

    async def sleep(seconds: float) -> None:
        clock.advance_to(clock.timestamp_ns() + int(seconds * 1_000_000_000))

    limiter = RateLimiter(lambda: clock.timestamp_ns() // NANOS_PER_MILLI, sleep, weight_budget=client_budget)
    client = BinanceRestClient(base_url, Text(API_KEY), Text(SECRET), ServerClock(local_ms), limiter, session)
    adapter = BinanceAdapter(client, clock.timestamp_ns, sleep)
    reports: list[Event] = []
    adapter.set_report_handler(reports.append)
    venue = Venue(server, adapter, client, clock, skew_ms, reports, bars)
    venue.feed(bars[0])
    return venue


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest_asyncio.fixture
async def venue(session: aiohttp.ClientSession) -> AsyncIterator[Venue]:
    made = await make_venue(session)
    yield made
    await made.server.stop()
