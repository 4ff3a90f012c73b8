"""Regime refits of a backtest made ahead of the replay, in a worker process.

A refit depends only on one symbol's closes and on that symbol's previous
refit, not on anything the rest of the pipeline does, and a detector finds
it again by its request key (:meth:`~keel.strategy_engine.regime.RegimeFitRequest.key`).
So a backtest can run every symbol's detector through the recorded bars in a
second process, ahead of the replay, while the replay runs strategies, risk
and execution on this one: :class:`PrefetchedRegimeFits` is the
:class:`~keel.strategy_engine.regime.RegimeFitStore` the replay's detectors
read those fits from. The worker (a :class:`~keel.strategy_engine.fit_worker.FitWorker`)
is sent the bars in slices of time, symbol by symbol, in the order the
replay reaches them, and answers each slice with the fits it made.

The fits are the same ones: the same function of the same request. A refit
the worker did not make (it failed, or its detector saw other bars) is a miss
and the replay's detector fits it itself, so the results never depend on the
worker; only the wall time does. The worker never waits for the replay, and
the replay waits for the worker only when it needs a fit from a slice the
worker has not finished.
"""

from __future__ import annotations

import atexit
import os
import pickle
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Future
from contextlib import contextmanager

import numpy as np
import structlog

from keel.strategy_engine.fit_worker import FitWorker
from keel.strategy_engine.history import valid_bar
from keel.strategy_engine.regime import (
    NoLookAheadRegimeDetector,
    RegimeFit,
    load_fit_libraries,
    use_regime_fit_store,
)

_log = structlog.get_logger(__name__)

DetectorFactory = Callable[[], NoLookAheadRegimeDetector]
BarSource = Callable[[str], tuple[np.ndarray, np.ndarray]]
"""Returns one symbol's bar close times (ns) and OHLCV rows in replay order."""

SLICE_BARS = 360
"""Bars of time in each slice sent to the worker (6 hours of 1m bars)."""


class PrefetchedRegimeFits:
    """A regime fit store a worker process fills ahead of the replay.

    Parameters
    ----------
    worker
        The worker process (it may have served earlier replays).
    factory
        Builds a symbol's detector exactly as the replay's strategy manager
        does (it is sent to the worker, so it must pickle).
    symbols
        The replayed symbols, in the feed's order.
    bars
        One symbol's close times (ns) and OHLCV rows, as the replay sees them.
    interval_ns
        The bar interval.
    now
        The replay's clock (ns): a fit asked for at ``now`` can only come from
        a slice that starts at or before it.
    slice_bars
        Bars of time per slice.

    Attributes
    ----------
    hits, misses : int
        Fits taken from the worker, and fits asked for that it did not have.
    failed : str
        Why the worker stopped being used ("" while it works).
    """

    def __init__(
        self,
        worker: FitWorker,
        factory: DetectorFactory,
        symbols: Sequence[str],
        bars: BarSource,
        interval_ns: int,
        now: Callable[[], int],
        slice_bars: int = SLICE_BARS,
    ) -> None:
        self._now = now
        self._fits: dict[str, RegimeFit] = {}
        self._slices: deque[tuple[int, Future[list[tuple[str, RegimeFit]]]]] = deque()
        self.hits = 0
        self.misses = 0
        self.failed = ""
        self._worker = worker
        try:
            self._send(factory, symbols, bars, interval_ns * slice_bars)
        except (BrokenExecutor, RuntimeError) as error:
            self._stop(repr(error))

    def _send(self, factory: DetectorFactory, symbols: Sequence[str], bars: BarSource, slice_ns: int) -> None:
        """Queue every symbol's bars, slice by slice in time, each slice's symbols in feed order."""
        columns = {symbol: bars(symbol) for symbol in symbols}
        first = min((int(ts[0]) for ts, _ in columns.values() if len(ts)), default=None)
        last = max((int(ts[-1]) for ts, _ in columns.values() if len(ts)), default=None)
        if first is None or last is None:
            return
        self._worker.submit(forget_detectors)
        for start in range(first, last + 1, slice_ns):
            for symbol, (ts, ohlcv) in columns.items():
                low, high = np.searchsorted(ts, [start, start + slice_ns])
                if high > low:
                    future = self._worker.submit(fits_along, symbol, factory, ts[low:high], ohlcv[low:high])
                    self._slices.append((start, future))

    @property
    def worker_pid(self) -> int:
        """Return the worker process's id."""
        return self._worker.pid

    def get(self, key: str) -> RegimeFit | None:
        """Return the worker's fit of ``key`` (waiting for the slices up to now), or None: fit it yourself."""
        fits = self._fits
        now = self._now()
        while key not in fits and self._slices and self._slices[0][0] <= now:
            _, future = self._slices.popleft()
            try:
                fits.update(future.result())
            except Exception as error:  # the worker died or a slice failed: the replay fits the rest itself
                self._stop(repr(error))
        fit = fits.pop(key, None)
        if fit is None:
            self.misses += 1
        else:
            self.hits += 1
        return fit

    def put(self, key: str, fit: RegimeFit) -> None:
        """Keep nothing: a fit the replay made itself is not asked for again."""

    def finish(self) -> bool:
        """Wait for the worker to end this replay's slices; return whether it can serve another replay."""
        while self._slices:
            _, future = self._slices.popleft()
            try:
                future.result()
            except Exception as error:
                self._stop(repr(error))
        return not self.failed

    def _stop(self, reason: str) -> None:
        self.failed = reason
        for _, future in self._slices:
            future.cancel()
        self._slices.clear()
        _log.warning("regime fit prefetch stopped: fitting in the replay", error=reason)


