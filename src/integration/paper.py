"""Paper trading: the pipeline in wall-clock time on a replayed feed and a simulated venue.

:class:`PaperSession` paces the recorded feed by a
:class:`~keel.core.clock.LiveClock` that starts at the data's first timestamp
and runs ``speed`` times faster than the wall clock, and pushes it through the
asyncio bus loop into the simulated exchange. The components' own clock is
the data's time, advanced by the feed as each event is due, so their timers
(the rebalance schedule) fire between the same events as in a backtest and a
replay places the same orders as the backtest of the same data. It stops when the data ends, the duration
elapses or :meth:`PaperSession.request_stop` is called (the CLI wires SIGINT
and SIGTERM to it), and then shuts down cleanly: open orders canceled, the
bus drained, components stopped, and the final state written.

The paper account outlives the process, like a real venue's: the simulated
venue commits its state to its own file (``paper.venue_state_file``) and
keel journals everything to its database. A start after a session that did
not finish (a stop, a crash, kill -9) recovers it
(:mod:`keel.integration.recovery`): snapshot, journal, reconciliation with the
venue, and the feed resumes after the venue's last market event. A start after
a finished session (its data ended) opens a fresh paper account.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from keel.api import MarketCursor, VenueStore
from keel.config import KeelConfig, config_to_dict
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, LiveClock, SimulatedClock
from keel.core.instruments import load_instruments
from keel.core.messages import BarClosed, CancelAllOrders, MarketDataEvent, SessionEnded, SessionStarted
from keel.integration.orchestrator import TradingOrchestrator
from keel.integration.pipeline import Pipeline, build_feed, build_pipeline
from keel.integration.recovery import (
    SessionPlan,
    capture_state,
    events_after,
    plan_session,
    reconcile,
    restore_state,
)
from keel.integration.reports import BARS_PER_YEAR, iso_time, money, run_metrics, write_run_records
from keel.integration.state_manager import StateManager
from keel.integration.system_monitor import LoopLagProbe, build_monitors
from keel.market_data.feeds import INTERVAL_MS
from keel.persistence import AuditLog, Database, Journal, Settings, Snapshots

_log = structlog.get_logger("keel.paper")

StatusCallback = Callable[[dict[str, Any]], None]


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
    """

    def __init__(self, config: KeelConfig, run_dir: Path, on_status: StatusCallback | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self._on_status = on_status
        self._stop = asyncio.Event()
        self.stop_reason = ""
        self.bars = 0
        self.events = 0
        self.handler_errors = 0
        self._feed_done = False
        self.reconciliation: dict[str, Any] | None = None
        output = Path(config.run.output_dir)
        # One database across runs (not per run folder): the journal is what a restart recovers from.
        self.database = Database(config.persistence.url or f"sqlite:///{output / 'keel.db'}")
        self.database.migrate()
        journal, snapshots = Journal(self.database), Snapshots(self.database)
        instruments = load_instruments(config.exchange.instruments)
        self.venue_store = VenueStore(output / config.paper.venue_state_file)
        self.plan, cursor = self._plan(config, journal)
        if cursor is not None:
            config = _resumed_at(config, cursor)
        self.feed = build_feed(config)
        self.clock = SimulatedClock(self.feed.summary.first_ns)
        self._events: Iterable[MarketDataEvent] = events_after(self.feed, cursor)
        bus = EventBus(config.bus.capacity, on_handler_error=self._handler_failed)
        self.pipeline = build_pipeline(config, instruments, bus, self.clock)
        if self.plan.recover:
            self.venue_store.load_into(self.pipeline.exchange)
        self.venue_store.attach(self.pipeline.exchange)
        self.state = StateManager(
            journal,
            bus,
            self.clock,
            flush_every=config.persistence.journal_flush_every,
            snapshots=snapshots,
            capture=lambda: capture_state(self.pipeline),
            snapshot_every=config.persistence.snapshot_every,
        )
        self.pipeline.orders.set_write_ahead(self.state.write_ahead)
        if self.plan.recover:
            restore_state(self.pipeline, journal, snapshots, self.plan)
        orders = self.pipeline.orders
        self.loop_lag = LoopLagProbe()
        self.monitors = build_monitors(
            config,
            bus,
            self.clock,
            venue_failures=lambda: orders.venue_unreachable,
            loop_lag=lambda: self.loop_lag.lag_seconds,
        )
        self.orchestrator = TradingOrchestrator(
            self.pipeline, config, AuditLog(self.database), monitor=self.monitors[0], settings=Settings(self.database)
        )
        self.orchestrator.apply_saved_settings()

    def _plan(self, config: KeelConfig, journal: Journal) -> tuple[SessionPlan, MarketCursor | None]:
        """Recover the unfinished session with its venue's cursor, or open a fresh paper account."""
        plan = plan_session(journal)
        if plan.recover and not config.paper.resume:
            _log.warning("a fresh paper account was asked for: the unfinished session is closed", session=plan.session)
            journal.append([_closed(plan.session, "closed unfinished: a fresh paper account was asked for")])
            plan = SessionPlan(session=plan.session + 1, recover=False)
        if plan.recover:
            saved = self.venue_store.saved_state()
            if saved is not None:
                _log.warning("recovering an unfinished paper session", session=plan.session)
                return plan, saved.cursor
            _log.warning(
                "the unfinished session's paper venue state is gone: opening a fresh paper account",
                session=plan.session,
                venue_state=str(self.venue_store.path),
            )
            journal.append([_closed(plan.session, "closed unfinished: its paper venue state is gone")])
            plan = SessionPlan(session=plan.session + 1, recover=False)
        self.venue_store.reset()
        return plan, None

    def request_stop(self, reason: str) -> None:
        """Ask the session to shut down cleanly (safe to call from a signal handler)."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    async def run(self) -> dict[str, Any]:
        """Run until the data ends, the duration elapses or a stop is requested; return the final status."""
        config, feed, clock, pipeline = self.config, self.feed, self.clock, self.pipeline
        bus = pipeline.bus
        pace = LiveClock(origin_ns=feed.summary.first_ns, speed=config.paper.speed)
        bus_task = asyncio.create_task(bus.run(), name="bus")
        for monitor in self.monitors:
            monitor.start()
        pipeline.start()
        self.state.start()
        await bus.join()
        if self.plan.recover:
            completed = await reconcile(pipeline, self.plan.start_ts)
            self.reconciliation = {
                "adopted_orders": list(completed.adopted_orders),
                "never_sent_orders": list(completed.never_sent_orders),
                "missed_fills": completed.missed_fills,
                "missed_funding": completed.missed_funding,
                "mismatches": list(completed.mismatches),
            }
        self.orchestrator.session = {
            "number": self.plan.session,
            "recovered": self.plan.recover,
            "reconciliation": self.reconciliation,
        }
        now = clock.timestamp_ns()
        bus.publish(
            SessionStarted(
                session=self.plan.session, mode="paper", recovered=self.plan.recover, ts_event=now, ts_init=now
            )
        )
        await bus.join()
        self.orchestrator.running = True
        feed_task = asyncio.create_task(self._replay(self._events, pipeline, clock, pace), name="feed")
        status_task = asyncio.create_task(self._report_status(), name="status")
        lag_task = asyncio.create_task(self.loop_lag.run(), name="loop-lag")
        duration = config.paper.duration_seconds
        waiters = {feed_task, asyncio.create_task(self._stop.wait(), name="stop")}
        done, _ = await asyncio.wait(waiters, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        if feed_task in done:
            feed_task.result()
            self.request_stop("end of data")
        elif not done:
            self.request_stop(f"duration of {duration:g} s elapsed")
        for task in (*waiters, status_task, lag_task):
            task.cancel()
        await asyncio.gather(*waiters, status_task, lag_task, return_exceptions=True)
        await self._shutdown(pipeline, bus, bus_task)
        self.orchestrator.running = False
        final = self.status()
        self._write(final)
        self.database.dispose()
        return final

    async def _replay(
        self, feed: Iterable[MarketDataEvent], pipeline: Pipeline, clock: SimulatedClock, pace: LiveClock
    ) -> None:
        bus = pipeline.bus
        pending_bar_ts: int | None = None
        for event in feed:
            ts = event.ts_event
            if ts != pending_bar_ts:
                if pending_bar_ts is not None:
                    pipeline.record_equity(pending_bar_ts)
                    pending_bar_ts = None
                delay = pace.wall_seconds_until(ts)
                if delay > 0:
                    await asyncio.sleep(delay)
                clock.advance_to(ts)
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

    async def _report_status(self) -> None:
        interval = self.config.paper.status_interval_seconds
        while True:
            await asyncio.sleep(interval)
            if self._on_status is not None:
                self._on_status(self.status())

    async def _shutdown(self, pipeline: Pipeline, bus: EventBus, bus_task: asyncio.Task[None]) -> None:
        now = pipeline.clock.timestamp_ns()
        open_orders = len(pipeline.orders.open_orders())
        pipeline.router.cancel_parents(f"shutdown: {self.stop_reason}")
        pipeline.exchange.deliver_in_flight()
        await bus.join()
        bus.publish(CancelAllOrders(symbol=None, reason=f"shutdown: {self.stop_reason}", ts_event=now, ts_init=now))
        await bus.join()
        # Shutting down outlasts every request's flight: the cancels (and what they cancel) reach the venue.
        pipeline.exchange.deliver_in_flight()
        await bus.join()
        bus.publish(
            SessionEnded(
                session=self.plan.session, reason=self.stop_reason, finished=self._feed_done, ts_event=now, ts_init=now
            )
        )
        await bus.join()
        pipeline.stop()
        await bus.join()
        self.state.stop()
        for monitor in self.monitors:
            monitor.stop()
        await bus.join()
        bus.stop()
        await bus_task
        _log.info("paper session stopped", reason=self.stop_reason, canceled_orders=open_orders)

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
        }

    def _write(self, final: dict[str, Any]) -> None:
        pipeline = self.pipeline
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "status": final,
            "positions": {
                s: {"quantity": str(p.quantity), "entry_price": str(p.entry_price), "realized_pnl": str(p.realized_pnl)}
                for s, p in sorted(pipeline.positions.positions.items())
            },
            "open_orders": [o.client_order_id for o in pipeline.orders.open_orders()],
            "trading_state": pipeline.risk.trading_state.value,
            "metrics": run_metrics(pipeline, BARS_PER_YEAR[self.config.data.bar_interval]),
        }
        (self.run_dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        (self.run_dir / "config.json").write_text(
            json.dumps(config_to_dict(self.config), indent=2, sort_keys=True, default=str) + "\n"
        )
        write_run_records(self.run_dir, pipeline)
        self.venue_store.close()

    def _handler_failed(self, name: str, message: object, error: BaseException) -> None:
        self.handler_errors += 1


def _resumed_at(config: KeelConfig, cursor: MarketCursor) -> KeelConfig:
    """Return the configuration whose feed starts at the bar the venue's cursor is in."""
    interval_ns = INTERVAL_MS[config.data.bar_interval] * NANOS_PER_MILLI
    start = datetime.fromtimestamp((cursor.ts_event - interval_ns) / 1e9, tz=UTC)
    return config.model_copy(update={"data": config.data.model_copy(update={"start": start})})


def _closed(session: int, reason: str) -> SessionEnded:
    """The end of a session that will not be recovered (stamped with the wall clock: no data time yet)."""
    now = time.time_ns()
    return SessionEnded(session=session, reason=reason, finished=True, ts_event=now, ts_init=now)
