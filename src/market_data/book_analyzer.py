"""Order-book microstructure: spread, mid, microprice, imbalance, depth, pressure and walls.

:class:`OrderBookAnalyzer` turns each published book (``BookUpdated``, the
top levels of each side) into :class:`BookMetrics`, using only that book, so
it has no look-ahead by construction. :func:`book_metrics_batch` is the plain
vectorized reference over many books at once; a test holds the two equal on
the real session.

Definitions, with bid levels ``(p_i, q_i)`` and ask levels ``(P_i, Q_i)``
best first:

- ``mid = (p_0 + P_0) / 2``, ``spread = P_0 - p_0``, ``spread_bps = spread / mid * 1e4``;
- ``microprice = (p_0 Q_0 + P_0 q_0) / (q_0 + Q_0)``: the mid moved toward the thinner side;
- ``imbalance_k = (sum q_i - sum Q_i) / (sum q_i + sum Q_i)`` over the first ``k`` levels;
- ``bid_depth``, ``ask_depth``: quantity within ``depth_bps`` of the mid (visible levels only);
- ``book_pressure``: the imbalance with level weights ``1 / (1 + d_i / pressure_scale_bps)``,
  ``d_i`` being the level's distance from the mid in bps;
- walls: the level nearest the top whose quantity is at least ``wall_multiple`` times the
  median quantity of the visible levels of its side (None when there is none);
- ``bid_visible_quantity``, ``ask_visible_quantity``: all the quantity of the visible levels.

:meth:`OrderBookAnalyzer.update` reads a ``BookUpdated``;
:meth:`OrderBookAnalyzer.update_arrays` reads the same levels as float arrays
(the order book's own buffers) through a compiled kernel, for the hot path.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from keel.core.messages import BookUpdated
from keel.market_data._kernels import CROSSED, EMPTY_SIDE, book_metrics

IMBALANCE_LEVELS = (1, 5, 10)


class BookMetrics(NamedTuple):
    """The microstructure of one book (see the module doc for definitions)."""

    update_id: int
    ts_event: int
    mid_price: float
    spread: float
    spread_bps: float
    microprice: float
    imbalance_1: float
    imbalance_5: float
    imbalance_10: float
    bid_depth: float
    ask_depth: float
    book_pressure: float
    bid_wall_price: float | None
    bid_wall_quantity: float | None
    ask_wall_price: float | None
    ask_wall_quantity: float | None
    bid_visible_quantity: float
    ask_visible_quantity: float


class OrderBookAnalyzer:
    """Compute :class:`BookMetrics` for every book of one symbol.

    Parameters
    ----------
    depth_bps
        Half-width around the mid, in bps, of the depth measure.
    pressure_scale_bps
        Distance in bps at which a level's pressure weight halves.
    wall_multiple
        How many times the side's median level a wall must hold.

    Attributes
    ----------
    last : BookMetrics or None
        The metrics of the latest book.
    """

    def __init__(self, depth_bps: float = 10.0, pressure_scale_bps: float = 5.0, wall_multiple: float = 5.0) -> None:
        if depth_bps <= 0 or pressure_scale_bps <= 0 or wall_multiple <= 1:
            raise ValueError("depth_bps and pressure_scale_bps must be positive and wall_multiple above 1")
        self.depth_bps = depth_bps
        self.pressure_scale_bps = pressure_scale_bps
        self.wall_multiple = wall_multiple
        self.last: BookMetrics | None = None
        self._scratch = np.zeros(16)
        self._out = np.zeros(16)

    def update(self, book: BookUpdated) -> BookMetrics:
        """Return (and keep as ``last``) the metrics of one book.

        Raises
        ------
        ValueError
            If a side is empty or the book is crossed.
        """
        bids, asks = book.bids, book.asks
        if not bids or not asks:
            raise ValueError(f"{book.symbol} book {book.update_id} has an empty side")
        bid, bid_quantity = bids[0]
        ask, ask_quantity = asks[0]
        if bid >= ask:
            raise ValueError(f"{book.symbol} book {book.update_id} is crossed ({bid} >= {ask})")
        mid = (bid + ask) * 0.5
        spread = ask - bid
        band = mid * self.depth_bps * 1e-4
        to_bps = 1e4 / (mid * self.pressure_scale_bps)
        bid_quantities = [quantity for _, quantity in bids]
        ask_quantities = [quantity for _, quantity in asks]
        bid_depth, bid_pressure = _depth_and_pressure(bids, mid, band, to_bps, True)
        ask_depth, ask_pressure = _depth_and_pressure(asks, mid, band, to_bps, False)
        bid_wall_price, bid_wall_quantity = _wall(bids, bid_quantities, self.wall_multiple)
        ask_wall_price, ask_wall_quantity = _wall(asks, ask_quantities, self.wall_multiple)
        metrics = BookMetrics(
            book.update_id,
            book.ts_event,
            mid,
            spread,
            spread / mid * 1e4,
            (bid * ask_quantity + ask * bid_quantity) / (bid_quantity + ask_quantity),
            _imbalance(bid_quantity, ask_quantity),
            _imbalance(sum(bid_quantities[:5]), sum(ask_quantities[:5])),
            _imbalance(sum(bid_quantities[:10]), sum(ask_quantities[:10])),
            bid_depth,
            ask_depth,
            _imbalance(bid_pressure, ask_pressure),
            bid_wall_price,
            bid_wall_quantity,
            ask_wall_price,
            ask_wall_quantity,
            sum(bid_quantities),
            sum(ask_quantities),
        )
        self.last = metrics
        return metrics

    def update_arrays(
        self,
        update_id: int,
        ts_event: int,
        bid_prices: np.ndarray,
        bid_quantities: np.ndarray,
        ask_prices: np.ndarray,
        ask_quantities: np.ndarray,
    ) -> BookMetrics:
        """Return the metrics of a book given as float arrays, best first (same result as :meth:`update`).

        Raises
        ------
        ValueError
            If a side is empty or the book is crossed.
        """
        out = self._out
        status = book_metrics(
            bid_prices,
            bid_quantities,
            ask_prices,
            ask_quantities,
            self.depth_bps,
            self.pressure_scale_bps,
            self.wall_multiple,
            self._scratch,
            out,
        )
        if status == EMPTY_SIDE:
            raise ValueError(f"book {update_id} has an empty side")
        if status == CROSSED:
            raise ValueError(f"book {update_id} is crossed ({bid_prices[0]} >= {ask_prices[0]})")
        (
            mid,
            spread,
            spread_bps,
            microprice,
            imbalance_1,
            imbalance_5,
            imbalance_10,
            bid_depth,
            ask_depth,
            pressure,
            bid_wall,
            bid_wall_quantity,
            ask_wall,
            ask_wall_quantity,
            bid_visible,
            ask_visible,
        ) = out.tolist()
        metrics = BookMetrics(
            update_id,
            ts_event,
            mid,
            spread,
            spread_bps,
            microprice,
            imbalance_1,
            imbalance_5,
            imbalance_10,
            bid_depth,
            ask_depth,
            pressure,
            None if bid_wall != bid_wall else bid_wall,
            None if bid_wall_quantity != bid_wall_quantity else bid_wall_quantity,
            None if ask_wall != ask_wall else ask_wall,
            None if ask_wall_quantity != ask_wall_quantity else ask_wall_quantity,
            bid_visible,
            ask_visible,
        )
        self.last = metrics
        return metrics


def _depth_and_pressure(
    levels: tuple[tuple[float, float], ...], mid: float, band: float, to_bps: float, is_bid: bool
) -> tuple[float, float]:
    """Return the quantity within ``band`` of the mid and the distance-weighted quantity of one side."""
    depth = pressure = 0.0
    sign = 1.0 if is_bid else -1.0
    for price, quantity in levels:
        distance = (mid - price) * sign
        if distance <= band:
            depth += quantity
        pressure += quantity / (1.0 + distance * to_bps)
    return depth, pressure


def _imbalance(bid: float, ask: float) -> float:
    total = bid + ask
    return (bid - ask) / total if total > 0 else 0.0


def _wall(
    levels: tuple[tuple[float, float], ...], quantities: list[float], multiple: float
) -> tuple[float | None, float | None]:
    ordered = sorted(quantities)
    count = len(ordered)
    middle = count // 2
    median = ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) * 0.5
    threshold = multiple * median
    for price, quantity in levels:
        if quantity >= threshold:
            return price, quantity
    return None, None


def book_metrics_batch(
    bid_prices: np.ndarray,
    bid_quantities: np.ndarray,
    ask_prices: np.ndarray,
    ask_quantities: np.ndarray,
    depth_bps: float = 10.0,
    pressure_scale_bps: float = 5.0,
    wall_multiple: float = 5.0,
) -> dict[str, np.ndarray]:
    """Compute the book metrics of many books at once (the plain reference implementation).

    Parameters
    ----------
    bid_prices, bid_quantities, ask_prices, ask_quantities
        Arrays of shape (books, levels), best level first; missing levels
        have price NaN and quantity 0.

    Returns
    -------
    dict of str to ndarray
        One array per :class:`BookMetrics` field except ``update_id`` and
        ``ts_event``; wall prices and quantities are NaN where there is no wall.
    """
    bid, ask = bid_prices[:, 0], ask_prices[:, 0]
    mid = (bid + ask) * 0.5
    spread = ask - bid
    columns: dict[str, np.ndarray] = {
        "mid_price": mid,
        "spread": spread,
        "spread_bps": spread / mid * 1e4,
        "microprice": (bid * ask_quantities[:, 0] + ask * bid_quantities[:, 0])
        / (bid_quantities[:, 0] + ask_quantities[:, 0]),
    }
    bid_cumulative = np.cumsum(bid_quantities, axis=1)
    ask_cumulative = np.cumsum(ask_quantities, axis=1)
    for level in IMBALANCE_LEVELS:
        column = min(level, bid_quantities.shape[1]) - 1
        columns[f"imbalance_{level}"] = _imbalance_array(bid_cumulative[:, column], ask_cumulative[:, column])
    band = (mid * depth_bps * 1e-4)[:, None]
    bid_distance = mid[:, None] - bid_prices
    ask_distance = ask_prices - mid[:, None]
    columns["bid_depth"] = np.where(bid_distance <= band, bid_quantities, 0.0).sum(axis=1)
    columns["ask_depth"] = np.where(ask_distance <= band, ask_quantities, 0.0).sum(axis=1)
    to_bps = (1e4 / (mid * pressure_scale_bps))[:, None]
    with np.errstate(invalid="ignore"):
        bid_weighted = np.nan_to_num(bid_quantities / (1.0 + bid_distance * to_bps)).sum(axis=1)
        ask_weighted = np.nan_to_num(ask_quantities / (1.0 + ask_distance * to_bps)).sum(axis=1)
    columns["book_pressure"] = _imbalance_array(bid_weighted, ask_weighted)
    for name, prices, quantities in (("bid", bid_prices, bid_quantities), ("ask", ask_prices, ask_quantities)):
        present = ~np.isnan(prices)
        median = np.nanmedian(np.where(present, quantities, np.nan), axis=1)
        is_wall = present & (quantities >= wall_multiple * median[:, None])
        first = np.argmax(is_wall, axis=1)
        found = is_wall.any(axis=1)
        rows = np.arange(len(prices))
        columns[f"{name}_wall_price"] = np.where(found, prices[rows, first], np.nan)
        columns[f"{name}_wall_quantity"] = np.where(found, quantities[rows, first], np.nan)
        columns[f"{name}_visible_quantity"] = quantities.sum(axis=1)
    return columns


def _imbalance_array(bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    total = bid + ask
    safe = np.where(total > 0, total, 1.0)
    return np.where(total > 0, (bid - ask) / safe, 0.0)


def books_to_arrays(books: list[BookUpdated], depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stack the levels of many books into (books, depth) arrays, padding with NaN prices and 0 quantities."""
    arrays = [np.full((len(books), depth), np.nan), np.zeros((len(books), depth))]
    bid_prices, bid_quantities = arrays[0].copy(), arrays[1].copy()
    ask_prices, ask_quantities = arrays[0].copy(), arrays[1].copy()
    for row, book in enumerate(books):
        for prices, quantities, levels in (
            (bid_prices, bid_quantities, book.bids),
            (ask_prices, ask_quantities, book.asks),
        ):
            if levels:
                block = np.asarray(levels[:depth], dtype=np.float64)
                prices[row, : len(block)] = block[:, 0]
                quantities[row, : len(block)] = block[:, 1]
    return bid_prices, bid_quantities, ask_prices, ask_quantities
