"""Live trading against a local Binance on 127.0.0.1: confirmation, REDUCING until reconciled, restart, secrets.

The local Binance matches with the simulated exchange, which sees the same
recorded market events as keel (the session's replayed feed): every bar
keel's bus carries is handed to it too, on a clock of its own advanced to
the bar's time. Signing, rate limits and the user-data stream run on the
wall clock, as against Binance.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from keel.api.binance.local_binance import LocalBinance
from keel.api.simulated_exchange import SimulatedExchange
from keel.config import KeelConfig, config_to_dict, load_config
from keel.core.clock import LiveClock, SimulatedClock
from keel.core.errors import ConfigurationError, OperatorActionRequiredError
from keel.core.instruments import load_instruments
from keel.core.messages import BarClosed, FundingRateUpdated, MarketDataEvent, TradingStateChanged
from keel.integration import TradingOrchestrator
from keel.integration.live import BinanceVenue, live_endpoints
from keel.integration.paper import RECONCILING, PaperSession
from keel.integration.pipeline import build_exchange
from keel.persistence import Database, Journal
from keel.web.metrics import render_metrics

REPO = Path(__file__).resolve().parents[2]
KEY = "live-test-api-key-3f9a1c"
SECRET = "live-test-api-secret-77d0e2b4"
ACCOUNT_BALANCE = Decimal("25000")
SECRETS = {"KEEL_BINANCE_API_KEY": KEY, "KEEL_BINANCE_API_SECRET": SECRET}


def live_config(output_dir: Path, rest_url: str, start: str, end: str, secrets: dict[str, str] = SECRETS) -> KeelConfig:
    """Two symbols of recorded bars replayed fast, a quick strategy, the local Binance's URLs."""
    sections: dict[str, dict[str, Any]] = {
        "live": {"confirm": True},
        "binance": {"rest_url": rest_url, "ws_url": rest_url.replace("http://", "ws://")},
        "data": {"symbols": ["BTCUSDT", "ETHUSDT"], "start": start, "end": end},
        "strategy": {"name": "moving_average_cross", "fast_period": 5, "slow_period": 20, "warmup_bars": 60},
        "paper": {"speed": 6_000.0, "feed": "replay"},
        "run": {"output_dir": str(output_dir)},
        "web": {"enabled": False},
    }
    return load_config("live", environ=dict(secrets), overrides=sections)


class LocalVenue:
    """A local Binance whose simulated exchange follows the market events of a session's bus."""

    def __init__(self, config: KeelConfig, start_ns: int) -> None:
        instruments = load_instruments(config.exchange.instruments)
        self.clock = SimulatedClock(start_ns)
        symbols = {s: instruments[s] for s in config.data.symbols}
        # The account holds another amount than the configured initial balance: keel opens on the account's.
        self.exchange: SimulatedExchange = build_exchange(config, symbols, self.clock, ACCOUNT_BALANCE)
        self.server = LocalBinance(self.exchange, LiveClock(), KEY, SECRET)

    def follow(self, session: PaperSession) -> None:
        bus = session.pipeline.bus
        bus.subscribe(BarClosed, self.on_event, name="local_binance.bars")
        bus.subscribe(FundingRateUpdated, self.on_event, name="local_binance.funding")

    def on_event(self, event: MarketDataEvent) -> None:
        self.clock.advance_to(max(self.clock.timestamp_ns(), event.ts_event))
        self.server.on_market_event(event)

    async def positions(self) -> dict[str, Decimal]:
        return {p.symbol: p.quantity for p in await self.exchange.positions()}


def keel_positions(session: PaperSession) -> dict[str, Decimal]:
    book = session.pipeline.positions.positions
    return {symbol: position.quantity for symbol, position in book.items() if position.quantity != 0}


async def run_until(session: PaperSession, done: Callable[[], bool], reason: str) -> dict[str, Any]:
    task = asyncio.create_task(session.run())
    while not done() and not task.done():
        await asyncio.sleep(0.01)
    session.request_stop(reason)
    return await task


async def start_local(tmp_path: Path) -> tuple[LocalVenue, str]:
    probe = live_config(tmp_path, "http://127.0.0.1:1", "2025-05-05T00:00:00Z", "2025-05-05T12:00:00Z")
    first_bar = 1_746_403_200_000_000_000  # 2025-05-05T00:00Z
    venue = LocalVenue(probe, first_bar)
    return venue, await venue.server.start()


