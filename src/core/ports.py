"""The exchange port: the one async interface every venue adapter implements.

The simulated exchange (paper, backtest) and the Binance adapter (live) both
implement :class:`ExchangePort` and pass one conformance suite. Requests are
async methods; what the venue does with an order arrives as keel events
(``OrderAccepted``, ``OrderFilled``, ``OrderCanceled`` ...) handed to the
report handler the caller installs, in the order the venue reported them.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Protocol, runtime_checkable

import msgspec

from keel.core.instruments import Instrument
from keel.core.messages import Event, SubmitOrder
from keel.core.orders import OrderSide, OrderStatus, OrderType, TimeInForce

ReportHandler = Callable[[Event], None]


class OrderStatusReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the venue says about one order."""

    client_order_id: str
    venue_order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    time_in_force: TimeInForce
    status: OrderStatus
    quantity: Decimal
    price: Decimal | None
    filled_quantity: Decimal
    average_price: Decimal | None
    reduce_only: bool
    ts_last: int


class PositionReport(msgspec.Struct, frozen=True, kw_only=True):
    """One position as the venue holds it; ``quantity`` is signed."""

    symbol: str
    quantity: Decimal
    entry_price: Decimal
    mark_price: Decimal
    unrealized_pnl: Decimal
    leverage: int


class BalanceReport(msgspec.Struct, frozen=True, kw_only=True):
    """The account in its settlement asset (USDT)."""

    asset: str
    wallet_balance: Decimal
    unrealized_pnl: Decimal
    margin_balance: Decimal
    available_balance: Decimal


@runtime_checkable
class ExchangePort(Protocol):
    """Requests to a venue; results come back as events through the report handler."""

    name: str
    """Venue name used in logs and metrics."""

    is_synchronous: bool
    """True when every coroutine completes without suspending (the simulated venue)."""

    def set_report_handler(self, handler: ReportHandler) -> None:
        """Install the callback that receives execution reports as keel events."""

    async def submit_order(self, command: SubmitOrder) -> None:
        """Send an order; the outcome arrives as OrderAccepted / OrderRejected / OrderFilled."""

    async def cancel_order(self, symbol: str, client_order_id: str) -> None:
        """Cancel one order; the outcome arrives as OrderCanceled (or an error code)."""

    async def cancel_all_orders(self, symbol: str | None = None) -> None:
        """Cancel every open order of ``symbol`` (or of every symbol)."""

    async def query_order(self, symbol: str, client_order_id: str) -> OrderStatusReport | None:
        """Return the venue's view of one order, None if it does not know it."""

    async def open_orders(self, symbol: str | None = None) -> list[OrderStatusReport]:
        """Return the open orders."""

    async def positions(self) -> list[PositionReport]:
        """Return the non-zero positions."""

    async def balances(self) -> BalanceReport:
        """Return the account balance."""

    async def exchange_info(self) -> dict[str, Instrument]:
        """Return the tradable instruments with their filters."""
