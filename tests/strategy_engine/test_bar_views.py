"""Regime views and bar-only strategies' views made ahead in the worker: the manager decides as if it made them."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from strategy_data import MINUTE_NS, MS_NS, bar_frame, events

from keel.core.messages import BarClosed
from keel.strategy_engine.base import SymbolState
from keel.strategy_engine.manager import ManagerUpdate, StrategyManager, default_strategies
from keel.strategy_engine.regime import NoLookAheadRegimeDetector, RegimeFit, RegimeFitRequest, fit_regime_models
from keel.strategy_engine.regime_prefetch import PrefetchedRegimeFits, prefetched_regime_fits
from keel.strategy_engine.trend_following import TrendFollowingStrategy

SMALL = {"min_fit_bars": 600, "fit_window": 900, "refit_interval": 400}
SMALL_DETECTOR = functools.partial(NoLookAheadRegimeDetector, **SMALL)
SYMBOLS = ("BTCUSDT", "ETHUSDT")
BARS = 2000
FAST_TREND = {"fast_period": 20, "slow_period": 80, "channel_period": 60, "atr_period": 30}


def recorded_bars(symbol: str) -> tuple[np.ndarray, np.ndarray]:
    """Return a symbol's first bars as the feed hands them out: close times (ns) and OHLCV rows."""
    frame = bar_frame(symbol).iloc[:BARS]
    ts = frame["open_time_ms"].to_numpy(np.int64) * MS_NS + MINUTE_NS
    return ts, frame[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)


def stream() -> list[Any]:
    """Return both symbols' bars and funding settlements in feed order."""
    merged = [event for symbol in SYMBOLS for event in events(symbol, 0, BARS)]
    merged.sort(key=lambda e: (e.ts_event, not isinstance(e, BarClosed), SYMBOLS.index(e.symbol)))
    return merged


class _RaisesAtBar(TrendFollowingStrategy):
    """Trend following that raises on one bar of one symbol (as a bug in a strategy would)."""

    def __init__(self, symbol: str, key: int) -> None:
        super().__init__("trend_following", **FAST_TREND)
        self.bad = (symbol, key)

    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> Any:
        if (market_data["symbol"], bar[0]) == self.bad:
            raise ArithmeticError("a bug on this bar")
        return super().step(state, market_data, index, bar)


class Session:
    """A strategy manager fed the recorded stream, with or without the worker's views; what it returned."""

    def __init__(
        self,
        factory: Callable[[], NoLookAheadRegimeDetector] = SMALL_DETECTOR,
        trend: TrendFollowingStrategy | None = None,
    ) -> None:
        strategies = default_strategies()
        strategies[0] = trend or TrendFollowingStrategy(**FAST_TREND)
        self.manager = StrategyManager(strategies, detector_factory=factory)
        self.factory = factory
        self.now = 0

    def run(
        self,
        *,
        worker: bool,
        skip: tuple[str, int] | None = None,
        leave_at: int | None = None,
        replace_at: int | None = None,
    ) -> tuple[list[ManagerUpdate], PrefetchedRegimeFits | None]:
        manager = self.manager
        strategies = manager.bar_only_strategies()
        with prefetched_regime_fits(
            self.factory if worker else None, SYMBOLS, recorded_bars, MINUTE_NS, lambda: self.now, strategies
        ) as store:
            manager.use_fit_store(store)
            manager.use_bar_views(store)
            updates = []
            for count, event in enumerate(stream()):
                self.now = event.ts_event
                if count == leave_at:
                    manager.use_bar_views(None)
                if count == replace_at:
                    manager.replace_strategy(TrendFollowingStrategy(**{**FAST_TREND, "stop_atr_multiple": 3.0}))
                if not isinstance(event, BarClosed):
                    manager.on_funding(event)
                elif (event.symbol, event.ts_event) != skip:
                    updates.append(manager.on_bar(event))
            manager.use_bar_views(None)
            manager.use_fit_store(None)
        return updates, store


def decisions(updates: list[ManagerUpdate]) -> list[ManagerUpdate]:
    """Return the bars' updates that say something (a signal, a failure, a regime change, an intent)."""
    return [update for update in updates if update != ManagerUpdate()]


