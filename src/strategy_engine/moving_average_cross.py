"""A moving-average cross: long while the fast mean is above the slow one, short below.

The walking skeleton's strategy, kept as the smallest example of an
:class:`~keel.strategy_engine.base.IncrementalStrategy`. Both means are simple
moving averages of closes, kept per symbol in O(1) per bar; a signal is
emitted only when the sign of ``fast - slow`` changes after warm-up (None
otherwise: the view is unchanged).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState
from keel.strategy_engine.parameters import Parameter


class _RollingMean:
    __slots__ = ("total", "values", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.values: deque[float] = deque()
        self.total = 0.0

    def update(self, value: float) -> float | None:
        values = self.values
        values.append(value)
        total = self.total + value
        count = len(values)
        window = self.window
        if count > window:
            total -= values.popleft()
            count = window
        self.total = total
        if count < window:
            return None
        return total / window


class _CrossState(SymbolState):
    __slots__ = ("direction", "fast", "slow")

    def __init__(self, fast_period: int, slow_period: int) -> None:
        super().__init__()
        self.fast = _RollingMean(fast_period)
        self.slow = _RollingMean(slow_period)
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
        return _CrossState(self.fast_period, self.slow_period)

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
        fast_mean = state.fast.update(close)
        slow_mean = state.slow.update(close)
        if fast_mean is None or slow_mean is None or fast_mean == slow_mean:
            return None
        direction = 1 if fast_mean > slow_mean else -1
        if state.direction == direction:
            return None
        state.direction = direction
        spread = abs(fast_mean - slow_mean) / slow_mean
        return StrategySignal(
            symbol=market_data["symbol"],
            action="BUY" if direction > 0 else "SELL",
            strength=1.0,
            confidence=1.0,
            metadata={"fast_mean": fast_mean, "slow_mean": slow_mean, "spread": spread},
        )
