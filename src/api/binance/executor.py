"""Paper orders on Binance's live market from Python (UC-4.1's ``BinanceExecutor(paper_trading=True)``).

:class:`BinanceExecutor` sends orders to keel's simulated Binance venue (the
one paper runs trade on: Binance's filters, fees, margin and matching), fed
by Binance's public streams of each symbol it trades through a
:class:`~keel.api.binance.websocket.BinanceWebSocket`: market orders take the
live book, limit orders rest in it and fill from the live prints.

It sends paper orders only. A live order goes through keel's risk layer,
which approves and sizes every order of a live session (``keel run --mode
live``, or ``keel.from_config(mode="live")`` from Python), never around it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from keel.api.binance.websocket import BinanceWebSocket
from keel.api.simulated_exchange import SimulatedExchange
from keel.core.clock import SimulatedClock
from keel.core.instruments import BUNDLED_INSTRUMENTS_FILE, Instrument, load_instruments
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    Event,
    FundingRateUpdated,
    MarketDataEvent,
    MarkPriceUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    SubmitOrder,
    TradeTick,
)
from keel.core.orders import OrderSide, OrderType, TimeInForce

_LIVE_REFUSED = (
    "BinanceExecutor sends paper orders only: a live order goes through keel's risk layer, which approves and "
    "sizes every order of a live session (keel run --mode live, or keel.from_config(mode='live') from Python)"
)


@dataclass(frozen=True)
class OrderResult:
    """Where one paper order stands; fields also read by name (``result["status"]``).

    Attributes
    ----------
    status
        NEW (accepted, resting), PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED or
        REJECTED (``code`` and ``reason`` say why, as Binance would).
    filled_quantity, average_price, commission
        The fills so far (``average_price`` None before the first), in USDT.
    fills
        Every fill, in order.
    """

    client_order_id: str
    symbol: str
    side: str
    order_type: str
    quantity: Decimal
    status: str
    filled_quantity: Decimal
    average_price: Decimal | None
    commission: Decimal
    code: int | None
    reason: str
    fills: tuple[OrderFilled, ...]

    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


class BinanceExecutor:
    """Send paper orders to keel's simulated Binance venue, priced by Binance's live public streams.

    Parameters
    ----------
    paper_trading
        Must be True (see the module doc: live orders go through a live session).
    initial_balance
        The paper account's USDT wallet.
    leverage
        The starting leverage of every symbol.
    instruments
        The instruments (their filters and fees), or a YAML file of them.
    ws_url, rest_url, testnet
        Where Binance's public streams are (see :class:`BinanceWebSocket`).
    connect_timeout_seconds
        How long the first order of a symbol waits for its synced book.

    Raises
    ------
    ValueError
        If ``paper_trading`` is False.
    """

    def __init__(
        self,
        paper_trading: bool = True,
        *,
        initial_balance: Decimal | int | str = Decimal("10000"),
        leverage: int = 5,
        instruments: Mapping[str, Instrument] | str | Path = BUNDLED_INSTRUMENTS_FILE,
        ws_url: str | None = None,
        rest_url: str | None = None,
        testnet: bool = False,
        connect_timeout_seconds: float = 30.0,
    ) -> None:
        if not paper_trading:
            raise ValueError(_LIVE_REFUSED)
        self.instruments = load_instruments(instruments) if isinstance(instruments, str | Path) else dict(instruments)
        # The venue's time is the market's: each event moves it on (Binance's clock, not this machine's).
        self.clock = SimulatedClock(0)
        self.exchange = SimulatedExchange(
            self.instruments, self.clock, initial_balance=Decimal(initial_balance), leverage=leverage
        )
        self.exchange.set_report_handler(self._on_report)
        self.websocket = BinanceWebSocket(
            ws_url, rest_url, testnet=testnet, instruments=self.instruments, on_event=self._on_market
        )
        self.connect_timeout_seconds = connect_timeout_seconds
        self._orders: dict[str, SubmitOrder] = {}
        self._reports: defaultdict[str, list[Event]] = defaultdict(list)
        self._numbers = itertools.count(1)
        self._market: dict[type[MarketDataEvent], Callable[[Any], None]] = {
            BookUpdated: self.exchange.on_book,
            TradeTick: self.exchange.on_trade,
            MarkPriceUpdated: self.exchange.on_mark_price,
            FundingRateUpdated: self.exchange.on_funding,
            BarClosed: self.exchange.on_bar,
        }

    def __repr__(self) -> str:
        return f"BinanceExecutor(paper, {len(self._orders)} orders, following {self.websocket.symbols})"

    async def submit_order(self, order: SubmitOrder | Mapping[str, Any]) -> OrderResult:
        """Send a paper order; return where it stands once the venue handled it.

        Parameters
        ----------
        order
            A :class:`~keel.core.messages.SubmitOrder`, or a mapping with
            ``symbol``, ``side`` (BUY/SELL), ``quantity`` (Decimal, int or
            decimal string), optionally ``type`` (MARKET, the default, or
            LIMIT), ``price``, ``time_in_force``, ``reduce_only`` and
            ``client_order_id``.

        Raises
        ------
        TypeError, ValueError
            For an order that is not one (a float quantity, an unknown side or
            type, a ``client_order_id`` used before): nothing is sent.
        RetryLaterError
            If the symbol's live book could not be followed (Binance out of reach).
        """
        command = order if isinstance(order, SubmitOrder) else self._command(order)
        if command.client_order_id in self._orders:
            raise ValueError(f"client_order_id {command.client_order_id!r} was used already: give each order its own")
        await self.websocket.connect_orderbook(command.symbol, self.connect_timeout_seconds)
        if not isinstance(order, SubmitOrder):
            now = self.clock.timestamp_ns()
            command = msgspec.structs.replace(command, ts_event=now, ts_init=now)
        self._orders[command.client_order_id] = command
        self.exchange.submit(command)
        return self.order_status(command.client_order_id)

    async def cancel_order(self, client_order_id: str) -> OrderResult:
        """Cancel a working paper order; return where it stands (a finished order stays as it was)."""
        command = self._known(client_order_id)
        await self.exchange.cancel_order(command.symbol, client_order_id)
        return self.order_status(client_order_id)

    def order_status(self, client_order_id: str) -> OrderResult:
        """Return where a paper order stands.

        Raises
        ------
        KeyError
            If no order of this executor has that id.
        """
        command = self._known(client_order_id)
        reports = self._reports[client_order_id]
        fills = tuple(report for report in reports if isinstance(report, OrderFilled))
        filled = sum((fill.last_quantity for fill in fills), Decimal(0))
        notional = sum((fill.last_quantity * fill.last_price for fill in fills), Decimal(0))
        ended = next(
            (r for r in reversed(reports) if isinstance(r, OrderRejected | OrderCanceled | OrderExpired)), None
        )
        return OrderResult(
            client_order_id=client_order_id,
            symbol=command.symbol,
            side=command.side.value,
            order_type=command.order_type.value,
            quantity=command.quantity,
            status=_status(reports, ended, filled, command.quantity),
            filled_quantity=filled,
            average_price=notional / filled if filled else None,
            commission=sum((fill.commission for fill in fills), Decimal(0)),
            code=ended.code if isinstance(ended, OrderRejected) else None,
            reason=getattr(ended, "reason", ""),
            fills=fills,
        )

    async def positions(self) -> dict[str, Decimal]:
        """Return the paper account's signed position quantity by symbol (non-zero ones)."""
        return {report.symbol: report.quantity for report in await self.exchange.positions()}

    async def balance(self) -> Decimal:
        """Return the paper account's USDT wallet balance (fees and realized P&L included)."""
        return self.exchange.wallet_balance

    async def close(self) -> None:
        """Stop following Binance's streams (the paper account stays as it is)."""
        await self.websocket.close()

    def _known(self, client_order_id: str) -> SubmitOrder:
        command = self._orders.get(client_order_id)
        if command is None:
            raise KeyError(f"no order {client_order_id!r} was sent through this executor")
        return command

    def _command(self, order: Mapping[str, Any]) -> SubmitOrder:
        fields = {"symbol", "side", "quantity", "type", "price", "time_in_force", "reduce_only", "client_order_id"}
        unknown = sorted(set(order) - fields)
        missing = [name for name in ("symbol", "side", "quantity") if order.get(name) is None]
        if unknown or missing:
            raise ValueError(f"an order needs symbol, side and quantity; missing {missing}, unknown fields {unknown}")
        order_type = OrderType(str(order.get("type", "MARKET")).upper())
        price = order.get("price")
        return SubmitOrder(
            client_order_id=str(order.get("client_order_id") or f"paper-{next(self._numbers)}"),
            symbol=str(order["symbol"]).upper(),
            side=OrderSide(str(order["side"]).upper()),
            order_type=order_type,
            quantity=_exact(order["quantity"], "quantity"),
            price=None if price is None else _exact(price, "price"),
            time_in_force=TimeInForce(str(order.get("time_in_force", "GTC")).upper()),
            reduce_only=bool(order.get("reduce_only", False)),
            ts_event=0,
            ts_init=0,
        )

    def _on_market(self, event: MarketDataEvent) -> None:
        handler = self._market.get(type(event))
        if handler is None:
            return
        if event.ts_event > self.clock.timestamp_ns():
            self.clock.advance_to(event.ts_event)
        handler(event)

    def _on_report(self, report: Event) -> None:
        client_order_id = getattr(report, "client_order_id", None)
        if client_order_id is not None:
            self._reports[client_order_id].append(report)


def _exact(value: object, name: str) -> Decimal:
    """Return an order amount as an exact Decimal (a float is refused: its binary value is not the amount meant)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        raise TypeError(f"order {name} must be exact: pass Decimal({str(value)!r}), not the float {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"order {name} must be a Decimal, an int or a decimal string, got {type(value).__name__}")
    try:
        amount = Decimal(value)
    except ArithmeticError:
        raise ValueError(f"order {name} {value!r} is not a number") from None
    if not amount.is_finite():
        raise ValueError(f"order {name} {value!r} is not a finite number")
    return amount


def _status(reports: list[Event], ended: Event | None, filled: Decimal, quantity: Decimal) -> str:
    if isinstance(ended, OrderRejected):
        return "REJECTED"
    if filled >= quantity and filled > 0:
        return "FILLED"
    if isinstance(ended, OrderCanceled):
        return "CANCELED"
    if isinstance(ended, OrderExpired):
        return "EXPIRED"
    if filled > 0:
        return "PARTIALLY_FILLED"
    return "NEW" if any(isinstance(report, OrderAccepted) for report in reports) else "PENDING_NEW"
