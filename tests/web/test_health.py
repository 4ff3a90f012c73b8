"""Liveness and readiness: separate probes, ready only once the session runs after recovery."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
from fakes import FakeClock
from fastapi.testclient import TestClient

from conftest import TOKEN, running_session, session_config
from keel.integration.paper import PaperSession
from keel.web import SnapshotPublisher, SnapshotService, create_app


def test_a_session_not_yet_recovered_is_live_but_not_ready(tmp_path: Path) -> None:
    session = PaperSession(session_config(tmp_path), tmp_path)
    app = create_app(session.orchestrator, api_token=TOKEN, audit=session.orchestrator.record_operator_action)

    async def scenario() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
            return {path: await client.get(path) for path in ("/health/live", "/health/ready", "/health")}

    # Act
    responses = asyncio.run(scenario())
    session.database.dispose()

    # Assert
    assert responses["/health/live"].status_code == 200
    assert responses["/health/ready"].status_code == 503
    assert responses["/health/ready"].json()["ready"] is False
    assert responses["/health"].status_code == 503


def test_a_running_session_is_live_and_ready(tmp_path: Path) -> None:
    async def scenario() -> dict[str, httpx.Response]:
        async with running_session(tmp_path, min_bars=5) as (_, client):
            return {path: await client.get(path) for path in ("/health/live", "/health/ready", "/health")}

    # Act
    responses = asyncio.run(scenario())

    # Assert
    assert {path: response.status_code for path, response in responses.items()} == {
        "/health/live": 200,
        "/health/ready": 200,
        "/health": 200,
    }
    assert responses["/health"].json()["ready"] is True


def test_readiness_fails_and_the_dashboard_says_so_when_the_latest_snapshot_is_too_old(tmp_path: Path) -> None:
    # Arrange: a running system's snapshot, then a trading loop that publishes no other (stuck)
    session = PaperSession(session_config(tmp_path), tmp_path)
    publisher = SnapshotPublisher(session.orchestrator)
    running = publisher.latest.status.model_copy(update={"running": True})
    publisher.latest = dataclasses.replace(publisher.latest, status=running)
    clock = FakeClock(publisher.latest.published_monotonic + 1.0)
    trading_loop = asyncio.new_event_loop()
    service = SnapshotService(publisher, trading_loop)
    app = create_app(service, api_token=TOKEN, audit=lambda *_: None, max_snapshot_age_seconds=10.0, clock=clock)
    client = TestClient(app)
    fresh = client.get("/health/ready")
    with client.websocket_connect("/ws/dashboard") as socket:
        fresh_dashboard = socket.receive_json()

    # Act
    clock.advance(29.5)
    stale = client.get("/health/ready")
    combined = client.get("/health")
    with client.websocket_connect("/ws/dashboard") as socket:
        stale_dashboard = socket.receive_json()
    session.database.dispose()
    trading_loop.close()

    # Assert
    assert fresh.status_code == 200 and fresh.json()["ready"] is True
    assert (fresh_dashboard["snapshot_age_seconds"], fresh_dashboard["stale"]) == (1.0, False)
    assert stale.status_code == 503 and stale.json()["ready"] is False
    assert stale.json()["snapshot_age_seconds"] == 30.5
    assert any("30.5 s old" in reason and "10 s" in reason for reason in stale.json()["reasons"])
    assert combined.status_code == 503 and combined.json()["ready"] is False
    assert (stale_dashboard["snapshot_age_seconds"], stale_dashboard["stale"]) == (30.5, True)
