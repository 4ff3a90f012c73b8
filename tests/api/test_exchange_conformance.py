"""The ExchangePort conformance suite: what every venue adapter must do, Binance USD-M style.

Every test takes a :class:`Market`: an ExchangePort implementation, the
report stream it produced, and a way to let its market move. The suite is
parametrized over :data:`VENUES`, a list of factories; an adapter joins by
adding its factory: the Binance adapter joins as ``binance-local-book``, talking
REST and the user-data WebSocket to a local Binance on 127.0.0.1 whose matching
is the simulated exchange fed the same recorded book (tests/api/binance_venue.py).
Tests that need a recorded funding settlement run over :data:`VENUES_WITH_FUNDING`
(the Binance adapter included, as ``binance-local-bars``); those that need a
market that moves far enough to liquidate over :data:`VENUES_WITH_HISTORY`
(the port has no liquidation history for the Binance adapter to list, and
Binance reports a liquidation only as an ``autoclose-`` fill).

The account history (trade list, funding income) must list exactly the
fills and funding payments the venue reported.

The simulated exchange runs here three ways, on real data: over the BTCUSDT
1m bars of May 2025 with their funding rates, over the BTCUSDT 2024-08-08
order book and trade tape, and over that book with 20 ms of latency.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from decimal import ROUND_DOWN, Decimal
from itertools import pairwise
from typing import Any, Protocol, TypeVar

import msgspec
import pytest
from binance_venue import BinanceMarket
from venue_harness import Harness, money, real_bars, real_instruments, real_session, with_funding

from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import RequestRejectedError
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    Event,
    FundingPaid,
    MarketDataEvent,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    PositionLiquidated,
    PositionSide,
    SubmitOrder,
)
from keel.core.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from keel.core.ports import ExchangePort, MarginType, OrderStatusReport, PositionMode

T = TypeVar("T")
BTC = "BTCUSDT"
MAX_OPEN_ORDERS = 5


class Market(Protocol):
    """A venue under test with a live market in ``symbol``."""

    port: ExchangePort
    symbol: str
    reports: list[Event]

    def step(self) -> bool:
        """Let the market move a little; False when it can move no more."""

    def touch(self) -> tuple[Decimal, Decimal]:
        """Return the best bid and ask (the last price for both when only trades are known)."""

    def now(self) -> int:
        """Return the venue's time (ns)."""

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await a port call."""


class SimulatedMarket:
    """The simulated exchange replaying recorded events in batches."""

    def __init__(self, events: list[MarketDataEvent], batch: int, warm_up: int, **settings: Any) -> None:
        instruments = dict(real_instruments())
        instruments[BTC] = msgspec.structs.replace(instruments[BTC], max_open_orders=MAX_OPEN_ORDERS)
        settings.setdefault("initial_balance", Decimal("1000000"))
        self._harness = Harness(events[0].ts_event, instruments=instruments, **settings)
        self.port: ExchangePort = self._harness.exchange
        self.reports = self._harness.reports
        self.symbol = BTC
        self._events = events
        self._batch = batch
        self._next = 0
        self._bid = self._ask = Decimal(0)
        for _ in range(warm_up):
            self.step()

    def step(self) -> bool:
        if self._next >= len(self._events):
            return False
        batch = self._events[self._next : self._next + self._batch]
        self._next += self._batch
        for event in batch:
            self._harness.feed(event)
            if isinstance(event, BarClosed):
                self._bid = self._ask = money(event.close)
            elif isinstance(event, BookUpdated):
                self._bid, self._ask = money(event.bids[0][0]), money(event.asks[0][0])
        return True

    def touch(self) -> tuple[Decimal, Decimal]:
        return self._bid, self._ask

    def now(self) -> int:
        return self._harness.clock.timestamp_ns()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._harness.run(coroutine)


def on_bars() -> Market:
    return SimulatedMarket(with_funding(real_bars(BTC, 900)), 1, 3, participation_rate=Decimal("0.02"))


def on_book() -> Market:
    return SimulatedMarket(list(real_session()), 25, 400)


def on_book_with_latency() -> Market:
    return SimulatedMarket(list(real_session()), 25, 400, latency_ns=20_000_000)


def on_binance_book() -> Market:
    return BinanceMarket(list(real_session()), 25, 400, MAX_OPEN_ORDERS)


def on_binance_bars() -> Market:
    return BinanceMarket(with_funding(real_bars(BTC, 900)), 1, 3, MAX_OPEN_ORDERS, participation_rate=Decimal("0.02"))


VENUES = [
    pytest.param(on_binance_book, id="binance-local-book"),
    pytest.param(on_bars, id="simulated-bars"),
    pytest.param(on_book, id="simulated-book"),
    pytest.param(on_book_with_latency, id="simulated-book-latency"),
]
VENUES_WITH_HISTORY = [pytest.param(on_bars, id="simulated-bars")]
# Binance's user-data stream announces a settlement as a balance change; the adapter reads the payment
# (income joined with the settlement's rate and mark) over REST and reports it.
VENUES_WITH_FUNDING = [*VENUES_WITH_HISTORY, pytest.param(on_binance_bars, id="binance-local-bars")]

MarketFactory = Callable[[], Market]


# --- helpers ------------------------------------------------------------------------------------------

_ids = iter(range(1, 10_000_000))


def order(
    market: Market, side: OrderSide, quantity: str, order_type: OrderType = OrderType.MARKET, **fields: Any
) -> SubmitOrder:
    now = market.now()
    fields.setdefault("client_order_id", f"c-{next(_ids)}")
    fields.setdefault("symbol", market.symbol)
    return SubmitOrder(
        side=side, order_type=order_type, quantity=Decimal(quantity), ts_event=now, ts_init=now, **fields
    )


def submit(
    market: Market, side: OrderSide, quantity: str, order_type: OrderType = OrderType.MARKET, **fields: Any
) -> SubmitOrder:
    command = order(market, side, quantity, order_type, **fields)
    market.run(market.port.submit_order(command))
    return command


def tick(market: Market) -> Decimal:
    return real_instruments()[market.symbol].tick_size


def near(market: Market) -> Decimal:
    """A trigger distance the market covers soon: 2 bps of the price, on the tick grid."""
    bid, _ = market.touch()
    return on_tick(bid * Decimal("0.0002"), market)


def on_tick(price: Decimal, market: Market) -> Decimal:
    step = tick(market)
    return (price / step).to_integral_value(rounding=ROUND_DOWN) * step


def of(market: Market, kind: type[T], client_order_id: str | None = None) -> list[T]:
    return [
        r
        for r in market.reports
        if isinstance(r, kind) and (client_order_id is None or getattr(r, "client_order_id", None) == client_order_id)
    ]


def settle(market: Market, done: Callable[[], bool], steps: int = 400) -> None:
    """Let the market move until ``done`` (at least one step, at most ``steps``)."""
    for _ in range(steps):
        if not market.step() or done():
            return


def status(market: Market, command: SubmitOrder) -> OrderStatusReport:
    report = market.run(market.port.query_order(command.symbol, command.client_order_id))
    assert report is not None, f"the venue does not know {command.client_order_id}"
    return report


def closed(market: Market, command: SubmitOrder) -> Callable[[], bool]:
    def check() -> bool:
        report = market.run(market.port.query_order(command.symbol, command.client_order_id))
        return report is not None and report.status in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED)

    return check


def rejected_code(market: Market, command: SubmitOrder) -> int:
    settle(market, lambda: bool(of(market, OrderRejected, command.client_order_id)), steps=5)
    (rejection,) = of(market, OrderRejected, command.client_order_id)
    assert rejection.reason
    return rejection.code


def signed_fills(market: Market) -> Decimal:
    return sum((f.last_quantity * f.side.sign for f in of(market, OrderFilled)), Decimal(0))


def trade_records(fills: list[OrderFilled]) -> list[tuple[object, ...]]:
    """What a venue's trade list says about each fill (message ids are each process's own)."""
    return [
        (f.trade_id, f.client_order_id, f.symbol, f.side, f.last_quantity, f.last_price, f.commission, f.ts_event)
        for f in fills
    ]


def funding_records(payments: list[FundingPaid]) -> list[tuple[object, ...]]:
    """What a venue's funding income says about each payment."""
    return [(p.symbol, p.funding_time, p.rate, p.position_quantity, p.amount) for p in payments]


