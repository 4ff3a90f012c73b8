"""Per-symbol market history in the shape of the user's ``market_data`` dict.

:class:`SymbolHistory` stores one symbol's closed bars and settled funding
rates as numpy columns that grow by doubling and, when a capacity is set,
keep only the most recent bars (amortized O(1) per bar). :class:`MarketData`
is a read-only view of it that behaves like the dict a strategy developer's
``generate_signal(market_data, current_index)`` receives (UC-2.1):

========================  =====================================================
key                       value
========================  =====================================================
``symbol``                the instrument, e.g. ``"BTCUSDT"``
``timestamp``             bar close times, int64 nanoseconds (``ts_event``)
``open`` … ``volume``     float64 bar columns
``funding_time``          settlement times of funding rates, int64 ns
``funding_rate``          settled rates, a fraction per funding interval
``mark_price``            mark price at each settlement (NaN when not recorded)
========================  =====================================================

Arrays are read-only slices of what has been received: index ``i`` of the
bar columns is the i-th bar kept, and funding rows are only those already
settled, so nothing in a view lies in the future of its last bar.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from keel.strategy_engine.symbol_history import (
    BAR_COLUMNS,
    FUNDING_COLUMNS,
    MARKET_DATA_KEYS,
    SymbolHistory,
    valid_bar,
)

__all__ = [
    "BAR_COLUMNS",
    "FUNDING_COLUMNS",
    "MARKET_DATA_KEYS",
    "MarketData",
    "SymbolHistory",
    "bar_at",
    "valid_bar",
]


class MarketData(Mapping[str, Any]):
    """A read-only view of a :class:`SymbolHistory` with the keys of the user's ``market_data`` dict.

    Parameters
    ----------
    history
        The history it shows.
    """

    __slots__ = ("_history",)

    def __init__(self, history: SymbolHistory) -> None:
        self._history = history

    def __getitem__(self, key: str) -> Any:
        if key == "symbol":
            return self._history.symbol
        if key not in MARKET_DATA_KEYS:
            raise KeyError(key)
        return self._history.column(key)

    def __iter__(self) -> Iterator[str]:
        return iter(MARKET_DATA_KEYS)

    def __len__(self) -> int:
        return len(MARKET_DATA_KEYS)

    def bar(self, index: int) -> tuple[int, float, float, float, float, float]:
        """Return (timestamp, open, high, low, close, volume) of bar ``index`` without slicing columns."""
        return self._history.bar(index)

    def bars(self) -> int:
        """Return the number of bars in view."""
        return len(self._history)

    @property
    def last_funding_time(self) -> int | None:
        """Return the settlement time of the newest funding row (None before any)."""
        return self._history.last_funding_time


def bar_at(market_data: Mapping[str, Any], index: int) -> tuple[int, float, float, float, float, float]:
    """Return (key, open, high, low, close, volume) of bar ``index`` of any ``market_data`` mapping.

    The key is the bar's ``timestamp`` when the mapping has one, else the
    index itself; a :class:`MarketData` view answers without slicing.

    Raises
    ------
    KeyError
        If ``close`` is missing (``open``, ``high``, ``low`` default to the
        close and ``volume`` to 0 when absent).
    IndexError
        If ``index`` is outside the data.
    """
    if isinstance(market_data, MarketData):
        return market_data.bar(index)
    if index < 0:
        raise IndexError(f"bar index must be >= 0, got {index}")
    close = float(market_data["close"][index])
    timestamp = market_data.get("timestamp")
    open_ = market_data.get("open")
    high = market_data.get("high")
    low = market_data.get("low")
    volume = market_data.get("volume")
    return (
        index if timestamp is None else int(timestamp[index]),
        close if open_ is None else float(open_[index]),
        close if high is None else float(high[index]),
        close if low is None else float(low[index]),
        close,
        0.0 if volume is None else float(volume[index]),
    )
