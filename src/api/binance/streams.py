"""The Binance USD-M market-data feed: combined streams, order-book sync, reconnects.

:class:`MarketStreamState` is the synchronous core (no I/O): it takes each
combined-stream message, normalizes it with keel's
:class:`~keel.market_data.normalization.BinanceUsdmNormalizer` and keeps one
:class:`~keel.market_data.order_book.OrderBook` per symbol in sync by
Binance's documented snapshot-plus-diff rules (the book implements them:
events with ``u`` below the snapshot's ``lastUpdateId`` dropped, the first
applied one straddling it, then every ``pu`` equal to the previous ``u``; a
broken chain is a gap, which asks for a new snapshot and is counted).

========================  ==============================================================
``<s>@depth@100ms``       diffs into the local book; ``BookUpdated`` after each applied one
``<s>@aggTrade``          ``TradeTick``
``<s>@bookTicker``        ``BookTickerUpdated``
``<s>@markPrice@1s``      ``MarkPriceUpdated``; ``FundingRateUpdated`` once a funding time passed
``<s>@kline_<interval>``  ``BarClosed`` for closed klines (``x`` true) only
========================  ==============================================================

Binance's mark-price stream carries the funding rate ``r`` that settles at the
next funding time ``T``. When an event's ``T`` moves past the previous one (and
its event time reached it), the previous rate settled at the previous ``T`` at
the mark price last seen: that is the ``FundingRateUpdated`` keel's venue
settles funding with.

:class:`BinanceMarketStream` does the I/O: one WebSocket per group of at most
200 streams on ``{ws_url}/stream?streams=a/b/c``, the REST depth snapshots
(``GET /fapi/v1/depth``), reconnects with full-jitter exponential backoff
after a drop (every book of the connection is resynced: the diffs sent while
it was down are lost), and a proactive make-before-break reconnect before
Binance's 24-hour limit (the new connection opens before the old one closes;
the overlap's repeated messages are dropped by their sequence numbers, so the
books need no resync).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import structlog
import websockets

from keel.api.binance.constants import DEPTH_PATH, RETRY_AFTER_HEADER
from keel.core.messages import BarClosed, FundingRateUpdated, MarketDataEvent, MarkPriceUpdated
from keel.market_data.normalization import BinanceUsdmNormalizer, DepthDiff
from keel.market_data.order_book import BookSyncState, BookUnavailableError, DiffResult, OrderBook

_log = structlog.get_logger("keel.api.binance.streams")

MAX_STREAMS_PER_CONNECTION = 200
# Binance closes every connection after 24 hours; keel replaces it half an hour before.
MAX_CONNECTION_SECONDS = 23.5 * 3600
SNAPSHOT_LIMIT = 1000
# Rejections that are repeats of accepted messages (a reconnect's overlap), not bad data.
_REPEATS = frozenset({"duplicate", "out_of_order"})

Sleep = Callable[[float], Awaitable[None]]
SnapshotFetcher = Callable[[str], Awaitable[bytes]]


def stream_names(symbols: Iterable[str], interval: str = "1m", *, depth: bool = True) -> list[str]:
    """Return the market streams keel subscribes to for ``symbols``, in a stable order.

    Parameters
    ----------
    symbols
        Symbols, e.g. ``BTCUSDT``.
    interval
        The kline interval (keel's bar interval).
    depth
        Whether to include the ``depth@100ms`` diff stream.
    """
    names = []
    for symbol in symbols:
        lower = symbol.lower()
        if depth:
            names.append(f"{lower}@depth@100ms")
        names.extend((f"{lower}@aggTrade", f"{lower}@bookTicker", f"{lower}@markPrice@1s", f"{lower}@kline_{interval}"))
    return names


def connection_groups(streams: Sequence[str], limit: int = MAX_STREAMS_PER_CONNECTION) -> list[tuple[str, ...]]:
    """Split ``streams`` into groups of at most ``limit`` (Binance's per-connection maximum), one per connection.

    Raises
    ------
    ValueError
        If ``limit`` is below 1.
    """
    if limit < 1:
        raise ValueError(f"streams per connection must be >= 1, got {limit}")
    return [tuple(streams[start : start + limit]) for start in range(0, len(streams), limit)]


def combined_stream_url(ws_url: str, streams: Sequence[str]) -> str:
    """Return the combined-stream URL of ``streams`` on ``ws_url``."""
    return f"{ws_url.rstrip('/')}/stream?streams={'/'.join(streams)}"


def symbols_of(streams: Iterable[str]) -> set[str]:
    """Return the (upper-case) symbols a set of stream names covers."""
    return {name.split("@", 1)[0].upper() for name in streams}


@dataclass(slots=True)
class StreamStatistics:
    """Counts of what the market feed did, for health and metrics.

    ``malformed`` counts messages rejected as bad data (not JSON, missing or
    bad fields, off-grid prices, ...); ``repeats`` the ones dropped as repeats
    of accepted messages; ``resyncs`` the snapshots fetched to rebuild a book
    that had been synced (after a gap, a crossed book or a reconnect).
    """

    messages: int = 0
    events: int = 0
    malformed: int = 0
    repeats: int = 0
    gaps: int = 0
    crossed: int = 0
    snapshots: int = 0
    snapshot_failures: int = 0
    resyncs: int = 0
    connections: int = 0
    reconnects: int = 0
    proactive_reconnects: int = 0
    bars: int = 0
    books: int = 0
    funding_events: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counts by name."""
        return asdict(self)


class MarketStreamState:
    """Turns combined-stream messages into keel events, keeping the books in sync (no I/O).

    Parameters
    ----------
    tick_sizes
        Tick size of every symbol (the books' price grid).
    book_depth
        Levels per side in each ``BookUpdated``.
    statistics
        Where the counts go (a fresh :class:`StreamStatistics` when None).

    Attributes
    ----------
    books : dict of OrderBook
        The local book of every symbol.
    wanted_snapshots : set of str
        Symbols whose book waits for a REST snapshot (its diffs are buffered).
    """

    def __init__(
        self, tick_sizes: Mapping[str, Decimal], book_depth: int = 20, statistics: StreamStatistics | None = None
    ) -> None:
        self.normalizer = BinanceUsdmNormalizer(tick_sizes)
        self.books = {symbol: OrderBook(symbol, size) for symbol, size in tick_sizes.items()}
        self.book_depth = book_depth
        self.statistics = statistics or StreamStatistics()
        self.wanted_snapshots: set[str] = set()
        self._was_synced: set[str] = set()
        self._funding: dict[str, MarkPriceUpdated] = {}

    def rejected(self) -> Counter[str]:
        """Return the rejected messages by reason."""
        return self.normalizer.rejected

    def on_message(self, raw: bytes | str, ts_init: int) -> list[MarketDataEvent]:
        """Return the keel events of one combined-stream message (none if it was rejected or is pending)."""
        statistics = self.statistics
        statistics.messages += 1
        rejected = self.normalizer.rejected
        before = rejected.total()
        parsed = self.normalizer.parse(raw, ts_init)
        if parsed is None:
            if rejected.total() != before:
                self._count_rejection(rejected)
            return []
        if isinstance(parsed, DepthDiff):
            return self._on_diff(parsed)
        if isinstance(parsed, MarkPriceUpdated):
            return self._on_mark_price(parsed)
        if parsed.__class__ is BarClosed:
            statistics.bars += 1
        statistics.events += 1
        return [parsed]

    def _count_rejection(self, rejected: Counter[str]) -> None:
        repeats = sum(rejected[reason] for reason in _REPEATS)
        if repeats > self.statistics.repeats:
            self.statistics.repeats = repeats
        else:
            self.statistics.malformed += 1

    def on_snapshot(self, symbol: str, raw: bytes | str, ts_init: int) -> list[MarketDataEvent]:
        """Load a REST depth snapshot into ``symbol``'s book; return its ``BookUpdated`` if that synced it.

        A snapshot that is rejected or older than every buffered diff leaves
        the book waiting: ``symbol`` stays in :attr:`wanted_snapshots`.
        """
        snapshot = self.normalizer.parse_snapshot(raw, symbol, ts_init)
        if snapshot is None:
            self.statistics.malformed += 1
            return []
        self.statistics.snapshots += 1
        if symbol in self._was_synced:
            self.statistics.resyncs += 1
        book = self.books[symbol]
        gaps = book.gaps
        book.apply_snapshot_ticks(
            snapshot.last_update_id,
            snapshot.bid_ticks,
            snapshot.bid_quantities,
            snapshot.ask_ticks,
            snapshot.ask_quantities,
        )
        self.statistics.gaps += book.gaps - gaps
        if book.state is BookSyncState.AWAITING_SNAPSHOT:
            return []
        self.wanted_snapshots.discard(symbol)
        if not book.is_synced:
            return []
        return self._publish(book, snapshot.ts_event, ts_init)

    def _on_diff(self, diff: DepthDiff) -> list[MarketDataEvent]:
        book = self.books[diff.symbol]
        result = book.apply_diff_ticks(
            diff.first_update_id,
            diff.last_update_id,
            diff.previous_update_id,
            diff.bid_ticks,
            diff.bid_quantities,
            diff.ask_ticks,
            diff.ask_quantities,
        )
        if result is DiffResult.APPLIED:
            return self._publish(book, diff.ts_event, diff.ts_init)
        if result is DiffResult.GAP:
            self.statistics.gaps += 1
            _log.warning("depth stream gap: resyncing from a new snapshot", symbol=diff.symbol)
        if result is not DiffResult.DROPPED:
            self.wanted_snapshots.add(diff.symbol)
        return []

    def _publish(self, book: OrderBook, ts_event: int, ts_init: int) -> list[MarketDataEvent]:
        self._was_synced.add(book.symbol)
        try:
            event = book.to_event(ts_event, ts_init, self.book_depth)
        except BookUnavailableError:
            # A crossed book is out of sync with the venue: rebuild it rather than publish it.
            self.statistics.crossed += 1
            book.reset()
            self.wanted_snapshots.add(book.symbol)
            return []
        self.statistics.books += 1
        self.statistics.events += 1
        return [event]

    def _on_mark_price(self, event: MarkPriceUpdated) -> list[MarketDataEvent]:
        previous = self._funding.get(event.symbol)
        self._funding[event.symbol] = event
        events: list[MarketDataEvent] = []
        if (
            previous is not None
            and event.next_funding_time > previous.next_funding_time
            and event.ts_event >= previous.next_funding_time
        ):
            events.append(
                FundingRateUpdated(
                    symbol=event.symbol,
                    funding_time=previous.next_funding_time,
                    rate=previous.funding_rate,
                    mark_price=previous.mark_price,
                    ts_event=previous.next_funding_time,
                    ts_init=event.ts_init,
                )
            )
            self.statistics.funding_events += 1
        events.append(event)
        self.statistics.events += len(events)
        return events

    def reset(self, symbols: Iterable[str]) -> None:
        """Forget the books of ``symbols`` (their connection dropped): each resyncs from a new snapshot."""
        for symbol in symbols:
            book = self.books.get(symbol)
            if book is None:
                continue
            # A fresh book: the diffs buffered before the drop cannot be joined to the ones after it.
            self.books[symbol] = OrderBook(symbol, book.tick_size)
            self.wanted_snapshots.discard(symbol)


class BinanceMarketStream:
    """Receives Binance USD-M market streams and hands keel events to ``handler``.

    Parameters
    ----------
    ws_url, rest_url
        Base URLs (``binance.ws_url`` / ``binance.rest_url``, or a local Binance).
    symbols
        Symbols to follow, with their tick sizes.
    handler
        Receives every keel event, in the order produced (None: iterate :meth:`events` instead).
    interval
        The kline interval of the bars.
    depth
        Whether to follow the order book (``depth@100ms`` and snapshots).
    book_depth
        Levels per side in each ``BookUpdated``.
    session
        The HTTP session for snapshots (one is made when None).
    fetch_snapshot
        Returns a symbol's REST depth snapshot (``GET /fapi/v1/depth`` when None).
    now_ns
        The clock stamping ``ts_init``.
    sleep
        Waits between reconnect attempts.
    seed
        Seeds the reconnect jitter.
    max_streams_per_connection
        Streams per WebSocket (Binance allows 200).
    max_connection_seconds
        Age at which a connection is replaced (before Binance's 24 h limit).

    Notes
    -----
    The ``websockets`` library does the protocol (framing, Binance's pings
    answered with pongs, close handshake), as for the user-data stream;
    aiohttp serves the REST snapshots, as it does the rest of keel's REST.
    """

    def __init__(
        self,
        ws_url: str,
        rest_url: str,
        symbols: Mapping[str, Decimal],
        handler: Callable[[MarketDataEvent], None] | None = None,
        *,
        interval: str = "1m",
        depth: bool = True,
        book_depth: int = 20,
        session: aiohttp.ClientSession | None = None,
        fetch_snapshot: SnapshotFetcher | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        sleep: Sleep = asyncio.sleep,
        seed: int = 0,
        max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION,
        max_connection_seconds: float = MAX_CONNECTION_SECONDS,
    ) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.statistics = StreamStatistics()
        self.state = MarketStreamState(symbols, book_depth, self.statistics)
        self.groups = connection_groups(stream_names(symbols, interval, depth=depth), max_streams_per_connection)
        self._handler = handler or self._no_handler
        self._session = session
        self._owns_session = False
        self._fetch = fetch_snapshot or self._fetch_snapshot
        self._now_ns = now_ns
        self._sleep = sleep
        self._random = random.Random(seed)
        self._max_connection_seconds = max_connection_seconds
        self._snapshot_tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self.last_error = ""

    def __repr__(self) -> str:
        return f"BinanceMarketStream({len(self.groups)} connections, {self.statistics.messages} messages)"

    def health(self) -> dict[str, Any]:
        """Return the statistics, the books' sync states and the last error, for health and metrics."""
        return {
            **self.statistics.as_dict(),
            "rejected": dict(self.state.rejected()),
            "book_states": {symbol: book.state.value for symbol, book in self.state.books.items()},
            "last_error": self.last_error,
        }

    @staticmethod
    def _no_handler(event: MarketDataEvent) -> None:
        raise RuntimeError("a market stream without a handler is read through events()")

    def backoff_seconds(self, attempt: int) -> float:
        """Return the jittered wait before reconnect ``attempt`` (full jitter, capped at 30 s)."""
        return self._random.uniform(0, min(30.0, 0.25 * 2 ** min(attempt, 8)))

    async def _fetch_snapshot(self, symbol: str) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        url = f"{self.rest_url}{DEPTH_PATH}"
        async with self._session.get(url, params={"symbol": symbol, "limit": str(SNAPSHOT_LIMIT)}) as response:
            body = await response.read()
            if response.status != 200:
                raise aiohttp.ClientResponseError(
                    response.request_info,
                    (),
                    status=response.status,
                    message=body[:200].decode("utf-8", "replace"),
                    headers=response.headers,
                )
            return body

    def on_message(self, raw: bytes | str) -> None:
        """Handle one received message: its events to the handler, snapshots fetched for books that need one."""
        events = self.state.on_message(raw, self._now_ns())
        for event in events:
            self._handler(event)
        if self.state.wanted_snapshots:
            self._request_snapshots()

    def _request_snapshots(self) -> None:
        for symbol in self.state.wanted_snapshots:
            if symbol not in self._snapshot_tasks:
                self._snapshot_tasks[symbol] = asyncio.create_task(self._sync(symbol), name=f"snapshot-{symbol}")

    async def _sync(self, symbol: str) -> None:
        """Fetch snapshots of ``symbol`` until its book accepts one (backing off after failures)."""
        attempt = 0
        try:
            while symbol in self.state.wanted_snapshots:
                try:
                    raw = await self._fetch(symbol)
                except (aiohttp.ClientError, OSError, TimeoutError) as error:
                    self.statistics.snapshot_failures += 1
                    self.last_error = f"snapshot {symbol}: {error!r}"
                    attempt += 1
                    await self._sleep(self._retry_after(error) or self.backoff_seconds(attempt))
                    continue
                if symbol not in self.state.wanted_snapshots:
                    return  # the connection dropped meanwhile: a later diff asks again
                for event in self.state.on_snapshot(symbol, raw, self._now_ns()):
                    self._handler(event)
                if symbol in self.state.wanted_snapshots:
                    attempt += 1
                    await self._sleep(self.backoff_seconds(attempt))
        finally:
            self._snapshot_tasks.pop(symbol, None)

    @staticmethod
    def _retry_after(error: BaseException) -> float:
        """Return the wait a 429 or 418 answer asks for (0 for other failures)."""
        if isinstance(error, aiohttp.ClientResponseError) and error.status in (418, 429) and error.headers:
            return float(error.headers.get(RETRY_AFTER_HEADER, "1"))
        return 0.0

    async def _connect(self, streams: Sequence[str]) -> websockets.ClientConnection:
        connection = await websockets.connect(combined_stream_url(self.ws_url, streams), max_queue=None)
        self.statistics.connections += 1
        return connection

    async def _receive(self, connection: websockets.ClientConnection) -> bool:
        """Receive until the connection closes (False) or reaches its age limit (True)."""
        try:
            async with asyncio.timeout(self._max_connection_seconds):
                async for message in connection:
                    self.on_message(message)
        except TimeoutError:
            return True
        return False

    async def run_connection(self, streams: Sequence[str]) -> None:
        """Keep one combined-stream connection of ``streams`` open until cancelled."""
        symbols = symbols_of(streams)
        attempt = 0
        connection: websockets.ClientConnection | None = None
        try:
            while True:
                try:
                    if connection is None:
                        connection = await self._connect(streams)
                        attempt = 0
                    if await self._receive(connection):
                        replacement = await self._connect(streams)
                        self.statistics.proactive_reconnects += 1
                        await connection.close()
                        connection = replacement
                        continue
                    error: BaseException | None = None
                # InvalidHandshake: refused (InvalidStatus), or the connection dropped before answering the upgrade.
                except (websockets.ConnectionClosed, websockets.InvalidHandshake, OSError, TimeoutError) as failure:
                    error = failure
                connection = None
                self.statistics.reconnects += 1
                self.last_error = repr(error) if error is not None else "closed by the server"
                self.state.reset(symbols)
                attempt += 1
                wait = self.backoff_seconds(attempt)
                _log.warning(
                    "market stream connection lost or refused: reconnecting",
                    symbols=len(symbols),
                    attempt=attempt,
                    retry_in_seconds=round(wait, 2),
                    error=self.last_error,
                )
                await self._sleep(wait)
        finally:
            if connection is not None:
                await connection.close()

    async def run(self) -> None:
        """Run every connection until cancelled."""
        tasks = [
            asyncio.create_task(self.run_connection(group), name=f"market-stream-{n}")
            for n, group in enumerate(self.groups)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in (*tasks, *self._snapshot_tasks.values()):
                task.cancel()
            await asyncio.gather(*tasks, *self._snapshot_tasks.values(), return_exceptions=True)
            if self._owns_session and self._session is not None:
                await self._session.close()

    async def events(self) -> AsyncIterator[MarketDataEvent]:
        """Run the stream while iterated, yielding its events as they arrive.

        Raises
        ------
        Exception
            Whatever ended the stream's connections (they otherwise reconnect for ever).
        """
        queue: asyncio.Queue[MarketDataEvent] = asyncio.Queue()
        self._handler = queue.put_nowait
        task = asyncio.create_task(self.run(), name="market-streams")
        try:
            while True:
                if queue.empty():
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait((getter, task), return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        task.result()
                        return
                    yield getter.result()
                else:
                    yield queue.get_nowait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
