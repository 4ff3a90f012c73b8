"""The state manager: the journal of a paper run, and HALTED surviving a restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_SECOND, SimulatedClock
from keel.core.messages import OrderFilled, OrderSubmitted, SubmitOrder, TradingStateChanged
from keel.core.orders import OrderSide, OrderStatus
from keel.integration.paper import PaperSession
from keel.integration.state_manager import StateManager
from keel.persistence import Database, Journal, Snapshots
from keel.persistence.write_behind import SpillFile


def config_in(folder: Path) -> KeelConfig:
    config = load_config("paper", environ={})
    data = config.data.model_validate(
        {
            **config.data.model_dump(),
            "symbols": ("BTCUSDT", "ETHUSDT"),
            "start": "2025-05-05",
            "end": "2025-05-05T08:00",
        }
    )
    strategy = config.strategy.model_copy(update={"name": "moving_average_cross", "fast_period": 3, "slow_period": 8})
    paper = config.paper.model_copy(update={"speed": 20_000.0})
    run = config.run.model_copy(update={"output_dir": folder})
    return config.model_copy(update={"data": data, "strategy": strategy, "paper": paper, "run": run})


async def run_session(folder: Path, name: str, action: str | None = None) -> tuple[str, str]:
    """Start a session; return (trading state once running, trading state at the end) after ``action``."""
    session = PaperSession(config_in(folder), folder / name)
    task = asyncio.create_task(session.run())
    while session.bars < 20 and not task.done():
        await asyncio.sleep(0.01)
    at_start = session.orchestrator.risk()["trading_state"]
    if action == "halt":
        await session.orchestrator.emergency_stop("operator halt before a restart")
    elif action == "resume":
        await session.orchestrator.resume("checked after the restart")
    session.request_stop("test")
    final = await task
    return at_start, final["trading_state"]


def test_a_halted_system_stays_halted_across_a_restart_until_resumed(tmp_path: Path) -> None:
    # Act
    first = asyncio.run(run_session(tmp_path, "first", action="halt"))
    second = asyncio.run(run_session(tmp_path, "second", action="resume"))
    third = asyncio.run(run_session(tmp_path, "third"))

    # Assert
    assert first == ("ACTIVE", "HALTED")
    assert second == ("HALTED", "ACTIVE")
    assert third == ("ACTIVE", "ACTIVE")


def test_the_journal_holds_the_runs_state_changes_in_order(tmp_path: Path) -> None:
    # Arrange
    session = PaperSession(config_in(tmp_path), tmp_path / "run")

    # Act
    final = asyncio.run(session.run())

    # Assert
    entries = list(Journal(Database(f"sqlite:///{tmp_path / 'keel.db'}")).read())
    sequences = [sequence for sequence, _ in entries]
    submitted = [m for _, m in entries if isinstance(m, OrderSubmitted)]
    fills = [m for _, m in entries if isinstance(m, OrderFilled)]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert len(submitted) == final["orders"] > 0
    assert len(fills) == final["fills"]
    assert len({f.trade_id for f in fills}) == len(fills)
    assert session.state.journaled == len(entries)
    assert not any(isinstance(m, TradingStateChanged) for _, m in entries)


def test_operator_limits_and_strategy_switches_survive_a_restart(tmp_path: Path) -> None:
    # Arrange: an operator tightens leverage and stops a strategy, then the process stops
    first = PaperSession(config_in(tmp_path), tmp_path / "first")
    name = first.orchestrator.strategies()[0]["name"]

    async def operate_then_run() -> None:
        await first.orchestrator.update_risk_limits({"max_leverage": 1.5})
        await first.orchestrator.stop_strategy(name)
        await first.run()

    asyncio.run(operate_then_run())

    # Act
    second = PaperSession(config_in(tmp_path), tmp_path / "second")

    # Assert
    assert second.pipeline.risk.limits.max_leverage == 1.5
    assert [s["enabled"] for s in second.orchestrator.strategies() if s["name"] == name] == [False]


def fresh_database_on(server_url: str) -> str:
    name = f"keel_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


async def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll a condition of a running session (real servers and threads: no simulated time here)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


@pytest.mark.parametrize("outage_state", ["REDUCING", "HALTED"])
def test_database_down_mid_paper_run_moves_the_trading_state_within_a_second_then_returns_losing_nothing(
    postgres_server, tmp_path: Path, outage_state: str
) -> None:
    # Arrange: a paper run journaling to its own PostgreSQL server, in an output folder that does not exist yet
    config = config_in(tmp_path / "runs" / "paper")
    config = config.model_copy(
        update={
            "paper": config.paper.model_copy(update={"speed": 2_000.0}),
            "persistence": config.persistence.model_copy(update={"url": fresh_database_on(postgres_server.url)}),
            "monitor": config.monitor.model_copy(update={"database_outage_state": outage_state}),
        }
    )
    session = PaperSession(config, tmp_path / "run")
    trading_state = lambda: session.orchestrator.risk()["trading_state"]  # noqa: E731
    seen: dict[str, Any] = {}

    async def outage() -> dict[str, Any]:
        task = asyncio.create_task(session.run())
        assert await wait_until(lambda: session.bars >= 60, 30)
        stopping_at = time.monotonic()
        await asyncio.to_thread(postgres_server.stop, "immediate")
        assert await wait_until(lambda: trading_state() == outage_state, 10)
        seen["reduced_after"] = time.monotonic() - stopping_at
        seen["reasons"] = session.monitors[0].reasons()
        bars = session.bars
        assert await wait_until(lambda: session.bars >= bars + 60, 30)
        seen["spilled"] = session.state.writer.spilled  # type: ignore[union-attr]
        await asyncio.to_thread(postgres_server.start)
        assert await wait_until(lambda: trading_state() == "ACTIVE", 20)
        seen["health_after"] = session.monitors[0].reasons()
        return await task

    # Act
    final = asyncio.run(outage())

    # Assert: the configured state within a second of the stop command (its own time included), with the reason in
    # health; back to ACTIVE once the journal caught up
    assert seen["reduced_after"] < 1.0
    assert any(reason.startswith("integration.state degraded: database unreachable") for reason in seen["reasons"])
    assert seen["spilled"] > 0
    assert not any("database" in reason for reason in seen["health_after"])
    assert final["feed_finished"] and final["handler_errors"] == 0
    # Nothing lost, nothing written twice: every order and fill journaled once, the spill file copied and emptied
    database = Database(config.persistence.url)  # type: ignore[arg-type]
    entries = list(Journal(database).read())
    database.dispose()
    sequences = [sequence for sequence, _ in entries]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    assert len({m.id for _, m in entries}) == len(entries)
    commands = [m.client_order_id for _, m in entries if isinstance(m, SubmitOrder)]
    assert sorted(commands) == sorted(session.pipeline.orders.orders) and len(commands) > 0
    assert len([m for _, m in entries if isinstance(m, OrderFilled)]) == final["fills"]
    states = [(m.state.value, m.reason.split(":")[0]) for _, m in entries if isinstance(m, TradingStateChanged)]
    assert states == [(outage_state, "monitor"), ("ACTIVE", "monitor")]
    assert session.state.spill.is_empty()
    assert (tmp_path / "runs" / "paper" / config.paper.venue_state_file).exists()
    assert not any(o.status is OrderStatus.SUBMITTED for o in session.pipeline.orders.orders.values())


def test_snapshots_are_also_taken_on_time_when_something_was_journaled(tmp_path: Path) -> None:
    # Arrange: a snapshot every 1000 events or every minute of clock time
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    database.migrate()
    bus, clock = EventBus(), SimulatedClock(0)
    captured = iter(range(100))
    state = StateManager(
        Journal(database), bus, clock, spill=SpillFile(tmp_path / "spill.jsonl"), snapshots=Snapshots(database),
        capture=lambda: {"n": next(captured)}, snapshot_every=1000, snapshot_interval_ns=60 * NANOS_PER_SECOND,
    )  # fmt: skip
    state.start()
    bus.drain()
    submitted = OrderSubmitted(
        client_order_id="keel-1", symbol="BTCUSDT", side=OrderSide.BUY, quantity=Decimal("0.002"), ts_event=1, ts_init=1
    )

    # Act: one event, a minute passes; then a minute with nothing journaled
    bus.publish(submitted)
    bus.drain()
    clock.advance_to(60 * NANOS_PER_SECOND)
    clock.advance_to(120 * NANOS_PER_SECOND)
    assert state.flush()

    # Assert
    assert state.snapshots_taken == 1
    assert Snapshots(database).latest() == (1, {"n": 0})
    state.stop()
    database.dispose()
