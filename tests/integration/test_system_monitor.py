"""The system monitor: health with reasons, and the stale-data trip of the trading state."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from keel.config import load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MINUTE, SimulatedClock
from keel.core.fsm import ComponentState, TradingState
from keel.core.messages import (
    BarClosed,
    ComponentStateChanged,
    HealthChanged,
    MarginCalled,
    OrderRejected,
    ReconciliationCompleted,
    RiskBreached,
    SetTradingState,
    SystemHealth,
    TradingStateChanged,
    VenueConditionChanged,
)
from keel.integration.pipeline import build_monitors
from keel.integration.system_monitor import LoopLagProbe, SystemMonitor
from keel.market_data.feed_health import FeedHealthMonitor
from keel.strategy_engine.base import BaseStrategy, StrategySignal
from keel.strategy_engine.runner import StrategyRunner
from kit import real_bars

BARS = Path(__file__).resolve().parents[2] / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz"


class TradingDesk:
    """Stands in for the risk controller: applies SetTradingState and announces the change."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.state = TradingState.ACTIVE
        self.commands: list[SetTradingState] = []
        bus.register(SetTradingState, self.on_command, name="desk")

    def on_command(self, command: SetTradingState) -> None:
        self.commands.append(command)
        if command.state is not self.state:
            previous, self.state = self.state, command.state
            self.bus.publish(
                TradingStateChanged(
                    previous=previous, state=command.state, reason=command.reason, ts_event=0, ts_init=0
                )
            )


def wired() -> tuple[EventBus, SimulatedClock, SystemMonitor, TradingDesk, list[HealthChanged], list[BarClosed]]:
    bars = real_bars("BTCUSDT", 30)
    bus = EventBus()
    clock = SimulatedClock(bars[0].open_time)
    desk = TradingDesk(bus)
    monitor = SystemMonitor(bus, clock, check_interval_ns=NANOS_PER_MINUTE)
    feeds = FeedHealthMonitor(
        "feeds",
        bus,
        clock,
        stale_after_ns=3 * NANOS_PER_MINUTE,
        check_interval_ns=NANOS_PER_MINUTE,
        expected=[("BTCUSDT", "kline")],
    )
    changes: list[HealthChanged] = []
    bus.subscribe(HealthChanged, changes.append)
    monitor.start()
    feeds.start()
    bus.drain()
    return bus, clock, monitor, desk, changes, bars


def replay(bus: EventBus, clock: SimulatedClock, bars: list[BarClosed]) -> None:
    for bar in bars:
        clock.advance_to(bar.ts_event)
        bus.publish(bar)
        bus.drain()


def test_a_stale_feed_degrades_health_and_trips_reducing_until_it_recovers() -> None:
    # Arrange
    bus, clock, monitor, desk, changes, bars = wired()
    replay(bus, clock, bars[:10])

    # Act: five minutes of silence (a real outage would be hours), then the feed resumes
    clock.advance_to(bars[9].ts_event + 5 * NANOS_PER_MINUTE)
    bus.drain()
    during = (monitor.health, desk.state, monitor.reasons())
    replay(bus, clock, bars[15:17])

    # Assert
    assert during[0] is SystemHealth.DEGRADED and during[1] is TradingState.REDUCING
    assert during[2][0].startswith("feed BTCUSDT/kline stale")
    assert [c.state for c in desk.commands] == [TradingState.REDUCING, TradingState.ACTIVE]
    assert monitor.health is SystemHealth.HEALTHY and desk.state is TradingState.ACTIVE
    assert [(c.previous, c.health) for c in changes] == [
        (SystemHealth.HEALTHY, SystemHealth.DEGRADED),
        (SystemHealth.DEGRADED, SystemHealth.HEALTHY),
    ]


