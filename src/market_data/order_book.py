"""The local order book of one symbol, kept in sync with Binance by snapshot plus diffs.

Binance USD-M procedure (``depthUpdate`` events carry ``U``, ``u`` and ``pu``):

1. buffer the diff events while the REST snapshot (``lastUpdateId``) is fetched;
2. drop every event with ``u < lastUpdateId``;
3. the first event applied must have ``U <= lastUpdateId <= u`` (or ``pu ==
   lastUpdateId``: it continues the snapshot exactly);
4. afterwards every event's ``pu`` must equal the previous event's ``u``;
   otherwise the book has a gap and is rebuilt from a new snapshot.

Spot events have no ``pu`` (pass ``previous_update_id=None``): there the
first event must have ``U <= lastUpdateId + 1 <= u`` and each later ``U`` must
be the previous ``u + 1``.

Prices are held as integer ticks of the instrument's tick size, so they are
exact; quantities are float64 (a Binance quantity has at most 15 significant
digits, so the shortest ``repr`` of the float gives back its exact decimal).
Each side is a dense array indexed by tick around the traded price, which makes
a diff event one vectorized assignment; the rare level far outside the array
is kept in a dictionary. :meth:`OrderBook.apply_diff` takes decimals (the
exchange boundary); the feeds use :meth:`OrderBook.apply_diff_ticks`, which
takes pre-validated tick and quantity arrays.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from decimal import Decimal
from enum import Enum
from typing import NamedTuple

import numpy as np

from keel.core.errors import KeelError
from keel.core.messages import BookUpdated
from keel.core.orders import OrderSide
from keel.market_data._kernels import CROSSED, OUTSIDE, apply_levels, top_levels, top_of_book

_MAX_SPAN = 1 << 22
_MARGIN_MIN = 4096
_EMPTY_TICKS = np.zeros(0, dtype=np.int64)
_EMPTY_QUANTITIES = np.zeros(0, dtype=np.float64)

Level = tuple[Decimal, Decimal]


class BookSyncState(Enum):
    """Where the book is in Binance's snapshot-plus-diff procedure."""

    AWAITING_SNAPSHOT = "awaiting_snapshot"
    SYNCING = "syncing"
    SYNCED = "synced"


class DiffResult(Enum):
    """What :meth:`OrderBook.apply_diff` did with an event."""

    APPLIED = "applied"
    DROPPED = "dropped"
    GAP = "gap"
    BUFFERED = "buffered"


class BookUnavailableError(KeelError):
    """The book cannot be read now (not synced, or crossed): wait for the next resync."""


class TopOfBook(NamedTuple):
    """The best levels of both sides as arrays, best first (prices in ticks)."""

    bid_ticks: np.ndarray
    bid_quantities: np.ndarray
    ask_ticks: np.ndarray
    ask_quantities: np.ndarray


