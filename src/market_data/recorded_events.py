"""The recorded feed's bars and funding settlements as messages, in exchange-time order.

Compiled (see :mod:`keel.compiled_modules`): a backtest takes every bar from
here. The columns are lists of Python numbers, handed on as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from keel.core.messages import BarClosed, MarketDataEvent

BAR: Final = 0
"""The kind of a bar in :func:`merged_events`' ``kinds``."""
FUNDING: Final = 1
"""The kind of a funding settlement in :func:`merged_events`' ``kinds``."""


def merged_events(
    kinds: Sequence[int],
    positions: Sequence[int],
    bar_columns: Sequence[Sequence[Any]],
    symbols: Sequence[str],
    interval: str,
    funding_event: Callable[[int], MarketDataEvent],
) -> Iterator[MarketDataEvent]:
    """Yield the events in order: the i-th is bar (or funding row) ``positions[i]``, as ``kinds[i]`` says.

    Parameters
    ----------
    kinds, positions
        The merged order: each event's kind (:data:`BAR` or :data:`FUNDING`)
        and its row among the bars or the funding settlements.
    bar_columns
        The bars' open time, close time (ns), open, high, low, close, volume
        and symbol (an index into ``symbols``), one list each.
    symbols
        The symbols' names.
    interval
        The bars' interval.
    funding_event
        The message of a funding row.
    """
    open_ns, close_ns, opens, highs, lows, closes, volumes, bar_symbols = bar_columns
    for i in range(len(kinds)):
        position = positions[i]
        if kinds[i] == BAR:
            ts = close_ns[position]
            yield BarClosed(
                symbol=symbols[bar_symbols[position]],
                interval=interval,
                open_time=open_ns[position],
                open=opens[position],
                high=highs[position],
                low=lows[position],
                close=closes[position],
                volume=volumes[position],
                ts_event=ts,
                ts_init=ts,
            )
        else:
            yield funding_event(position)
