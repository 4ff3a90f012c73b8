"""ConfigOptimizer on a real pipeline: validated, applied at a bar boundary, audited, rolled back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from keel.config import load_config
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.instruments import load_instruments
from keel.integration.orchestrator import TradingOrchestrator
from keel.integration.pipeline import Pipeline, build_pipeline
from keel.optimization.config_optimizer import ConfigOptimizer
from keel.optimization.space import apply_values
from keel.persistence.database import Database
from keel.persistence.repositories import AuditLog

FAST = "strategy.parameters.trend_following.fast_period"
SLOW = "strategy.parameters.trend_following.slow_period"


class RunningSystem:
    """A pipeline running trend following on a simulated clock, fed bar by bar."""

    def __init__(self, tmp_path: Path, real_data) -> None:
        config = apply_values(
            load_config("paper", environ={}),
            {
                "data.symbols": ("BTCUSDT",),
                "strategy.strategies": ("trend_following",),
                "strategy.regime.enabled": False,
            },
        )
        self.bars = iter(real_data.bars("BTCUSDT", 50))
        first = real_data.bars("BTCUSDT", 1)[0]
        self.bus = EventBus(1000)
        self.clock = SimulatedClock(first.ts_event)
        self.pipeline: Pipeline = build_pipeline(
            config, load_instruments(config.exchange.instruments), self.bus, self.clock
        )
        self.database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
        self.database.migrate()
        self.orchestrator = TradingOrchestrator(self.pipeline, config, AuditLog(self.database))
        self.pipeline.start()
        self.bus.drain()

    def next_bar(self) -> None:
        bar = next(self.bars)
        self.clock.advance_to(bar.ts_event)
        self.bus.publish(bar)
        self.bus.drain()

    def trend_parameters(self) -> dict[str, object]:
        manager = self.pipeline.strategy.manager
        return dict(next(s for s in manager.strategies if s.name == "trend_following").parameters)


@pytest.fixture
def system(tmp_path: Path, real_data) -> RunningSystem:
    running = RunningSystem(tmp_path, real_data)
    running.next_bar()
    return running


def test_a_staged_change_waits_for_the_next_bar_and_is_audited(system: RunningSystem) -> None:
    # Arrange
    optimizer = ConfigOptimizer(system.orchestrator)

    # Act
    change = optimizer.stage({FAST: 10, SLOW: 30, "risk.max_leverage": 2.0})
    before = system.trend_parameters()
    system.next_bar()

    # Assert
    assert before["fast_period"] == 40
    assert system.trend_parameters()["fast_period"] == 10 and system.trend_parameters()["slow_period"] == 30
    assert system.pipeline.risk.limits.max_leverage == 2.0
    entry = AuditLog(system.database).entries()[-1]
    details = json.loads(entry.details)
    assert entry.action == "apply_tuned_config" and details["previous"][FAST] == 40
    assert change.applied_at_ns == system.clock.timestamp_ns()
    system.next_bar()
    assert system.pipeline.strategy.errors == 0  # the new instance warmed up from the kept history


def test_rollback_puts_the_previous_values_back_at_the_next_bar(system: RunningSystem) -> None:
    # Arrange
    optimizer = ConfigOptimizer(system.orchestrator)
    optimizer.stage({FAST: 10, "risk.max_leverage": 2.0})
    system.next_bar()

    # Act
    optimizer.rollback()
    system.next_bar()

    # Assert
    assert system.trend_parameters()["fast_period"] == 40
    assert system.pipeline.risk.limits.max_leverage == 3.0
    assert [e.action for e in AuditLog(system.database).entries()][-2:] == [
        "apply_tuned_config",
        "rollback_tuned_config",
    ]


def test_invalid_or_restart_only_changes_are_refused_and_nothing_is_queued(system: RunningSystem) -> None:
    # Arrange
    optimizer = ConfigOptimizer(system.orchestrator)

    # Act / Assert
    with pytest.raises(ValueError, match="fast_period"):
        optimizer.stage({FAST: 60, SLOW: 50})
    with pytest.raises(ValueError, match="needs a restart"):
        optimizer.stage({"data.symbols": ("ETHUSDT",)})
    assert optimizer.pending == []


def test_apply_returns_once_a_bar_boundary_applied_it(system: RunningSystem) -> None:
    # Arrange
    optimizer = ConfigOptimizer(system.orchestrator)

    async def apply_then_bar() -> int:
        waiting = asyncio.ensure_future(optimizer.apply({FAST: 12}))
        await asyncio.sleep(0)
        assert not waiting.done()
        system.next_bar()
        change = await waiting
        return change.values[FAST]

    # Act
    applied = asyncio.run(apply_then_bar())

    # Assert
    assert applied == 12 and system.trend_parameters()["fast_period"] == 12
