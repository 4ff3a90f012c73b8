"""Compiled inner loops of the order book, the book analyzer and the trade-flow analyzer (numba).

Each kernel has a plain counterpart it must agree with: the book's (levels and
published top of book) against a dictionary book (property tests), the
analyzer's against :func:`keel.market_data.book_analyzer.book_metrics_batch`
on the real session, the trade flow's against
:func:`keel.market_data.tick_analyzer.tick_metrics_batch` on the real tape, and
:func:`exact_sum` against :func:`math.fsum`. Hot-path kernels take few array
arguments (state packed in one float and one int buffer) because each argument
costs dispatch time on every call.
"""

from __future__ import annotations

import numpy as np
from numba import njit

OUTSIDE = -2
"""Returned by :func:`apply_levels` when a tick lies outside the dense window (nothing was changed)."""
CROSSED = -1
"""Returned by :func:`top_of_book` and :func:`book_metrics` when the best bid is at or above the best ask."""
MERGE = -2
"""Returned by :func:`top_of_book` when a level outside the dense windows belongs in the top."""
EMPTY_SIDE = -3
"""Returned by :func:`book_metrics` when a side has no level."""


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
def top_of_book(
    bid_levels: np.ndarray,
    bid_base: int,
    bid_best: int,
    bid_far: int,
    ask_levels: np.ndarray,
    ask_base: int,
    ask_best: int,
    ask_far: int,
    depth: int,
    numerator: int,
    denominator: int,
    ticks: np.ndarray,
    out: np.ndarray,
) -> tuple[int, int]:
    """Write both sides' ``depth`` best dense levels into ``out`` (rows: bid prices, bid quantities, ask prices,
    ask quantities; ``ticks`` (2, depth) is scratch) and return how many per side.

    ``bid_far`` and ``ask_far`` are the best levels kept outside the dense windows (0: none). Returns
    (CROSSED, CROSSED) if the book is crossed and (MERGE, MERGE) if a far level belongs in the top (the
    caller must merge the sides by tick instead).
    """
    best_bid = bid_best + bid_base if bid_best >= 0 else 0
    if bid_far > best_bid:
        best_bid = bid_far
    best_ask = ask_best + ask_base if ask_best >= 0 else 0
    if ask_far != 0 and (best_ask == 0 or ask_far < best_ask):
        best_ask = ask_far
    if best_bid != 0 and best_ask != 0 and best_bid >= best_ask:
        return CROSSED, CROSSED
    bids = asks = 0
    if bid_best >= 0:
        bids = top_levels(bid_levels, bid_base, bid_best, depth, True, numerator, denominator, ticks[0], out[0], out[1])
    if ask_best >= 0:
        asks = top_levels(
            ask_levels, ask_base, ask_best, depth, False, numerator, denominator, ticks[1], out[2], out[3]
        )
    if depth > 0 and bid_far != 0 and (bids < depth or bid_far > ticks[0, bids - 1]):
        return MERGE, MERGE
    if depth > 0 and ask_far != 0 and (asks < depth or ask_far < ticks[1, asks - 1]):
        return MERGE, MERGE
    return bids, asks


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
) -> int:
    """Write into ``out`` (16 floats): mid, spread, spread_bps, microprice, imbalance 1/5/10, bid and ask
    depth, pressure, bid wall price and size, ask wall price and size (NaN: none), bid and ask visible
    quantity. ``scratch`` holds 16 floats of working space. Return 0, or EMPTY_SIDE or CROSSED (nothing
    written).
    """
    if bid_prices.size == 0 or ask_prices.size == 0:
        return EMPTY_SIDE
    bid, ask = bid_prices[0], ask_prices[0]
    if bid >= ask:
        return CROSSED
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
    return 0


