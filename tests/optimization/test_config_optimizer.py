"""ConfigOptimizer on a real pipeline: validated, applied at a bar boundary, audited, rolled back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.config import load_config
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.instruments import load_instruments
from keel.integration.orchestrator import TradingOrchestrator
from keel.integration.pipeline import Pipeline, build_pipeline
from keel.optimization.config_optimizer import CapitalSplit, ConfigOptimizer
from keel.optimization.space import apply_values
from keel.persistence.database import Database
from keel.persistence.repositories import AuditLog
from keel.strategy_engine.base import BaseStrategy, StrategySignal
from keel.strategy_engine.trend_following import TrendFollowingStrategy

FAST = "strategy.parameters.trend_following.fast_period"
DEFAULT_FAST = TrendFollowingStrategy.parameter_space["fast_period"].default
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
    assert before["fast_period"] == DEFAULT_FAST
    assert system.trend_parameters()["fast_period"] == 10 and system.trend_parameters()["slow_period"] == 30
    assert system.pipeline.risk.limits.max_leverage == 2.0
    entry = AuditLog(system.database).entries()[-1]
    details = json.loads(entry.details)
    assert entry.action == "apply_tuned_config" and details["previous"][FAST] == DEFAULT_FAST
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
    assert system.trend_parameters()["fast_period"] == DEFAULT_FAST
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
    with pytest.raises(ValueError, match=r"^unknown configuration key risk\.nope$"):
        optimizer.stage({"risk.nope": 1})
    with pytest.raises(ValueError) as out_of_range:
        optimizer.stage({FAST: 500})
    assert optimizer.pending == []
    # One line naming the key, the rule and the value: no validator internals
    assert str(out_of_range.value) == f"{FAST}: Input should be less than or equal to 100, got 500"


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


def test_an_ab_split_runs_both_parameter_sets_with_their_capital_shares_and_is_journaled(
    system: RunningSystem,
) -> None:
    # Arrange
    optimizer = ConfigOptimizer(system.orchestrator)

    # Act
    change = optimizer.stage({FAST: 10, SLOW: 30}, split=0.25)
    system.next_bar()
    system.next_bar()

    # Assert
    running = next(s for s in system.pipeline.strategy.manager.strategies if s.name == "trend_following")
    assert isinstance(running, CapitalSplit) and running.share == 0.25
    assert running.old.parameters["fast_period"] == DEFAULT_FAST and running.new.parameters["fast_period"] == 10
    entry = AuditLog(system.database).entries()[-1]
    details = json.loads(entry.details)
    assert (
        entry.action == "start_ab_split" and details["new_share"] == 0.25 and details["previous"][FAST] == DEFAULT_FAST
    )
    assert (
        optimizer.split is change and optimizer.config.strategy.parameters.trend_following.fast_period == DEFAULT_FAST
    )
    assert system.pipeline.strategy.errors == 0


def test_concluding_a_split_keeps_the_chosen_parameters_alone(system: RunningSystem) -> None:
    # Arrange
    optimizer = ConfigOptimizer(system.orchestrator)
    optimizer.stage({FAST: 10}, split=0.5)
    system.next_bar()

    # Act
    optimizer.conclude_split("new")
    system.next_bar()

    # Assert
    assert system.trend_parameters()["fast_period"] == 10 and optimizer.split is None
    assert optimizer.config.strategy.parameters.trend_following.fast_period == 10
    assert [e.action for e in AuditLog(system.database).entries()][-2:] == ["start_ab_split", "conclude_ab_split_new"]


def test_rolling_back_a_split_returns_the_old_parameters_to_all_the_capital(system: RunningSystem) -> None:
    # Arrange
    optimizer = ConfigOptimizer(system.orchestrator)
    optimizer.stage({FAST: 10}, split=0.5)
    system.next_bar()

    # Act
    optimizer.rollback()
    system.next_bar()

    # Assert
    assert system.trend_parameters()["fast_period"] == DEFAULT_FAST
    assert not isinstance(
        next(s for s in system.pipeline.strategy.manager.strategies if s.name == "trend_following"), CapitalSplit
    )
    assert optimizer.split is None


def test_a_split_of_risk_limits_a_share_outside_0_1_or_a_second_split_is_refused(system: RunningSystem) -> None:
    # Arrange
    optimizer = ConfigOptimizer(system.orchestrator)

    # Act / Assert
    with pytest.raises(ValueError, match=r"risk\.max_leverage: an A/B split covers strategy parameters only"):
        optimizer.stage({FAST: 10, "risk.max_leverage": 2.0}, split=0.5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        optimizer.stage({FAST: 10}, split=1.0)
    optimizer.stage({FAST: 10}, split=0.5)
    with pytest.raises(ValueError, match="already running"):
        optimizer.stage({SLOW: 100}, split=0.5)
    assert len(optimizer.pending) == 1


class FixedView(BaseStrategy):
    """A strategy whose view is whatever the test set last (None: unchanged)."""

    hold_means_flat = True

    def __init__(self) -> None:
        super().__init__("fixed")
        self.view: StrategySignal | None = None

    def generate_signal(self, market_data, current_index):
        return self.view


views = st.builds(
    StrategySignal,
    st.just("BTCUSDT"),
    st.sampled_from(["BUY", "SELL", "HOLD"]),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
)


@given(old=views, new=views, share=st.floats(0.01, 0.99))
def test_the_split_vote_is_each_arms_score_weighted_by_its_capital_share(
    old: StrategySignal, new: StrategySignal, share: float
) -> None:
    # Arrange
    old_arm, new_arm = FixedView(), FixedView()
    split = CapitalSplit(old_arm, new_arm, share)
    old_arm.view, new_arm.view = old, new

    # Act
    blended = split.generate_signal({"symbol": "BTCUSDT"}, 0)

    # Assert
    assert blended is not None
    assert blended.score == pytest.approx((1 - share) * old.score + share * new.score, abs=1e-12)
