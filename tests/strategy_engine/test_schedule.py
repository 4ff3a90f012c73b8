"""Schedules on the simulated clock: the fire times APScheduler computes, and the bars a DCA buys at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from strategy_data import MAY_5, MINUTE_NS, index_at, market_data, signals

from keel.strategy_engine import ScheduledDcaStrategy
from keel.strategy_engine.schedule import Schedule, to_datetime, to_ns

HOUR_NS = 60 * MINUTE_NS


def apscheduler_fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """Fire times as APScheduler runs a job: the trigger asked again from each previous fire time."""
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.start(paused=True)
    try:
        before = datetime.now(UTC)
        job = scheduler.add_job(print, trigger=schedule.trigger)
        later = datetime.now(UTC)
        # The scheduler plans the job's first run with the schedule's own trigger object.
        planned = job.next_run_time
        assert job.trigger is schedule.trigger
        assert (
            schedule.trigger.get_next_fire_time(None, before)
            <= planned
            <= schedule.trigger.get_next_fire_time(None, later)
        )
    finally:
        scheduler.shutdown(wait=False)
    times = [schedule.trigger.get_next_fire_time(None, after)]
    while len(times) < count:
        times.append(schedule.trigger.get_next_fire_time(times[-1], times[-1] + timedelta(microseconds=1)))
    return times


@pytest.mark.parametrize(
    ("schedule", "first"),
    [
        (Schedule(timedelta(hours=4)), datetime(2025, 5, 5, 4, tzinfo=UTC)),
        (Schedule(timedelta(minutes=90)), datetime(2025, 5, 5, 1, 30, tzinfo=UTC)),
        (Schedule(cron="30 9 * * 1-5"), datetime(2025, 5, 5, 9, 30, tzinfo=UTC)),
        (Schedule(cron="0 */6 * * *"), datetime(2025, 5, 5, 6, tzinfo=UTC)),
    ],
    ids=["every-4h", "every-90min", "weekdays-0930", "every-6h-cron"],
)
def test_fire_times_on_the_simulated_clock_are_the_ones_apscheduler_computes(
    schedule: Schedule, first: datetime
) -> None:
    # Arrange: just after 2025-05-05 00:00 UTC (a Monday)
    start = datetime(2025, 5, 5, tzinfo=UTC)
    expected = apscheduler_fire_times(schedule, start + timedelta(microseconds=1), 20)

    # Act
    fires = schedule.fire_times(to_ns(start), to_ns(expected[-1]))

    # Assert
    assert [to_datetime(f) for f in fires] == expected
    assert expected[0] == first
    assert schedule.next_fire_after(fires[3]) == fires[4]
    assert schedule.next_fire_after(fires[3] - 1) == fires[3]


def test_a_weekday_cron_skips_the_weekend() -> None:
    # Act
    fires = Schedule(cron="30 9 * * 1-5").fire_times(
        to_ns(datetime(2025, 5, 5, tzinfo=UTC)), to_ns(datetime(2025, 5, 12, 10, tzinfo=UTC))
    )

    # Assert: Monday to Friday, then Monday again
    assert [to_datetime(f).day for f in fires] == [5, 6, 7, 8, 9, 12]


def test_a_dca_backtest_buys_at_the_bars_closing_at_the_fire_times() -> None:
    # Arrange: a week of 1m bars; a cron and an interval schedule
    week = market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=7 * 1440)
    first, last = int(week["timestamp"][0]), int(week["timestamp"][-1])
    for schedule in (Schedule(timedelta(minutes=150)), Schedule(cron="15 */8 * * *")):
        strategy = ScheduledDcaStrategy(schedule=schedule, notional_usdt=10.0, budget_usdt=1e6, take_profit=1.0)

        # Act
        views = signals(strategy, week)

        # Assert: the first bar buys nothing (warm-up); every later fire time buys at the bar closing then
        held = [0 if v is None else v.metadata.get("slices", 0) for v in views]
        buys = [int(week["timestamp"][i]) for i in range(1, len(held)) if held[i] > held[i - 1]]
        assert buys == schedule.fire_times(first, last)


def test_schedules_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="dca cron 'daily' is not a crontab expression"):
        Schedule(cron="daily", owner="dca")
    with pytest.raises(ValueError, match="interval must be positive"):
        Schedule(timedelta(0))
    with pytest.raises(ValueError, match="misfire_grace_seconds must be > 0"):
        Schedule(misfire_grace_seconds=0.0)
