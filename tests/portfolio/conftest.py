"""Real returns and bars for the portfolio tests (bundled Binance USD-M data)."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import pytest

from keel.core.clock import NANOS_PER_MILLI
from keel.core.messages import BarClosed
from keel.market_data.loaders import load_ohlcv
from kit import bar_of, real_frame

ROOT = Path(__file__).resolve().parents[2]
BARS_1M = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
BARS_1H = ROOT / "data" / "ohlcv" / "binance_usdm_1h_2025-03"
SYMBOLS_1M = (
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "LINKUSDT",
    "LTCUSDT",
    "BCHUSDT",
    "AVAXUSDT",
    "SUIUSDT",
)
SYMBOLS_1H = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "LINKUSDT", "LTCUSDT", "BCHUSDT")
MINUTE_NS = 60_000 * NANOS_PER_MILLI


@functools.cache
def closes_1m() -> pd.DataFrame:
    """Closes of the 10 symbols' 1m bars on their common bar times."""
    frames = [
        load_ohlcv(BARS_1M / f"{s}_1m.csv.gz").frame.set_index("open_time_ms")["close"].rename(s) for s in SYMBOLS_1M
    ]
    return pd.concat(frames, axis=1, join="inner")


@functools.cache
def hourly_returns_may() -> pd.DataFrame:
    """Hourly simple returns of the 10 symbols, sampled from the 1m closes (May 2025: every mean positive)."""
    return closes_1m().iloc[::60].pct_change().dropna()


@functools.cache
def hourly_returns_march() -> pd.DataFrame:
    """Simple returns of the bundled 1h bars of 9 symbols (March 2025: almost every mean negative)."""
    frames = [
        load_ohlcv(BARS_1H / f"{s}_1h.csv.gz").frame.set_index("open_time_ms")["close"].rename(s) for s in SYMBOLS_1H
    ]
    return pd.concat(frames, axis=1, join="inner").pct_change().dropna()


@functools.cache
def minute_returns(rows: int) -> pd.DataFrame:
    """The first ``rows`` 1m simple returns of the 10 symbols."""
    return closes_1m().iloc[: rows + 1].pct_change().dropna()


@functools.cache
def real_bars(symbols: tuple[str, ...], count: int, start: int = 0) -> tuple[BarClosed, ...]:
    """Real 1m bars of ``symbols`` in time order (one per symbol per minute), from row ``start``."""
    times = closes_1m().index[start : start + count]
    frames = {s: real_frame(s).set_index("open_time_ms", drop=False).loc[times] for s in symbols}
    return tuple(bar_of(symbol, frames[symbol].loc[open_ms]) for open_ms in times for symbol in symbols)


@pytest.fixture(scope="session")
def may_hourly() -> pd.DataFrame:
    return hourly_returns_may()


@pytest.fixture(scope="session")
def march_hourly() -> pd.DataFrame:
    return hourly_returns_march()


@pytest.fixture(scope="session")
def make_bars():
    """Return a function giving real 1m bars: ``make_bars(symbols, count, start=0)``."""
    return real_bars


@pytest.fixture(scope="session")
def make_minute_returns():
    """Return a function giving the first ``rows`` real 1m returns of the 10 symbols."""
    return minute_returns
