"""Clocks and timers: simulated for backtests, wall-clock for paper and live.

Every component reads time from a :class:`Clock`, never from the OS, so the
same code runs in a backtest (time advanced by the data), in paper mode (wall
clock, optionally replaying recorded data faster than real time) and live.
Timers (bar close, funding times, the rebalance schedule) fire through the
clock too: a simulated clock fires them while it is advanced, in time order.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from typing import Final

from mypy_extensions import mypyc_attr

from keel.core.time_events import TimeEvent

NANOS_PER_SECOND: Final = 1_000_000_000
NANOS_PER_MILLI: Final = 1_000_000
NANOS_PER_MINUTE: Final = 60 * NANOS_PER_SECOND
NANOS_PER_HOUR: Final = 60 * NANOS_PER_MINUTE


def datetime_to_ns(value: datetime) -> int:
    """Return a timezone-aware datetime as integer nanoseconds since the epoch (exact)."""
    if value.tzinfo is None:
        raise ValueError(f"{value} has no time zone; keel times are UTC")
    return int(value.timestamp()) * NANOS_PER_SECOND + value.microsecond * 1_000


TimerCallback = Callable[[TimeEvent], None]


def next_aligned(ts: int, interval_ns: int, offset_ns: int = 0) -> int:
    """Return the first time strictly after ``ts`` that lies on the grid ``offset + k * interval``.

    Funding times (00, 08, 16 UTC) are ``next_aligned(ts, 8 * NANOS_PER_HOUR)``.
    """
    if interval_ns <= 0:
        raise ValueError(f"interval must be positive, got {interval_ns} ns")
    return ts - (ts - offset_ns) % interval_ns + interval_ns


@dataclass(slots=True)
class _Timer:
    fire_at: int
    sequence: int
    name: str = field(compare=False)
    interval_ns: int = field(compare=False)
    callback: TimerCallback = field(compare=False)
    stop_at: int | None = field(compare=False, default=None)
    canceled: bool = field(compare=False, default=False)
    first_at: int = field(compare=False, default=0)
    skip_to: int | None = field(compare=False, default=None)


@mypyc_attr(allow_interpreted_subclasses=True)
class Clock:
    """Base clock: the current time and named timers.

    Subclasses supply :meth:`timestamp_ns` and how timers get scheduled (the
    type checker holds them to it). Not an ``ABC``: compiled, a class on an ABC
    shares its base's ``isinstance`` registry (see :mod:`keel.compiled_modules`).
    """

    def __init__(self) -> None:
        self._timers: dict[str, _Timer] = {}
        self._sequence = count()
        self._firing: _Timer | None = None

    @abstractmethod
    def timestamp_ns(self) -> int:
        """Return the current time in integer nanoseconds since the epoch."""

    def set_timer(
        self,
        name: str,
        interval_ns: int,
        callback: TimerCallback,
        *,
        start_ns: int | None = None,
        stop_ns: int | None = None,
    ) -> None:
        """Fire ``callback`` every ``interval_ns``, first at ``start_ns``.

        With no ``start_ns`` the first firing is the next multiple of the
        interval after now (aligned to the epoch), so an 8-hour timer fires at
        00, 08 and 16 UTC.
        """
        if name in self._timers:
            raise ValueError(f"a timer named {name!r} already exists")
        if interval_ns <= 0:
            raise ValueError(f"timer {name!r}: interval must be positive, got {interval_ns}")
        first = next_aligned(self.timestamp_ns(), interval_ns) if start_ns is None else start_ns
        timer = _Timer(first, next(self._sequence), name, interval_ns, callback, stop_ns, first_at=first)
        self._timers[name] = timer
        self._schedule(timer)

    def set_alert(self, name: str, at_ns: int, callback: TimerCallback) -> None:
        """Fire ``callback`` once at ``at_ns``."""
        if name in self._timers:
            raise ValueError(f"a timer named {name!r} already exists")
        timer = _Timer(at_ns, next(self._sequence), name, 0, callback)
        self._timers[name] = timer
        self._schedule(timer)

    def cancel_timer(self, name: str) -> None:
        """Stop a timer; unknown names are ignored."""
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.canceled = True

    def skip_timer_until(self, name: str, until_ns: int) -> None:
        """Skip the firings of the periodic timer ``name`` before ``until_ns``; unknown names are ignored.

        The timer next fires at the first time of its schedule at or after
        ``until_ns`` that the clock has not passed yet, in its place among
        timers due at the same time. A later call replaces the bound: an
        earlier ``until_ns`` brings skipped firings back (``until_ns`` now
        resumes the schedule). A component whose check cannot find anything
        before a known time (or before something it is told about) skips the
        firings in between, which then cost nothing.
        """
        timer = self._timers.get(name)
        if timer is None or timer.interval_ns == 0:
            return
        interval = timer.interval_ns
        fire_at = timer.fire_at - (timer.fire_at - max(until_ns, timer.first_at)) // interval * interval
        if self._passed(fire_at, timer.sequence):
            now = self.timestamp_ns()
            fire_at += -((fire_at - now) // interval) * interval
            if self._passed(fire_at, timer.sequence):
                fire_at += interval
        if fire_at == timer.fire_at:
            return
        if timer is self._firing:
            timer.skip_to = fire_at  # _fire schedules it there when the callback returns
            return
        timer.canceled = True
        self._unschedule(timer)
        if timer.stop_at is not None and fire_at > timer.stop_at:
            del self._timers[name]
            return
        moved = _Timer(fire_at, timer.sequence, name, interval, timer.callback, timer.stop_at, first_at=timer.first_at)
        self._timers[name] = moved
        self._schedule(moved)

    def timer_names(self) -> list[str]:
        """Return the names of the active timers."""
        return sorted(self._timers)

    @abstractmethod
    def _schedule(self, timer: _Timer) -> None:
        """Arrange for ``timer`` to fire at ``timer.fire_at``."""

    @abstractmethod
    def _unschedule(self, timer: _Timer) -> None:
        """Drop what :meth:`_schedule` arranged for ``timer``, just canceled."""

    def _passed(self, fire_at: int, sequence: int) -> bool:
        """Return whether the clock is past the firing of timer ``sequence`` at ``fire_at``."""
        return fire_at <= self.timestamp_ns()

    def _fire(self, timer: _Timer) -> _Timer | None:
        """Run a timer's callback; return its next occurrence, if any.

        A timer keeps its registration sequence, so timers due at the same
        time always fire in the order they were set.
        """
        upcoming = timer.fire_at + timer.interval_ns
        last = timer.interval_ns == 0 or (timer.stop_at is not None and upcoming > timer.stop_at)
        if last:
            # Free the name first so the callback may set a timer of the same name.
            self._timers.pop(timer.name, None)
        self._firing = timer
        try:
            timer.callback(TimeEvent(timer.name, timer.fire_at))
        finally:
            self._firing = None
        if last or timer.canceled:
            return None
        skip_to = timer.skip_to
        if skip_to is not None:
            timer.skip_to = None
            if timer.stop_at is not None and skip_to > timer.stop_at:
                self._timers.pop(timer.name, None)
                return None
            upcoming = skip_to
        timer.fire_at = upcoming
        return timer


@mypyc_attr(allow_interpreted_subclasses=True)
class SimulatedClock(Clock):
    """A clock that only moves when told to (backtests and tests).

    Parameters
    ----------
    start_ns
        The initial time.
    """

    def __init__(self, start_ns: int = 0) -> None:
        super().__init__()
        self._now = start_ns
        # (fire_at, sequence, timer): the heap compares tuples in C, never calling _Timer.__lt__.
        self._heap: list[tuple[int, int, _Timer]] = []
        # The (fire_at, sequence) the clock has fired up to: every timer due at or before it has fired.
        self._position: tuple[int, float] = (start_ns - 1, math.inf)

    def timestamp_ns(self) -> int:
        """Return the simulated time."""
        return self._now

    def advance_to(self, ts: int) -> int:
        """Move time forward to ``ts``, firing due timers in time order; return how many fired.

        Each callback sees the clock at its own scheduled time. Moving
        backwards raises ValueError.
        """
        if ts < self._now:
            raise ValueError(f"simulated clock cannot go back from {self._now} to {ts}")
        fired = 0
        heap = self._heap
        while heap and heap[0][0] <= ts:
            timer = heapq.heappop(heap)[2]
            if timer.canceled:
                continue
            # A timer set in the past fires now: the clock never goes back.
            if timer.fire_at > self._now:
                self._now = timer.fire_at
            self._position = (timer.fire_at, timer.sequence)
            upcoming = self._fire(timer)
            fired += 1
            if upcoming is not None:
                heapq.heappush(heap, (upcoming.fire_at, upcoming.sequence, upcoming))
        self._now = ts
        self._position = (ts, math.inf)
        return fired

    def next_timer_ns(self) -> int | None:
        """Return when the next timer is due, or None."""
        while self._heap and self._heap[0][2].canceled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _schedule(self, timer: _Timer) -> None:
        heapq.heappush(self._heap, (timer.fire_at, timer.sequence, timer))

    def _unschedule(self, timer: _Timer) -> None:
        """Nothing to drop: :meth:`advance_to` discards canceled timers when their time comes."""

    def _passed(self, fire_at: int, sequence: int) -> bool:
        return (fire_at, sequence) <= self._position


@mypyc_attr(allow_interpreted_subclasses=True)
class LiveClock(Clock):
    """Wall-clock time, optionally shifted and sped up to replay recorded data.

    With ``origin_ns`` set, the clock reads ``origin_ns`` at construction and
    then runs ``speed`` times faster than the wall clock: paper mode replays a
    recorded day in minutes while every component still sees the data's time.
    Timers are scheduled on the running asyncio loop.

    Parameters
    ----------
    origin_ns
        The time the clock shows now; None for the real wall-clock time.
    speed
        How many clock seconds pass per wall-clock second.
    """

    def __init__(self, origin_ns: int | None = None, speed: float = 1.0) -> None:
        super().__init__()
        if not speed > 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self.speed = speed
        self._wall_start = time.time_ns()
        self._mono_start = time.perf_counter_ns()
        self._origin = self._wall_start if origin_ns is None else origin_ns
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def timestamp_ns(self) -> int:
        """Return the (possibly shifted and scaled) current time."""
        elapsed = time.perf_counter_ns() - self._mono_start
        return self._origin + int(elapsed * self.speed)

    def wall_seconds_until(self, ts: int) -> float:
        """Return how many wall-clock seconds remain until the clock shows ``ts``."""
        return max(0.0, (ts - self.timestamp_ns()) / self.speed / NANOS_PER_SECOND)

    def cancel_timer(self, name: str) -> None:
        """Stop a timer and its pending loop callback."""
        super().cancel_timer(name)
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _unschedule(self, timer: _Timer) -> None:
        handle = self._handles.pop(timer.name, None)
        if handle is not None:
            handle.cancel()

    def _schedule(self, timer: _Timer) -> None:
        loop = asyncio.get_running_loop()
        self._handles[timer.name] = loop.call_later(self.wall_seconds_until(timer.fire_at), self._on_due, timer)

    def _on_due(self, timer: _Timer) -> None:
        self._handles.pop(timer.name, None)
        if timer.canceled:
            return
        upcoming = self._fire(timer)
        if upcoming is not None:
            self._schedule(upcoming)