@pytest.fixture(scope="module")
def inline() -> list[ManagerUpdate]:
    updates, _ = Session().run(worker=False)
    return updates


def test_the_workers_views_are_the_ones_the_manager_would_make(inline: list[ManagerUpdate]) -> None:
    # Act
    updates, store = Session().run(worker=True)

    # Assert: every bar's views came from the worker, the detectors never fitted here, and every decision is the same
    assert store is not None and not store.failed
    assert store.views_taken == len(updates) == BARS * len(SYMBOLS)
    assert store.misses == 0
    assert len(decisions(inline)) > 20
    assert sum(u.regime_change is not None for u in inline) > 5
    assert updates == inline


def test_views_taken_away_mid_run_are_caught_up_from_the_recorded_bars(inline: list[ManagerUpdate]) -> None:
    # Act: from the 2500th event on, the manager runs its detectors and strategies itself
    updates, store = Session().run(worker=True, leave_at=2500)

    # Assert
    assert store is not None
    assert 2000 < store.views_taken < 2600
    assert updates == inline


def test_a_strategy_replaced_mid_run_runs_in_the_manager_and_the_others_still_come_from_the_worker() -> None:
    # Arrange
    expected, _ = Session().run(worker=False, replace_at=2500)

    # Act
    updates, store = Session().run(worker=True, replace_at=2500)

    # Assert
    assert store is not None
    assert store.views_taken == BARS * len(SYMBOLS)
    assert updates == expected


def test_a_bar_the_worker_saw_but_the_manager_did_not_hands_that_symbol_back_to_the_manager() -> None:
    # Arrange
    skip = ("ETHUSDT", int(recorded_bars("ETHUSDT")[0][900]))
    expected, _ = Session().run(worker=False, skip=skip)

    # Act
    updates, store = Session().run(worker=True, skip=skip)

    # Assert: ETHUSDT's views stop at the missing bar, BTCUSDT's all come from the worker
    assert store is not None
    assert store.views_taken == BARS + 900
    assert updates == expected


def test_a_strategy_that_raises_in_the_worker_raises_in_the_manager_on_the_same_bar() -> None:
    # Arrange
    key = int(recorded_bars("BTCUSDT")[0][1200])
    expected, _ = Session(trend=_RaisesAtBar("BTCUSDT", key)).run(worker=False)

    # Act
    updates, store = Session(trend=_RaisesAtBar("BTCUSDT", key)).run(worker=True)

    # Assert
    assert store is not None
    assert store.views_taken == BARS + 1200
    assert [f.error_type for u in updates for f in u.failures] == ["ArithmeticError"]
    assert updates == expected


def _fit_that_kills_its_worker(request: RegimeFitRequest) -> RegimeFit:
    """The real fit in the test's own process; in the worker process it dies as a killed worker would."""
    if os.getpid() != int(os.environ["KEEL_TEST_FITTING_PID"]):
        os._exit(1)
    return fit_regime_models(request)


class _DetectorKillingItsWorker(NoLookAheadRegimeDetector):
    fit_function = staticmethod(_fit_that_kills_its_worker)


def test_a_dead_worker_leaves_the_views_to_the_manager(
    inline: list[ManagerUpdate], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    monkeypatch.setenv("KEEL_TEST_FITTING_PID", str(os.getpid()))

    # Act
    updates, store = Session(functools.partial(_DetectorKillingItsWorker, **SMALL)).run(worker=True)

    # Assert
    assert store is not None and store.failed
    assert store.views_taken < BARS
    assert updates == inline


def test_a_detector_that_uses_a_refit_a_bar_later_gets_only_its_fits_and_the_strategies_views() -> None:
    # Arrange
    delayed = functools.partial(NoLookAheadRegimeDetector, fit_delay_bars=1, **SMALL)
    expected, _ = Session(delayed).run(worker=False)

    # Act
    updates, store = Session(delayed).run(worker=True)

    # Assert
    assert store is not None and not store.sends_states
    assert store.hits >= 6 and store.misses == 0
    assert store.views_taken == BARS * len(SYMBOLS)
    assert updates == expected
