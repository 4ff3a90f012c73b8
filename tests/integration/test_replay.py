"""Replaying a recording: the garbage collector leaves what existed before the replay alone while it runs."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from keel.config import load_config
from keel.core.messages import BarClosed
from keel.integration.replay import RecordedRun
from keel.strategy_engine.regime import RegimeFit, use_regime_fit_store


class _Cycle:
    """An object that refers to itself: only the cyclic garbage collector frees it."""

    def __init__(self) -> None:
        self.me: Any = self


def test_replay_keeps_earlier_objects_out_of_collections_and_hands_them_back() -> None:
    # Arrange: one day of BTCUSDT, and a reference cycle that became garbage before the replay
    overrides = {
        "data": {"symbols": ["BTCUSDT"], "start": "2025-05-10", "end": "2025-05-11"},
        "strategy": {"name": "moving_average_cross"},
        "portfolio": {"allocator": "equal_weight"},
    }
    run = RecordedRun(load_config("backtest", overrides=overrides, environ={}), None, measure_latency=False)
    frozen_during: list[int] = []

    def count_frozen(bar: BarClosed) -> None:
        if not frozen_during:  # counting walks every frozen object: once is enough
            frozen_during.append(gc.get_freeze_count())

    run.pipeline.bus.subscribe(BarClosed, count_frozen, name="test.gc")
    garbage = _Cycle()
    collected = weakref.ref(garbage)
    del garbage

    # Act
    run.replay(None)
    gc.collect()

    # Assert: frozen while it ran, nothing frozen after, and the earlier garbage is collectable again
    assert run.bars > 1000
    assert frozen_during[0] > 0
    assert gc.get_freeze_count() == 0
    assert collected() is None


def test_a_replay_inside_a_process_that_froze_its_objects_leaves_that_freeze_alone() -> None:
    # Arrange: a session froze its long-lived objects (as paper does after set-up), then a gate replays
    overrides = {
        "data": {"symbols": ["BTCUSDT"], "start": "2025-05-10", "end": "2025-05-10T06:00:00"},
        "strategy": {"name": "moving_average_cross"},
        "portfolio": {"allocator": "equal_weight"},
    }
    run = RecordedRun(load_config("backtest", overrides=overrides, environ={}), None, measure_latency=False)
    gc.freeze()
    try:
        frozen_before = gc.get_freeze_count()

        # Act
        run.replay(None)

        # Assert: the session's objects are still frozen (a few died by reference counting meanwhile),
        # and the replay froze nothing of its own
        assert run.bars > 100
        assert 0.9 * frozen_before < gc.get_freeze_count() <= frozen_before
    finally:
        gc.unfreeze()


THREE_DAYS = {
    "data": {"symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT"], "start": "2025-05-05", "end": "2025-05-08"},
    "portfolio": {"no_trade_band": "off", "risk_aversion": 100.0, "rebalance_interval_minutes": 480},
}


def replayed(fit_worker: bool) -> RecordedRun:
    """Replay three days of three symbols through the default pipeline (it trades them; the regimes refit)."""
    run = RecordedRun(load_config("backtest", overrides=THREE_DAYS, environ={}), None, fit_worker=fit_worker)
    run.replay(None)
    return run


def trading_record(run: RecordedRun) -> tuple[object, ...]:
    """Return what the run did: its fills, rejections, regime changes and equity curve."""
    recorder = run.pipeline.recorder
    return recorder.fills, recorder.rejections, recorder.regimes, list(recorder.equity_curve())


def test_regime_refits_and_views_made_in_the_worker_process_change_nothing_the_replay_does() -> None:
    # Arrange
    inline = replayed(fit_worker=False)

    # Act
    prefetching = replayed(fit_worker=True)

    # Assert: every bar's regime and bar-only strategy views came from the worker (so the replay fitted nothing),
    # and every order, position and mark is the same
    store = prefetching.fit_prefetch
    assert inline.fit_prefetch is None
    assert store is not None
    assert store.views_taken == prefetching.bars
    assert store.misses == 0
    assert len(store.strategies) == 3
    assert len(inline.pipeline.recorder.fills) > 0
    assert len(inline.pipeline.recorder.regimes) > 0
    assert trading_record(prefetching) == trading_record(inline)


class _NoFits:
    """A regime fit store that has nothing, counting what it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    def get(self, key: str) -> RegimeFit | None:
        self.asked += 1
        return None

    def put(self, key: str, fit: RegimeFit) -> None:
        """Keep nothing."""


def test_a_replay_under_a_shared_fit_store_asks_that_store_and_leaves_the_worker_alone() -> None:
    # Arrange: a day of BTCUSDT and a detector that refits several times in it
    overrides = {
        "data": {"symbols": ["BTCUSDT"], "start": "2025-05-10", "end": "2025-05-11"},
        "strategy": {"regime": {"min_fit_bars": 600, "fit_window": 900, "refit_interval": 400}},
    }
    shared = _NoFits()
    with use_regime_fit_store(shared):
        run = RecordedRun(load_config("backtest", overrides=overrides, environ={}), None, fit_worker=True)

        # Act
        run.replay(None)

    # Assert
    assert run.fit_prefetch is None
    assert shared.asked >= 2
