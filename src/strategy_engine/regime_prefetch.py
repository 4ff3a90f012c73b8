"""Regime refits and bar-only views of a backtest made ahead of the replay, in a worker process.

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

The worker also sends what else depends on a symbol's bars alone, so the
replay does not compute it again: each bar's regime view (when the replay's
detector uses a refit on the bar it starts at, ``fit_delay_bars`` 0, as in
backtests) and the views of the strategies that read nothing but the bar
(:attr:`~keel.strategy_engine.base.IncrementalStrategy.reads_bar_only`),
as :class:`SymbolBarViews`. The worker computes them with the replay's own
code on the same bars, so they are the views the replay would have made. A
symbol whose views stop coming (the worker died, a strategy raised, the bars
differ) has its detector and those strategies brought up to date from the
recorded bars (:meth:`SymbolBarViews.catch_up`) and runs them in the replay
from that bar on.
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
from typing import NamedTuple

import numpy as np
import structlog

from keel.core.messages import MarketRegime
from keel.strategy_engine.base import IncrementalStrategy, StrategySignal
from keel.strategy_engine.fit_worker import FitWorker
from keel.strategy_engine.history import valid_bar
from keel.strategy_engine.regime import (
    N_STATES,
    NoLookAheadRegimeDetector,
    RegimeFit,
    RegimeState,
    load_fit_libraries,
    use_regime_fit_store,
)

_log = structlog.get_logger(__name__)

DetectorFactory = Callable[[], NoLookAheadRegimeDetector]
BarSource = Callable[[str], tuple[np.ndarray, np.ndarray]]
"""Returns one symbol's bar close times (ns) and OHLCV rows in replay order."""

SLICE_BARS = 360
"""Bars of time in each slice sent to the worker (6 hours of 1m bars)."""

FIRST_SLICE_BARS = 8
"""Bars of time in the first slice; the next ones double up to :data:`SLICE_BARS`.

The replay needs every symbol's first slice at once: small first slices let it start without waiting.
"""

ViewChanges = tuple[tuple[int, StrategySignal], ...]
"""(strategy index, its new view) for each strategy whose view changed on a bar."""


_REGIMES_BY_CODE = tuple(MarketRegime)
_REGIME_CODES = {regime: float(code) for code, regime in enumerate(_REGIMES_BY_CODE)}
_NO_PROBABILITIES = (0.0,) * N_STATES


def encode_states(states: Sequence[RegimeState]) -> np.ndarray:
    """Pack regime views into rows of ``4 + N_STATES`` floats, far cheaper to send between processes than tuples.

    A row holds the regime's code, which optional fields are present (1:
    probabilities, 2: variance, 4: long-run variance), the probabilities,
    the variance and the long-run variance (0.0 where absent).
    :func:`decode_state` gives the view back, every float to the bit.
    """
    flat: list[float] = []
    extend, codes = flat.extend, _REGIME_CODES
    for regime, probabilities, variance, long_run in states:
        present = 0.0
        if probabilities is None:
            probabilities = _NO_PROBABILITIES
        elif len(probabilities) == N_STATES:
            present = 1.0
        else:
            raise ValueError(f"a regime view holds {N_STATES} probabilities, got {probabilities!r}")
        if variance is None:
            variance = 0.0
        else:
            present += 2.0
        if long_run is None:
            long_run = 0.0
        else:
            present += 4.0
        extend((codes[regime], present, *probabilities, variance, long_run))
    return np.array(flat, dtype=np.float64).reshape(len(states), 4 + N_STATES)


def decode_state(row: Sequence[float]) -> RegimeState:
    """Return the regime view of one row of :func:`encode_states` (a row of its ``tolist()``)."""
    present = int(row[1])
    return RegimeState(
        _REGIMES_BY_CODE[int(row[0])],
        tuple(row[2 : 2 + N_STATES]) if present & 1 else None,
        row[2 + N_STATES] if present & 2 else None,
        row[3 + N_STATES] if present & 4 else None,
    )


