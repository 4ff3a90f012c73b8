"""Funding arbitrage: hold the perpetual on the side that receives funding when the carry pays after fees.

A perpetual's longs pay its shorts the funding rate at every settlement
(every 8 h on most Binance USD-M symbols, 4 h on some). This strategy reads
the recorded settlements (``funding_time``, ``funding_rate``, ``mark_price``
of ``market_data``) and, per symbol and bar:

- predicts the next rate as an exponentially weighted mean of the settled
  rates (half-life ``rate_half_life`` settlements). Binance publishes a live
  predicted rate from the premium index; the recorded data has only the
  settled rates, so their persistence is the prediction here;
- measures the basis at each settlement: the last close at or before the
  settlement over its mark price, minus 1 (a perpetual trading rich to the
  mark is expected to converge down). A settlement is taken at the first bar
  closing after its time, as the bus delivers it;
- computes the edge of a new position on the receiving side
  (``direction = -sign(predicted)``) over ``holding_intervals`` settlements:
  ``|predicted| * holding_intervals + basis_weight * (-direction * basis)
  - round trip``, the round trip being ``2 * fee_rate``, or the shared cost
  model's expected round trip of the symbol (fees, spread, the expected maker
  share) when the run gives one (:meth:`use_costs`);
- enters only when the edge is at least ``min_edge`` and the next settlement
  is due within ``entry_window_minutes`` (the position is on when it settles
  and price risk is carried for as short a time as possible before the first
  payment), after ``min_settlements`` settlements have been seen;
- exits right after a settlement when the predicted rate no longer pays the
  held side at least ``min_hold_rate``, or on any bar whose close breaches the
  stop ``stop_loss`` (a fraction of the entry price) away: this is a single
  leg, so price risk is real. No entry is taken on the bar of an exit, nor
  after a stop before the next settlement;
- strength: the edge over the round-trip fees, capped at 1; confidence: the
  share of the last ``holding_intervals`` settled rates with the predicted sign
  (both change only at settlements; between them an unchanged view is the
  same object as on the previous bar).

The next settlement is the last one plus the funding interval, inferred from
consecutive settlements (rounded to the hour; ``funding_interval_hours``
until two are seen). Until the symbol's first settlement the strategy waits
(HOLD, ``settlements`` 0 in the metadata): recorded funding may start after
the bars do (a warm-up before the funding file), and a strategy waits for the
data it needs rather than being switched off for the run. Missing funding
data is an error (:class:`MissingFundingDataError`): ``market_data`` without
the funding columns, or, once settlements have started, one more than
``grace_minutes`` overdue.
Rows with a non-finite rate are counted and skipped; a settlement without a
mark price contributes no basis.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np

from keel.core.errors import MalformedDataError
from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState, clip01, hold
from keel.strategy_engine.history import MarketData
from keel.strategy_engine.parameters import Parameter

_NANOS_PER_MINUTE = 60_000_000_000
_NANOS_PER_HOUR = 60 * _NANOS_PER_MINUTE
_NEVER = 2**63 - 1


class MissingFundingDataError(MalformedDataError):
    """Funding rates a funding strategy needs are absent or overdue: supply the symbol's funding file or stream."""


class _FundingState(SymbolState):
    __slots__ = (
        "basis",
        "direction",
        "interval",
        "last_funding_time",
        "malformed_rows",
        "predicted",
        "previous_close",
        "quiet_before",
        "settlements",
        "signs",
        "stop",
        "stopped_out",
    )

    def __init__(self, window: int) -> None:
        super().__init__()
        self.last_funding_time: int | None = None
        self.interval: int | None = None
        self.settlements = 0
        self.malformed_rows = 0
        self.predicted = 0.0
        self.basis = 0.0
        self.signs: deque[int] = deque(maxlen=window)
        self.previous_close = math.nan
        self.direction = 0
        self.stop = math.nan
        self.stopped_out = False
        self.quiet_before = 0


