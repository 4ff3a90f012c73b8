"""Feeds: recorded market data merged into one time-ordered stream of events.

:class:`RecordedBarFeed` reads the bundled 1m/1h bar files of several symbols
and the funding file, validates them with :mod:`keel.market_data.loaders`
(bad rows dropped and reported, gaps reported, never filled) and yields
``BarClosed`` and ``FundingRateUpdated`` events ordered by exchange time. Ties
are broken deterministically: bars before funding at the same instant, then
by the symbol's position in the symbol list.

:class:`RecordedSessionFeed` replays a recorded order-book session: the depth
snapshot and diffs rebuilt into a local :class:`~keel.market_data.order_book.OrderBook`
(``BookUpdated`` after each applied diff event), the ``bookTicker`` stream
(``BookTickerUpdated``), the trade tape (``TradeTick``) and optionally the 1s
mark-price stream (``MarkPriceUpdated``). :class:`MergedFeed` merges any
feeds (several symbols, bars and sessions) by exchange time.

A backtest drains a feed as fast as it can; :func:`paced` replays one at
wall-clock time times a speed factor (paper mode).

Parsing and validating a month of bars of ten symbols takes about a second;
a process that builds many feeds over the same files (a tuning worker running
hundreds of backtests) installs a :class:`PreparedDataStore` with
:func:`use_prepared_data`, and the feeds then ask it for each file's prepared
arrays instead of reading the file again. :class:`RecentPreparedFiles` is
such a store within one process: the backtest engine keeps one, so the
backtests of a notebook or a script read each file once.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import numpy as np

from keel.core.clock import NANOS_PER_MILLI, LiveClock
from keel.core.errors import ConfigurationError, MalformedDataError
from keel.core.intervals import INTERVAL_MS
from keel.core.messages import (
    BookTickerUpdated,
    FundingRateUpdated,
    MarketDataEvent,
    MarkPriceUpdated,
    TradeTick,
)
from keel.core.orders import OrderSide
from keel.market_data.bars import resample_ohlcv
from keel.market_data.loaders import LoadReport, load_funding, load_ohlcv
from keel.market_data.recorded_events import BAR, FUNDING, merged_events
from keel.market_data.sessions import load_session


@dataclass(frozen=True, slots=True)
class PreparedFile:
    """One data file parsed, validated (and resampled) into column arrays, with its load report."""

    arrays: dict[str, np.ndarray]
    report: LoadReport


class PreparedDataStore(Protocol):
    """Gives the prepared arrays of a data file, preparing them only when it has not got them."""

    def prepared(self, path: Path, variant: str, prepare: Callable[[], PreparedFile]) -> PreparedFile:
        """Return the prepared ``variant`` of the file at ``path`` (``prepare()`` builds it)."""
        ...


_STORE: ContextVar[PreparedDataStore | None] = ContextVar("keel_prepared_data", default=None)


@contextmanager
def use_prepared_data(store: PreparedDataStore | None) -> Iterator[None]:
    """Let the feeds built inside the block take their files' arrays from ``store``."""
    token = _STORE.set(store)
    try:
        yield
    finally:
        _STORE.reset(token)


def installed_prepared_data() -> PreparedDataStore | None:
    """Return the store that feeds built now take their files from (None: they parse every file)."""
    return _STORE.get()


