"""Scheduled DCA: buy a fixed USDT notional on a schedule, take profit on the average cost.

Logic, per symbol and bar (after ``warmup_bars``):

- schedule: an APScheduler trigger, an interval of ``interval_minutes``
  aligned to the Unix epoch (1440: every day at 00:00 UTC), or a crontab
  expression given as ``cron`` (UTC). It is evaluated on the bars' clock
  (the close time of each bar), the same way in backtest, paper and live, so
  a backtest of it is reproducible: the first bar closing at or after a fire
  time buys once (fire times skipped by a gap in the data buy once, not once
  each);
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

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState
from keel.strategy_engine.parameters import Parameter

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEXT = timedelta(microseconds=1)


class _DcaState(SymbolState):
    __slots__ = ("inverse_sum", "next_fire", "quantity", "slices")

    def __init__(self) -> None:
        super().__init__()
        self.next_fire: int | None = None
        self.slices = 0
        self.inverse_sum = 0.0
        self.quantity = 0.0


def _to_ns(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _to_datetime(ts: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ts // 1000)


class ScheduledDcaStrategy(IncrementalStrategy):
    """Dollar-cost averaging into a long position on a schedule, with a take-profit on the average cost.

    Parameters
    ----------
    name
        The strategy's name.
    cron
        A crontab expression (five fields, UTC) that replaces ``interval_minutes``.
    **parameters
        Values for :attr:`parameter_space` (the rest take their defaults).

    Raises
    ------
    ValueError
        If ``cron`` is not a valid crontab expression (named in the message).
    """

    parameter_space: ClassVar[Mapping[str, Parameter]] = {
        "interval_minutes": Parameter(int, 240, 1, 43_200, "minutes between buys (aligned to the Unix epoch)"),
        "notional_usdt": Parameter(float, 1000.0, 1.0, 1e7, "USDT bought at each fire"),
        "budget_usdt": Parameter(float, 10_000.0, 1.0, 1e9, "USDT the buys may add up to; they stop there"),
        "take_profit": Parameter(float, 0.02, 0.001, 1.0, "gain over the average cost that sells everything"),
    }

    def __init__(self, name: str = "scheduled_dca", cron: str | None = None, **parameters: Any) -> None:
        super().__init__(name, parameters)
        self.cron = cron
        self.trigger: BaseTrigger
        if cron is None:
            self.trigger = IntervalTrigger(minutes=self.parameters["interval_minutes"], start_date=_EPOCH, timezone=UTC)
        else:
            try:
                self.trigger = CronTrigger.from_crontab(cron, timezone=UTC)
            except ValueError as error:
                raise ValueError(f"{name} cron {cron!r} is not a crontab expression: {error}") from None
        self.warmup_bars = 1

    def next_fire_after(self, ts: int) -> int:
        """Return the first fire time of the schedule strictly after ``ts`` (nanoseconds since the epoch)."""
        moment = self.trigger.get_next_fire_time(None, _to_datetime(ts) + _NEXT)
        assert moment is not None
        return _to_ns(moment)

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
        if state.next_fire is None:
            state.next_fire = self.next_fire_after(ts - 1)
        view = state.last_signal
        changed = False
        reason = "scheduled buy"
        if state.slices and high >= self._target(state):
            state.slices = 0
            state.inverse_sum = 0.0
            state.quantity = 0.0
            changed = True
            reason = "take-profit"
        if ts >= state.next_fire:
            state.next_fire = self.next_fire_after(ts)
            # The tolerance keeps a budget of exactly n notionals from losing its last buy to rounding.
            if (state.slices + 1) * p["notional_usdt"] <= p["budget_usdt"] * (1.0 + 1e-9):
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

    def _target(self, state: _DcaState) -> float:
        average = state.slices / state.inverse_sum
        target = average * (1.0 + self.parameters["take_profit"])
        return target if math.isfinite(target) else math.inf
