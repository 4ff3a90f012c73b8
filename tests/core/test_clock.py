"""Tests of keel.core.clock: the simulated clock's timers, grid alignment, and the live clock.

The simulated clock is advanced explicitly. The live clock is read twice
instead of sleeping, and its timers run on a real asyncio loop with a clock
sped up a million times; the tests wait on an asyncio.Event set by the timer
callback, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.clock import (
    NANOS_PER_HOUR,
    NANOS_PER_MILLI,
    NANOS_PER_MINUTE,
    NANOS_PER_SECOND,
    Clock,
    LiveClock,
    SimulatedClock,
    next_aligned,
)
from keel.core.time_events import TimeEvent

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIMEOUT_SECONDS = 10.0


def utc_ns(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0
) -> int:
    moment = datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1) * 1_000


@dataclass
class Firings:
    """A hand-written timer callback recorder: (timer name, scheduled ts, clock reading)."""

    clock: Clock
    log: list[tuple[str, int, int]] = field(default_factory=list)

    def __call__(self, event: TimeEvent) -> None:
        self.log.append((event.name, event.ts, self.clock.timestamp_ns()))

    def times(self, name: str | None = None) -> list[int]:
        return [ts for n, ts, _ in self.log if name is None or n == name]

    def names(self) -> list[str]:
        return [n for n, _, _ in self.log]


# --- simulated clock ------------------------------------------------------------------------


def test_a_simulated_clock_starts_where_told_and_only_moves_when_advanced() -> None:
    clock = SimulatedClock(start_ns=1_000)

    assert clock.timestamp_ns() == 1_000
    assert clock.advance_to(5_000) == 0
    assert clock.timestamp_ns() == 5_000
    assert clock.advance_to(5_000) == 0
    assert clock.timestamp_ns() == 5_000


def test_advance_fires_due_timers_in_time_order_with_the_clock_at_the_scheduled_time() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)
    clock.set_alert("c", 30, firings)
    clock.set_alert("a", 10, firings)
    clock.set_alert("b", 20, firings)

    fired = clock.advance_to(25)

    assert fired == 2
    assert firings.log == [("a", 10, 10), ("b", 20, 20)]
    assert clock.timestamp_ns() == 25
    assert clock.advance_to(100) == 1
    assert firings.log[-1] == ("c", 30, 30)
    assert clock.timestamp_ns() == 100


def test_a_repeating_timer_fires_every_interval() -> None:
    start = utc_ns(2025, 3, 1)
    clock = SimulatedClock(start)
    firings = Firings(clock)
    clock.set_timer("bar_close", NANOS_PER_MINUTE, firings, start_ns=start + NANOS_PER_MINUTE)

    fired = clock.advance_to(start + 5 * NANOS_PER_MINUTE + NANOS_PER_SECOND)

    assert fired == 5
    expected = [start + k * NANOS_PER_MINUTE for k in range(1, 6)]
    assert firings.times() == expected
    assert [now for _, _, now in firings.log] == expected
    assert clock.next_timer_ns() == start + 6 * NANOS_PER_MINUTE


def test_a_timer_without_a_start_fires_on_the_next_interval_boundary() -> None:
    clock = SimulatedClock(utc_ns(2025, 3, 1, 5, 30))
    firings = Firings(clock)
    clock.set_timer("funding", 8 * NANOS_PER_HOUR, firings)

    clock.advance_to(utc_ns(2025, 3, 2, 1))

    assert firings.times() == [utc_ns(2025, 3, 1, 8), utc_ns(2025, 3, 1, 16), utc_ns(2025, 3, 2, 0)]


def test_a_timer_stops_at_stop_ns() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)
    clock.set_timer("rebalance", 10, firings, start_ns=10, stop_ns=35)

    fired = clock.advance_to(1_000)

    assert fired == 3
    assert firings.times() == [10, 20, 30]
    assert "rebalance" not in clock.timer_names()
    assert clock.next_timer_ns() is None


def test_an_alert_fires_once_and_its_name_can_be_reused() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)
    clock.set_alert("once", 50, firings)

    clock.advance_to(10_000)

    assert firings.log == [("once", 50, 50)]
    assert clock.timer_names() == []
    clock.set_alert("once", 20_000, firings)
    clock.advance_to(30_000)
    assert firings.times() == [50, 20_000]


def test_cancel_timer_stops_a_timer() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)
    clock.set_timer("tick", 10, firings, start_ns=10)
    clock.set_alert("later", 100, firings)
    clock.advance_to(25)

    clock.cancel_timer("tick")
    clock.cancel_timer("later")
    clock.cancel_timer("never-existed")
    fired = clock.advance_to(1_000)

    assert fired == 0
    assert firings.times() == [10, 20]
    assert clock.timer_names() == []
    assert clock.next_timer_ns() is None


def test_a_timer_can_cancel_itself_from_its_callback() -> None:
    clock = SimulatedClock()
    seen: list[int] = []

    def third_and_last(event: TimeEvent) -> None:
        seen.append(event.ts)
        if len(seen) == 3:
            clock.cancel_timer(event.name)

    clock.set_timer("tick", 10, third_and_last, start_ns=10)

    clock.advance_to(1_000)

    assert seen == [10, 20, 30]
    assert clock.timer_names() == []


def test_going_backwards_raises_and_keeps_the_time() -> None:
    clock = SimulatedClock(start_ns=100)

    with pytest.raises(ValueError):
        clock.advance_to(99)

    assert clock.timestamp_ns() == 100


def test_alerts_due_at_the_same_time_fire_in_registration_order() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)
    for name in ("risk", "strategy", "portfolio", "execution"):
        clock.set_alert(name, 60, firings)

    clock.advance_to(60)

    assert firings.names() == ["risk", "strategy", "portfolio", "execution"]


def test_repeating_timers_due_at_the_same_time_fire_in_registration_order() -> None:
    # The 1m bar timer was registered before the 8h funding timer; at 08:00
    # both are due and the bar timer must still come first, however many times
    # it has already fired.
    start = utc_ns(2025, 3, 1)
    clock = SimulatedClock(start)
    firings = Firings(clock)
    clock.set_timer("bar_close", NANOS_PER_MINUTE, firings)
    clock.set_timer("funding", 8 * NANOS_PER_HOUR, firings)

    clock.advance_to(utc_ns(2025, 3, 1, 8))

    at_eight = [name for name, ts, _ in firings.log if ts == utc_ns(2025, 3, 1, 8)]
    assert at_eight == ["bar_close", "funding"]


def test_timer_names_must_be_unique_and_intervals_positive() -> None:
    clock = SimulatedClock()
    clock.set_timer("tick", 10, Firings(clock))

    with pytest.raises(ValueError):
        clock.set_timer("tick", 10, Firings(clock))
    with pytest.raises(ValueError):
        clock.set_alert("tick", 5, Firings(clock))
    for interval in (0, -1):
        with pytest.raises(ValueError):
            clock.set_timer(f"bad{interval}", interval, Firings(clock))
    assert clock.timer_names() == ["tick"]


def test_a_callback_can_schedule_a_new_timer_that_fires_in_the_same_advance() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)

    def chain(event: TimeEvent) -> None:
        firings(event)
        clock.set_alert("second", event.ts + 5, firings)

    clock.set_alert("first", 10, chain)

    fired = clock.advance_to(100)

    assert fired == 2
    assert firings.log == [("first", 10, 10), ("second", 15, 15)]


def test_a_skipped_timer_resumes_on_its_schedule_in_its_place_among_timers_due_together() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)
    clock.set_timer("check", 10, firings, start_ns=10)
    clock.set_timer("rebalance", 10, firings, start_ns=10)

    clock.advance_to(10)
    clock.skip_timer_until("check", 35)
    fired = clock.advance_to(60)

    assert fired == 5 + 3
    assert firings.times("check") == [10, 40, 50, 60]
    assert firings.names()[-2:] == ["check", "rebalance"]


def test_a_timer_skipping_from_its_own_callback_next_fires_at_or_after_the_bound() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)

    def check(event: TimeEvent) -> None:
        firings(event)
        clock.skip_timer_until(event.name, event.ts + 25)

    clock.set_timer("check", 10, check, start_ns=10)

    clock.advance_to(100)

    assert firings.times() == [10, 40, 70, 100]


def test_an_earlier_bound_brings_skipped_firings_back_but_never_one_the_clock_has_passed() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)
    clock.set_timer("check", 10, firings, start_ns=10)
    clock.skip_timer_until("check", 1_000_000)
    clock.advance_to(50)

    clock.skip_timer_until("check", 0)  # the firing at 50 has passed: the next is at 60
    clock.advance_to(70)

    assert firings.times() == [60, 70]


def test_resuming_from_an_earlier_timer_due_at_the_same_time_fires_the_timer_at_that_time() -> None:
    # A timer registered before "check" resumes it while both are due at 30: "check" has not passed 30 yet.
    clock = SimulatedClock()
    firings = Firings(clock)

    def resume(event: TimeEvent) -> None:
        firings(event)
        if event.ts == 30:
            clock.skip_timer_until("check", event.ts)

    clock.set_timer("first", 10, resume, start_ns=10)
    clock.set_timer("check", 10, firings, start_ns=10)
    clock.advance_to(10)
    clock.skip_timer_until("check", 1_000_000)

    clock.advance_to(40)

    assert firings.log[-4:] == [("first", 30, 30), ("check", 30, 30), ("first", 40, 40), ("check", 40, 40)]
    assert firings.times("check") == [10, 30, 40]


def test_skipping_past_the_stop_ends_the_timer_and_unknown_names_or_alerts_are_left_alone() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)
    clock.set_timer("rebalance", 10, firings, start_ns=10, stop_ns=40)
    clock.set_alert("once", 15, firings)

    clock.skip_timer_until("rebalance", 45)
    clock.skip_timer_until("once", 100)
    clock.skip_timer_until("unknown", 100)
    clock.advance_to(100)

    assert firings.log == [("once", 15, 15)]
    assert clock.timer_names() == []


def test_a_timer_skipping_past_its_stop_from_its_own_callback_ends() -> None:
    clock = SimulatedClock()
    firings = Firings(clock)

    def check(event: TimeEvent) -> None:
        firings(event)
        clock.skip_timer_until(event.name, 45)

    clock.set_timer("check", 10, check, start_ns=10, stop_ns=40)

    clock.advance_to(100)

    assert firings.times() == [10]
    assert clock.timer_names() == []


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 50),
    interval=st.integers(1, 20),
    skips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 600)), max_size=6),
)
def test_a_timer_fires_exactly_at_its_schedule_times_past_each_bound_it_was_given(
    start: int, interval: int, skips: list[tuple[int, int]]
) -> None:
    # Reference: the firings of the plain schedule, each dropped when a bound in force at that moment excludes it.
    clock = SimulatedClock()
    firings = Firings(clock)
    clock.set_timer("t", interval, firings, start_ns=start)
    bound = 0
    expected: list[int] = []
    schedule = iter(range(start, 10**9, interval))
    due = next(schedule)
    for at, until in sorted(skips):
        while due <= at:
            if due >= bound:
                expected.append(due)
            due = next(schedule)
        clock.advance_to(at)
        clock.skip_timer_until("t", until)
        bound = until
    clock.advance_to(1_000)
    while due <= 1_000:
        if due >= bound:
            expected.append(due)
        due = next(schedule)

    assert firings.times() == expected


# --- grid alignment -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc_ns(2025, 3, 1, 5, 30), utc_ns(2025, 3, 1, 8)),
        (utc_ns(2025, 3, 1, 0), utc_ns(2025, 3, 1, 8)),
        (utc_ns(2025, 3, 1, 8), utc_ns(2025, 3, 1, 16)),
        (utc_ns(2025, 3, 1, 8) - 1, utc_ns(2025, 3, 1, 8)),
        (utc_ns(2025, 3, 1, 16) + 1, utc_ns(2025, 3, 2, 0)),
        (utc_ns(2024, 12, 31, 23, 59, 59), utc_ns(2025, 1, 1, 0)),
    ],
)
def test_next_aligned_gives_the_next_8h_funding_time(now: int, expected: int) -> None:
    assert next_aligned(now, 8 * NANOS_PER_HOUR) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc_ns(2025, 3, 1, 12, 34, 56, 789_000), utc_ns(2025, 3, 1, 12, 35)),
        (utc_ns(2025, 3, 1, 12, 35), utc_ns(2025, 3, 1, 12, 36)),
        (utc_ns(2025, 3, 1, 23, 59, 0, 1), utc_ns(2025, 3, 2, 0, 0)),
    ],
)
def test_next_aligned_gives_the_next_1m_bar_close(now: int, expected: int) -> None:
    assert next_aligned(now, NANOS_PER_MINUTE) == expected


def test_next_aligned_honours_an_offset() -> None:
    assert next_aligned(utc_ns(2025, 3, 1, 5), 8 * NANOS_PER_HOUR, NANOS_PER_HOUR) == utc_ns(2025, 3, 1, 9)


@pytest.mark.parametrize("interval", [0, -NANOS_PER_MINUTE])
def test_next_aligned_rejects_a_non_positive_interval(interval: int) -> None:
    with pytest.raises(ValueError):
        next_aligned(0, interval)


@settings(max_examples=200, deadline=None)
@given(
    ts=st.integers(min_value=0, max_value=4_102_444_800 * NANOS_PER_SECOND),
    interval=st.sampled_from([NANOS_PER_MILLI, NANOS_PER_SECOND, NANOS_PER_MINUTE, 8 * NANOS_PER_HOUR])
    | st.integers(min_value=1, max_value=10**12),
    offset=st.integers(min_value=0, max_value=10**12),
)
def test_next_aligned_is_the_first_grid_point_strictly_after(ts: int, interval: int, offset: int) -> None:
    aligned = next_aligned(ts, interval, offset)

    assert ts < aligned <= ts + interval
    assert (aligned - offset) % interval == 0


# --- live clock ----------------------------------------------------------------------------------------


def test_a_live_clock_starts_at_its_origin_and_never_goes_back() -> None:
    origin = utc_ns(2025, 3, 1)
    clock = LiveClock(origin_ns=origin)

    first = clock.timestamp_ns()
    second = clock.timestamp_ns()

    assert origin <= first <= second
    assert second - origin < 5 * NANOS_PER_SECOND


def test_a_fast_live_clock_visibly_advances_between_two_reads() -> None:
    origin = utc_ns(2025, 3, 1)
    clock = LiveClock(origin_ns=origin, speed=1e6)

    readings = [clock.timestamp_ns() for _ in range(1_000)]

    assert readings == sorted(readings)
    assert readings[0] >= origin
    assert readings[-1] > readings[0]


def test_a_live_clock_without_an_origin_reads_wall_time() -> None:
    before = time.time_ns()
    clock = LiveClock()
    reading = clock.timestamp_ns()
    after = time.time_ns()

    assert before - NANOS_PER_SECOND <= reading <= after + NANOS_PER_SECOND


def test_wall_seconds_until_scales_with_speed() -> None:
    ahead = 1_000 * NANOS_PER_SECOND
    real_time = LiveClock(origin_ns=0, speed=1.0)
    fast = LiveClock(origin_ns=0, speed=1_000.0)

    real_wait = real_time.wall_seconds_until(ahead)
    fast_wait = fast.wall_seconds_until(ahead)

    assert 999.0 < real_wait <= 1_000.0
    assert 0.9 < fast_wait <= 1.0
    assert fast.wall_seconds_until(-ahead) == 0.0


@pytest.mark.parametrize("speed", [0.0, -1.0, float("nan")])
def test_a_live_clock_rejects_a_non_positive_speed(speed: float) -> None:
    with pytest.raises(ValueError):
        LiveClock(speed=speed)


def test_a_live_clock_alert_fires_inside_a_running_event_loop() -> None:
    async def scenario() -> tuple[list[TimeEvent], int, int, list[str]]:
        clock = LiveClock(origin_ns=utc_ns(2025, 3, 1), speed=1e6)
        fired = asyncio.Event()
        events: list[TimeEvent] = []
        readings: list[int] = []

        def on_alert(event: TimeEvent) -> None:
            events.append(event)
            readings.append(clock.timestamp_ns())
            fired.set()

        due = clock.timestamp_ns() + 60 * NANOS_PER_SECOND  # 60 µs of wall time
        clock.set_alert("bar_close", due, on_alert)
        await asyncio.wait_for(fired.wait(), TIMEOUT_SECONDS)
        return events, due, readings[0], clock.timer_names()

    events, due, reading, names = asyncio.run(scenario())

    assert events == [TimeEvent("bar_close", due)]
    assert reading >= due
    assert names == []


def test_a_live_clock_repeating_timer_fires_every_interval_until_canceled() -> None:
    async def scenario() -> tuple[list[int], int, list[str]]:
        clock = LiveClock(origin_ns=utc_ns(2025, 3, 1), speed=1e6)
        done = asyncio.Event()
        times: list[int] = []
        interval = NANOS_PER_MINUTE  # 60 µs of wall time

        def on_tick(event: TimeEvent) -> None:
            times.append(event.ts)
            if len(times) == 3:
                clock.cancel_timer(event.name)
                done.set()

        start = clock.timestamp_ns() + interval
        clock.set_timer("tick", interval, on_tick, start_ns=start)
        await asyncio.wait_for(done.wait(), TIMEOUT_SECONDS)
        return times, start, clock.timer_names()

    times, start, names = asyncio.run(scenario())

    assert times == [start, start + NANOS_PER_MINUTE, start + 2 * NANOS_PER_MINUTE]
    assert names == []


def test_a_canceled_live_clock_alert_never_fires() -> None:
    async def scenario() -> list[str]:
        clock = LiveClock(origin_ns=0, speed=1e6)
        done = asyncio.Event()
        fired: list[str] = []

        def record(event: TimeEvent) -> None:
            fired.append(event.name)
            if event.name == "later":
                done.set()

        now = clock.timestamp_ns()
        clock.set_alert("soon", now + NANOS_PER_SECOND, record)  # 1 µs of wall time
        clock.set_alert("later", now + 1_000 * NANOS_PER_SECOND, record)  # 1 ms
        clock.cancel_timer("soon")
        await asyncio.wait_for(done.wait(), TIMEOUT_SECONDS)
        return fired

    assert asyncio.run(scenario()) == ["later"]


def test_a_live_clock_timer_skips_its_firings_before_the_bound() -> None:
    async def scenario() -> tuple[list[int], int]:
        clock = LiveClock(origin_ns=utc_ns(2025, 3, 1), speed=1e6)
        done = asyncio.Event()
        times: list[int] = []
        interval = 24 * NANOS_PER_HOUR  # 86 ms of wall time: the callback runs well before the next firing

        def on_tick(event: TimeEvent) -> None:
            times.append(event.ts)
            if len(times) == 1:
                clock.skip_timer_until(event.name, event.ts + 3 * interval)
            if len(times) == 3:
                clock.cancel_timer(event.name)
                done.set()

        start = clock.timestamp_ns() + interval
        clock.set_timer("tick", interval, on_tick, start_ns=start)
        await asyncio.wait_for(done.wait(), TIMEOUT_SECONDS)
        return times, start

    times, start = asyncio.run(scenario())

    assert times == [start, start + 3 * 24 * NANOS_PER_HOUR, start + 4 * 24 * NANOS_PER_HOUR]
