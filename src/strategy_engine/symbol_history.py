"""One symbol's closed bars and settled funding rates as numpy columns (the store behind ``market_data``).

:class:`SymbolHistory` grows its columns by doubling and, when a capacity is
set, keeps only the most recent bars (amortized O(1) per bar); its
:meth:`SymbolHistory.view` is the read-only ``market_data`` mapping of
:mod:`keel.strategy_engine.history`. Kept apart from that mapping because this
module is compiled (see :mod:`keel.compiled_modules`: a compiled subclass of an
abstract base such as ``Mapping`` would share its base's registry).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from mypy_extensions import mypyc_attr

from keel.core.floats import finite

if TYPE_CHECKING:
    from keel.strategy_engine.history import MarketData

BAR_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
FUNDING_COLUMNS = ("funding_time", "funding_rate", "mark_price")
MARKET_DATA_KEYS = ("symbol", *BAR_COLUMNS, *FUNDING_COLUMNS)

BarRow = tuple[Any, ...]
"""A bar as ``(close time ns, open, high, low, close, volume)``, as strategies' ``step`` receives it.

Declared ``tuple[Any, ...]``, not by field: compiled, a tuple of typed fields is
unboxed, and made again as a Python tuple (a new float object per field) at
every hand-over to a list, an attribute or a Python call; this one is made once.
"""

_INITIAL_CAPACITY = 256
_BLOCK_ROWS: Final = 64


def valid_bar(ts: int, open_: float, high: float, low: float, close: float, volume: float, last_ts: int | None) -> bool:
    """Return whether a bar may enter a symbol's history after the bar closed at ``last_ts``.

    It must close later, have finite prices and volume, a positive low, open
    and close within its low and high, and a volume of at least zero.
    """
    if last_ts is not None and ts <= last_ts:
        return False
    if not (finite(open_) and finite(high) and finite(low) and finite(close) and finite(volume)):
        return False
    return 0.0 < low <= open_ <= high and low <= close <= high and volume >= 0.0


class _Columns:
    """Named numpy columns appended row by row, optionally keeping only the last ``capacity`` rows.

    Rows are held as tuples and written into the arrays in blocks (every
    ``_BLOCK_ROWS`` rows, or when a column is read): one numpy write per
    column per block instead of one per value, and no write at all for rows
    the capacity drops before anyone reads them.
    """

    __slots__ = ("allocated", "arrays", "capacity", "ordered", "pending", "size", "start")

    def __init__(self, dtypes: Mapping[str, type], capacity: int | None) -> None:
        self.capacity = capacity
        self.arrays: dict[str, np.ndarray] = {
            name: np.empty(_INITIAL_CAPACITY, dtype=dtype) for name, dtype in dtypes.items()
        }
        # The arrays in column order, for the block writes.
        self.ordered = list(self.arrays.values())
        self.allocated = _INITIAL_CAPACITY
        # Positions are physical: rows start..size are kept, the last len(pending) of them not written yet.
        self.pending: list[tuple[Any, ...]] = []
        self.start = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size - self.start

    def append(self, values: tuple[Any, ...]) -> None:
        pending = self.pending
        pending.append(values)
        self.size += 1
        if self.capacity is not None and self.size - self.start > self.capacity:
            self.start = self.size - self.capacity
        if len(pending) >= _BLOCK_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows into the arrays (those the capacity already dropped are skipped)."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        written = self.size - len(pending)
        index = self.start - written
        if index > 0:
            # Every written row and the first ``index`` pending ones are dropped already: start over at 0.
            self.start = position = 0
        else:
            index = 0
            position = written
        while index < len(pending):
            if position == self.allocated:
                self.size = position
                self._make_room()
                position = self.size
            block = pending[index : index + self.allocated - position]
            end = position + len(block)
            for column, array in enumerate(self.ordered):
                array[position:end] = [row[column] for row in block]
            position = end
            index += len(block)
        self.size = position

    def _make_room(self) -> None:
        kept = self.size - self.start
        length = len(next(iter(self.arrays.values())))
        # Compact when at most half of the buffer is live, else double it.
        new_length = length if kept <= length // 2 else 2 * length
        for name, array in self.arrays.items():
            fresh = np.empty(new_length, dtype=array.dtype)
            fresh[:kept] = array[self.start : self.size]
            self.arrays[name] = fresh
        self.ordered = list(self.arrays.values())
        self.allocated = new_length
        self.start, self.size = 0, kept

    def column(self, name: str) -> np.ndarray:
        self.flush()
        view = self.arrays[name][self.start : self.size]
        view.flags.writeable = False
        return view


@mypyc_attr(allow_interpreted_subclasses=True)
class SymbolHistory:
    """One symbol's bars and funding rates as columns, the most recent ``capacity`` bars kept.

    Parameters
    ----------
    symbol
        The instrument.
    capacity
        Bars kept (None: all); funding rows kept likewise up to ``capacity``.
    """

    def __init__(self, symbol: str, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"history capacity must be >= 1 or None, got {capacity}")
        self.symbol = symbol
        self._bars = _Columns(
            {"timestamp": np.int64, **dict.fromkeys(BAR_COLUMNS[1:], np.float64)},
            capacity,
        )
        self._funding = _Columns(
            {"funding_time": np.int64, "funding_rate": np.float64, "mark_price": np.float64},
            capacity,
        )
        self.last_timestamp: int | None = None
        self.last_funding_time: int | None = None
        # The two newest bars as Python tuples: strategies read them on every bar.
        self._newest: BarRow | None = None
        self._second_newest: BarRow | None = None
        self._view: MarketData | None = None

    def __len__(self) -> int:
        return len(self._bars)

    def append_bar(self, timestamp: int, open_: float, high: float, low: float, close: float, volume: float) -> BarRow:
        """Append a closed bar (``timestamp`` is its close time, ns); return it as :meth:`bar` does."""
        row: BarRow = (timestamp, open_, high, low, close, volume)
        self._bars.append(row)
        self.last_timestamp = timestamp
        self._second_newest = self._newest
        self._newest = row
        return row

    def append_funding(self, funding_time: int, rate: float, mark_price: float | None) -> None:
        """Append a settled funding rate (``mark_price`` None when not recorded)."""
        self._funding.append((funding_time, rate, math.nan if mark_price is None else mark_price))
        self.last_funding_time = funding_time

    def view(self) -> MarketData:
        """Return a read-only ``market_data`` view of everything received so far (a live view, made once)."""
        view = self._view
        if view is None:
            from keel.strategy_engine.history import MarketData  # the view module reads this one

            view = self._view = MarketData(self)
        return view

    def bar(self, index: int) -> BarRow:
        """Return (timestamp, open, high, low, close, volume) of the index-th kept bar as Python numbers."""
        bars = self._bars
        count = len(bars)
        if index == count - 1 and self._newest is not None:
            return self._newest
        if index == count - 2 and self._second_newest is not None:
            return self._second_newest
        if not 0 <= index < count:
            raise IndexError(f"bar index {index} outside the {count} bars of {self.symbol}")
        bars.flush()
        position = bars.start + index
        arrays = bars.arrays
        return (
            int(arrays["timestamp"][position]),
            float(arrays["open"][position]),
            float(arrays["high"][position]),
            float(arrays["low"][position]),
            float(arrays["close"][position]),
            float(arrays["volume"][position]),
        )

    def column(self, key: str) -> np.ndarray:
        """Return a read-only column of bars or funding rows."""
        if key in FUNDING_COLUMNS:
            return self._funding.column(key)
        return self._bars.column(key)
