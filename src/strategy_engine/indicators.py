"""Incremental indicators: O(1) (amortized) per bar, fed one value at a time, past data only.

Each indicator keeps exactly the state its window needs and returns its
current value from ``update``; ``ready`` tells whether the window is full.
The tests check every one against a plain batch computation (pandas / numpy)
on the bundled real bars.
"""

from __future__ import annotations

import math
from collections import deque

from mypy_extensions import mypyc_attr


@mypyc_attr(allow_interpreted_subclasses=True)
class ExponentialMovingAverage:
    """An exponential moving average with ``alpha = 2 / (period + 1)``, seeded with the first value.

    Parameters
    ----------
    period
        Span of the average (>= 1); ``ready`` after ``period`` values.
    """

    __slots__ = ("alpha", "count", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"EMA period must be >= 1, got {period}")
        self.period = period
        self.alpha = 2.0 / (period + 1.0)
        self.count = 0
        self.value = math.nan

    @property
    def ready(self) -> bool:
        """Return whether ``period`` values have been seen."""
        return self.count >= self.period

    def update(self, value: float) -> float:
        """Add a value; return the average."""
        self.count += 1
        if self.count == 1:
            self.value = value
        else:
            self.value += self.alpha * (value - self.value)
        return self.value


@mypyc_attr(allow_interpreted_subclasses=True)
class AverageTrueRange:
    """Wilder's average true range: the mean of the first ``period`` true ranges, then Wilder smoothing.

    The first bar's true range is ``high - low`` (it has no previous close).

    Parameters
    ----------
    period
        Smoothing period (>= 1); ``ready`` after ``period`` bars.
    """

    __slots__ = ("count", "period", "previous_close", "total", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"ATR period must be >= 1, got {period}")
        self.period = period
        self.count = 0
        self.total = 0.0
        self.previous_close = math.nan
        self.value = math.nan

    @property
    def ready(self) -> bool:
        """Return whether ``period`` bars have been seen."""
        return self.count >= self.period

    def update(self, high: float, low: float, close: float) -> float:
        """Add a bar; return the ATR (NaN until ready)."""
        previous = self.previous_close
        true_range = high - low if self.count == 0 else max(high - low, abs(high - previous), abs(low - previous))
        self.previous_close = close
        self.count += 1
        period = self.period
        if self.count < period:
            self.total += true_range
        elif self.count == period:
            self.value = (self.total + true_range) / period
        else:
            self.value = (self.value * (period - 1) + true_range) / period
        return self.value


@mypyc_attr(allow_interpreted_subclasses=True)
class RollingExtremes:
    """The highest high and lowest low of the last ``period`` bars (monotonic deques, amortized O(1)).

    Parameters
    ----------
    period
        Window length in bars (>= 1).
    """

    __slots__ = ("_highs", "_lows", "count", "period")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"rolling extremes period must be >= 1, got {period}")
        self.period = period
        self.count = 0
        self._highs: deque[tuple[int, float]] = deque()
        self._lows: deque[tuple[int, float]] = deque()

    @property
    def ready(self) -> bool:
        """Return whether the window is full."""
        return self.count >= self.period

    @property
    def highest(self) -> float:
        """Return the highest high in the window (NaN when empty)."""
        return self._highs[0][1] if self._highs else math.nan

    @property
    def lowest(self) -> float:
        """Return the lowest low in the window (NaN when empty)."""
        return self._lows[0][1] if self._lows else math.nan

    def update(self, high: float, low: float) -> None:
        """Add a bar's high and low, dropping the bar that left the window."""
        index = self.count
        self.count += 1
        highs, lows = self._highs, self._lows
        while highs and highs[-1][1] <= high:
            highs.pop()
        highs.append((index, high))
        while lows and lows[-1][1] >= low:
            lows.pop()
        lows.append((index, low))
        oldest = index - self.period
        if highs[0][0] <= oldest:
            highs.popleft()
        if lows[0][0] <= oldest:
            lows.popleft()


