"""Scheduled DCA: buy a fixed USDT notional on a schedule, take profit on the average cost.

Logic, per symbol and bar (after ``warmup_bars``):

- schedule: a :class:`~keel.strategy_engine.schedule.Schedule`, an interval
  of ``interval_minutes`` aligned to the Unix epoch (1440: every day at 00:00
  UTC), or a crontab expression given as ``cron`` (UTC). A fire buys at the
  first bar closing at or after its fire time; fire times skipped by a gap
  in the data buy once, not once each. Where the fire times come from:

  - backtests and the replayed paper feed: the schedule's APScheduler
    trigger computes them on the bars' (simulated) clock, so a backtest of
    it is reproducible;
  - paper on the live market and live (after :meth:`ScheduledDcaStrategy.follow_wall_clock`):
    an APScheduler scheduler fires the same trigger on the wall clock and
    the ``ScheduleFired`` events it publishes reach the strategy
    (:meth:`ScheduledDcaStrategy.record_fire`); bars up to the switch (the
    warm-up) still use the bars' clock;
- buying: each fire buys ``notional_usdt`` USDT (``notional_usdt / close``
  of the base asset), while the USDT bought stays within ``budget_usdt``.
  Every buy is the same notional, so the average cost is the harmonic mean
  of the buy prices;
- take-profit: a bar's high at or above ``average cost * (1 + take_profit)``
  sells everything; the next cycle starts at the next fire;
- the view: HOLD (no weight of its own) with a ``target_quantity``, the
  base quantity its buys add up to (0 after a take-profit): the allocator
  leaves it as it is and the risk layer orders the change, so each fire buys
  ``notional_usdt`` at the fire's close (within the instrument's lot step).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState
from keel.strategy_engine.parameters import Parameter
from keel.strategy_engine.schedule import Schedule


class _DcaState(SymbolState):
    __slots__ = ("inverse_sum", "last_fire", "next_fire", "quantity", "slices")

    def __init__(self) -> None:
        super().__init__()
        self.next_fire: int | None = None
        self.last_fire: int | None = None
        self.slices = 0
        self.inverse_sum = 0.0
        self.quantity = 0.0


class ScheduledDcaStrategy(IncrementalStrategy):
    """Dollar-cost averaging into a long position on a schedule, with a take-profit on the average cost.

    Parameters
    ----------
    name
        The strategy's name.
    cron
        A crontab expression (five fields, UTC) that replaces ``interval_minutes``.
    misfire_grace_seconds
        How late a wall-clock fire may still buy (the schedule's misfire policy).
    schedule
        A schedule that replaces ``interval_minutes`` and ``cron`` (any
        interval, e.g. seconds in a test of the wall-clock scheduler).
    **parameters
        Values for :attr:`parameter_space` (the rest take their defaults).

    Raises
    ------
    ValueError
        If ``cron`` is not a valid crontab expression (named in the message).
    """

    places_own_orders: ClassVar[bool] = True

    parameter_space: ClassVar[Mapping[str, Parameter]] = {
        "interval_minutes": Parameter(int, 240, 1, 43_200, "minutes between buys (aligned to the Unix epoch)"),
        "notional_usdt": Parameter(float, 1000.0, 1.0, 1e7, "USDT bought at each fire"),
        "budget_usdt": Parameter(float, 10_000.0, 1.0, 1e9, "USDT the buys may add up to; they stop there"),
        "take_profit": Parameter(float, 0.02, 0.001, 1.0, "gain over the average cost that sells everything"),
    }

    def __init__(
        self,
        name: str = "scheduled_dca",
        cron: str | None = None,
        misfire_grace_seconds: float = 300.0,
        schedule: Schedule | None = None,
        **parameters: Any,
    ) -> None:
        super().__init__(name, parameters)
        self.cron = cron
        if schedule is None:
            interval = timedelta(minutes=self.parameters["interval_minutes"])
            schedule = Schedule(interval, cron, misfire_grace_seconds=misfire_grace_seconds, owner=name)
        self.schedule = schedule
        self.wall_clock_from: int | None = None
        self.fires: list[int] = []
        self.fires_kept = 10_000
        self.warmup_bars = 1

    def next_fire_after(self, ts: int) -> int:
        """Return the first fire time of the schedule strictly after ``ts`` (nanoseconds since the epoch)."""
        return self.schedule.next_fire_after(ts)

    def follow_wall_clock(self, since: int) -> None:
        """Take fire times from :meth:`record_fire` (a wall-clock scheduler) for bars closing after ``since``."""
        self.wall_clock_from = since

    def record_fire(self, fire_time: int) -> None:
        """Record a fire of the wall-clock scheduler: each symbol buys at its first bar closing at or after it.

        The last :attr:`fires_kept` fires are kept (older ones were bought long ago).
        """
        if not self.fires or fire_time > self.fires[-1]:
            self.fires.append(fire_time)
            if len(self.fires) > self.fires_kept:
                del self.fires[: -self.fires_kept]

    def new_state(self) -> _DcaState:
        """Return a flat state without a schedule yet."""
        return _DcaState()

    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        """Take profit or buy a slice when the bar reaches them; return the view after it."""
        assert isinstance(state, _DcaState)
        ts, _, high, _, close, _ = bar
        p = self.parameters
        view = state.last_signal
        changed = False
        reason = "scheduled buy"
        if state.slices and high >= self._target(state):
            state.slices = 0
            state.inverse_sum = 0.0
            state.quantity = 0.0
            changed = True
            reason = "take-profit"
        due = self._fire_due(state, ts)
        # The tolerance keeps a budget of exactly n notionals from losing its last buy to rounding.
        if due and (state.slices + 1) * p["notional_usdt"] <= p["budget_usdt"] * (1.0 + 1e-9):
            state.slices += 1
            state.inverse_sum += 1.0 / close
            state.quantity += p["notional_usdt"] / close
            changed = True
            reason = "scheduled buy"
        if not changed and view is not None:
            return view
        symbol = market_data["symbol"]
        if state.slices == 0:
            return StrategySignal(
                symbol, "HOLD", 0.0, 0.0, target_quantity=0.0, metadata={"next_buy": state.next_fire, "reason": reason}
            )
        return StrategySignal(
            symbol,
            "HOLD",
            0.0,
            0.0,
            take_profit=self._target(state),
            target_quantity=state.quantity,
            metadata={
                "slices": state.slices,
                "bought_usdt": state.slices * p["notional_usdt"],
                "average_cost": state.slices / state.inverse_sum,
                "next_buy": state.next_fire,
                "reason": reason,
            },
        )

    def _fire_due(self, state: _DcaState, ts: int) -> bool:
        """Return whether a fire not bought yet is due at the bar closing at ``ts`` (and mark it bought)."""
        if state.next_fire is None:
            state.next_fire = self.next_fire_after(ts - 1)
        fire: int | None = ts
        if self.wall_clock_from is None or ts <= self.wall_clock_from:
            due = ts >= state.next_fire
        else:
            latest = bisect.bisect_right(self.fires, ts) - 1
            fire = self.fires[latest] if latest >= 0 else None
            due = fire is not None and (state.last_fire is None or fire > state.last_fire)
        if ts >= state.next_fire:
            state.next_fire = self.next_fire_after(ts)
        if due:
            state.last_fire = fire
        return due

    def _target(self, state: _DcaState) -> float:
        average = state.slices / state.inverse_sum
        target = average * (1.0 + self.parameters["take_profit"])
        return target if math.isfinite(target) else math.inf
