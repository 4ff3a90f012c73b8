"""Binance USD-M margin arithmetic: liquidation price and break-even price.

Liquidation price, from Binance's "How to Calculate Liquidation Price of
USDⓈ-M Futures Contracts" (support FAQ b3c689c1f50a44cabb3a84e663b81d93),
for the positions of one contract (a BOTH position in one-way mode, or the
LONG and SHORT positions in hedge mode)::

    LP = (WB - TMM1 + UPNL1 + sum(cum) - sum(side * size * EP))
         / (sum(size * MMR) - sum(side * size))

where WB is the cross wallet balance (the isolated wallet for an isolated
position, with TMM1 = UPNL1 = 0), TMM1 and UPNL1 the maintenance margin and
unrealized P&L of every other cross position, side +1 for long and -1 for
short, size the absolute quantity, EP the entry price, and MMR / cum the
maintenance rate and amount of the bracket that holds the notional *at the
liquidation price* (Binance: "substitute the maintenance margin rate and the
maintenance amount of the position level at the liquidation price").

Break-even price, from Binance's "How to Visualize the Breakeven Price of Open
Positions": the cost of the position's entries minus what its reductions
returned, divided by the signed size. keel adds the trading fees paid on the
position's fills to that cost (funding is left out, as Binance does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from keel.api.brackets import bracket_for
from keel.core.errors import RequestRejectedError
from keel.core.ports import LeverageBracket

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Leg:
    """One position of the contract whose liquidation price is wanted."""

    direction: int
    """+1 for a long, -1 for a short."""
    size: Decimal
    """Absolute quantity."""
    entry_price: Decimal
    brackets: Sequence[LeverageBracket]


def liquidation_price(
    legs: Sequence[Leg],
    wallet_balance: Decimal,
    other_maintenance: Decimal = ZERO,
    other_unrealized: Decimal = ZERO,
) -> Decimal | None:
    """Return Binance's liquidation price of a contract's positions, None when no price liquidates them.

    Parameters
    ----------
    legs
        The contract's non-zero positions (one in one-way mode, up to two in hedge mode).
    wallet_balance
        WB: the cross wallet balance, or the isolated wallet of an isolated position.
    other_maintenance, other_unrealized
        TMM1 and UPNL1: maintenance margin and unrealized P&L of every other
        cross position (zero for an isolated position).

    Returns
    -------
    Decimal or None
        The mark price at which the margin balance equals the maintenance
        margin; None when the positions offset each other or that price is
        not positive.
    """
    live = [leg for leg in legs if leg.size > 0]
    if not live:
        return None
    chosen = [bracket_for(leg.brackets, leg.size * leg.entry_price) for leg in live]
    # The brackets depend on the notional at the answer: iterate until they agree with it.
    for _ in range(max(len(leg.brackets) for leg in live) + 1):
        price = _solve(live, chosen, wallet_balance, other_maintenance, other_unrealized)
        if price is None or price <= 0:
            return None
        try:
            at_price = [bracket_for(leg.brackets, leg.size * price) for leg in live]
        except RequestRejectedError:
            return price
        if at_price == chosen:
            return price
        chosen = at_price
    return price


def _solve(
    legs: Sequence[Leg],
    brackets: Sequence[LeverageBracket],
    wallet_balance: Decimal,
    other_maintenance: Decimal,
    other_unrealized: Decimal,
) -> Decimal | None:
    numerator = wallet_balance - other_maintenance + other_unrealized
    denominator = ZERO
    for leg, bracket in zip(legs, brackets, strict=True):
        numerator += bracket.maintenance_amount - leg.direction * leg.size * leg.entry_price
        denominator += leg.size * bracket.maintenance_margin_rate - leg.direction * leg.size
    if denominator == 0:
        return None
    return numerator / denominator


def break_even_price(signed_quantity: Decimal, cost: Decimal) -> Decimal | None:
    """Return ``cost / signed_quantity``: the price at which closing the position nets zero.

    ``cost`` is the signed notional of the position's fills (buys positive,
    sells negative) plus the fees paid on them; None for a flat position.
    """
    if signed_quantity == 0:
        return None
    return cost / signed_quantity
