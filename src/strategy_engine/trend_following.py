"""Trend following: a Donchian breakout in the direction of an EMA trend, with ATR stops.

Logic, per symbol and bar (after ``warmup_bars``):

- trend: ``EMA(fast_period)`` above ``EMA(slow_period)`` is an up-trend, below a
  down-trend; the trend's efficiency (Kaufman's ratio of closes over
  ``channel_period`` bars) measures how clean it is;
- entry: flat, the close breaks above the highest high of the previous
  ``channel_period`` bars in an up-trend (below the lowest low in a
  down-trend) with efficiency >= ``min_trend_strength``: go long (short);
- exit: a chandelier stop ``stop_atr_multiple`` ATRs behind the best price
  since entry, which only tightens; a take-profit ``take_profit_atr_multiple``
  ATRs from the entry; or the EMAs crossing against the position. The bar's
  low (high) touching the stop (take-profit) ends the position at that bar's
  close, and no new entry is taken on that bar;
- strength, fixed at entry: the EMA spread in ATRs over ``stop_atr_multiple``,
  capped at 1; confidence, fixed at entry: twice the efficiency, capped at 1.

The view is returned on every bar after warm-up: BUY/SELL while a position
is held (a new signal whenever its trailing stop moves), HOLD when flat; an
unchanged view is the same object as on the previous bar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState, clip01, hold
from keel.strategy_engine.indicators import AverageTrueRange, EfficiencyRatio, ExponentialMovingAverage, RollingExtremes
from keel.strategy_engine.parameters import Parameter


class _TrendState(SymbolState):
    __slots__ = (
        "atr",
        "best",
        "channel",
        "confidence",
        "direction",
        "efficiency",
        "fast",
        "slow",
        "stop",
        "strength",
        "take_profit",
    )

    def __init__(self, fast: int, slow: int, channel: int, atr: int) -> None:
        super().__init__()
        self.fast = ExponentialMovingAverage(fast)
        self.slow = ExponentialMovingAverage(slow)
        self.channel = RollingExtremes(channel)
        self.efficiency = EfficiencyRatio(channel)
        self.atr = AverageTrueRange(atr)
        self.direction = 0
        self.best = math.nan
        self.stop = math.nan
        self.take_profit = math.nan
        self.strength = 0.0
        self.confidence = 0.0


class TrendFollowingStrategy(IncrementalStrategy):
    """Donchian breakouts in the EMA trend's direction, with ATR chandelier stops.

    Parameters
    ----------
    name
        The strategy's name.
    **parameters
        Values for :attr:`parameter_space` (the rest take their defaults);
        ``fast_period`` must be below ``slow_period``.
    """

    reads_bar_only: ClassVar[bool] = True

    parameter_space: ClassVar[Mapping[str, Parameter]] = {
        "fast_period": Parameter(int, 80, 5, 100, "bars of the fast EMA"),
        "slow_period": Parameter(int, 320, 10, 500, "bars of the slow EMA"),
        "channel_period": Parameter(int, 320, 10, 500, "bars of the breakout channel and of the efficiency ratio"),
        "atr_period": Parameter(int, 120, 5, 200, "bars of the average true range"),
        "stop_atr_multiple": Parameter(float, 4.0, 0.5, 10.0, "trailing stop distance in ATRs"),
        "take_profit_atr_multiple": Parameter(float, 12.0, 1.0, 30.0, "take-profit distance from entry in ATRs"),
        "min_trend_strength": Parameter(float, 0.3, 0.0, 1.0, "efficiency ratio needed to enter"),
    }

    def __init__(self, name: str = "trend_following", **parameters: Any) -> None:
        super().__init__(name, parameters)
        p = self.parameters
        if p["fast_period"] >= p["slow_period"]:
            raise ValueError(f"{name} needs fast_period < slow_period, got {p['fast_period']} and {p['slow_period']}")
        self.warmup_bars = max(p["slow_period"], p["channel_period"] + 1, p["atr_period"])

    def new_state(self) -> _TrendState:
        """Return fresh indicators for a new symbol."""
        p = self.parameters
        return _TrendState(p["fast_period"], p["slow_period"], p["channel_period"], p["atr_period"])

    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        """Update the indicators with one bar and return the view after it."""
        assert isinstance(state, _TrendState)
        _, _, high, low, close, _ = bar
        channel_high, channel_low = state.channel.highest, state.channel.lowest
        channel_ready = state.channel.ready
        fast = state.fast.update(close)
        slow = state.slow.update(close)
        atr = state.atr.update(high, low, close)
        efficiency = state.efficiency.update(close)
        state.channel.update(high, low)
        if state.bars < self.warmup_bars or not channel_ready or not atr > 0.0:
            return None
        trend = 1 if fast > slow else -1 if fast < slow else 0
        view = state.last_signal
        if state.direction != 0:
            stop = state.stop
            self._manage(state, trend, high, low, atr)
            if state.direction != 0 and state.stop == stop and view is not None:
                return view
        elif trend != 0 and efficiency >= self.parameters["min_trend_strength"]:
            breakout = close > channel_high if trend > 0 else close < channel_low
            if breakout:
                self._enter(state, trend, fast, slow, atr, efficiency, close)
        if state.direction == 0:
            if view is not None and view.action == "HOLD":
                return view
            return hold(market_data["symbol"], ema_fast=fast, ema_slow=slow, atr=atr, efficiency=efficiency)
        return StrategySignal(
            market_data["symbol"],
            "BUY" if state.direction > 0 else "SELL",
            state.strength,
            state.confidence,
            stop_loss=state.stop,
            take_profit=state.take_profit,
            metadata={"ema_fast": fast, "ema_slow": slow, "atr": atr, "efficiency": efficiency},
        )

    def _enter(
        self, state: _TrendState, direction: int, fast: float, slow: float, atr: float, efficiency: float, close: float
    ) -> None:
        p = self.parameters
        stop = close - direction * p["stop_atr_multiple"] * atr
        take_profit = close + direction * p["take_profit_atr_multiple"] * atr
        if stop <= 0.0 or take_profit <= 0.0:
            return
        state.direction = direction
        state.best = close
        state.stop = stop
        state.take_profit = take_profit
        state.strength = clip01(abs(fast - slow) / atr / p["stop_atr_multiple"])
        state.confidence = clip01(2.0 * efficiency)

    def _manage(self, state: _TrendState, trend: int, high: float, low: float, atr: float) -> None:
        distance = self.parameters["stop_atr_multiple"] * atr
        if state.direction > 0:
            stopped = low <= state.stop or high >= state.take_profit
            state.best = max(state.best, high)
            state.stop = max(state.stop, state.best - distance)
        else:
            stopped = high >= state.stop or low <= state.take_profit
            state.best = min(state.best, low)
            state.stop = min(state.stop, state.best + distance)
        if stopped or trend == -state.direction:
            state.direction = 0
