"""Scheduled DCA on real bars: buys at the schedule's fire times, take-profit on the average cost, no look-ahead."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from strategy_data import MAY_5, MINUTE_NS, assert_no_lookahead, index_at, market_data, signals

from keel.strategy_engine import ScheduledDcaStrategy

HOUR_NS = 60 * MINUTE_NS


@pytest.fixture(scope="module")
def week() -> dict:
    return market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=7 * 1440)


def slices(views: list) -> list[int]:
    return [0 if v is None else v.metadata.get("slices", 0) for v in views]


def test_interval_buys_land_on_the_epoch_aligned_fire_times(week: dict) -> None:
    # Arrange: every 4 hours, never reaching the take-profit
    strategy = ScheduledDcaStrategy(interval_minutes=240, notional_usdt=100.0, budget_usdt=1e6, take_profit=1.0)

    # Act
    held = slices(signals(strategy, week))

    # Assert
    buys = [i for i in range(1, len(held)) if held[i] > held[i - 1]]
    assert len(buys) == 7 * 6
    for i in buys:
        assert week["timestamp"][i] % (4 * HOUR_NS) == 0


def test_a_cron_schedule_replaces_the_interval(week: dict) -> None:
    # Arrange: 09:30 UTC every day
    strategy = ScheduledDcaStrategy(cron="30 9 * * *", notional_usdt=100.0, budget_usdt=1e6, take_profit=1.0)

    # Act
    held = slices(signals(strategy, week))

    # Assert
    buys = [i for i in range(1, len(held)) if held[i] > held[i - 1]]
    assert [(week["timestamp"][i] // MINUTE_NS) % 1440 for i in buys] == [9 * 60 + 30] * 7
    with pytest.raises(ValueError, match="cron 'every day' is not a crontab expression"):
        ScheduledDcaStrategy(cron="every day")


def test_take_profit_sells_everything_at_the_average_cost_target(week: dict) -> None:
    # Arrange
    strategy = ScheduledDcaStrategy(interval_minutes=60, notional_usdt=500.0, budget_usdt=6000.0, take_profit=0.01)

    # Act
    views = signals(strategy, week)
    held = slices(views)

    # Assert
    exits = [i for i in range(1, len(held)) if held[i - 1] > 0 and held[i] <= 1 and held[i] < held[i - 1]]
    assert len(exits) >= 3
    for i in exits:
        before = views[i - 1]
        assert week["high"][i] >= before.take_profit
        assert before.take_profit == pytest.approx(before.metadata["average_cost"] * 1.01)
    assert max(held) == 12
    assert all(views[i].target_quantity == 0.0 for i in exits if held[i] == 0)


def test_each_buy_adds_the_fixed_notional_at_the_close_until_the_budget_is_reached(week: dict) -> None:
    # Arrange: 250 USDT every hour, 1000 USDT budget, never reaching the take-profit
    strategy = ScheduledDcaStrategy(interval_minutes=60, notional_usdt=250.0, budget_usdt=1000.0, take_profit=1.0)

    # Act
    views = signals(strategy, week)
    targets = [(i, v.target_quantity) for i, v in enumerate(views) if v is not None]
    buys = [(i, q - p) for (_, p), (i, q) in itertools.pairwise(targets) if q != p]

    # Assert: each target step is 250 USDT at the fire's close; four steps, then the budget stops it
    assert len(buys) == 4
    for i, added in buys:
        assert added * week["close"][i] == pytest.approx(250.0)
    assert {v.metadata["bought_usdt"] for v in views if v is not None and "bought_usdt" in v.metadata} == {
        250.0,
        500.0,
        750.0,
        1000.0,
    }
    # no weight of its own: the allocator leaves the target quantity as it is
    assert {(v.action, v.strength) for v in views if v is not None} == {("HOLD", 0.0)}


def test_the_average_cost_is_the_harmonic_mean_of_equal_notional_buys(week: dict) -> None:
    # Arrange
    strategy = ScheduledDcaStrategy(interval_minutes=240, notional_usdt=100.0, budget_usdt=1e6, take_profit=1.0)

    # Act
    views = signals(strategy, week)
    held = slices(views)

    # Assert
    buys = [i for i in range(1, len(held)) if held[i] > held[i - 1]]
    prices = week["close"][buys]
    assert views[-1].metadata["average_cost"] == pytest.approx(len(prices) / np.sum(1.0 / prices))


def test_lookahead_scheduled_dca_up_to_t_ignores_later_bars() -> None:
    data = market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=3000)
    assert_no_lookahead(
        lambda: ScheduledDcaStrategy(interval_minutes=60, notional_usdt=300.0, take_profit=0.005), data, cut=2000
    )


def buy_times(views: list, data: dict) -> list[int]:
    held = slices(views)
    return [int(data["timestamp"][i]) for i in range(1, len(held)) if held[i] > held[i - 1]]


def test_on_the_wall_clock_the_fires_received_buy_at_the_first_bar_closing_at_or_after_them(week: dict) -> None:
    # Arrange: the bars' clock up to 06:00; after it fires come from the scheduler, one late, two coalesced
    day = {
        k: (v[:1440] if k in ("timestamp", "open", "high", "low", "close", "volume") else v) for k, v in week.items()
    }
    midnight = int(day["timestamp"][0]) - MINUTE_NS
    strategy = ScheduledDcaStrategy(interval_minutes=240, notional_usdt=100.0, budget_usdt=1e6, take_profit=1.0)
    switch = midnight + 6 * HOUR_NS
    strategy.follow_wall_clock(switch)
    on_time, late = midnight + 8 * HOUR_NS, midnight + 12 * HOUR_NS + 30_000_000_000
    first_coalesced, second_coalesced = midnight + 15 * HOUR_NS + 10 * 10**9, midnight + 15 * HOUR_NS + 40 * 10**9
    for fire in (switch - 2 * HOUR_NS, on_time, late, first_coalesced, second_coalesced):
        strategy.record_fire(fire)

    # Act
    views = signals(strategy, day)

    # Assert: 04:00 on the bars' clock; then each fire at its bar (the late one and the two with no bar between
    # them at the next close, once); none at 12:00, 16:00, 20:00 (the scheduler did not fire then)
    next_close = midnight + 15 * HOUR_NS + MINUTE_NS
    assert buy_times(views, day) == [midnight + 4 * HOUR_NS, on_time, late + 30_000_000_000, next_close]


def test_a_fire_received_after_its_bar_buys_at_the_next_bar(week: dict) -> None:
    # Arrange: the scheduler fires at 08:00, but the bar closing at 08:00 was handled before the fire arrived
    strategy = ScheduledDcaStrategy(interval_minutes=240, notional_usdt=100.0, budget_usdt=1e6, take_profit=1.0)
    ts = [int(t) for t in week["timestamp"]]
    strategy.follow_wall_clock(ts[0])
    fire = ts[0] + 8 * HOUR_NS
    at_fire = ts.index(fire)
    early = [strategy.generate_signal(week, i) for i in range(at_fire + 1)]

    # Act
    strategy.record_fire(fire)
    late = [strategy.generate_signal(week, i) for i in range(at_fire + 1, at_fire + 3)]

    # Assert
    assert slices(early) == [0] * (at_fire + 1)
    assert slices(late) == [1, 1]
