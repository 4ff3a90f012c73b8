"""Grid trading: buy each level down and sell each level up between two bounds, inventory capped.

Logic, per symbol and bar (after ``warmup_bars``):

- bounds: when the grid is (re)built, the lowest low ``L`` and highest high
  ``H`` of the previous ``range_period`` bars, if ``(H - L) / mid`` is at
  least ``min_range_width``; ``levels`` + 1 prices from ``L`` to ``H``,
  equally spaced (``geometric`` 0) or in equal ratios (``geometric`` 1);
- the grid's resting orders: a buy at the level below the current one and a
  sell at the level above it (the grid starts at the level nearest the
  close, flat). A bar's low reaching the buy level fills it: the inventory
  grows by one level, the level becomes the current one and both orders
  re-arm around it; a bar's high reaching the sell level does the opposite
  (a short inventory below zero: the grid is neutral). Within one bar the
  side nearer its open is filled first, at most until the inventory cap
  ``max_inventory_levels`` is reached;
- leaving the range: a close more than ``stop_buffer`` level spacings beyond
  a bound ends the grid and flattens it; with ``rebalance`` 1 a new grid is
  built around the new range on the next bar, with 0 the strategy stays flat;
- the view: BUY (SELL) with strength ``inventory / max_inventory_levels``
  while the inventory is long (short), HOLD when flat; confidence 1. Its
  metadata names the resting buy and sell prices (the post-only orders an
  execution that rests per-level orders would keep).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState, hold
from keel.strategy_engine.indicators import RollingExtremes
from keel.strategy_engine.parameters import Parameter


class _GridState(SymbolState):
    __slots__ = ("channel", "current", "inventory", "levels", "stopped")

    def __init__(self, period: int) -> None:
        super().__init__()
        self.channel = RollingExtremes(period)
        self.levels: tuple[float, ...] = ()
        self.current = 0
        self.inventory = 0
        self.stopped = False


def grid_levels(lower: float, upper: float, count: int, geometric: bool) -> tuple[float, ...]:
    """Return ``count + 1`` level prices from ``lower`` to ``upper`` (equal steps or equal ratios).

    Raises
    ------
    ValueError
        If the bounds are not positive and increasing or ``count`` is below 1.
    """
    if not (0.0 < lower < upper) or count < 1:
        raise ValueError(f"a grid needs 0 < lower < upper and at least one level, got {lower}, {upper}, {count}")
    if geometric:
        return tuple(float(x) for x in np.geomspace(lower, upper, count + 1))
    return tuple(float(x) for x in np.linspace(lower, upper, count + 1))


class GridTradingStrategy(IncrementalStrategy):
    """A neutral price grid between the recent range's bounds, re-armed on every fill.

    Parameters
    ----------
    name
        The strategy's name.
    **parameters
        Values for :attr:`parameter_space` (the rest take their defaults).
    """

    parameter_space: ClassVar[Mapping[str, Parameter]] = {
        "range_period": Parameter(int, 720, 20, 5000, "bars whose lowest low and highest high bound the grid"),
        "levels": Parameter(int, 10, 2, 200, "grid intervals between the bounds"),
        "geometric": Parameter(int, 0, 0, 1, "1: levels in equal ratios, 0: in equal steps"),
        "max_inventory_levels": Parameter(int, 5, 1, 200, "filled levels the inventory may hold either way"),
        "min_range_width": Parameter(float, 0.01, 0.0005, 0.5, "narrowest range a grid is built on, relative"),
        "stop_buffer": Parameter(float, 1.0, 0.0, 20.0, "level spacings beyond a bound that end the grid"),
        "rebalance": Parameter(int, 1, 0, 1, "1: rebuild the grid after price left it, 0: stay flat"),
    }

    def __init__(self, name: str = "grid_trading", **parameters: Any) -> None:
        super().__init__(name, parameters)
        self.warmup_bars = self.parameters["range_period"] + 1

    def new_state(self) -> _GridState:
        """Return a fresh, unbuilt grid for a new symbol."""
        return _GridState(self.parameters["range_period"])

    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        """Fill the levels the bar reached, or build or end the grid; return the view after it."""
        assert isinstance(state, _GridState)
        _, open_, high, low, close, _ = bar
        lower, upper, ready = state.channel.lowest, state.channel.highest, state.channel.ready
        state.channel.update(high, low)
        if state.bars < self.warmup_bars or not ready:
            return None
        view = state.last_signal
        before = (state.inventory, len(state.levels))
        if state.levels:
            self._fill(state, open_, high, low)
            if self._left_range(state, close):
                state.levels = ()
                state.inventory = 0
                state.stopped = not self.parameters["rebalance"]
        elif not state.stopped:
            self._build(state, lower, upper, close)
        if view is not None and (state.inventory, len(state.levels)) == before:
            return view
        return self._view(state, market_data["symbol"])

    def _build(self, state: _GridState, lower: float, upper: float, close: float) -> None:
        p = self.parameters
        if not (lower > 0.0 and (upper - lower) / ((upper + lower) / 2.0) >= p["min_range_width"]):
            return
        if not lower < close < upper:
            return
        state.levels = grid_levels(lower, upper, p["levels"], bool(p["geometric"]))
        state.current = int(np.argmin([abs(level - close) for level in state.levels]))
        state.inventory = 0

    def _fill(self, state: _GridState, open_: float, high: float, low: float) -> None:
        down_first = open_ - low <= high - open_
        for side in (1, -1) if down_first else (-1, 1):
            self._fill_side(state, side, low if side > 0 else high)

    def _fill_side(self, state: _GridState, side: int, reach: float) -> None:
        """Fill buy levels (``side`` 1) down to ``reach`` or sell levels (-1) up to it, within the cap."""
        cap = self.parameters["max_inventory_levels"]
        levels = state.levels
        while abs(state.inventory + side) <= cap:
            nxt = state.current - side
            if not 0 <= nxt < len(levels) or side * (reach - levels[nxt]) > 0.0:
                return
            state.current = nxt
            state.inventory += side

    def _left_range(self, state: _GridState, close: float) -> bool:
        levels = state.levels
        buffer = self.parameters["stop_buffer"]
        low_gap = levels[1] - levels[0]
        high_gap = levels[-1] - levels[-2]
        return close < levels[0] - buffer * low_gap or close > levels[-1] + buffer * high_gap

    def _view(self, state: _GridState, symbol: str) -> StrategySignal:
        levels = state.levels
        if not levels or state.inventory == 0:
            return hold(symbol, grid_active=bool(levels))
        cap = self.parameters["max_inventory_levels"]
        spacing_low = levels[1] - levels[0]
        spacing_high = levels[-1] - levels[-2]
        buffer = self.parameters["stop_buffer"]
        long = state.inventory > 0
        stop = levels[0] - buffer * spacing_low if long else levels[-1] + buffer * spacing_high
        buy = levels[state.current - 1] if state.current > 0 and state.inventory < cap else None
        sell = levels[state.current + 1] if state.current + 1 < len(levels) and state.inventory > -cap else None
        return StrategySignal(
            symbol,
            "BUY" if long else "SELL",
            abs(state.inventory) / cap,
            1.0,
            stop_loss=stop if stop > 0.0 and math.isfinite(stop) else None,
            metadata={
                "inventory_levels": state.inventory,
                "lower": levels[0],
                "upper": levels[-1],
                "resting_buy": buy,
                "resting_sell": sell,
            },
        )
