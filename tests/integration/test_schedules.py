"""Scheduled strategies on the wall clock: APScheduler fires onto the bus, the misfire policy, journaled fires."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keel.api.binance.local_market import bar_tape
from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, SimulatedClock
from keel.core.instruments import load_instruments
from keel.core.messages import BarClosed, Message, ScheduleFired, ScheduleMisfired, TargetQuantityProposed
from keel.integration.orchestrator import TradingOrchestrator
from keel.integration.paper import PaperSession
from keel.integration.pipeline import build_pipeline
from keel.integration.reports import iso_time
from keel.integration.schedules import StrategyScheduler, build_scheduler
from keel.integration.state_manager import JOURNALED
from keel.persistence import Database, Journal
from keel.strategy_engine import ScheduledDcaStrategy
from keel.strategy_engine.schedule import Schedule, to_ns
from kit.local_binance import ROOT, ns, start_local_binance

QUARTER = 15 * NANOS_PER_MINUTE
# 2025-05-08 00:00 UTC, a fire time of every schedule below.
T0 = to_ns(datetime(2025, 5, 8, tzinfo=UTC))


def scheduler_at(now: list[int], last_fire: int) -> tuple[StrategyScheduler, list[Message]]:
    bus = EventBus()
    published: list[Message] = []
    bus.subscribe(ScheduleFired, published.append)
    bus.subscribe(ScheduleMisfired, published.append)
    schedule = Schedule(timedelta(minutes=15), misfire_grace_seconds=300.0)
    scheduler = StrategyScheduler(
        {"scheduled_dca": schedule},
        bus,
        SimulatedClock(T0),
        last_fires={"scheduled_dca": last_fire},
        now=lambda: now[0],
    )
    return scheduler, published


def test_a_fire_due_within_the_grace_is_published_with_the_missed_ones_coalesced_into_it() -> None:
    # Arrange: four fire times passed since the last one acted on; the latest is two minutes old
    now = [T0 + 4 * QUARTER + 2 * NANOS_PER_MINUTE]
    scheduler, published = scheduler_at(now, T0)

    # Act
    fired = scheduler.fire_due("scheduled_dca", now[0])
    again = scheduler.fire_due("scheduled_dca", now[0])
    scheduler.bus.drain()

    # Assert
    assert published == [fired]
    assert fired == ScheduleFired(
        strategy="scheduled_dca", fire_time=T0 + 4 * QUARTER, coalesced=3, ts_event=now[0], ts_init=now[0], id=fired.id
    )
    assert again is None
    assert ScheduleFired in JOURNALED and ScheduleMisfired in JOURNALED


def test_fires_missed_by_more_than_the_grace_are_skipped_and_reported() -> None:
    # Arrange: the latest missed fire is ten minutes old (grace: five)
    now = [T0 + 4 * QUARTER + 10 * NANOS_PER_MINUTE]
    scheduler, published = scheduler_at(now, T0)

    # Act
    missed = scheduler.fire_due("scheduled_dca", now[0])
    now[0] = T0 + 5 * QUARTER + 1
    next_one = scheduler.fire_due("scheduled_dca", now[0])
    scheduler.bus.drain()

    # Assert: nothing bought for the four missed; the next fire on time goes on
    assert isinstance(missed, ScheduleMisfired)
    assert (missed.missed, missed.first_missed, missed.last_missed, missed.grace_seconds) == (
        4,
        T0 + QUARTER,
        T0 + 4 * QUARTER,
        300.0,
    )
    assert isinstance(next_one, ScheduleFired) and (next_one.fire_time, next_one.coalesced) == (T0 + 5 * QUARTER, 0)
    assert published == [missed, next_one]


@pytest.mark.asyncio
async def test_the_apscheduler_scheduler_fires_a_short_interval_on_the_wall_clock_onto_the_bus() -> None:
    # Arrange: every 50 ms; the bus runs on the loop like a paper session's
    bus = EventBus()
    fired = asyncio.Event()
    received: list[ScheduleFired] = []

    def on_fire(event: ScheduleFired) -> None:
        received.append(event)
        fired.set()

    bus.subscribe(ScheduleFired, on_fire)
    running = asyncio.create_task(bus.run())
    schedule = Schedule(timedelta(milliseconds=50))
    scheduler = StrategyScheduler({"scheduled_dca": schedule}, bus, SimulatedClock(T0))

    # Act
    scheduler.start()
    planned = scheduler.next_fire_time("scheduled_dca")
    await asyncio.wait_for(fired.wait(), timeout=5)
    scheduler.stop()
    bus.stop()
    await running

    # Assert: the job's run times are the trigger's; the fire is on the 50 ms grid, at or after the planned run
    first = received[0]
    assert planned is not None and planned % 50_000_000 == 0
    assert first.fire_time % 50_000_000 == 0 and first.fire_time >= planned
    assert first.ts_event >= first.fire_time
    assert scheduler.scheduler is None


def test_a_resumed_session_takes_the_last_journaled_fire_and_the_strategy_follows_the_wall_clock_after_it(
    tmp_path: Path,
) -> None:
    # Arrange: a journal of the session so far; a paper pipeline running scheduled DCA
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    database.migrate()
    journal = Journal(database)
    journal.append(
        [
            ScheduleFired(strategy="scheduled_dca", fire_time=T0, ts_event=T0, ts_init=T0),
            ScheduleMisfired(
                strategy="scheduled_dca",
                first_missed=T0 + QUARTER,
                last_missed=T0 + 2 * QUARTER,
                missed=2,
                grace_seconds=300.0,
                ts_event=T0,
                ts_init=T0,
            ),
        ]
    )
    base = load_config("paper", environ={})
    config = base.model_copy(
        update={
            "data": base.data.model_copy(update={"symbols": ("BTCUSDT",), "start": None, "end": None}),
            "strategy": base.strategy.model_copy(update={"strategies": ("scheduled_dca",), "warmup_bars": 0}),
        }
    )
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), EventBus(), SimulatedClock(T0))

    # Act
    scheduler = build_scheduler(pipeline, journal)
    fresh = build_scheduler(pipeline, journal, since_sequence=3)

    # Assert
    dca = pipeline.strategy.manager.strategies[0]
    assert isinstance(dca, ScheduledDcaStrategy)
    assert scheduler is not None and scheduler.last_fires == {"scheduled_dca": T0 + 2 * QUARTER}
    assert scheduler.schedules["scheduled_dca"] is dca.schedule
    assert fresh is not None and fresh.last_fires["scheduled_dca"] > T0 + 2 * QUARTER
    assert dca.wall_clock_from == fresh.last_fires["scheduled_dca"]


@pytest.mark.asyncio
async def test_a_paper_run_on_the_live_market_buys_on_the_wall_clock_schedule_through_the_pipeline(
    tmp_path: Path,
) -> None:
    # Arrange: the local Binance streams real 1m klines (shifted to now, one per 40 ms); scheduled DCA alone,
    # its schedule every 100 ms of the wall clock
    symbols = ["BTCUSDT"]
    tape = bar_tape(
        ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05",
        symbols,
        ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz",
        ns("2025-05-05T04:00:00"),
        ns("2025-05-05T04:20:00"),
    ).starting_from(time.time_ns() // NANOS_PER_MILLI)
    server, market = await start_local_binance(tape, symbols)
    try:
        base = load_config("paper", environ={})
        config = base.model_copy(
            update={
                "data": base.data.model_copy(update={"symbols": tuple(symbols)}),
                "strategy": base.strategy.model_validate(
                    {
                        **base.strategy.model_dump(),
                        "strategies": ["scheduled_dca"],
                        "warmup_bars": 0,
                        "regime": {"enabled": False},
                        "parameters": {"scheduled_dca": {"notional_usdt": 2000.0, "budget_usdt": 10000.0}},
                    }
                ),
                "portfolio": base.portfolio.model_copy(
                    update={"no_trade_band": False, "allocator": "equal_weight", "rebalance_interval_minutes": 1}
                ),
                "binance": base.binance.model_copy(
                    update={"rest_url": server.base_url, "ws_url": server.base_url.replace("http", "ws")}
                ),
                "paper": base.paper.model_copy(
                    update={"feed": "binance", "status_interval_seconds": 0.05, "duration_seconds": 60}
                ),
                "run": base.run.model_copy(update={"output_dir": tmp_path}),
                "web": base.web.model_copy(update={"enabled": False}),
            }
        )
        session = PaperSession(config, tmp_path / "run")
        dca = session.pipeline.strategy.manager.strategies[0]
        assert isinstance(dca, ScheduledDcaStrategy) and session.scheduler is not None
        fast = Schedule(timedelta(milliseconds=100))
        dca.schedule = session.scheduler.schedules["scheduled_dca"] = fast
        targets: list[TargetQuantityProposed] = []
        session.pipeline.bus.subscribe(TargetQuantityProposed, targets.append)
        bars: list[BarClosed] = []
        session.pipeline.bus.subscribe(BarClosed, bars.append)

        def stop_when_played(_status: dict) -> None:
            if market.finished.is_set() and session.bars == len(bars) >= 20:
                session.request_stop("tape played")

        session._on_status = stop_when_played
        playing = asyncio.create_task(market.run(speed=1500.0))
        try:
            # Act
            final = await session.run()
        finally:
            playing.cancel()
            await asyncio.gather(playing, return_exceptions=True)
        journal = Journal(Database(f"sqlite:///{tmp_path / 'keel.db'}"))
        journaled = [entry for _, entry in journal.entries_of(ScheduleFired)]
    finally:
        await server.stop()

    # Assert: fires on the 100 ms grid, journaled; the strategy bought at bars after fires; orders went out
    fired = list(session.scheduler.fired)
    assert final["handler_errors"] == 0 and fired
    assert journaled == fired
    assert all(event.fire_time % 100_000_000 == 0 for event in fired)
    buys = [t for t in targets if t.strategy == "scheduled_dca" and t.quantity > 0]
    assert buys and buys[0].ts_event >= fired[0].fire_time
    assert final["fills"] > 0


def dca_pipeline_config() -> KeelConfig:
    base = load_config("paper", environ={})
    return base.model_copy(
        update={
            "data": base.data.model_copy(update={"symbols": ("BTCUSDT",), "start": None, "end": None}),
            "strategy": base.strategy.model_copy(
                update={"strategies": ("scheduled_dca", "volatility_breakout"), "warmup_bars": 0}
            ),
        }
    )


def test_the_status_shows_when_a_scheduled_strategy_fires_next_on_the_bars_clock() -> None:
    # Arrange: a minute after a fire; DCA every 240 minutes (the default)
    config = dca_pipeline_config()
    clock = SimulatedClock(T0 + NANOS_PER_MINUTE)
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), EventBus(), clock)
    orchestrator = TradingOrchestrator(pipeline, config)

    # Act
    rows = {row.name: row for row in orchestrator.strategies()}
    clock.advance_to(T0 + 240 * NANOS_PER_MINUTE)
    at_fire = {row.name: row for row in orchestrator.strategies()}

    # Assert
    assert rows["scheduled_dca"].next_fire == "2025-05-08T04:00:00Z"
    assert at_fire["scheduled_dca"].next_fire == "2025-05-08T08:00:00Z"
    assert rows["volatility_breakout"].next_fire is None


@pytest.mark.asyncio
async def test_on_the_wall_clock_the_status_shows_the_schedulers_next_run() -> None:
    # Arrange: the wall-clock scheduler of the pipeline's DCA, running on the loop
    config = dca_pipeline_config()
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), EventBus(), SimulatedClock(T0))
    scheduler = build_scheduler(pipeline)
    assert scheduler is not None
    orchestrator = TradingOrchestrator(pipeline, config)
    orchestrator.scheduled_fire = scheduler.next_fire_time

    # Act
    before = orchestrator.strategies()[0].next_fire
    scheduler.start()
    planned = scheduler.next_fire_time("scheduled_dca")
    row = orchestrator.strategies()[0]
    scheduler.stop()

    # Assert: the scheduler's job time (on the 4-hour grid of the wall clock), not the bars' clock
    assert before is None
    assert planned is not None and planned > time.time_ns() - 1 and planned % (240 * NANOS_PER_MINUTE) == 0
    assert row.name == "scheduled_dca" and row.next_fire == iso_time(planned)