class RecentPreparedFiles:
    """Prepared files held in this process for the next feed over the same files (a :class:`PreparedDataStore`).

    A file is known by its resolved path, inode, size and modification and
    change times, so a file written or replaced since is parsed again. The least recently used files go
    first once the held arrays pass ``max_bytes``. The arrays are read-only:
    every feed over the file shares them.

    Parameters
    ----------
    max_bytes
        Array bytes held at most (a month of 1m bars of one symbol is about 2 MB).
    """

    def __init__(self, max_bytes: int = 128 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._held: OrderedDict[tuple[str, int, int, int, int, str], PreparedFile] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.files_parsed = 0
        self.files_reused = 0

    def prepared(self, path: Path, variant: str, prepare: Callable[[], PreparedFile]) -> PreparedFile:
        """Return the prepared ``variant`` of the file at ``path``, parsing it unless it is held unchanged."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, variant)
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                self._held.move_to_end(key)
                self.files_reused += 1
                return held
            held = prepare()
            self.files_parsed += 1
            for array in held.arrays.values():
                array.setflags(write=False)
            self._held[key] = held
            self._bytes += _array_bytes(held)
            while self._bytes > self.max_bytes and len(self._held) > 1:
                _, dropped = self._held.popitem(last=False)
                self._bytes -= _array_bytes(dropped)
            return held


def _array_bytes(prepared: PreparedFile) -> int:
    return sum(array.nbytes for array in prepared.arrays.values())


def _prepared(path: Path, variant: str, prepare: Callable[[], PreparedFile]) -> PreparedFile:
    store = _STORE.get()
    return prepare() if store is None else store.prepared(path, variant, prepare)


class DataNotCoveredError(MalformedDataError):
    """The requested dates lie outside the recorded data: download the missing data (the message says how)."""

    def __init__(
        self,
        symbols: Sequence[str],
        interval: str,
        folder: Path,
        recorded: Sequence[tuple[int, int]],
        start_ns: int | None,
        end_ns: int | None,
    ) -> None:
        start = _day(start_ns) if start_ns is not None else "the start"
        end = _day(end_ns) if end_ns is not None else "the end"
        covered = (
            f"the files there cover {_day(min(r[0] for r in recorded))} to {_day(max(r[1] for r in recorded))}"
            if recorded
            else "the files there hold no bars"
        )
        # The months to fetch: from the start's to the end's (the end is exclusive). An open bound asks
        # for no particular month: the other bound's month stands for it; with neither, the user fills them in.
        first = _month(start_ns) if start_ns is not None else None
        last = _month(end_ns - 1) if end_ns is not None else None
        first, last = first or last or "YYYY-MM", last or first or "YYYY-MM"
        target = f"data/binance-{first}"
        command = (
            f"keel data download --symbols {','.join(symbols)} --interval {interval} --start {first} "
            f"--end {last} --to {target}"
        )
        super().__init__(
            f"no {interval} bars of {', '.join(symbols)} from {start} to {end} in {folder.resolve()}: {covered}. "
            f"Fetch the missing data with `{command}` and run with --config {target}/data.yaml"
        )
        self.command = command


def _check_spacing(path: Path, open_ms: np.ndarray, interval: str, resampling: bool) -> None:
    """Raise unless the bars of a file are ``interval`` apart (the most common spacing: gaps are allowed).

    Raises
    ------
    ConfigurationError
        Naming the file, the spacing found and the interval configured.
    """
    if len(open_ms) < 2:
        return
    spacings, counts = np.unique(np.diff(open_ms), return_counts=True)
    found = int(spacings[np.argmax(counts)])
    if found == INTERVAL_MS[interval]:
        return
    names = {ms: name for name, ms in INTERVAL_MS.items()}
    found_name = names.get(found, f"{found / 60_000:g} minutes")
    key = "data.resample_from" if resampling else "data.bar_interval"
    raise ConfigurationError(
        str(path.resolve()),
        key,
        f"the bars in this file are {found_name} apart, not {interval}: set {key} to {found_name} "
        "(or point data.bars at files of the interval you want)",
    )


def _day(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _month(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).strftime("%Y-%m")


def prepared_funding(path: Path) -> PreparedFile:
    """Return a funding-rate file's columns (``symbol``, ``time_ms``, ``funding_rate``, ``mark_price``).

    From the installed :class:`PreparedDataStore` when there is one (parsed
    once per process), else parsed now.
    """
    return _prepared(path, "funding", lambda: _prepare_funding(path))


def _prepare_funding(path: Path) -> PreparedFile:
    loaded = load_funding(path)
    frame = loaded.frame
    arrays = {
        "symbol": frame["symbol"].to_numpy(str),
        "time_ms": frame["time_ms"].to_numpy(np.int64),
        "funding_rate": frame["funding_rate"].to_numpy(np.float64),
        "mark_price": frame["mark_price"].to_numpy(np.float64),
    }
    return PreparedFile(arrays, loaded.report)


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
        Bar interval, any of :data:`keel.core.intervals.INTERVAL_MS`.
    funding_file
        The funding-rate file (multi-symbol), or None for no funding events.
    start_ns, end_ns
        Keep bars that open at or after ``start_ns`` and close at or before
        ``end_ns`` (None: no bound); funding events inside the kept bars' span.
    resample_from
        Read ``{SYMBOL}_{resample_from}.csv.gz`` files of a finer interval and
        aggregate them into ``interval`` bars (None: files of ``interval``).

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
        resample_from: str | None = None,
    ) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"bar interval must be one of {', '.join(INTERVAL_MS)}, got {interval!r}")
        if resample_from is not None and (
            resample_from not in INTERVAL_MS or INTERVAL_MS[interval] % INTERVAL_MS[resample_from] != 0
        ):
            raise ValueError(f"cannot resample {resample_from!r} bars into {interval!r} bars: not a finer divisor")
        self.resample_from = resample_from
        self._recorded: list[tuple[int, int]] = []
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
            raise DataNotCoveredError(self.symbols, interval, Path(bars_dir), self._recorded, start_ns, end_ns)
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
        source = self.resample_from or self.interval
        path = folder / f"{symbol}_{source}.csv.gz"
        if not path.exists():
            raise MalformedDataError(_missing_bar_file(folder, symbol, source))
        loaded = _prepared(path, f"bars:{symbol}:{source}:{self.interval}", lambda: self._prepare_bars(path, symbol))
        self.reports.append(loaded.report)
        columns = loaded.arrays
        open_ns = columns["open_ns"]
        if len(open_ns):
            self._recorded.append((int(open_ns[0]), int(open_ns[-1]) + interval_ns))
        keep = np.ones(len(open_ns), dtype=bool)
        if start_ns is not None:
            keep &= open_ns >= start_ns
        if end_ns is not None:
            keep &= open_ns + interval_ns <= end_ns
        return {
            "open_ns": open_ns[keep],
            "close_ns": open_ns[keep] + interval_ns,
            "symbol": np.full(int(keep.sum()), index, dtype=np.int64),
            **{name: columns[name][keep] for name in ("open", "high", "low", "close", "volume")},
        }

    def _prepare_bars(self, path: Path, symbol: str) -> PreparedFile:
        source = self.resample_from or self.interval
        loaded = load_ohlcv(path, symbol=symbol)
        frame = loaded.frame
        _check_spacing(path, frame["open_time_ms"].to_numpy(np.int64), source, self.resample_from is not None)
        if self.resample_from is not None:
            frame = resample_ohlcv(frame, INTERVAL_MS[self.resample_from], INTERVAL_MS[self.interval])
        arrays = {"open_ns": frame["open_time_ms"].to_numpy(np.int64) * NANOS_PER_MILLI}
        arrays.update({name: frame[name].to_numpy(np.float64) for name in ("open", "high", "low", "close", "volume")})
        return PreparedFile(arrays, loaded.report)

    def _load_funding(self, path: str | Path, first_ns: int, last_ns: int) -> list[tuple[int, int, float, float]]:
        loaded = prepared_funding(Path(path))
        self.reports.append(loaded.report)
        columns = loaded.arrays
        index = {symbol: i for i, symbol in enumerate(self.symbols)}
        rows = []
        for symbol, time_ms, rate, mark in zip(
            columns["symbol"].tolist(),
            columns["time_ms"].tolist(),
            columns["funding_rate"].tolist(),
            columns["mark_price"].tolist(),
            strict=True,
        ):
            ts = int(time_ms) * NANOS_PER_MILLI
            if symbol in index and first_ns <= ts <= last_ns:
                rows.append((ts, index[symbol], float(rate), float(mark)))
        return rows

    def symbol_bars(self, symbol: str) -> tuple[np.ndarray, np.ndarray]:
        """Return one symbol's bars in the order the feed yields them: close times (ns) and OHLCV rows.

        Raises
        ------
        KeyError
            If the feed does not replay ``symbol``.
        """
        if symbol not in self.symbols:
            raise KeyError(symbol)
        bars = self._bars
        rows = np.flatnonzero(bars["symbol"] == self.symbols.index(symbol))
        rows = rows[np.argsort(bars["close_ns"][rows], kind="stable")]
        ohlcv = np.column_stack([bars[name][rows] for name in ("open", "high", "low", "close", "volume")])
        return bars["close_ns"][rows], ohlcv

    def __iter__(self) -> Iterator[MarketDataEvent]:
        """Return the events, in exchange-time order."""
        bars = self._bars
        funding_ts = np.array([row[0] for row in self._funding], dtype=np.int64)
        funding_symbol = np.array([row[1] for row in self._funding], dtype=np.int64)
        times = np.concatenate([bars["close_ns"], funding_ts])
        kinds = np.concatenate([np.full(len(bars["close_ns"]), BAR), np.full(len(funding_ts), FUNDING)])
        symbols = np.concatenate([bars["symbol"], funding_symbol])
        positions = np.concatenate([np.arange(len(bars["close_ns"])), np.arange(len(funding_ts))])
        order = np.lexsort((symbols, kinds, times))
        columns = [
            bars[name].tolist() for name in ("open_ns", "close_ns", "open", "high", "low", "close", "volume", "symbol")
        ]
        funding = self._funding
        return merged_events(
            kinds[order].tolist(),
            positions[order].tolist(),
            columns,
            self.symbols,
            self.interval,
            lambda position: self._funding_event(funding[position]),
        )

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


_DIFF, _SNAPSHOT, _TICKER, _TRADE, _MARK = 0, 1, 2, 3, 4
# At one exchange time: book events (snapshot, diffs, tickers) in update-id
# order, then trades by trade id, then mark prices.
_RANK = {_SNAPSHOT: 0, _DIFF: 0, _TICKER: 0, _TRADE: 1, _MARK: 2}


@dataclass(frozen=True, slots=True)
class SessionFeedStatistics:
    """What a replay of a recorded session did (counts of events by outcome)."""

    book_events: int
    diffs_applied: int
    diffs_dropped: int
    gaps: int
    crossed: int
    malformed_diff_events: int
    buffered: int
    book_tickers: int
    trades: int
    mark_prices: int


class RecordedSessionFeed:
    """Replay a recorded order-book session, its trades and mark prices in exchange-time order.

    Parameters
    ----------
    session_dir
        A session folder of ``data/SOURCES.md`` (``snapshot.csv.gz``,
        ``depth_diff.csv.gz``, ``bbo.csv.gz``), named
        ``binance_{usdm|spot}_{SYMBOL}_{date}``.
    trades_file
        The session's trade tape, or None for no trades.
    depth
        Levels per side in each ``BookUpdated``.
    mark_price_file
        A 1s mark-price stream file to replay as ``MarkPriceUpdated``, or None.
    tick_size
        The price grid; inferred from the recorded prices when None.

    Notes
    -----
    The snapshot is applied at its own exchange time; diff events before it
    are buffered by the book (as a live client does) and replayed onto it, so
    one ``BookUpdated`` follows the snapshot when a buffered event synced the
    book. After that, one ``BookUpdated`` follows each applied diff event. A
    crossed book is counted and not published; a malformed event or a broken
    update-id chain leaves the book waiting for a snapshot (a recording has
    only one), so nothing more is published for it. Event times are the
    exchange's transaction times (``T``, else ``E``); ``ts_init`` equals
    ``ts_event``.
    """

    def __init__(
        self,
        session_dir: Path,
        trades_file: Path | None = None,
        depth: int = 20,
        *,
        mark_price_file: Path | None = None,
        tick_size: Decimal | None = None,
    ) -> None:
        if depth < 1:
            raise ValueError(f"book depth must be >= 1, got {depth}")
        self.session = load_session(session_dir, trades_file, mark_price_file, tick_size)
        self.symbol = self.session.symbol
        self.depth = depth
        self.reports = self.session.reports
        # Imported here: the order book's compiled kernels load numba, which bar-only runs never need.
        from keel.market_data.order_book import OrderBook

        self.book = OrderBook(self.symbol, self.session.tick_size)
        self._counts = dict.fromkeys(("book_events", "crossed", "malformed", "tickers", "trades", "marks"), 0)
        self._kinds, self._positions, self._times = self._schedule()

    @property
    def first_ns(self) -> int:
        """Return the exchange time of the first event."""
        return int(self._times[0]) if self._times.size else self.session.snapshot.time_ns

    @property
    def last_ns(self) -> int:
        """Return the exchange time of the last event."""
        return int(self._times[-1]) if self._times.size else self.session.snapshot.time_ns

    @property
    def statistics(self) -> SessionFeedStatistics:
        """Return the counts of the current (or last) replay."""
        counts, book = self._counts, self.book
        return SessionFeedStatistics(
            book_events=counts["book_events"],
            diffs_applied=book.applied,
            diffs_dropped=book.dropped,
            gaps=book.gaps,
            crossed=counts["crossed"],
            malformed_diff_events=counts["malformed"],
            buffered=book.buffered,
            book_tickers=counts["tickers"],
            trades=counts["trades"],
            mark_prices=counts["marks"],
        )

    def _schedule(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        session = self.session
        parts = [
            (_DIFF, session.diffs.time_ns, session.diffs.last_update_id),
            (_SNAPSHOT, np.array([session.snapshot.time_ns]), np.array([session.snapshot.last_update_id])),
            (_TICKER, session.book_ticker["time_ns"].to_numpy(), session.book_ticker["update_id"].to_numpy()),
        ]
        if session.trades is not None:
            trade_ids = session.trades[session.trades.columns[4]].to_numpy(dtype=np.int64)
            parts.append((_TRADE, session.trades["time_ns"].to_numpy(), trade_ids))
        if session.mark_prices is not None:
            times = session.mark_prices["time_ns"].to_numpy()
            parts.append((_MARK, times, np.arange(len(times))))
        kinds = np.concatenate([np.full(len(times), kind) for kind, times, _ in parts])
        ranks = np.array([_RANK[kind] for kind in kinds.tolist()], dtype=np.int64)
        times = np.concatenate([np.asarray(times, dtype=np.int64) for _, times, _ in parts])
        sequence = np.concatenate([np.asarray(seq, dtype=np.int64) for _, _, seq in parts])
        positions = np.concatenate([np.arange(len(times)) for _, times, _ in parts])
        # Snapshot before a diff of the same update id at the same time.
        kind_order = np.where(kinds == _SNAPSHOT, -1, kinds)
        order = np.lexsort((kind_order, sequence, ranks, times))
        return kinds[order], positions[order], times[order]

    def __iter__(self) -> Iterator[MarketDataEvent]:
        """Yield the session's events in exchange-time order (a fresh book each time)."""
        from keel.market_data.order_book import DiffResult, OrderBook

        session = self.session
        self.book = book = OrderBook(self.symbol, session.tick_size)
        counts = self._counts = dict.fromkeys(self._counts, 0)
        diffs = session.diffs
        first, last = diffs.first_update_id.tolist(), diffs.last_update_id.tolist()
        previous = diffs.previous_update_id.tolist() if session.has_previous_update_id else None
        bid_start, ask_start = diffs.bid_start.tolist(), diffs.ask_start.tolist()
        malformed = diffs.malformed.tolist()
        ticks, quantities = diffs.ticks, diffs.quantities
        diff_times = diffs.time_ns.tolist()
        applied = DiffResult.APPLIED
        depth, symbol = self.depth, self.symbol
        tickers = self._ticker_rows()
        trades = self._trade_rows()
        marks = self._mark_rows()
        for kind, position in zip(self._kinds.tolist(), self._positions.tolist(), strict=True):
            if kind == _DIFF:
                if malformed[position]:
                    counts["malformed"] += 1
                    continue
                bids, asks, end = bid_start[position], ask_start[position], bid_start[position + 1]
                result = book.apply_diff_ticks(
                    first[position],
                    last[position],
                    None if previous is None else previous[position],
                    ticks[bids:asks],
                    quantities[bids:asks],
                    ticks[asks:end],
                    quantities[asks:end],
                )
                if result is applied:
                    ts = diff_times[position]
                    if book.is_crossed():
                        counts["crossed"] += 1
                    else:
                        counts["book_events"] += 1
                        yield book.to_event(ts, ts, depth)
            elif kind == _TICKER:
                counts["tickers"] += 1
                ts, update_id, bid, bid_quantity, ask, ask_quantity = tickers[position]
                yield BookTickerUpdated(
                    symbol=symbol,
                    update_id=update_id,
                    bid_price=bid,
                    bid_quantity=bid_quantity,
                    ask_price=ask,
                    ask_quantity=ask_quantity,
                    ts_event=ts,
                    ts_init=ts,
                )
            elif kind == _TRADE:
                counts["trades"] += 1
                ts, trade_id, price, quantity, buyer_is_maker = trades[position]
                yield TradeTick(
                    symbol=symbol,
                    trade_id=str(trade_id),
                    price=price,
                    quantity=quantity,
                    aggressor_side=OrderSide.SELL if buyer_is_maker else OrderSide.BUY,
                    ts_event=ts,
                    ts_init=ts,
                )
            elif kind == _MARK:
                counts["marks"] += 1
                yield self._mark_event(marks[position])
            else:
                snapshot = session.snapshot
                book.apply_snapshot_ticks(
                    snapshot.last_update_id,
                    snapshot.bid_ticks,
                    snapshot.bid_quantities,
                    snapshot.ask_ticks,
                    snapshot.ask_quantities,
                )
                if book.is_synced and not book.is_crossed():
                    counts["book_events"] += 1
                    yield book.to_event(snapshot.time_ns, snapshot.time_ns, depth)

    def _ticker_rows(self) -> list[tuple[int, int, float, float, float, float]]:
        frame = self.session.book_ticker
        columns = ("time_ns", "update_id", "bid_price", "bid_qty", "ask_price", "ask_qty")
        return list(zip(*(frame[name].tolist() for name in columns), strict=True))

    def _trade_rows(self) -> list[tuple[int, int, float, float, bool]]:
        frame = self.session.trades
        if frame is None:
            return []
        columns = ("time_ns", frame.columns[4], "price", "qty", "is_buyer_maker")
        return list(zip(*(frame[name].tolist() for name in columns), strict=True))

    def _mark_rows(self) -> list[tuple[int, float, float, float, float, int]]:
        frame = self.session.mark_prices
        if frame is None:
            return []
        columns = ("time_ns", "mark_price", "index_price", "est_settle_price", "funding_rate", "next_funding_time_ms")
        return list(zip(*(frame[name].tolist() for name in columns), strict=True))

    def _mark_event(self, row: tuple[int, float, float, float, float, int]) -> MarkPriceUpdated:
        ts, mark, index, settle, rate, next_funding_ms = row
        return MarkPriceUpdated(
            symbol=self.symbol,
            mark_price=Decimal(repr(mark)),
            index_price=Decimal(repr(index)),
            estimated_settle_price=Decimal(repr(settle)),
            funding_rate=Decimal(repr(rate)),
            next_funding_time=next_funding_ms * NANOS_PER_MILLI,
            ts_event=ts,
            ts_init=ts,
        )


class MergedFeed:
    """Merge several feeds (each in time order) into one stream ordered by exchange time.

    Parameters
    ----------
    feeds
        Feeds or any iterables of market-data events, each already ordered by
        ``ts_event``. Ties go to the feed listed first, then keep each feed's
        own order, so a merge is deterministic.
    """

    def __init__(self, feeds: Sequence[Iterable[MarketDataEvent]]) -> None:
        if not feeds:
            raise ValueError("a merged feed needs at least one feed")
        self.feeds = tuple(feeds)

    def __iter__(self) -> Iterator[MarketDataEvent]:
        """Yield every feed's events in (ts_event, feed position) order."""
        streams = [((event.ts_event, index, event) for event in feed) for index, feed in enumerate(self.feeds)]
        for _, _, event in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
            yield event


async def paced(events: Iterable[MarketDataEvent], clock: LiveClock) -> AsyncIterator[MarketDataEvent]:
    """Yield events when ``clock`` reaches their ``ts_event`` (paper mode's wall clock times speed).

    Parameters
    ----------
    events
        A time-ordered feed.
    clock
        A live clock started at (or before) the first event's time, running
        ``speed`` times faster than the wall clock.
    """
    for event in events:
        delay = clock.wall_seconds_until(event.ts_event)
        if delay > 0:
            await asyncio.sleep(delay)
        yield event


def _missing_bar_file(folder: Path, symbol: str, interval: str) -> str:
    """Say that ``folder`` has no bar file of ``symbol`` at ``interval``, and what it has instead."""
    held = sorted(folder.glob("*_*.csv.gz")) if folder.is_dir() else []
    by_interval: dict[str, list[str]] = {}
    for file in held:
        name, _, rest = file.name.partition("_")
        by_interval.setdefault(rest.removesuffix(".csv.gz"), []).append(name)
    message = f"{(folder / f'{symbol}_{interval}.csv.gz').resolve()}: no {interval} bar file for {symbol}"
    if not folder.is_dir():
        return f"{message}; there is no folder {folder.resolve()}"
    if interval in by_interval:
        return (
            f"{message}; the folder has {interval} bars of {', '.join(by_interval[interval])}: "
            "set data.symbols (or --symbols) to those, or add the file (keel data download or keel data import)"
        )
    if by_interval:
        return (
            f"{message}; the folder has no {interval} bar files, only {', '.join(sorted(by_interval))} "
            f"(data.resample_from builds {interval} bars from a finer interval)"
        )
    return f"{message}; the folder holds no bar files"