# --- orders -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", VENUES)
def test_conformance_market_order_is_accepted_then_filled(make: MarketFactory) -> None:
    # Arrange
    market = make()

    # Act
    command = submit(market, OrderSide.BUY, "0.050")
    settle(market, closed(market, command))

    # Assert
    mine = [r for r in market.reports if getattr(r, "client_order_id", None) == command.client_order_id]
    assert isinstance(mine[0], OrderAccepted) and all(isinstance(r, OrderFilled) for r in mine[1:])
    assert sum(f.last_quantity for f in of(market, OrderFilled, command.client_order_id)) == Decimal("0.050")
    report = status(market, command)
    assert report.status is OrderStatus.FILLED and report.filled_quantity == Decimal("0.050")
    (position,) = market.run(market.port.positions())
    assert position.quantity == Decimal("0.050") and position.symbol == BTC


@pytest.mark.parametrize("make", VENUES)
def test_conformance_gtc_limit_away_from_the_market_rests_until_canceled(make: MarketFactory) -> None:
    # Arrange
    market = make()
    bid, _ = market.touch()
    command = submit(market, OrderSide.BUY, "0.010", OrderType.LIMIT, price=on_tick(bid * Decimal("0.97"), market))
    settle(market, lambda: False, steps=3)

    # Act
    open_before = [o.client_order_id for o in market.run(market.port.open_orders(BTC))]
    market.run(market.port.cancel_order(BTC, command.client_order_id))
    settle(market, closed(market, command), steps=5)

    # Assert
    assert open_before == [command.client_order_id]
    assert status(market, command).status is OrderStatus.CANCELED
    assert len(of(market, OrderCanceled, command.client_order_id)) == 1
    assert market.run(market.port.open_orders()) == []


