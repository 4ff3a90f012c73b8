"""The threaded web server over published snapshots: operator API load does not slow the replay."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from conftest import TOKEN, bearer, session_config
from keel.integration.paper import PaperSession
from keel.web import SnapshotPublisher, SnapshotService, ThreadedServer, create_app

LOAD_SECONDS = 4.0
LONG_LOAD_SECONDS = 30.0
POLLERS = 100
DASHBOARDS = 50

# Runs in its own process, so the load generator's own work does not share the session's interpreter.
LOAD = """
import asyncio, json, sys, time
import httpx, websockets

base, pollers, dashboards, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
counts = {"status": 0, "dashboard": 0, "errors": 0}

async def poll(client, until):
    while time.monotonic() < until:
        try:
            answered = (await client.get(base + "/api/v1/status")).status_code == 200
        except httpx.TransportError:  # a keep-alive connection the server closed as it was reused: ask again
            counts["errors"] += 1
            continue
        counts["status"] += answered

async def watch(until):
    async with websockets.connect(base.replace("http", "ws") + "/ws/dashboard", max_size=None) as socket:
        while time.monotonic() < until:
            await asyncio.wait_for(socket.recv(), timeout=5)
            counts["dashboard"] += 1

async def main():
    until = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=pollers)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        await asyncio.gather(*[poll(client, until) for _ in range(pollers)], *[watch(until) for _ in range(dashboards)])
    print(json.dumps(counts))

asyncio.run(main())
"""


@asynccontextmanager
async def served_session(run_dir: Path, days: int = 1) -> AsyncIterator[tuple[PaperSession, SnapshotPublisher, str]]:
    """A paper session replaying ``days`` of data at a fixed pace, served from its own thread over snapshots."""
    config = session_config(run_dir, speed=3000.0)
    if days != 1:
        assert config.data.start is not None
        end = config.data.start + timedelta(days=days)
        config = config.model_copy(update={"data": config.data.model_copy(update={"end": end})})
    session = PaperSession(config, run_dir)
    publisher = SnapshotPublisher(
        session.orchestrator, extra_metrics=lambda: {"event_loop_lag_seconds": session.loop_lag.lag_seconds}
    )
    app = create_app(
        SnapshotService(publisher, asyncio.get_running_loop()),
        api_token=TOKEN,
        audit=session.orchestrator.record_operator_action,
        dashboard_interval_seconds=0.1,
        read_requests_per_second=100_000,
        max_websockets_per_client=1000,
    )
    server = ThreadedServer(app, "127.0.0.1", 0)
    server.start()
    running = asyncio.create_task(session.run())
    publishing = asyncio.create_task(publisher.run())
    while session.bars < 2 and not running.done():
        await asyncio.sleep(0.01)
    try:
        yield session, publisher, f"http://127.0.0.1:{server.port}"
    finally:
        session.request_stop("test finished")
        await running
        publishing.cancel()
        await asyncio.to_thread(server.stop)


async def replay_pace(
    run_dir: Path, *, loaded: bool, seconds: float = LOAD_SECONDS, days: int = 1
) -> tuple[float, dict[str, int]]:
    """Bars replayed per wall second over ``seconds`` (less the clients' connecting), with or without API load."""
    async with served_session(run_dir, days) as (session, _, base):
        load = None
        if loaded:
            load = await asyncio.create_subprocess_exec(
                sys.executable, "-c", LOAD, base, str(POLLERS), str(DASHBOARDS), str(seconds),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await asyncio.sleep(0.5)  # let the clients connect before measuring
        first_bars, started = session.bars, time.monotonic()
        await asyncio.sleep(seconds - 1.0)
        pace = (session.bars - first_bars) / (time.monotonic() - started)
        counts = {"status": 0, "dashboard": 0, "errors": 0}
        if load is not None:
            output, _ = await load.communicate()
            counts = json.loads(output)
        return pace, counts


def measure_load_isolation(tmp_path: Path, seconds: float, days: int = 1) -> tuple[float, float, dict[str, int]]:
    """Return the replay's pace without and with the API load, and the load's answered requests and frames.

    Prints the measurement as one JSON line.
    """
    unloaded, _ = asyncio.run(replay_pace(tmp_path / "quiet", loaded=False, seconds=seconds, days=days))
    loaded, counts = asyncio.run(replay_pace(tmp_path / "busy", loaded=True, seconds=seconds, days=days))
    measurement = {
        "load_isolation": {
            "seconds": seconds,
            "pollers": POLLERS,
            "dashboards": DASHBOARDS,
            "unloaded_bars_per_second": round(unloaded, 1),
            "loaded_bars_per_second": round(loaded, 1),
            "pace_kept": round(loaded / unloaded, 3),
            "status_responses": counts["status"],
            "dashboard_frames": counts["dashboard"],
            "status_transport_errors": counts["errors"],
        }
    }
    print(json.dumps(measurement))
    return unloaded, loaded, counts


def test_load_isolation_replay_keeps_its_pace_under_api_load(tmp_path: Path) -> None:
    # Arrange, Act: the replay's pace with nobody asking, then while 100 clients poll /status and 50 dashboards
    # are open
    unloaded, loaded, counts = measure_load_isolation(tmp_path, LOAD_SECONDS)

    # Assert
    assert counts["status"] >= POLLERS and counts["dashboard"] >= DASHBOARDS, counts
    assert loaded >= 0.9 * unloaded, (loaded, unloaded, counts)


@pytest.mark.slow
def test_load_isolation_replay_keeps_its_pace_under_30_seconds_of_api_load(tmp_path: Path) -> None:
    # Arrange, Act: as above for the 30 s, over two days of data (one ends in under 30 s at this pace)
    unloaded, loaded, counts = measure_load_isolation(tmp_path, LONG_LOAD_SECONDS, days=2)

    # Assert
    assert counts["status"] >= POLLERS and counts["dashboard"] >= DASHBOARDS, counts
    assert loaded >= 0.9 * unloaded, (loaded, unloaded, counts)


def test_commands_sent_to_the_threaded_server_run_on_the_trading_loop(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict, dict, str, str]:
        async with served_session(tmp_path) as (session, _, base):
            async with httpx.AsyncClient(base_url=base) as client:
                stop = await client.post("/api/v1/emergency-stop", json={"reason": "drill"}, headers=bearer())
                status = (await client.get("/api/v1/status")).json()
                metrics = (await client.get("/metrics")).text
            return stop.json(), status, session.orchestrator.risk()["trading_state"], metrics

    # Act
    stopped, status, trading_state, metrics = asyncio.run(scenario())

    # Assert
    assert stopped["trading_state"] == "HALTED" and trading_state == "HALTED"
    assert status["trading_state"] == "HALTED"
    assert "keel_event_loop_lag_seconds " in metrics and "keel_bus_overflow_total " in metrics
