"""A moving-average cross: long while the fast mean is above the slow one, short below.

The walking skeleton's strategy. Both means are simple moving averages of
closes, kept incrementally per symbol in O(1) per bar; a signal is emitted
only when the sign of ``fast - slow`` changes after warm-up.
"""

from __future__ import annotations

from collections import deque

from keel.core.messages import BarClosed
from keel.strategy_engine.base import BaseStrategy, StrategySignal


class _RollingMean:
    __slots__ = ("total", "values", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.values: deque[float] = deque()
        self.total = 0.0

    def update(self, value: float) -> float | None:
        self.values.append(value)
        self.total += value
        if len(self.values) > self.window:
            self.total -= self.values.popleft()
        if len(self.values) < self.window:
            return None
        return self.total / self.window


class MovingAverageCrossStrategy(BaseStrategy):
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

    def __init__(self, fast_period: int = 20, slow_period: int = 60, name: str = "ma_cross") -> None:
        if not 1 <= fast_period < slow_period:
            raise ValueError(
                f"moving average cross needs 1 <= fast_period < slow_period, got {fast_period} and {slow_period}"
            )
        super().__init__(name, {"fast_period": fast_period, "slow_period": slow_period})
        self.fast_period = fast_period
        self.slow_period = slow_period
        self.warmup_bars = slow_period
        self._fast: dict[str, _RollingMean] = {}
        self._slow: dict[str, _RollingMean] = {}
        self._direction: dict[str, int] = {}

    def on_bar(self, bar: BarClosed) -> StrategySignal | None:
        """Update the symbol's means; signal when the cross direction changes."""
        symbol = bar.symbol
        fast = self._fast.get(symbol)
        if fast is None:
            fast = self._fast[symbol] = _RollingMean(self.fast_period)
            self._slow[symbol] = _RollingMean(self.slow_period)
        fast_mean = fast.update(bar.close)
        slow_mean = self._slow[symbol].update(bar.close)
        if fast_mean is None or slow_mean is None or fast_mean == slow_mean:
            return None
        direction = 1 if fast_mean > slow_mean else -1
        if self._direction.get(symbol) == direction:
            return None
        self._direction[symbol] = direction
        spread = abs(fast_mean - slow_mean) / slow_mean
        return StrategySignal(
            symbol=symbol,
            action="BUY" if direction > 0 else "SELL",
            strength=1.0,
            confidence=1.0,
            metadata={"fast_mean": fast_mean, "slow_mean": slow_mean, "spread": spread},
        )