@pytest.mark.parametrize("make", VENUES)
def test_conformance_ioc_and_fok_that_cannot_trade_end_without_a_fill(make: MarketFactory) -> None:
    # Arrange
    market = make()
    bid, _ = market.touch()
    away = on_tick(bid * Decimal("0.97"), market)

    # Act
    ioc = submit(market, OrderSide.BUY, "0.010", OrderType.LIMIT, price=away, time_in_force=TimeInForce.IOC)
    fok = submit(market, OrderSide.BUY, "0.010", OrderType.LIMIT, price=away, time_in_force=TimeInForce.FOK)
    settle(
        market,
        lambda: (
            closed(market, ioc)() and (bool(of(market, OrderRejected, fok.client_order_id)) or closed(market, fok)())
        ),
    )

    # Assert
    assert of(market, OrderFilled) == []
    assert status(market, ioc).status is OrderStatus.EXPIRED
    fok_rejections = of(market, OrderRejected, fok.client_order_id)
    if fok_rejections:
        assert fok_rejections[0].code == BinanceErrorCode.FOK_ORDER_REJECT
    else:
        assert status(market, fok).status is OrderStatus.EXPIRED


@pytest.mark.parametrize("make", VENUES)
def test_conformance_post_only_that_would_take_is_rejected_with_5022(make: MarketFactory) -> None:
    # Arrange
    market = make()
    _, ask = market.touch()

    # Act
    command = submit(
        market, OrderSide.BUY, "0.010", OrderType.LIMIT, price=ask + tick(market), time_in_force=TimeInForce.GTX
    )

    # Assert
    assert rejected_code(market, command) == BinanceErrorCode.GTX_ORDER_REJECT
    assert market.run(market.port.query_order(BTC, command.client_order_id)) is None


@pytest.mark.parametrize("make", VENUES)
@pytest.mark.parametrize("order_type", [OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET])
def test_conformance_stop_orders_trigger_when_the_price_reaches_them_and_fill_as_market(
    make: MarketFactory, order_type: OrderType
) -> None:
    # Arrange: one sell and one buy trigger 2 bps beyond the market on either side, so whichever way
    # the market moves first, one of each pair triggers.
    market = make()
    bid, ask = market.touch()
    below, above = bid - near(market), ask + near(market)
    if order_type is OrderType.STOP_MARKET:
        commands = [
            submit(market, OrderSide.SELL, "0.010", order_type, stop_price=below),
            submit(market, OrderSide.BUY, "0.010", order_type, stop_price=above),
        ]
    else:
        commands = [
            submit(market, OrderSide.SELL, "0.010", order_type, stop_price=above),
            submit(market, OrderSide.BUY, "0.010", order_type, stop_price=below),
        ]

    # Act
    settle(market, lambda: any(closed(market, c)() for c in commands))

    # Assert
    triggered = [c for c in commands if status(market, c).status is OrderStatus.FILLED]
    assert triggered, "neither stop triggered"
    for command in triggered:
        fills = of(market, OrderFilled, command.client_order_id)
        assert sum(f.last_quantity for f in fills) == Decimal("0.010")
        assert status(market, command).stop_price == command.stop_price