def test_an_operator_halt_is_never_undone_by_the_monitor() -> None:
    # Arrange
    bus, clock, _, desk, _, bars = wired()
    replay(bus, clock, bars[:10])
    bus.publish(SetTradingState(state=TradingState.HALTED, reason="operator", ts_event=0, ts_init=0))
    bus.drain()

    # Act
    clock.advance_to(bars[9].ts_event + 5 * NANOS_PER_MINUTE)
    bus.drain()
    replay(bus, clock, bars[15:17])

    # Assert
    assert desk.state is TradingState.HALTED
    assert [c.state for c in desk.commands] == [TradingState.HALTED]


def test_a_faulted_component_is_unhealthy_and_a_breach_degraded_until_trading_resumes() -> None:
    # Arrange
    bus, _, monitor, _, changes, _ = wired()

    # Act
    bus.publish(
        ComponentStateChanged(
            component="risk.controller",
            previous=ComponentState.RUNNING,
            state=ComponentState.FAULTED,
            reason="bug",
            ts_event=0,
            ts_init=0,
        )
    )
    bus.publish(
        RiskBreached(
            limit="max_drawdown_pct",
            value=0.3,
            threshold=0.25,
            state=TradingState.REDUCING,
            reason="drawdown",
            ts_event=0,
            ts_init=0,
        )
    )
    bus.drain()
    faulted = (monitor.health, monitor.reasons())
    bus.publish(
        ComponentStateChanged(
            component="risk.controller",
            previous=ComponentState.FAULTED,
            state=ComponentState.STOPPED,
            reason="",
            ts_event=0,
            ts_init=0,
        )
    )
    bus.publish(
        TradingStateChanged(
            previous=TradingState.REDUCING, state=TradingState.ACTIVE, reason="operator", ts_event=0, ts_init=0
        )
    )
    bus.drain()

    # Assert
    assert faulted[0] is SystemHealth.UNHEALTHY
    assert faulted[1][0] == "risk.controller faulted: bug" and faulted[1][1].startswith("risk limit max_drawdown_pct")
    assert monitor.health is SystemHealth.HEALTHY
    assert [c.health for c in changes] == [SystemHealth.UNHEALTHY, SystemHealth.DEGRADED, SystemHealth.HEALTHY]


def test_handler_errors_degrade_until_a_clean_interval() -> None:
    # Arrange: a handler that fails on the first three bars only
    bus, clock, monitor, _, _, bars = wired()
    failures = iter(range(3))

    def flaky(_: BarClosed) -> None:
        if next(failures, None) is not None:
            raise ArithmeticError("bug")

    bus.subscribe(BarClosed, flaky, name="flaky")

    # Act
    replay(bus, clock, bars[:3])
    degraded = (monitor.health, monitor.reasons())
    replay(bus, clock, bars[3:6])

    # Assert
    assert degraded[0] is SystemHealth.DEGRADED
    assert len(degraded[1]) == 1 and degraded[1][0].endswith("bus handler errors")
    assert monitor.health is SystemHealth.HEALTHY


def reconciled(*mismatches: str) -> ReconciliationCompleted:
    return ReconciliationCompleted(
        adopted_orders=(),
        resolved_orders=("keel-4",),
        never_sent_orders=(),
        missed_fills=1,
        missed_funding=0,
        mismatches=mismatches,
        ts_event=0,
        ts_init=0,
    )


def test_a_reconciliation_mismatch_is_unhealthy_and_halts_until_an_operator_resumes() -> None:
    # Arrange
    bus, _, monitor, desk, _, _ = wired()

    # Act
    bus.publish(reconciled("position BTCUSDT: keel 0.004, venue 0.006"))
    bus.drain()
    during = (monitor.health, desk.state, monitor.reasons())
    bus.publish(SetTradingState(state=TradingState.ACTIVE, reason="operator checked the venue", ts_event=0, ts_init=0))
    bus.drain()

    # Assert
    assert during[0] is SystemHealth.UNHEALTHY and during[1] is TradingState.HALTED
    assert during[2] == ["reconciliation mismatch: position BTCUSDT: keel 0.004, venue 0.006"]
    assert desk.commands[0].reason.startswith("reconciliation mismatch with the venue")
    assert monitor.health is SystemHealth.HEALTHY and desk.state is TradingState.ACTIVE


