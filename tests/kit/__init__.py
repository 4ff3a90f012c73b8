"""The tests' shared kit: real recorded data as keel messages, written once.

Import it as ``kit`` (``tests/`` is on the import path of every test)::

    from kit import real_bars
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd

from keel.core.clock import NANOS_PER_MILLI
from keel.core.messages import BarClosed
from keel.market_data.loaders import load_ohlcv

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""

BARS_1M = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
"""The bundled 1m bars of 10 symbols, May 2025 (from 2025-05-05)."""

MINUTE_NS = 60_000 * NANOS_PER_MILLI


@functools.cache
def real_frame(symbol: str) -> pd.DataFrame:
    """Every bundled 1m bar of ``symbol`` as loaded by :func:`keel.market_data.loaders.load_ohlcv`."""
    return load_ohlcv(BARS_1M / f"{symbol}_1m.csv.gz").frame


def bar_of(symbol: str, row: Any) -> BarClosed:
    """Return the 1m ``BarClosed`` of a frame row (closed, and seen, at the end of its minute)."""
    open_time = int(row.open_time_ms) * NANOS_PER_MILLI
    return BarClosed(
        symbol=symbol,
        interval="1m",
        open_time=open_time,
        open=float(row.open),
        high=float(row.high),
        low=float(row.low),
        close=float(row.close),
        volume=float(row.volume),
        ts_event=open_time + MINUTE_NS,
        ts_init=open_time + MINUTE_NS,
    )


@functools.cache
def real_bars(symbol: str, count: int, start: int = 0) -> tuple[BarClosed, ...]:
    """The real 1m bars of ``symbol`` from row ``start``, ``count`` of them."""
    frame = real_frame(symbol).iloc[start : start + count]
    return tuple(bar_of(symbol, row) for row in frame.itertuples(index=False))


def with_closes(bars: tuple[BarClosed, ...] | list[BarClosed], closes: list[float]) -> list[BarClosed]:
    """Return ``bars`` with their closes replaced (highs and lows widened to hold them)."""
    return [
        msgspec.structs.replace(bar, close=close, high=max(bar.high, close), low=min(bar.low, close))
        for bar, close in zip(bars, closes, strict=True)
    ]