@pytest.mark.parametrize("make", VENUES)
def test_conformance_a_stop_that_would_trigger_at_once_is_rejected_with_2021(make: MarketFactory) -> None:
    # Arrange
    market = make()
    bid, _ = market.touch()

    # Act
    command = submit(
        market, OrderSide.BUY, "0.010", OrderType.STOP_MARKET, stop_price=on_tick(bid * Decimal("0.99"), market)
    )

    # Assert
    assert rejected_code(market, command) == BinanceErrorCode.ORDER_WOULD_IMMEDIATELY_TRIGGER


@pytest.mark.parametrize("make", VENUES)
def test_conformance_reduce_only_may_reduce_but_never_increase(make: MarketFactory) -> None:
    # Arrange
    market = make()
    entry = submit(market, OrderSide.BUY, "0.050")
    settle(market, closed(market, entry))

    # Act
    increasing = submit(market, OrderSide.BUY, "0.010", reduce_only=True)
    reducing = submit(market, OrderSide.SELL, "0.020", reduce_only=True)
    settle(market, closed(market, reducing))

    # Assert
    assert rejected_code(market, increasing) == BinanceErrorCode.REDUCE_ONLY_REJECT
    assert status(market, reducing).status is OrderStatus.FILLED
    (position,) = market.run(market.port.positions())
    assert position.quantity == Decimal("0.030") == signed_fills(market)


@pytest.mark.parametrize("make", VENUES)
def test_conformance_close_position_stop_closes_the_whole_position(make: MarketFactory) -> None:
    # Arrange: a long with closePosition stops on both sides, 2 bps away
    market = make()
    entry = submit(market, OrderSide.BUY, "0.040")
    settle(market, closed(market, entry))
    bid, ask = market.touch()
    stop = submit(
        market, OrderSide.SELL, "0.001", OrderType.STOP_MARKET, stop_price=bid - near(market), close_position=True
    )
    take = submit(
        market,
        OrderSide.SELL,
        "0.001",
        OrderType.TAKE_PROFIT_MARKET,
        stop_price=ask + near(market),
        close_position=True,
    )

    # Act
    settle(market, lambda: closed(market, stop)() or closed(market, take)())
    settle(market, lambda: closed(market, stop)() and closed(market, take)(), steps=30)

    # Assert: one closed the whole 0.040; the other found no position left
    statuses = sorted([status(market, stop).status.value, status(market, take).status.value])
    assert statuses in (["EXPIRED", "FILLED"], ["ACCEPTED", "FILLED"])
    assert market.run(market.port.positions()) == []


