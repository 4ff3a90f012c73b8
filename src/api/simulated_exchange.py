"""A simulated Binance USD-M venue for backtests and paper trading.

It implements :class:`~keel.core.ports.ExchangePort` with Binance's semantics:

- orders MARKET, LIMIT, STOP_MARKET and TAKE_PROFIT_MARKET (triggering on the
  last or the mark price), time in force GTC / IOC / FOK / GTX, reduceOnly,
  closePosition, hedge-mode position sides; every refusal carries Binance's
  code and message (filters from :class:`~keel.core.instruments.Instrument`,
  -1111 precision, -2019 margin, -2011 unknown order, -2021 immediate trigger,
  -2022 reduce-only, -2025 open orders, -2027 leverage cap, -4061 position
  side, -4116 duplicate id, -4164 notional, -5021 FOK, -5022 post-only);
- fills against the recorded order book when the symbol has one (walking
  levels, queue position, prints) and against bars otherwise, by the rules
  of :mod:`keel.api.matching`; never at a price better than the data allowed;
- maker and taker fees, funding settled from the recorded rate and mark price
  (a held position whose funding time passes without a recorded rate is an
  error, never a silent zero), cross and isolated margin, leverage per
  symbol, maintenance margin from Binance's leverage brackets, liquidation
  with the clearance fee (:mod:`keel.api.account`); auto-deleveraging is not
  modelled;
- latency in simulated time: a request reaches the venue ``latency`` (plus a
  seeded random jitter) after it was sent, in order; its reports carry the
  arrival time, and an order matches only after it arrived. With zero latency
  every request is handled at once;
- its whole state can be snapshot and restored, and the same data, settings
  and seed give the same reports;
- it keeps the account's fills and funding payments (Binance's trade list and
  funding income) and the last market event it processed (its
  :class:`~keel.api.venue_state.MarketCursor`).

Every public operation that changes the venue (a market event,
:meth:`~SimulatedExchange.advance_to`, a request, a setting) is one
transaction: its reports are held back until it is over, then the commit
handler (:meth:`SimulatedExchange.set_commit_handler`) gets what it changed as
a :class:`~keel.api.venue_state.VenueCommit`, and only then are the reports delivered, in order. A
durable store (:class:`keel.api.venue_store.VenueStore`) therefore never lags
behind what a client was told, as with a real venue whose state survives its
client's crash. A report handler that calls back into the venue starts a
transaction of its own; its reports follow the ones still being delivered.

Prices: the mark price is the recorded one (``MarkPriceUpdated``) when the
feed has it, else the mid of the recorded book, else the last bar close; the
last price is the last print, else the last bar close. A symbol with a
recorded book is matched against the book only (its bars just mark it).

The venue is fed by the caller: :meth:`SimulatedExchange.on_bar`,
:meth:`~SimulatedExchange.on_book`, :meth:`~SimulatedExchange.on_trade`,
:meth:`~SimulatedExchange.on_mark_price`, :meth:`~SimulatedExchange.on_funding`
and :meth:`~SimulatedExchange.advance_to`, each with time-ordered events.
"""

from __future__ import annotations

import functools
import random
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Concatenate, Final, NamedTuple, ParamSpec, TypeVar

import msgspec
from mypy_extensions import mypyc_attr

from keel.api.account import Account, AccountHistory, Liquidation, PositionKey, VenuePosition
from keel.api.brackets import LeverageSchedule, load_leverage_schedule
from keel.api.matching import (
    BPS,
    bar_trigger_reference,
    capped,
    crosses,
    displayed_quantity,
    fillable,
    participation_budget,
    queue_after_trade,
    slipped_price,
    stop_triggered,
    touch_draw,
    touched,
    traded_through,
    walk_book,
)
from keel.api.venue_orders import OrderState, VenueOrder, is_time_in_force, reduces_only, triggers_on_mark
from keel.api.venue_state import (
    CommitHandler,
    ExchangeState,
    InFlightRequest,
    MarketCursor,
    VenueCommit,
    VenueState,
)
from keel.core.accounting import ZERO
from keel.core.clock import NANOS_PER_HOUR, NANOS_PER_MINUTE, Clock
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import MalformedDataError, RequestRejectedError
from keel.core.floats import decimal_of
from keel.core.instruments import Instrument
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    Event,
    FundingPaid,
    FundingRateUpdated,
    MarkPriceUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionLiquidated,
    SubmitOrder,
    TradeTick,
    WorkingType,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderStatus, OrderType, TimeInForce
from keel.core.ports import (
    BalanceReport,
    LeverageBracket,
    MarginType,
    OrderStatusReport,
    PositionMode,
    PositionReport,
    PositionSide,
    ReportHandler,
    SymbolConfiguration,
)

LIQUIDATION_PREFIX = "autoclose-"
"""Client order id prefix of the venue's liquidation orders (Binance's)."""

FUNDING_GRACE_NS: Final = NANOS_PER_MINUTE
"""How long after a funding time its recorded rate may arrive (Binance's fundingTime is a few ms late)."""

DEFAULT_FUNDING_INTERVAL_HOURS = 8

Rejection = tuple[BinanceErrorCode, str]


P = ParamSpec("P")
R = TypeVar("R")


class _BarPrices(NamedTuple):
    open: Decimal
    high: Decimal
    low: Decimal


@dataclass(frozen=True, slots=True)
class _Fill:
    quantity: Decimal
    price: Decimal
    liquidity: LiquiditySide