class SymbolSlice(NamedTuple):
    """What the worker made of one symbol's bars in one slice of time.

    Attributes
    ----------
    symbol
        The symbol.
    fits
        The refits made, by request key.
    keys
        The close times of the bars it took (the valid ones), in order.
    states
        The regime view after each of those bars, one row each of
        :func:`encode_states` (None: not sent, the replay's detector runs itself).
    views
        The strategies' view changes, by position in ``keys``.
    stopped
        Whether the worker stopped following the symbol after these bars (a
        strategy raised on the next one): the replay takes over from there.
    """

    symbol: str
    fits: list[tuple[str, RegimeFit]]
    keys: list[int]
    states: np.ndarray | None
    views: dict[int, ViewChanges]
    stopped: bool


class PrefetchedRegimeFits:
    """A regime fit store a worker process fills ahead of the replay, with the bars' views.

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
    strategies
        The strategies whose views the worker makes, as (index in the
        manager, a blank copy); each must read the bar only.
    slice_bars
        Bars of time per slice (the first slice has :data:`FIRST_SLICE_BARS`,
        each next one twice as many, up to this).

    Attributes
    ----------
    hits, misses : int
        Fits taken from the worker, and fits asked for that it did not have.
    strategies : tuple of (int, IncrementalStrategy)
        The strategies whose views the worker makes.
    sends_states : bool
        Whether the worker sends each bar's regime view (the detector uses a
        refit on the bar it starts at).
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
        strategies: Sequence[tuple[int, IncrementalStrategy]] = (),
        slice_bars: int = SLICE_BARS,
    ) -> None:
        self._now = now
        self._factory = factory
        self._bars = bars
        self._fits: dict[str, RegimeFit] = {}
        self._slices: deque[tuple[int, Future[SymbolSlice]]] = deque()
        self._pending: dict[str, deque[SymbolSlice]] = {symbol: deque() for symbol in symbols}
        self.strategies = tuple(strategies)
        self._symbol_views: list[SymbolBarViews] = []
        detector = factory()
        self.sends_states = detector.fit_delay_bars == 0
        self.hits = 0
        self.misses = 0
        self.failed = ""
        self._worker = worker
        try:
            self._send(symbols, interval_ns, slice_bars, detector)
        except (BrokenExecutor, RuntimeError) as error:
            self._stop(repr(error))

    def _send(
        self, symbols: Sequence[str], interval_ns: int, slice_bars: int, detector: NoLookAheadRegimeDetector
    ) -> None:
        """Queue every symbol's bars, slice by slice in time, each slice's symbols in feed order.

        A slice ends where a refit is due (the symbols' refits mostly fall on
        the same bar): the replay then takes the bars before it while the
        worker fits, instead of waiting for the fit from the slice's start.
        After a refit the slices start small again, so the replay gets the
        first views after it soon.
        """
        columns = {symbol: self._bars(symbol) for symbol in symbols}
        first = min((int(ts[0]) for ts, _ in columns.values() if len(ts)), default=None)
        last = max((int(ts[-1]) for ts, _ in columns.values() if len(ts)), default=None)
        if first is None or last is None:
            return
        refits = sorted({int(ts[i]) for ts, _ in columns.values() for i in detector.refit_closes(len(ts))})
        self._worker.submit(forget_detectors)
        # The bars go once, ahead; then each slice is a small request (a large one would queue behind
        # this process's other threads for the interpreter lock while the worker waits for it).
        for symbol, (ts, ohlcv) in columns.items():
            self._worker.submit(start_following, symbol, self._factory, self.strategies, self.sends_states, ts, ohlcv)
        start, bars = first, min(FIRST_SLICE_BARS, slice_bars)
        next_refit = 0
        while start <= last:
            end = start + bars * interval_ns
            while next_refit < len(refits) and refits[next_refit] <= start:
                next_refit += 1
            cut = next_refit < len(refits) and refits[next_refit] < end
            if cut:
                end = refits[next_refit]
            for symbol, (ts, _) in columns.items():
                low, high = (int(i) for i in np.searchsorted(ts, [start, end]))
                if high > low:
                    self._slices.append((start, self._worker.submit(follow_bars, symbol, low, high)))
            start, bars = end, min(FIRST_SLICE_BARS, slice_bars) if cut else min(2 * bars, slice_bars)

    @property
    def worker_pid(self) -> int:
        """Return the worker's process id."""
        return self._worker.pid

    def get(self, key: str) -> RegimeFit | None:
        """Return the worker's fit of ``key`` (waiting for the slices up to now), or None: fit it yourself."""
        fits = self._fits
        now = self._now()
        while key not in fits and self._slices and self._slices[0][0] <= now:
            self._take_slice()
        fit = fits.pop(key, None)
        if fit is None:
            self.misses += 1
        else:
            self.hits += 1
        return fit

    def put(self, key: str, fit: RegimeFit) -> None:
        """Keep nothing: a fit the replay made itself is not asked for again."""

    def symbol_views(self, symbol: str) -> SymbolBarViews | None:
        """Return the bar views of ``symbol`` the worker sends (None: it sends none)."""
        if symbol not in self._pending or not (self.sends_states or self.strategies):
            return None
        views = SymbolBarViews(self, symbol)
        self._symbol_views.append(views)
        return views

    @property
    def views_taken(self) -> int:
        """Return how many bars' views the replay took from the worker."""
        return sum(views.taken for views in self._symbol_views)

    def next_slice(self, symbol: str) -> SymbolSlice | None:
        """Return the symbol's next slice, waiting for the worker (None: there is no more, or the worker failed)."""
        pending = self._pending[symbol]
        while not pending and self._slices:
            self._take_slice()
        return pending.popleft() if pending else None

    def _take_slice(self) -> None:
        _, future = self._slices.popleft()
        try:
            made = future.result()
        except Exception as error:  # the worker died or a slice failed: the replay does the rest itself
            self._stop(repr(error))
            return
        self._fits.update(made.fits)
        self._pending[made.symbol].append(made)

    def catch_up(
        self,
        symbol: str,
        through: int | None,
        detector: NoLookAheadRegimeDetector | None,
        strategies: Sequence[IncrementalStrategy],
    ) -> None:
        """Feed a fresh detector and the strategies (their symbol state reset) the symbol's bars up to ``through``."""
        for strategy in strategies:
            strategy.reset(symbol)
        ts, ohlcv = self._bars(symbol)
        end = 0 if through is None else int(np.searchsorted(ts, through, side="right"))
        follower = _Follower(detector, [(0, strategy) for strategy in strategies], send_states=False, catching_up=True)
        follower.advance(symbol, ts[:end], ohlcv[:end])

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