class _Side:
    """One side of the book: quantities by tick in a dense window, far levels in a dict."""

    __slots__ = ("_out", "base", "best_index", "far", "far_best", "is_bid", "levels")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.base = 0
        self.levels = _EMPTY_QUANTITIES
        self.best_index = -1
        self.far: dict[int, float] = {}
        self.far_best: int | None = None
        self._out = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0))

    @property
    def best(self) -> int | None:
        dense = self.best_index + self.base if self.best_index >= 0 else None
        far = self.far_best
        if far is None:
            return dense
        if dense is None:
            return far
        return max(dense, far) if self.is_bid else min(dense, far)

    def clear(self) -> None:
        self.levels = _EMPTY_QUANTITIES
        self.base = 0
        self.best_index = -1
        self.far = {}
        self.far_best = None

    def load(self, ticks: np.ndarray, quantities: np.ndarray, centre: int) -> None:
        """Replace every level (a snapshot); ``centre`` is a tick the window must hold."""
        self.clear()
        keep = quantities > 0
        ticks, quantities = ticks[keep], quantities[keep]
        low = min(int(ticks.min()), centre) if ticks.size else centre
        high = max(int(ticks.max()), centre) if ticks.size else centre
        self._allocate(low, high, centre)
        self.update(ticks, quantities)

    def _allocate(self, low: int, high: int, centre: int) -> None:
        """Move the levels to a new dense window holding [low, high] (plus a margin) and the old window.

        Only :meth:`load` (from a cleared side) can get a window capped around ``centre``; :meth:`_grow`
        only widens, so the old window's levels are copied as one block.
        """
        margin = max(_MARGIN_MIN, (high - low) // 2)
        low, high = max(1, low - margin), high + margin
        if high - low + 1 > _MAX_SPAN:
            low = max(1, centre - _MAX_SPAN // 2)
            high = low + _MAX_SPAN - 1
        old, old_base, far = self.levels, self.base, self.far
        candidates = [self.best_index + old_base] if self.best_index >= 0 else []
        self.base, self.levels, self.far = low, np.zeros(high - low + 1, dtype=np.float64), {}
        self.far_best = None
        if old.size:
            self.levels[old_base - low : old_base - low + old.size] = old
        for tick, quantity in far.items():
            self._set_one(tick, quantity)
        candidates.extend(tick for tick in far if low <= tick <= high)
        if candidates:
            self.best_index = (max(candidates) if self.is_bid else min(candidates)) - low
        else:
            self.best_index = -1

    def _set_one(self, tick: int, quantity: float) -> None:
        index = tick - self.base
        if 0 <= index < self.levels.size:
            self.levels[index] = quantity
            return
        if quantity > 0:
            self.far[tick] = quantity
        else:
            self.far.pop(tick, None)
        if self.far:
            self.far_best = max(self.far) if self.is_bid else min(self.far)
        else:
            self.far_best = None

    def update(self, ticks: np.ndarray, quantities: np.ndarray) -> None:
        """Set levels (quantity 0 removes one) and move the best price."""
        if not ticks.size:
            return
        best = apply_levels(self.levels, self.base, ticks, quantities, self.best_index, self.is_bid)
        if best != OUTSIDE:
            self.best_index = best
            return
        self._grow(int(ticks.min()), int(ticks.max()))
        base, size = self.base, self.levels.size
        inside = (ticks >= base) & (ticks < base + size)
        for tick, quantity in zip(ticks[~inside].tolist(), quantities[~inside].tolist(), strict=True):
            self._set_one(tick, quantity)
        self.best_index = apply_levels(
            self.levels, base, ticks[inside], quantities[inside], self.best_index, self.is_bid
        )

    def _grow(self, low: int, high: int) -> None:
        """Widen the dense window to hold [low, high] unless that makes it too wide."""
        if self.levels.size:
            low, high = min(low, self.base), max(high, self.base + self.levels.size - 1)
        if high - low + 1 <= _MAX_SPAN // 2:
            best = self.best
            self._allocate(low, high, best if best is not None else (low + high) // 2)

    def quantity(self, tick: int) -> float:
        index = tick - self.base
        if 0 <= index < self.levels.size:
            return float(self.levels[index])
        return self.far.get(tick, 0.0)

    def top(self, depth: int, numerator: int, denominator: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the ``depth`` best levels as (ticks, float prices, quantities), best first.

        The arrays are buffers reused by the next call: copy them to keep them.
        """
        ticks, prices, quantities = self._out
        if ticks.size < depth:
            self._out = ticks, prices, quantities = (np.zeros(depth, np.int64), np.zeros(depth), np.zeros(depth))
        count = 0
        if self.best_index >= 0 and depth > 0:
            count = top_levels(
                self.levels,
                self.base,
                self.best_index,
                depth,
                self.is_bid,
                numerator,
                denominator,
                ticks,
                prices,
                quantities,
            )
        if self.far and (count < depth or self._far_may_lead(int(ticks[count - 1]))):
            return self._merge_far(ticks[:count], quantities[:count], depth, numerator, denominator)
        return ticks[:count], prices[:count], quantities[:count]

    def _far_may_lead(self, worst: int) -> bool:
        """Return True when a far level is better than ``worst`` (so it belongs in the top)."""
        far = self.far_best
        return far is not None and (far > worst if self.is_bid else far < worst)

    def _merge_far(
        self, ticks: np.ndarray, quantities: np.ndarray, depth: int, numerator: int, denominator: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        merged = dict(zip(ticks.tolist(), quantities.tolist(), strict=True))
        merged.update(self.far)
        order = sorted(merged, reverse=self.is_bid)[:depth]
        merged_ticks = np.array(order, dtype=np.int64)
        prices = (merged_ticks * numerator) / denominator
        return merged_ticks, prices, np.array([merged[t] for t in order], dtype=np.float64)


class OrderBook:
    """The local limit order book of one symbol, synchronized by Binance's rules.

    Parameters
    ----------
    symbol
        The symbol, e.g. ``BTCUSDT``.
    tick_size
        The price grid; every price the book receives must be a multiple of it.
    max_buffered
        How many diff events to keep while waiting for a snapshot; older ones
        are dropped and counted in ``buffer_overflows``.

    Attributes
    ----------
    state : BookSyncState
        Where the synchronization stands.
    last_update_id : int
        ``u`` of the last applied event (the snapshot's ``lastUpdateId`` before
        the first one; 0 before any snapshot).
    applied, dropped, gaps, buffer_overflows : int
        Counters of diff events by outcome.
    published_levels : tuple of ndarray or None
        The float (bid prices, bid quantities, ask prices, ask quantities) of
        the last :meth:`to_event`, for analyzers on the hot path; the arrays
        are buffers the next read of the book overwrites.
    """

    def __init__(self, symbol: str, tick_size: Decimal, max_buffered: int = 10_000) -> None:
        tick_size = Decimal(tick_size)
        if not tick_size.is_finite() or tick_size <= 0:
            raise ValueError(f"{symbol}: tick size must be a positive decimal, got {tick_size}")
        self.symbol = symbol
        self.tick_size = tick_size
        numerator, denominator = tick_size.as_integer_ratio()
        self._numerator = numerator
        self._denominator = denominator
        self._bids = _Side(is_bid=True)
        self._asks = _Side(is_bid=False)
        self._buffer: deque[tuple[int, int, int | None, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = deque()
        self._max_buffered = max_buffered
        self.state = BookSyncState.AWAITING_SNAPSHOT
        self.last_update_id = 0
        self.applied = 0
        self.dropped = 0
        self.gaps = 0
        self.buffer_overflows = 0
        self.published_levels: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._published = np.zeros((4, 0))
        self._published_ticks = np.zeros((2, 0), dtype=np.int64)
        self._published_counts = (-1, -1)

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.symbol}, {self.state.value}, last_update_id={self.last_update_id}, "
            f"best_bid={self._bids.best}, best_ask={self._asks.best} ticks)"
        )

    # --- conversions -----------------------------------------------------------------

    def price_to_tick(self, price: Decimal) -> int:
        """Return a price as a whole number of ticks.

        Raises
        ------
        ValueError
            If the price is not a positive finite decimal on the tick grid.
        """
        price = Decimal(price)
        if not price.is_finite() or price <= 0:
            raise ValueError(f"{self.symbol}: price must be a positive finite decimal, got {price}")
        ticks, remainder = divmod(price, self.tick_size)
        if remainder:
            raise ValueError(f"{self.symbol}: price {price} is not a multiple of the tick size {self.tick_size}")
        return int(ticks)

    def tick_to_price(self, tick: int) -> Decimal:
        """Return the exact decimal price of a tick."""
        return self.tick_size * tick

    def ticks_to_floats(self, ticks: np.ndarray) -> np.ndarray:
        """Return tick prices as the nearest floats (one correctly rounded division)."""
        if self._numerator == 1:
            return ticks / self._denominator
        return (ticks * self._numerator) / self._denominator

    def _levels(self, levels: Iterable[tuple[Decimal, Decimal]]) -> tuple[np.ndarray, np.ndarray]:
        ticks, quantities = [], []
        seen: set[int] = set()
        for price, quantity in levels:
            tick = self.price_to_tick(price)
            quantity = Decimal(quantity)
            if not quantity.is_finite() or quantity < 0:
                raise ValueError(f"{self.symbol}: quantity at {price} must be finite and >= 0, got {quantity}")
            if tick in seen:
                raise ValueError(f"{self.symbol}: price {price} appears twice on one side of one update")
            seen.add(tick)
            ticks.append(tick)
            quantities.append(float(quantity))
        return np.array(ticks, dtype=np.int64), np.array(quantities, dtype=np.float64)

    # --- synchronization --------------------------------------------------------------

    def apply_snapshot(
        self,
        last_update_id: int,
        bids: Iterable[tuple[Decimal, Decimal]],
        asks: Iterable[tuple[Decimal, Decimal]],
    ) -> None:
        """Load a REST depth snapshot, then replay the buffered diff events on it.

        Raises
        ------
        ValueError
            If a price is off the tick grid or not positive, a quantity is
            negative, or a price repeats on one side; the book is unchanged.
        """
        bid_ticks, bid_quantities = self._levels(bids)
        ask_ticks, ask_quantities = self._levels(asks)
        self.apply_snapshot_ticks(last_update_id, bid_ticks, bid_quantities, ask_ticks, ask_quantities)

    def apply_snapshot_ticks(
        self,
        last_update_id: int,
        bid_ticks: np.ndarray,
        bid_quantities: np.ndarray,
        ask_ticks: np.ndarray,
        ask_quantities: np.ndarray,
    ) -> None:
        """Load a snapshot given as validated tick and quantity arrays (see :meth:`apply_snapshot`)."""
        centre_bid = int(bid_ticks.max()) if bid_ticks.size else (int(ask_ticks.min()) if ask_ticks.size else 1)
        centre_ask = int(ask_ticks.min()) if ask_ticks.size else centre_bid
        self._bids.load(np.asarray(bid_ticks, np.int64), np.asarray(bid_quantities, np.float64), centre_bid)
        self._asks.load(np.asarray(ask_ticks, np.int64), np.asarray(ask_quantities, np.float64), centre_ask)
        self.last_update_id = int(last_update_id)
        self.state = BookSyncState.SYNCING
        buffered, self._buffer = self._buffer, deque()
        for event in buffered:
            self.apply_diff_ticks(*event)

    def apply_diff(
        self,
        first_update_id: int,
        last_update_id: int,
        previous_update_id: int | None,
        bids: Iterable[tuple[Decimal, Decimal]],
        asks: Iterable[tuple[Decimal, Decimal]],
    ) -> DiffResult:
        """Apply one diff event (``U``, ``u``, ``pu``) by Binance's rules.

        Parameters
        ----------
        first_update_id, last_update_id, previous_update_id
            The event's ``U``, ``u`` and ``pu`` (``None`` on spot).
        bids, asks
            Changed levels as (price, quantity); quantity 0 removes the level.

        Returns
        -------
        DiffResult
            APPLIED; DROPPED (``u`` below the book's update id); GAP (the
            sequence broke: the book is cleared and waits for a new snapshot,
            this event buffered); BUFFERED (no snapshot yet).

        Raises
        ------
        ValueError
            If a level is malformed (see :meth:`apply_snapshot`); the book is unchanged.
        """
        bid_ticks, bid_quantities = self._levels(bids)
        ask_ticks, ask_quantities = self._levels(asks)
        return self.apply_diff_ticks(
            first_update_id,
            last_update_id,
            previous_update_id,
            bid_ticks,
            bid_quantities,
            ask_ticks,
            ask_quantities,
        )

    def apply_diff_ticks(
        self,
        first_update_id: int,
        last_update_id: int,
        previous_update_id: int | None,
        bid_ticks: np.ndarray,
        bid_quantities: np.ndarray,
        ask_ticks: np.ndarray,
        ask_quantities: np.ndarray,
    ) -> DiffResult:
        """Apply a diff event given as validated arrays (int64 ticks, float64 quantities >= 0).

        Same rules and result as :meth:`apply_diff`; a price may appear at
        most once per side.
        """
        state = self.state
        if state is BookSyncState.SYNCED:
            if previous_update_id is None:
                in_sequence = first_update_id == self.last_update_id + 1
            else:
                in_sequence = previous_update_id == self.last_update_id
            if not in_sequence:
                if last_update_id <= self.last_update_id:
                    self.dropped += 1
                    return DiffResult.DROPPED
                return self._gap(
                    first_update_id,
                    last_update_id,
                    previous_update_id,
                    bid_ticks,
                    bid_quantities,
                    ask_ticks,
                    ask_quantities,
                )
        elif state is BookSyncState.SYNCING:
            if last_update_id < self.last_update_id:
                self.dropped += 1
                return DiffResult.DROPPED
            target = self.last_update_id if previous_update_id is not None else self.last_update_id + 1
            # An event whose pu is the snapshot's id continues it exactly, even if U > lastUpdateId.
            continues = previous_update_id is not None and previous_update_id == self.last_update_id
            if not (first_update_id <= target <= last_update_id or continues):
                return self._gap(
                    first_update_id,
                    last_update_id,
                    previous_update_id,
                    bid_ticks,
                    bid_quantities,
                    ask_ticks,
                    ask_quantities,
                )
            self.state = BookSyncState.SYNCED
        else:
            self._buffer_event(
                (
                    first_update_id,
                    last_update_id,
                    previous_update_id,
                    bid_ticks,
                    bid_quantities,
                    ask_ticks,
                    ask_quantities,
                )
            )
            return DiffResult.BUFFERED
        self._bids.update(bid_ticks, bid_quantities)
        self._asks.update(ask_ticks, ask_quantities)
        self.last_update_id = last_update_id
        self.applied += 1
        return DiffResult.APPLIED

    def _gap(self, *event: object) -> DiffResult:
        self.gaps += 1
        self.reset()
        self._buffer_event(event)  # type: ignore[arg-type]
        return DiffResult.GAP

    def _buffer_event(self, event: tuple[int, int, int | None, np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
        if len(self._buffer) >= self._max_buffered:
            self._buffer.popleft()
            self.buffer_overflows += 1
        self._buffer.append(event)

    def reset(self) -> None:
        """Forget every level and wait for a new snapshot (buffered events are kept)."""
        self._bids.clear()
        self._asks.clear()
        self.state = BookSyncState.AWAITING_SNAPSHOT

    # --- reading -----------------------------------------------------------------------

    @property
    def is_synced(self) -> bool:
        """Return True when the book follows the venue (snapshot plus every diff since)."""
        return self.state is BookSyncState.SYNCED

    @property
    def buffered(self) -> int:
        """Return how many diff events wait for a snapshot."""
        return len(self._buffer)

    def best_bid_tick(self) -> int | None:
        """Return the best bid in ticks, or None."""
        return self._bids.best

    def best_ask_tick(self) -> int | None:
        """Return the best ask in ticks, or None."""
        return self._asks.best

    def best_bid(self) -> Level | None:
        """Return the best bid as (price, quantity), or None when the side is empty."""
        return self._best(self._bids)

    def best_ask(self) -> Level | None:
        """Return the best ask as (price, quantity), or None when the side is empty."""
        return self._best(self._asks)

    def _best(self, side: _Side) -> Level | None:
        if side.best is None:
            return None
        return self.tick_to_price(side.best), _decimal(side.quantity(side.best))

    def quantity_at(self, side: OrderSide, price: Decimal) -> Decimal:
        """Return the resting quantity at a price on the bid (BUY) or ask (SELL) side (0 if none)."""
        book_side = self._bids if side is OrderSide.BUY else self._asks
        return _decimal(book_side.quantity(self.price_to_tick(price)))

    def top_ticks(self, depth: int) -> TopOfBook:
        """Return the ``depth`` best levels per side as arrays (ticks, float quantities), best first."""
        bid_ticks, _, bid_quantities = self._bids.top(depth, self._numerator, self._denominator)
        bid_ticks, bid_quantities = bid_ticks.copy(), bid_quantities.copy()
        ask_ticks, _, ask_quantities = self._asks.top(depth, self._numerator, self._denominator)
        return TopOfBook(bid_ticks, bid_quantities, ask_ticks.copy(), ask_quantities.copy())

    def top(self, depth: int) -> tuple[list[Level], list[Level]]:
        """Return the ``depth`` best (price, quantity) levels of the bids and the asks, best first."""
        top = self.top_ticks(depth)
        bids = [
            (self.tick_to_price(t), _decimal(q))
            for t, q in zip(top.bid_ticks.tolist(), top.bid_quantities.tolist(), strict=True)
        ]
        asks = [
            (self.tick_to_price(t), _decimal(q))
            for t, q in zip(top.ask_ticks.tolist(), top.ask_quantities.tolist(), strict=True)
        ]
        return bids, asks

    def is_crossed(self) -> bool:
        """Return True when the best bid is at or above the best ask."""
        bids, asks = self._bids, self._asks
        if bids.far_best is not None or asks.far_best is not None:
            bid, ask = bids.best, asks.best
            return bid is not None and ask is not None and bid >= ask
        return (
            bids.best_index >= 0 and asks.best_index >= 0 and bids.best_index + bids.base >= asks.best_index + asks.base
        )

    def to_event(self, ts_event: int, ts_init: int, depth: int = 20) -> BookUpdated:
        """Return the top ``depth`` levels as a ``BookUpdated`` event (floats, best first).

        Raises
        ------
        BookUnavailableError
            If the book is not synced or is crossed: such a book is never published.
        """
        if self.state is not BookSyncState.SYNCED:
            raise BookUnavailableError(f"{self.symbol} book is {self.state.value}: wait for a snapshot and resync")
        bids, asks = self._bids, self._asks
        out = self._published
        depth = max(depth, 0)
        if out.shape[1] != depth:
            out = self._published = np.zeros((4, depth))
            self._published_ticks = np.zeros((2, depth), dtype=np.int64)
            self._published_counts = (-1, -1)
        counts = top_of_book(
            bids.levels,
            bids.base,
            bids.best_index,
            bids.far_best or 0,
            asks.levels,
            asks.base,
            asks.best_index,
            asks.far_best or 0,
            depth,
            self._numerator,
            self._denominator,
            self._published_ticks,
            out,
        )
        bid_count, ask_count = counts
        if bid_count < 0:
            if bid_count == CROSSED:
                raise self._crossed_error()
            return self._merged_event(ts_event, ts_init, depth)
        if counts != self._published_counts:
            self._published_counts = counts
            self.published_levels = (out[0, :bid_count], out[1, :bid_count], out[2, :ask_count], out[3, :ask_count])
        bid_prices, bid_quantities, ask_prices, ask_quantities = out.tolist()
        if bid_count < depth:
            bid_prices, bid_quantities = bid_prices[:bid_count], bid_quantities[:bid_count]
        if ask_count < depth:
            ask_prices, ask_quantities = ask_prices[:ask_count], ask_quantities[:ask_count]
        # The lists are rows of one array cut to one count per side: equal lengths, no need to check them.
        return BookUpdated(
            symbol=self.symbol,
            update_id=self.last_update_id,
            bids=tuple(zip(bid_prices, bid_quantities, strict=False)),
            asks=tuple(zip(ask_prices, ask_quantities, strict=False)),
            ts_event=ts_event,
            ts_init=ts_init,
        )

    def _merged_event(self, ts_event: int, ts_init: int, depth: int) -> BookUpdated:
        """Build the event of a book with levels outside the dense window (they are merged in by tick)."""
        if self.is_crossed():
            raise self._crossed_error()
        _, bid_prices, bid_quantities = self._bids.top(depth, self._numerator, self._denominator)
        bids = tuple(zip(bid_prices.tolist(), bid_quantities.tolist(), strict=True))
        _, ask_prices, ask_quantities = self._asks.top(depth, self._numerator, self._denominator)
        asks = tuple(zip(ask_prices.tolist(), ask_quantities.tolist(), strict=True))
        self.published_levels = (bid_prices, bid_quantities, ask_prices, ask_quantities)
        self._published_counts = (-1, -1)
        return BookUpdated(
            symbol=self.symbol,
            update_id=self.last_update_id,
            bids=bids,
            asks=asks,
            ts_event=ts_event,
            ts_init=ts_init,
        )

    def _crossed_error(self) -> BookUnavailableError:
        return BookUnavailableError(
            f"{self.symbol} book is crossed at update {self.last_update_id} "
            f"(bid {self._bids.best} >= ask {self._asks.best} ticks): resync from a new snapshot"
        )


def _decimal(quantity: float) -> Decimal:
    """Return the exact decimal a float quantity was parsed from (shortest round-trip repr)."""
    return Decimal(repr(quantity)) if quantity else Decimal(0)