def _transaction(
    operation: Callable[Concatenate[SimulatedExchange, P], R],
) -> Callable[Concatenate[SimulatedExchange, P], R]:
    """Run a public operation as one venue transaction (inside another operation, as part of it)."""

    @functools.wraps(operation)
    def run(exchange: SimulatedExchange, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if exchange._depth:
            return operation(exchange, *args, **kwargs)
        exchange._depth = 1
        try:
            return operation(exchange, *args, **kwargs)
        finally:
            exchange._depth = 0
            if exchange._commit_handler is not None or exchange._pending:
                exchange._end_transaction()

    return run


def _async_transaction(
    operation: Callable[Concatenate[SimulatedExchange, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[SimulatedExchange, P], Coroutine[Any, Any, R]]:
    """:func:`_transaction` of a coroutine method (the venue's coroutines never suspend)."""

    @functools.wraps(operation)
    async def run(exchange: SimulatedExchange, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if exchange._depth:
            return await operation(exchange, *args, **kwargs)
        exchange._depth = 1
        try:
            return await operation(exchange, *args, **kwargs)
        finally:
            exchange._depth = 0
            if exchange._commit_handler is not None or exchange._pending:
                exchange._end_transaction()

    return run


@mypyc_attr(allow_interpreted_subclasses=True)
class SimulatedExchange:
    """Binance USD-M semantics over recorded bars, books, prints, mark prices and funding.

    Parameters
    ----------
    instruments
        Tradable instruments by symbol, with their filters and fees.
    clock
        Where the time of requests comes from.
    initial_balance
        Starting USDT wallet balance.
    leverage
        Starting leverage of every symbol.
    slippage_bps
        Adverse move of a taker fill against bars, in basis points.
    maker_fee, taker_fee
        Override the instruments' fee rates when given.
    schedule
        Leverage brackets and liquidation fees; ``config/leverage_brackets.yaml`` when None.
    margin_type, position_mode
        Starting margin type of every symbol and position mode of the account.
    participation_rate
        Largest share of a bar's volume the account may trade in it; None: no cap
        (for bars without volume, such as mark-price klines).
    latency_ns, latency_jitter_ns
        Time a request takes to reach the venue: ``latency_ns`` plus a uniform
        random draw in ``[0, latency_jitter_ns]``.
    seed
        Seed of the latency jitter and of the touch fills.
    touch_fill_probability
        Queue haircut of resting limit orders against bars: a bar that trades
        through the price fills the order (up to the participation cap); a bar
        that only touches it (low equal to a buy's price, high equal to a
        sell's) fills it with this probability, drawn deterministically from
        the seed, the order and the bar. 0: only trading through fills.
    funding_interval_hours
        Funding interval of symbols that do not settle every 8 hours (ENAUSDT: 4).
    expect_funding
        Whether funding rates will be delivered; False (data without funding
        records) settles no funding and does not require a rate at funding times.

    Raises
    ------
    ValueError
        For a negative latency, a participation rate outside (0, 1], or a
        leverage the symbol's brackets do not offer.
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
        schedule: LeverageSchedule | None = None,
        margin_type: MarginType = MarginType.CROSSED,
        position_mode: PositionMode = PositionMode.ONE_WAY,
        participation_rate: Decimal | None = None,
        latency_ns: int = 0,
        latency_jitter_ns: int = 0,
        seed: int = 0,
        touch_fill_probability: float = 0.0,
        funding_interval_hours: Mapping[str, int] | None = None,
        expect_funding: bool = True,
    ) -> None:
        if latency_ns < 0 or latency_jitter_ns < 0:
            raise ValueError(f"latency must not be negative, got {latency_ns} + {latency_jitter_ns} ns")
        if participation_rate is not None and not 0 < participation_rate <= 1:
            raise ValueError(f"participation_rate must lie in (0, 1], got {participation_rate}")
        if not 0.0 <= touch_fill_probability <= 1.0:
            raise ValueError(f"touch_fill_probability must lie in [0, 1], got {touch_fill_probability}")
        self._touch_fill_probability = touch_fill_probability
        self._seed = seed
        self._instruments = dict(instruments)
        self._clock = clock
        self._schedule = schedule if schedule is not None else load_leverage_schedule()
        try:
            self.account = Account(
                list(self._instruments), self._schedule, initial_balance, leverage, margin_type, position_mode
            )
        except RequestRejectedError as error:
            raise ValueError(f"leverage {leverage}: {error}") from error
        self._slippage = decimal_of(slippage_bps) * BPS
        self._maker_fee = maker_fee
        self._taker_fee = taker_fee
        self._participation = participation_rate
        self._latency = latency_ns
        self._jitter = latency_jitter_ns
        self._random = random.Random(seed)
        intervals = funding_interval_hours or {}
        self._funding_interval = {
            s: intervals.get(s, DEFAULT_FUNDING_INTERVAL_HOURS) * NANOS_PER_HOUR for s in self._instruments
        }
        self._handler: ReportHandler | None = None
        self._orders: dict[str, VenueOrder] = {}
        self._working: dict[str, VenueOrder] = {}
        self._in_flight: list[InFlightRequest] = []
        self._last_arrival = 0
        self._last_price: dict[str, Decimal] = {}
        self._marked_by_stream: set[str] = set()
        self._books: dict[str, BookUpdated] = {}
        self._consumed: dict[tuple[str, OrderSide], dict[Decimal, Decimal]] = {}
        self._next_funding: dict[str, int] = {}
        self._expect_funding = expect_funding
        self._next_ids = {"venue": 1, "trade": 1, "liquidation": 1}
        self._cursor: MarketCursor | None = None
        # The cursor of a bar, kept as its parts and made into a MarketCursor only when read (bars are most events).
        self._bar_cursor_ts = 0
        self._bar_cursor_symbol = ""
        self._cursor_is_bar = False
        self._history = AccountHistory()
        self._commit_handler: CommitHandler | None = None
        self._committed: tuple[VenueState, list[OrderState]] | None = None
        self._depth = 0
        self._delivering = False
        self._pending: deque[Event] = deque()
        self._retired: list[VenueOrder] = []
        self._random_state: list[object] | None = None

    # --- account figures --------------------------------------------------------------------------

    @property
    def wallet_balance(self) -> Decimal:
        """Return the cross wallet plus every isolated wallet (USDT)."""
        return self.account.wallet_balance()

    @property
    def fees_paid(self) -> Decimal:
        """Return the trading and liquidation fees paid so far."""
        return self.account.fees_paid

    @property
    def funding_received(self) -> Decimal:
        """Return the net funding credited so far (negative: paid)."""
        return self.account.funding_received

    @property
    def cursor(self) -> MarketCursor | None:
        """Return the last market event the venue processed (None before the first)."""
        if self._cursor_is_bar:
            return MarketCursor(self._bar_cursor_ts, "bar", self._bar_cursor_symbol)
        return self._cursor

    # --- market data ------------------------------------------------------------------------------

    def set_report_handler(self, handler: ReportHandler) -> None:
        """Install the callback that receives execution reports."""
        self._handler = handler

    def set_commit_handler(self, handler: CommitHandler | None) -> None:
        """Install the callback that makes each transaction durable (None removes it).

        The handler is called at once with the whole venue (a
        :class:`VenueCommit` with ``baseline=True``), then after every
        transaction that changed anything with what it changed, before the
        transaction's reports are delivered. If it raises, the reports wait
        and the next commit carries the changes again. It must not call back
        into the venue.
        """
        if handler is not None:
            self._commit_baseline(handler)
        self._commit_handler = handler

    @_transaction
    def advance_to(self, ts: int) -> None:
        """Deliver the requests that reached the venue by ``ts`` and check every symbol's funding schedule.

        Raises
        ------
        MalformedDataError
            If a held position's funding time passed more than a minute ago
            without a recorded funding rate.
        """
        self._deliver(ts)
        self._check_funding_schedule(ts, None)

    @_transaction
    def deliver_in_flight(self) -> None:
        """Deliver every request still on its way, each at its own arrival time.

        For when time passes without market data: a shutdown or a restart
        outlasts any request's flight, as it would at a real venue.
        """
        if self._in_flight:
            self._deliver(self._in_flight[-1].arrival)

    def on_bar(self, bar: BarClosed) -> None:
        """Match the symbol's orders against a new bar, then mark to its close.

        Raises
        ------
        MalformedDataError
            If a held position of the symbol passed a funding time without a
            recorded funding rate (checked after the bar is processed).
        """
        # @_transaction, spelled out: compiled, the decorator's generic call (its packed arguments) is a measurable
        # share of every bar.
        if self._depth:
            self._on_bar(bar)
            return
        self._depth = 1
        try:
            self._on_bar(bar)
        finally:
            self._depth = 0
            if self._commit_handler is not None or self._pending:
                self._end_transaction()

    def _on_bar(self, bar: BarClosed) -> None:
        # Each field read once: a message's field is a generic attribute lookup from compiled code.
        symbol, ts = bar.symbol, bar.ts_event
        self._bar_cursor_ts = ts
        self._bar_cursor_symbol = symbol
        self._cursor_is_bar = True
        if symbol not in self._instruments:
            return
        if self._in_flight:
            self._deliver(ts)
        if symbol not in self._books:
            if self._working:
                self._match_bar(bar)
            price = bar.close
            close = decimal_of(price)
            self._last_price[symbol] = close
            if symbol not in self._marked_by_stream:
                self.account.note_mark_float(symbol, close, price)
                self._set_mark(symbol, close, ts)
        # _check_funding_schedule's own first test, here: on almost every bar no funding time of the symbol is overdue.
        due = self._next_funding.get(symbol)
        if due is not None and ts > due + FUNDING_GRACE_NS:
            self._check_funding_schedule(ts, symbol)

    @_transaction
    def on_book(self, book: BookUpdated) -> None:
        """Take a new top of the recorded book: queues, mark (mid), waiting takers."""
        symbol = book.symbol
        self._cursor_is_bar = False
        self._cursor = MarketCursor(book.ts_event, "book", symbol)
        if symbol not in self._instruments or not book.bids or not book.asks:
            return
        self._deliver(book.ts_event)
        self._books[symbol] = book
        self._consumed.pop((symbol, OrderSide.BUY), None)
        self._consumed.pop((symbol, OrderSide.SELL), None)
        for order in self._working_of(symbol):
            if order.queue_price is not None and order.queue_ahead is not None:
                self._shorten_queue(order, book)
        if symbol not in self._marked_by_stream:
            mid = (decimal_of(book.bids[0][0]) + decimal_of(book.asks[0][0])) / 2
            self._set_mark(symbol, mid, book.ts_event)
        for order in self._working_of(symbol):
            if order.triggered and order.is_working and order.takes_liquidity:
                self._take_from_book(order, book.ts_event)
        self._check_funding_schedule(book.ts_event, symbol)

    @_transaction
    def on_trade(self, trade: TradeTick) -> None:
        """Take a print: last price, last-price triggers, and fills of resting orders it reached."""
        symbol = trade.symbol
        self._cursor_is_bar = False
        self._cursor = MarketCursor(trade.ts_event, "trade", symbol)
        if symbol not in self._instruments:
            return
        self._deliver(trade.ts_event)
        price = decimal_of(trade.price)
        self._last_price[symbol] = price
        if symbol not in self._books:
            return
        for order in self._working_of(symbol):
            if not order.triggered and not triggers_on_mark(order) and order.active_ts <= trade.ts_event:
                self._trigger_if_reached(order, price, trade.ts_event)
        budget = decimal_of(trade.quantity)
        for order in self._working_of(symbol):
            if budget <= 0:
                break
            if (
                order.order_type is OrderType.LIMIT
                and not order.takes_liquidity
                and order.side is not trade.aggressor_side
            ):
                budget -= self._fill_from_print(order, price, budget, trade.ts_event)

    @_transaction
    def on_mark_price(self, event: MarkPriceUpdated) -> None:
        """Take a recorded mark price; from now on it alone marks the symbol."""
        self._cursor_is_bar = False
        self._cursor = MarketCursor(event.ts_event, "mark_price", event.symbol)
        if event.symbol not in self._instruments:
            return
        self._deliver(event.ts_event)
        self._marked_by_stream.add(event.symbol)
        self._set_mark(event.symbol, event.mark_price, event.ts_event)
        self._check_funding_schedule(event.ts_event, event.symbol)

    @_transaction
    def on_funding(self, event: FundingRateUpdated) -> None:
        """Settle funding of the symbol's open positions at the recorded rate and mark price.

        Raises
        ------
        MalformedDataError
            If a position is open and the recorded mark price is missing.
        """
        symbol = event.symbol
        self._cursor_is_bar = False
        self._cursor = MarketCursor(event.ts_event, "funding", symbol)
        if symbol not in self._instruments:
            return
        self._deliver(event.ts_event)
        held = list(self.account.open_positions(symbol))
        if not held:
            return
        if event.mark_price is None:
            quantities = ", ".join(str(p.quantity) for p in held)
            raise MalformedDataError(
                f"funding of {symbol} at {event.funding_time}: no recorded mark price for an open position of "
                f"{quantities}"
            )
        interval = self._funding_interval[symbol]
        self._next_funding[symbol] = event.funding_time - event.funding_time % interval + interval
        for venue_position, amount in self.account.settle_funding(symbol, event.rate, event.mark_price):
            self._report_funding(
                FundingPaid(
                    symbol=symbol,
                    funding_time=event.funding_time,
                    rate=event.rate,
                    mark_price=event.mark_price,
                    position_quantity=venue_position.quantity,
                    amount=amount,
                    ts_event=event.funding_time,
                    ts_init=self._clock.timestamp_ns(),
                )
            )
        self._liquidate_due(event.ts_event)

    # --- ExchangePort: orders -------------------------------------------------------------------

    async def submit_order(self, command: SubmitOrder) -> None:
        """Send an order; it reaches the venue after the latency."""
        self.submit(command)

    @_transaction
    def submit(self, command: SubmitOrder) -> None:
        """Synchronous body of :meth:`submit_order`."""
        self._send(InFlightRequest(arrival=0, sent=0, kind="submit", command=command))

    @_async_transaction
    async def cancel_order(self, symbol: str, client_order_id: str) -> None:
        """Cancel a working order.

        Raises
        ------
        RequestRejectedError
            With -2011 if the venue has no working order of that id and symbol
            and none is on its way.
        """
        order = self._orders.get(client_order_id)
        on_its_way = any(
            r.command is not None and r.command.client_order_id == client_order_id for r in self._in_flight
        )
        if not on_its_way and (order is None or order.symbol != symbol or not order.is_working):
            raise RequestRejectedError(
                f"cancel {client_order_id} on {symbol}: {BinanceErrorCode.CANCEL_REJECTED.message}",
                BinanceErrorCode.CANCEL_REJECTED,
            )
        self._send(InFlightRequest(arrival=0, sent=0, kind="cancel", symbol=symbol, client_order_id=client_order_id))

    @_async_transaction
    async def cancel_all_orders(self, symbol: str | None = None) -> None:
        """Cancel every working order of ``symbol`` (or of every symbol)."""
        self._send(InFlightRequest(arrival=0, sent=0, kind="cancel_all", symbol=symbol))

    async def query_order(self, symbol: str, client_order_id: str) -> OrderStatusReport | None:
        """Return the venue's record of an order, None if it never reached the venue or was rejected."""
        order = self._orders.get(client_order_id)
        if order is None or order.symbol != symbol:
            return None
        return order.report()

    async def open_orders(self, symbol: str | None = None) -> list[OrderStatusReport]:
        """Return the working orders, oldest first."""
        return [o.report() for o in self._working.values() if symbol is None or o.symbol == symbol]

    # --- ExchangePort: account ------------------------------------------------------------------

    async def positions(self) -> list[PositionReport]:
        """Return the non-zero positions, marked at the mark price."""
        return [self._position_report(p) for p in self.account.open_positions()]

    async def balances(self) -> BalanceReport:
        """Return the USDT account."""
        return self.balance()

    def balance(self) -> BalanceReport:
        """Synchronous body of :meth:`balances`."""
        account = self.account
        held = list(account.open_positions())
        unrealized = sum((account.unrealized_pnl(p) for p in held), ZERO)
        order_margin = self._order_margin()
        wallet = account.wallet_balance()
        return BalanceReport(
            asset="USDT",
            wallet_balance=wallet,
            unrealized_pnl=unrealized,
            margin_balance=wallet + unrealized,
            available_balance=account.available_balance(order_margin),
            cross_wallet_balance=account.cross_wallet,
            initial_margin=sum((account.initial_margin(p) for p in held), ZERO) + order_margin,
            maintenance_margin=sum((account.maintenance_margin(p) for p in held), ZERO),
        )

    async def exchange_info(self) -> dict[str, Instrument]:
        """Return the instruments."""
        return dict(self._instruments)

    async def leverage_brackets(self, symbol: str | None = None) -> dict[str, tuple[LeverageBracket, ...]]:
        """Return the brackets of ``symbol`` (or of every symbol).

        Raises
        ------
        RequestRejectedError
            With -1121 for an unknown symbol.
        """
        symbols = list(self._instruments) if symbol is None else [self._known(symbol)]
        return {s: self._schedule.brackets(s) for s in symbols}

    @_async_transaction
    async def set_leverage(self, symbol: str, leverage: int) -> SymbolConfiguration:
        """Change a symbol's leverage.

        Raises
        ------
        RequestRejectedError
            -1121 unknown symbol, -4028 a leverage the brackets do not offer,
            -2027 exposure beyond the new cap, -4161 lowering it under an
            isolated position.
        """
        self._known(symbol)
        self.account.set_leverage(symbol, leverage, self._exposure(symbol))
        return self._configuration(symbol)

    @_async_transaction
    async def set_margin_type(self, symbol: str, margin_type: MarginType) -> None:
        """Change a symbol's margin type.

        Raises
        ------
        RequestRejectedError
            -1121 unknown symbol, -4046 unchanged, -4047 open orders, -4048 open position.
        """
        self._known(symbol)
        if self.account.margin_types[symbol] is margin_type:
            _refuse(BinanceErrorCode.NO_NEED_TO_CHANGE_MARGIN_TYPE, symbol)
        if any(self.account.open_positions(symbol)):
            _refuse(BinanceErrorCode.THERE_EXISTS_QUANTITY, symbol)
        if self._working_of(symbol) or self._in_flight_orders(symbol):
            _refuse(BinanceErrorCode.THERE_EXISTS_OPEN_ORDERS, symbol)
        self.account.margin_types[symbol] = margin_type

    @_async_transaction
    async def set_position_mode(self, mode: PositionMode) -> None:
        """Change the account's position mode.

        Raises
        ------
        RequestRejectedError
            -4059 unchanged, -4067 open orders, -4068 open positions.
        """
        if self.account.position_mode is mode:
            _refuse(BinanceErrorCode.NO_NEED_TO_CHANGE_POSITION_SIDE, mode.value)
        if self._working or self._in_flight_orders(None):
            _refuse(BinanceErrorCode.POSITION_SIDE_CHANGE_EXISTS_OPEN_ORDERS, mode.value)
        if any(self.account.open_positions()):
            _refuse(BinanceErrorCode.POSITION_SIDE_CHANGE_EXISTS_QUANTITY, mode.value)
        self.account.position_mode = mode

    async def position_mode(self) -> PositionMode:
        """Return the account's position mode."""
        return self.account.position_mode

    async def symbol_configuration(self, symbol: str) -> SymbolConfiguration:
        """Return a symbol's leverage, margin type and largest position at that leverage."""
        self._known(symbol)
        return self._configuration(symbol)

    # --- ExchangePort: account history ----------------------------------------------------------

    async def account_trades(self, symbol: str | None = None, start_ns: int = 0) -> list[OrderFilled]:
        """Return the account's fills (of ``symbol``, or of every symbol) from ``start_ns`` on, as they happened.

        The venue's own liquidation fills (client order id ``autoclose-...``) are included.
        """
        return self._history.trades_since(symbol, start_ns)

    async def funding_payments(self, start_ns: int = 0) -> list[FundingPaid]:
        """Return the funding payments from ``start_ns`` on, as they happened."""
        return self._history.funding_since(start_ns)

    # --- snapshot ---------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Return the venue's whole state as JSON (:class:`ExchangeState`); the report handler is not part of it."""
        state = ExchangeState(
            **msgspec.structs.asdict(self._venue_state()),
            orders=[o.state() for o in self._orders.values()],
            trades=list(self._history.trades),
            funding=list(self._history.funding),
        )
        return msgspec.json.encode(state)

    def restore(self, snapshot: bytes) -> None:
        """Replace the venue's state with a :meth:`snapshot` (instruments, fees and settings stay).

        Reports not delivered yet (of the replaced state) are dropped; an
        installed commit handler then gets the restored venue whole
        (``baseline=True``).

        Raises
        ------
        msgspec.ValidationError
            If ``snapshot`` is not a snapshot of a simulated exchange.
        ValueError
            If it is one of a venue trading other symbols.
        """
        state = msgspec.json.decode(snapshot, type=ExchangeState)
        theirs, ours = sorted(state.account.leverage), sorted(self._instruments)
        if theirs != ours:
            raise ValueError(f"the snapshot is of a venue trading {theirs}, this one trades {ours}")
        self.account.restore(state.account)
        self._orders = {o.command.client_order_id: VenueOrder.from_state(o) for o in state.orders}
        self._working = {client_order_id: self._orders[client_order_id] for client_order_id in state.working}
        self._in_flight = list(state.in_flight)
        self._last_price = dict(state.last_prices)
        self._marked_by_stream = set(state.marked_by_stream)
        self._books = dict(state.books)
        self._consumed = {}
        for symbol, side, price, quantity in state.consumed:
            self._consumed.setdefault((symbol, side), {})[price] = quantity
        self._next_funding = dict(state.next_funding)
        self._last_arrival = state.last_arrival
        self._next_ids = dict(state.next_ids)
        version, internal, gauss = state.random_state
        self._random.setstate((version, tuple(internal), gauss))  # type: ignore[arg-type]
        self._random_state = None
        self._cursor = state.cursor
        self._cursor_is_bar = False
        self._history = AccountHistory(state.trades, state.funding)
        self._retired.clear()
        self._pending.clear()
        if self._commit_handler is not None:
            self._commit_baseline(self._commit_handler)

    def _venue_state(self) -> VenueState:
        if self._random_state is None:
            version, internal, gauss = self._random.getstate()
            self._random_state = [version, list(internal), gauss]
        consumed = [
            (symbol, side, price, quantity)
            for (symbol, side), levels in sorted(
                self._consumed.items(), key=lambda item: (item[0][0], item[0][1].value)
            )
            for price, quantity in sorted(levels.items())
        ]
        return VenueState(
            account=self.account.state(),
            working=list(self._working),
            in_flight=list(self._in_flight),
            last_prices=dict(self._last_price),
            marked_by_stream=sorted(self._marked_by_stream),
            books=dict(self._books),
            consumed=consumed,
            next_funding=dict(self._next_funding),
            last_arrival=self._last_arrival,
            next_ids=dict(self._next_ids),
            random_state=self._random_state,
            cursor=self.cursor,
        )

    # --- transactions -----------------------------------------------------------------------------

    def _end_transaction(self) -> None:
        """Commit what the transaction changed, then deliver the reports (unless a delivery is under way)."""
        if self._commit_handler is not None:
            self._commit(self._commit_handler)
        if self._pending and not self._delivering:
            self._deliver_reports()

    def _commit(self, handler: CommitHandler) -> None:
        state = self._venue_state()
        working = [o.state() for o in self._working.values()]
        trades, funding = self._history.uncommitted()
        if self._retired or trades or funding or not self._is_committed(state, working):
            retired = [o.state() for o in self._retired]
            orders = sorted([*retired, *working], key=_acceptance_order)
            handler(VenueCommit(state=state, orders=orders, trades=trades, funding=funding))
            self._committed = (state, working)
            self._retired.clear()
            self._history.mark_committed()

    def _is_committed(self, state: VenueState, working: list[OrderState]) -> bool:
        """Return whether the last commit wrote this state (the cursor first: every market event moves it)."""
        if self._committed is None:
            return False
        last_state, last_working = self._committed
        return state.cursor == last_state.cursor and working == last_working and state == last_state

    def _commit_baseline(self, handler: CommitHandler) -> None:
        """Hand the whole venue to ``handler`` as one commit."""
        state = self._venue_state()
        handler(
            VenueCommit(
                state=state,
                orders=[o.state() for o in self._orders.values()],
                trades=list(self._history.trades),
                funding=list(self._history.funding),
                baseline=True,
            )
        )
        self._committed = (state, [o.state() for o in self._working.values()])
        self._retired.clear()
        self._history.mark_committed()

    def _deliver_reports(self) -> None:
        """Hand the committed reports to the report handler in order, including those of nested transactions."""
        self._delivering = True
        try:
            pending = self._pending
            while pending:
                report = pending.popleft()
                if self._handler is not None:
                    self._handler(report)
        finally:
            self._delivering = False

    # --- requests and latency ---------------------------------------------------------------------

    def _deliver(self, ts: int) -> None:
        """Handle the requests that reached the venue by ``ts``, in order."""
        while self._in_flight and self._in_flight[0].arrival <= ts:
            self._arrive(self._in_flight.pop(0))

    def _send(self, request: InFlightRequest) -> None:
        now = self._clock.timestamp_ns()
        delay = self._latency
        if self._jitter:
            delay += self._random.randint(0, self._jitter)
            self._random_state = None
        # Requests reach the venue in the order they were sent.
        arrival = max(now + delay, self._last_arrival)
        self._last_arrival = arrival
        stamped = msgspec.structs.replace(request, arrival=arrival, sent=now)
        if delay == 0 and not self._in_flight:
            self._arrive(stamped)
        else:
            self._in_flight.append(stamped)

    def _arrive(self, request: InFlightRequest) -> None:
        if request.kind == "submit":
            assert request.command is not None
            self._accept_or_reject(request.command, request.arrival)
        elif request.kind == "cancel":
            order = self._orders.get(request.client_order_id or "")
            # A fill may have closed the order while the cancel was on its way: nothing left to cancel.
            if order is not None and order.is_working and order.symbol == request.symbol:
                self._close(order, OrderStatus.CANCELED, request.arrival, "canceled by client")
        else:
            for order in list(self._working.values()):
                if request.symbol is None or order.symbol == request.symbol:
                    self._close(order, OrderStatus.CANCELED, request.arrival, "canceled by client (cancel all)")

    def _in_flight_orders(self, symbol: str | None) -> list[SubmitOrder]:
        return [
            r.command
            for r in self._in_flight
            if r.command is not None and (symbol is None or r.command.symbol == symbol)
        ]

    # --- acceptance -------------------------------------------------------------------------------

    def _accept_or_reject(self, command: SubmitOrder, ts: int) -> None:
        if command.client_order_id in self._orders:
            self._reject(command, ts, BinanceErrorCode.DUPLICATED_CLIENT_ORDER_ID, "")
            return
        problem = self._validate(command)
        if problem is not None:
            self._reject(command, ts, *problem)
            return
        order = VenueOrder(command, str(self._next_id("venue")), ts)
        order.move(OrderStatus.ACCEPTED, ts)
        order.marketable = self._is_marketable(command)
        self._orders[command.client_order_id] = order
        self._working[command.client_order_id] = order
        self._report(
            OrderAccepted(
                client_order_id=command.client_order_id,
                venue_order_id=order.venue_order_id,
                symbol=command.symbol,
                ts_event=ts,
                ts_init=self._clock.timestamp_ns(),
            )
        )
        if command.symbol in self._books:
            self._start_in_book(order, ts)

    def _validate(self, command: SubmitOrder) -> Rejection | None:
        checks = (
            self._check_request,
            self._check_position_side,
            self._check_filters,
            self._check_trigger,
            self._check_reduce_only,
            self._check_time_in_force,
            self._check_margin,
        )
        for check in checks:
            problem = check(command)
            if problem is not None:
                return problem
        return None

    def _check_request(self, command: SubmitOrder) -> Rejection | None:
        if command.symbol not in self._instruments:
            return _rejection(BinanceErrorCode.BAD_SYMBOL, command.symbol)
        stop_type = command.order_type in (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET)
        if stop_type and command.stop_price is None:
            return _rejection(BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, "", "stopPrice")
        if not stop_type and command.stop_price is not None:
            return _rejection(
                BinanceErrorCode.PARAM_NOT_REQUIRED, f"stopPrice on {command.order_type.value}", "stopPrice"
            )
        if stop_type and command.price is not None:
            return _rejection(BinanceErrorCode.PARAM_NOT_REQUIRED, f"price on {command.order_type.value}", "price")
        if command.close_position and not stop_type:
            return _rejection(BinanceErrorCode.PARAM_NOT_REQUIRED, command.order_type.value, "closePosition")
        if command.close_position and command.reduce_only:
            return _rejection(BinanceErrorCode.PARAM_NOT_REQUIRED, "with closePosition", "reduceOnly")
        if self._reference(command.symbol) is None:
            return BinanceErrorCode.UNKNOWN, f"No market price for {command.symbol} yet."
        open_orders = len(self._working_of(command.symbol))
        if open_orders >= self._instruments[command.symbol].max_open_orders:
            return _rejection(BinanceErrorCode.MAX_OPEN_ORDER_EXCEEDED, f"{open_orders} open on {command.symbol}")
        return None

    def _check_position_side(self, command: SubmitOrder) -> Rejection | None:
        hedge = self.account.position_mode is PositionMode.HEDGE
        if hedge == (command.position_side is PositionSide.BOTH):
            detail = f"positionSide {command.position_side.value} in {self.account.position_mode.value} mode"
            return _rejection(BinanceErrorCode.POSITION_SIDE_NOT_MATCH, detail)
        if hedge and command.reduce_only:
            return _rejection(BinanceErrorCode.PARAM_NOT_REQUIRED, "in hedge mode", "reduceOnly")
        return None

    def _check_filters(self, command: SubmitOrder) -> Rejection | None:
        instrument = self._instruments[command.symbol]
        market = command.order_type is not OrderType.LIMIT
        stop = command.stop_price
        if stop is not None:
            problem = _price_violation(instrument, stop, "stopPrice")
            if problem is not None:
                return problem
        if command.close_position:
            return None
        reference = self._reference(command.symbol)
        assert reference is not None
        violation = instrument.check_order(
            side=command.side.value,
            price=command.price,
            quantity=command.quantity,
            reference_price=stop if stop is not None else reference,
            market=market,
            reduce_only=command.reduce_only,
        )
        return None if violation is None else (violation.code, violation.message)

    def _check_trigger(self, command: SubmitOrder) -> Rejection | None:
        if command.stop_price is None:
            return None
        current = self._trigger_price(command.symbol, command.working_type is WorkingType.MARK_PRICE)
        if current is not None and stop_triggered(command.order_type, command.side, command.stop_price, current):
            detail = f"{command.working_type.value} {current} already beyond stop {command.stop_price}"
            return _rejection(BinanceErrorCode.ORDER_WOULD_IMMEDIATELY_TRIGGER, detail)
        return None

    def _check_reduce_only(self, command: SubmitOrder) -> Rejection | None:
        if not reduces_only(command):
            return None
        held = self.account.quantity(self._key(command))
        opposite = held != 0 and (held > 0) != (command.side is OrderSide.BUY)
        if command.close_position:
            return None if held == 0 or opposite else _rejection(BinanceErrorCode.REDUCE_ONLY_REJECT, "closePosition")
        if not opposite or command.quantity > abs(held):
            detail = f"{command.side.value} {command.quantity} against a position of {held}"
            return _rejection(BinanceErrorCode.REDUCE_ONLY_REJECT, detail)
        return None

    def _check_time_in_force(self, command: SubmitOrder) -> Rejection | None:
        if command.order_type is not OrderType.LIMIT:
            return None
        assert command.price is not None
        book = self._books.get(command.symbol)
        if command.time_in_force is TimeInForce.GTX and self._is_marketable(command):
            return _rejection(BinanceErrorCode.GTX_ORDER_REJECT, f"{command.side.value} at {command.price}")
        if command.time_in_force is TimeInForce.FOK and book is not None:
            levels = book.asks if command.side is OrderSide.BUY else book.bids
            available = fillable(levels, command.price, command.side, self._consumed_of(command.symbol, command.side))
            if available < command.quantity:
                return _rejection(BinanceErrorCode.FOK_ORDER_REJECT, f"{available} available of {command.quantity}")
        return None

    def _check_margin(self, command: SubmitOrder) -> Rejection | None:
        if command.close_position:
            return None
        symbol = command.symbol
        opening = self._opening_quantity(command.symbol, self._key(command), command.side, command.quantity)
        if opening <= 0:
            return None
        price = command.price if command.price is not None else command.stop_price or self._reference(symbol)
        assert price is not None
        cap = self.account.max_notional(symbol)
        exposure = self._exposure(symbol) + opening * price
        if cap is not None and exposure > cap:
            detail = f"{symbol} exposure {exposure} > {cap} at {self.account.leverage[symbol]}x"
            return _rejection(BinanceErrorCode.MAX_LEVERAGE_RATIO, detail)
        required = opening * price / self.account.leverage[symbol]
        if required > self.account.available_balance(self._order_margin()):
            return _rejection(BinanceErrorCode.MARGIN_NOT_SUFFICIENT, f"{required} USDT needed")
        return None

    def _reject(self, command: SubmitOrder, ts: int, code: BinanceErrorCode, reason: str) -> None:
        self._report(
            OrderRejected(
                client_order_id=command.client_order_id,
                symbol=command.symbol,
                code=int(code),
                reason=reason or code.message,
                ts_event=ts,
                ts_init=self._clock.timestamp_ns(),
            )
        )

    # --- bars -------------------------------------------------------------------------------------

    def _match_bar(self, bar: BarClosed) -> None:
        symbol = bar.symbol
        orders = self._working_of(symbol)
        if not orders:
            return
        instrument = self._instruments[symbol]
        budget = participation_budget(bar.volume, self._participation, instrument.step_size)
        prices = _BarPrices(decimal_of(bar.open), decimal_of(bar.high), decimal_of(bar.low))
        for order in orders:
            if order.active_ts > bar.open_time or not order.is_working:
                continue
            order.bars_seen += 1
            fill = self._bar_fill(order, bar, prices, instrument, budget)
            if fill is not None and fill.quantity > 0:
                filled = self._fill(
                    order, fill.quantity, fill.price, fill.liquidity, self._bar_fill_ts(order, bar, fill)
                )
                budget = None if budget is None else budget - filled
            self._expire_leftover(order, bar)

    def _bar_fill(
        self, order: VenueOrder, bar: BarClosed, prices: _BarPrices, instrument: Instrument, budget: Decimal | None
    ) -> _Fill | None:
        bar_open, high, low = prices
        if not order.triggered:
            if triggers_on_mark(order):
                return None
            stop = order.command.stop_price
            assert stop is not None
            reference = bar_trigger_reference(order.order_type, order.side, stop, bar_open, high, low)
            if reference is None or not self._trigger(order, bar.open_time):
                return None
            return self._taker_fill(order, slipped_price(order.side, reference, self._slippage, instrument), budget)
        if order.order_type is not OrderType.LIMIT:
            return self._taker_fill(order, slipped_price(order.side, bar_open, self._slippage, instrument), budget)
        limit = order.price
        assert limit is not None
        if order.marketable and order.bars_seen == 1 and crosses(order.side, limit, bar_open):
            price = slipped_price(order.side, bar_open, self._slippage, instrument)
            price = min(price, limit) if order.side is OrderSide.BUY else max(price, limit)
            if (
                is_time_in_force(order, TimeInForce.FOK)
                and capped(order.remaining_quantity, budget) < order.remaining_quantity
            ):
                return None
            return self._taker_fill(order, price, budget)
        order.marketable = False
        if is_time_in_force(order, TimeInForce.IOC, TimeInForce.FOK):
            return None
        if traded_through(order.side, limit, high, low) or (
            touched(order.side, limit, high, low)
            and touch_draw(self._seed, order.client_order_id, bar.open_time) < self._touch_fill_probability
        ):
            return _Fill(capped(order.remaining_quantity, budget), limit, LiquiditySide.MAKER)
        return None

    def _taker_fill(self, order: VenueOrder, price: Decimal, budget: Decimal | None) -> _Fill:
        return _Fill(capped(order.remaining_quantity, budget), price, LiquiditySide.TAKER)

    def _bar_fill_ts(self, order: VenueOrder, bar: BarClosed, fill: _Fill) -> int:
        ts = bar.open_time if fill.liquidity is LiquiditySide.TAKER else bar.ts_event
        return max(order.ts_last, ts)

    def _expire_leftover(self, order: VenueOrder, bar: BarClosed) -> None:
        """IOC and FOK limit orders get one bar; what they did not fill there expires."""
        if not order.is_working or order.order_type is not OrderType.LIMIT:
            return
        if is_time_in_force(order, TimeInForce.IOC, TimeInForce.FOK):
            reason = (
                "FOK order not fillable in full at the next open"
                if is_time_in_force(order, TimeInForce.FOK)
                else "IOC leftover after the next open"
            )
            self._close(order, OrderStatus.EXPIRED, max(order.ts_last, bar.open_time), reason)

    # --- book -------------------------------------------------------------------------------------

    def _start_in_book(self, order: VenueOrder, ts: int) -> None:
        """Take what a taker can on arrival; IOC and FOK leftovers expire, GTC and GTX ones queue."""
        if not order.triggered:
            return
        if order.takes_liquidity:
            self._take_from_book(order, ts)
        if not order.is_working or order.order_type is not OrderType.LIMIT:
            return
        if is_time_in_force(order, TimeInForce.IOC, TimeInForce.FOK):
            self._close(order, OrderStatus.EXPIRED, ts, "IOC leftover: nothing more within the limit")
            return
        order.marketable = False
        self._join_queue(order)

    def _take_from_book(self, order: VenueOrder, ts: int) -> None:
        book = self._books[order.symbol]
        levels = book.asks if order.side is OrderSide.BUY else book.bids
        limit = order.price if order.order_type is OrderType.LIMIT else None
        quantity = self._fillable_quantity(order, ts)
        if quantity is None:
            return
        for price, taken in walk_book(levels, quantity, limit, order.side, self._consumed_of(order.symbol, order.side)):
            if not order.is_working:
                break
            self._fill(order, taken, price, LiquiditySide.TAKER, ts)

    def _join_queue(self, order: VenueOrder) -> None:
        book = self._books[order.symbol]
        assert order.price is not None
        own_side = book.bids if order.side is OrderSide.BUY else book.asks
        displayed = displayed_quantity(own_side, order.price, order.side)
        order.queue_price = order.price
        order.queue_ahead = ZERO if displayed is None else displayed

    def _shorten_queue(self, order: VenueOrder, book: BookUpdated) -> None:
        assert order.queue_price is not None and order.queue_ahead is not None
        own_side = book.bids if order.side is OrderSide.BUY else book.asks
        displayed = displayed_quantity(own_side, order.queue_price, order.side)
        if displayed is not None and displayed < order.queue_ahead:
            order.queue_ahead = displayed

    def _fill_from_print(self, order: VenueOrder, price: Decimal, budget: Decimal, ts: int) -> Decimal:
        if order.queue_price is None or order.queue_ahead is None or order.active_ts > ts:
            return ZERO
        queue, reached = queue_after_trade(order.side, order.queue_price, order.queue_ahead, price, budget)
        order.queue_ahead = queue
        quantity = min(reached, order.remaining_quantity)
        if quantity <= 0:
            return ZERO
        assert order.price is not None
        return self._fill(order, quantity, order.price, LiquiditySide.MAKER, ts)

    def _consumed_of(self, symbol: str, side: OrderSide) -> dict[Decimal, Decimal]:
        return self._consumed.setdefault((symbol, side), {})

    # --- triggers ---------------------------------------------------------------------------------

    def _trigger_if_reached(self, order: VenueOrder, price: Decimal, ts: int) -> None:
        stop = order.command.stop_price
        assert stop is not None
        reached = stop_triggered(order.order_type, order.side, stop, price)
        if reached and self._trigger(order, ts) and order.symbol in self._books:
            self._take_from_book(order, ts)

    def _trigger(self, order: VenueOrder, ts: int) -> bool:
        """Turn a stop into a market order; a closePosition one takes the whole position (none: it expires)."""
        order.triggered = True
        if not order.command.close_position:
            return True
        held = abs(self.account.quantity(self._key(order.command)))
        if held == 0:
            self._close(
                order, OrderStatus.EXPIRED, max(order.ts_last, ts), "closePosition triggered without a position"
            )
            return False
        order.quantity = held
        return True

    def _trigger_on_mark(self, symbol: str, mark: Decimal, ts: int) -> None:
        for order in self._working_of(symbol):
            if order.triggered or not triggers_on_mark(order) or order.active_ts > ts:
                continue
            self._trigger_if_reached(order, mark, ts)

    # --- fills and closes -------------------------------------------------------------------------

    def _fill(self, order: VenueOrder, quantity: Decimal, price: Decimal, liquidity: LiquiditySide, ts: int) -> Decimal:
        """Book a fill of up to ``quantity``; return what was filled (reduce-only orders stop at the position)."""
        allowed = self._fillable_quantity(order, ts)
        if allowed is None:
            return ZERO
        quantity = min(quantity, allowed)
        if quantity <= 0:
            return ZERO
        instrument = self._instruments[order.symbol]
        rate = self._fee_rate(instrument, liquidity)
        commission = quantity * price * rate
        held_before = self.account.quantity(self._key(order.command))
        self.account.apply_fill(self._key(order.command), quantity * order.side.sign, price, commission)
        self._track_funding_schedule(order.symbol, held_before, ts)
        order.record_fill(quantity, price, commission, ts)
        if not order.is_working:
            self._retire(order)
        self._report_fill(
            OrderFilled(
                client_order_id=order.client_order_id,
                venue_order_id=order.venue_order_id,
                symbol=order.symbol,
                trade_id=str(self._next_id("trade")),
                side=order.side,
                last_quantity=quantity,
                last_price=price,
                commission=commission,
                liquidity_side=liquidity,
                strategy=order.command.strategy,
                ts_event=ts,
                ts_init=self._clock.timestamp_ns(),
            )
        )
        return quantity

    def _fillable_quantity(self, order: VenueOrder, ts: int) -> Decimal | None:
        """Return what the order may still fill; a reduce-only order with nothing left to reduce expires."""
        if not order.reduces_only:
            return order.remaining_quantity
        held = self.account.quantity(self._key(order.command))
        opposite = held != 0 and (held > 0) != (order.side is OrderSide.BUY)
        if not opposite:
            self._close(
                order, OrderStatus.EXPIRED, max(order.ts_last, ts), "reduce-only order: no position left to reduce"
            )
            return None
        return min(order.remaining_quantity, abs(held))

    def _fee_rate(self, instrument: Instrument, liquidity: LiquiditySide) -> Decimal:
        if liquidity is LiquiditySide.MAKER:
            return self._maker_fee if self._maker_fee is not None else instrument.maker_fee
        return self._taker_fee if self._taker_fee is not None else instrument.taker_fee

    def _close(self, order: VenueOrder, status: OrderStatus, ts: int, reason: str) -> None:
        order.move(status, ts, reason)
        if order.client_order_id in self._working:
            self._retire(order)
        event = OrderCanceled if status is OrderStatus.CANCELED else OrderExpired
        self._report(
            event(
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                reason=reason,
                ts_event=ts,
                ts_init=self._clock.timestamp_ns(),
            )
        )

    # --- marks, liquidation, funding --------------------------------------------------------------

    def _set_mark(self, symbol: str, mark: Decimal, ts: int) -> None:
        self.account.marks[symbol] = mark
        if self._working:
            self._trigger_on_mark(symbol, mark, ts)
        # Only a held symbol's mark moves any margin balance.
        if self.account.holds(symbol):
            self._liquidate_due(ts)

    def _liquidate_due(self, ts: int) -> None:
        due = self.account.due_liquidations()
        if not due:
            return
        groups: dict[str, list[Liquidation]] = {}
        for liquidation in due:
            pool = liquidation.key[0] if liquidation.margin_type is MarginType.ISOLATED else "cross"
            groups.setdefault(pool, []).append(liquidation)
        for group in groups.values():
            for symbol in dict.fromkeys(liquidation.key[0] for liquidation in group):
                for order in self._working_of(symbol):
                    self._close(order, OrderStatus.CANCELED, ts, "canceled by the venue: liquidation")
            prices = [liquidation.mark_price for liquidation in group]
            outcomes = self.account.liquidate(group, prices)
            for liquidation, price, outcome in zip(group, prices, outcomes, strict=True):
                self._report_liquidation(liquidation, price, outcome, ts)
                if self.account.quantity(liquidation.key) == 0:
                    self._next_funding.pop(liquidation.key[0], None)

    def _report_liquidation(
        self, liquidation: Liquidation, price: Decimal, outcome: tuple[Decimal, Decimal, Decimal], ts: int
    ) -> None:
        realized, fee, covered = outcome
        symbol, position_side = liquidation.key
        number = self._next_id("liquidation")
        client_order_id = f"{LIQUIDATION_PREFIX}{number}"
        side = OrderSide.SELL if liquidation.quantity > 0 else OrderSide.BUY
        now = self._clock.timestamp_ns()
        self._report_fill(
            OrderFilled(
                client_order_id=client_order_id,
                venue_order_id=f"liquidation-{number}",
                symbol=symbol,
                trade_id=str(self._next_id("trade")),
                side=side,
                last_quantity=abs(liquidation.quantity),
                last_price=price,
                commission=fee,
                liquidity_side=LiquiditySide.TAKER,
                strategy="liquidation",
                ts_event=ts,
                ts_init=now,
            )
        )
        self._report(
            PositionLiquidated(
                symbol=symbol,
                position_side=position_side,
                margin_type=liquidation.margin_type,
                client_order_id=client_order_id,
                side=side,
                quantity=abs(liquidation.quantity),
                price=price,
                mark_price=liquidation.mark_price,
                realized_pnl=realized,
                liquidation_fee=fee,
                insurance_fund_covered=covered,
                ts_event=ts,
                ts_init=now,
            )
        )

    def _track_funding_schedule(self, symbol: str, held_before: Decimal, ts: int) -> None:
        """Expect the first funding time after a position is opened, and none once it is flat."""
        held = any(self.account.open_positions(symbol))
        if not self._expect_funding:
            return
        if not held:
            self._next_funding.pop(symbol, None)
        elif held_before == 0 and symbol not in self._next_funding:
            # Settlements up to now have been delivered already: the next one is due after now.
            now = max(ts, self._clock.timestamp_ns())
            interval = self._funding_interval[symbol]
            self._next_funding[symbol] = (now // interval + 1) * interval

    def _check_funding_schedule(self, now: int, only: str | None) -> None:
        """Raise if a held position's funding time passed without a settlement (of symbol ``only``, or any)."""
        if only is not None:
            # Only ``only`` can be reported: the per-bar check costs one look-up.
            due_of_only = self._next_funding.get(only)
            if due_of_only is None or now <= due_of_only + FUNDING_GRACE_NS:
                return
        for symbol, due in sorted(self._next_funding.items()):
            if (only is None or symbol == only) and now > due + FUNDING_GRACE_NS:
                # Reported once: the schedule moves on to the next settlement.
                self._next_funding[symbol] = due + self._funding_interval[symbol]
                held = ", ".join(str(p.quantity) for p in self.account.open_positions(symbol))
                raise MalformedDataError(
                    f"no funding rate recorded for {symbol} at {due} ns (UTC funding time) although a position of "
                    f"{held} was held: the funding data is missing a settlement"
                )

    # --- helpers ----------------------------------------------------------------------------------

    def _next_id(self, kind: str) -> int:
        number = self._next_ids[kind]
        self._next_ids[kind] = number + 1
        return number

    def _working_of(self, symbol: str) -> list[VenueOrder]:
        return [o for o in self._working.values() if o.symbol == symbol]

    def _key(self, command: SubmitOrder) -> PositionKey:
        return command.symbol, command.position_side

    def _known(self, symbol: str) -> str:
        if symbol not in self._instruments:
            _refuse(BinanceErrorCode.BAD_SYMBOL, symbol)
        return symbol

    def _reference(self, symbol: str) -> Decimal | None:
        """Return the mark price (the PERCENT_PRICE centre and a market order's price)."""
        return self.account.marks.get(symbol, self._last_price.get(symbol))

    def _trigger_price(self, symbol: str, mark: bool) -> Decimal | None:
        if mark:
            return self.account.marks.get(symbol)
        return self._last_price.get(symbol, self.account.marks.get(symbol))

    def _is_marketable(self, command: SubmitOrder) -> bool:
        if command.order_type is not OrderType.LIMIT or command.price is None:
            return command.order_type is OrderType.MARKET
        book = self._books.get(command.symbol)
        if book is not None:
            best = book.asks[0][0] if command.side is OrderSide.BUY else book.bids[0][0]
            return crosses(command.side, command.price, decimal_of(best))
        last = self._last_price.get(command.symbol)
        return last is not None and crosses(command.side, command.price, last)

    def _opening_quantity(self, symbol: str, key: PositionKey, side: OrderSide, quantity: Decimal) -> Decimal:
        held = self.account.quantity(key)
        if held == 0 or (held > 0) == (side is OrderSide.BUY):
            return quantity
        return max(quantity - abs(held), ZERO)

    def _order_margin(self) -> Decimal:
        total = ZERO
        for order in self._working.values():
            if order.reduces_only:
                continue
            opening = self._opening_quantity(
                order.symbol, self._key(order.command), order.side, order.remaining_quantity
            )
            price = order.price or order.command.stop_price or self._reference(order.symbol)
            if opening > 0 and price is not None:
                total += opening * price / self.account.leverage[order.symbol]
        return total

    def _exposure(self, symbol: str) -> Decimal:
        """Return the symbol's position notional plus its working orders' opening notional."""
        mark = self._reference(symbol)
        held = sum((abs(p.quantity) for p in self.account.open_positions(symbol)), ZERO)
        total = held * mark if mark is not None else ZERO
        for order in self._working_of(symbol):
            if order.reduces_only:
                continue
            price = order.price or order.command.stop_price or mark
            opening = self._opening_quantity(symbol, self._key(order.command), order.side, order.remaining_quantity)
            if price is not None:
                total += opening * price
        return total

    def _configuration(self, symbol: str) -> SymbolConfiguration:
        return SymbolConfiguration(
            symbol=symbol,
            leverage=self.account.leverage[symbol],
            margin_type=self.account.margin_types[symbol],
            max_notional=self.account.max_notional(symbol),
        )

    def _position_report(self, venue_position: VenuePosition) -> PositionReport:
        account = self.account
        symbol, position_side = venue_position.key
        return PositionReport(
            symbol=symbol,
            quantity=venue_position.quantity,
            entry_price=venue_position.position.entry_price,
            mark_price=account.mark(symbol),
            unrealized_pnl=account.unrealized_pnl(venue_position),
            leverage=account.leverage[symbol],
            position_side=position_side,
            margin_type=account.margin_types[symbol],
            break_even_price=account.break_even_price(venue_position),
            liquidation_price=account.liquidation_price(venue_position),
            notional=account.notional(venue_position),
            initial_margin=account.initial_margin(venue_position),
            maintenance_margin=account.maintenance_margin(venue_position),
            isolated_margin=venue_position.isolated_wallet,
        )

    def _report(self, event: Event) -> None:
        self._pending.append(event)

    def _report_fill(self, fill: OrderFilled) -> None:
        self._history.record_trade(fill)
        self._pending.append(fill)

    def _report_funding(self, payment: FundingPaid) -> None:
        self._history.record_funding(payment)
        self._pending.append(payment)

    def _retire(self, order: VenueOrder) -> None:
        """Take a closed order off the working list; the next commit writes it one last time."""
        del self._working[order.client_order_id]
        if self._commit_handler is not None:
            self._retired.append(order)


def _acceptance_order(order: OrderState) -> int:
    return int(order.venue_order_id)


def _rejection(code: BinanceErrorCode, detail: str, *fill: object) -> Rejection:
    message = code.message.format(*fill) if fill else code.message
    return code, f"{message} ({detail})" if detail else message


def _refuse(code: BinanceErrorCode, detail: str) -> None:
    message = code.message.format(detail) if "{}" in code.message else f"{code.message} ({detail})"
    raise RequestRejectedError(message, code)


def _price_violation(instrument: Instrument, price: Decimal, name: str) -> Rejection | None:
    exponent = price.normalize().as_tuple().exponent
    places = max(0, -int(exponent))
    if places > instrument.price_precision:
        return _rejection(
            BinanceErrorCode.BAD_PRECISION, f"{name} {price} has more than {instrument.price_precision} decimals"
        )
    if (price - instrument.min_price) % instrument.tick_size != 0:
        return _rejection(
            BinanceErrorCode.PRICE_NOT_INCREASED_BY_TICK_SIZE, f"{name} {price}, tick {instrument.tick_size}"
        )
    return None