@pytest.mark.parametrize("make", VENUES)
@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("price precision", BinanceErrorCode.BAD_PRECISION),
        ("quantity precision", BinanceErrorCode.BAD_PRECISION),
        ("tick size", BinanceErrorCode.PRICE_NOT_INCREASED_BY_TICK_SIZE),
        ("min notional", BinanceErrorCode.MIN_NOTIONAL),
        ("percent price up", BinanceErrorCode.PRICE_HIGHER_THAN_MULTIPLIER_UP),
        ("percent price down", BinanceErrorCode.PRICE_LOWER_THAN_MULTIPLIER_DOWN),
        ("insufficient margin", BinanceErrorCode.MARGIN_NOT_SUFFICIENT),
        ("unknown symbol", BinanceErrorCode.BAD_SYMBOL),
        ("position side", BinanceErrorCode.POSITION_SIDE_NOT_MATCH),
    ],
)
def test_conformance_filter_and_account_rejections_carry_binances_code(
    make: MarketFactory, name: str, code: BinanceErrorCode
) -> None:
    # Arrange
    market = make()
    bid, ask = market.touch()
    below = on_tick(bid * Decimal("0.98"), market)
    commands = {
        "price precision": lambda: order(
            market, OrderSide.BUY, "0.010", OrderType.LIMIT, price=below + Decimal("0.005")
        ),
        "quantity precision": lambda: order(market, OrderSide.BUY, "0.0105", OrderType.LIMIT, price=below),
        "tick size": lambda: order(market, OrderSide.BUY, "0.010", OrderType.LIMIT, price=below + Decimal("0.05")),
        "min notional": lambda: order(market, OrderSide.BUY, "0.001", OrderType.LIMIT, price=below),
        "percent price up": lambda: order(
            market, OrderSide.BUY, "0.010", OrderType.LIMIT, price=on_tick(ask * Decimal("1.06"), market)
        ),
        "percent price down": lambda: order(
            market, OrderSide.SELL, "0.010", OrderType.LIMIT, price=on_tick(bid * Decimal("0.94"), market)
        ),
        "insufficient margin": lambda: order(market, OrderSide.BUY, "999.000", OrderType.LIMIT, price=below),
        "unknown symbol": lambda: order(market, OrderSide.BUY, "1", symbol="NOSUCHUSDT"),
        "position side": lambda: order(market, OrderSide.BUY, "0.010", position_side=PositionSide.LONG),
    }
    command = commands[name]()

    # Act
    market.run(market.port.submit_order(command))

    # Assert
    assert rejected_code(market, command) == code
    assert market.run(market.port.open_orders()) == []


@pytest.mark.parametrize("make", VENUES)
def test_conformance_max_open_orders_is_refused_with_2025(make: MarketFactory) -> None:
    # Arrange: the venues under test allow MAX_OPEN_ORDERS resting orders on BTCUSDT
    market = make()
    bid, _ = market.touch()
    price = on_tick(bid * Decimal("0.97"), market)
    for _ in range(MAX_OPEN_ORDERS):
        submit(market, OrderSide.BUY, "0.002", OrderType.LIMIT, price=price)
    settle(market, lambda: len(of(market, OrderAccepted)) == MAX_OPEN_ORDERS, steps=5)

    # Act
    extra = submit(market, OrderSide.BUY, "0.002", OrderType.LIMIT, price=price)

    # Assert
    assert rejected_code(market, extra) == BinanceErrorCode.MAX_OPEN_ORDER_EXCEEDED


@pytest.mark.parametrize("make", VENUES)
def test_conformance_unknown_order_and_duplicate_client_order_id(make: MarketFactory) -> None:
    # Arrange
    market = make()
    bid, _ = market.touch()
    first = submit(market, OrderSide.BUY, "0.010", OrderType.LIMIT, price=on_tick(bid * Decimal("0.97"), market))
    settle(market, lambda: bool(of(market, OrderAccepted, first.client_order_id)), steps=5)

    # Act
    duplicate = submit(
        market,
        OrderSide.BUY,
        "0.020",
        OrderType.LIMIT,
        price=on_tick(bid * Decimal("0.96"), market),
        client_order_id=first.client_order_id,
    )
    with pytest.raises(RequestRejectedError) as unknown:
        market.run(market.port.cancel_order(BTC, "never-sent"))

    # Assert
    assert unknown.value.code == BinanceErrorCode.CANCEL_REJECTED
    assert rejected_code(market, duplicate) == BinanceErrorCode.DUPLICATED_CLIENT_ORDER_ID
    assert status(market, first).quantity == Decimal("0.010")


@pytest.mark.parametrize("make", VENUES)
def test_conformance_a_large_resting_order_fills_in_parts(make: MarketFactory) -> None:
    # Arrange: a large bid at the touch; the market trades into it a little at a time
    market = make()
    bid, _ = market.touch()
    command = submit(market, OrderSide.BUY, "8.000", OrderType.LIMIT, price=bid)

    # Act
    settle(market, lambda: len(of(market, OrderFilled, command.client_order_id)) >= 2, steps=900)

    # Assert
    fills = of(market, OrderFilled, command.client_order_id)
    assert len(fills) >= 2
    assert all(f.last_price <= bid for f in fills)
    report = status(market, command)
    assert report.filled_quantity == sum(f.last_quantity for f in fills)
    assert report.status in (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED)


