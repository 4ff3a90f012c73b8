"""Scheduled strategies on the wall clock: an APScheduler scheduler that fires their schedules onto the bus.

:class:`StrategyScheduler` runs an APScheduler ``AsyncIOScheduler`` on the
session's event loop with one job per scheduled strategy, whose trigger is
the strategy's own :class:`~keel.strategy_engine.schedule.Schedule` trigger
(the object a backtest of it computes fire times with). At each fire it
publishes ``ScheduleFired`` on the bus; the strategy runner hands it to the
strategy, which buys at its next bar, through the allocator, risk and the
order manager like any view. Paper on the live market and live runs use it
(:func:`build_scheduler`); backtests and the replayed paper feed fire the same
triggers on the bars' clock instead.

Misfire policy (a fire time passed unseen: the process was down, the loop
stalled): the fire times missed since the last one acted on are coalesced
into the latest; it fires (``ScheduleFired`` with ``coalesced``) if it is at
most the schedule's ``misfire_grace_seconds`` late, else it is skipped
(``ScheduleMisfired``). Both are journaled; at start the scheduler reads the
last fire the journal holds, so fires missed while keel was down follow the
same policy. APScheduler's own job options say the same (``coalesce=True``,
``misfire_grace_time``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC

import structlog
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.messages import Message, ScheduleFired, ScheduleMisfired
from keel.integration.pipeline import Pipeline
from keel.persistence import Journal
from keel.strategy_engine.schedule import Schedule, to_datetime
from keel.strategy_engine.scheduled_dca import ScheduledDcaStrategy

_log = structlog.get_logger("keel.schedules")

KEPT = 1000
"""Fires and misfires a scheduler keeps in memory."""


class StrategyScheduler(Component):
    """Fire strategies' schedules on the wall clock and publish each fire (or misfire) on the bus.

    Parameters
    ----------
    schedules
        Strategy name -> its schedule.
    bus, clock
        The event bus and the clock (the session's).
    last_fires
        Strategy name -> the last fire time acted on (from the journal); the
        fires after it up to the start follow the misfire policy. A strategy
        without one starts afresh at the start.
    now
        The wall clock, nanoseconds since the epoch (injectable for tests).
    """

    def __init__(
        self,
        schedules: Mapping[str, Schedule],
        bus: EventBus,
        clock: Clock,
        *,
        last_fires: Mapping[str, int] | None = None,
        now: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__("strategy_scheduler", bus, clock)
        self.schedules = dict(sorted(schedules.items()))
        self.last_fires: dict[str, int | None] = {name: (last_fires or {}).get(name) for name in self.schedules}
        self.now = now
        self.scheduler: AsyncIOScheduler | None = None
        # The latest fires and misfires, for the status (the journal has them all).
        self.fired: deque[ScheduleFired] = deque(maxlen=KEPT)
        self.misfired: deque[ScheduleMisfired] = deque(maxlen=KEPT)

    def on_start(self) -> None:
        """Apply the misfire policy to the fires missed before the start; schedule every strategy's next fires.

        Needs a running asyncio event loop (the scheduler runs on it).
        """
        now = self.now()
        scheduler = AsyncIOScheduler(timezone=UTC)
        for name, schedule in self.schedules.items():
            if self.last_fires[name] is None:
                self.last_fires[name] = now
            self.fire_due(name, now)
            scheduler.add_job(
                self._on_job,
                trigger=schedule.trigger,
                args=(name,),
                id=name,
                name=f"schedule of {name}",
                coalesce=True,
                misfire_grace_time=max(1, round(schedule.misfire_grace_seconds)),
                max_instances=1,
                next_run_time=to_datetime(schedule.next_fire_after(now)),
            )
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        scheduler.start()
        self.scheduler = scheduler

    def on_stop(self) -> None:
        """Shut the scheduler down (fires not due yet are dropped; the next start applies the misfire policy)."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None

    def next_fire_time(self, name: str) -> int | None:
        """Return when the scheduler runs a strategy's job next (ns since the epoch; None: not scheduled)."""
        job = None if self.scheduler is None else self.scheduler.get_job(name)
        if job is None or job.next_run_time is None:
            return None
        return int(job.next_run_time.timestamp() * 1_000_000) * 1000

    def fire_due(self, name: str, now: int) -> Message | None:
        """Act on the fire times of ``name`` due by ``now`` since the last one acted on, by the misfire policy.

        Returns the ``ScheduleFired`` (the latest due fire, the earlier ones
        coalesced into it) or ``ScheduleMisfired`` (the latest is more than the
        grace late) it published, or None when nothing was due.
        """
        schedule, last = self.schedules[name], self.last_fires[name]
        due = schedule.fire_times(now if last is None else last, now)
        if not due:
            return None
        self.last_fires[name] = due[-1]
        message: Message
        if now - due[-1] <= schedule.grace_ns:
            message = ScheduleFired(strategy=name, fire_time=due[-1], coalesced=len(due) - 1, ts_event=now, ts_init=now)
            self.fired.append(message)
        else:
            message = ScheduleMisfired(
                strategy=name,
                first_missed=due[0],
                last_missed=due[-1],
                missed=len(due),
                grace_seconds=schedule.misfire_grace_seconds,
                ts_event=now,
                ts_init=now,
            )
            self.misfired.append(message)
            _log.warning("schedule misfired", strategy=name, missed=len(due), grace=schedule.misfire_grace_seconds)
        self.bus.publish(message)
        return message

    async def _on_job(self, name: str) -> None:
        # A coroutine job: APScheduler runs it on the event loop, where the bus lives.
        self.fire_due(name, self.now())

    def _on_missed(self, event: JobExecutionEvent) -> None:
        # APScheduler skipped a run past the grace; the policy journals it.
        self.fire_due(event.job_id, self.now())


def build_scheduler(
    pipeline: Pipeline, journal: Journal | None = None, since_sequence: int = 0
) -> StrategyScheduler | None:
    """Build the wall-clock scheduler of the pipeline's scheduled strategies (None: it runs none).

    Each scheduled strategy takes its fire times from the scheduler for bars
    after the last fire ``journal`` holds from ``since_sequence`` on (a
    resumed session's), or after now
    (the warm-up bars before it keep the bars' clock), so fires missed while
    keel was down follow the misfire policy instead of the warm-up's replay.
    """
    scheduled = [s for s in pipeline.strategy.manager.strategies if isinstance(s, ScheduledDcaStrategy)]
    if not scheduled:
        return None
    journaled: dict[str, int] = {}
    entries = [] if journal is None else journal.entries_of(ScheduleFired) + journal.entries_of(ScheduleMisfired)
    for sequence, entry in entries:
        if sequence < since_sequence:
            continue
        if isinstance(entry, ScheduleFired):
            fire = entry.fire_time
        elif isinstance(entry, ScheduleMisfired):
            fire = entry.last_missed
        else:
            continue
        journaled[entry.strategy] = max(fire, journaled.get(entry.strategy, fire))
    now = time.time_ns()
    last_fires = {strategy.name: journaled.get(strategy.name, now) for strategy in scheduled}
    for strategy in scheduled:
        strategy.follow_wall_clock(last_fires[strategy.name])
    return StrategyScheduler(
        {s.name: s.schedule for s in scheduled}, pipeline.bus, pipeline.clock, last_fires=last_fires
    )