def test_a_clean_reconciliation_changes_nothing() -> None:
    # Arrange
    bus, _, monitor, desk, changes, _ = wired()

    # Act
    bus.publish(reconciled())
    bus.drain()

    # Assert
    assert monitor.health is SystemHealth.HEALTHY and desk.state is TradingState.ACTIVE
    assert desk.commands == [] and changes == []


def test_a_mismatch_is_only_reported_when_configured_so() -> None:
    # Arrange
    bus = EventBus()
    desk = TradingDesk(bus)
    monitor = SystemMonitor(bus, SimulatedClock(0), mismatch_state=None)
    monitor.start()
    bus.drain()

    # Act
    bus.publish(reconciled("wallet balance: keel 10000, venue 9990"))
    bus.drain()

    # Assert
    assert monitor.health is SystemHealth.UNHEALTHY
    assert desk.commands == []


def test_unanswered_venue_calls_degrade_health_until_a_clean_interval() -> None:
    # Arrange: the venue probe counts calls that got no answer
    bus = EventBus()
    clock = SimulatedClock(0)
    unanswered = [0]
    monitor = SystemMonitor(bus, clock, check_interval_ns=NANOS_PER_MINUTE, venue_failures=lambda: unanswered[0])
    monitor.start()
    bus.drain()

    # Act
    unanswered[0] = 2
    clock.advance_to(NANOS_PER_MINUTE)
    bus.drain()
    during = (monitor.health, monitor.reasons())
    clock.advance_to(2 * NANOS_PER_MINUTE)
    bus.drain()

    # Assert
    assert during == (SystemHealth.DEGRADED, ["venue unreachable: 2 calls got no answer"])
    assert monitor.health is SystemHealth.HEALTHY


def test_an_overloaded_bus_that_conflates_market_data_degrades_health_until_it_keeps_up() -> None:
    # Arrange: a bus with room for two market-data messages
    bars = real_bars("BTCUSDT", 6)
    bus = EventBus(capacity=2)
    clock = SimulatedClock(bars[0].ts_event)
    monitor = SystemMonitor(bus, clock, check_interval_ns=NANOS_PER_MINUTE)
    monitor.start()
    bus.drain()

    # Act: four bars of one symbol arrive before anything is dispatched
    for bar in bars[:4]:
        bus.publish(bar)
    clock.advance_to(bars[0].ts_event + NANOS_PER_MINUTE)
    bus.drain()
    during = (monitor.health, monitor.reasons())
    clock.advance_to(bars[0].ts_event + 2 * NANOS_PER_MINUTE)
    bus.drain()

    # Assert
    assert during[0] is SystemHealth.DEGRADED
    assert during[1][0].startswith("bus overloaded:")
    assert monitor.health is SystemHealth.HEALTHY


def journal_component(state: ComponentState, reason: str = "") -> ComponentStateChanged:
    previous = ComponentState.RUNNING if state is ComponentState.DEGRADED else ComponentState.DEGRADED
    return ComponentStateChanged(
        component="integration.state", previous=previous, state=state, reason=reason, ts_event=0, ts_init=0
    )


def test_database_down_degrades_health_and_reduces_until_it_is_back() -> None:
    # Arrange
    bus, _, monitor, desk, _, _ = wired()

    # Act
    bus.publish(journal_component(ComponentState.DEGRADED, "database unreachable: OperationalError: refused"))
    bus.drain()
    during = (monitor.health, desk.state, monitor.reasons())
    bus.publish(journal_component(ComponentState.RUNNING, "database reachable again"))
    bus.drain()

    # Assert
    assert during[0] is SystemHealth.DEGRADED and during[1] is TradingState.REDUCING
    assert "database unreachable" in during[2][0]
    assert [c.state for c in desk.commands] == [TradingState.REDUCING, TradingState.ACTIVE]
    assert monitor.health is SystemHealth.HEALTHY and desk.state is TradingState.ACTIVE