@njit(cache=True)
def exact_sum(values: np.ndarray) -> float:
    """Return the correctly rounded sum of finite floats (Shewchuk's algorithm, as :func:`math.fsum`)."""
    partials = np.empty(values.size + 1)
    count = 0
    for value in values:
        x = value
        kept = 0
        for j in range(count):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low != 0.0:
                partials[kept] = low
                kept += 1
            x = high
        count = kept
        if x != 0.0:
            partials[count] = x
            count += 1
    high = 0.0
    if count > 0:
        count -= 1
        high = partials[count]
        low = 0.0
        while count > 0:
            x = high
            count -= 1
            y = partials[count]
            high = x + y
            low = y - (high - x)
            if low != 0.0:
                break
        # Round half to even the way math.fsum does when the remaining partials push past a tie.
        if count > 0 and ((low < 0.0 and partials[count - 1] < 0.0) or (low > 0.0 and partials[count - 1] > 0.0)):
            y = low * 2.0
            x = high + y
            if y == x - high:
                high = x
    return high


# Layout of the trade-flow buffers (see trade_flow): floats first, then the int64 slots.
FLOW_SUM, FLOW_VOLUME, LAMBDA_X, LAMBDA_Y, LAMBDA_XX, LAMBDA_XY, SQUARED_RETURNS, RUN_PRICE, BURST_MULTIPLE = range(9)
OUT = 9
"""Where trade_flow writes its five results in the float buffer."""
FLOAT_HEADER = 14
"""The window rings follow: flow (size x 2), lambda (size x 4), squared returns (size x 1), row by row."""
(
    FLOW_SIZE,
    LAMBDA_SIZE,
    RETURNS_SIZE,
    FLOW_COUNT,
    FLOW_PENDING,
    LAMBDA_COUNT,
    LAMBDA_PENDING,
    RETURNS_COUNT,
    RETURNS_PENDING,
    TIMES_HEAD,
    TIMES_COUNT,
    FIRST_TS,
    TRADES,
    RUN_TS,
    RUN_SELLER,
    RUN_LEVELS,
    BURST_WINDOW_NS,
    BURST_MIN_TRADES,
    SWEEP_LEVELS,
) = range(19)
INT_HEADER = 19
"""The ring of trade times in the burst window follows, to the end of the int buffer."""
NEEDS_ROOM = -1
"""Returned by :func:`trade_flow` when the ring of trade times is full (nothing was changed): grow it, call again."""
EXACT_LIMIT = 1 << 53
"""Below this an int64 converts to float exactly, so an int division matches Python's."""


@njit(cache=True)
def _push(floats: np.ndarray, ints: np.ndarray, ring: int, size: int, count_slot: int, sums: int, row: tuple) -> None:
    """Add ``row`` to a window ring of ``size`` rows (at ``ring`` in ``floats``) and to its running sums.

    Like a deque of the last ``size`` rows: the oldest row leaves the sums when a new one enters; every
    ``size`` rows the sums are re-added exactly so rounding cannot drift. ``ints[count_slot]`` counts the
    rows ever added and ``ints[count_slot + 1]`` those since the last exact re-adding.
    """
    width = len(row)
    count = ints[count_slot]
    slot = ring + (count % size) * width
    if count >= size:
        for k in range(width):
            floats[sums + k] -= floats[slot + k]
    for k in range(width):
        floats[slot + k] = row[k]
        floats[sums + k] += row[k]
    ints[count_slot] = count + 1
    pending = ints[count_slot + 1] + 1
    if pending >= size:
        pending = 0
        for k in range(width):
            floats[sums + k] = exact_sum(floats[ring + k : ring + size * width : width])
    ints[count_slot + 1] = pending