def test_live_mode_is_refused_without_the_confirmation() -> None:
    # Arrange / Act
    result = subprocess.run(
        [sys.executable, "-m", "keel.cli", "run", "--mode", "live", "--no-web"],
        cwd=REPO,
        env={**os.environ, **SECRETS},
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Assert: exit 2, one line naming the flag and the key
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--i-understand-this-trades-real-money" in lines[0] and "live.confirm" in lines[0]


def test_from_config_live_needs_the_confirmation_too() -> None:
    # Arrange
    environment = dict(SECRETS)

    # Act / Assert
    try:
        load_config("live", environ=environment)
    except ConfigurationError as error:
        assert error.key == "live.confirm"
    else:
        raise AssertionError("live mode loaded without confirmation")
    try:
        TradingOrchestrator.from_config(mode="live")
    except ConfigurationError as error:
        assert error.key in ("live.confirm", "secrets.binance_api_key")
    else:
        raise AssertionError("from_config(mode='live') built a live system without confirmation")


def test_live_session_starts_reducing_goes_active_after_reconciliation_trades_and_recovers_after_a_restart(
    tmp_path: Path, capfd: Any
) -> None:
    async def scenario() -> dict[str, Any]:
        local, url = await start_local(tmp_path)
        try:
            # Act 1: a fresh live session trades until it has fills and an open position, then stops
            config = live_config(tmp_path, url, "2025-05-05T00:00:00Z", "2025-05-05T12:00:00Z")
            first = PaperSession(config, tmp_path / "live-1", venue=BinanceVenue(config))
            local.follow(first)
            states_seen: list[TradingStateChanged] = first.pipeline.recorder.trading_states
            running_status: list[Any] = []

            def traded() -> bool:
                done = first.pipeline.positions.fills >= 4 and bool(keel_positions(first))
                if done:
                    running_status.append(first.orchestrator.get_system_status())
                return done

            final_1 = await run_until(first, traded, "operator")
            venue_after_1 = await local.positions()
            last_bar = max(f.ts_event for f in first.pipeline.recorder.fills)
            metrics_text = render_metrics(first.orchestrator.metrics().model_dump())[0].decode()

            # Act 2: restart on the same account, feed resuming later (the live market moved on)
            resume_at = "2025-05-05T12:00:00Z"
            config_2 = live_config(tmp_path, url, resume_at, "2025-05-05T18:00:00Z")
            second = PaperSession(config_2, tmp_path / "live-2", venue=BinanceVenue(config_2))
            local.follow(second)
            restored = keel_positions(second)
            final_2 = await run_until(second, lambda: second.orchestrator.running, "operator")
            venue_after_2 = await local.positions()
            return {
                "first": first,
                "second": second,
                "final_1": final_1,
                "final_2": final_2,
                "states": [(s.state.value, s.reason) for s in states_seen],
                "venue_after_1": venue_after_1,
                "venue_after_2": venue_after_2,
                "restored": restored,
                "last_fill": last_bar,
                "metrics": metrics_text,
                "status": running_status[0],
                "repr": repr(first.venue) + repr(first.venue.client) + repr(config),  # type: ignore[attr-defined]
                "config": str(config_to_dict(config)),
            }
        finally:
            await local.server.stop()

    # Act
    result = asyncio.run(scenario())

    # Assert: REDUCING first, ACTIVE once reconciled, then it traded
    states = result["states"]
    assert states[0] == ("REDUCING", RECONCILING)
    assert states[1] == ("ACTIVE", "live: reconciled with the venue")
    first: PaperSession = result["first"]
    assert result["final_1"]["fills"] >= 4 and result["final_1"]["handler_errors"] == 0
    assert result["final_1"]["trading_state"] == "ACTIVE"
    # Positions equal the venue's after the stop, and after the restart's reconciliation
    assert keel_positions(first) == result["venue_after_1"] != {}
    second: PaperSession = result["second"]
    assert second.plan.recover and second.plan.session == first.plan.session
    assert result["final_2"]["reconciliation"]["mismatches"] == []
    assert keel_positions(second) == result["venue_after_2"] == result["venue_after_1"]
    assert second.pipeline.risk.trading_state.value == "ACTIVE"
    # The opening capital is the account's wallet at the session's first start, kept across the restart
    assert first.pipeline.positions.initial_capital == ACCOUNT_BALANCE
    assert second.pipeline.positions.initial_capital == ACCOUNT_BALANCE
    # The connection is in the status while it runs: the stream, the measured clock, no condition open
    venue = result["status"].venue
    assert venue["user_data"] == "stream" and venue["conditions"] == {} and venue["banned_until_ms"] is None
    assert venue["exchange_server_time_offset_seconds"] is not None
    assert result["status"].mode == "live" and result["status"].health == "HEALTHY"
    # The clock offset and the rate-limit use are exported
    assert "keel_exchange_server_time_offset_seconds " in result["metrics"]
    assert 'keel_exchange_rate_limit_usage_ratio{limit="request_weight_1m"}' in result["metrics"]
    # Secrets are nowhere: repr, configuration dump, metrics, journal database, run files, process output
    outputs = [result["repr"], result["config"], result["metrics"], result["status"].model_dump_json()]
    outputs += [path.read_bytes().decode("latin-1") for path in tmp_path.rglob("*") if path.is_file()]
    captured = capfd.readouterr()
    outputs += [captured.out, captured.err]
    for text in outputs:
        assert KEY not in text and SECRET not in text


async def wait_for(condition: Callable[[], bool | Awaitable[bool]], attempts: int = 2_000) -> None:
    for _ in range(attempts):
        value = condition()
        if value if isinstance(value, bool) else await value:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


def test_keys_binance_refuses_stop_the_live_session_cleanly_before_it_trades(tmp_path: Path) -> None:
    async def scenario() -> tuple[BaseException | None, PaperSession]:
        local, url = await start_local(tmp_path)
        wrong = {**SECRETS, "KEEL_BINANCE_API_SECRET": "not-the-secret"}
        config = live_config(tmp_path, url, "2025-05-05T00:00:00Z", "2025-05-05T12:00:00Z", wrong)
        session = PaperSession(config, tmp_path / "live", venue=BinanceVenue(config))
        try:
            await session.run()
        except OperatorActionRequiredError as error:
            return error, session
        finally:
            await local.server.stop()
        return None, session

    # Act
    error, session = asyncio.run(scenario())

    # Assert: refused, nothing traded, the account released for the next run
    assert error is not None
    assert session.pipeline.positions.fills == 0 and session.bars == 0
    assert not session.account_lock.held


def test_testnet_and_mainnet_endpoints_of_a_live_run() -> None:
    # Arrange
    testnet = load_config("live", environ=dict(SECRETS), overrides={"live": {"confirm": True}})
    flagged = load_config(
        "live",
        environ=dict(SECRETS),
        overrides={"live": {"confirm": True, "testnet": False}, "binance": {"testnet": True}},
    )
    mainnet = load_config("live", environ=dict(SECRETS), overrides={"live": {"confirm": True, "testnet": False}})

    # Act / Assert: live.testnet (config/live.yaml's default) or --testnet (binance.testnet) reach the testnet
    assert live_endpoints(testnet) == ("https://testnet.binancefuture.com", "wss://stream.binancefuture.com")
    assert live_endpoints(flagged) == live_endpoints(testnet)
    assert live_endpoints(mainnet) == ("https://fapi.binance.com", "wss://fstream.binance.com")


def test_a_live_run_on_the_replayed_feed_is_refused_against_a_remote_binance() -> None:
    # Arrange
    config = load_config(
        "live", environ=dict(SECRETS), overrides={"live": {"confirm": True}, "paper": {"feed": "replay"}}
    )

    # Act / Assert
    try:
        BinanceVenue(config)
    except ConfigurationError as error:
        assert error.key == "binance.rest_url"
    else:
        raise AssertionError("a live venue on the replayed feed was built against the testnet")
    assert BinanceVenue(config, live_feed=True).rest_url == "https://testnet.binancefuture.com"


def test_keel_run_mode_live_against_a_local_binance_goes_active_and_stops_cleanly(tmp_path: Path) -> None:
    # Arrange: a local Binance served from a thread of its own
    ready: list[str] = []
    loop = asyncio.new_event_loop()
    probe = live_config(tmp_path, "http://127.0.0.1:1", "2025-05-05T00:00:00Z", "2025-05-05T12:00:00Z")
    local = LocalVenue(probe, 1_746_403_200_000_000_000)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        ready.append(loop.run_until_complete(local.server.start()))
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    while not ready:
        time.sleep(0.01)
    environment = {
        **os.environ,
        **SECRETS,
        "KEEL_RUN__OUTPUT_DIR": str(tmp_path),
        "KEEL_BINANCE__REST_URL": ready[0],
        "KEEL_BINANCE__WS_URL": ready[0].replace("http://", "ws://"),
        "KEEL_DATA__START": "2025-05-05",
    }
    command = [sys.executable, "-m", "keel.cli", "run", "--mode", "live", "--i-understand-this-trades-real-money"]
    command += ["--no-web", "--feed", "replay", "--symbols", "BTCUSDT", "--speed", "600", "--duration", "4"]

    # Act
    try:
        result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    # Assert: ran, REDUCING until reconciled, then ACTIVE; the keys appear nowhere in its output
    assert result.returncode == 0, result.stderr
    assert "keel live run (fresh session)" in result.stdout
    journal = Journal(Database(f"sqlite:///{tmp_path / 'keel.db'}"))
    states = [(m.state.value, m.reason) for _, m in journal.entries_of(TradingStateChanged)]  # type: ignore[attr-defined]
    assert states[:2] == [("REDUCING", RECONCILING), ("ACTIVE", "live: reconciled with the venue")]
    assert KEY not in result.stdout + result.stderr and SECRET not in result.stdout + result.stderr


def test_a_live_run_whose_binance_does_not_answer_stops_when_its_duration_elapses(tmp_path: Path) -> None:
    # Arrange: nothing listens on port 1; keel keeps trying to reach it
    environment = {
        **os.environ,
        **SECRETS,
        "KEEL_RUN__OUTPUT_DIR": str(tmp_path),
        "KEEL_BINANCE__REST_URL": "http://127.0.0.1:1",
        "KEEL_BINANCE__WS_URL": "ws://127.0.0.1:1",
    }
    command = [sys.executable, "-m", "keel.cli", "run", "--mode", "live", "--i-understand-this-trades-real-money"]
    command += ["--no-web", "--feed", "replay", "--symbols", "BTCUSDT", "--duration", "2"]

    # Act
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)

    # Assert: it waited for the venue until a signal came, whatever the duration
    assert result.returncode == 0, result.stderr
    assert "stopped (duration of 2 s elapsed before the venue opened)" in result.stdout


