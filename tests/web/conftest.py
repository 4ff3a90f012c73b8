"""A real paper session over the bundled data, served by the real app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from keel.config import KeelConfig, load_config
from keel.integration.paper import PaperSession
from keel.web import create_app

TOKEN = "test-token-0123456789"


def session_config(output_dir: Path, speed: float = 3000.0) -> KeelConfig:
    """Two symbols, one day, a fast moving-average cross; state and journal under ``output_dir``."""
    config = load_config("paper", environ={})
    data = config.data.model_validate(
        {
            **config.data.model_dump(),
            "symbols": ("BTCUSDT", "ETHUSDT"),
            "start": "2025-05-05T00:00:00Z",
            "end": "2025-05-06T00:00:00Z",
        }
    )
    strategy = config.strategy.model_copy(update={"name": "moving_average_cross", "fast_period": 3, "slow_period": 8})
    paper = config.paper.model_copy(update={"speed": speed, "status_interval_seconds": 3600.0})
    run = config.run.model_copy(update={"output_dir": output_dir})
    return config.model_copy(update={"data": data, "strategy": strategy, "paper": paper, "run": run})


@asynccontextmanager
async def running_session(
    run_dir: Path, *, token: str | None = TOKEN, min_bars: int = 40, speed: float = 3000.0
) -> AsyncIterator[tuple[PaperSession, httpx.AsyncClient]]:
    """Start a paper session and the app over it; stop both on exit."""
    session = PaperSession(session_config(run_dir, speed), run_dir)
    app = create_app(
        session.orchestrator,
        api_token=token,
        audit=session.orchestrator.record_operator_action,
        dashboard_interval_seconds=0.05,
    )
    task = asyncio.create_task(session.run())
    while session.bars < min_bars and not task.done():
        await asyncio.sleep(0.01)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
        try:
            yield session, client
        finally:
            session.request_stop("test finished")
            await task


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