def reject(bus: EventBus, clock: SimulatedClock, number: int, code: int = -2022) -> None:
    now = clock.timestamp_ns()
    bus.publish(
        OrderRejected(
            client_order_id=f"keel-{number}",
            symbol="ETHUSDT",
            code=code,
            reason="ReduceOnly Order is rejected.",
            ts_event=now,
            ts_init=now,
        )
    )
    bus.drain()


def test_repeated_venue_rejections_degrade_health_and_move_trading_until_an_operator_resumes() -> None:
    # Arrange: two rejections more than the window apart, post-only rejections in between
    bus = EventBus()
    clock = SimulatedClock(0)
    desk = TradingDesk(bus)
    monitor = SystemMonitor(bus, clock, rejection_limit=3, rejection_window_ns=60 * NANOS_PER_MINUTE)
    monitor.start()
    bus.drain()
    reject(bus, clock, 1)
    clock.advance_to(clock.timestamp_ns() + 61 * NANOS_PER_MINUTE)
    reject(bus, clock, 2)
    for number in (3, 4, 5):
        reject(bus, clock, number, code=-5022)
    before = (monitor.health, desk.state)

    # Act: two more within the hour of the second, then the operator resumes
    reject(bus, clock, 6)
    reject(bus, clock, 7)
    during = (monitor.health, desk.state, monitor.reasons())
    bus.publish(SetTradingState(state=TradingState.ACTIVE, reason="operator", ts_event=0, ts_init=0))
    bus.drain()

    # Assert
    assert before == (SystemHealth.HEALTHY, TradingState.ACTIVE)
    assert during[0] is SystemHealth.DEGRADED and during[1] is TradingState.REDUCING
    assert during[2][0].startswith("the venue rejected 3 orders within 60 min, the last keel-7")
    assert [c.state for c in desk.commands] == [TradingState.REDUCING, TradingState.ACTIVE]
    assert monitor.health is SystemHealth.HEALTHY and desk.state is TradingState.ACTIVE


def test_database_down_halts_when_configured_so_and_returns_to_the_state_it_left() -> None:
    # Arrange: trading was REDUCING (an operator's choice) when the database went down
    bus, _, monitor, desk, _, _ = wired()
    monitor.database_outage_state = TradingState.HALTED
    bus.publish(SetTradingState(state=TradingState.REDUCING, reason="operator", ts_event=0, ts_init=0))
    bus.drain()

    # Act
    bus.publish(journal_component(ComponentState.DEGRADED, "database unreachable"))
    bus.drain()
    during = desk.state
    bus.publish(journal_component(ComponentState.RUNNING))
    bus.drain()

    # Assert
    assert during is TradingState.HALTED
    assert desk.state is TradingState.REDUCING


def test_database_down_leaves_a_state_an_operator_set_during_the_outage() -> None:
    # Arrange
    bus, _, _, desk, _, _ = wired()
    bus.publish(journal_component(ComponentState.DEGRADED, "database unreachable"))
    bus.drain()

    # Act: the operator halts during the outage; then the database comes back
    bus.publish(SetTradingState(state=TradingState.HALTED, reason="operator", ts_event=0, ts_init=0))
    bus.drain()
    bus.publish(journal_component(ComponentState.RUNNING))
    bus.drain()

    # Assert
    assert desk.state is TradingState.HALTED
    assert [c.state for c in desk.commands] == [TradingState.REDUCING, TradingState.HALTED]


