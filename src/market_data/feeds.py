"""Feeds: recorded market data merged into one time-ordered stream of events.

:class:`RecordedBarFeed` reads the bundled 1m/1h bar files of several symbols
and the funding file, validates them with :mod:`keel.market_data.loaders`
(bad rows dropped and reported, gaps reported, never filled) and yields
``BarClosed`` and ``FundingRateUpdated`` events ordered by exchange time. Ties
are broken deterministically: bars before funding at the same instant, then
by the symbol's position in the symbol list. A backtest drains the stream as
fast as it can; paper mode paces it on a :class:`~keel.core.clock.LiveClock`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from keel.core.clock import NANOS_PER_MILLI
from keel.core.errors import MalformedDataError
from keel.core.messages import BarClosed, FundingRateUpdated, MarketDataEvent
from keel.market_data.loaders import LoadReport, load_funding, load_ohlcv

INTERVAL_MS = {"1m": 60_000, "1h": 3_600_000}

_BAR, _FUNDING = 0, 1


@dataclass(frozen=True, slots=True)
class FeedSummary:
    """What a feed will replay: counts and the time span (ns)."""

    symbols: tuple[str, ...]
    bars: int
    funding_events: int
    first_ns: int
    last_ns: int


class RecordedBarFeed:
    """Replay recorded bars and funding rates of several symbols in time order.

    Parameters
    ----------
    bars_dir
        Folder with one ``{SYMBOL}_{interval}.csv.gz`` file per symbol.
    symbols
        Symbols to replay, in tie-break order.
    interval
        Bar interval, ``"1m"`` or ``"1h"``.
    funding_file
        The funding-rate file (multi-symbol), or None for no funding events.
    start_ns, end_ns
        Keep bars that open at or after ``start_ns`` and close at or before
        ``end_ns`` (None: no bound); funding events inside the kept bars' span.

    Raises
    ------
    MalformedDataError
        If a symbol's file is missing or unreadable, or nothing is left to replay.
    """

    def __init__(
        self,
        bars_dir: str | Path,
        symbols: Sequence[str],
        interval: str = "1m",
        funding_file: str | Path | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"bar interval must be one of {sorted(INTERVAL_MS)}, got {interval!r}")
        if not symbols:
            raise ValueError("a feed needs at least one symbol")
        self.interval = interval
        self.symbols = tuple(symbols)
        self.reports: list[LoadReport] = []
        interval_ns = INTERVAL_MS[interval] * NANOS_PER_MILLI
        columns = [
            self._load_bars(Path(bars_dir), s, i, interval_ns, start_ns, end_ns) for i, s in enumerate(self.symbols)
        ]
        self._bars = {name: np.concatenate([c[name] for c in columns]) for name in columns[0]}
        if len(self._bars["close_ns"]) == 0:
            raise MalformedDataError(f"no bars of {', '.join(self.symbols)} in {bars_dir} inside the requested dates")
        first = int(self._bars["close_ns"].min()) - interval_ns
        last = int(self._bars["close_ns"].max())
        self._funding = self._load_funding(funding_file, first, last) if funding_file is not None else []
        self.summary = FeedSummary(self.symbols, len(self._bars["close_ns"]), len(self._funding), first, last)

    def _load_bars(
        self,
        folder: Path,
        symbol: str,
        index: int,
        interval_ns: int,
        start_ns: int | None,
        end_ns: int | None,
    ) -> dict[str, np.ndarray]:
        path = folder / f"{symbol}_{self.interval}.csv.gz"
        if not path.exists():
            raise MalformedDataError(f"{path}: no {self.interval} bar file for {symbol}")
        loaded = load_ohlcv(path, symbol=symbol)
        self.reports.append(loaded.report)
        frame = loaded.frame
        open_ns = frame["open_time_ms"].to_numpy(np.int64) * NANOS_PER_MILLI
        keep = np.ones(len(open_ns), dtype=bool)
        if start_ns is not None:
            keep &= open_ns >= start_ns
        if end_ns is not None:
            keep &= open_ns + interval_ns <= end_ns
        return {
            "open_ns": open_ns[keep],
            "close_ns": open_ns[keep] + interval_ns,
            "symbol": np.full(int(keep.sum()), index, dtype=np.int64),
            **{name: frame[name].to_numpy(np.float64)[keep] for name in ("open", "high", "low", "close", "volume")},
        }

    def _load_funding(self, path: str | Path, first_ns: int, last_ns: int) -> list[tuple[int, int, float, float]]:
        loaded = load_funding(path)
        self.reports.append(loaded.report)
        frame = loaded.frame
        index = {symbol: i for i, symbol in enumerate(self.symbols)}
        rows = []
        for symbol, time_ms, rate, mark in zip(
            frame["symbol"],
            frame["time_ms"],
            frame["funding_rate"],
            frame["mark_price"],
            strict=True,
        ):
            ts = int(time_ms) * NANOS_PER_MILLI
            if symbol in index and first_ns <= ts <= last_ns:
                rows.append((ts, index[symbol], float(rate), float(mark)))
        return rows

    def __iter__(self) -> Iterator[MarketDataEvent]:
        """Yield every event in exchange-time order."""
        bars = self._bars
        funding_ts = np.array([row[0] for row in self._funding], dtype=np.int64)
        funding_symbol = np.array([row[1] for row in self._funding], dtype=np.int64)
        times = np.concatenate([bars["close_ns"], funding_ts])
        kinds = np.concatenate([np.full(len(bars["close_ns"]), _BAR), np.full(len(funding_ts), _FUNDING)])
        symbols = np.concatenate([bars["symbol"], funding_symbol])
        positions = np.concatenate([np.arange(len(bars["close_ns"])), np.arange(len(funding_ts))])
        order = np.lexsort((symbols, kinds, times))
        names = self.symbols
        interval = self.interval
        columns = [
            bars[name].tolist()
            for name in (
                "open_ns",
                "close_ns",
                "open",
                "high",
                "low",
                "close",
                "volume",
            )
        ]
        open_ns, close_ns, opens, highs, lows, closes, volumes = columns
        bar_symbols = bars["symbol"].tolist()
        for kind, position in zip(kinds[order].tolist(), positions[order].tolist(), strict=True):
            if kind == _BAR:
                ts = close_ns[position]
                yield BarClosed(
                    symbol=names[bar_symbols[position]],
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
                yield self._funding_event(self._funding[position])

    def _funding_event(self, row: tuple[int, int, float, float]) -> FundingRateUpdated:
        ts, symbol, rate, mark = row
        return FundingRateUpdated(
            symbol=self.symbols[symbol],
            funding_time=ts,
            rate=Decimal(repr(rate)),
            mark_price=None if np.isnan(mark) else Decimal(repr(mark)),
            ts_event=ts,
            ts_init=ts,
        )
