"""The exchange port: the one async interface every venue adapter implements.

The simulated exchange (paper, backtest) and the Binance adapter (live) both
implement :class:`ExchangePort` and pass one conformance suite. Requests are
async methods; what the venue does with an order arrives as keel events
(``OrderAccepted``, ``OrderFilled``, ``OrderCanceled``, ``OrderExpired``,
``OrderRejected``, ``FundingPaid``, ``PositionLiquidated`` ...) handed to the
report handler the caller installs, in the order the venue reported them.

Account settings follow Binance USD-M: leverage and margin type per symbol
(``POST /fapi/v1/leverage``, ``POST /fapi/v1/marginType``), one position mode
for the account (``POST /fapi/v1/positionSide/dual``), and the leverage
brackets of ``GET /fapi/v1/leverageBracket``. A refused setting raises
:class:`~keel.core.errors.RequestRejectedError` carrying Binance's code.

The account history is Binance's trade list (``GET /fapi/v1/userTrades``) and
funding income (``GET /fapi/v1/income?incomeType=FUNDING_FEE``), as the
``OrderFilled`` and ``FundingPaid`` events the venue reported: what a client
that missed reports (a crash, a dropped stream) reconciles against.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from enum import Enum
from typing import Protocol, runtime_checkable

import msgspec

from keel.core.instruments import Instrument
from keel.core.messages import Event, FundingPaid, MarginType, OrderFilled, PositionSide, SubmitOrder, WorkingType
from keel.core.orders import OrderSide, OrderStatus, OrderType, TimeInForce

__all__ = [
    "BalanceReport",
    "ExchangePort",
    "LeverageBracket",
    "MarginType",
    "OrderStatusReport",
    "PositionMode",
    "PositionReport",
    "PositionSide",
    "ReportHandler",
    "SymbolConfiguration",
    "WorkingType",
]

ReportHandler = Callable[[Event], None]


class PositionMode(Enum):
    """The account's position mode: one net position per symbol, or a long and a short one."""

    ONE_WAY = "ONE_WAY"
    HEDGE = "HEDGE"


class LeverageBracket(msgspec.Struct, frozen=True, kw_only=True):
    """One tier of a symbol's notional and leverage brackets (``GET /fapi/v1/leverageBracket``).

    A position whose notional lies in ``(notional_floor, notional_cap]`` (the
    first tier includes zero) has maintenance margin
    ``notional * maintenance_margin_rate - maintenance_amount`` and may use at
    most ``initial_leverage``. ``notional_cap`` is None for an unbounded last tier.
    """

    bracket: int
    initial_leverage: int
    notional_floor: Decimal
    notional_cap: Decimal | None
    maintenance_margin_rate: Decimal
    maintenance_amount: Decimal


class SymbolConfiguration(msgspec.Struct, frozen=True, kw_only=True):
    """A symbol's account settings: leverage, margin type and the largest position they allow."""

    symbol: str
    leverage: int
    margin_type: MarginType
    max_notional: Decimal | None


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
    stop_price: Decimal | None = None
    position_side: PositionSide = PositionSide.BOTH
    close_position: bool = False
    working_type: WorkingType = WorkingType.CONTRACT_PRICE


class PositionReport(msgspec.Struct, frozen=True, kw_only=True):
    """One position as the venue holds it; ``quantity`` is signed (negative is short).

    ``isolated_margin`` is the isolated wallet of an ISOLATED position (zero
    when CROSSED); ``liquidation_price`` is None when no price liquidates it.
    """

    symbol: str
    quantity: Decimal
    entry_price: Decimal
    mark_price: Decimal
    unrealized_pnl: Decimal
    leverage: int
    position_side: PositionSide = PositionSide.BOTH
    margin_type: MarginType = MarginType.CROSSED
    break_even_price: Decimal | None = None
    liquidation_price: Decimal | None = None
    notional: Decimal = Decimal(0)
    initial_margin: Decimal = Decimal(0)
    maintenance_margin: Decimal = Decimal(0)
    isolated_margin: Decimal = Decimal(0)


class BalanceReport(msgspec.Struct, frozen=True, kw_only=True):
    """The account in its settlement asset (USDT).

    ``wallet_balance`` holds the cross wallet plus every isolated wallet;
    ``margin_balance`` adds the unrealized P&L; ``available_balance`` is what
    new orders may use.
    """

    asset: str
    wallet_balance: Decimal
    unrealized_pnl: Decimal
    margin_balance: Decimal
    available_balance: Decimal
    cross_wallet_balance: Decimal = Decimal(0)
    initial_margin: Decimal = Decimal(0)
    maintenance_margin: Decimal = Decimal(0)


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

    async def leverage_brackets(self, symbol: str | None = None) -> dict[str, tuple[LeverageBracket, ...]]:
        """Return the notional and leverage brackets of ``symbol`` (or of every symbol)."""

    async def set_leverage(self, symbol: str, leverage: int) -> SymbolConfiguration:
        """Set a symbol's leverage and return its configuration (-4028 when invalid)."""

    async def set_margin_type(self, symbol: str, margin_type: MarginType) -> None:
        """Set a symbol's margin type (-4046 unchanged, -4047 open orders, -4048 open position)."""

    async def set_position_mode(self, mode: PositionMode) -> None:
        """Set the account's position mode (-4059 unchanged, -4067 open orders, -4068 positions)."""

    async def position_mode(self) -> PositionMode:
        """Return the account's position mode."""

    async def symbol_configuration(self, symbol: str) -> SymbolConfiguration:
        """Return a symbol's leverage, margin type and largest position at that leverage."""

    async def account_trades(self, symbol: str | None = None, start_ns: int = 0) -> list[OrderFilled]:
        """Return the account's fills (of ``symbol``, or of every symbol) with ``ts_event >= start_ns``, in order.

        The venue's own liquidation fills (client order id ``autoclose-...``) are included.
        """

    async def funding_payments(self, start_ns: int = 0) -> list[FundingPaid]:
        """Return the account's funding payments with ``ts_event >= start_ns``, in order."""