def test_database_down_outlasting_a_stale_feed_keeps_trading_reduced_until_it_is_back() -> None:
    # Arrange: the feed goes stale (REDUCING), then the database goes down (HALTED by configuration)
    bus, clock, monitor, desk, _, bars = wired()
    monitor.database_outage_state = TradingState.HALTED
    replay(bus, clock, bars[:10])
    clock.advance_to(bars[9].ts_event + 5 * NANOS_PER_MINUTE)
    bus.drain()
    bus.publish(journal_component(ComponentState.DEGRADED, "database unreachable"))
    bus.drain()

    # Act: the feed recovers while the database is still down, then the database returns
    replay(bus, clock, bars[15:17])
    while_database_down = desk.state
    bus.publish(journal_component(ComponentState.RUNNING))
    bus.drain()

    # Assert
    assert while_database_down is TradingState.HALTED
    assert desk.state is TradingState.ACTIVE


def test_repeated_rejections_move_nothing_when_configured_to_report_only() -> None:
    # Arrange
    bus = EventBus()
    clock = SimulatedClock(0)
    desk = TradingDesk(bus)
    monitor = SystemMonitor(bus, clock, rejection_limit=2, rejection_state=None)
    monitor.start()
    bus.drain()

    # Act
    reject(bus, clock, 1)
    reject(bus, clock, 2)

    # Assert
    assert monitor.health is SystemHealth.DEGRADED
    assert desk.commands == [] and desk.state is TradingState.ACTIVE


def test_a_lagging_event_loop_degrades_health_past_the_threshold_until_it_catches_up() -> None:
    # Arrange
    bus = EventBus()
    clock = SimulatedClock(0)
    lag = [0.6]
    monitor = SystemMonitor(
        bus, clock, check_interval_ns=NANOS_PER_MINUTE, loop_lag=lambda: lag[0], loop_lag_threshold_seconds=0.25
    )
    monitor.start()
    bus.drain()

    # Act
    clock.advance_to(NANOS_PER_MINUTE)
    bus.drain()
    during = (monitor.health, monitor.reasons())
    lag[0] = 0.01
    clock.advance_to(2 * NANOS_PER_MINUTE)
    bus.drain()

    # Assert
    assert during == (SystemHealth.DEGRADED, ["event loop lagging: 0.600 s late (threshold 0.25 s)"])
    assert monitor.health is SystemHealth.HEALTHY


@given(st.lists(st.floats(min_value=-1.0, max_value=5.0, allow_nan=False), min_size=1, max_size=60))
def test_the_loop_lag_probe_reports_the_worst_lateness_of_its_window(samples: list[float]) -> None:
    probe = LoopLagProbe(window=20)

    for sample in samples:
        probe.record(sample)

    assert probe.lag_seconds == max(0.0, *samples[-20:])


def test_a_bus_overflow_degrades_health_until_a_clean_interval() -> None:
    # Arrange: a market-data lane of one message
    bars = real_bars("BTCUSDT", 2)
    bus = EventBus(capacity=1)
    clock = SimulatedClock(bars[0].ts_event)
    monitor = SystemMonitor(bus, clock, check_interval_ns=NANOS_PER_MINUTE)
    monitor.start()
    bus.drain()

    # Act: a bar of a second symbol arrives while the lane is full (kept, beyond capacity)
    bus.publish(bars[0])
    bus.publish(msgspec.structs.replace(bars[0], symbol="ETHUSDT"))
    clock.advance_to(bars[0].ts_event + NANOS_PER_MINUTE)
    bus.drain()
    during = (monitor.health, monitor.reasons())
    clock.advance_to(bars[0].ts_event + 2 * NANOS_PER_MINUTE)
    bus.drain()

    # Assert
    assert bus.overflow == 1
    assert during == (SystemHealth.DEGRADED, ["bus overflowed: 1 messages over capacity"])
    assert monitor.health is SystemHealth.HEALTHY


