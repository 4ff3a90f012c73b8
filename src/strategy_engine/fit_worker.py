"""A worker process for regime refits that imports only what the refits need.

:class:`FitWorker` is a :class:`concurrent.futures.Executor` over one child
Python process (``python -m keel.strategy_engine.fit_worker``) that runs the
module-level functions it is sent, one at a time, in the order sent. Unlike a
``multiprocessing`` spawn worker, the child does not import the parent's main
module (``keel run`` would bring the whole command, its web server and every
layer with it): it loads the fitting libraries and nothing else. Requests and
results travel pickled over two pipes (the child is this program's own). A
writer thread sends, so a submit never waits for the child; a reader thread
resolves the futures. If the child ends, every pending and later submit fails
with :class:`~concurrent.futures.BrokenExecutor`. The child ignores SIGINT: a
Ctrl-C stops the session, which then closes the worker.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class FitWorker(Executor):
    """Run functions in one lean child process, in submission order."""

    def __init__(self) -> None:
        requests_read, requests_write = os.pipe()
        results_read, results_write = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "keel.strategy_engine.fit_worker", str(requests_read), str(results_write)],
            pass_fds=(requests_read, results_write),
            stdin=subprocess.DEVNULL,
        )
        os.close(requests_read)
        os.close(results_write)
        self._requests = os.fdopen(requests_write, "wb")
        self._results = os.fdopen(results_read, "rb")
        self._queue: queue.SimpleQueue[tuple[int, Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._broken: BrokenExecutor | None = None
        self._closed = False
        self._writer = threading.Thread(target=self._write, name="keel-fit-worker-writer", daemon=True)
        self._reader = threading.Thread(target=self._read, name="keel-fit-worker-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    @property
    def pid(self) -> int:
        """Return the child's process id."""
        return self._process.pid

    @property
    def broken(self) -> bool:
        """Return whether the child ended (every submit now fails)."""
        return self._broken is not None

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Send ``fn(*args)`` to the child (``fn`` a module-level function); return its future."""
        if kwargs:
            raise TypeError("the fit worker takes positional arguments only")
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._broken is not None:
                raise self._broken
            ident = self._next
            self._next += 1
            self._pending[ident] = future
        self._queue.put((ident, fn, args))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let the child finish what was sent (or cancel it) and end; wait for it when ``wait``."""
        with self._lock:
            self._closed = True
            cancelled = list(self._pending.values()) if cancel_futures else []
        for future in cancelled:
            future.cancel()
        self._queue.put(None)
        if wait:
            self._writer.join()
            self._process.wait()
            self._reader.join()

    def terminate(self) -> None:
        """End the child at once, dropping what it was doing and what was sent; every pending future fails."""
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self.shutdown(wait=True, cancel_futures=True)

    def _write(self) -> None:
        pipe = self._requests
        try:
            pickle.dump(list(sys.path), pipe)
            while (item := self._queue.get()) is not None:
                try:
                    request = pickle.dumps(item)
                except Exception as error:  # an argument that cannot be sent fails its own future only
                    self._settle(item[0], error)
                    continue
                pipe.write(request)
                pipe.flush()
        except OSError as error:
            self._fail(error)
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    def _read(self) -> None:
        with self._results as pipe:
            while True:
                try:
                    ident, ok, value = pickle.load(pipe)
                except Exception as error:  # the stream cannot be read on: every pending future must fail, not wait
                    self._fail(error)
                    return
                with self._lock:
                    future = self._pending.pop(ident, None)
                if future is None or not future.set_running_or_notify_cancel():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _settle(self, ident: int, error: BaseException) -> None:
        with self._lock:
            future = self._pending.pop(ident, None)
        if future is not None and future.set_running_or_notify_cancel():
            future.set_exception(error)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._broken = BrokenExecutor(f"the fit worker process ended ({error!r})")
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            if future.set_running_or_notify_cancel():
                future.set_exception(self._broken)


def serve(requests_fd: int, results_fd: int) -> None:
    """Run the child: take the parent's import path, then answer requests until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with os.fdopen(requests_fd, "rb") as requests, os.fdopen(results_fd, "wb") as results:
        sys.path[:] = pickle.load(requests)
        while True:
            try:
                ident, function, args = pickle.load(requests)
            except EOFError:
                return
            try:
                outcome = pickle.dumps((ident, True, function(*args)))
            except Exception as error:
                outcome = _failure(ident, error)
            results.write(outcome)
            results.flush()


def _failure(ident: int, error: Exception) -> bytes:
    """Return the pickled failure of a request: the error itself if the parent can load it, else its repr."""
    try:
        outcome = pickle.dumps((ident, False, error))
        pickle.loads(outcome)  # an error class whose constructor cannot be called again would break the stream
    except Exception:
        outcome = pickle.dumps((ident, False, RuntimeError(repr(error))))
    return outcome


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
