"""Fill rules of the simulated venue, against bars and against the recorded order book.

Bars (documented, conservative rules; an order is only matched against bars
that open at or after it became active, never against the bar that was
closing when it was sent):

- a taker fill (MARKET, a marketable LIMIT on its first bar, a triggered
  stop) is priced at the bar's open moved against the taker by the slippage
  and rounded to the tick away from it; a marketable LIMIT never pays more
  than its limit;
- a resting LIMIT order fills as a maker at its own price when the bar
  trades *through* it (low strictly below a buy, high strictly above a sell);
  a bar that only touches it (low equal to a buy, high equal to a sell)
  fills it with the touch-fill probability (the queue ahead of it may have
  taken all that traded there), drawn deterministically from the seed, the
  order and the bar;
- a stop triggering on the last price triggers inside the bar when its range
  reaches the stop, and fills at the stop (or at the open when the bar opened
  beyond it) moved by the slippage;
- every fill is capped by the participation rate of the bar's volume, shared
  by all of the account's orders in that symbol and bar.

Book (``BookUpdated`` top levels and ``TradeTick`` prints):

- a taker walks the displayed levels of the other side, best first, taking
  at most each level's displayed quantity (less what earlier takers already
  took from that level since the last update) and never past its limit;
- a resting order joins the queue behind the displayed quantity at its
  price; a book update can only shorten the queue (to the displayed
  quantity, when less), and only printed trades fill: a trade at its price
  first consumes the queue ahead, a trade through its price fills it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from decimal import Decimal

from keel.core.floats import decimal_of
from keel.core.instruments import Instrument, Rounding
from keel.core.orders import OrderSide, OrderType

ZERO = Decimal(0)
BPS = Decimal("0.0001")

Level = tuple[float, float]


def slipped_price(side: OrderSide, reference: Decimal, slippage: Decimal, instrument: Instrument) -> Decimal:
    """Move ``reference`` against a taker by ``slippage`` (a fraction) and round away from the taker."""
    if side is OrderSide.BUY:
        return instrument.round_price(reference * (1 + slippage), Rounding.UP)
    return instrument.round_price(reference * (1 - slippage), Rounding.DOWN)


def participation_budget(volume: float, rate: Decimal | None, step: Decimal) -> Decimal | None:
    """Return the most the account may trade in a bar of ``volume`` (None: no cap), on the step grid."""
    if rate is None:
        return None
    raw = decimal_of(volume) * rate
    return (raw // step) * step


def capped(quantity: Decimal, budget: Decimal | None) -> Decimal:
    """Return ``quantity`` limited by a participation budget."""
    return quantity if budget is None else min(quantity, budget)


def crosses(side: OrderSide, limit: Decimal, price: Decimal) -> bool:
    """Return whether a trade at ``price`` is at or better than ``limit`` for ``side``."""
    return price <= limit if side is OrderSide.BUY else price >= limit


def stop_triggered(order_type: OrderType, side: OrderSide, stop: Decimal, price: Decimal) -> bool:
    """Return whether ``price`` triggers a STOP_MARKET or TAKE_PROFIT_MARKET order.

    A BUY stop triggers at or above its stop, a SELL stop at or below; a
    take-profit the other way round.
    """
    rising = (order_type is OrderType.STOP_MARKET) == (side is OrderSide.BUY)
    return price >= stop if rising else price <= stop


def bar_trigger_reference(
    order_type: OrderType, side: OrderSide, stop: Decimal, bar_open: Decimal, high: Decimal, low: Decimal
) -> Decimal | None:
    """Return the price a last-price stop triggered at inside a bar, None if the bar never reached it.

    The open when the bar opened beyond the stop (a gap: the stop price was
    never traded), the stop itself when the bar's range reached it.
    """
    if stop_triggered(order_type, side, stop, bar_open):
        return bar_open
    rising = (order_type is OrderType.STOP_MARKET) == (side is OrderSide.BUY)
    reached = high >= stop if rising else low <= stop
    return stop if reached else None


def traded_through(side: OrderSide, limit: Decimal, high: Decimal, low: Decimal) -> bool:
    """Return whether a bar traded strictly through a resting limit price."""
    return low < limit if side is OrderSide.BUY else high > limit


def touched(side: OrderSide, limit: Decimal, high: Decimal, low: Decimal) -> bool:
    """Return whether a bar's extreme on the order's side is exactly the resting limit price."""
    return low == limit if side is OrderSide.BUY else high == limit


def touch_draw(seed: int, client_order_id: str, bar_open_ns: int) -> float:
    """Return a uniform draw in [0, 1) fixed by the seed, the order and the bar (the same in every run)."""
    digest = hashlib.blake2b(f"{seed}:{client_order_id}:{bar_open_ns}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def walk_book(
    levels: Sequence[Level],
    quantity: Decimal,
    limit: Decimal | None,
    side: OrderSide,
    consumed: dict[Decimal, Decimal],
) -> list[tuple[Decimal, Decimal]]:
    """Take up to ``quantity`` from the other side's levels, best first; return (price, quantity) fills.

    ``levels`` are the asks for a BUY, the bids for a SELL. ``consumed`` (by
    price) is what earlier takers took since the last book update; it is
    updated in place. Nothing trades beyond ``limit``.
    """
    fills: list[tuple[Decimal, Decimal]] = []
    remaining = quantity
    for raw_price, raw_quantity in levels:
        if remaining <= 0:
            break
        price = decimal_of(raw_price)
        if limit is not None and not crosses(side, limit, price):
            break
        available = decimal_of(raw_quantity) - consumed.get(price, ZERO)
        if available <= 0:
            continue
        taken = min(available, remaining)
        consumed[price] = consumed.get(price, ZERO) + taken
        fills.append((price, taken))
        remaining -= taken
    return fills


def fillable(
    levels: Sequence[Level], limit: Decimal | None, side: OrderSide, consumed: dict[Decimal, Decimal]
) -> Decimal:
    """Return how much a taker could take from the displayed levels within ``limit``."""
    total = ZERO
    for raw_price, raw_quantity in levels:
        price = decimal_of(raw_price)
        if limit is not None and not crosses(side, limit, price):
            break
        total += max(decimal_of(raw_quantity) - consumed.get(price, ZERO), ZERO)
    return total


def displayed_quantity(levels: Sequence[Level], price: Decimal, side: OrderSide) -> Decimal | None:
    """Return the displayed quantity at ``price`` on a side's levels (best first).

    Zero when the price lies inside the displayed range but has no level;
    None when it lies beyond the deepest displayed level (unknown).
    """
    for raw_price, raw_quantity in levels:
        level_price = decimal_of(raw_price)
        if level_price == price:
            return decimal_of(raw_quantity)
        beyond = level_price < price if side is OrderSide.BUY else level_price > price
        if beyond:
            return ZERO
    return None


def queue_after_trade(
    side: OrderSide, limit: Decimal, queue_ahead: Decimal, trade_price: Decimal, trade_quantity: Decimal
) -> tuple[Decimal, Decimal]:
    """Apply a print that hit our side to a resting order; return (new queue ahead, quantity filled).

    A print at the order's price consumes the queue ahead first; a print
    through it means the level was swept, so the whole print fills the order.
    """
    if trade_price == limit:
        if queue_ahead >= trade_quantity:
            return queue_ahead - trade_quantity, ZERO
        return ZERO, trade_quantity - queue_ahead
    if crosses(side, limit, trade_price):
        return ZERO, trade_quantity
    return queue_ahead, ZERO