async def opened(orchestrator: TradingOrchestrator) -> None:
    """Return once the live session is announced and reconciliation has moved it out of REDUCING."""
    while (
        not orchestrator.running
        or orchestrator.session is None
        or orchestrator.get_system_status().trading_state == "REDUCING"
    ):
        await asyncio.sleep(0.01)


def test_from_config_live_runs_against_a_local_binance_and_answers_for_the_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: the keys in the environment, as keel run reads them
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)

    async def scenario() -> tuple[Any, Any]:
        local, url = await start_local(tmp_path)
        try:
            sections = live_config(tmp_path, url, "2025-05-05T00:00:00Z", "2025-05-05T12:00:00Z")
            orchestrator = TradingOrchestrator.from_config(
                mode="live",
                live={"confirm": True},
                binance=sections.binance.model_dump(),
                data={"symbols": ["BTCUSDT"], "start": "2025-05-05T00:00:00Z", "end": "2025-05-05T12:00:00Z"},
                run={"output_dir": str(tmp_path)},
                paper={"feed": "replay"},
            )
            async with orchestrator:
                # The session is announced before reconciliation's verdict moves it out of REDUCING.
                await asyncio.wait_for(opened(orchestrator), timeout=60)
                status = orchestrator.get_system_status()
                metrics = orchestrator.metrics()
            return status, metrics
        finally:
            await local.server.stop()

    # Act
    status, metrics = asyncio.run(scenario())

    # Assert
    assert status.mode == "live" and status.trading_state == "ACTIVE"
    assert status.session is not None and status.session["reconciliation"]["mismatches"] == []
    assert metrics.exchange_rate_limit_usage["request_weight_1m"] > 0
