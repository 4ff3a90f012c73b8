"""A window of Binance's market over REST (klines and funding settlements), paced by the weight limiter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from keel.api.binance.constants import klines_weight
from keel.api.binance.klines import fetch_funding_rates, fetch_kline_window
from keel.api.binance.local_market import bar_tape
from keel.api.binance.rest import RateLimiter
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_SECOND, SimulatedClock
from keel.market_data.loaders import load_funding
from kit.local_binance import ROOT, ns, start_local_binance

BARS = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
FUNDING = ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz"
START_MS = ns("2025-05-05T00:00:00") // NANOS_PER_MILLI
END_MS = ns("2025-05-07T00:00:00") // NANOS_PER_MILLI


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.asyncio
async def test_funding_rates_of_a_window_are_the_settlements_binance_published(http: aiohttp.ClientSession) -> None:
    # Arrange: two days of BTC bars and funding as the market's past
    tape = bar_tape(BARS, ["BTCUSDT"], FUNDING, START_MS * NANOS_PER_MILLI, END_MS * NANOS_PER_MILLI + 60 * 10**9)
    server, _market = await start_local_binance(tape, ["BTCUSDT"], position=len(tape.messages) - 1)
    frame = load_funding(FUNDING).frame
    rows = frame[(frame["symbol"] == "BTCUSDT") & (frame["time_ms"] > START_MS) & (frame["time_ms"] <= END_MS)]
    try:
        # Act
        settlements = await fetch_funding_rates(http, server.base_url, "BTCUSDT", START_MS + 1, END_MS)
    finally:
        await server.stop()

    # Assert: every settlement of the window, its time and rate as recorded
    assert [s.time_ms for s in settlements] == rows["time_ms"].tolist()
    assert [float(s.rate) for s in settlements] == rows["funding_rate"].tolist()
    assert len(settlements) == 5 and all(s.symbol == "BTCUSDT" and float(s.mark_price) > 0 for s in settlements)


@pytest.mark.asyncio
async def test_a_window_is_fetched_forward_in_pages_paced_under_the_weight_limit(http: aiohttp.ClientSession) -> None:
    # Arrange: Binance allows 15 weight a minute; the limiter stays under 12 on Binance's own count
    tape = bar_tape(BARS, ["BTCUSDT"], None, START_MS * NANOS_PER_MILLI, (END_MS + 60_000) * NANOS_PER_MILLI)
    clock = SimulatedClock(END_MS * NANOS_PER_MILLI)

    async def sleep(seconds: float) -> None:
        clock.advance_to(clock.timestamp_ns() + int(seconds * NANOS_PER_SECOND))

    server, _market = await start_local_binance(tape, ["BTCUSDT"], position=len(tape.messages) - 1, request_clock=clock)
    server.weight_limit = 15
    limiter = RateLimiter(lambda: clock.timestamp_ns() // NANOS_PER_MILLI, sleep, weight_budget=12)
    try:
        # Act
        history = await fetch_kline_window(
            http, server.base_url, "BTCUSDT", "1m", START_MS, END_MS, limiter=limiter, sleep=sleep
        )
    finally:
        await server.stop()

    # Assert: 2880 bars in two pages of weight 10; the second waited for the next minute (no 429, no ban)
    opens = [bar.open_time // NANOS_PER_MILLI for bar in history.bars]
    assert opens == list(range(START_MS, END_MS, 60_000))
    assert history.requests == 2 and history.malformed == 0
    assert limiter.waits == 1 and clock.timestamp_ns() == (END_MS + 60_000) * NANOS_PER_MILLI
    assert server.used_weight == klines_weight(1500) == 10
    assert server.banned_until_ms == 0