def test_a_gap_in_the_bars_trips_the_monitors_backtests_and_paper_share() -> None:
    # Arrange: the configured monitors over real bars with ten bars cut out
    bars = real_bars("BTCUSDT", 30)
    bus = EventBus()
    clock = SimulatedClock(bars[0].open_time)
    desk = TradingDesk(bus)
    config = load_config("backtest", environ={"KEEL_DATA__SYMBOLS": "BTCUSDT"})
    monitors = build_monitors(config, bus, clock)
    for monitor in monitors:
        monitor.start()
    bus.drain()

    # Act
    replay(bus, clock, bars[:10] + bars[20:])

    # Assert
    assert [c.state for c in desk.commands] == [TradingState.REDUCING, TradingState.ACTIVE]
    assert "stale" in desk.commands[0].reason
    assert monitors[0].health is SystemHealth.HEALTHY


def venue_condition(condition: str, active: bool, reason: str) -> VenueConditionChanged:
    return VenueConditionChanged(
        venue="binance", condition=condition, active=active, reason=reason, ts_event=0, ts_init=0
    )


def test_a_venue_ban_halts_trading_shows_in_health_and_returns_to_the_state_it_left_when_it_ends() -> None:
    # Arrange: trading REDUCING already (a risk limit), the default ban state HALTED
    bus, _clock, monitor, desk, _changes, _bars = wired()
    bus.publish(SetTradingState(state=TradingState.REDUCING, reason="risk", ts_event=0, ts_init=0))
    bus.drain()

    # Act
    bus.publish(venue_condition("banned", True, "Binance banned this IP (HTTP 418)"))
    bus.drain()
    during = (desk.state, monitor.health, monitor.reasons())
    bus.publish(venue_condition("banned", False, "banned: back to normal"))
    bus.drain()

    # Assert
    assert during[0] is TradingState.HALTED and during[1] is SystemHealth.DEGRADED
    assert during[2] == ["binance: Binance banned this IP (HTTP 418)"]
    assert desk.state is TradingState.REDUCING
    assert monitor.health is SystemHealth.HEALTHY


def test_a_venue_ban_moves_to_the_configured_state_and_leaves_an_operator_halt_alone() -> None:
    # Arrange
    bus = EventBus()
    desk = TradingDesk(bus)
    SystemMonitor(bus, SimulatedClock(0), venue_ban_state=TradingState.REDUCING).start()
    bus.drain()

    # Act: a ban, then an operator halt during it, then the ban ends
    bus.publish(venue_condition("banned", True, "HTTP 418"))
    bus.drain()
    during = desk.state
    bus.publish(SetTradingState(state=TradingState.HALTED, reason="operator", ts_event=0, ts_init=0))
    bus.drain()
    bus.publish(venue_condition("banned", False, "over"))
    bus.drain()

    # Assert: REDUCING during the ban; the operator's halt stays after it
    assert during is TradingState.REDUCING
    assert desk.state is TradingState.HALTED


def test_a_user_stream_down_degrades_health_without_moving_trading() -> None:
    # Arrange
    bus, _clock, monitor, desk, _changes, _bars = wired()

    # Act
    bus.publish(venue_condition("user_stream", True, "user-data stream down: polling orders and positions"))
    bus.drain()
    during = monitor.health
    bus.publish(venue_condition("user_stream", False, "user_stream: back to normal"))
    bus.drain()

    # Assert
    assert during is SystemHealth.DEGRADED and monitor.health is SystemHealth.HEALTHY
    assert desk.state is TradingState.ACTIVE and desk.commands == []


def test_a_margin_call_is_unhealthy_until_an_operator_resumes() -> None:
    # Arrange
    bus, _clock, monitor, _desk, _changes, _bars = wired()
    call = MarginCalled(
        cross_wallet_balance=Decimal("12.5"),
        positions=(("ETHUSDT", "LONG", Decimal("1.3"), Decimal("187.1"), Decimal("1.6")),),
        ts_event=0,
        ts_init=0,
    )

    # Act
    bus.publish(call)
    bus.drain()
    during = (monitor.health, monitor.reasons())
    bus.publish(SetTradingState(state=TradingState.HALTED, reason="operator", ts_event=0, ts_init=0))
    bus.publish(SetTradingState(state=TradingState.ACTIVE, reason="operator resumed", ts_event=0, ts_init=0))
    bus.drain()

    # Assert
    assert during[0] is SystemHealth.UNHEALTHY and during[1] == ["margin call: ETHUSDT LONG 1.3"]
    assert monitor.health is SystemHealth.HEALTHY


