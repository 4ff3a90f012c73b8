"""Binance's recent market over REST, cached on disk in keel's data format: what the backtest gate runs on live.

:class:`MarketHistory` keeps, in one folder, the closed klines of each
symbol (``ohlcv/{SYMBOL}_{interval}.csv.gz``) and their funding settlements
(``funding/funding.csv.gz``), the files ``data/SOURCES.md`` describes, so a
:class:`~keel.market_data.feeds.RecordedBarFeed` (and so a backtest) reads
them as it reads the bundled recording. :meth:`MarketHistory.update` brings
a window up to date: it fetches only what the cache does not hold yet (the
bars and settlements after the last fetched ones; the whole window when the
cache starts later than the window), and drops what lies before the window.
What each symbol was fetched for is kept in ``coverage.json`` beside the
files. Values are written as Binance sent them (prices as their shortest
float text), so the backtest of cached bars equals the backtest of the same
bars in any other keel file.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from keel.api.binance.klines import FundingSettlement, fetch_funding_rates, fetch_kline_window
from keel.api.binance.rest import RateLimiter
from keel.core.clock import NANOS_PER_MILLI
from keel.market_data.archive import write_gzip_csv
from keel.market_data.feeds import INTERVAL_MS
from keel.market_data.loaders import load_funding, load_ohlcv

BARS_FOLDER = "ohlcv"
FUNDING_FILE = "funding/funding.csv.gz"
COVERAGE_FILE = "coverage.json"
_OHLCV_HEADER = ("open_time_ms", "open", "high", "low", "close", "volume")
_FUNDING_HEADER = ("symbol", "time_ms", "funding_rate", "mark_price")

Row = tuple[int, float, float, float, float, float]
"""A bar: open time (ms), open, high, low, close, volume."""

SessionFactory = Callable[[], aiohttp.ClientSession]


@dataclass(frozen=True, slots=True)
class HistoryUpdate:
    """What one :meth:`MarketHistory.update` fetched: requests sent, bars and settlements added."""

    requests: int
    bars: int
    settlements: int


class MarketHistory:
    """Binance's klines and funding settlements of recent windows, cached in keel's data format.

    Parameters
    ----------
    rest_url
        Binance's REST base URL (or a local Binance).
    folder
        The cache folder (created when missing).
    symbols, interval
        What to keep: the run's symbols and bar interval.
    limiter
        Paces the requests by Binance's request weight (None: not paced).
    session_factory
        Opens the HTTP session of an update.
    """

    def __init__(
        self,
        rest_url: str,
        folder: Path,
        symbols: Sequence[str],
        interval: str,
        *,
        limiter: RateLimiter | None = None,
        session_factory: SessionFactory = aiohttp.ClientSession,
    ) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"bar interval must be one of {', '.join(INTERVAL_MS)}, got {interval!r}")
        self.rest_url = rest_url
        self.folder = folder
        self.symbols = tuple(symbols)
        self.interval = interval
        self.limiter = limiter
        self.session_factory = session_factory
        self.requests = 0

    def __repr__(self) -> str:
        return f"MarketHistory(rest_url={self.rest_url!r}, folder={str(self.folder)!r}, interval={self.interval!r})"

    @property
    def funding_path(self) -> Path:
        """Return the cached funding file."""
        return self.folder / FUNDING_FILE

    def bars_path(self, symbol: str) -> Path:
        """Return the cached bar file of ``symbol``."""
        return self.folder / BARS_FOLDER / f"{symbol}_{self.interval}.csv.gz"

    def refresh(self, start_ns: int, end_ns: int) -> HistoryUpdate:
        """Run :meth:`update` on an event loop of its own (from a thread without one, e.g. a worker)."""
        return asyncio.run(self.update(start_ns, end_ns))

    async def update(self, start_ns: int, end_ns: int) -> HistoryUpdate:
        """Bring the cache up to date for the window ``[start_ns, end_ns)``; fetch only what it lacks.

        Raises
        ------
        aiohttp.ClientError, OSError, TimeoutError
            When Binance cannot be reached or answers with an error (the cache is left as it was).
        ValueError
            For a funding settlement Binance sent without its time or rate.
        """
        start_ms, end_ms = start_ns // NANOS_PER_MILLI, end_ns // NANOS_PER_MILLI
        coverage = self._coverage()
        interval_ms = INTERVAL_MS[self.interval]
        bars: dict[str, list[Row]] = {}
        settlements: dict[str, list[FundingSettlement]] = {}
        requests = 0
        async with self.session_factory() as session:
            for symbol in self.symbols:
                covered = coverage.get(symbol)
                after = start_ms if covered is None or covered[0] > start_ms or covered[1] < start_ms else covered[1]
                # From the kline still open at the last update's end (it was left out then).
                opened = after // interval_ms * interval_ms
                history = await fetch_kline_window(
                    session, self.rest_url, symbol, self.interval, opened, end_ms, limiter=self.limiter
                )
                bars[symbol] = [
                    (b.open_time // NANOS_PER_MILLI, b.open, b.high, b.low, b.close, b.volume) for b in history.bars
                ]
                settlements[symbol] = await fetch_funding_rates(
                    session, self.rest_url, symbol, after, end_ms, limiter=self.limiter
                )
                requests += history.requests + 1
                coverage[symbol] = (start_ms if covered is None or after == start_ms else covered[0], end_ms)
        self._write_bars(bars, start_ms)
        self._write_funding(settlements, start_ms)
        self._write_coverage(coverage, start_ms)
        self.requests += requests
        return HistoryUpdate(requests, sum(map(len, bars.values())), sum(map(len, settlements.values())))

    def _coverage(self) -> dict[str, tuple[int, int]]:
        path = self.folder / COVERAGE_FILE
        if not path.is_file():
            return {}
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("interval") != self.interval:
            return {}
        return {symbol: (int(span[0]), int(span[1])) for symbol, span in document.get("symbols", {}).items()}

    def _write_coverage(self, coverage: dict[str, tuple[int, int]], start_ms: int) -> None:
        spans = {symbol: [max(first, start_ms), last] for symbol, (first, last) in sorted(coverage.items())}
        document = {"rest_url": self.rest_url, "interval": self.interval, "symbols": spans}
        path = self.folder / COVERAGE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        part.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        part.replace(path)

    def _write_bars(self, fetched: dict[str, list[Row]], start_ms: int) -> None:
        for symbol, rows in fetched.items():
            path = self.bars_path(symbol)
            kept: dict[int, Row] = {}
            if path.is_file():
                frame = load_ohlcv(path, symbol=symbol).frame
                columns = [frame[name].tolist() for name in _OHLCV_HEADER]
                kept = {int(row[0]): (int(row[0]), *row[1:]) for row in zip(*columns, strict=True)}
            kept.update((row[0], row) for row in rows)
            ordered = [kept[opened] for opened in sorted(kept) if opened >= start_ms]
            write_gzip_csv(path, _OHLCV_HEADER, [(row[0], *map(repr, row[1:])) for row in ordered])

    def _write_funding(self, fetched: dict[str, list[FundingSettlement]], start_ms: int) -> None:
        kept: dict[tuple[str, int], tuple[str, int, str, str]] = {}
        if self.funding_path.is_file():
            frame = load_funding(self.funding_path).frame
            for symbol, time_ms, rate, mark in zip(
                frame["symbol"], frame["time_ms"], frame["funding_rate"], frame["mark_price"], strict=True
            ):
                mark_text = "" if mark is None or (isinstance(mark, float) and math.isnan(mark)) else repr(float(mark))
                kept[(str(symbol), int(time_ms))] = (str(symbol), int(time_ms), repr(float(rate)), mark_text)
        for settlements in fetched.values():
            kept.update(((s.symbol, s.time_ms), (s.symbol, s.time_ms, s.rate, s.mark_price)) for s in settlements)
        rows = [kept[key] for key in sorted(kept, key=lambda key: (key[1], key[0])) if key[1] >= start_ms]
        write_gzip_csv(self.funding_path, _FUNDING_HEADER, rows)