@contextmanager
def prefetched_regime_fits(
    factory: DetectorFactory | None,
    symbols: Sequence[str],
    bars: BarSource,
    interval_ns: int,
    now: Callable[[], int],
) -> Iterator[PrefetchedRegimeFits | None]:
    """Start a :class:`PrefetchedRegimeFits` for the block (give it to the detectors), or nothing.

    After the block the worker finishes this replay's slices and is kept for
    the next replay of this process (it loads the fitting libraries once); a
    block left by an exception ends it instead. Nothing is started (the block
    gets None) when there is no detector, the factory cannot be sent to a
    worker process, or another replay is using the worker.
    """
    worker = _take_worker() if factory is not None and _sendable(factory) else None
    if worker is None or factory is None:
        yield None
        return
    reusable = False
    try:
        store = PrefetchedRegimeFits(worker, factory, symbols, bars, interval_ns, now)
        yield store
        reusable = store.finish()
        _log.info("regime fit prefetch", fits_prefetched=store.hits, fits_missed=store.misses, failed=store.failed)
    finally:
        _give_back(worker, keep=reusable)


class _SharedWorker:
    """The process's one prefetch worker, lent to one replay at a time."""

    lock = threading.Lock()
    worker: FitWorker | None = None
    pid = 0
    lent = False


def start_prefetch_worker() -> None:
    """Start this process's prefetch worker now, if it has none, so it loads the fitting libraries meanwhile."""
    with _SharedWorker.lock:
        if not _SharedWorker.lent:
            _usable_worker()


def _take_worker() -> FitWorker | None:
    """Lend the worker (starting one if this process has none or it broke); None while it is lent."""
    with _SharedWorker.lock:
        if _SharedWorker.lent:
            return None
        worker = _usable_worker()
        _SharedWorker.lent = True
        return worker


def _usable_worker() -> FitWorker:
    """Return the worker, started anew if this process has none or it broke (call under the lock)."""
    worker = _SharedWorker.worker
    if worker is None or _SharedWorker.pid != os.getpid() or worker.broken:
        # A forked child inherits the parent's worker object but not its threads: it starts its own.
        worker = _SharedWorker.worker = FitWorker()
        _SharedWorker.pid = os.getpid()
        worker.submit(load_fit_libraries)
    return worker


def _give_back(worker: FitWorker, *, keep: bool) -> None:
    """Take the worker back; end it at once unless it can serve another replay (a new one starts next time)."""
    with _SharedWorker.lock:
        _SharedWorker.lent = False
        if keep and _SharedWorker.worker is worker:
            return
        if _SharedWorker.worker is worker:
            _SharedWorker.worker = None
    worker.terminate()  # not left to work through a failed replay's slices on the machine's other core


@atexit.register
def _end_worker() -> None:
    worker = _SharedWorker.worker
    if worker is not None and _SharedWorker.pid == os.getpid():
        _SharedWorker.worker = None
        worker.shutdown(wait=True, cancel_futures=True)


def _sendable(factory: DetectorFactory) -> bool:
    try:
        pickle.dumps(factory)
    except Exception:
        return False
    return True


class _RecordedFits:
    """The worker's store: records each fit its detector makes, hands out none."""

    def __init__(self) -> None:
        self.made: list[tuple[str, RegimeFit]] = []

    def get(self, key: str) -> RegimeFit | None:
        return None

    def put(self, key: str, fit: RegimeFit) -> None:
        self.made.append((key, fit))


class _Follower:
    """One symbol's detector in the worker, fed the bars the replay's detector is fed."""

    def __init__(self, factory: DetectorFactory) -> None:
        self.recorded = _RecordedFits()
        with use_regime_fit_store(self.recorded):
            self.detector = factory()
        # Applied at once, each fit is recorded in the slice it started in; where it is applied does not change it.
        self.detector.fit_delay_bars = 0
        self.last_ts: int | None = None

    def advance(self, ts: np.ndarray, ohlcv: np.ndarray) -> list[tuple[str, RegimeFit]]:
        detector = self.detector
        last_ts = self.last_ts
        for t, (open_, high, low, close, volume) in zip(ts.tolist(), ohlcv.tolist(), strict=True):
            if valid_bar(t, open_, high, low, close, volume, last_ts):
                last_ts = t
                detector.update(close)
        self.last_ts = last_ts
        made, self.recorded.made = self.recorded.made, []
        return made


_FOLLOWERS: dict[str, _Follower] = {}
"""The worker process's detectors by symbol, of the replay it serves."""


def forget_detectors() -> None:
    """Run in the worker: drop the detectors of the previous replay."""
    _FOLLOWERS.clear()


def fits_along(symbol: str, factory: DetectorFactory, ts: np.ndarray, ohlcv: np.ndarray) -> list[tuple[str, RegimeFit]]:
    """Run in the worker: advance ``symbol``'s detector through a slice of bars; return the fits it made."""
    follower = _FOLLOWERS.get(symbol)
    if follower is None:
        follower = _FOLLOWERS[symbol] = _Follower(factory)
    return follower.advance(ts, ohlcv)
