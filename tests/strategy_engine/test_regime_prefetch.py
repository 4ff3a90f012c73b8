"""Regime refits made ahead in a worker process: the same views as fitting in the replay, whatever the worker does."""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategy_data import MINUTE_NS, MS_NS, bar_frame

from keel.core.messages import MarketRegime
from keel.strategy_engine.regime import (
    N_STATES,
    NoLookAheadRegimeDetector,
    RegimeFit,
    RegimeFitRequest,
    RegimeState,
    fit_regime_models,
)
from keel.strategy_engine.regime_prefetch import (
    FIRST_SLICE_BARS,
    PrefetchedRegimeFits,
    decode_state,
    encode_states,
    prefetched_regime_fits,
)

SMALL = {"min_fit_bars": 600, "fit_window": 900, "refit_interval": 400}
SYMBOLS = ("BTCUSDT", "ETHUSDT")
BARS = 2000


def recorded_bars(symbol: str) -> tuple[np.ndarray, np.ndarray]:
    """Return a symbol's first bars as a feed hands them out: close times (ns) and OHLCV rows."""
    frame = bar_frame(symbol).iloc[:BARS]
    ts = frame["open_time_ms"].to_numpy(np.int64) * MS_NS + MINUTE_NS
    return ts, frame[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)


class Replay:
    """Symbols' detectors fed bar by bar in time order, as the strategy manager feeds them; a clock to match."""

    def __init__(self, factory: Callable[[], NoLookAheadRegimeDetector], skip: dict[str, int] | None = None) -> None:
        self.factory = factory
        self.skip = skip or {}
        self.now = 0
        self.detectors: dict[str, NoLookAheadRegimeDetector] = {}

    def run(self, store: PrefetchedRegimeFits | None = None) -> dict[str, list[RegimeState]]:
        columns = {symbol: recorded_bars(symbol) for symbol in SYMBOLS}
        states: dict[str, list[RegimeState]] = {symbol: [] for symbol in SYMBOLS}
        for row in range(BARS):
            for symbol, (ts, ohlcv) in columns.items():
                self.now = int(ts[row])
                if row == self.skip.get(symbol):
                    continue
                detector = self.detectors.get(symbol)
                if detector is None:
                    detector = self.detectors[symbol] = self.factory()
                    detector.use_fit_store(store)
                states[symbol].append(detector.update(float(ohlcv[row, 3])))
        return states

    @property
    def refits(self) -> int:
        return sum(d.fits_ + d.fit_failures_ for d in self.detectors.values()) // 2

    @property
    def refits_from_store(self) -> int:
        return sum(d.fits_from_store_ for d in self.detectors.values())


def prefetched(replay: Replay) -> AbstractContextManager[PrefetchedRegimeFits | None]:
    """Prefetch the fits of ``replay``'s detectors, on its clock."""
    return prefetched_regime_fits(replay.factory, SYMBOLS, recorded_bars, MINUTE_NS, lambda: replay.now)


SMALL_DETECTOR = functools.partial(NoLookAheadRegimeDetector, **SMALL)


def test_the_prefetched_refits_are_the_ones_the_replay_would_make() -> None:
    # Arrange
    inline = Replay(SMALL_DETECTOR)
    expected = inline.run()
    replay = Replay(SMALL_DETECTOR)

    # Act
    with prefetched(replay) as store:
        states = replay.run(store)

    # Assert: every refit came from the worker, and the views are the inline ones
    assert isinstance(store, PrefetchedRegimeFits)
    assert states == expected
    assert inline.refits >= 6
    assert store.hits == replay.refits_from_store == inline.refits
    assert store.misses == 0


def test_a_symbol_whose_bars_differ_from_the_workers_fits_itself_and_the_others_still_come_from_the_worker() -> None:
    # Arrange: the replay never sees one ETHUSDT bar the worker was sent
    skip = {"ETHUSDT": 300}
    expected = Replay(SMALL_DETECTOR, skip).run()
    replay = Replay(SMALL_DETECTOR, skip)

    # Act
    with prefetched(replay) as store:
        states = replay.run(store)

    # Assert
    assert store is not None
    assert states == expected
    assert replay.detectors["ETHUSDT"].fits_from_store_ == 0
    assert replay.detectors["BTCUSDT"].fits_from_store_ == store.hits >= 3
    assert store.misses == replay.refits - store.hits >= 3


def _fit_that_kills_its_worker(request: RegimeFitRequest) -> RegimeFit:
    """The real fit in the test's own process; in the worker process it dies as a killed worker would."""
    if os.getpid() != int(os.environ["KEEL_TEST_FITTING_PID"]):
        os._exit(1)
    return fit_regime_models(request)