@njit(cache=True)
def trade_flow(
    floats: np.ndarray, ints: np.ndarray, ts: int, price: float, previous: float, quantity: float, seller: bool
) -> int:
    """Update the trade-flow windows, burst and sweep with one trade (``previous``: the last trade's price,
    NaN for the first) and write into ``floats[OUT:OUT + 5]``: order-flow imbalance, Kyle's lambda and
    realized volatility (NaN: not yet), burst and sweep (0 or 1; burst -1 when only Python's exact int
    division can decide it). Return 0, or NEEDS_ROOM.
    """
    if ints[TIMES_COUNT] == ints.size - INT_HEADER:
        return NEEDS_ROOM
    flow_size, lambda_size, returns_size = ints[FLOW_SIZE], ints[LAMBDA_SIZE], ints[RETURNS_SIZE]
    flow_ring = FLOAT_HEADER
    lambda_ring = flow_ring + 2 * flow_size
    returns_ring = lambda_ring + 4 * lambda_size
    signed = -quantity if seller else quantity
    if previous == previous:
        change = price - previous
        log_return = np.log(price / previous)
        _push(floats, ints, returns_ring, returns_size, RETURNS_COUNT, SQUARED_RETURNS, (log_return * log_return,))
        row = (signed, change, signed * signed, signed * change)
        _push(floats, ints, lambda_ring, lambda_size, LAMBDA_COUNT, LAMBDA_X, row)
    _push(floats, ints, flow_ring, flow_size, FLOW_COUNT, FLOW_SUM, (signed, quantity))
    volume = floats[FLOW_VOLUME]
    floats[OUT] = floats[FLOW_SUM] / volume if volume > 0 else 0.0
    floats[OUT + 1] = _slope(floats, lambda_size) if ints[LAMBDA_COUNT] >= lambda_size else np.nan
    full = ints[RETURNS_COUNT] >= returns_size
    floats[OUT + 2] = np.sqrt(max(floats[SQUARED_RETURNS], 0.0)) if full else np.nan
    floats[OUT + 3] = _burst(ints, ts, floats[BURST_MULTIPLE])
    floats[OUT + 4] = _sweep(floats, ints, ts, seller, price)
    return 0


@njit(cache=True)
def _slope(floats: np.ndarray, n: int) -> float:
    """Least-squares slope of y on x from the lambda window's sums (NaN when x does not vary)."""
    sum_x, sum_y, sum_xx, sum_xy = floats[LAMBDA_X], floats[LAMBDA_Y], floats[LAMBDA_XX], floats[LAMBDA_XY]
    sxx = sum_xx - sum_x * sum_x / n
    if sxx <= 1e-12 * max(sum_xx, 1e-300):
        return np.nan
    return (sum_xy - sum_x * sum_y / n) / sxx


@njit(cache=True)
def _burst(ints: np.ndarray, ts: int, burst_multiple: float) -> float:
    """Put ``ts`` in the ring of trade times, drop those out of the window; return burst (0, 1; -1: ask Python)."""
    capacity = ints.size - INT_HEADER
    head = ints[TIMES_HEAD]
    count = ints[TIMES_COUNT]
    ints[INT_HEADER + (head + count) % capacity] = ts
    count += 1
    window = ints[BURST_WINDOW_NS]
    horizon = ts - window
    while ints[INT_HEADER + head] <= horizon:
        head = (head + 1) % capacity
        count -= 1
    ints[TIMES_HEAD] = head
    ints[TIMES_COUNT] = count
    if ints[TRADES] == 0:
        ints[FIRST_TS] = ts
    trades = ints[TRADES] + 1
    ints[TRADES] = trades
    elapsed = ts - ints[FIRST_TS]
    if elapsed < window or count < ints[BURST_MIN_TRADES]:
        return 0.0
    if trades * window >= EXACT_LIMIT or elapsed >= EXACT_LIMIT:
        return -1.0
    return 1.0 if count >= burst_multiple * (trades * window / elapsed) else 0.0


@njit(cache=True)
def _sweep(floats: np.ndarray, ints: np.ndarray, ts: int, seller: bool, price: float) -> float:
    """Follow the run of one taker order (same time and side; after _burst counted the trade); return sweep."""
    side = 1 if seller else 0
    if ints[TRADES] == 1 or ts != ints[RUN_TS] or side != ints[RUN_SELLER]:
        ints[RUN_TS] = ts
        ints[RUN_SELLER] = side
        ints[RUN_LEVELS] = 1
    elif price != floats[RUN_PRICE]:
        ints[RUN_LEVELS] += 1
    floats[RUN_PRICE] = price
    return 1.0 if ints[RUN_LEVELS] >= ints[SWEEP_LEVELS] else 0.0
