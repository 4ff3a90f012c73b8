"""Binance's public USD-M market streams from Python (UC-1.1): live order books, trades and bars, no keys.

:class:`BinanceWebSocket` is the review's ``websocket = BinanceWebSocket();
await websocket.connect_orderbook('BTCUSDT')``. Each symbol it follows gets a
:class:`~keel.api.binance.streams.BinanceMarketStream` of its own (depth with
REST snapshots, trades, bars, mark price), the one keel's paper and live runs
use, so the book is kept the same way: synced from a snapshot and the diffs,
re-synced on a gap, reconnected when the connection drops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from keel.api.binance.constants import REST_URL, TESTNET_REST_URL, TESTNET_WS_URL, WS_URL
from keel.api.binance.streams import BinanceMarketStream
from keel.core.errors import RetryLaterError
from keel.core.instruments import BUNDLED_INSTRUMENTS_FILE, Instrument, load_instruments
from keel.core.messages import BookUpdated, MarketDataEvent

EventHandler = Callable[[MarketDataEvent], None]

_log = structlog.get_logger(__name__)


class BinanceWebSocket:
    """Follow Binance USD-M order books (and each symbol's trades and bars) in the running event loop.

    Parameters
    ----------
    ws_url, rest_url
        Binance's stream and REST base URLs (mainnet's, the testnet's with
        ``testnet``, or a proxy's or a local Binance's).
    testnet
        Use the futures testnet's URLs when the URLs are not given.
    instruments
        The instruments (their tick sizes key the book's prices): a mapping, or
        a YAML file (keel's bundled ``config/instruments.yaml`` by default).
    book_depth
        Levels per side in each :class:`~keel.core.messages.BookUpdated`.
    interval
        The interval of the bars each symbol's stream closes.
    on_event
        Receives every event of every followed symbol, in order (trades,
        bars, books, mark prices), besides the latest book kept here. An
        exception it raises is logged and counted (:attr:`callback_errors`);
        the stream goes on.

    Examples
    --------
    >>> websocket = BinanceWebSocket()  # doctest: +SKIP
    >>> book = await websocket.connect_orderbook("BTCUSDT")  # doctest: +SKIP
    >>> OrderBookAnalyzer().update(websocket.order_book("BTCUSDT"))  # doctest: +SKIP
    >>> await websocket.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        ws_url: str | None = None,
        rest_url: str | None = None,
        *,
        testnet: bool = False,
        instruments: Mapping[str, Instrument] | str | Path = BUNDLED_INSTRUMENTS_FILE,
        book_depth: int = 20,
        interval: str = "1m",
        on_event: EventHandler | None = None,
    ) -> None:
        self.ws_url = ws_url or (TESTNET_WS_URL if testnet else WS_URL)
        self.rest_url = rest_url or (TESTNET_REST_URL if testnet else REST_URL)
        self.instruments = load_instruments(instruments) if isinstance(instruments, str | Path) else instruments
        self.book_depth = book_depth
        self.interval = interval
        self._on_event = on_event
        self._streams: dict[str, BinanceMarketStream] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._books: dict[str, BookUpdated] = {}
        self._first_book: dict[str, asyncio.Event] = {}
        self.callback_errors = 0

    def __repr__(self) -> str:
        return f"BinanceWebSocket({self.ws_url}, following {sorted(self._streams)})"

    async def connect_orderbook(self, symbol: str, timeout_seconds: float = 30.0) -> BookUpdated:
        """Follow ``symbol``'s order book; return it once synced (at once when it is followed already).

        Raises
        ------
        ValueError
            If keel has no instrument specification of the symbol.
        RetryLaterError
            If no synced book came within ``timeout_seconds`` (Binance out of
            reach, the symbol not trading): the symbol is not followed then.
        """
        symbol = symbol.upper()
        instrument = self.instruments.get(symbol)
        if instrument is None:
            raise ValueError(
                f"no instrument specification for {symbol}: add it with "
                f"keel data instruments --download --symbols {symbol}"
            )
        if symbol not in self._streams:
            self._follow(symbol, instrument.tick_size)
        task = self._tasks[symbol]
        synced = asyncio.ensure_future(self._first_book[symbol].wait())
        await asyncio.wait((synced, task), timeout=timeout_seconds, return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        if symbol in self._books:
            return self._books[symbol]
        last_error = self._streams[symbol].last_error
        ended = task.done() and not task.cancelled() and task.exception()
        await self.disconnect(symbol)
        why = f"the stream ended: {ended!r}" if ended else f"none within {timeout_seconds:g} s"
        raise RetryLaterError(
            f"no synced order book of {symbol} from {self.ws_url} ({why}"
            + (f"; last error: {last_error}" if last_error else "")
            + "): check that Binance is reachable and the symbol trades, then connect again"
        )

    def _follow(self, symbol: str, tick_size: Decimal) -> None:
        self._first_book[symbol] = asyncio.Event()
        stream = BinanceMarketStream(
            self.ws_url,
            self.rest_url,
            {symbol: tick_size},
            self._handler(symbol),
            interval=self.interval,
            book_depth=self.book_depth,
        )
        self._streams[symbol] = stream
        self._tasks[symbol] = asyncio.create_task(stream.run(), name=f"binance-websocket-{symbol}")

    def _handler(self, symbol: str) -> EventHandler:
        first = self._first_book[symbol]

        def handle(event: MarketDataEvent) -> None:
            if isinstance(event, BookUpdated):
                self._books[symbol] = event
                first.set()
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception:  # a failing callback must not end the symbol's stream
                    self.callback_errors += 1
                    _log.error(
                        "on_event raised; the stream goes on", symbol=symbol, kind=type(event).__name__, exc_info=True
                    )

        return handle

    def order_book(self, symbol: str) -> BookUpdated:
        """Return the latest synced book of a followed symbol.

        Raises
        ------
        KeyError
            If the symbol is not followed, or has no synced book yet: ``await connect_orderbook(symbol)`` first.
        """
        book = self._books.get(symbol.upper())
        if book is None:
            raise KeyError(f"no order book of {symbol}: await connect_orderbook({symbol!r}) first")
        return book

    @property
    def symbols(self) -> list[str]:
        """Return the followed symbols."""
        return sorted(self._streams)

    def health(self) -> dict[str, dict[str, Any]]:
        """Return each followed symbol's stream statistics, book state and last error."""
        return {symbol: stream.health() for symbol, stream in sorted(self._streams.items())}

    async def disconnect(self, symbol: str) -> None:
        """Stop following ``symbol`` (nothing happens if it is not followed)."""
        symbol = symbol.upper()
        task = self._tasks.pop(symbol, None)
        self._streams.pop(symbol, None)
        self._books.pop(symbol, None)
        self._first_book.pop(symbol, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        """Stop following every symbol."""
        for symbol in list(self._tasks):
            await self.disconnect(symbol)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()
