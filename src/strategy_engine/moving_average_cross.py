"""A moving-average cross: long while the fast mean is above the slow one, short below.

The walking skeleton's strategy, kept as the smallest example of an
:class:`~keel.strategy_engine.base.IncrementalStrategy`. Both means are simple
moving averages of closes, kept per symbol in O(1) per bar; a signal is
emitted only when the sign of ``fast - slow`` changes after warm-up (None
otherwise: the view is unchanged). Means equal up to the running sums'
rounding are a tie, never a cross: with short windows on a quiet market
(repeated closes make the means equal) the view would otherwise flip on
rounding noise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState
from keel.strategy_engine.parameters import Parameter

_TIE = 1e-10
"""Means closer than this (relative) are equal: the running sums carry rounding (~1e-16 a bar), prices ticks (~1e-6)."""


class _CrossState(SymbolState):
    """The last ``slow_period`` closes (the fast window is their newest part) and both windows' sums."""

    __slots__ = ("closes", "direction", "fast_total", "slow_total")

    def __init__(self) -> None:
        super().__init__()
        self.closes: deque[float] = deque()
        self.fast_total = 0.0
        self.slow_total = 0.0
        self.direction = 0


class MovingAverageCrossStrategy(IncrementalStrategy):
    """Go long on a golden cross and short on a death cross, per symbol.

    Parameters
    ----------
    fast_period
        Bars in the fast mean (>= 1).
    slow_period
        Bars in the slow mean (> fast_period).
    name
        The strategy's name.
    """

    reads_bar_only: ClassVar[bool] = True

    parameter_space: ClassVar[Mapping[str, Parameter]] = {
        "fast_period": Parameter(int, 20, 1, 1000, "bars in the fast simple moving average"),
        "slow_period": Parameter(int, 60, 2, 5000, "bars in the slow simple moving average"),
    }

    def __init__(self, fast_period: int = 20, slow_period: int = 60, name: str = "ma_cross") -> None:
        if not 1 <= fast_period < slow_period:
            raise ValueError(
                f"moving average cross needs 1 <= fast_period < slow_period, got {fast_period} and {slow_period}"
            )
        super().__init__(name, {"fast_period": fast_period, "slow_period": slow_period})
        self.fast_period = self.parameters["fast_period"]
        self.slow_period = self.parameters["slow_period"]
        self.warmup_bars = self.slow_period

    def new_state(self) -> _CrossState:
        """Return empty means for a new symbol."""
        return _CrossState()

    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        """Update the means; signal when the cross direction changes."""
        assert isinstance(state, _CrossState)
        close = bar[4]
        closes = state.closes
        closes.append(close)
        fast, slow = self.fast_period, self.slow_period
        # Each sum adds the new close and takes off the one leaving its window: O(1) a bar, one deque for both.
        fast_total = state.fast_total + close
        slow_total = state.slow_total + close
        count = len(closes)
        if count > fast:
            fast_total -= closes[-fast - 1]
        if count > slow:
            slow_total -= closes.popleft()
            count = slow
        state.fast_total, state.slow_total = fast_total, slow_total
        if count < slow:
            return None
        fast_mean, slow_mean = fast_total / fast, slow_total / slow
        change = (fast_mean - slow_mean) / slow_mean
        if abs(change) <= _TIE:
            return None
        direction = 1 if change > 0.0 else -1
        if state.direction == direction:
            return None
        state.direction = direction
        spread = abs(change)
        return StrategySignal(
            symbol=market_data["symbol"],
            action="BUY" if direction > 0 else "SELL",
            strength=1.0,
            confidence=1.0,
            metadata={"fast_mean": fast_mean, "slow_mean": slow_mean, "spread": spread},
        )
