"""Recovery's parts: which session a start recovers, snapshots and write-ahead, where the feed resumes."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from keel.api import MarketCursor
from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.fsm import TradingState
from keel.core.instruments import load_instruments
from keel.core.messages import (
    BarClosed,
    FundingRateUpdated,
    OrderFilled,
    OrderSubmitted,
    SessionEnded,
    SessionStarted,
    SetTradingState,
    SubmitOrder,
    TradingStateChanged,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderType
from keel.integration.paper import PaperSession
from keel.integration.pipeline import build_feed, build_pipeline
from keel.integration.recovery import events_after, follow_journaled_trading_state, plan_session
from keel.integration.state_manager import StateManager
from keel.persistence import Database, Journal, Snapshots
from keel.persistence.write_behind import SpillFile


def database_in(folder: Path) -> Database:
    database = Database(f"sqlite:///{folder / 'keel.db'}")
    database.migrate()
    return database


def journal_in(folder: Path) -> Journal:
    return Journal(database_in(folder))


@pytest.fixture
def paper_config_in(tmp_path: Path) -> KeelConfig:
    """Four hours of real BTCUSDT 1m bars, the moving-average example strategy, replayed as fast as possible."""
    return paper_config(tmp_path)


def started(session: int, recovered: bool = False) -> SessionStarted:
    return SessionStarted(session=session, mode="paper", recovered=recovered, ts_event=1, ts_init=1)


def ended(session: int, finished: bool) -> SessionEnded:
    return SessionEnded(session=session, reason="x", finished=finished, ts_event=2, ts_init=2)


def test_an_empty_journal_starts_session_one(tmp_path: Path) -> None:
    # Act
    plan = plan_session(journal_in(tmp_path))

    # Assert
    assert (plan.session, plan.recover) == (1, False)


def test_a_finished_session_is_followed_by_a_fresh_one(tmp_path: Path) -> None:
    # Arrange
    journal = journal_in(tmp_path)
    journal.append([started(1), ended(1, finished=True)])

    # Act
    plan = plan_session(journal)

    # Assert
    assert (plan.session, plan.recover) == (2, False)


def test_a_stopped_or_crashed_session_is_recovered_from_its_first_start(tmp_path: Path) -> None:
    # Arrange: session 2 started, stopped unfinished, was recovered once, then crashed (no end at all)
    journal = journal_in(tmp_path)
    journal.append([started(1), ended(1, finished=True)])
    first = journal.append([started(2)])
    journal.append([ended(2, finished=False), started(2, recovered=True)])

    # Act
    plan = plan_session(journal)

    # Assert
    assert (plan.session, plan.recover, plan.first_sequence) == (2, True, first)


def test_the_feed_resumes_right_after_the_venues_cursor(paper_config_in) -> None:
    # Arrange
    events = list(build_feed(paper_config_in))
    cursor_event = next(e for i, e in enumerate(events) if i > 100 and e.symbol == "BTCUSDT")
    at = events.index(cursor_event)
    cursor = MarketCursor(ts_event=cursor_event.ts_event, kind="bar", symbol="BTCUSDT")

    # Act
    resumed = list(events_after(events, cursor))

    # Assert
    assert resumed == events[at + 1 :]
    assert list(events_after(events, None)) == events


def test_a_funding_cursor_resumes_after_the_funding_event(paper_config_in) -> None:
    # Arrange
    events = list(build_feed(paper_config_in))
    funding = next(e for e in events if isinstance(e, FundingRateUpdated))
    cursor = MarketCursor(ts_event=funding.ts_event, kind="funding", symbol=funding.symbol)

    # Act
    resumed = list(events_after(events, cursor))

    # Assert
    assert resumed == events[events.index(funding) + 1 :]


def test_write_ahead_journals_the_order_after_what_was_buffered_and_snapshots_follow_the_schedule(
    tmp_path: Path,
) -> None:
    # Arrange
    database = database_in(tmp_path)
    journal, snapshots = Journal(database), Snapshots(database)
    bus, clock = EventBus(), SimulatedClock(0)
    captured = iter(range(100))
    state = StateManager(
        journal,
        bus,
        clock,
        spill=SpillFile(tmp_path / "spill.jsonl"),
        flush_every=50,
        snapshots=snapshots,
        capture=lambda: {"n": next(captured)},
        snapshot_every=3,
    )
    state.start()
    bus.drain()
    submitted = OrderSubmitted(
        client_order_id="keel-1", symbol="BTCUSDT", side=OrderSide.BUY, quantity=Decimal("0.002"), ts_event=5, ts_init=5
    )
    command = SubmitOrder(
        client_order_id="keel-2", symbol="BTCUSDT", side=OrderSide.SELL, order_type=OrderType.MARKET,
        quantity=Decimal("0.002"), ts_event=6, ts_init=6,
    )  # fmt: skip

    # Act
    bus.publish(submitted)
    bus.drain()
    before = journal.last_sequence()
    state.write_ahead(command)

    # Assert: the buffered event first, then the order, written at once; one snapshot after three events
    assert before == 0
    assert [m for _, m in journal.read()] == [submitted, command]
    assert state.snapshots_taken == 0
    state.write_ahead(command)
    assert state.flush()
    assert snapshots.latest() == (3, {"n": 0})
    state.stop()


def test_a_session_stopped_early_is_resumed_by_the_next_start(paper_config_in) -> None:
    # Arrange: a first session stops after some bars
    config: KeelConfig = paper_config_in

    async def stop_after_bars(session: PaperSession, bars: int) -> dict[str, object]:
        task = asyncio.create_task(session.run())
        while session.bars < bars and not task.done():
            await asyncio.sleep(0.001)
        session.request_stop("operator")
        return await task

    first = PaperSession(config, config.run.output_dir / "first")
    asyncio.run(stop_after_bars(first, 120))
    cursor = first.pipeline.exchange.cursor
    total = sum(1 for _ in build_feed(config))

    # Act
    second = PaperSession(config, config.run.output_dir / "second")
    restored_weights = second.pipeline.allocator.weights()
    final = asyncio.run(second.run())

    # Assert
    assert restored_weights == first.pipeline.allocator.weights() != {}
    assert second.plan.recover and second.plan.session == first.plan.session
    assert cursor is not None and second.feed.summary.first_ns <= cursor.ts_event
    assert final["feed_finished"] is True and final["reconciliation"]["mismatches"] == []
    assert second.orchestrator.get_system_status()["session"] == {
        "number": first.plan.session,
        "recovered": True,
        "reconciliation": final["reconciliation"],
    }
    assert first.events + second.events == total
    third = PaperSession(config, config.run.output_dir / "third")
    assert (third.plan.session, third.plan.recover) == (first.plan.session + 1, False)


def paper_config(folder: Path) -> KeelConfig:
    config = load_config("paper", environ={})
    data = config.data.model_validate(
        {**config.data.model_dump(), "symbols": ("BTCUSDT",), "start": "2025-05-05", "end": "2025-05-05T04:00"}
    )
    strategy = config.strategy.model_copy(update={"name": "moving_average_cross", "fast_period": 3, "slow_period": 8})
    paper = config.paper.model_copy(update={"speed": 1.0e6})
    run = config.run.model_copy(update={"output_dir": folder})
    return config.model_copy(update={"data": data, "strategy": strategy, "paper": paper, "run": run})


def test_a_position_the_venue_does_not_have_halts_trading_after_the_restart(paper_config_in) -> None:
    # Arrange: an unfinished session, then a restart whose recovered books hold a fill the venue never made
    config: KeelConfig = paper_config_in

    async def stop_early(session: PaperSession) -> None:
        task = asyncio.create_task(session.run())
        while session.bars < 30 and not task.done():
            await asyncio.sleep(0.001)
        session.request_stop("operator")
        await task

    asyncio.run(stop_early(PaperSession(config, config.run.output_dir / "first")))
    second = PaperSession(config, config.run.output_dir / "second")
    phantom = OrderFilled(
        client_order_id="keel-999", venue_order_id="0", symbol="BTCUSDT", trade_id="phantom", side=OrderSide.BUY,
        last_quantity=Decimal("0.010"), last_price=Decimal("94000"), commission=Decimal(0),
        liquidity_side=LiquiditySide.TAKER, ts_event=0, ts_init=0,
    )  # fmt: skip
    second.pipeline.positions.replay(phantom)

    # Act
    final = asyncio.run(second.run())

    # Assert
    assert final["reconciliation"]["mismatches"] == ["position BTCUSDT: keel 0.010, venue 0"]
    assert final["trading_state"] == "HALTED"
    assert second.monitors[0].health.value == "UNHEALTHY"


def test_the_replayed_risk_takes_the_trading_state_the_session_journaled(paper_config_in) -> None:
    # Arrange: the history replay halted trading (say, on its drawdown limit); the session's operator had resumed it
    config: KeelConfig = paper_config_in
    bus, journal = EventBus(), journal_in(config.run.output_dir)
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), bus, SimulatedClock(0))
    pipeline.start()
    bus.publish(SetTradingState(state=TradingState.HALTED, reason="drawdown in the replay", ts_event=1, ts_init=1))
    bus.drain()
    resumed = TradingStateChanged(
        previous=TradingState.HALTED, state=TradingState.ACTIVE, reason="operator resumed", ts_event=1, ts_init=1
    )
    journal.append([resumed])

    # Act
    follow_journaled_trading_state(pipeline, journal)

    # Assert
    assert pipeline.risk.trading_state is TradingState.ACTIVE


def test_a_restarted_session_is_paced_from_where_it_resumes(paper_config_in) -> None:
    # Arrange: two hours replayed, stopped, then restarted at 600x (a bar every 0.1 s) for one second
    config: KeelConfig = paper_config_in
    first = PaperSession(config, config.run.output_dir / "first")

    def stop_at_two_hours(bar: BarClosed) -> None:
        if first.bars == 120:
            first.request_stop("operator")

    first.pipeline.bus.subscribe(BarClosed, stop_at_two_hours, name="test.stop")
    asyncio.run(first.run())
    paced = config.model_copy(
        update={"paper": config.paper.model_copy(update={"speed": 600.0, "duration_seconds": 1.0})}
    )

    # Act
    second = PaperSession(paced, config.run.output_dir / "second")
    asyncio.run(second.run())

    # Assert: it went on at once (paced from the data's start, its first bar would be two hours = 12 s away)
    assert second.plan.recover
    assert second.bars >= 1
