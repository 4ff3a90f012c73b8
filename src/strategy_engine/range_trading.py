"""Range trading: detect a sideways channel and trade from its edges back to its middle.

Logic, per symbol and bar (after ``warmup_bars``):

- range: the highest high ``H`` and lowest low ``L`` of the previous
  ``range_period`` bars; the market is ranging when the channel's width
  ``(H - L) / mid`` lies in ``[min_range_width, max_range_width]`` (wide
  enough to pay the fees, narrow enough to be a range) and Kaufman's
  efficiency ratio over the same bars is below ``max_trend_strength``;
- position in the range: ``p = (close - L) / (H - L)``;
- entry: flat, armed and ranging, ``0 <= p <= entry_band`` goes long (near
  support), ``1 - entry_band <= p <= 1`` short (near resistance). A close
  outside the channel is a breakout, never an entry. The take-profit is the
  channel's middle and the stop-loss ``stop_buffer`` range widths beyond the
  edge, both fixed at entry;
- exit: the close reaching the take-profit or the stop. After an exit the
  strategy re-arms once the close is back inside the middle band
  ``entry_band < p < 1 - entry_band``;
- strength, fixed at entry: from 0.5 at the band's inner edge to 1 at the
  channel's edge; confidence, fixed at entry: ``1 - efficiency /
  max_trend_strength``, in [0, 1].

The view is returned on every bar after warm-up; an unchanged view is the
same object as on the previous bar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState, clip01, hold
from keel.strategy_engine.indicators import EfficiencyRatio, RollingExtremes
from keel.strategy_engine.parameters import Parameter


class _RangeState(SymbolState):
    __slots__ = ("armed", "channel", "confidence", "direction", "efficiency", "stop", "strength", "take_profit")

    def __init__(self, period: int) -> None:
        super().__init__()
        self.channel = RollingExtremes(period)
        self.efficiency = EfficiencyRatio(period)
        self.direction = 0
        self.armed = True
        self.stop = math.nan
        self.take_profit = math.nan
        self.strength = 0.0
        self.confidence = 0.0


class RangeTradingStrategy(IncrementalStrategy):
    """Buy near the bottom and sell near the top of a detected sideways channel.

    Parameters
    ----------
    name
        The strategy's name.
    **parameters
        Values for :attr:`parameter_space`; ``min_range_width < max_range_width`` is required.
    """

    reads_bar_only: ClassVar[bool] = True

    parameter_space: ClassVar[Mapping[str, Parameter]] = {
        "range_period": Parameter(int, 1440, 20, 2000, "bars defining the channel and its efficiency ratio"),
        "entry_band": Parameter(float, 0.1, 0.01, 0.45, "fraction of the range from an edge where entries happen"),
        "min_range_width": Parameter(float, 0.015, 0.0005, 0.1, "narrowest channel traded, relative to its middle"),
        "max_range_width": Parameter(float, 0.08, 0.001, 0.5, "widest channel still called a range"),
        "max_trend_strength": Parameter(float, 0.15, 0.01, 1.0, "efficiency ratio above which it is not a range"),
        "stop_buffer": Parameter(float, 0.2, 0.0, 2.0, "stop distance beyond the edge, in range widths"),
    }

    def __init__(self, name: str = "range_trading", **parameters: Any) -> None:
        super().__init__(name, parameters)
        p = self.parameters
        if p["min_range_width"] >= p["max_range_width"]:
            raise ValueError(
                f"{name} needs min_range_width < max_range_width, got {p['min_range_width']} and {p['max_range_width']}"
            )
        self.warmup_bars = p["range_period"] + 1

    def new_state(self) -> _RangeState:
        """Return a fresh channel for a new symbol."""
        return _RangeState(self.parameters["range_period"])

    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        """Update the channel with one bar and return the view after it."""
        assert isinstance(state, _RangeState)
        _, _, high, low, close, _ = bar
        upper, lower = state.channel.highest, state.channel.lowest
        channel_ready = state.channel.ready
        state.channel.update(high, low)
        efficiency = state.efficiency.update(close)
        if state.bars < self.warmup_bars or not channel_ready:
            return None
        width = upper - lower
        view = state.last_signal
        if not width > 0.0:
            return view if view is not None else hold(market_data["symbol"], efficiency=efficiency)
        p = self.parameters
        position = (close - lower) / width
        relative_width = 2.0 * width / (upper + lower)
        ranging = (
            p["min_range_width"] <= relative_width <= p["max_range_width"] and efficiency < p["max_trend_strength"]
        )
        band = p["entry_band"]
        direction = state.direction
        if direction != 0:
            if self._exit_reached(state, close):
                state.direction = 0
                state.armed = False
        elif not state.armed:
            state.armed = band < position < 1.0 - band
        elif ranging and 0.0 <= position <= band:
            self._enter(state, 1, lower - p["stop_buffer"] * width, (upper + lower) / 2.0, position, efficiency)
        elif ranging and 1.0 - band <= position <= 1.0:
            self._enter(state, -1, upper + p["stop_buffer"] * width, (upper + lower) / 2.0, 1.0 - position, efficiency)
        if view is not None and state.direction == direction:
            return view
        metadata = {
            "range_high": upper,
            "range_low": lower,
            "range_position": position,
            "range_width": relative_width,
            "efficiency": efficiency,
        }
        if state.direction == 0:
            return hold(market_data["symbol"], **metadata)
        return StrategySignal(
            market_data["symbol"],
            "BUY" if state.direction > 0 else "SELL",
            state.strength,
            state.confidence,
            stop_loss=state.stop,
            take_profit=state.take_profit,
            metadata=metadata,
        )

    def _enter(
        self, state: _RangeState, direction: int, stop: float, take_profit: float, depth: float, efficiency: float
    ) -> None:
        if stop <= 0.0:
            return
        p = self.parameters
        band = p["entry_band"]
        state.direction = direction
        state.stop = stop
        state.take_profit = take_profit
        state.strength = clip01(0.5 + 0.5 * (band - depth) / band)
        state.confidence = clip01(1.0 - efficiency / p["max_trend_strength"])

    @staticmethod
    def _exit_reached(state: _RangeState, close: float) -> bool:
        if state.direction > 0:
            return close >= state.take_profit or close <= state.stop
        return close <= state.take_profit or close >= state.stop