class _DetectorKillingItsWorker(NoLookAheadRegimeDetector):
    fit_function = staticmethod(_fit_that_kills_its_worker)


def test_a_dead_worker_leaves_the_refits_to_the_replay_and_the_next_replay_gets_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange
    monkeypatch.setenv("KEEL_TEST_FITTING_PID", str(os.getpid()))
    expected = Replay(SMALL_DETECTOR).run()
    dying = functools.partial(_DetectorKillingItsWorker, **SMALL)
    replay = Replay(dying)

    # Act
    with prefetched(replay) as store:
        states = replay.run(store)
    after = Replay(SMALL_DETECTOR)
    with prefetched(after) as next_store:
        after.run(next_store)

    # Assert
    assert store is not None and next_store is not None
    assert states == expected
    assert store.failed
    assert store.hits == 0
    assert store.misses == replay.refits
    assert next_store.hits == after.refits and next_store.misses == 0


def test_nothing_is_prefetched_for_a_factory_a_worker_cannot_be_sent() -> None:
    # Arrange
    replay = Replay(lambda: NoLookAheadRegimeDetector(**SMALL))

    # Act
    with prefetched(replay) as store:
        pass

    # Assert
    assert store is None


def test_one_replay_at_a_time_uses_the_worker() -> None:
    # Arrange
    outer, inner = Replay(SMALL_DETECTOR), Replay(SMALL_DETECTOR)

    # Act
    with prefetched(outer) as outer_store, prefetched(inner) as inner_store:
        pass
    with prefetched(inner) as later_store:
        pass

    # Assert
    assert outer_store is not None
    assert inner_store is None
    assert later_store is not None


def test_a_replay_left_by_an_error_ends_the_worker_at_once() -> None:
    # Arrange
    replay = Replay(SMALL_DETECTOR)

    # Act
    with pytest.raises(RuntimeError, match="the replay failed"), prefetched(replay) as store:
        assert store is not None
        pid = store.worker_pid
        raise RuntimeError("the replay failed")

    # Assert: the process is gone (reaped), not left working through the slices it was sent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@given(
    st.sampled_from(list(MarketRegime)),
    st.none() | st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * N_STATES),
    st.none() | st.floats(allow_nan=True, allow_infinity=True),
    st.none() | st.floats(allow_nan=True, allow_infinity=True),
)
def test_a_regime_view_sent_as_a_row_comes_back_to_the_bit(
    regime: MarketRegime,
    probabilities: tuple[float, ...] | None,
    variance: float | None,
    long_run: float | None,
) -> None:
    # Arrange
    state = RegimeState(regime, probabilities, variance, long_run)

    # Act
    (row,) = encode_states([state]).tolist()
    back = decode_state(row)

    # Assert: repr tells NaN, -0.0 and None apart
    assert repr(back) == repr(state)
    assert type(back) is RegimeState


def test_a_regime_view_with_another_number_of_probabilities_is_refused() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        encode_states([RegimeState(MarketRegime.TRENDING, (0.5, 0.5), None, None)])


class _RecordingWorker:
    """Stands in for the fit worker: notes what is sent, answers nothing."""

    def __init__(self) -> None:
        self.slices: dict[str, list[tuple[int, int]]] = {symbol: [] for symbol in SYMBOLS}

    def submit(self, function: Callable[..., object], *args: object) -> Future[object]:
        if function.__name__ == "follow_bars":
            symbol, low, high = args
            self.slices[str(symbol)].append((int(low), int(high)))  # type: ignore[call-overload]
        return Future()


def test_slices_cover_every_bar_once_and_end_where_a_refit_is_due() -> None:
    # Arrange
    worker = _RecordingWorker()
    refits = list(SMALL_DETECTOR().refit_closes(BARS))

    # Act
    PrefetchedRegimeFits(worker, SMALL_DETECTOR, SYMBOLS, recorded_bars, MINUTE_NS, lambda: 0)  # type: ignore[arg-type]

    # Assert: in order, no gap, no overlap; each refit is the first bar of a slice, which starts small
    assert len(refits) >= 3
    for slices in worker.slices.values():
        assert slices[0][0] == 0 and slices[-1][1] == BARS
        assert all(previous[1] == following[0] for previous, following in itertools.pairwise(slices))
        starts = {low: high - low for low, high in slices}
        assert all(starts.get(refit) == FIRST_SLICE_BARS for refit in refits)