def test_a_watched_dependency_degrades_health_with_its_reason_until_it_is_back() -> None:
    # Arrange
    bus = EventBus()
    clock = SimulatedClock(0)
    problem: list[str | None] = ["status cache (redis) unreachable: ConnectionError"]
    monitor = SystemMonitor(bus, clock, check_interval_ns=NANOS_PER_MINUTE)
    monitor.watch_dependency("status cache", lambda: problem[0])
    monitor.start()
    bus.drain()

    # Act
    clock.advance_to(NANOS_PER_MINUTE)
    bus.drain()
    during = (monitor.health, monitor.reasons())
    problem[0] = None
    clock.advance_to(2 * NANOS_PER_MINUTE)
    bus.drain()

    # Assert
    assert during == (SystemHealth.DEGRADED, ["status cache (redis) unreachable: ConnectionError"])
    assert monitor.health is SystemHealth.HEALTHY


def test_a_quiet_bus_costs_no_checks_and_a_handler_error_resumes_them_on_schedule() -> None:
    # Arrange: only the system monitor, checking every minute; a handler fails on the eleventh bar only
    bars = real_bars("BTCUSDT", 30)
    bus = EventBus()
    clock = SimulatedClock(bars[0].open_time)
    monitor = SystemMonitor(bus, clock, check_interval_ns=NANOS_PER_MINUTE)
    changes: list[HealthChanged] = []
    bus.subscribe(HealthChanged, changes.append)
    monitor.start()
    bus.drain()
    failing = bars[10].ts_event

    def flaky(bar: BarClosed) -> None:
        if bar.ts_event == failing:
            raise ArithmeticError("bug")

    bus.subscribe(BarClosed, flaky, name="flaky")

    # Act
    fired = []
    for bar in bars:
        fired.append(clock.advance_to(bar.ts_event))
        bus.publish(bar)
        bus.drain()

    # Assert: one check finds the bus quiet; the error is found at the next minute and cleared the one after
    assert sum(fired[:11]) == 1
    assert [(c.health, c.ts_event) for c in changes] == [
        (SystemHealth.DEGRADED, failing + NANOS_PER_MINUTE),
        (SystemHealth.HEALTHY, failing + 2 * NANOS_PER_MINUTE),
    ]
    assert sum(fired[13:]) == 0


# --- UC-4.1: health checked on request, and the automatic recovery ----------------------------


class FailingOnce(BaseStrategy):
    """A strategy that raises on its first bar only (no view afterwards)."""

    def __init__(self) -> None:
        super().__init__("failing_once")
        self.calls = 0

    def generate_signal(self, market_data: Mapping[str, Any], current_index: int) -> StrategySignal | None:
        self.calls += 1
        if self.calls == 1:
            raise ZeroDivisionError("first bar")
        return None


def with_a_failing_strategy(
    **settings: Any,
) -> tuple[EventBus, SimulatedClock, SystemMonitor, StrategyRunner, TradingDesk, list[BarClosed]]:
    bars = real_bars("BTCUSDT", 30)
    bus = EventBus()
    clock = SimulatedClock(bars[0].open_time)
    desk = TradingDesk(bus)
    runner = StrategyRunner(FailingOnce(), bus, clock)
    monitor = SystemMonitor(bus, clock, check_interval_ns=NANOS_PER_MINUTE, components=[runner], **settings)
    runner.start()
    monitor.start()
    bus.drain()
    return bus, clock, monitor, runner, desk, bars


