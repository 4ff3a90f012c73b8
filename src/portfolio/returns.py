"""A rolling window of aligned per-bar returns, fed one bar close at a time.

Bars of one time arrive one symbol after another; a row of returns is
complete when the first bar of a later time arrives, and it is kept only if
every symbol had a bar at that time (a symbol missing a bar leaves no row,
and its next return spans the gap). Rows are kept in a ring buffer, so
reading the window at time t uses bars up to t only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from mypy_extensions import mypyc_attr

from keel.core.floats import finite


@mypyc_attr(allow_interpreted_subclasses=True)
class ReturnWindow:
    """Rolling aligned per-bar returns of a fixed set of symbols.

    Parameters
    ----------
    symbols
        The columns.
    size
        Most rows kept.
    """

    def __init__(self, symbols: Sequence[str], size: int) -> None:
        if size < 2:
            raise ValueError(f"a return window needs at least 2 rows, got {size}")
        self.symbols = tuple(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.size = size
        self._rows = np.zeros((size, len(self.symbols)))
        self._count = 0
        # The pending and last closes are Python lists: a bar touches one cell, and numpy's per-call cost
        # would dominate; a completed row is computed with the same IEEE operations numpy would use.
        self._last_close: list[float] = [math.nan] * len(self.symbols)
        self._pending: list[float] = [math.nan] * len(self.symbols)
        self._filled = 0
        self._last_complete = False
        self._pending_ts: int | None = None
        self.rows_added = 0

    def add_close(self, symbol: str, ts: int, close: float) -> np.ndarray | None:
        """Record a bar close; return the completed row when this bar starts a new time, else None."""
        if self.record_close(symbol, ts, close):
            return self._rows[(self._count - 1) % self.size].copy()
        return None

    def record_close(self, symbol: str, ts: int, close: float) -> bool:
        """Record a bar close as :meth:`add_close` does; return whether it completed a row (without copying it)."""
        column = self.index.get(symbol)
        if column is None or not finite(close) or close <= 0:
            return False
        completed = False
        if self._pending_ts is not None and ts != self._pending_ts:
            completed = self._complete()
        self._pending_ts = ts
        pending = self._pending
        if pending[column] != pending[column]:  # NaN: the symbol's first bar of this time
            self._filled += 1
        pending[column] = close
        return completed

    def _complete(self) -> bool:
        closes = self._pending
        previous = self._last_close
        width = len(closes)
        completed = False
        if self._filled == width and (self._last_complete or self._complete_previous(previous)):
            rows = self._rows
            slot = self._count % self.size
            # The ring buffer takes Python floats, one cell per symbol: numpy's per-call cost would dominate.
            if width == 1:
                rows[slot, 0] = closes[0] / previous[0] - 1.0
            else:
                rows[slot] = [c / p - 1.0 for c, p in zip(closes, previous, strict=True)]
            self._count += 1
            self.rows_added += 1
            self._last_close = closes
            completed = True
            # The previous closes' list is free: it takes the next time's closes (no new list a bar).
            for i in range(width):
                previous[i] = math.nan
            self._pending = previous
        else:
            self._last_close = [p if c != c else c for c, p in zip(closes, previous, strict=True)]
            self._pending = [math.nan] * width
        self._filled = 0
        return completed

    def _complete_previous(self, previous: list[float]) -> bool:
        if self._last_complete:
            return True
        self._last_complete = all(p == p for p in previous)
        return self._last_complete

    def returns(self) -> np.ndarray:
        """Return the kept rows, oldest first."""
        if self._count < self.size:
            return self._rows[: self._count].copy()
        start = self._count % self.size
        return np.concatenate([self._rows[start:], self._rows[:start]])

    def __len__(self) -> int:
        return min(self._count, self.size)
