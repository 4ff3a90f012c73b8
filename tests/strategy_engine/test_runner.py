"""The strategy engine on the bus: signals, regime changes and strategy errors published from real data."""

from __future__ import annotations

import itertools
from typing import Any

from strategy_data import MAY_5, events, funding_within_bars, index_at, market_data

from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.fsm import ComponentState
from keel.core.messages import (
    BarClosed,
    FundingRateUpdated,
    LadderProposed,
    Message,
    RegimeChanged,
    SignalGenerated,
    StrategyError,
    TargetQuantityProposed,
)
from keel.strategy_engine import (
    BaseStrategy,
    GridTradingStrategy,
    NoLookAheadRegimeDetector,
    ScheduledDcaStrategy,
    StrategyManager,
    StrategyRunner,
    StrategySignal,
)


def run_on_bus(manager: StrategyManager, stream: list[Any]) -> tuple[StrategyRunner, list[Message]]:
    bus = EventBus()
    clock = SimulatedClock(stream[0].ts_event - 60_000_000_000)
    runner = StrategyRunner(manager, bus, clock)
    published: list[Message] = []
    for kind in (SignalGenerated, RegimeChanged, StrategyError, TargetQuantityProposed, LadderProposed):
        bus.subscribe(kind, published.append)
    runner.start()
    bus.drain()
    for event in stream:
        clock.advance_to(event.ts_event)
        bus.publish(event)
        bus.drain()
    return runner, published


def test_the_manager_publishes_news_signals_and_regime_changes() -> None:
    # Arrange
    data = funding_within_bars(market_data("ETHUSDT", start=index_at("ETHUSDT", MAY_5), count=2 * 1440))
    manager = StrategyManager(
        detector_factory=lambda: NoLookAheadRegimeDetector(min_fit_bars=600, fit_window=900, refit_interval=400)
    )

    # Act
    runner, published = run_on_bus(manager, events("ETHUSDT", data=data))

    # Assert
    signals = [m for m in published if isinstance(m, SignalGenerated)]
    changes = [m for m in published if isinstance(m, RegimeChanged)]
    assert len(signals) == manager.signals_published > 10
    assert {s.strategy for s in signals} == {"strategy_manager"}
    assert all(0.0 <= s.strength <= 1.0 and 0.0 <= s.confidence <= 1.0 for s in signals)
    assert len(changes) > 3
    assert changes[-1].regime is manager.regime("ETHUSDT").regime
    assert all(a.regime is b.previous for a, b in itertools.pairwise(changes))
    assert abs(sum(changes[-1].probabilities.values()) - 1.0) < 1e-12
    assert runner.name == "strategy.strategy_manager" and runner.state is ComponentState.RUNNING


def test_missing_funding_is_published_as_strategy_errors_and_degrades_the_runner() -> None:
    # Arrange: bars whose settlements stop after the first one
    events_ = events("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=1500)
    first = next(e for e in events_ if isinstance(e, FundingRateUpdated))
    stream = [e for e in events_ if not isinstance(e, FundingRateUpdated) or e is first]
    manager = StrategyManager(detector_factory=False, max_consecutive_errors=3)

    # Act
    runner, published = run_on_bus(manager, stream)

    # Assert
    errors = [m for m in published if isinstance(m, StrategyError)]
    assert [(e.strategy, e.error_type, e.disabled) for e in errors] == [
        ("funding_arbitrage", "MissingFundingDataError", False),
        ("funding_arbitrage", "MissingFundingDataError", False),
        ("funding_arbitrage", "MissingFundingDataError", True),
    ]
    assert runner.errors == 3
    assert runner.state is ComponentState.DEGRADED


def test_a_disabled_runner_follows_the_market_silently_and_republishes_on_resume() -> None:
    # Arrange
    data = funding_within_bars(market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=1440))
    stream = events("SOLUSDT", data=data)
    bus = EventBus()
    clock = SimulatedClock(stream[0].ts_event)
    runner = StrategyRunner(StrategyManager(detector_factory=False), bus, clock)
    published: list[SignalGenerated] = []
    bus.subscribe(SignalGenerated, published.append)
    runner.start()
    runner.enabled = False

    # Act
    for event in stream:
        clock.advance_to(event.ts_event)
        bus.publish(event)
        bus.drain()

    paused = list(published)
    runner.enabled = True
    for event in events("SOLUSDT", start=index_at("SOLUSDT", MAY_5) + 1440, count=1):
        clock.advance_to(event.ts_event)
        bus.publish(event)
        bus.drain()

    # Assert
    assert paused == []
    assert [s.symbol for s in published] == ["SOLUSDT"]
    assert runner.manager.signals_published > 1
    assert runner.manager.get_system_status()["bars_processed"] == 1441
    assert set(runner.manager.parameters) == {"trend_following", "mean_reversion", "range_trading", "funding_arbitrage"}


