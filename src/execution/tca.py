"""Transaction-cost analysis of parent orders: arrival price, interval VWAP, implementation shortfall."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from keel.core.messages import ExecutionCompleted

BPS = Decimal(10_000)

TCA_COLUMNS = (
    "parent_order_id",
    "symbol",
    "side",
    "strategy",
    "style",
    "quantity",
    "filled_quantity",
    "arrival_price",
    "average_price",
    "final_price",
    "interval_vwap",
    "fees",
    "implementation_shortfall",
    "implementation_shortfall_bps",
    "spread_paid_bps",
    "estimated_impact_bps",
    "realized_impact_bps",
    "child_orders",
    "reason",
)


@dataclass(frozen=True, slots=True)
class Execution:
    """One child fill as TCA sees it: quantity, price, fee paid and the mid price when it happened."""

    quantity: Decimal
    price: Decimal
    fee: Decimal
    mid: Decimal


def implementation_shortfall(
    side_sign: int, quantity: Decimal, arrival_price: Decimal, final_price: Decimal, fills: Sequence[Execution]
) -> Decimal:
    """Return Perold's implementation shortfall in quote currency (positive: it cost).

    Execution cost ``sum(side * (price - arrival) * q)`` plus the fees, plus
    the opportunity cost of the unfilled quantity at the final price,
    ``side * (final - arrival) * unfilled``.

    Raises
    ------
    ValueError
        If the fills exceed the parent quantity or the arrival price is not positive.
    """
    if arrival_price <= 0:
        raise ValueError(f"arrival price must be positive, got {arrival_price}")
    filled = sum((f.quantity for f in fills), Decimal(0))
    if filled > quantity:
        raise ValueError(f"fills of {filled} exceed the parent quantity {quantity}")
    execution = sum((side_sign * (f.price - arrival_price) * f.quantity + f.fee for f in fills), Decimal(0))
    return execution + side_sign * (final_price - arrival_price) * (quantity - filled)


def interval_vwap(prints: Iterable[tuple[float, float]]) -> Decimal | None:
    """Return the VWAP of (price, quantity) prints, None when there were none."""
    notional = volume = 0.0
    for price, quantity in prints:
        notional += price * quantity
        volume += quantity
    return None if volume <= 0 else Decimal(repr(notional / volume))


def spread_paid_bps(side_sign: int, fills: Sequence[Execution]) -> float:
    """Return the quantity-weighted distance of the fill prices from the mid in bps (positive: paid)."""
    filled = sum((f.quantity for f in fills), Decimal(0))
    if filled == 0:
        return 0.0
    paid = sum((side_sign * (f.price - f.mid) / f.mid * f.quantity for f in fills), Decimal(0))
    return float(paid / filled * BPS)


def tca_row(event: ExecutionCompleted) -> dict[str, object]:
    """Return one tca.csv row (the columns of :data:`TCA_COLUMNS`) of a finished parent."""
    row: dict[str, object] = {}
    for column in TCA_COLUMNS:
        value = getattr(event, column)
        row[column] = value.value if column == "side" else value
    return row