class SymbolBarViews:
    """One symbol's regime views and strategy view changes from the worker, taken bar by bar.

    Parameters
    ----------
    store
        The store the worker fills.
    symbol
        The symbol.
    """

    def __init__(self, store: PrefetchedRegimeFits, symbol: str) -> None:
        self.store = store
        self.symbol = symbol
        self.states_sent = store.sends_states
        self.strategies = tuple(index for index, _ in store.strategies)
        self._keys: list[int] = []
        self._states: list[list[float]] | None = None
        self._views: dict[int, ViewChanges] = {}
        self._position = 0
        self._started = False
        self._before: int | None = None
        self._stopped = False
        self.taken = 0

    def take(self, key: int, previous_key: int | None) -> tuple[RegimeState | None, ViewChanges] | None:
        """Return the regime view and the view changes after the bar closing at ``key`` (ns).

        ``previous_key`` is the close time of the bar the replay took before
        it (None: none). None when the worker has no views for that bar (it
        failed, stopped following the symbol, or saw other bars): then
        :meth:`catch_up` through ``previous_key`` and run the detector and the
        strategies in the replay. The first bar asked for may come after bars
        the worker saw (the warm-up's, which the replay ran itself), the last
        of them ``previous_key``; every later one must be the worker's next bar.
        """
        position = self._position
        keys = self._keys
        while True:
            if position < len(keys):
                found = keys[position]
                if found == key and (self._started or previous_key == self._before):
                    self._position = position + 1
                    self._started = True
                    self.taken += 1
                    states = self._states
                    return None if states is None else decode_state(states[position]), self._views.get(position, ())
                if found >= key or self._started:
                    return None
                self._before = found
                position += 1
                continue
            if self._stopped or not self._load_next():
                return None
            position, keys = 0, self._keys

    def _load_next(self) -> bool:
        made = self.store.next_slice(self.symbol)
        if made is None:
            return False
        self._keys, self._views = made.keys, made.views
        self._states = None if made.states is None else made.states.tolist()
        self._position = 0
        self._stopped = made.stopped
        return True

    def catch_up(
        self,
        through: int | None,
        detector: NoLookAheadRegimeDetector | None,
        strategies: Sequence[IncrementalStrategy],
    ) -> None:
        """Bring a fresh detector and the strategies through the bar closing at ``through`` from the recorded bars.

        ``through`` is the last bar the replay took (None: none); up to there,
        the worker's bars and the replay's were the same.
        """
        self.store.catch_up(self.symbol, through, detector, strategies)

    def stop(self) -> None:
        """Give no more views: the next :meth:`take` returns None."""
        self._stopped = True
        self._keys = []
        self._position = 0


