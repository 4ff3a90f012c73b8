"""Position accounting in exact decimals, shared by keel's books and the simulated venue.

One-way (net) positions: a signed quantity and an average entry price. A fill
in the position's direction raises the quantity and re-averages the entry; a
fill against it realizes P&L on the closed part, and a fill larger than the
position flips it, opening the remainder at the fill price.
"""

from __future__ import annotations

from decimal import Decimal

ZERO = Decimal(0)


class Position:
    """A net position in one symbol.

    Parameters
    ----------
    symbol
        The instrument.
    """

    __slots__ = ("entry_price", "quantity", "realized_pnl", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.quantity = ZERO
        self.entry_price = ZERO
        self.realized_pnl = ZERO

    def __repr__(self) -> str:
        return f"Position({self.symbol}, {self.quantity} @ {self.entry_price}, realized={self.realized_pnl})"

    def apply_fill(self, signed_quantity: Decimal, price: Decimal) -> Decimal:
        """Apply a fill (positive buys, negative sells) and return the P&L it realized."""
        if signed_quantity == 0:
            return ZERO
        held = self.quantity
        if held == 0 or (held > 0) == (signed_quantity > 0):
            total = held + signed_quantity
            self.entry_price = (abs(held) * self.entry_price + abs(signed_quantity) * price) / abs(total)
            self.quantity = total
            return ZERO
        closed = min(abs(signed_quantity), abs(held))
        direction = 1 if held > 0 else -1
        realized = closed * (price - self.entry_price) * direction
        self.realized_pnl += realized
        self.quantity = held + signed_quantity
        if self.quantity == 0:
            self.entry_price = ZERO
        elif (self.quantity > 0) != (held > 0):
            self.entry_price = price
        return realized

    def unrealized_pnl(self, mark_price: Decimal) -> Decimal:
        """Return the P&L of the open quantity at ``mark_price``."""
        return self.quantity * (mark_price - self.entry_price)

    def notional(self, mark_price: Decimal) -> Decimal:
        """Return the absolute value of the position at ``mark_price``."""
        return abs(self.quantity) * mark_price

    def funding_payment(self, rate: Decimal, mark_price: Decimal) -> Decimal:
        """Return the wallet credit of one funding settlement (negative: paid).

        Binance: payment = position size x mark price x rate; longs pay a
        positive rate to shorts.
        """
        return -self.quantity * mark_price * rate