@mypyc_attr(allow_interpreted_subclasses=True)
class RollingMoments:
    """Mean and population standard deviation of the last ``period`` values (windowed Welford).

    Adding and removing values by Welford's updates keeps the variance
    accurate for prices far from zero, where sums of squares would cancel.

    Parameters
    ----------
    period
        Window length (>= 2).
    """

    __slots__ = ("_sum_squares", "_values", "mean", "period")

    def __init__(self, period: int) -> None:
        if period < 2:
            raise ValueError(f"rolling moments period must be >= 2, got {period}")
        self.period = period
        self._values: deque[float] = deque()
        self.mean = 0.0
        self._sum_squares = 0.0

    @property
    def ready(self) -> bool:
        """Return whether the window is full."""
        return len(self._values) >= self.period

    @property
    def std(self) -> float:
        """Return the population standard deviation of the window (0 when empty)."""
        count = len(self._values)
        if count == 0 or self._sum_squares <= 0.0:
            return 0.0
        return math.sqrt(self._sum_squares / count)

    def update(self, value: float) -> None:
        """Add a value, removing the oldest once the window is full."""
        values = self._values
        values.append(value)
        count = len(values)
        delta = value - self.mean
        self.mean += delta / count
        self._sum_squares += delta * (value - self.mean)
        if count > self.period:
            old = values.popleft()
            count -= 1
            delta = old - self.mean
            self.mean -= delta / count
            self._sum_squares -= delta * (old - self.mean)


@mypyc_attr(allow_interpreted_subclasses=True)
class EfficiencyRatio:
    """Kaufman's efficiency ratio over ``period`` steps: ``|x_t - x_{t-period}| / sum |x_i - x_{i-1}|``.

    1 is a straight line (a clean trend), near 0 is noise going nowhere
    (a range). Fed log prices it is scale free.

    Parameters
    ----------
    period
        Steps in the window (>= 1); ``ready`` after ``period + 1`` values.
    """

    __slots__ = ("_path", "_values", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"efficiency ratio period must be >= 1, got {period}")
        self.period = period
        self._values: deque[float] = deque()
        self._path = 0.0
        self.value = math.nan

    @property
    def ready(self) -> bool:
        """Return whether ``period + 1`` values have been seen."""
        return len(self._values) > self.period

    def update(self, value: float) -> float:
        """Add a value; return the ratio (NaN until ready)."""
        values = self._values
        if values:
            self._path += abs(value - values[-1])
        values.append(value)
        if len(values) > self.period + 1:
            oldest = values.popleft()
            # The move leaving the window, recomputed: the same subtraction gives the same float.
            self._path -= abs(values[0] - oldest)
        if len(values) <= self.period:
            return self.value
        path = self._path
        # The running path can drift a few ulps below zero over a flat window.
        self.value = min(1.0, abs(value - values[0]) / path) if path > 1e-300 else 0.0
        return self.value


@mypyc_attr(allow_interpreted_subclasses=True)
class RollingMeanSquare:
    """The mean of the squares of the last ``period`` values (realized variance of returns).

    Parameters
    ----------
    period
        Window length (>= 1).
    """

    __slots__ = ("_squares", "_total", "period")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"rolling mean square period must be >= 1, got {period}")
        self.period = period
        self._squares: deque[float] = deque()
        self._total = 0.0

    @property
    def ready(self) -> bool:
        """Return whether the window is full."""
        return len(self._squares) >= self.period

    @property
    def value(self) -> float:
        """Return the mean square of the window (0 when empty, never negative)."""
        count = len(self._squares)
        return max(self._total, 0.0) / count if count else 0.0

    def update(self, value: float) -> float:
        """Add a value; return the mean square."""
        square = value * value
        self._squares.append(square)
        self._total += square
        if len(self._squares) > self.period:
            self._total -= self._squares.popleft()
        return self.value


@mypyc_attr(allow_interpreted_subclasses=True)
class RelativeStrengthIndex:
    """Wilder's relative strength index: average gains over average losses of closes, on 0 to 100.

    The first ``period`` changes are averaged plainly, later ones by Wilder
    smoothing (``alpha = 1 / period``), as in Wilder's book and TA-Lib.

    Parameters
    ----------
    period
        Changes averaged (>= 1); ``ready`` after ``period`` changes.
    """

    __slots__ = ("_gain", "_loss", "_previous", "count", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"RSI period must be >= 1, got {period}")
        self.period = period
        self.count = 0
        self.value = math.nan
        self._previous = math.nan
        self._gain = 0.0
        self._loss = 0.0

    @property
    def ready(self) -> bool:
        """Return whether ``period`` changes have been seen."""
        return self.count >= self.period

    def update(self, close: float) -> float:
        """Add a close; return the RSI (NaN until ready)."""
        previous, self._previous = self._previous, close
        if math.isnan(previous):
            return self.value
        change = close - previous
        gain, loss = max(change, 0.0), max(-change, 0.0)
        self.count += 1
        if self.count <= self.period:
            self._gain += gain / self.period
            self._loss += loss / self.period
            if self.count < self.period:
                return self.value
        else:
            self._gain += (gain - self._gain) / self.period
            self._loss += (loss - self._loss) / self.period
        total = self._gain + self._loss
        self.value = 50.0 if total <= 0.0 else 100.0 * self._gain / total
        return self.value