@pytest.mark.parametrize("make", VENUES)
def test_conformance_a_cancel_racing_a_fill_leaves_one_consistent_outcome(make: MarketFactory) -> None:
    # Arrange: a market order canceled as soon as it is sent: the fill may win the race
    market = make()
    command = submit(market, OrderSide.BUY, "0.030")

    # Act
    try:
        market.run(market.port.cancel_order(BTC, command.client_order_id))
        refused = None
    except RequestRejectedError as error:
        refused = error
    settle(market, closed(market, command))

    # Assert
    report = status(market, command)
    fills = of(market, OrderFilled, command.client_order_id)
    canceled = of(market, OrderCanceled, command.client_order_id)
    assert report.filled_quantity == sum((f.last_quantity for f in fills), Decimal(0))
    if report.status is OrderStatus.FILLED:
        assert canceled == [] and report.filled_quantity == Decimal("0.030")
    else:
        assert report.status is OrderStatus.CANCELED and len(canceled) == 1 and refused is None
    if refused is not None:
        assert refused.code == BinanceErrorCode.CANCEL_REJECTED and report.status is OrderStatus.FILLED
    positions = market.run(market.port.positions())
    assert sum((p.quantity for p in positions), Decimal(0)) == signed_fills(market)


@pytest.mark.parametrize("make", VENUES)
def test_conformance_balance_adds_up(make: MarketFactory) -> None:
    # Arrange
    market = make()
    entry = submit(market, OrderSide.SELL, "0.100")
    settle(market, closed(market, entry))
    settle(market, lambda: False, steps=5)

    # Act
    balance = market.run(market.port.balances())
    (position,) = market.run(market.port.positions())

    # Assert
    fees = sum((f.commission for f in of(market, OrderFilled)), Decimal(0))
    assert balance.wallet_balance == Decimal("1000000") - fees
    assert (
        balance.unrealized_pnl
        == position.unrealized_pnl
        == position.quantity * (position.mark_price - position.entry_price)
    )
    assert balance.margin_balance == balance.wallet_balance + balance.unrealized_pnl
    assert balance.available_balance == balance.margin_balance - position.initial_margin
    assert position.liquidation_price is not None and position.liquidation_price > position.entry_price


# --- account history ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", VENUES)
def test_conformance_account_trades_are_the_fills_reported(make: MarketFactory) -> None:
    # Arrange: a long opened, then partly closed
    market = make()
    entry = submit(market, OrderSide.BUY, "0.050")
    settle(market, closed(market, entry))
    reduce = submit(market, OrderSide.SELL, "0.020")
    settle(market, closed(market, reduce))
    reported = of(market, OrderFilled)
    since = of(market, OrderFilled, reduce.client_order_id)[0].ts_event

    # Act
    trades = market.run(market.port.account_trades())
    of_symbol = market.run(market.port.account_trades(BTC))
    of_another = market.run(market.port.account_trades("ETHUSDT"))
    later = market.run(market.port.account_trades(BTC, start_ns=since))

    # Assert
    assert trade_records(trades) == trade_records(reported) == trade_records(of_symbol)
    assert {t.client_order_id for t in trades} == {entry.client_order_id, reduce.client_order_id}
    assert of_another == []
    assert trade_records(later) == trade_records([f for f in reported if f.ts_event >= since])


@pytest.mark.parametrize("make", [*VENUES, VENUES_WITH_FUNDING[-1]])
def test_conformance_funding_payments_are_the_funding_reported(make: MarketFactory) -> None:
    # Arrange: a long held until a settlement (where the recording reaches one) or for 600 steps
    market = make()
    entry = submit(market, OrderSide.BUY, "0.200")
    settle(market, closed(market, entry))
    settle(market, lambda: bool(of(market, FundingPaid)), steps=600)

    # Act
    payments = market.run(market.port.funding_payments())
    later = market.run(market.port.funding_payments(start_ns=market.now() + 1))

    # Assert
    assert funding_records(payments) == funding_records(of(market, FundingPaid))
    assert later == []