class FundingArbitrageStrategy(IncrementalStrategy):
    """Collect perpetual funding on the receiving side when the predicted carry beats the fees.

    Parameters
    ----------
    name
        The strategy's name.
    **parameters
        Values for :attr:`parameter_space`.
    """

    parameter_space: ClassVar[Mapping[str, Parameter]] = {
        "holding_intervals": Parameter(int, 15, 1, 90, "settlements a position is expected to collect"),
        "rate_half_life": Parameter(float, 3.0, 0.5, 30.0, "half-life of the predicted rate's average, in settlements"),
        "min_edge": Parameter(float, 0.0002, 0.0, 0.01, "edge after fees needed to enter, a fraction of notional"),
        "fee_rate": Parameter(float, 0.0005, 0.0, 0.002, "fee per side, a fraction of notional"),
        "basis_weight": Parameter(
            float, 0.5, 0.0, 1.0, "share of the basis expected to converge in the position's favour"
        ),
        "entry_window_minutes": Parameter(int, 60, 1, 480, "enter only this close to the next settlement"),
        "min_hold_rate": Parameter(float, 0.0, 0.0, 0.001, "predicted rate the held side must still receive"),
        "stop_loss": Parameter(float, 0.03, 0.002, 0.2, "adverse move from entry that closes the position"),
        "min_settlements": Parameter(int, 3, 1, 30, "settlements seen before the first trade"),
        "funding_interval_hours": Parameter(int, 8, 1, 8, "funding interval assumed until two settlements are seen"),
        "grace_minutes": Parameter(
            int, 30, 1, 240, "how late a settlement may be before the funding data counts as missing"
        ),
    }

    def __init__(self, name: str = "funding_arbitrage", **parameters: Any) -> None:
        super().__init__(name, parameters)
        self.warmup_bars = 1
        p = self.parameters
        self._decay = 0.5 ** (1.0 / p["rate_half_life"])
        self._grace = p["grace_minutes"] * _NANOS_PER_MINUTE
        self._min_hold_rate = p["min_hold_rate"]
        self._min_edge = p["min_edge"]

    def new_state(self) -> _FundingState:
        """Return an empty funding history for a new symbol."""
        return _FundingState(self.parameters["holding_intervals"])

    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        """Take the settlements up to this bar, check none is missing, and return the view after it."""
        assert isinstance(state, _FundingState)
        timestamp, close = bar[0], bar[4]
        settled = self._take_settlements(state, market_data, timestamp)
        direction = state.direction
        if (
            not settled
            and timestamp < state.quiet_before
            and (direction == 0 or (close - state.stop) * direction > 0.0)
        ):
            # No settlement, before the grace (and, flat, before the entry window), the stop not hit: the whole
            # step below would change nothing else.
            state.previous_close = close
            return state.last_signal
        signal = self._full_step(state, market_data, timestamp, close, settled)
        state.quiet_before = self._quiet_before(state, signal)
        return signal

    def _full_step(
        self, state: _FundingState, market_data: Mapping[str, Any], timestamp: int, close: float, settled: bool
    ) -> StrategySignal | None:
        last_funding_time = state.last_funding_time
        next_funding = None if last_funding_time is None else last_funding_time + self._interval(state)
        # Before the symbol's first settlement the bars wait for its funding data.
        if last_funding_time is not None and next_funding is not None and timestamp > next_funding + self._grace:
            raise MissingFundingDataError(
                f"the funding rate of {market_data['symbol']} due at {_iso(next_funding)} is missing "
                f"(last settled {_iso(last_funding_time)}, now {_iso(timestamp)})"
            )
        state.previous_close = close
        direction = state.direction
        if settled and direction != 0 and -direction * state.predicted < self._min_hold_rate:
            state.direction = 0
        if state.direction != 0 and (close - state.stop) * state.direction <= 0.0:
            state.direction = 0
            state.stopped_out = True
        edge = None
        symbol = market_data["symbol"]
        round_trip = None
        if direction == 0 and self._entry_window_open(state, timestamp, next_funding):
            # The edge is computed only here and for a new view: both after the exits above, and entering
            # takes the side _edge assumes when flat, so it is the same number either way.
            round_trip = self._round_trip(symbol)
            edge = self._edge(state, round_trip)
            if edge >= self._min_edge:
                self._enter(state, close)
        view = state.last_signal
        if view is not None and not settled and state.direction == direction:
            return view
        if round_trip is None:
            # The cost model only reads its state here, so asking it late gives the same number.
            round_trip = self._round_trip(symbol)
        if edge is None:
            edge = self._edge(state, round_trip)
        metadata = {
            "predicted_rate": state.predicted,
            "basis": state.basis,
            "edge": edge,
            "next_funding_time": next_funding,
            "settlements": state.settlements,
            "malformed_funding_rows": state.malformed_rows,
        }
        if state.direction == 0:
            return hold(symbol, **metadata)
        return StrategySignal(
            symbol,
            "BUY" if state.direction > 0 else "SELL",
            self._strength(edge, round_trip),
            self._consistency(state),
            stop_loss=state.stop,
            metadata=metadata,
        )

    def _quiet_before(self, state: _FundingState, signal: StrategySignal | None) -> int:
        """Return the bar time before which a step returns ``signal`` again (0: none) unless something happens.

        What would: a new settlement, or the stop of a held position. Until
        the grace of the next settlement is over, and for a flat position
        until a minute before the entry window opens.
        """
        if signal is None:
            return 0
        last_funding_time = state.last_funding_time
        if last_funding_time is None:
            return _NEVER  # before the first settlement no window opens and nothing can be late
        next_funding = last_funding_time + self._interval(state)
        late = next_funding + self._grace
        p = self.parameters
        if (
            state.direction != 0
            or state.settlements < p["min_settlements"]
            or state.predicted == 0.0
            or state.stopped_out
        ):
            return late  # held, or the window stays shut until the next settlement
        return min(late, next_funding - (p["entry_window_minutes"] + 1) * _NANOS_PER_MINUTE)

    def _take_settlements(self, state: _FundingState, market_data: Mapping[str, Any], now: int) -> bool:
        if isinstance(market_data, MarketData) and market_data.last_funding_time == state.last_funding_time:
            # A live history holds only settled rows: nothing new since the last bar.
            return False
        times = market_data.get("funding_time")
        rates = market_data.get("funding_rate")
        if times is None or rates is None:
            raise MissingFundingDataError(
                f"{self.name} needs funding_time and funding_rate in the market data of {market_data['symbol']}"
            )
        marks = market_data.get("mark_price")
        # A settlement is known from the bar after it: at a bar closing exactly at the funding time the
        # event has not arrived yet (the feed sends bars first on ties).
        settled = int(np.searchsorted(times, now, side="left"))
        first = 0 if state.last_funding_time is None else int(np.searchsorted(times, state.last_funding_time, "right"))
        for row in range(first, settled):
            self._settle(state, int(times[row]), float(rates[row]), math.nan if marks is None else float(marks[row]))
        return settled > first

    def _settle(self, state: _FundingState, funding_time: int, rate: float, mark: float) -> None:
        previous_time = state.last_funding_time
        state.last_funding_time = funding_time
        if not math.isfinite(rate):
            state.malformed_rows += 1
            return
        if previous_time is not None:
            gap = max(1, round((funding_time - previous_time) / _NANOS_PER_HOUR)) * _NANOS_PER_HOUR
            state.interval = gap if state.interval is None else min(state.interval, gap)
        state.predicted = rate if state.settlements == 0 else self._decay * state.predicted + (1 - self._decay) * rate
        state.settlements += 1
        state.stopped_out = False
        state.signs.append((rate > 0) - (rate < 0))
        close = state.previous_close
        state.basis = close / mark - 1.0 if mark > 0 and math.isfinite(close) else 0.0

    def _interval(self, state: _FundingState) -> int:
        if state.interval is not None:
            return state.interval
        return self.parameters["funding_interval_hours"] * _NANOS_PER_HOUR

    def _round_trip(self, symbol: str) -> float:
        """Return the cost of opening and closing a position: the shared cost model's, else twice ``fee_rate``."""
        if self.costs is None:
            return 2.0 * self.parameters["fee_rate"]
        return self.costs.round_trip(symbol)

    def _edge(self, state: _FundingState, round_trip: float) -> float:
        p = self.parameters
        direction = state.direction or (-1 if state.predicted > 0 else 1)
        carry = -direction * state.predicted * p["holding_intervals"]
        return carry + p["basis_weight"] * (-direction * state.basis) - round_trip

    def _entry_window_open(self, state: _FundingState, now: int, next_funding: int | None) -> bool:
        """Return whether a flat position may enter now, the edge aside."""
        p = self.parameters
        if next_funding is None or state.settlements < p["min_settlements"] or state.predicted == 0.0:
            return False
        if state.stopped_out:
            return False
        minutes_left = (next_funding - now) / _NANOS_PER_MINUTE
        return 0 < minutes_left <= p["entry_window_minutes"]

    def _enter(self, state: _FundingState, close: float) -> None:
        direction = -1 if state.predicted > 0 else 1
        stop = close * (1.0 - direction * self.parameters["stop_loss"])
        if stop <= 0.0:
            return
        state.direction = direction
        state.stop = stop

    @staticmethod
    def _strength(edge: float, round_trip: float) -> float:
        return clip01(edge / round_trip) if round_trip > 0 else float(edge > 0)

    @staticmethod
    def _consistency(state: _FundingState) -> float:
        if not state.signs:
            return 0.0
        sign = (state.predicted > 0) - (state.predicted < 0)
        return sum(1 for s in state.signs if s == sign) / len(state.signs)


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
