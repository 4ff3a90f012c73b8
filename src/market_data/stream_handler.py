"""From raw Binance market-stream payloads to bus events, with one synced local book per symbol.

:class:`MarketStreamHandler` is what the Binance adapter (and a capture
replay) hands every WebSocket payload to. It parses it with
:class:`~keel.market_data.normalization.BinanceUsdmNormalizer`, feeds depth
diffs to the symbol's :class:`~keel.market_data.order_book.OrderBook`, and
publishes ``BookUpdated`` after each applied diff and every other accepted
event as it is. Connecting and fetching snapshots belong to the adapter: on a
gap (or a crossed book, which means the local state is wrong) the handler
resets the book and calls ``request_snapshot(symbol)`` once; the adapter
answers with :meth:`MarketStreamHandler.on_snapshot`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import structlog

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.market_data.normalization import BinanceUsdmNormalizer, DepthDiff
from keel.market_data.order_book import BookSyncState, DiffResult, OrderBook

_log = structlog.get_logger("keel.market_data.stream_handler")


class MarketStreamHandler(Component):
    """Normalize payloads, keep the local books, publish events (see module doc).

    Parameters
    ----------
    name, bus, clock
        As for every component; ``clock`` stamps ``ts_init`` when the caller gives none.
    tick_sizes
        Tick size per symbol (the symbols whose books are kept).
    depth
        Levels per side in each ``BookUpdated``.
    request_snapshot
        Called with a symbol when its book needs a new REST snapshot.

    Attributes
    ----------
    counts : Counter
        Book outcomes: ``depth_applied``, ``depth_dropped`` (stale or repeated
        events), ``depth_gap``, ``depth_buffered``, ``crossed_book``,
        ``snapshot_requests``.
    """

    def __init__(
        self,
        name: str,
        bus: EventBus,
        clock: Clock,
        tick_sizes: dict[str, Decimal],
        depth: int = 20,
        request_snapshot: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name, bus, clock)
        self.normalizer = BinanceUsdmNormalizer(tick_sizes)
        self.books = {symbol: OrderBook(symbol, tick) for symbol, tick in tick_sizes.items()}
        self.depth = depth
        self.counts: Counter[str] = Counter()
        self._request_snapshot = request_snapshot
        self._awaiting: set[str] = set(tick_sizes)

    @property
    def rejected(self) -> Counter[str]:
        """Return the rejected payloads per reason."""
        return self.normalizer.rejected

    def on_payload(self, payload: bytes | str, ts_init: int | None = None) -> None:
        """Handle one stream payload received at ``ts_init`` (ns; the clock's time when None)."""
        now = self.clock.timestamp_ns() if ts_init is None else ts_init
        parsed = self.normalizer.parse(payload, now)
        if parsed is None:
            return
        if isinstance(parsed, DepthDiff):
            self._on_diff(parsed)
        else:
            self.bus.publish(parsed)

    def on_snapshot(self, symbol: str, payload: bytes | str, ts_init: int | None = None) -> None:
        """Load a REST depth snapshot of ``symbol`` and replay the events buffered meanwhile."""
        now = self.clock.timestamp_ns() if ts_init is None else ts_init
        snapshot = self.normalizer.parse_snapshot(payload, symbol, now)
        book = self.books.get(symbol)
        if snapshot is None or book is None:
            return
        applied_before = book.applied
        book.apply_snapshot_ticks(
            snapshot.last_update_id,
            snapshot.bid_ticks,
            snapshot.bid_quantities,
            snapshot.ask_ticks,
            snapshot.ask_quantities,
        )
        self._awaiting.discard(symbol)
        self.counts["depth_applied"] += book.applied - applied_before
        if book.is_synced:
            self._publish_book(book, snapshot.ts_event, now)
        elif book.state is BookSyncState.AWAITING_SNAPSHOT:
            self._resync(book)

    def _on_diff(self, diff: DepthDiff) -> None:
        book = self.books.get(diff.symbol)
        if book is None:
            self.counts["depth_unknown_symbol"] += 1
            return
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
            self.counts["depth_applied"] += 1
            self._publish_book(book, diff.ts_event, diff.ts_init)
        elif result is DiffResult.DROPPED:
            self.counts["depth_dropped"] += 1
        elif result is DiffResult.BUFFERED:
            self.counts["depth_buffered"] += 1
        else:
            self.counts["depth_gap"] += 1
            self._resync(book)

    def _publish_book(self, book: OrderBook, ts_event: int, ts_init: int) -> None:
        if book.is_crossed():
            self.counts["crossed_book"] += 1
            _log.warning("crossed local book discarded", symbol=book.symbol, update_id=book.last_update_id)
            book.reset()
            self._resync(book)
            return
        self.bus.publish(book.to_event(ts_event, ts_init, self.depth))

    def _resync(self, book: OrderBook) -> None:
        if book.symbol in self._awaiting:
            return
        self._awaiting.add(book.symbol)
        self.counts["snapshot_requests"] += 1
        _log.info("order book needs a new snapshot", symbol=book.symbol, last_update_id=book.last_update_id)
        if self._request_snapshot is not None:
            self._request_snapshot(book.symbol)
