"""A simulated Binance USD-M venue for backtests and paper trading.

It implements :class:`~keel.core.ports.ExchangePort` and models, for MARKET and
LIMIT orders: Binance's exchange filters and error codes, one-way positions
with cross margin at a fixed leverage, maker and taker fees, and funding
settled from recorded rates and mark prices. Prices come from the bars it is
fed (:meth:`SimulatedExchange.on_bar`), so its rules are the documented,
conservative ones of bar data:

- an order is matched against the bars that arrive after it was submitted,
  never against the bar that triggered it (no look-ahead);
- a MARKET order fills at the next bar's open, moved against the taker by
  ``slippage_bps`` and rounded to the tick away from the taker, at the taker fee;
- a LIMIT order that is marketable on arrival fills as a taker at the next
  open when the open is at or better than its limit; a resting LIMIT order
  fills as a maker at its own price only when a later bar trades *through*
  it (the low strictly below a buy, the high strictly above a sell), never
  at a better price;
- IOC and FOK limit orders get one bar: one marketable on arrival fills at the
  next open if that open still crosses its limit; any other expires there (it
  could only have rested, which IOC/FOK never do); GTX (post-only) is rejected
  with -5022 if marketable on arrival;
- the last bar close stands in for the mark price between funding times
  (no 1m mark-price series is bundled); funding uses the recorded mark price.

Every random choice would come from ``seed``; the skeleton's rules make none,
so a run is deterministic. Liquidation, partial fills against the book,
stop orders and hedge mode are not modelled yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from itertools import count

from keel.core.accounting import ZERO, Position
from keel.core.clock import Clock
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import MalformedDataError, RequestRejectedError
from keel.core.instruments import Instrument, Rounding
from keel.core.messages import (
    BarClosed,
    Event,
    FundingPaid,
    FundingRateUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    SubmitOrder,
)
from keel.core.orders import LiquiditySide, Order, OrderSide, OrderType, TimeInForce
from keel.core.ports import BalanceReport, OrderStatusReport, PositionReport, ReportHandler

_BPS = Decimal("0.0001")


class _WorkingOrder:
    """A venue-side order and how it may fill."""

    __slots__ = ("bars_seen", "marketable", "order")

    def __init__(self, order: Order, marketable: bool) -> None:
        self.order = order
        self.marketable = marketable
        self.bars_seen = 0


class SimulatedExchange:
    """Binance USD-M semantics over recorded bars.

    Parameters
    ----------
    instruments
        Tradable instruments by symbol, with their filters and fees.
    clock
        Where event timestamps come from.
    initial_balance
        Starting USDT wallet balance.
    leverage
        Leverage of every symbol (initial margin = notional / leverage).
    slippage_bps
        Adverse move of a taker fill from the bar open, in basis points.
    maker_fee, taker_fee
        Override the instruments' fee rates when given.
    """

    name = "simulated"
    is_synchronous = True

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        clock: Clock,
        *,
        initial_balance: Decimal,
        leverage: int = 5,
        slippage_bps: float = 1.0,
        maker_fee: Decimal | None = None,
        taker_fee: Decimal | None = None,
    ) -> None:
        if not 1 <= leverage <= 125:
            raise ValueError(f"leverage must lie in [1, 125], got {leverage}")
        self._instruments = dict(instruments)
        self._clock = clock
        self.wallet_balance = initial_balance
        self.leverage = leverage
        self._slippage = Decimal(repr(slippage_bps)) * _BPS
        self._maker_fee = maker_fee
        self._taker_fee = taker_fee
        self._handler: ReportHandler | None = None
        self._orders: dict[str, Order] = {}
        self._working: dict[str, _WorkingOrder] = {}
        self._positions: dict[str, Position] = {}
        self._last_price: dict[str, Decimal] = {}
        self._venue_ids = count(1)
        self._trade_ids = count(1)
        self.fees_paid = ZERO
        self.funding_received = ZERO

    # --- inputs -----------------------------------------------------------------------

    def set_report_handler(self, handler: ReportHandler) -> None:
        """Install the callback that receives execution reports."""
        self._handler = handler

    def on_bar(self, bar: BarClosed) -> None:
        """Match the symbol's working orders against a new bar, then mark to its close."""
        if bar.symbol not in self._instruments:
            return
        instrument = self._instruments[bar.symbol]
        for working in [w for w in self._working.values() if w.order.symbol == bar.symbol]:
            self._match(working, bar, instrument)
        self._last_price[bar.symbol] = Decimal(repr(bar.close))

    def on_funding(self, event: FundingRateUpdated) -> None:
        """Settle funding of an open position at the recorded rate and mark price.

        Raises
        ------
        MalformedDataError
            If a position is open and the recorded mark price is missing.
        """
        position = self._positions.get(event.symbol)
        if position is None or position.quantity == 0:
            return
        if event.mark_price is None:
            raise MalformedDataError(
                f"funding of {event.symbol} at {event.funding_time}: no recorded mark price "
                f"for an open position of {position.quantity}"
            )
        amount = position.funding_payment(event.rate, event.mark_price)
        self.wallet_balance += amount
        self.funding_received += amount
        self._report(
            FundingPaid(
                symbol=event.symbol,
                funding_time=event.funding_time,
                rate=event.rate,
                mark_price=event.mark_price,
                position_quantity=position.quantity,
                amount=amount,
                ts_event=event.funding_time,
                ts_init=self._clock.timestamp_ns(),
            )
        )

    # --- ExchangePort -------------------------------------------------------------------

    async def submit_order(self, command: SubmitOrder) -> None:
        """Validate an order as Binance would; accept it or report a rejection."""
        self.submit(command)

    def submit(self, command: SubmitOrder) -> None:
        """Synchronous body of :meth:`submit_order`."""
        now = self._clock.timestamp_ns()
        if command.client_order_id in self._orders:
            self._reject(command, BinanceErrorCode.DUPLICATED_CLIENT_ORDER_ID, "ClientOrderId is duplicated.")
            return
        problem = self._validate(command)
        if problem is not None:
            self._reject(command, *problem)
            return
        order = Order(
            client_order_id=command.client_order_id,
            symbol=command.symbol,
            side=command.side,
            order_type=command.order_type,
            quantity=command.quantity,
            price=command.price,
            time_in_force=command.time_in_force,
            reduce_only=command.reduce_only,
            strategy=command.strategy,
            ts_init=now,
        )
        order.submit(now)
        venue_order_id = str(next(self._venue_ids))
        order.accept(venue_order_id, now)
        self._orders[order.client_order_id] = order
        self._working[order.client_order_id] = _WorkingOrder(order, self._is_marketable(command))
        self._report(
            OrderAccepted(
                client_order_id=order.client_order_id,
                venue_order_id=venue_order_id,
                symbol=order.symbol,
                ts_event=now,
                ts_init=now,
            )
        )

    async def cancel_order(self, symbol: str, client_order_id: str) -> None:
        """Cancel a working order.

        Raises
        ------
        RequestRejectedError
            With code -2011 if the order is unknown or no longer working.
        """
        working = self._working.get(client_order_id)
        if working is None or working.order.symbol != symbol:
            raise RequestRejectedError(
                f"cancel {client_order_id} on {symbol}: Unknown order sent.", BinanceErrorCode.CANCEL_REJECTED
            )
        self._cancel(working.order, "canceled by client")

    async def cancel_all_orders(self, symbol: str | None = None) -> None:
        """Cancel every working order of ``symbol`` (or of every symbol)."""
        for working in list(self._working.values()):
            if symbol is None or working.order.symbol == symbol:
                self._cancel(working.order, "canceled by client (cancel all)")

    async def query_order(self, symbol: str, client_order_id: str) -> OrderStatusReport | None:
        """Return the venue's record of an order, None if unknown."""
        order = self._orders.get(client_order_id)
        if order is None or order.symbol != symbol:
            return None
        return _status_report(order)

    async def open_orders(self, symbol: str | None = None) -> list[OrderStatusReport]:
        """Return the working orders."""
        return [_status_report(w.order) for w in self._working.values() if symbol is None or w.order.symbol == symbol]

    async def positions(self) -> list[PositionReport]:
        """Return the non-zero positions, marked at the last price."""
        return [
            PositionReport(
                symbol=symbol,
                quantity=position.quantity,
                entry_price=position.entry_price,
                mark_price=self._last_price[symbol],
                unrealized_pnl=position.unrealized_pnl(self._last_price[symbol]),
                leverage=self.leverage,
            )
            for symbol, position in sorted(self._positions.items())
            if position.quantity != 0
        ]

    async def balances(self) -> BalanceReport:
        """Return the USDT account."""
        return self.balance()

    def balance(self) -> BalanceReport:
        """Synchronous body of :meth:`balances`."""
        unrealized = sum(
            (p.unrealized_pnl(self._last_price[s]) for s, p in self._positions.items() if p.quantity != 0), ZERO
        )
        margin_balance = self.wallet_balance + unrealized
        return BalanceReport(
            asset="USDT",
            wallet_balance=self.wallet_balance,
            unrealized_pnl=unrealized,
            margin_balance=margin_balance,
            available_balance=margin_balance - self._initial_margin(),
        )

    async def exchange_info(self) -> dict[str, Instrument]:
        """Return the instruments."""
        return dict(self._instruments)

    # --- validation -------------------------------------------------------------------

    def _validate(self, command: SubmitOrder) -> tuple[BinanceErrorCode, str] | None:
        instrument = self._instruments.get(command.symbol)
        if instrument is None:
            return BinanceErrorCode.BAD_SYMBOL, f"Invalid symbol {command.symbol}."
        if command.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            return BinanceErrorCode.INVALID_ORDER_TYPE, f"Order type {command.order_type.value} is not simulated yet."
        reference = self._last_price.get(command.symbol)
        if reference is None:
            return BinanceErrorCode.UNKNOWN, f"No market price for {command.symbol} yet."
        market = command.order_type is OrderType.MARKET
        violation = instrument.check_order(
            side=command.side.value,
            price=command.price,
            quantity=command.quantity,
            reference_price=reference,
            market=market,
            reduce_only=command.reduce_only,
        )
        if violation is not None:
            return violation.code, violation.message
        position = self._positions.get(command.symbol)
        held = position.quantity if position is not None else ZERO
        signed = command.quantity * command.side.sign
        reduces = held != 0 and (held > 0) != (signed > 0) and command.quantity <= abs(held)
        if command.reduce_only and not reduces:
            return BinanceErrorCode.REDUCE_ONLY_REJECT, "ReduceOnly Order is rejected."
        if command.time_in_force is TimeInForce.GTX and not market and self._is_marketable(command):
            return (
                BinanceErrorCode.GTX_ORDER_REJECT,
                "Due to the order could not be executed as maker, the Post Only order will be rejected.",
            )
        if not reduces and self._required_margin(command, reference, held) > self.balance().available_balance:
            return BinanceErrorCode.MARGIN_NOT_SUFFICIENT, "Margin is insufficient."
        return None

    def _required_margin(self, command: SubmitOrder, reference: Decimal, held: Decimal) -> Decimal:
        price = command.price if command.price is not None else reference
        opening = abs(held + command.quantity * command.side.sign) - abs(held)
        return max(opening, ZERO) * price / self.leverage

    def _initial_margin(self) -> Decimal:
        positions = sum((p.notional(self._last_price[s]) for s, p in self._positions.items() if p.quantity != 0), ZERO)
        orders = sum(
            (
                w.order.remaining_quantity * (w.order.price or self._last_price[w.order.symbol])
                for w in self._working.values()
            ),
            ZERO,
        )
        return (positions + orders) / self.leverage

    def _is_marketable(self, command: SubmitOrder) -> bool:
        if command.order_type is OrderType.MARKET or command.price is None:
            return True
        last = self._last_price.get(command.symbol)
        if last is None:
            return False
        return command.price >= last if command.side is OrderSide.BUY else command.price <= last

    # --- matching -----------------------------------------------------------------------

    def _match(self, working: _WorkingOrder, bar: BarClosed, instrument: Instrument) -> None:
        order = working.order
        working.bars_seen += 1
        open_price = Decimal(repr(bar.open))
        if order.order_type is OrderType.MARKET:
            self._fill(order, self._taker_price(order.side, open_price, instrument), LiquiditySide.TAKER, bar)
            return
        limit = order.price
        assert limit is not None
        crosses_open = open_price <= limit if order.side is OrderSide.BUY else open_price >= limit
        if working.marketable and working.bars_seen == 1 and crosses_open:
            price = self._taker_price(order.side, open_price, instrument)
            price = min(price, limit) if order.side is OrderSide.BUY else max(price, limit)
            self._fill(order, price, LiquiditySide.TAKER, bar)
            return
        if order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
            self._expire(order, bar, "IOC/FOK order not fillable at the next open")
            return
        traded_through = bar.low < float(limit) if order.side is OrderSide.BUY else bar.high > float(limit)
        if traded_through:
            self._fill(order, limit, LiquiditySide.MAKER, bar)

    def _taker_price(self, side: OrderSide, open_price: Decimal, instrument: Instrument) -> Decimal:
        if side is OrderSide.BUY:
            return instrument.round_price(open_price * (1 + self._slippage), Rounding.UP)
        return instrument.round_price(open_price * (1 - self._slippage), Rounding.DOWN)

    def _fill(self, order: Order, price: Decimal, liquidity: LiquiditySide, bar: BarClosed) -> None:
        instrument = self._instruments[order.symbol]
        quantity = order.remaining_quantity
        if liquidity is LiquiditySide.MAKER:
            rate = self._maker_fee if self._maker_fee is not None else instrument.maker_fee
        else:
            rate = self._taker_fee if self._taker_fee is not None else instrument.taker_fee
        commission = quantity * price * rate
        ts = max(order.ts_last, bar.open_time if liquidity is LiquiditySide.TAKER else bar.ts_event)
        trade_id = str(next(self._trade_ids))
        order.apply_fill(trade_id=trade_id, quantity=quantity, price=price, commission=commission, ts=ts)
        position = self._positions.setdefault(order.symbol, Position(order.symbol))
        realized = position.apply_fill(quantity * order.side.sign, price)
        self.wallet_balance += realized - commission
        self.fees_paid += commission
        if order.is_closed:
            del self._working[order.client_order_id]
        self._report(
            OrderFilled(
                client_order_id=order.client_order_id,
                venue_order_id=order.venue_order_id or "",
                symbol=order.symbol,
                trade_id=trade_id,
                side=order.side,
                last_quantity=quantity,
                last_price=price,
                commission=commission,
                liquidity_side=liquidity,
                strategy=order.strategy,
                ts_event=ts,
                ts_init=self._clock.timestamp_ns(),
            )
        )

    def _expire(self, order: Order, bar: BarClosed, reason: str) -> None:
        order.expire(bar.open_time, reason)
        del self._working[order.client_order_id]
        self._report(
            OrderExpired(
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                reason=reason,
                ts_event=bar.open_time,
                ts_init=self._clock.timestamp_ns(),
            )
        )

    def _cancel(self, order: Order, reason: str) -> None:
        now = self._clock.timestamp_ns()
        order.cancel(now, reason)
        del self._working[order.client_order_id]
        self._report(
            OrderCanceled(
                client_order_id=order.client_order_id, symbol=order.symbol, reason=reason, ts_event=now, ts_init=now
            )
        )

    def _reject(self, command: SubmitOrder, code: BinanceErrorCode, reason: str) -> None:
        now = self._clock.timestamp_ns()
        self._report(
            OrderRejected(
                client_order_id=command.client_order_id,
                symbol=command.symbol,
                code=int(code),
                reason=reason,
                ts_event=now,
                ts_init=now,
            )
        )

    def _report(self, event: Event) -> None:
        if self._handler is not None:
            self._handler(event)


def _status_report(order: Order) -> OrderStatusReport:
    return OrderStatusReport(
        client_order_id=order.client_order_id,
        venue_order_id=order.venue_order_id or "",
        symbol=order.symbol,
        side=order.side,
        order_type=order.order_type,
        time_in_force=order.time_in_force,
        status=order.status,
        quantity=order.quantity,
        price=order.price,
        filled_quantity=order.filled_quantity,
        average_price=order.average_price,
        reduce_only=order.reduce_only,
        ts_last=order.ts_last,
    )