@contextmanager
def prefetched_regime_fits(
    factory: DetectorFactory | None,
    symbols: Sequence[str],
    bars: BarSource,
    interval_ns: int,
    now: Callable[[], int],
    strategies: Sequence[tuple[int, IncrementalStrategy]] = (),
) -> Iterator[PrefetchedRegimeFits | None]:
    """Start a :class:`PrefetchedRegimeFits` for the block (give it to the strategy manager), or nothing.

    ``strategies`` are the (index, blank copy) of the strategies whose views
    the worker should make too; one that cannot be sent to a worker process
    is left to the replay. After the block the worker finishes this replay's
    slices and is kept for the next replay of this process (it loads the
    fitting libraries once); a block left by an exception ends it instead.
    Nothing is started (the block gets None) when there is no detector, the
    factory cannot be sent to a worker process, or another replay is using
    the worker.
    """
    worker = _take_worker() if factory is not None and _sendable(factory) else None
    if worker is None or factory is None:
        yield None
        return
    reusable = False
    try:
        sent = [(index, strategy) for index, strategy in strategies if _sendable(strategy)]
        store = PrefetchedRegimeFits(worker, factory, symbols, bars, interval_ns, now, sent)
        yield store
        reusable = store.finish()
        _log.info(
            "regime fit prefetch",
            fits_prefetched=store.hits,
            fits_missed=store.misses,
            bar_views_taken=store.views_taken,
            failed=store.failed,
        )
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


