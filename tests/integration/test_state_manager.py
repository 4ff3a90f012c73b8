"""The state manager: the journal of a paper run, and HALTED surviving a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keel.config import KeelConfig, load_config
from keel.core.messages import OrderFilled, OrderSubmitted, TradingStateChanged
from keel.integration.paper import PaperSession
from keel.persistence import Database, Journal


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
    first.orchestrator.update_risk_limits({"max_leverage": 1.5})
    first.orchestrator.stop_strategy(name)
    asyncio.run(first.run())

    # Act
    second = PaperSession(config_in(tmp_path), tmp_path / "second")

    # Assert
    assert second.pipeline.risk.limits.max_leverage == 1.5
    assert [s["enabled"] for s in second.orchestrator.strategies() if s["name"] == name] == [False]
