"""Bars built from trades: time bars, volume bars and dollar bars.

Every aggregator takes trades in time order (``on_trade``) and returns the
``BarClosed`` events the trade completes; a bar never includes a trade after
its close, so nothing looks ahead.

- :class:`TimeBarAggregator` closes a bar at each multiple of its interval
  (aligned to the epoch, as Binance klines are): when the first trade at or
  after the boundary arrives, or when :meth:`TimeBarAggregator.close_until` is
  called by a clock timer. A whole interval without trades gives a bar with
  open = high = low = close = the previous close and volume 0, as a Binance
  kline does.
- :class:`VolumeBarAggregator` closes a bar on the trade that brings its
  volume to ``volume_per_bar`` (base units);
  :class:`DollarBarAggregator` on the trade that brings its traded notional
  to ``notional_per_bar`` (quote units). A threshold bar's ``open_time`` is
  its first trade's time and ``ts_event`` its last trade's.

:func:`time_bars_batch` is the plain pandas reference of the time bars.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import numpy as np
import pandas as pd

from keel.core.messages import BarClosed, TradeTick

_UNIT_NS = {"s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}
_INTERVAL = re.compile(r"(\d+)([smhd])")


def interval_ns(interval: str) -> int:
    """Return a bar interval such as ``1m`` or ``4h`` in ns.

    Raises
    ------
    ValueError
        If the interval is not a positive count of s, m, h or d.
    """
    match = _INTERVAL.fullmatch(interval)
    if match is None or int(match[1]) <= 0:
        raise ValueError(f"bar interval must look like 1s, 1m, 5m, 1h or 1d, got {interval!r}")
    return int(match[1]) * _UNIT_NS[match[2]]


class _Bar:
    __slots__ = ("close", "high", "last_ts", "low", "notional", "open", "open_time", "volume")

    def __init__(self, open_time: int, price: float) -> None:
        self.open_time = open_time
        self.open = self.high = self.low = self.close = price
        self.volume = 0.0
        self.notional = 0.0
        self.last_ts = open_time

    def add(self, ts: int, price: float, quantity: float) -> None:
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.volume += quantity
        self.notional += price * quantity
        self.last_ts = ts


class TimeBarAggregator:
    """Time bars of one symbol from its trades (see module doc).

    Parameters
    ----------
    symbol
        The symbol of the bars.
    interval
        Bar length, e.g. ``1m``.
    """

    def __init__(self, symbol: str, interval: str = "1m") -> None:
        self.symbol = symbol
        self.interval = interval
        self.interval_ns = interval_ns(interval)
        self._bar: _Bar | None = None
        self._last_close: float | None = None
        self._next_open = 0

    def on_trade(self, trade: TradeTick) -> list[BarClosed]:
        """Add a trade; return the bars that closed before it."""
        return self.update(trade.ts_event, trade.price, trade.quantity)

    def update(self, ts: int, price: float, quantity: float) -> list[BarClosed]:
        """Add a trade given as plain values (see :meth:`on_trade`)."""
        closed = self.close_until(ts, ts_init=ts)
        bar = self._bar
        if bar is None:
            bar = self._bar = _Bar(ts - ts % self.interval_ns, price)
        bar.add(ts, price, quantity)
        return closed

    def close_until(self, ts: int, ts_init: int | None = None) -> list[BarClosed]:
        """Close every bar that ends at or before ``ts`` (flat bars fill trade-less intervals)."""
        closed: list[BarClosed] = []
        stamp = ts if ts_init is None else ts_init
        step = self.interval_ns
        bar = self._bar
        if bar is not None and bar.open_time + step <= ts:
            closed.append(self._event(bar, stamp))
            self._last_close = bar.close
            self._next_open = bar.open_time + step
            self._bar = None
        if self._bar is None and self._last_close is not None:
            while self._next_open + step <= ts:
                closed.append(self._event(_Bar(self._next_open, self._last_close), stamp))
                self._next_open += step
        return closed

    def _event(self, bar: _Bar, ts_init: int) -> BarClosed:
        close_time = bar.open_time + self.interval_ns
        return BarClosed(
            symbol=self.symbol,
            interval=self.interval,
            open_time=bar.open_time,
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            ts_event=close_time,
            ts_init=max(ts_init, close_time),
        )


class _ThresholdBars(ABC):
    def __init__(self, symbol: str, threshold: float, label: str) -> None:
        if not threshold > 0:
            raise ValueError(f"{label} bar threshold must be positive, got {threshold}")
        self.symbol = symbol
        self.threshold = threshold
        self.interval = f"{label}:{threshold:g}"
        self._bar: _Bar | None = None

    @abstractmethod
    def _measure(self, bar: _Bar) -> float:
        """Return how far the bar has come toward its threshold."""

    def on_trade(self, trade: TradeTick) -> list[BarClosed]:
        """Add a trade; return the bar it completes, if any."""
        return self.update(trade.ts_event, trade.price, trade.quantity)

    def update(self, ts: int, price: float, quantity: float) -> list[BarClosed]:
        """Add a trade given as plain values (see :meth:`on_trade`)."""
        bar = self._bar
        if bar is None:
            bar = self._bar = _Bar(ts, price)
        bar.add(ts, price, quantity)
        if self._measure(bar) < self.threshold:
            return []
        self._bar = None
        return [
            BarClosed(
                symbol=self.symbol,
                interval=self.interval,
                open_time=bar.open_time,
                open=bar.open,
                high=bar.high,
                low=bar.low,
                close=bar.close,
                volume=bar.volume,
                ts_event=bar.last_ts,
                ts_init=bar.last_ts,
            )
        ]


class VolumeBarAggregator(_ThresholdBars):
    """Bars of ``volume_per_bar`` base units each (``interval`` is ``volume:<size>``)."""

    def __init__(self, symbol: str, volume_per_bar: float) -> None:
        super().__init__(symbol, volume_per_bar, "volume")

    def _measure(self, bar: _Bar) -> float:
        return bar.volume


class DollarBarAggregator(_ThresholdBars):
    """Bars of ``notional_per_bar`` quote units each (``interval`` is ``dollar:<size>``)."""

    def __init__(self, symbol: str, notional_per_bar: float) -> None:
        super().__init__(symbol, notional_per_bar, "dollar")

    def _measure(self, bar: _Bar) -> float:
        return bar.notional


def time_bars_batch(ts: np.ndarray, prices: np.ndarray, quantities: np.ndarray, interval: str = "1m") -> pd.DataFrame:
    """Time bars of a whole trade tape with pandas (the plain reference of :class:`TimeBarAggregator`).

    Returns
    -------
    DataFrame
        ``open_time`` (ns), ``open``, ``high``, ``low``, ``close``, ``volume``,
        one row per interval from the first trade's to the last trade's,
        trade-less intervals flat at the previous close with volume 0.
    """
    step = interval_ns(interval)
    frame = pd.DataFrame({"bucket": ts - ts % step, "price": prices, "quantity": quantities})
    grouped = frame.groupby("bucket")
    bars = pd.DataFrame(
        {
            "open": grouped["price"].first(),
            "high": grouped["price"].max(),
            "low": grouped["price"].min(),
            "close": grouped["price"].last(),
            "volume": grouped["quantity"].sum(),
        }
    )
    full = np.arange(bars.index.min(), bars.index.max() + step, step)
    bars = bars.reindex(full)
    bars["close"] = bars["close"].ffill()
    for name in ("open", "high", "low"):
        bars[name] = bars[name].fillna(bars["close"])
    bars["volume"] = bars["volume"].fillna(0.0)
    return bars.rename_axis("open_time").reset_index()


def resample_ohlcv(frame: pd.DataFrame, source_ms: int, target_ms: int) -> pd.DataFrame:
    """Aggregate klines into klines of a longer interval, aligned to the epoch as Binance's are.

    A target bar is built only from a complete set of source bars (open of the
    first, highest high, lowest low, close of the last, summed volume); a
    bucket with a source bar missing is left out, so it shows as a gap rather
    than as a bar that never traded what it says.

    Parameters
    ----------
    frame
        ``open_time_ms, open, high, low, close, volume`` rows in time order.
    source_ms, target_ms
        The two intervals in ms; ``target_ms`` a multiple of ``source_ms``.

    Returns
    -------
    DataFrame
        The same columns, one row per complete target interval.
    """
    if target_ms % source_ms != 0:
        raise ValueError(f"cannot resample {source_ms} ms bars into {target_ms} ms bars")
    per_bucket = target_ms // source_ms
    opens = frame["open_time_ms"].to_numpy(np.int64)
    bucket = opens - opens % target_ms
    grouped = frame.assign(bucket=bucket).groupby("bucket", sort=True)
    bars = pd.DataFrame(
        {
            "open_time_ms": grouped["open_time_ms"].first().index.to_numpy(np.int64),
            "open": grouped["open"].first().to_numpy(),
            "high": grouped["high"].max().to_numpy(),
            "low": grouped["low"].min().to_numpy(),
            "close": grouped["close"].last().to_numpy(),
            "volume": grouped["volume"].sum().to_numpy(),
        }
    )
    complete = grouped["open_time_ms"].count().to_numpy() == per_bucket
    return bars[complete].reset_index(drop=True)
