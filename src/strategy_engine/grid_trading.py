"""Grid trading: one resting post-only order per price level between two bounds, inventory capped.

Logic, per symbol and bar (after ``warmup_bars``):

- bounds: when the grid is (re)built, the lowest low ``L`` and highest high
  ``H`` of the previous ``range_period`` bars, if ``(H - L) / mid`` is at
  least ``min_range_width`` and the close lies between them; ``levels`` + 1
  prices from ``L`` to ``H``, equally spaced (``geometric`` 0) or in equal
  ratios (``geometric`` 1);
- the grid's orders: a :class:`~keel.strategy_engine.base.Ladder` of a buy
  at every level below the one nearest the close and a sell at every level
  above it, each worth ``level_notional`` USDT, with at most
  ``max_inventory_levels`` filled levels either way (a neutral grid: sells
  above a flat grid open a short). The strategy states the ladder; the
  execution layer rests the orders through the risk layer (post-only),
  re-arms a level when its order fills (the opposite side one level away)
  and keeps the inventory cap, so the grid's inventory is what really
  filled;
- leaving the range: a close more than ``stop_buffer`` level spacings beyond
  a bound ends the ladder (its orders are canceled and what it filled is
  flattened); with ``rebalance`` 1 a new grid is built around the new range
  on the next bar, with 0 the strategy stays out;
- the view: HOLD (the grid takes no weight of its own: its position is the
  ladder's fills), with the ladder attached when it is built or ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from keel.strategy_engine.base import IncrementalStrategy, Ladder, StrategySignal, SymbolState
from keel.strategy_engine.indicators import RollingExtremes
from keel.strategy_engine.parameters import Parameter


class _GridState(SymbolState):
    __slots__ = ("channel", "levels", "stopped")

    def __init__(self, period: int) -> None:
        super().__init__()
        self.channel = RollingExtremes(period)
        self.levels: tuple[float, ...] = ()
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
        "level_notional": Parameter(float, 500.0, 10.0, 1e7, "USDT each level's resting order is worth"),
        "max_inventory_levels": Parameter(int, 5, 1, 200, "filled levels the inventory may hold either way"),
        "min_range_width": Parameter(float, 0.01, 0.0005, 0.5, "narrowest range a grid is built on, relative"),
        "stop_buffer": Parameter(float, 1.0, 0.0, 20.0, "level spacings beyond a bound that end the grid"),
        "rebalance": Parameter(int, 1, 0, 1, "1: rebuild the grid after price left it, 0: stay out"),
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
        """Build the grid, or end it when the close left its range; return the view after it."""
        assert isinstance(state, _GridState)
        _, _, high, low, close, _ = bar
        lower, upper, ready = state.channel.lowest, state.channel.highest, state.channel.ready
        state.channel.update(high, low)
        if state.bars < self.warmup_bars or not ready:
            return None
        view = state.last_signal
        symbol = market_data["symbol"]
        if state.levels:
            if self._left_range(state, close):
                state.levels = ()
                state.stopped = not self.parameters["rebalance"]
                return self._ended(symbol)
        elif not state.stopped:
            built = self._build(state, symbol, lower, upper, close)
            if built is not None:
                return built
        return view

    def _build(self, state: _GridState, symbol: str, lower: float, upper: float, close: float) -> StrategySignal | None:
        p = self.parameters
        if not (lower > 0.0 and (upper - lower) / ((upper + lower) / 2.0) >= p["min_range_width"]):
            return None
        if not lower < close < upper:
            return None
        levels = state.levels = grid_levels(lower, upper, p["levels"], bool(p["geometric"]))
        current = int(np.argmin([abs(level - close) for level in levels]))
        sides = tuple("BUY" if i < current else "SELL" if i > current else None for i in range(len(levels)))
        ladder = Ladder(levels, sides, p["level_notional"], p["max_inventory_levels"])
        return _hold(symbol, ladder, grid_active=True, lower=levels[0], upper=levels[-1], reason="grid built")

    def _ended(self, symbol: str) -> StrategySignal:
        p = self.parameters
        ladder = Ladder.ended(p["level_notional"], p["max_inventory_levels"])
        return _hold(symbol, ladder, grid_active=False, reason="price left the grid")

    def _left_range(self, state: _GridState, close: float) -> bool:
        levels = state.levels
        buffer = self.parameters["stop_buffer"]
        low_gap = levels[1] - levels[0]
        high_gap = levels[-1] - levels[-2]
        return close < levels[0] - buffer * low_gap or close > levels[-1] + buffer * high_gap


def _hold(symbol: str, ladder: Ladder | None, **metadata: Any) -> StrategySignal:
    """Return a flat view (the grid holds no weight), carrying the ladder when it changed."""
    return StrategySignal(symbol, "HOLD", 0.0, 0.0, metadata=metadata, ladder=ladder)
