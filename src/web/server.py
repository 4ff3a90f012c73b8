"""Serve the web app: inside the trading loop (:func:`start_server`) or in its own thread (:class:`ThreadedServer`).

uvicorn normally installs its own SIGINT/SIGTERM handlers; here the trading
process owns the signals (a signal stops the session cleanly, which then stops
the server), so :class:`EmbeddedServer` leaves them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
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


class ThreadedServer:
    """Serve an app from its own thread and event loop, so requests never run on the trading loop.

    Give the app a :class:`~keel.web.snapshots.SnapshotService`: its queries
    read published snapshots and its commands are handed to the trading loop.
    """

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
        self.server = EmbeddedServer(config)
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self._listening = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """Return the port actually bound."""
        return self.server.port

    def start(self, timeout_seconds: float = 10.0) -> None:
        """Start the thread; return once the server listens.

        Raises
        ------
        OSError
            If the server could not listen (for example the port is taken).
        """
        self._thread.start()
        self._listening.wait(timeout_seconds)
        if not self.server.started:
            self.stop()
            raise OSError(f"the web server could not listen on {self.server.config.host}:{self.server.config.port}")

    def stop(self) -> None:
        """Ask the server to finish its requests and stop; wait for its thread."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join()

    def _serve(self) -> None:
        asyncio.run(self._serve_until_done())

    async def _serve_until_done(self) -> None:
        task = asyncio.create_task(self.server.serve())
        while not self.server.started and not task.done():
            await asyncio.sleep(0.01)
        self._listening.set()
        with contextlib.suppress(SystemExit, OSError):
            await task
