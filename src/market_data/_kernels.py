"""Compiled inner loops of the order book and the book analyzer (numba).

Each kernel has a plain counterpart it must agree with: the book's against a
dictionary book (property test), the analyzer's against
:func:`keel.market_data.book_analyzer.book_metrics_batch` on the real session.
"""

from __future__ import annotations

import numpy as np
from numba import njit

OUTSIDE = -2
"""Returned by :func:`apply_levels` when a tick lies outside the dense window (nothing was changed)."""


@njit(cache=True)
def next_level(levels: np.ndarray, start: int, is_bid: bool) -> int:
    """Return the index of the best non-empty level strictly worse than ``start``, or -1."""
    if is_bid:
        for index in range(start - 1, -1, -1):
            if levels[index] != 0.0:
                return index
    else:
        for index in range(start + 1, levels.size):
            if levels[index] != 0.0:
                return index
    return -1


@njit(cache=True)
def apply_levels(
    levels: np.ndarray, base: int, ticks: np.ndarray, quantities: np.ndarray, best: int, is_bid: bool
) -> int:
    """Set levels (quantity 0 removes) and return the new best index (-1 if empty, OUTSIDE if a tick is out)."""
    size = levels.size
    for i in range(ticks.size):
        index = ticks[i] - base
        if index < 0 or index >= size:
            return OUTSIDE
    for i in range(ticks.size):
        index = ticks[i] - base
        quantity = quantities[i]
        levels[index] = quantity
        if quantity > 0.0 and (best < 0 or (index > best if is_bid else index < best)):
            best = index
    if best >= 0 and levels[best] == 0.0:
        best = next_level(levels, best, is_bid)
    return best


@njit(cache=True)
def top_levels(
    levels: np.ndarray,
    base: int,
    best: int,
    depth: int,
    is_bid: bool,
    numerator: int,
    denominator: int,
    out_ticks: np.ndarray,
    out_prices: np.ndarray,
    out_quantities: np.ndarray,
) -> int:
    """Write up to ``depth`` levels from ``best`` outward (ticks, float prices, quantities); return how many."""
    count = 0
    index = best
    step = -1 if is_bid else 1
    size = levels.size
    while 0 <= index < size and count < depth:
        quantity = levels[index]
        if quantity != 0.0:
            tick = index + base
            out_ticks[count] = tick
            out_prices[count] = (tick * numerator) / denominator
            out_quantities[count] = quantity
            count += 1
        index += step
    return count


@njit(cache=True)
def _side_metrics(
    prices: np.ndarray,
    quantities: np.ndarray,
    mid: float,
    band: float,
    to_bps: float,
    is_bid: bool,
    wall_multiple: float,
    out: np.ndarray,
) -> None:
    """Write one side's sums at 1/5/10 levels, depth, pressure, wall price and size, and visible total."""
    total = depth = pressure = 0.0
    first = five = ten = 0.0
    for i in range(prices.size):
        quantity = quantities[i]
        total += quantity
        if i < 1:
            first = total
        if i < 5:
            five = total
        if i < 10:
            ten = total
        distance = mid - prices[i] if is_bid else prices[i] - mid
        if distance <= band:
            depth += quantity
        pressure += quantity / (1.0 + distance * to_bps)
    threshold = wall_multiple * np.median(quantities)
    wall_price = wall_quantity = np.nan
    for i in range(prices.size):
        if quantities[i] >= threshold:
            wall_price = prices[i]
            wall_quantity = quantities[i]
            break
    out[0] = first
    out[1] = five
    out[2] = ten
    out[3] = depth
    out[4] = pressure
    out[5] = wall_price
    out[6] = wall_quantity
    out[7] = total


@njit(cache=True)
def _imbalance(bid: float, ask: float) -> float:
    total = bid + ask
    return (bid - ask) / total if total > 0 else 0.0


@njit(cache=True)
def book_metrics(
    bid_prices: np.ndarray,
    bid_quantities: np.ndarray,
    ask_prices: np.ndarray,
    ask_quantities: np.ndarray,
    depth_bps: float,
    pressure_scale_bps: float,
    wall_multiple: float,
    scratch: np.ndarray,
    out: np.ndarray,
) -> None:
    """Write into ``out`` (16 floats): mid, spread, spread_bps, microprice, imbalance 1/5/10, bid and ask
    depth, pressure, bid wall price and size, ask wall price and size (NaN: none), bid and ask visible
    quantity. ``scratch`` holds 16 floats of working space.
    """
    bid, ask = bid_prices[0], ask_prices[0]
    bid_quantity, ask_quantity = bid_quantities[0], ask_quantities[0]
    mid = (bid + ask) * 0.5
    spread = ask - bid
    band = mid * depth_bps * 1e-4
    to_bps = 1e4 / (mid * pressure_scale_bps)
    bids = scratch[:8]
    asks = scratch[8:16]
    _side_metrics(bid_prices, bid_quantities, mid, band, to_bps, True, wall_multiple, bids)
    _side_metrics(ask_prices, ask_quantities, mid, band, to_bps, False, wall_multiple, asks)
    out[0] = mid
    out[1] = spread
    out[2] = spread / mid * 1e4
    out[3] = (bid * ask_quantity + ask * bid_quantity) / (bid_quantity + ask_quantity)
    out[4] = _imbalance(bids[0], asks[0])
    out[5] = _imbalance(bids[1], asks[1])
    out[6] = _imbalance(bids[2], asks[2])
    out[7] = bids[3]
    out[8] = asks[3]
    out[9] = _imbalance(bids[4], asks[4])
    out[10] = bids[5]
    out[11] = bids[6]
    out[12] = asks[5]
    out[13] = asks[6]
    out[14] = bids[7]
    out[15] = asks[7]
