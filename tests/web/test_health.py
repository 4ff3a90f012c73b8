"""Liveness and readiness: separate probes, ready only once the session runs after recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from conftest import TOKEN, running_session, session_config
from keel.integration.paper import PaperSession
from keel.web import create_app


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
