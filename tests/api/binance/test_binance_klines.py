"""Warm-up klines over REST (``GET /fapi/v1/klines``) from the local Binance, and paper on streams starting warm."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from keel.api.binance.constants import klines_weight
from keel.api.binance.klines import fetch_klines
from keel.api.binance.local_binance import LocalBinance
from keel.api.binance.local_market import Tape, TapeMessage, bar_tape
from keel.config import KeelConfig, load_config
from keel.core.clock import NANOS_PER_MILLI, SimulatedClock
from keel.core.messages import BarClosed, SignalGenerated
from keel.integration.paper import PaperSession
from kit.local_binance import ROOT, ns, run_until_played, start_local_binance

BARS = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
HOURLY = {
    "trend_following": {"fast_period": 20, "slow_period": 80, "channel_period": 60, "atr_period": 30},
    "mean_reversion": {"lookback": 60, "entry_z": 2.0, "exit_z": 0.5, "stop_z": 4.0, "trend_window": 120},
    "range_trading": {"range_period": 120, "entry_band": 0.15, "min_range_width": 0.004},
}


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def btc_tape() -> Tape:
    """36 hours of real BTCUSDT 1m bars as closed klines (one message per bar)."""
    return bar_tape(BARS, ["BTCUSDT"], None, ns("2025-05-05T00:00:00"), ns("2025-05-06T12:00:00"))


@pytest.mark.asyncio
async def test_fetch_klines_pages_back_1500_at_a_time_and_returns_the_last_closed_bars_in_order(
    http: aiohttp.ClientSession,
) -> None:
    # Arrange: 2,100 bars of the market's past; 2,000 wanted (two pages)
    tape = btc_tape()
    server, _market = await start_local_binance(tape, ["BTCUSDT"], position=2100)
    end_ms = tape.messages[2100].ts_ms - 1
    try:
        # Act
        history = await fetch_klines(http, server.base_url, "BTCUSDT", "1m", 2000, end_ms)

        # Assert
        expected = [m.payload["k"] for m in tape.messages[100:2100]]
        assert history.requests == 2
        assert history.malformed == 0
        assert [b.open_time // NANOS_PER_MILLI for b in history.bars] == [k["t"] for k in expected]
        assert [b.close for b in history.bars] == [float(k["c"]) for k in expected]
        assert all(isinstance(b, BarClosed) and b.interval == "1m" for b in history.bars)
        # Binance's weight of each page, by its limit.
        assert server.used_weight == klines_weight(1500) + klines_weight(501)
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_fetch_klines_leaves_out_the_kline_still_open_at_now(http: aiohttp.ClientSession) -> None:
    # Arrange: "now" is half-way through the last kline the local Binance has
    tape = btc_tape()
    server, _market = await start_local_binance(tape, ["BTCUSDT"], position=2100)
    end_ms = tape.messages[2099].ts_ms - 30_000
    try:
        # Act
        history = await fetch_klines(http, server.base_url, "BTCUSDT", "1m", 10, end_ms)

        # Assert
        assert [b.open_time // NANOS_PER_MILLI for b in history.bars] == [
            m.payload["k"]["t"] for m in tape.messages[2089:2099]
        ]
        assert all(b.ts_event <= end_ms * NANOS_PER_MILLI for b in history.bars)
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_fetch_klines_counts_and_skips_malformed_rows(http: aiohttp.ClientSession) -> None:
    # Arrange: two of the last 52 klines broken (a price that is no number, high below low)
    whole = btc_tape()
    messages = list(whole.messages[:300])
    for index, change in ((280, {"h": "n/a"}), (290, {"h": "1.0", "l": "2.0"})):
        message = messages[index]
        payload = {**message.payload, "k": {**message.payload["k"], **change}}
        messages[index] = TapeMessage(message.ts_ms, message.stream, payload)
    tape = Tape(messages)
    server, _market = await start_local_binance(tape, ["BTCUSDT"], position=299)
    try:
        # Act
        history = await fetch_klines(http, server.base_url, "BTCUSDT", "1m", 50, tape.messages[299].ts_ms - 1)

        # Assert
        opened = [b.open_time // NANOS_PER_MILLI for b in history.bars]
        assert history.malformed == 2 and history.requests == 2
        assert len(opened) == 50
        assert messages[280].payload["k"]["t"] not in opened and messages[290].payload["k"]["t"] not in opened
        assert opened == sorted(opened) and opened[-1] == messages[298].payload["k"]["t"]
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_fetch_klines_waits_out_a_429_as_retry_after_says_and_gets_every_page(
    http: aiohttp.ClientSession,
) -> None:
    # Arrange: a weight budget that takes the first page (weight 10) but not the second (weight 5) in one minute
    tape = btc_tape()
    server, _market = await start_local_binance(tape, ["BTCUSDT"], position=2100)
    server.weight_limit = 12
    clock = server.clock
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        assert isinstance(clock, SimulatedClock)
        clock.advance_to(clock.timestamp_ns() + int(seconds * 1_000_000_000))

    try:
        # Act
        history = await fetch_klines(
            http, server.base_url, "BTCUSDT", "1m", 2000, tape.messages[2100].ts_ms - 1, sleep=sleep
        )

        # Assert
        assert len(history.bars) == 2000 and history.requests == 2
        assert server.responses.get(429) == 1 and 418 not in server.responses
        assert len(waits) == 1 and 0 < waits[0] <= 60
    finally:
        await server.stop()


def paper_config(tmp_path: Path, base_url: str, symbols: list[str], warmup_bars: int) -> KeelConfig:
    config = load_config("paper", environ={})
    # The tapes carry no mark prices, so no funding: a held position crossing a UTC funding time is not a gap.
    data = config.data.model_copy(update={"symbols": tuple(symbols), "funding": None})
    strategy = config.strategy.model_validate(
        {**config.strategy.model_dump(), "parameters": HOURLY, "warmup_bars": warmup_bars}
    )
    binance = config.binance.model_copy(update={"rest_url": base_url, "ws_url": base_url.replace("http", "ws")})
    paper = config.paper.model_copy(
        update={"feed": "binance", "status_interval_seconds": 0.05, "duration_seconds": 300}
    )
    run = config.run.model_copy(update={"output_dir": tmp_path})
    web = config.web.model_copy(update={"enabled": False})
    return config.model_copy(
        update={"data": data, "strategy": strategy, "binance": binance, "paper": paper, "run": run, "web": web}
    )


@pytest.mark.asyncio
async def test_paper_on_binance_streams_is_warm_at_the_first_live_bar_without_look_ahead(tmp_path: Path) -> None:
    # Arrange: four hours of real bars; the first three are the market's past (closed before now), the last is live
    symbols = ["BTCUSDT", "ETHUSDT"]
    whole = bar_tape(BARS, symbols, None, ns("2025-05-04T22:00:00"), ns("2025-05-05T02:00:00"))
    position = sum(1 for m in whole.messages if m.ts_ms <= ns("2025-05-05T01:00:00") // NANOS_PER_MILLI)
    now_ms = time.time_ns() // NANOS_PER_MILLI
    shifted = whole.shifted((now_ms - whole.messages[position - 1].ts_ms) // 60_000 * 60_000).messages
    first_live_ns = shifted[position].ts_ms * NANOS_PER_MILLI
    # The stream sends each symbol's last warm-up kline again (it closed while keel was fetching).
    tape = Tape([*shifted[:position], *shifted[position - 2 : position], *shifted[position:]])
    server, market = await start_local_binance(tape, symbols, position=position)
    first_live: dict[str, int] = {}
    signals: list[SignalGenerated] = []
    try:
        session = PaperSession(paper_config(tmp_path, server.base_url, symbols, 180), tmp_path / "run")
        manager = session.pipeline.strategy.manager

        def on_bar(bar: BarClosed) -> None:
            if bar.symbol not in first_live:
                book = manager.get_system_status()["symbols"].get(bar.symbol, {})
                first_live[bar.symbol] = book.get("bars", 0)

        session.pipeline.bus.subscribe(BarClosed, on_bar, name="test.first-live-bar")
        session.pipeline.bus.subscribe(SignalGenerated, signals.append, name="test.signals")

        # Act
        final = await run_until_played(session, market)

        # Assert
        needed = max(strategy.warmup_bars for strategy in manager.strategies)
        assert final["warmup"] == {"bars": 2 * 180, "malformed": 0, "requests": 2, "overlap_dropped": 2, "error": ""}
        # No look-ahead: every warm-up bar closed before the session's first live bar.
        assert set(session.warmed_until) == set(symbols)
        assert max(session.warmed_until.values()) < first_live_ns
        # The repeated klines were dropped: each live bar reached the strategies once.
        assert final["bars"] == 2 * 60 and final["handler_errors"] == 0
        # Warm at the first live bar: the strategies had their history and said what they think at once.
        assert all(bars >= max(180, needed) for bars in first_live.values()), first_live
        assert {s.symbol for s in signals if s.ts_event == first_live_ns} == set(symbols)
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_paper_on_binance_streams_without_warm_up_klines_starts_cold_and_says_why(tmp_path: Path) -> None:
    # Arrange: the streams are served, but the REST URL answers no klines (a venue without market data)
    symbols = ["BTCUSDT"]
    tape = bar_tape(BARS, symbols, None, ns("2025-05-05T00:00:00"), ns("2025-05-05T00:30:00"))
    tape = tape.starting_from(time.time_ns() // NANOS_PER_MILLI)
    server, market = await start_local_binance(tape, symbols)
    bare = LocalBinance(server.exchange, server.clock, "key", "secret")
    await bare.start()
    try:
        config = paper_config(tmp_path, server.base_url, symbols, 180)
        config = config.model_copy(update={"binance": config.binance.model_copy(update={"rest_url": bare.base_url})})
        session = PaperSession(config, tmp_path / "run")

        # Act
        final = await run_until_played(session, market)

        # Assert
        assert final["warmup"]["bars"] == 0 and "404" in final["warmup"]["error"]
        assert session.warmed_until == {}
        assert final["bars"] == 30 and final["handler_errors"] == 0
    finally:
        await bare.stop()
        await server.stop()
