"""HYPERRSI: RSI reversals taken only with the trend, confirmed by momentum, scaled out in stages.

Logic, per symbol and bar (after ``warmup_bars``):

- trend: the slope of ``EMA(trend_period)`` over ``slope_bars`` bars, in
  ATRs; above ``min_slope`` is an up-trend, below ``-min_slope`` a down-trend;
- entry: flat, in an up-trend, the RSI was at or below ``oversold`` on the
  previous bar and closes back above it (the pullback ended) with momentum
  confirming: the close above the previous close. Short mirrors it with
  ``100 - oversold`` as the overbought line;
- staged take-profits: at ``first_take_profit_atr`` ATRs from the entry the
  position is cut to ``1 - first_take_profit_fraction`` of its size; at
  ``second_take_profit_atr`` ATRs it is closed;
- trailing stop: ``trail_atr_multiple`` ATRs behind the best price since
  entry, only tightening; the bar's low (high) touching it closes the
  position; so does the trend turning against it;
- strength: 1 at entry, reduced at the first take-profit; confidence, fixed
  at entry: how deep the RSI went beyond its line (half at the line, 1 at 15
  points beyond it).

The view is returned on every bar after warm-up; an unchanged view is the
same object as on the previous bar.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState, clip01, hold
from keel.strategy_engine.indicators import AverageTrueRange, ExponentialMovingAverage, RelativeStrengthIndex
from keel.strategy_engine.parameters import Parameter


class _HyperRsiState(SymbolState):
    __slots__ = (
        "atr",
        "best",
        "confidence",
        "direction",
        "ema",
        "emas",
        "entry",
        "extreme",
        "previous_close",
        "previous_rsi",
        "rsi",
        "staged",
        "stop",
        "strength",
    )

    def __init__(self, rsi: int, trend: int, slope_bars: int, atr: int) -> None:
        super().__init__()
        self.rsi = RelativeStrengthIndex(rsi)
        self.ema = ExponentialMovingAverage(trend)
        self.emas: deque[float] = deque(maxlen=slope_bars + 1)
        self.atr = AverageTrueRange(atr)
        self.previous_close = math.nan
        self.previous_rsi = math.nan
        self.extreme = 50.0
        self.direction = 0
        self.entry = math.nan
        self.best = math.nan
        self.stop = math.nan
        self.staged = False
        self.strength = 0.0
        self.confidence = 0.0


class HyperRsiStrategy(IncrementalStrategy):
    """RSI pullback entries in the EMA trend's direction, momentum-confirmed, with staged exits.

    Parameters
    ----------
    name
        The strategy's name.
    **parameters
        Values for :attr:`parameter_space` (the rest take their defaults);
        ``first_take_profit_atr`` must be below ``second_take_profit_atr``.
    """

    parameter_space: ClassVar[Mapping[str, Parameter]] = {
        "rsi_period": Parameter(int, 14, 2, 100, "changes averaged by the RSI"),
        "oversold": Parameter(float, 30.0, 5.0, 45.0, "RSI line a long entry crosses back above (100 - it for shorts)"),
        "trend_period": Parameter(int, 200, 10, 1000, "bars of the trend EMA"),
        "slope_bars": Parameter(int, 20, 1, 200, "bars over which the EMA's slope is measured"),
        "min_slope": Parameter(float, 0.1, 0.0, 5.0, "EMA slope over slope_bars, in ATRs, that makes a trend"),
        "atr_period": Parameter(int, 30, 5, 200, "bars of the average true range"),
        "first_take_profit_atr": Parameter(float, 2.0, 0.2, 20.0, "distance of the first take-profit in ATRs"),
        "first_take_profit_fraction": Parameter(float, 0.5, 0.0, 1.0, "share of the position closed at the first"),
        "second_take_profit_atr": Parameter(float, 5.0, 0.5, 40.0, "distance of the final take-profit in ATRs"),
        "trail_atr_multiple": Parameter(float, 3.0, 0.5, 10.0, "trailing stop distance in ATRs"),
    }

    def __init__(self, name: str = "hyper_rsi", **parameters: Any) -> None:
        super().__init__(name, parameters)
        p = self.parameters
        if p["first_take_profit_atr"] >= p["second_take_profit_atr"]:
            raise ValueError(
                f"{name} needs first_take_profit_atr < second_take_profit_atr, got "
                f"{p['first_take_profit_atr']} and {p['second_take_profit_atr']}"
            )
        self.warmup_bars = max(p["trend_period"], p["slope_bars"] + 1, p["atr_period"], p["rsi_period"] + 2)

    def new_state(self) -> _HyperRsiState:
        """Return fresh indicators for a new symbol."""
        p = self.parameters
        return _HyperRsiState(p["rsi_period"], p["trend_period"], p["slope_bars"], p["atr_period"])

    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        """Update the indicators with one bar and return the view after it."""
        assert isinstance(state, _HyperRsiState)
        _, _, high, low, close, _ = bar
        p = self.parameters
        rsi = state.rsi.update(close)
        ema = state.ema.update(close)
        state.emas.append(ema)
        atr = state.atr.update(high, low, close)
        previous_close, state.previous_close = state.previous_close, close
        previous_rsi, state.previous_rsi = state.previous_rsi, rsi
        if state.bars < self.warmup_bars or not atr > 0.0 or math.isnan(previous_rsi):
            return None
        slope = (ema - state.emas[0]) / atr
        trend = 1 if slope > p["min_slope"] else -1 if slope < -p["min_slope"] else 0
        view = state.last_signal
        changed = False
        if state.direction != 0:
            changed = self._manage(state, trend, high, low, atr)
        elif trend != 0:
            line = p["oversold"] if trend > 0 else 100.0 - p["oversold"]
            crossed = previous_rsi <= line < rsi if trend > 0 else previous_rsi >= line > rsi
            confirmed = close > previous_close if trend > 0 else close < previous_close
            if crossed and confirmed:
                depth = (line - state.extreme) if trend > 0 else (state.extreme - line)
                self._enter(state, trend, close, atr, depth)
                changed = True
        self._track_extreme(state, rsi)
        if not changed and view is not None:
            return view
        if state.direction == 0:
            return hold(market_data["symbol"], rsi=rsi, ema_slope=slope)
        return StrategySignal(
            market_data["symbol"],
            "BUY" if state.direction > 0 else "SELL",
            state.strength,
            state.confidence,
            stop_loss=state.stop,
            take_profit=state.entry + state.direction * p["second_take_profit_atr"] * atr,
            metadata={"rsi": rsi, "ema_slope": slope, "staged": state.staged, "entry": state.entry},
        )

    @staticmethod
    def _track_extreme(state: _HyperRsiState, rsi: float) -> None:
        """Keep the deepest RSI of the current excursion (reset when it is back at 50)."""
        if rsi < 50.0:
            state.extreme = min(state.extreme, rsi) if state.extreme < 50.0 else rsi
        elif rsi > 50.0:
            state.extreme = max(state.extreme, rsi) if state.extreme > 50.0 else rsi
        else:
            state.extreme = 50.0

    def _enter(self, state: _HyperRsiState, direction: int, close: float, atr: float, depth: float) -> None:
        stop = close - direction * self.parameters["trail_atr_multiple"] * atr
        if stop <= 0.0:
            return
        state.direction = direction
        state.entry = close
        state.best = close
        state.stop = stop
        state.staged = False
        state.strength = 1.0
        state.confidence = clip01(0.5 + max(depth, 0.0) / 30.0)

    def _manage(self, state: _HyperRsiState, trend: int, high: float, low: float, atr: float) -> bool:
        """Apply the stop, the take-profits and the trail; return whether the view changed."""
        p = self.parameters
        direction = state.direction
        favourable = high if direction > 0 else low
        adverse = low if direction > 0 else high
        if direction * (adverse - state.stop) <= 0.0 or trend == -direction:
            state.direction = 0
            return True
        gain = direction * (favourable - state.entry)
        if gain >= p["second_take_profit_atr"] * atr:
            state.direction = 0
            return True
        changed = False
        if not state.staged and gain >= p["first_take_profit_atr"] * atr:
            state.staged = True
            state.strength = 1.0 - p["first_take_profit_fraction"]
            if state.strength <= 0.0:
                state.direction = 0
                return True
            changed = True
        state.best = max(state.best, high) if direction > 0 else min(state.best, low)
        stop = state.best - direction * p["trail_atr_multiple"] * atr
        if direction * (stop - state.stop) > 0.0:
            state.stop = stop
            changed = True
        return changed
