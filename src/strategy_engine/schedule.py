"""A strategy's schedule: one APScheduler trigger, fired by the wall clock live and by the bars' clock in backtests.

:class:`Schedule` holds the trigger built from a strategy's typed schedule
parameters (an interval aligned to the Unix epoch, or a crontab expression
in UTC) and the misfire policy. The same trigger object serves both clocks:

- paper on the live market and live: an APScheduler ``AsyncIOScheduler``
  (:class:`keel.integration.schedules.StrategyScheduler`) fires it on the
  wall clock and publishes ``ScheduleFired`` on the bus;
- backtests and the replayed paper feed: the strategy asks it for the next
  fire time (``trigger.get_next_fire_time``) on the simulated clock, so a
  backtest of a scheduled strategy is reproducible.

Misfire policy (a fire time passed while the process was down or the loop
stalled): the fire times missed are coalesced into one, the latest; it fires
if it is at most ``misfire_grace_seconds`` old, else it is skipped. Both are
journaled (``ScheduleFired`` with the count coalesced, ``ScheduleMisfired``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEXT = timedelta(microseconds=1)
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def crontab_trigger(expression: str) -> CronTrigger:
    """Return the UTC trigger of a five-field crontab expression, with crontab's day-of-week numbers.

    APScheduler 3 reads a day-of-week number as 0 = Monday; crontab's is
    0 (or 7) = Sunday, so "1-5" (Monday to Friday) becomes "mon-fri" first.

    Raises
    ------
    ValueError
        If it is not a crontab expression.
    """
    fields = expression.split()
    if len(fields) == 5 and "/" not in fields[4]:
        fields[4] = re.sub(
            r"\d+", lambda number: _WEEKDAYS[int(number.group())] if int(number.group()) < 8 else "?", fields[4]
        )
    return CronTrigger.from_crontab(" ".join(fields), timezone=UTC)


def to_ns(moment: datetime) -> int:
    """Return nanoseconds since the epoch of an aware datetime (microsecond precision)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def to_datetime(ts: int) -> datetime:
    """Return the UTC datetime of nanoseconds since the epoch (truncated to the microsecond)."""
    return EPOCH + timedelta(microseconds=ts // 1000)


class Schedule:
    """When a strategy acts: an interval aligned to the Unix epoch, or a crontab expression (UTC).

    Parameters
    ----------
    interval
        Time between fires, counted from 1970-01-01 00:00 UTC (a day fires
        at 00:00 UTC); ignored when ``cron`` is given.
    cron
        A crontab expression (five fields, UTC).
    misfire_grace_seconds
        How late a fire may still be acted on (see the module's misfire policy).
    owner
        Who the schedule belongs to (named in errors).

    Raises
    ------
    ValueError
        If ``cron`` is not a crontab expression, the interval is not positive
        or the grace is negative (each named in the message).
    """

    def __init__(
        self,
        interval: timedelta = timedelta(hours=4),
        cron: str | None = None,
        *,
        misfire_grace_seconds: float = 300.0,
        owner: str = "schedule",
    ) -> None:
        if not misfire_grace_seconds > 0:
            raise ValueError(f"{owner} misfire_grace_seconds must be > 0, got {misfire_grace_seconds!r}")
        self.cron = cron
        self.interval = interval
        self.misfire_grace_seconds = float(misfire_grace_seconds)
        self.trigger: BaseTrigger
        if cron is None:
            if not interval > timedelta(0):
                raise ValueError(f"{owner} interval must be positive, got {interval}")
            self.trigger = IntervalTrigger(seconds=interval.total_seconds(), start_date=EPOCH, timezone=UTC)
        else:
            try:
                self.trigger = crontab_trigger(cron)
            except ValueError as error:
                raise ValueError(f"{owner} cron {cron!r} is not a crontab expression: {error}") from None

    def __repr__(self) -> str:
        what = f"cron={self.cron!r}" if self.cron is not None else f"interval={self.interval}"
        return f"Schedule({what}, misfire_grace_seconds={self.misfire_grace_seconds:g})"

    @property
    def grace_ns(self) -> int:
        """Return the misfire grace in nanoseconds."""
        return round(self.misfire_grace_seconds * 1_000_000_000)

    def next_fire_after(self, ts: int) -> int:
        """Return the trigger's first fire time strictly after ``ts`` (nanoseconds since the epoch)."""
        moment = self.trigger.get_next_fire_time(None, to_datetime(ts) + _NEXT)
        if moment is None:
            raise ValueError(f"{self!r} never fires after {to_datetime(ts).isoformat()}")
        return to_ns(moment)

    def fire_times(self, after: int, until: int) -> list[int]:
        """Return the fire times in ``(after, until]`` (nanoseconds since the epoch), in order."""
        times = []
        fire = self.next_fire_after(after)
        while fire <= until:
            times.append(fire)
            fire = self.next_fire_after(fire)
        return times