def _sendable(thing: object) -> bool:
    try:
        pickle.dumps(thing)
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
    """One symbol's detector and bar-only strategies, fed the bars the replay's are fed.

    Bar by bar as the replay's strategy manager runs them: the bar's
    validity, the detector, then each strategy; a strategy's view counts as
    changed when it is a new signal, as the manager counts it. Following
    ahead, it stops before a bar on which a strategy raises (the replay
    meets that bar itself); ``catching_up`` (the replay's own strategies
    brought up to a bar they passed) it goes on, as the manager did.
    """

    def __init__(
        self,
        detector: NoLookAheadRegimeDetector | None,
        strategies: Sequence[tuple[int, IncrementalStrategy]],
        *,
        send_states: bool,
        catching_up: bool = False,
    ) -> None:
        self.detector = detector
        self.catching_up = catching_up
        self.strategies = tuple(strategies)
        self.send_states = send_states
        self.views: list[StrategySignal | None] = [None] * len(self.strategies)
        self.last_ts: int | None = None
        self.stopped = False

    def advance(
        self, symbol: str, ts: np.ndarray, ohlcv: np.ndarray
    ) -> tuple[list[int], list[RegimeState] | None, dict[int, ViewChanges]]:
        """Take the bars; return the valid bars' keys, regime views (if sent) and view changes by position.

        Stops (:attr:`stopped`) before a bar on which a strategy raises.
        """
        detector, views = self.detector, self.views
        # IncrementalStrategy.signal_after's step, inlined: this runs for every strategy, symbol and bar.
        market = {"symbol": symbol}
        steps = [(index, strategy.step, strategy.symbol_state(symbol)) for index, strategy in self.strategies]
        keys: list[int] = []
        states: list[RegimeState] | None = [] if self.send_states else None
        changes: dict[int, ViewChanges] = {}
        last_ts = self.last_ts
        for t, (open_, high, low, close, volume) in zip(ts.tolist(), ohlcv.tolist(), strict=True):
            if self.stopped or not valid_bar(t, open_, high, low, close, volume, last_ts):
                continue
            state = None if detector is None else detector.update(close)
            bar = (t, open_, high, low, close, volume)
            changed: ViewChanges = ()
            for k, (index, step, strategy_state) in enumerate(steps):
                try:
                    strategy_state.bars += 1
                    strategy_state.last_key = t
                    signal = strategy_state.last_signal = step(strategy_state, market, strategy_state.bars - 1, bar)
                except Exception:
                    if self.catching_up:
                        continue
                    self.stopped = True
                    break
                if signal is not None and signal is not views[k]:
                    if not (isinstance(signal, StrategySignal) and signal.symbol == symbol):
                        if self.catching_up:
                            continue
                        self.stopped = True  # the replay raises the manager's error on this bar itself
                        break
                    views[k] = signal
                    changed = (*changed, (index, signal))
            if self.stopped:
                break
            last_ts = t
            if changed:
                changes[len(keys)] = changed
            keys.append(t)
            if states is not None:
                assert state is not None  # states are sent only with a detector
                states.append(state)
        self.last_ts = last_ts
        return keys, states, changes


_FOLLOWERS: dict[str, _Follower] = {}
"""The worker process's detectors and strategies by symbol, of the replay it serves."""

_RECORDED: dict[str, _RecordedFits] = {}
"""The fits each symbol's detector in the worker made and has not sent yet."""

_BARS: dict[str, tuple[np.ndarray, np.ndarray]] = {}
"""Each symbol's bars (close times and OHLCV rows) of the replay the worker serves."""


def forget_detectors() -> None:
    """Run in the worker: drop the bars, detectors and strategies of the previous replay."""
    _FOLLOWERS.clear()
    _RECORDED.clear()
    _BARS.clear()


def start_following(
    symbol: str,
    factory: DetectorFactory,
    strategies: Sequence[tuple[int, IncrementalStrategy]],
    send_states: bool,
    ts: np.ndarray,
    ohlcv: np.ndarray,
) -> None:
    """Run in the worker: keep ``symbol``'s bars and build its detector and strategies, to follow them."""
    recorded = _RecordedFits()
    with use_regime_fit_store(recorded):
        detector = factory()
    # Applied at once, each fit is recorded in the slice it started in; where it is applied does not change it.
    detector.fit_delay_bars = 0
    blank = [(index, strategy.blank_copy()) for index, strategy in strategies]
    _FOLLOWERS[symbol] = _Follower(detector, blank, send_states=send_states)
    _RECORDED[symbol] = recorded
    _BARS[symbol] = (ts, ohlcv)


def follow_bars(symbol: str, low: int, high: int) -> SymbolSlice:
    """Run in the worker: advance ``symbol``'s detector and strategies through bars ``low:high``; return the output."""
    ts, ohlcv = _BARS[symbol]
    follower = _FOLLOWERS[symbol]
    keys, states, views = follower.advance(symbol, ts[low:high], ohlcv[low:high])
    recorded = _RECORDED[symbol]
    made, recorded.made = recorded.made, []
    encoded = None if states is None else encode_states(states)
    return SymbolSlice(symbol, made, keys, encoded, views, follower.stopped)
