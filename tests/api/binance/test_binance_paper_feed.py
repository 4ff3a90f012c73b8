"""Paper trading on Binance market streams (``paper.feed: binance``) served by the local Binance."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from keel.api.binance.constants import EXCHANGE_INFO_PATH
from keel.api.binance.instrument_check import InstrumentsDifferError
from keel.api.binance.local_market import Tape, bar_tape, capture_tape
from keel.config import KeelConfig, load_config
from keel.core.clock import NANOS_PER_MILLI
from keel.core.instruments import load_instruments
from keel.integration.paper import PaperSession
from kit.local_binance import ROOT, ns, run_until_played, start_local_binance

HOURLY = {
    "trend_following": {"fast_period": 20, "slow_period": 80, "channel_period": 60, "atr_period": 30},
    "mean_reversion": {"lookback": 60, "entry_z": 2.0, "exit_z": 0.5, "stop_z": 4.0, "trend_window": 120},
    "range_trading": {"range_period": 120, "entry_band": 0.15, "min_range_width": 0.004},
}


def binance_paper_config(tmp_path: Path, base_url: str, symbols: list[str]) -> KeelConfig:
    config = load_config("paper", environ={})
    data = config.data.model_copy(update={"symbols": tuple(symbols)})
    strategy = config.strategy.model_validate({**config.strategy.model_dump(), "parameters": HOURLY})
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
async def test_paper_on_binance_klines_trades_and_ends_with_keels_positions_equal_to_the_venues(
    tmp_path: Path,
) -> None:
    # Arrange: six hours of real 1m bars (through the 08:00 funding) played as live klines and mark prices,
    # the connection closed twice on the way
    symbols = ["BTCUSDT", "ETHUSDT"]
    tape = bar_tape(
        ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05",
        symbols,
        ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz",
        ns("2025-05-05T04:00:00"),
        ns("2025-05-05T10:00:00"),
    ).starting_from(time.time_ns() // NANOS_PER_MILLI)
    server, market = await start_local_binance(tape, symbols)
    # Binance's 24-hour close, twice, while positions are open and orders work.
    market.disconnect_at = {900, 1200}
    try:
        session = PaperSession(binance_paper_config(tmp_path, server.base_url, symbols), tmp_path / "run")

        # Act
        final = await run_until_played(session, market)

        # Assert
        venue = session.pipeline.simulated_exchange()
        kept = {s: p.quantity for s, p in session.pipeline.positions.positions.items() if p.quantity}
        held = {report.symbol: report.quantity for report in await venue.positions() if report.quantity}
        assert final["stop_reason"] == "tape played"
        assert final["bars"] == 2 * 6 * 60
        assert final["handler_errors"] == 0
        assert final["fills"] > 0
        assert kept == held
        assert final["market_stream"]["funding_events"] == 2
        assert final["market_stream"]["reconnects"] == 2
        first_drop_ns = tape.messages[900].ts_ms * NANOS_PER_MILLI
        fills = await venue.account_trades()
        assert any(f.ts_event < first_drop_ns for f in fills) and any(f.ts_event > first_drop_ns for f in fills)
        assert final["market_stream"]["malformed"] == 0
        # The local Binance's venue took the prices it streamed, as keel's paper venue did.
        assert server.exchange.cursor == venue.cursor
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_paper_on_the_real_depth_capture_gets_books_trades_and_bars(tmp_path: Path) -> None:
    # Arrange: the raw BTCUSDT capture (depth, trades, book tickers), played live
    whole = capture_tape(ROOT / "data" / "orderbook" / "raw" / "binance_usdm_btcusdt_20240808_ws.jsonl.gz")
    closed = [n for n, m in enumerate(whole.messages) if "kline" in m.stream and m.payload["k"]["x"]]
    # Up to the first closed kline: about a minute of the market.
    tape = Tape(whole.messages[: closed[0] + 1], whole.snapshots).starting_from(time.time_ns() // NANOS_PER_MILLI)
    server, market = await start_local_binance(tape, ["BTCUSDT"])
    try:
        session = PaperSession(binance_paper_config(tmp_path, server.base_url, ["BTCUSDT"]), tmp_path / "run")

        # Act
        final = await run_until_played(session, market)

        # Assert
        stream = final["market_stream"]
        assert final["handler_errors"] == 0
        assert stream["snapshots"] >= 1 and stream["books"] > 500, stream
        assert stream["gaps"] == 0 and stream["malformed"] == 0
        assert final["bars"] == 1, stream
        assert final["events"] == stream["events"]
        assert server.exchange.cursor == session.pipeline.simulated_exchange().cursor
    finally:
        await server.stop()


def test_keel_run_feed_binance_takes_the_stream_urls_from_the_environment(tmp_path: Path) -> None:
    # Arrange: a local Binance on its own loop, playing two hours of real bars once keel connects
    symbols = ["BTCUSDT", "ETHUSDT"]
    tape = bar_tape(
        ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05",
        symbols,
        ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz",
        ns("2025-05-05T04:00:00"),
        ns("2025-05-05T06:00:00"),
    ).starting_from(time.time_ns() // NANOS_PER_MILLI)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server, market = asyncio.run_coroutine_threadsafe(start_local_binance(tape, symbols), loop).result(60)
    playing = asyncio.run_coroutine_threadsafe(market.run(), loop)
    environment = {
        **os.environ,
        "KEEL_RUN__OUTPUT_DIR": str(tmp_path),
        "KEEL_BINANCE__REST_URL": server.base_url,
        "KEEL_BINANCE__WS_URL": server.base_url.replace("http", "ws"),
    }
    command = [sys.executable, "-m", "keel.cli", "run", "--mode", "paper", "--feed", "binance", "--no-web"]
    command += ["--symbols", ",".join(symbols), "--duration", "12", "--fresh"]

    try:
        # Act
        completed = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=180)

        # Assert
        assert completed.returncode == 0, completed.stderr
        assert "Binance market streams at ws://127.0.0.1" in completed.stdout
        assert re.search(r"\| streams \d+ messages, 0 reconnects$", completed.stdout, re.MULTILINE)
        state = json.loads(next(tmp_path.glob("paper-*/state.json")).read_text())
        assert state["status"]["bars"] == 2 * 2 * 60
        assert state["status"]["market_stream"]["connections"] == 1
        assert market.finished.is_set()
    finally:
        playing.cancel()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)


def test_keel_run_on_binance_streams_it_cannot_reach_says_so_in_its_status_line(tmp_path: Path) -> None:
    # Arrange: nothing listens on port 1
    environment = {
        **os.environ,
        "KEEL_RUN__OUTPUT_DIR": str(tmp_path),
        "KEEL_BINANCE__REST_URL": "http://127.0.0.1:1",
        "KEEL_BINANCE__WS_URL": "ws://127.0.0.1:1",
        "KEEL_PAPER__STATUS_INTERVAL_SECONDS": "1",
    }
    command = [sys.executable, "-m", "keel.cli", "run", "--mode", "paper", "--feed", "binance", "--no-web"]
    command += ["--symbols", "BTCUSDT", "--duration", "4", "--fresh"]

    # Act
    completed = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)

    # Assert: the status line said only ACTIVE with no bars, the reconnects went unseen
    assert completed.returncode == 0, completed.stderr
    assert re.search(r"\| streams 0 messages, [1-9]\d* reconnects, not connected: ", completed.stdout)


@pytest.mark.asyncio
async def test_a_restarted_paper_session_on_binance_streams_recovers_its_account(tmp_path: Path) -> None:
    # Arrange: six hours of real bars, the first three played to one session, the rest to the next
    symbols = ["BTCUSDT", "ETHUSDT"]
    whole = bar_tape(
        ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05",
        symbols,
        ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz",
        ns("2025-05-05T04:00:00"),
        ns("2025-05-05T10:00:00"),
    ).starting_from(time.time_ns() // NANOS_PER_MILLI)
    half = len(whole.messages) // 2
    config_of = binance_paper_config
    server, market = await start_local_binance(Tape(whole.messages[:half]), symbols)
    try:
        first = PaperSession(config_of(tmp_path, server.base_url, symbols), tmp_path / "first")
        ended = await run_until_played(first, market)
    finally:
        await server.stop()
    server, market = await start_local_binance(Tape(whole.messages[half:]), symbols)
    try:
        # Act
        second = PaperSession(config_of(tmp_path, server.base_url, symbols), tmp_path / "second")
        recovered = {s: p.quantity for s, p in second.pipeline.positions.positions.items() if p.quantity}
        final = await run_until_played(second, market)

        # Assert
        held_before = {s: p.quantity for s, p in first.pipeline.positions.positions.items() if p.quantity}
        assert ended["fills"] > 0 and held_before
        assert final["recovered"] is True
        assert recovered == held_before
        assert final["reconciliation"]["mismatches"] == []
        venue = second.pipeline.simulated_exchange()
        kept = {s: p.quantity for s, p in second.pipeline.positions.positions.items() if p.quantity}
        assert kept == {r.symbol: r.quantity for r in await venue.positions() if r.quantity}
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_paper_on_binance_whose_filters_differ_from_the_configured_ones_stops_before_trading(
    tmp_path: Path,
) -> None:
    # Arrange: this Binance publishes BTCUSDT's min notional and MARKET maximum otherwise than config/instruments.yaml
    configured = load_instruments(ROOT / "config" / "instruments.yaml")
    assert (configured["BTCUSDT"].min_notional, configured["BTCUSDT"].market_max_quantity) == (100, 1000)
    changed = msgspec.structs.replace(
        configured["BTCUSDT"], min_notional=Decimal("5"), market_max_quantity=Decimal("120")
    )
    tape = bar_tape(
        ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05",
        ["BTCUSDT"],
        ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz",
        ns("2025-05-05T04:00:00"),
        ns("2025-05-05T04:10:00"),
    ).starting_from(time.time_ns() // NANOS_PER_MILLI)
    server, _market = await start_local_binance(tape, ["BTCUSDT"], instruments={**configured, "BTCUSDT": changed})
    session = PaperSession(binance_paper_config(tmp_path, server.base_url, ["BTCUSDT"]), tmp_path / "run")

    # Act
    try:
        with pytest.raises(InstrumentsDifferError) as raised:
            await session.run()
    finally:
        await server.stop()

    # Assert: nothing traded; the error names both filters with both values and the refresh command
    message = str(raised.value)
    assert "BTCUSDT min_notional (MIN_NOTIONAL.notional): configured 100, Binance 5" in message
    assert "BTCUSDT market_max_quantity (MARKET_LOT_SIZE.maxQty): configured 1000, Binance 120" in message
    assert "keel data instruments --download --symbols BTCUSDT" in message
    assert session.pipeline.positions.fills == 0 and session.bars == 0
    assert not session.account_lock.held


@pytest.mark.asyncio
async def test_paper_on_binance_whose_exchange_info_does_not_answer_trades_and_reports_the_instruments_unchecked(
    tmp_path: Path,
) -> None:
    # Arrange: ten minutes of bars; this Binance answers its exchangeInfo with HTTP 503 at the start
    tape = bar_tape(
        ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05",
        ["BTCUSDT"],
        ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz",
        ns("2025-05-05T04:00:00"),
        ns("2025-05-05T04:10:00"),
    ).starting_from(time.time_ns() // NANOS_PER_MILLI)
    server, market = await start_local_binance(tape, ["BTCUSDT"])
    server.answer_errors[EXCHANGE_INFO_PATH] = [(503, -1000, "Service Unavailable")]
    session = PaperSession(binance_paper_config(tmp_path, server.base_url, ["BTCUSDT"]), tmp_path / "run")

    # Act
    try:
        final = await run_until_played(session, market)
    finally:
        await server.stop()

    # Assert: the session ran the whole tape; its status says the instruments were not checked, and why
    assert final["stop_reason"] == "tape played" and final["bars"] == 10
    venue = session.orchestrator.get_system_status().venue
    assert venue is not None and venue["instruments_checked"] is False
    assert "HTTP 503" in venue["instruments_unchecked_reason"]
    assert server.answer_errors[EXCHANGE_INFO_PATH] == []