def test_a_health_check_on_request_names_the_degraded_component() -> None:
    # Arrange
    bus, clock, monitor, runner, _desk, bars = with_a_failing_strategy()
    replay(bus, clock, bars[:5])

    # Act
    health_status = asyncio.run(monitor.check_system_health())

    # Assert
    assert health_status["status"] == "DEGRADED"
    assert health_status["degraded_components"] == [runner.name]
    assert health_status["reasons"][0].startswith(f"{runner.name} degraded: strategy failing_once raised")
    assert health_status["trading_state"] == "ACTIVE"


def test_the_health_check_answers_by_the_reviews_other_name_too() -> None:
    # Arrange: section 4.6 of the review writes ``system_health = await monitor.get_system_health()``
    bus, clock, monitor, runner, _desk, bars = with_a_failing_strategy()
    replay(bus, clock, bars[:5])

    # Act
    system_health = asyncio.run(monitor.get_system_health())

    # Assert
    assert system_health == asyncio.run(monitor.check_system_health())
    assert system_health["status"] == "DEGRADED" and system_health["degraded_components"] == [runner.name]


def test_the_automatic_recovery_returns_a_component_whose_fault_is_past_to_running() -> None:
    # Arrange: the review's UC-4.1, as written
    bus, clock, monitor, runner, desk, bars = with_a_failing_strategy()
    replay(bus, clock, bars[:5])

    async def administrator() -> tuple[Any, Any]:
        health_status = await monitor.check_system_health()
        if health_status["status"] == "DEGRADED":
            return health_status, await monitor.trigger_auto_recovery()
        return health_status, None

    # Act
    before, outcome = asyncio.run(administrator())
    replay(bus, clock, bars[5:10])

    # Assert
    assert outcome is not None
    assert outcome["previous_status"] == "DEGRADED" and outcome["status"] == "HEALTHY"
    assert outcome["recovered_components"] == [runner.name]
    assert outcome["cleared"] == before["reasons"] and outcome["remaining"] == []
    assert runner.state is ComponentState.RUNNING and monitor.health is SystemHealth.HEALTHY
    assert desk.commands == []


def test_the_automatic_recovery_leaves_what_only_an_operator_clears_and_never_moves_trading() -> None:
    # Arrange: a strategy fault and a drawdown breach that halted trading
    bus, clock, monitor, runner, desk, bars = with_a_failing_strategy()
    replay(bus, clock, bars[:5])
    bus.publish(SetTradingState(state=TradingState.HALTED, reason="risk: drawdown", ts_event=0, ts_init=0))
    bus.publish(
        RiskBreached(
            limit="halt_drawdown_pct",
            value=0.21,
            threshold=0.2,
            state=TradingState.HALTED,
            reason="drawdown 21% from the equity peak",
            ts_event=0,
            ts_init=0,
        )
    )
    bus.drain()

    # Act
    outcome = asyncio.run(monitor.trigger_auto_recovery())

    # Assert
    assert outcome.recovered_components == [runner.name] and outcome.status == "DEGRADED"
    assert len(outcome.remaining) == 1 and outcome.operator_required == outcome.remaining
    assert outcome.remaining[0].startswith("risk limit halt_drawdown_pct breached")
    assert outcome.trading_state == "HALTED" and desk.state is TradingState.HALTED
    assert [c.state for c in desk.commands] == [TradingState.HALTED]


def test_the_automatic_recovery_leaves_the_journal_to_recover_when_the_database_is_back() -> None:
    # Arrange: the journal's component is degraded by a database outage that is still going on
    bus, clock, monitor, runner, _desk, bars = with_a_failing_strategy(database_component="strategy.failing_once")
    replay(bus, clock, bars[:5])

    # Act
    outcome = asyncio.run(monitor.trigger_auto_recovery())

    # Assert
    assert outcome.recovered_components == [] and runner.state is ComponentState.DEGRADED
    assert outcome.status == "DEGRADED" and outcome.cleared == []
