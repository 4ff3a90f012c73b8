"""Paper trading: the pipeline in wall-clock time on a replayed feed and a simulated venue.

:class:`PaperSession` paces the recorded feed by a
:class:`~keel.core.clock.LiveClock` that starts at the data's first timestamp
and runs ``speed`` times faster than the wall clock, and pushes it through the
asyncio bus loop into the simulated exchange. The components' own clock is
the data's time, advanced by the feed as each event is due, so their timers
(the rebalance schedule) fire between the same events as in a backtest and a
replay places the same orders as the backtest of the same data. It stops when the data ends, the duration
elapses or :meth:`PaperSession.request_stop` is called (the CLI wires SIGINT
and SIGTERM to it), and then shuts down cleanly: the bus drained, components
stopped, and the final state written. At the end of the data open orders are
canceled; a stop before it leaves them working at the paper venue (which
pauses with keel) for the restart to go on with, unless
``paper.cancel_orders_on_stop`` cancels them.

The paper account outlives the process, like a real venue's: the simulated
venue commits its state to its own file (``paper.venue_state_file``) and
keel journals everything to its database (through a write-behind thread with
a spill file under ``run.output_dir`` for outages; what a run left in the
spill file is copied into the database before anything else). A start after a session that did
not finish (a stop, a crash, kill -9) recovers it
(:mod:`keel.integration.recovery`): the session's history replayed up to the
venue's last market event (so every decision's state is where it was),
snapshot, journal, reconciliation with the venue, and the feed resumes after
that event. A start after a finished session (its data ended) opens a fresh
paper account.

The venue is a :class:`~keel.integration.venues.SessionVenue`: the durable
simulated exchange by default, or Binance for live trading
(:class:`keel.integration.live.BinanceVenue`), which starts the session
REDUCING and lets it trade ACTIVE only once reconciliation with the venue
found nothing it could not explain.

On the live market (``paper.feed: binance``, and so live) scheduled
strategies fire on the wall clock: an APScheduler scheduler
(:mod:`keel.integration.schedules`) starts with trading and stops first at
shutdown; on the replayed feed they keep the bars' clock, like a backtest.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from keel.api.binance.klines import fetch_warmup
from keel.config import KeelConfig, config_to_dict
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_SECOND, LiveClock, SimulatedClock
from keel.core.fsm import TradingState
from keel.core.instruments import Instrument, load_instruments
from keel.core.messages import (
    BarClosed,
    CancelAllOrders,
    MarketDataEvent,
    ReconciliationCompleted,
    SessionEnded,
    SessionStarted,
    SetTradingState,
)
from keel.integration.live import live_endpoints
from keel.integration.orchestrator import TradingOrchestrator
from keel.integration.performance import PerformanceBounds, PerformanceEnhancer
from keel.integration.pipeline import (
    Pipeline,
    build_feed,
    build_monitors,
    build_pipeline,
    log_gaps,
    require_instruments,
    warm_up,
)
from keel.integration.recovery import (
    ReplayedHistory,
    capture_state,
    events_after,
    events_until,
    replay_history,
)
from keel.integration.reports import BARS_PER_YEAR, iso_time, money, run_metrics, write_run_records
from keel.integration.schedules import build_scheduler
from keel.integration.state_manager import StateManager
from keel.integration.strategy_gate import StrategyGatekeeper, market_history
from keel.integration.system_monitor import LoopLagProbe
from keel.integration.venues import SessionVenue, SimulatedVenue
from keel.persistence import AuditLog, Database, Journal, Settings, Snapshots
from keel.persistence.backup import AccountLock, BackupError, BackupManager
from keel.persistence.write_behind import SpillFile, copy_spill
from keel.strategy_engine.fit_worker import FitWorker
from keel.strategy_engine.regime import load_fit_libraries

if TYPE_CHECKING:
    from keel.api.binance.streams import BinanceMarketStream

_log = structlog.get_logger("keel.paper")

StatusCallback = Callable[[dict[str, Any]], None]
FINISHED_ORDERS_KEPT = 10_000
"""Finished orders a session keeps in memory (and in its orders.csv); the journal has them all."""
EQUITY_POINTS_KEPT = 10_080
"""Equity points (a week of 1m bars) a session keeps in memory; older ones go to ``equity-spill.csv``."""
RECONCILING = "live: waiting for reconciliation with the venue"


class PaperSession:
    """One paper-trading run over the replayed bundled data.

    Parameters
    ----------
    config
        The configuration (``paper`` section: speed, duration, status interval).
    run_dir
        Folder the final state and records are written to.
    on_status
        Called with :meth:`status` every ``paper.status_interval_seconds``.
    venue
        The venue; the durable simulated exchange when None.
    """

    def __init__(
        self,
        config: KeelConfig,
        run_dir: Path,
        on_status: StatusCallback | None = None,
        venue: SessionVenue | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self._on_status = on_status
        self._stop = asyncio.Event()
        self._froze_startup_objects = False
        self.stop_reason = ""
        self.bars = 0
        self.events = 0
        self.handler_errors = 0
        self._feed_done = False
        self._announced = False
        self.reconciliation: dict[str, Any] | None = None
        self.backups: list[str] = []
        output = Path(config.run.output_dir)
        # One database across runs (not per run folder): the journal is what a restart recovers from.
        self.database = Database(config.persistence.url or f"sqlite:///{output / 'keel.db'}")
        # One writer per account: a second run (or a restore) on this database is refused while this one lives.
        self.account_lock = AccountLock(self.database).acquire()
        self.database.migrate()
        journal, snapshots = Journal(self.database), Snapshots(self.database)
        # What the journal spilled while the database was out (the last run's end) goes in before recovery reads it.
        spill = SpillFile(output / config.persistence.spill_file)
        copied = copy_spill(journal, spill)
        if copied:
            _log.warning("journal entries spilled by the last run copied into the database", entries=copied)
        instruments = load_instruments(config.exchange.instruments)
        require_instruments(config, instruments)
        self.venue = SimulatedVenue(config) if venue is None else venue
        self.journal = journal
        self.plan, cursor = self.venue.plan(journal, config.paper.resume)
        bus = EventBus(config.bus.capacity, on_handler_error=self._handler_failed)
        self.market_stream: BinanceMarketStream | None = None
        if config.paper.feed == "binance":
            # The live market: time is the exchange's (from now on); Binance's last closed klines warm it up.
            self.market_stream = build_market_stream(config, instruments)
            self.clock = SimulatedClock(time.time_ns())
            self._events: Iterable[MarketDataEvent] = ()
            pipeline_config = config.model_copy(
                update={"data": config.data.model_copy(update={"start": None, "end": None})}
            )
        else:
            pipeline_config = config
            self.feed = build_feed(config)
            log_gaps(self.feed)
            self.clock = SimulatedClock(self.feed.summary.first_ns)
            self._events = events_after(self.feed, cursor)
        exchange = self.venue.exchange({s: instruments[s] for s in config.data.symbols}, self.clock)
        self.pipeline = build_pipeline(pipeline_config, instruments, bus, self.clock, exchange=exchange)
        gatekeeper = self.pipeline.gatekeeper
        if self.market_stream is not None and isinstance(gatekeeper, StrategyGatekeeper):
            # The gate backtests Binance's last days, judged off the loop while the other strategies trade.
            gatekeeper.use_market_history(market_history(config, self.market_stream.rest_url))
        # On the live market scheduled strategies fire on the wall clock (a replay keeps the bars' clock).
        self.scheduler = None
        if self.market_stream is not None:
            resumed = journal if self.plan.recover else None
            self.scheduler = build_scheduler(self.pipeline, resumed, self.plan.first_sequence)
        # A long run keeps memory flat: old finished orders are dropped, the old equity curve goes to disk.
        self.pipeline.orders.finished_orders_kept = FINISHED_ORDERS_KEPT
        self.pipeline.recorder.spill_equity(run_dir / "equity-spill.csv", EQUITY_POINTS_KEPT)
        persistence = config.persistence
        self.state = StateManager(
            journal,
            bus,
            self.clock,
            spill=spill,
            flush_every=persistence.journal_flush_every,
            flush_interval_seconds=persistence.journal_flush_seconds,
            snapshots=snapshots,
            capture=lambda: capture_state(self.pipeline),
            snapshot_every=persistence.snapshot_every,
            snapshot_interval_ns=int(persistence.snapshot_interval_seconds * NANOS_PER_SECOND),
            buffer_capacity=persistence.journal_buffer,
            stall_timeout_seconds=persistence.database_stall_seconds,
        )
        orders = self.pipeline.orders
        self.loop_lag = LoopLagProbe()
        self.monitors = build_monitors(
            config,
            bus,
            self.clock,
            venue_failures=lambda: orders.venue_unreachable,
            database_component=self.state.name,
            loop_lag=lambda: self.loop_lag.lag_seconds,
            components=self.pipeline.components,
        )
        settings = Settings(self.database)
        if not config.paper.resume:
            _forget_operator_limits(settings)
        self.orchestrator = TradingOrchestrator(
            self.pipeline,
            config,
            AuditLog(self.database),
            monitor=self.monitors[0],
            settings=settings,
            venue_status=self.venue.venue_status,
        )
        self.orchestrator.apply_saved_settings()
        if self.scheduler is not None:
            self.orchestrator.scheduled_fire = self.scheduler.next_fire_time
        self.history: ReplayedHistory | None = None
        self.warmup: dict[str, Any] = {}
        self.warmed_until: dict[str, int] = {}
        self.performance: PerformanceEnhancer | None = None
        if self.plan.recover:
            if cursor is not None and self.market_stream is None and self.venue.replays_history:
                # Decisions first, on the pipeline's own venue; then the real venue and the journal's books.
                self.history = replay_history(self.pipeline, events_until(self.feed, cursor))
            self.venue.restore(self.pipeline, journal, snapshots, self.plan, self.history)
        self.venue.attach(self.pipeline)
        self.pipeline.orders.set_write_ahead(self.state.write_ahead)
        self.fit_worker: FitWorker | None = None

    def request_stop(self, reason: str) -> None:
        """Ask the session to shut down cleanly (safe to call from a signal handler)."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    async def run(self) -> dict[str, Any]:
        """Run until the data ends, the duration elapses or a stop is requested; return the final status."""
        config, clock, pipeline = self.config, self.clock, self.pipeline
        bus = pipeline.bus
        self._start_fit_worker()
        bus_task = asyncio.create_task(bus.run(), name="bus")
        for monitor in self.monitors:
            monitor.start()
        if self.market_stream is not None:
            await self._warm_up_on_binance()
        if self.history is None:
            pipeline.start()
        self.state.start()
        await bus.join()
        reconciling = self._hold_until_reconciled()
        await bus.join()
        venue_task = asyncio.create_task(self._open_venue(reconciling), name="venue")
        stop_task = asyncio.create_task(self._stop.wait(), name="stop-before-trading")
        duration = config.paper.duration_seconds
        # A venue that does not answer (Binance out of reach) is waited for at most the run's duration too.
        await asyncio.wait({venue_task, stop_task}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if not venue_task.done():
            if not self._stop.is_set():
                self.request_stop(f"duration of {duration:g} s elapsed before the venue opened")
            venue_task.cancel()
            await asyncio.gather(venue_task, return_exceptions=True)
            return await self._finish(bus, bus_task)
        if venue_task.exception() is not None:
            # The venue needs an operator (its keys were refused): shut down cleanly, then say so.
            self.request_stop(f"venue: {venue_task.exception()}")
            await self._finish(bus, bus_task)
            venue_task.result()
        self.orchestrator.running = True
        if self.scheduler is not None:
            self.scheduler.start()
        self._froze_startup_objects = _freeze_startup_objects()
        pending_bar_ts = None if self.history is None else self.history.pending_bar_ts
        if self.market_stream is None:
            # Paced from where the feed goes on (the data's first time, or after a restart the replayed
            # history's end) and from now: the set-up's time is not made up by racing through the first bars.
            pace = LiveClock(origin_ns=clock.timestamp_ns(), speed=config.paper.speed)
            source = self._replay(self._events, pipeline, clock, pace, pending_bar_ts)
        else:
            source = self._follow(self.market_stream, pipeline, clock)
        feed_task = asyncio.create_task(source, name="feed")
        status_task = asyncio.create_task(self._report_status(), name="status")
        backup_task = asyncio.create_task(self._back_up_periodically(), name="backup")
        lag_task = asyncio.create_task(self.loop_lag.run(), name="loop-lag")
        performance_task = asyncio.create_task(self._watch_performance(), name="performance")
        waiters = {feed_task, asyncio.create_task(self._stop.wait(), name="stop")}
        done, _ = await asyncio.wait(waiters, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        if feed_task in done:
            feed_task.result()
            self.request_stop("end of data")
        elif not done:
            self.request_stop(f"duration of {duration:g} s elapsed")
        for task in (*waiters, status_task, backup_task, lag_task, performance_task):
            task.cancel()
        await asyncio.gather(*waiters, status_task, backup_task, lag_task, performance_task, return_exceptions=True)
        return await self._finish(bus, bus_task)

    async def _finish(self, bus: EventBus, bus_task: asyncio.Task[None]) -> dict[str, Any]:
        """Shut down, close the venue, write the final state and release the account."""
        await self._shutdown(self.pipeline, bus, bus_task)
        # Not running from here: a status read while the worker and the venue close sees stopped components.
        self.orchestrator.running = False
        if self.fit_worker is not None:
            await asyncio.to_thread(self.fit_worker.shutdown, True, cancel_futures=True)
            self.fit_worker = None
        await self.venue.disconnect()
        final = self.status()
        self._write(final)
        self.database.dispose()
        self.account_lock.release()
        if self._froze_startup_objects:
            # A process that goes on (another session, a test run) gets its collector's view back.
            gc.unfreeze()
            self._froze_startup_objects = False
        return final

    def _start_fit_worker(self) -> None:
        """Move the regime refits to a worker process, off the event loop, when they are used a bar or more later.

        A refit used on the bar it started at (``fit_delay_bars`` 0) has to run
        inline. The worker imports the fitting libraries (and nothing else of
        keel's) at once, while the session starts; this process never loads them.
        """
        strategy = self.config.strategy
        if strategy.name != "strategy_manager" or not strategy.regime.enabled or strategy.regime.fit_delay_bars < 1:
            return
        self.fit_worker = FitWorker()
        self.fit_worker.submit(load_fit_libraries)
        self.pipeline.strategy.manager.use_fit_executor(self.fit_worker)

    async def _regime_fit_ready(self, symbol: str) -> None:
        """Wait, off the event loop, for the regime refit the next bar of ``symbol`` applies."""
        fit = self.pipeline.strategy.manager.fit_due_next(symbol)
        if fit is not None and not fit.done():
            await asyncio.wait([asyncio.wrap_future(fit)])

    def _hold_until_reconciled(self) -> bool:
        """Live: trade REDUCING until the venue is reconciled (unless a restored state is stricter already)."""
        if self.venue.mode != "live":
            return False
        risk, restored = self.pipeline.risk, self.state.restored_state
        ours = restored is not None and restored.state is TradingState.REDUCING and restored.reason == RECONCILING
        if risk.trading_state is not TradingState.ACTIVE and not ours:
            return False
        now = self.clock.timestamp_ns()
        hold = SetTradingState(state=TradingState.REDUCING, reason=RECONCILING, ts_event=now, ts_init=now)
        self.pipeline.bus.publish(hold)
        return True

    async def _warm_up_on_binance(self) -> None:
        """Warm the pipeline up (untraded) on Binance's last ``strategy.warmup_bars`` closed klines before now.

        Unreachable klines leave the strategies to warm up on live bars (logged, and in the status).
        """
        config = self.config
        count = config.strategy.warmup_bars
        stream = self.market_stream
        assert stream is not None
        end_ms = self.clock.timestamp_ns() // NANOS_PER_MILLI
        error = ""
        try:
            fetched = await fetch_warmup(stream.rest_url, config.data.symbols, config.data.bar_interval, count, end_ms)
        except (aiohttp.ClientError, OSError, TimeoutError) as failure:
            fetched, error = {}, repr(failure)
            _log.warning("no warm-up klines from Binance: the strategies warm up on live bars", error=error)
        bars = sorted((bar for history in fetched.values() for bar in history.bars), key=lambda b: b.ts_event)
        warm_up(self.pipeline, bars)
        self.warmed_until = {symbol: h.bars[-1].ts_event for symbol, h in fetched.items() if h.bars}
        self.warmup = {
            "bars": len(bars),
            "malformed": sum(h.malformed for h in fetched.values()),
            "requests": sum(h.requests for h in fetched.values()),
            "overlap_dropped": 0,
            "error": error,
        }

    async def _open_venue(self, reconciling: bool) -> None:
        """Connect the venue, take the opening capital, reconcile, announce the session; ACTIVE when it all agreed."""
        pipeline, bus, plan = self.pipeline, self.pipeline.bus, self.plan
        await self.venue.connect(pipeline)
        capital = await self.venue.opening_capital(pipeline, plan, self.journal)
        completed = await self.venue.reconcile(pipeline, plan)
        if completed is not None:
            self.reconciliation = _reconciliation(completed)
        self.orchestrator.session = {
            "number": plan.session,
            "recovered": plan.recover,
            "reconciliation": self.reconciliation,
        }
        now = self.clock.timestamp_ns()
        bus.publish(
            SessionStarted(
                session=plan.session,
                mode=self.venue.mode,
                recovered=plan.recover,
                initial_capital=capital,
                ts_event=now,
                ts_init=now,
            )
        )
        await bus.join()
        self._announced = True
        if reconciling and completed is not None and not completed.mismatches:
            if pipeline.risk.trading_state is TradingState.REDUCING:
                now = self.clock.timestamp_ns()
                reason = "live: reconciled with the venue"
                bus.publish(SetTradingState(state=TradingState.ACTIVE, reason=reason, ts_event=now, ts_init=now))
            await bus.join()

    async def _replay(
        self,
        feed: Iterable[MarketDataEvent],
        pipeline: Pipeline,
        clock: SimulatedClock,
        pace: LiveClock,
        pending_bar_ts: int | None,
    ) -> None:
        """Feed the events paced by ``pace``; ``pending_bar_ts`` is a bar time whose equity is still to record.

        A stop requested while an event is handled ends the feed before the
        next one, so a session stops between events, with their reactions done.
        """
        bus = pipeline.bus
        for event in feed:
            if self._stop.is_set():
                return
            ts = event.ts_event
            if ts != pending_bar_ts:
                if pending_bar_ts is not None:
                    pipeline.record_equity(pending_bar_ts)
                    pending_bar_ts = None
                delay = pace.wall_seconds_until(ts)
                if delay > 0:
                    await asyncio.sleep(delay)
                clock.advance_to(ts)
            if event.__class__ is BarClosed:
                await self._regime_fit_ready(event.symbol)
            await bus.put(event)
            self.events += 1
            if event.__class__ is BarClosed:
                self.bars += 1
                pending_bar_ts = ts
            # React to each event before the next, exactly as a backtest does,
            # so a replay places the same orders as the backtest of the same data.
            await bus.join()
        await bus.join()
        if pending_bar_ts is not None:
            pipeline.record_equity(pending_bar_ts)
        self._feed_done = True

    async def _follow(self, stream: BinanceMarketStream, pipeline: Pipeline, clock: SimulatedClock) -> None:
        """Feed the live market streams' events as they arrive, each handled before the next.

        The clock follows the exchange's event times (never back: streams of
        different kinds arrive slightly out of time order).
        """
        bus = pipeline.bus
        pending_bar_ts: int | None = None
        async for event in stream.events():
            if self._stop.is_set():
                return
            ts = event.ts_event
            if isinstance(event, BarClosed) and ts <= self.warmed_until.get(event.symbol, -1):
                self.warmup["overlap_dropped"] += 1  # the warm-up had it already
                continue
            if pending_bar_ts is not None and ts != pending_bar_ts:
                pipeline.record_equity(pending_bar_ts)
                pending_bar_ts = None
            if ts > clock.timestamp_ns():
                clock.advance_to(ts)
            if isinstance(event, BarClosed):
                await self._regime_fit_ready(event.symbol)
            await bus.put(event)
            self.events += 1
            if event.__class__ is BarClosed:
                self.bars += 1
                pending_bar_ts = ts
            await bus.join()

    async def _watch_performance(self) -> None:
        """Measure the process for /metrics and tune its knobs within the ``performance`` bounds, unless off."""
        settings = self.config.performance
        if not settings.enabled:
            return
        bounds = PerformanceBounds(
            max_bus_capacity=settings.max_bus_capacity,
            max_snapshot_every=settings.max_snapshot_every,
            max_gc_threshold=settings.max_gc_threshold,
            lag_threshold_ms=settings.lag_threshold_ms,
            gc_share_threshold=settings.gc_share_threshold,
        )
        self.performance = PerformanceEnhancer(self.pipeline.bus, self.state, bounds)
        self.orchestrator.process_metrics = self.performance.resource_metrics
        try:
            await self.performance.run(settings.interval_seconds, auto_tune=settings.auto_tune)
        finally:
            self.orchestrator.process_metrics = None
            self.performance.close()

    async def _report_status(self) -> None:
        interval = self.config.paper.status_interval_seconds
        while True:
            await asyncio.sleep(interval)
            if self._on_status is not None:
                self._on_status(self.status())

    async def _back_up_periodically(self) -> None:
        """Take a backup every ``persistence.backup_interval_hours``, then apply the retention."""
        settings = self.config.persistence
        if settings.backup_interval_hours is None:
            return
        manager = backup_manager(self.config)
        max_age = None if settings.backup_max_age_days is None else timedelta(days=settings.backup_max_age_days)
        while True:
            await asyncio.sleep(settings.backup_interval_hours * 3600)
            try:
                info = await asyncio.to_thread(manager.create)
                removed = await asyncio.to_thread(manager.prune, settings.backup_keep, max_age)
            except (BackupError, OSError) as error:
                _log.error("scheduled backup failed", error=str(error))
                continue
            self.backups.append(info.name)
            _log.info("backup created", backup=info.name, path=str(info.path), deleted=removed)

    async def _shutdown(self, pipeline: Pipeline, bus: EventBus, bus_task: asyncio.Task[None]) -> None:
        now = pipeline.clock.timestamp_ns()
        open_orders = len(pipeline.orders.open_orders())
        # A stop before the data ends is a pause: the paper venue stops with keel, and the restart goes on working.
        cancel = self._feed_done or self.config.paper.cancel_orders_on_stop
        if cancel:
            pipeline.router.cancel_parents(f"shutdown: {self.stop_reason}")
        pipeline.deliver_in_flight()
        await bus.join()
        if cancel:
            reason = f"shutdown: {self.stop_reason}"
            bus.publish(CancelAllOrders(symbol=None, reason=reason, ts_event=now, ts_init=now))
            await bus.join()
        # Shutting down outlasts every request's flight: the cancels (and what they cancel) reach the venue.
        pipeline.deliver_in_flight()
        await bus.join()
        if self._announced:
            # A session stopped before it was announced (the venue never connected) did not begin.
            bus.publish(
                SessionEnded(
                    session=self.plan.session,
                    reason=self.stop_reason,
                    finished=self._feed_done,
                    ts_event=now,
                    ts_init=now,
                )
            )
            await bus.join()
        if self.scheduler is not None:
            self.scheduler.stop()
        pipeline.stop()
        await bus.join()
        self.state.stop()
        for monitor in self.monitors:
            monitor.stop()
        await bus.join()
        bus.stop()
        await bus_task
        _log.info("paper session stopped", reason=self.stop_reason, open_orders=open_orders, canceled=cancel)

    def status(self) -> dict[str, Any]:
        """Return a snapshot: time, progress, equity, P&L, orders, bus and trading state."""
        pipeline = self.pipeline
        positions = pipeline.positions
        equity = positions.equity()
        return {
            "time": iso_time(pipeline.clock.timestamp_ns()),
            "bars": self.bars,
            "events": self.events,
            "equity": money(equity),
            "pnl": money(equity - positions.initial_capital),
            "gross_exposure": money(positions.gross_exposure()),
            "orders": len(pipeline.orders.orders),
            "open_orders": len(pipeline.orders.open_orders()),
            "fills": positions.fills,
            "bus_depth": pipeline.bus.depth,
            "bus_high_water_mark": pipeline.bus.high_water_mark,
            "handler_errors": self.handler_errors,
            "trading_state": pipeline.risk.trading_state.value,
            "feed_finished": self._feed_done,
            "stop_reason": self.stop_reason,
            "session": self.plan.session,
            "recovered": self.plan.recover,
            "reconciliation": self.reconciliation,
            **({} if self.market_stream is None else {"market_stream": self.market_stream.health()}),
            **({"warmup": self.warmup} if self.warmup else {}),
        }

    def _write(self, final: dict[str, Any]) -> None:
        pipeline = self.pipeline
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = run_metrics(pipeline, BARS_PER_YEAR[self.config.data.bar_interval])
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        state = {
            "status": final,
            "positions": {
                s: {"quantity": str(p.quantity), "entry_price": str(p.entry_price), "realized_pnl": str(p.realized_pnl)}
                for s, p in sorted(pipeline.positions.positions.items())
            },
            "open_orders": [o.client_order_id for o in pipeline.orders.open_orders()],
            "trading_state": pipeline.risk.trading_state.value,
            "metrics": metrics,
        }
        (self.run_dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        (self.run_dir / "config.json").write_text(
            json.dumps(config_to_dict(self.config), indent=2, sort_keys=True, default=str) + "\n"
        )
        write_run_records(self.run_dir, pipeline)
        self.venue.close()

    def _handler_failed(self, name: str, message: object, error: BaseException) -> None:
        self.handler_errors += 1


def _forget_operator_limits(settings: Settings) -> None:
    """Start a fresh session from the configured risk limits: the last session's operator limits are forgotten."""
    forgotten = settings.clear_risk_limits()
    if forgotten:
        _log.warning(
            "a fresh session was asked for: the risk limits operators set are forgotten, the configured ones apply",
            forgotten={name: str(value) for name, value in sorted(forgotten.items())},
        )


def _reconciliation(completed: ReconciliationCompleted) -> dict[str, Any]:
    return {
        "adopted_orders": list(completed.adopted_orders),
        "never_sent_orders": list(completed.never_sent_orders),
        "missed_fills": completed.missed_fills,
        "missed_funding": completed.missed_funding,
        "mismatches": list(completed.mismatches),
    }


def build_market_stream(config: KeelConfig, instruments: Mapping[str, Instrument]) -> BinanceMarketStream:
    """The Binance market streams of the configured symbols at ``binance.ws_url`` (klines of ``data.bar_interval``)."""
    # Imported here: the streams' order book loads numba, which the replayed feed never needs.
    from keel.api.binance.streams import BinanceMarketStream

    rest_url, ws_url = live_endpoints(config) if config.run.mode == "live" else config.binance.endpoints()
    symbols = {symbol: instruments[symbol].tick_size for symbol in config.data.symbols}
    return BinanceMarketStream(ws_url, rest_url, symbols, interval=config.data.bar_interval, seed=config.run.seed)


def _freeze_startup_objects() -> bool:
    """Move everything set-up and warm-up created out of the garbage collector's reach.

    Those objects (modules, recorded data, compiled problems, warmed-up
    indicators) live for the whole session; left in the collector's
    generations, every full collection walks them all while the loop waits.
    Return whether nothing was frozen before: only then may the session's end
    unfreeze (a freeze the process made earlier stays as it was).
    """
    first = gc.get_freeze_count() == 0
    gc.collect()
    gc.freeze()
    return first


def backup_manager(config: KeelConfig) -> BackupManager:
    """The `BackupManager` of the account ``config`` runs on: its database, paper venue and backup folder."""
    output = Path(config.run.output_dir)
    return BackupManager(
        config.persistence.url or f"sqlite:///{output / 'keel.db'}",
        config.persistence.backup_dir or output / "backups",
        config=config.model_dump(mode="json", exclude={"secrets"}),
        venue_state_file=output / config.paper.venue_state_file if config.run.mode == "paper" else None,
    )
