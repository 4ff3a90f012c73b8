"""Serve the web app inside the trading process's own asyncio loop.

uvicorn normally installs its own SIGINT/SIGTERM handlers; here the trading
process owns the signals (a signal stops the session cleanly, which then stops
the server), so :class:`EmbeddedServer` leaves them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that does not touch signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave the process's signal handlers as they are."""
        yield

    @property
    def port(self) -> int:
        """Return the port actually bound (useful with port 0)."""
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.config.port


async def start_server(app: FastAPI, host: str, port: int) -> tuple[EmbeddedServer, asyncio.Task[None]]:
    """Start serving ``app``; return the server and its task once it is listening.

    Raises
    ------
    OSError
        If the address cannot be bound (for example the port is taken).
    """
    server = EmbeddedServer(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off")
    )
    task = asyncio.create_task(server.serve(), name="web")
    while not server.started:
        if task.done():
            task.result()
            raise OSError(f"the web server could not listen on {host}:{port}")
        await asyncio.sleep(0.01)
    return server, task


async def stop_server(server: EmbeddedServer, task: asyncio.Task[None]) -> None:
    """Ask the server to finish its requests and stop; wait for it."""
    server.should_exit = True
    await task
