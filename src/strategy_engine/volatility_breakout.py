"""Volatility breakout: a squeeze, then a close beyond the recent range times k, on rising volume.

Logic, per symbol and bar (after ``warmup_bars``), with ``H``, ``L`` the
highest high and lowest low of the previous ``range_period`` bars and
``mid = (H + L) / 2``:

- squeeze: ``ATR(range_period) / ATR(baseline_period)`` at or below
  ``squeeze_ratio`` (the range compressed); the squeeze stays armed for
  ``squeeze_memory`` bars after it was last seen;
- breakout: the close beyond ``mid +- k * (H - L) / 2`` (``k = 1`` is the
  edge of the range, above 1 beyond it);
- volume confirmation: the bar's volume at least ``volume_multiple`` times
  the mean volume of the previous ``range_period`` bars;
- all three gates open: go long (short) with a stop at ``mid`` and a
  take-profit ``take_profit_range_multiple`` range heights from the entry;
- exit: the stop (trailed ``trail_atr_multiple`` baseline ATRs behind the
  best price, only tightening), the take-profit, or ``max_hold_bars`` bars;
- strength, fixed at entry: the breakout's distance beyond the line in range
  heights, from 0.5 at the line to 1; confidence: the volume ratio over twice
  ``volume_multiple``, capped at 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState, clip01, hold
from keel.strategy_engine.indicators import AverageTrueRange, RollingExtremes, RollingMoments
from keel.strategy_engine.parameters import Parameter


class _BreakoutState(SymbolState):
    __slots__ = (
        "baseline",
        "best",
        "channel",
        "confidence",
        "direction",
        "held",
        "short_atr",
        "since_squeeze",
        "stop",
        "strength",
        "take_profit",
        "volume",
    )

    def __init__(self, period: int, baseline: int) -> None:
        super().__init__()
        self.channel = RollingExtremes(period)
        self.volume = RollingMoments(period)
        self.short_atr = AverageTrueRange(period)
        self.baseline = AverageTrueRange(baseline)
        self.since_squeeze = math.inf
        self.direction = 0
        self.held = 0
        self.best = math.nan
        self.stop = math.nan
        self.take_profit = math.nan
        self.strength = 0.0
        self.confidence = 0.0


class VolatilityBreakoutStrategy(IncrementalStrategy):
    """Trade the break out of a volatility squeeze, confirmed by volume.

    Parameters
    ----------
    name
        The strategy's name.
    **parameters
        Values for :attr:`parameter_space` (the rest take their defaults);
        ``range_period`` must be below ``baseline_period``.
    """

    parameter_space: ClassVar[Mapping[str, Parameter]] = {
        "range_period": Parameter(int, 30, 5, 500, "bars of the recent range, its ATR and its mean volume"),
        "baseline_period": Parameter(int, 240, 20, 2000, "bars of the baseline ATR the squeeze is measured against"),
        "squeeze_ratio": Parameter(float, 0.8, 0.1, 1.5, "recent ATR over baseline ATR at or below which is a squeeze"),
        "squeeze_memory": Parameter(int, 30, 1, 500, "bars a squeeze stays armed after it was last seen"),
        "breakout_k": Parameter(float, 1.0, 0.5, 3.0, "multiple of the half-range from the middle a close must pass"),
        "volume_multiple": Parameter(float, 1.5, 0.5, 10.0, "bar volume over the mean volume needed to confirm"),
        "take_profit_range_multiple": Parameter(float, 2.0, 0.5, 10.0, "take-profit distance in range heights"),
        "trail_atr_multiple": Parameter(float, 3.0, 0.5, 10.0, "trailing stop distance in baseline ATRs"),
        "max_hold_bars": Parameter(int, 240, 1, 5000, "bars after which a position is closed"),
    }

    def __init__(self, name: str = "volatility_breakout", **parameters: Any) -> None:
        super().__init__(name, parameters)
        p = self.parameters
        if p["range_period"] >= p["baseline_period"]:
            raise ValueError(
                f"{name} needs range_period < baseline_period, got {p['range_period']} and {p['baseline_period']}"
            )
        self.warmup_bars = p["baseline_period"] + 1

    def new_state(self) -> _BreakoutState:
        """Return fresh indicators for a new symbol."""
        return _BreakoutState(self.parameters["range_period"], self.parameters["baseline_period"])

    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        """Update the indicators with one bar and return the view after it."""
        assert isinstance(state, _BreakoutState)
        _, _, high, low, close, volume = bar
        p = self.parameters
        upper, lower, ready = state.channel.highest, state.channel.lowest, state.channel.ready
        mean_volume = state.volume.mean if state.volume.ready else math.nan
        short_atr = state.short_atr.update(high, low, close)
        baseline = state.baseline.update(high, low, close)
        state.channel.update(high, low)
        state.volume.update(volume)
        if state.bars < self.warmup_bars or not ready or not baseline > 0.0:
            return None
        state.since_squeeze = 0 if short_atr <= p["squeeze_ratio"] * baseline else state.since_squeeze + 1
        view = state.last_signal
        changed = False
        if state.direction != 0:
            changed = self._manage(state, high, low, baseline)
        elif state.since_squeeze <= p["squeeze_memory"] and mean_volume > 0.0:
            mid, half = (upper + lower) / 2.0, (upper - lower) / 2.0
            volume_ratio = volume / mean_volume
            direction = 1 if close > mid + p["breakout_k"] * half else -1 if close < mid - p["breakout_k"] * half else 0
            if direction != 0 and half > 0.0 and volume_ratio >= p["volume_multiple"]:
                beyond = (abs(close - mid) - p["breakout_k"] * half) / (2.0 * half)
                changed = self._enter(state, direction, close, mid, 2.0 * half, beyond, volume_ratio)
        if not changed and view is not None:
            return view
        if state.direction == 0:
            return hold(market_data["symbol"], squeeze_bars_ago=state.since_squeeze)
        return StrategySignal(
            market_data["symbol"],
            "BUY" if state.direction > 0 else "SELL",
            state.strength,
            state.confidence,
            stop_loss=state.stop,
            take_profit=state.take_profit,
            metadata={"atr_ratio": short_atr / baseline, "held_bars": state.held},
        )

    def _enter(
        self,
        state: _BreakoutState,
        direction: int,
        close: float,
        mid: float,
        height: float,
        beyond: float,
        volume_ratio: float,
    ) -> bool:
        p = self.parameters
        take_profit = close + direction * p["take_profit_range_multiple"] * height
        if take_profit <= 0.0:
            return False
        state.direction = direction
        state.held = 0
        state.best = close
        state.stop = mid
        state.take_profit = take_profit
        state.strength = clip01(0.5 + beyond)
        state.confidence = clip01(volume_ratio / (2.0 * p["volume_multiple"]))
        return True

    def _manage(self, state: _BreakoutState, high: float, low: float, atr: float) -> bool:
        """Apply the stop, the take-profit, the time limit and the trail; return whether the view changed."""
        direction = state.direction
        state.held += 1
        adverse, favourable = (low, high) if direction > 0 else (high, low)
        stopped = direction * (adverse - state.stop) <= 0.0
        target = direction * (favourable - state.take_profit) >= 0.0
        if stopped or target or state.held >= self.parameters["max_hold_bars"]:
            state.direction = 0
            return True
        state.best = max(state.best, high) if direction > 0 else min(state.best, low)
        stop = state.best - direction * self.parameters["trail_atr_multiple"] * atr
        if direction * (stop - state.stop) > 0.0:
            state.stop = stop
            return True
        return False