# --- account settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", VENUES)
def test_conformance_leverage_margin_type_and_position_mode(make: MarketFactory) -> None:
    # Arrange
    market = make()
    port = market.port

    # Act
    configured = market.run(port.set_leverage(BTC, 20))
    market.run(port.set_margin_type(BTC, MarginType.ISOLATED))
    market.run(port.set_position_mode(PositionMode.HEDGE))
    brackets = market.run(port.leverage_brackets(BTC))[BTC]

    # Assert
    assert configured.leverage == 20 and configured.margin_type is MarginType.CROSSED
    configuration = market.run(port.symbol_configuration(BTC))
    assert (configuration.leverage, configuration.margin_type) == (20, MarginType.ISOLATED)
    assert market.run(port.position_mode()) is PositionMode.HEDGE
    assert brackets[0].notional_floor == 0
    assert all(a.notional_cap == b.notional_floor for a, b in pairwise(brackets))
    for call, code in [
        (lambda: port.set_leverage(BTC, brackets[0].initial_leverage + 1), BinanceErrorCode.INVALID_LEVERAGE),
        (lambda: port.set_margin_type(BTC, MarginType.ISOLATED), BinanceErrorCode.NO_NEED_TO_CHANGE_MARGIN_TYPE),
        (lambda: port.set_position_mode(PositionMode.HEDGE), BinanceErrorCode.NO_NEED_TO_CHANGE_POSITION_SIDE),
    ]:
        with pytest.raises(RequestRejectedError) as raised:
            market.run(call())
        assert raised.value.code == code


# --- funding and liquidation ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", VENUES_WITH_FUNDING)
def test_conformance_funding_is_paid_at_the_recorded_rate_and_mark(make: MarketFactory) -> None:
    # Arrange
    market = make()
    entry = submit(market, OrderSide.BUY, "0.200")
    settle(market, closed(market, entry))

    # Act
    settle(market, lambda: bool(of(market, FundingPaid)), steps=900)

    # Assert: payment = size x mark x rate, paid by a long at a positive rate, and listed as funding income
    (paid, *_) = of(market, FundingPaid)
    assert paid.position_quantity == Decimal("0.200")
    assert paid.amount == -paid.position_quantity * paid.mark_price * paid.rate
    listed = market.run(market.port.funding_payments(start_ns=paid.ts_event))
    assert funding_records(listed[:1]) == funding_records([paid])
    assert market.run(market.port.funding_payments(start_ns=paid.ts_event + 1)) == listed[1:]


@pytest.mark.parametrize("make", VENUES_WITH_HISTORY)
def test_conformance_an_isolated_position_is_liquidated_when_its_mark_reaches_the_liquidation_price(
    make: MarketFactory,
) -> None:
    # Arrange: in hedge mode an isolated LONG and SHORT at 125x: whichever way the market goes, one
    # of them reaches its liquidation price (0.4% away).
    market = make()
    market.run(market.port.set_position_mode(PositionMode.HEDGE))
    market.run(market.port.set_margin_type(BTC, MarginType.ISOLATED))
    market.run(market.port.set_leverage(BTC, 125))
    long = submit(market, OrderSide.BUY, "0.100", position_side=PositionSide.LONG)
    short = submit(market, OrderSide.SELL, "0.100", position_side=PositionSide.SHORT)
    settle(market, lambda: closed(market, long)() and closed(market, short)())
    prices = {p.position_side: p.liquidation_price for p in market.run(market.port.positions())}

    # Act
    settle(market, lambda: bool(of(market, PositionLiquidated)), steps=900)

    # Assert
    (liquidated, *_) = of(market, PositionLiquidated)
    price = prices[liquidated.position_side]
    assert price is not None
    assert (
        liquidated.mark_price <= price
        if liquidated.position_side is PositionSide.LONG
        else liquidated.mark_price >= price
    )
    assert liquidated.quantity == Decimal("0.100") and liquidated.margin_type is MarginType.ISOLATED
    fill = of(market, OrderFilled, liquidated.client_order_id)[0]
    assert fill.commission == liquidated.liquidation_fee and fill.last_quantity == liquidated.quantity
    assert trade_records([fill])[0] in trade_records(market.run(market.port.account_trades(BTC)))
    sides = {p.position_side for p in market.run(market.port.positions())}
    assert liquidated.position_side not in sides
