"""A pipeline on recorded data, replayed at the speed of the simulated clock: what a backtest runs.

:class:`RecordedRun` wires the configured pipeline over the recorded feed and
:meth:`RecordedRun.replay` pushes the feed through it one timestamp at a
time: it advances the simulated clock (firing due timers), publishes the event
and drains the bus synchronously, so every component reacts exactly as it
would live, in a deterministic order. ``keel backtest`` (through
:class:`~keel.backtest.BacktestEngine`) and a backtest-mode
:class:`~keel.integration.orchestrator.TradingOrchestrator` both run it.

The simulated venue treats a held position whose funding time passes without
a recorded rate as an error, so a run without an explicit end stops where the
funding data of its symbols stops (:func:`funding_coverage_end`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from mypy_extensions import mypyc_attr

from keel.config import KeelConfig
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, SimulatedClock
from keel.core.instruments import load_instruments
from keel.core.intervals import INTERVAL_MS
from keel.core.messages import BarClosed, Message, reset_message_ids
from keel.integration.pipeline import build_feed, build_monitors, build_pipeline, log_gaps, require_instruments
from keel.market_data.feeds import prepared_funding
from keel.strategy_engine.base import BaseStrategy
from keel.strategy_engine.regime import installed_regime_fit_store
from keel.strategy_engine.regime_prefetch import PrefetchedRegimeFits, prefetched_regime_fits, start_prefetch_worker

ProgressCallback = Callable[[int, int], None]
"""Called with (events done, events in total)."""


@mypyc_attr(allow_interpreted_subclasses=True)
class RecordedRun:
    """The configured pipeline wired over the recorded feed, ready to replay.

    Parameters
    ----------
    config
        The configuration (data, strategy, portfolio, risk, execution, venue).
    strategy
        A strategy to run instead of the configured one.
    measure_latency
        Time every bus handler call (the status's handler latencies); a
        backtest, which reads none, runs without.
    reset_ids
        Restart the process's message ids (reproducible ids); a backtest run
        inside a trading process (the backtest gate) keeps them going.
    fit_worker
        Make the regime refits, each bar's regime view and the bar-only
        strategies' views ahead of the replay in a worker process
        (:mod:`keel.strategy_engine.regime_prefetch`): the same fits, views
        and orders, less wall time with a spare core. Not when a regime fit store
        is installed already (tuning trials share theirs).

    Attributes
    ----------
    fit_prefetch : PrefetchedRegimeFits or None
        The worker's store during and after the replay (its hits and misses),
        None when the replay made every fit itself.

    Raises
    ------
    ConfigurationError
        For a symbol without an instrument specification.
    MalformedDataError
        If the data files are unreadable or hold no bars in the range.
    """

    def __init__(
        self,
        config: KeelConfig,
        strategy: BaseStrategy | None = None,
        *,
        measure_latency: bool = True,
        reset_ids: bool = True,
        fit_worker: bool = False,
    ) -> None:
        if reset_ids:
            reset_message_ids()
        regimes = config.strategy.name == "strategy_manager" and config.strategy.regime.enabled
        if fit_worker and regimes and installed_regime_fit_store() is None:
            start_prefetch_worker()  # it loads the fitting libraries while the data loads
        instruments = load_instruments(config.exchange.instruments)
        require_instruments(config, instruments)
        self.config = config
        self.feed = build_feed(config)
        self.gaps = log_gaps(self.feed)
        self.handler_failures: list[str] = []
        bus = EventBus(
            config.bus.capacity,
            on_handler_error=lambda name, message, error: self.handler_failures.append(f"{name}: {error!r}"),
            measure_latency=measure_latency,
        )
        self.clock = SimulatedClock(self.feed.summary.first_ns)
        self.pipeline = build_pipeline(
            config, instruments, bus, self.clock, strategy=strategy, client_order_namespace="keel"
        )
        self.monitors = build_monitors(config, bus, self.clock, components=self.pipeline.components)
        self.fit_worker = fit_worker
        self.fit_prefetch: PrefetchedRegimeFits | None = None
        self.bars = 0
        self.events = 0
        self.finished = False

    def replay(self, progress: ProgressCallback | None = None) -> None:
        """Start the pipeline, replay every recorded event through it, stop it.

        The objects that exist before the replay (the loaded data, the
        configuration, the built pipeline) are kept out of the garbage
        collector's scans while it runs (``gc.freeze``): otherwise every full
        collection walks them again. They are handed back afterwards. A
        process that froze its own objects already (a paper or live session
        running a strategy's backtest gate, a forked tuning worker) keeps its
        freeze as it is: unfreezing would hand its long-lived objects back too.
        """
        if gc.get_freeze_count() > 0:
            self._replay(progress)
            return
        gc.freeze()
        try:
            self._replay(progress)
        finally:
            gc.unfreeze()

    def _replay(self, progress: ProgressCallback | None) -> None:
        manager = self.pipeline.strategy.manager
        factory = manager.detector_factory
        if not self.fit_worker or installed_regime_fit_store() is not None:
            factory = None
        feed = self.feed
        interval_ns = INTERVAL_MS[feed.interval] * NANOS_PER_MILLI
        strategies = manager.bar_only_strategies() if factory is not None else []
        with prefetched_regime_fits(
            factory, feed.symbols, self._detector_bars, interval_ns, self.clock.timestamp_ns, strategies
        ) as store:
            self.fit_prefetch = store
            if store is None:
                self._replay_events(progress)
                return
            manager.use_fit_store(store)
            manager.use_bar_views(store)
            try:
                self._replay_events(progress)
            finally:
                manager.use_bar_views(None)
                manager.use_fit_store(None)

    def _detector_bars(self, symbol: str) -> tuple[np.ndarray, np.ndarray]:
        """Return the bars a symbol's regime detector is fed: the warm-up's, then the replay's."""
        ts, ohlcv = self.feed.symbol_bars(symbol)
        warmup = self.pipeline.warmup
        if warmup is None:
            return ts, ohlcv
        before_ts, before_ohlcv = warmup.symbol_bars(symbol)
        return np.concatenate([before_ts, ts]), np.concatenate([before_ohlcv, ohlcv])

    def _replay_events(self, progress: ProgressCallback | None) -> None:
        pipeline, clock = self.pipeline, self.clock
        bus, recorder, positions = pipeline.bus, pipeline.recorder, pipeline.positions
        for monitor in self.monitors:
            monitor.start()
        pipeline.start()
        bus.drain()
        total = self.feed.summary.bars + self.feed.summary.funding_events
        pending_bar_ts: int | None = None
        message: Message
        for message in self.feed:
            ts = message.ts_event
            if pending_bar_ts is not None and ts != pending_bar_ts:
                recorder.record_equity_of(positions, pending_bar_ts)
                pending_bar_ts = None
            clock.advance_to(ts)
            bus.publish(message)
            bus.drain()
            self.events += 1
            if message.__class__ is BarClosed:
                self.bars += 1
                pending_bar_ts = ts
            if progress is not None and self.events % 10_000 == 0:
                progress(self.events, total)
        if pending_bar_ts is not None:
            recorder.record_equity_of(positions, pending_bar_ts)
        if progress is not None:
            progress(self.events, total)
        pipeline.stop()
        for monitor in self.monitors:
            monitor.stop()
        bus.drain()
        self.finished = True


def funding_coverage_end(config: KeelConfig, symbols: tuple[str, ...]) -> datetime | None:
    """Return when the funding data of ``symbols`` stops covering a held position (None: no funding at all).

    That is the earliest, over the symbols, of the last recorded settlement
    plus the symbol's funding interval; a symbol without any recorded funding
    does not bound it (holding it through a funding time fails loudly instead).
    """
    data = config.data
    if data.funding is None:
        return None
    columns = prepared_funding(data.root / data.funding).arrays
    ends = []
    for symbol in symbols:
        times = columns["time_ms"][columns["symbol"] == symbol]
        if times.size == 0:
            continue
        hours = config.exchange.funding_interval_hours.get(symbol, 8)
        last_hour_ms = int(times.max()) // 3_600_000 * 3_600_000
        ends.append(last_hour_ms + hours * 3_600_000)
    return datetime.fromtimestamp(min(ends) / 1000, tz=UTC) if ends else None


def bounded_by_funding(config: KeelConfig) -> KeelConfig:
    """Return ``config`` with ``data.end`` at the funding data's coverage when no end is set."""
    data = config.data
    if data.end is not None:
        return config
    covered = funding_coverage_end(config, data.symbols)
    if covered is None or (data.start is not None and covered <= data.start):
        return config
    return config.model_copy(update={"data": data.model_copy(update={"end": covered})})