def test_a_warm_up_on_history_leaves_the_strategies_where_a_live_run_would() -> None:
    # Arrange: day one replayed as history, then half a day live; against all of it live
    start = index_at("BTCUSDT", MAY_5)
    history = events("BTCUSDT", start=start, count=1440)
    live = events("BTCUSDT", start=start + 1440, count=720)

    def manager() -> StrategyManager:
        return StrategyManager(
            detector_factory=lambda: NoLookAheadRegimeDetector(min_fit_bars=600, fit_window=900, refit_interval=400)
        )

    bus = EventBus()
    clock = SimulatedClock(live[0].ts_event)
    warmed = StrategyRunner(manager(), bus, clock)
    published: list[SignalGenerated] = []
    bus.subscribe(SignalGenerated, published.append)

    # Act
    consumed = warmed.warm_up(history)
    bus.drain()
    during_warm_up = list(published)
    warmed.start()
    for event in live:
        clock.advance_to(event.ts_event)
        bus.publish(event)
        bus.drain()
    reference, _ = run_on_bus(manager(), [*history, *live])

    # Assert
    assert consumed == 1440 and during_warm_up == []
    assert published[0].ts_event == next(e for e in live if isinstance(e, BarClosed)).ts_event
    status, expected = warmed.manager.get_system_status(), reference.manager.get_system_status()
    assert status["symbols"] == expected["symbols"]
    assert warmed.manager.regime("BTCUSDT") == reference.manager.regime("BTCUSDT")
    assert status["combined_performance"]["bars"] == 720


class _FailsBefore(BaseStrategy):
    """Raises on every bar before ``until`` (data it needs has not started), then holds."""

    def __init__(self, until: int) -> None:
        super().__init__("late_data")
        self.until = until

    def generate_signal(self, market_data: Any, current_index: int) -> StrategySignal:
        if market_data["timestamp"][current_index] < self.until:
            raise ValueError("the data this strategy needs has not started")
        return StrategySignal(market_data["symbol"], "HOLD", 0.0, 0.0)


def test_errors_during_the_warm_up_never_keep_a_strategy_off_for_the_run() -> None:
    # Arrange
    stream = [e for e in events("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=60) if isinstance(e, BarClosed)]
    history, live = stream[:40], stream[40:]
    manager = StrategyManager([_FailsBefore(until=live[0].ts_event)], detector_factory=False, max_consecutive_errors=3)
    bus = EventBus()
    runner = StrategyRunner(manager, bus, SimulatedClock(history[0].ts_event))

    # Act
    runner.warm_up(history)
    status = manager.get_system_status()

    # Assert
    assert runner.errors == 3  # switched off during the warm-up after three in a row...
    assert status["strategies"]["late_data"]["disabled_symbols"] == []  # ...and back on for the run
    assert status["active_strategies"] == 1


def test_standing_intents_are_published_per_strategy_when_they_change_and_held_while_the_strategy_is_stopped() -> None:
    # Arrange: a grid and a DCA (every 4 hours) beside each other on two days of SOLUSDT
    data = market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=2 * 1440)
    grid = GridTradingStrategy(range_period=240, levels=8, max_inventory_levels=3, min_range_width=0.004)
    dca = ScheduledDcaStrategy(interval_minutes=240, notional_usdt=100.0, budget_usdt=1e6, take_profit=1.0)
    manager = StrategyManager([grid, dca], detector_factory=False)
    stream = events("SOLUSDT", data=data)

    # Act: the DCA's vote is held for the second day
    runner, first_day = run_on_bus(manager, stream[:1440])
    manager.set_strategy_enabled("scheduled_dca", False)
    bus, clock = runner.bus, runner.clock
    second_day: list[Message] = []
    for kind in (TargetQuantityProposed, LadderProposed):
        bus.subscribe(kind, second_day.append)
    for event in stream[1440:]:
        clock.advance_to(event.ts_event)
        bus.publish(event)
        bus.drain()

    # Assert: the grid's ladders and the DCA's growing target, each once per change, under their own names
    targets = [m for m in first_day if isinstance(m, TargetQuantityProposed)]
    ladders = [m for m in first_day if isinstance(m, LadderProposed)]
    assert {m.strategy for m in targets} == {"scheduled_dca"} and {m.strategy for m in ladders} == {"grid_trading"}
    quantities = [m.quantity for m in targets]
    assert quantities == sorted(quantities) and len(set(quantities)) == len(quantities) >= 5
    assert all(a.prices != b.prices for a, b in itertools.pairwise(ladders))
    assert ladders and all(len(m.prices) == len(m.sides) for m in ladders)
    assert not any(isinstance(m, TargetQuantityProposed) for m in second_day)
