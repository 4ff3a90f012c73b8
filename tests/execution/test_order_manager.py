"""The order manager between the bus and the venue: ids, records, report de-duplication.

Most tests run it against the simulated exchange fed real BTCUSDT / ETHUSDT 1m
bars (``data/ohlcv/binance_usdm_1m_2025-05``); the rest use a hand-written fake
venue that records what the order manager had done before each call.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from keel.api.simulated_exchange import SimulatedExchange
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import RequestRejectedError
from keel.core.instruments import Instrument
from keel.core.messages import (
    BarClosed,
    CancelAllOrders,
    CancelOrder,
    ComponentStateChanged,
    FundingPaid,
    MarginType,
    Message,
    OrderAccepted,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    SubmitOrder,
)
from keel.core.orders import ClientOrderIdGenerator, Order, OrderSide, OrderStatus, OrderType
from keel.core.ports import (
    BalanceReport,
    ExchangePort,
    LeverageBracket,
    OrderStatusReport,
    PositionMode,
    PositionReport,
    ReportHandler,
    SymbolConfiguration,
)
from keel.execution.order_manager import OrderManager
from keel.risk_management.position_manager import PositionManager

BTC = "BTCUSDT"
ETH = "ETHUSDT"


def approved(
    quantity: str, side: OrderSide = OrderSide.BUY, symbol: str = BTC, price: str | None = None
) -> OrderApproved:
    return OrderApproved(
        symbol=symbol,
        side=side,
        quantity=Decimal(quantity),
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        price=None if price is None else Decimal(price),
        reduce_only=False,
        strategy="portfolio",
        ts_event=0,
        ts_init=0,
    )


class Desk:
    """An OrderManager on a bus in front of a venue; every message on the bus is recorded."""

    def __init__(self, exchange: Any, clock: SimulatedClock) -> None:
        self.clock = clock
        self.bus = EventBus()
        self.exchange = exchange
        if isinstance(exchange, SimulatedExchange):
            # As in the pipeline: the venue sees a bar before anything else.
            self.bus.subscribe(BarClosed, exchange.on_bar, name="exchange.bars")
        self.orders = OrderManager(exchange, ClientOrderIdGenerator("keel"), self.bus, self.clock)
        self.positions = PositionManager(Decimal("10000"), self.bus, self.clock)
        self.seen: list[Message] = []
        self.bus.subscribe_all(self._record)
        self.orders.start()
        self.positions.start()
        self.bus.drain()

    def _record(self, message: Message) -> None:
        if not isinstance(message, ComponentStateChanged):
            self.seen.append(message)

    def publish(self, *messages: Message) -> None:
        for message in messages:
            if message.ts_event > self.clock.timestamp_ns():
                self.clock.advance_to(message.ts_event)
            self.bus.publish(message)
        self.bus.drain()

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [m for m in self.seen if isinstance(m, kind)]

    def command(self, kind: type[Any], **fields: Any) -> Any:
        now = self.clock.timestamp_ns()
        return kind(ts_event=now, ts_init=now, **fields)


@pytest.fixture
def simulated_desk(real_data) -> Callable[[], Desk]:
    """Build a desk on the simulated exchange, marked by the first real BTCUSDT and ETHUSDT bars."""

    def build() -> Desk:
        clock = SimulatedClock(real_data.bars(BTC, 1)[0].open_time)
        exchange = SimulatedExchange(real_data.instruments(), clock, initial_balance=Decimal("10000"), leverage=5)
        desk = Desk(exchange, clock)
        desk.publish(real_data.bars(BTC, 1)[0], real_data.bars(ETH, 1)[0])
        desk.seen.clear()
        return desk

    return build


class FakeVenue:
    """A hand-written ExchangePort: records calls and what the order manager held at each call."""

    name = "fake"
    is_synchronous = True

    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments
        self.order_manager: OrderManager | None = None
        self.handler: ReportHandler | None = None
        self.submitted: list[SubmitOrder] = []
        self.status_at_submit: list[OrderStatus | None] = []
        self.cancels: list[tuple[str, str]] = []
        self.cancel_alls: list[str | None] = []
        self.submit_errors: list[Exception] = []
        self.cancel_errors: list[Exception] = []
        self.margin_types: dict[str, MarginType] = {}
        self.mode = PositionMode.ONE_WAY

    def set_report_handler(self, handler: ReportHandler) -> None:
        self.handler = handler

    async def submit_order(self, command: SubmitOrder) -> None:
        assert self.order_manager is not None
        order = self.order_manager.orders.get(command.client_order_id)
        self.status_at_submit.append(None if order is None else order.status)
        assert order is not None, f"{command.client_order_id} was sent before it was recorded"
        self.submitted.append(command)
        if self.submit_errors:
            raise self.submit_errors.pop(0)

    async def cancel_order(self, symbol: str, client_order_id: str) -> None:
        self.cancels.append((symbol, client_order_id))
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)

    async def cancel_all_orders(self, symbol: str | None = None) -> None:
        self.cancel_alls.append(symbol)

    async def query_order(self, symbol: str, client_order_id: str) -> OrderStatusReport | None:
        return None

    async def open_orders(self, symbol: str | None = None) -> list[OrderStatusReport]:
        return []

    async def account_trades(self, symbol: str | None = None, start_ns: int = 0) -> list[OrderFilled]:
        return []

    async def funding_payments(self, start_ns: int = 0) -> list[FundingPaid]:
        return []

    async def positions(self) -> list[PositionReport]:
        return []

    async def balances(self) -> BalanceReport:
        zero = Decimal(0)
        return BalanceReport(
            asset="USDT", wallet_balance=zero, unrealized_pnl=zero, margin_balance=zero, available_balance=zero
        )

    async def exchange_info(self) -> dict[str, Instrument]:
        return dict(self.instruments)

    async def leverage_brackets(self, symbol: str | None = None) -> dict[str, tuple[LeverageBracket, ...]]:
        return {}

    async def set_leverage(self, symbol: str, leverage: int) -> SymbolConfiguration:
        return SymbolConfiguration(symbol=symbol, leverage=leverage, margin_type=MarginType.CROSSED, max_notional=None)

    async def set_margin_type(self, symbol: str, margin_type: MarginType) -> None:
        self.margin_types[symbol] = margin_type

    async def set_position_mode(self, mode: PositionMode) -> None:
        self.mode = mode

    async def position_mode(self) -> PositionMode:
        return self.mode

    async def symbol_configuration(self, symbol: str) -> SymbolConfiguration:
        margin_type = self.margin_types.get(symbol, MarginType.CROSSED)
        return SymbolConfiguration(symbol=symbol, leverage=5, margin_type=margin_type, max_notional=None)

    def accept(self, command: SubmitOrder) -> None:
        assert self.handler is not None
        self.handler(
            OrderAccepted(
                client_order_id=command.client_order_id,
                venue_order_id="v-" + command.client_order_id,
                symbol=command.symbol,
                ts_event=0,
                ts_init=0,
            )
        )


@pytest.fixture
def fake_desk(real_data) -> Callable[[], tuple[Desk, FakeVenue]]:
    """Build a desk on the hand-written fake venue, its clock at the first real BTCUSDT bar."""

    def build() -> tuple[Desk, FakeVenue]:
        venue = FakeVenue(real_data.instruments())
        desk = Desk(venue, SimulatedClock(real_data.bars(BTC, 1)[0].open_time))
        venue.order_manager = desk.orders
        return desk, venue

    return build


# --- submission --------------------------------------------------------------------------------------


def test_approved_orders_become_submit_commands_with_deterministic_client_ids(simulated_desk) -> None:
    # Arrange
    desk = simulated_desk()

    # Act
    desk.publish(approved("0.002"), approved("0.003", OrderSide.SELL, ETH))

    # Assert
    commands = desk.of_type(SubmitOrder)
    assert [c.client_order_id for c in commands] == ["keel-1", "keel-2"]
    assert [(c.symbol, c.side, c.quantity, c.order_type) for c in commands] == [
        (BTC, OrderSide.BUY, Decimal("0.002"), OrderType.MARKET),
        (ETH, OrderSide.SELL, Decimal("0.003"), OrderType.MARKET),
    ]
    assert all(c.strategy == "portfolio" and c.price is None for c in commands)
    assert list(desk.orders.orders) == ["keel-1", "keel-2"]


def test_the_order_is_recorded_before_the_venue_is_called(fake_desk) -> None:
    # Arrange
    desk, venue = fake_desk()

    # Act
    desk.publish(approved("0.002"))

    # Assert
    assert venue.status_at_submit == [OrderStatus.SUBMITTED]
    assert [c.client_order_id for c in venue.submitted] == ["keel-1"]
    assert desk.bus.handler_errors == 0
    assert isinstance(venue, ExchangePort)


def test_submitted_then_accepted_then_filled_are_published_in_that_order(real_data, simulated_desk) -> None:
    # Arrange
    desk = simulated_desk()
    bars = real_data.bars(BTC, 20)

    # Act
    desk.publish(approved("0.002"))
    desk.publish(bars[1])

    # Assert
    execution = [m for m in desk.seen if isinstance(m, OrderSubmitted | OrderAccepted | OrderFilled)]
    assert [type(m) for m in execution] == [OrderSubmitted, OrderAccepted, OrderFilled]
    assert {m.client_order_id for m in execution} == {"keel-1"}
    order = desk.orders.orders["keel-1"]
    assert order.status is OrderStatus.FILLED
    (fill,) = desk.of_type(OrderFilled)
    assert order.average_price == fill.last_price
    assert desk.orders.open_orders() == []
    assert desk.positions.quantity(BTC) == Decimal("0.002")


def test_a_repeated_submit_command_is_not_sent_twice(fake_desk) -> None:
    # Arrange
    desk, venue = fake_desk()
    command = desk.command(
        SubmitOrder,
        client_order_id="manual-1",
        symbol=BTC,
        side=OrderSide.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal("0.002"),
    )

    # Act
    desk.publish(command, command)

    # Assert
    assert [c.client_order_id for c in venue.submitted] == ["manual-1"]
    assert len(desk.of_type(OrderSubmitted)) == 1


@pytest.mark.parametrize(
    ("fields", "code", "reason"),
    [
        (
            {"quantity": 0.002},
            BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            "quantity must be a positive Decimal",
        ),
        ({"quantity": Decimal("NaN")}, BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, "got Decimal('NaN')"),
        ({"quantity": Decimal("-0.002")}, BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, "quantity must be"),
        (
            {"side": "BUY"},
            BinanceErrorCode.INVALID_SIDE,
            "side must be OrderSide.<member> (one of BUY, SELL), got 'BUY'",
        ),
        ({"order_type": "LIMIT"}, BinanceErrorCode.INVALID_ORDER_TYPE, "order_type must be OrderType.<member>"),
        (
            {"order_type": OrderType.LIMIT, "price": float("nan")},
            BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            "price must be a positive Decimal, got nan",
        ),
        ({"order_type": OrderType.LIMIT}, BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, "needs a price"),
    ],
    ids=[
        "float quantity",
        "NaN quantity",
        "negative quantity",
        "side by name",
        "type by name",
        "NaN price",
        "no price",
    ],
)
def test_a_submit_command_that_cannot_be_an_order_is_rejected_with_why_and_never_sent(
    fake_desk, fields: dict[str, Any], code: BinanceErrorCode, reason: str
) -> None:
    # Arrange: commands are not type-checked when built
    desk, venue = fake_desk()
    terms = {"side": OrderSide.BUY, "order_type": OrderType.MARKET, "quantity": Decimal("0.002"), **fields}
    command = desk.command(SubmitOrder, client_order_id="manual-1", symbol=BTC, **terms)

    # Act
    desk.publish(command)

    # Assert
    (rejected,) = desk.of_type(OrderRejected)
    assert (rejected.client_order_id, rejected.code) == ("manual-1", int(code))
    assert rejected.reason.startswith("not sent: ") and reason in rejected.reason
    assert venue.submitted == [] and "manual-1" not in desk.orders.orders
    assert desk.of_type(OrderSubmitted) == [] and desk.bus.handler_errors == 0


# --- venue reports --------------------------------------------------------------------------------------


def test_a_fill_reported_twice_is_published_once_and_counted(real_data, simulated_desk) -> None:
    # Arrange
    desk = simulated_desk()
    desk.publish(approved("0.002"))
    desk.publish(real_data.bars(BTC, 20)[1])
    (fill,) = desk.of_type(OrderFilled)

    # Act
    desk.orders.on_report(fill)
    desk.bus.drain()

    # Assert
    assert desk.orders.duplicate_fills == 1
    assert desk.of_type(OrderFilled) == [fill]
    assert desk.orders.orders["keel-1"].filled_quantity == Decimal("0.002")
    assert desk.positions.quantity(BTC) == Decimal("0.002")
    assert desk.positions.fills == 1


def test_a_report_for_an_unknown_client_order_id_is_counted_not_published(simulated_desk) -> None:
    # Arrange
    desk = simulated_desk()
    stranger = OrderAccepted(client_order_id="elsewhere-7", venue_order_id="99", symbol=BTC, ts_event=0, ts_init=0)

    # Act
    desk.orders.on_report(stranger)
    desk.bus.drain()

    # Assert
    assert desk.orders.unknown_reports == 1
    assert desk.seen == []


def test_funding_reports_pass_through_to_the_bus(fake_desk) -> None:
    # Arrange
    desk, _ = fake_desk()
    payment = FundingPaid(
        symbol=BTC,
        funding_time=0,
        rate=Decimal("0.00003745"),
        mark_price=Decimal("95421.1"),
        position_quantity=Decimal("0.010"),
        amount=Decimal("-0.03573520195"),
        ts_event=0,
        ts_init=0,
    )

    # Act
    desk.orders.on_report(payment)
    desk.bus.drain()

    # Assert
    assert desk.of_type(FundingPaid) == [payment]
    assert desk.positions.funding_received == Decimal("-0.03573520195")


# --- cancels -----------------------------------------------------------------------------------------------


def test_cancel_order_command_cancels_through_the_venue(simulated_desk) -> None:
    # Arrange
    desk = simulated_desk()
    desk.publish(approved("0.002", price="94000.0"))

    # Act
    desk.publish(desk.command(CancelOrder, client_order_id="keel-1", symbol=BTC))

    # Assert
    (canceled,) = desk.of_type(OrderCanceled)
    assert canceled.client_order_id == "keel-1"
    assert desk.orders.orders["keel-1"].status is OrderStatus.CANCELED
    assert desk.orders.open_orders() == []
    assert _run_now(desk.exchange.open_orders()) == []


def test_cancel_all_orders_command_cancels_one_symbol_then_every_symbol(simulated_desk) -> None:
    # Arrange
    desk = simulated_desk()
    desk.publish(
        approved("0.002", price="94000.0"),
        approved("0.002", OrderSide.SELL, price="97000.0"),
        approved("0.020", symbol=ETH, price="1800.00"),
    )
    assert [o.client_order_id for o in desk.orders.open_orders()] == ["keel-1", "keel-2", "keel-3"]

    # Act
    desk.publish(desk.command(CancelAllOrders, symbol=BTC, reason="flatten BTC"))
    after_btc = [o.client_order_id for o in desk.orders.open_orders()]
    desk.publish(desk.command(CancelAllOrders, symbol=None, reason="emergency stop"))

    # Assert
    assert after_btc == ["keel-3"]
    assert [c.client_order_id for c in desk.of_type(OrderCanceled)] == ["keel-1", "keel-2", "keel-3"]
    assert desk.orders.open_orders() == []
    assert _run_now(desk.exchange.open_orders()) == []


def test_cancel_all_orders_reaches_the_venue(fake_desk) -> None:
    # Arrange
    desk, venue = fake_desk()

    # Act
    desk.publish(desk.command(CancelAllOrders, symbol=None, reason="emergency stop"))

    # Assert
    assert venue.cancel_alls == [None]


# --- venue errors -------------------------------------------------------------------------------------------


def test_a_refused_cancel_is_counted_and_the_bus_goes_on(fake_desk) -> None:
    # Arrange
    desk, venue = fake_desk()
    desk.publish(approved("0.002", price="94000.0"))
    venue.accept(venue.submitted[0])
    desk.bus.drain()
    venue.cancel_errors.append(RequestRejectedError("Unknown order sent.", BinanceErrorCode.CANCEL_REJECTED))

    # Act
    desk.publish(desk.command(CancelOrder, client_order_id="keel-1", symbol=BTC))
    desk.publish(approved("0.003"))

    # Assert
    assert venue.cancels == [(BTC, "keel-1")]
    assert desk.orders.venue_errors == 1
    assert desk.bus.handler_errors == 0
    assert [c.client_order_id for c in venue.submitted] == ["keel-1", "keel-2"]


def test_a_refused_submit_is_counted_and_the_bus_goes_on(fake_desk) -> None:
    # Arrange
    desk, venue = fake_desk()
    venue.submit_errors.append(RequestRejectedError("Margin is insufficient.", BinanceErrorCode.MARGIN_NOT_SUFFICIENT))

    # Act
    desk.publish(approved("100"))
    desk.publish(approved("0.002"))

    # Assert
    assert desk.orders.venue_errors == 1
    assert desk.bus.handler_errors == 0
    assert [c.client_order_id for c in venue.submitted] == ["keel-1", "keel-2"]


def test_after_a_refused_cancel_the_order_is_working_again_and_can_be_canceled_again(fake_desk) -> None:
    # Arrange: the venue refuses the first cancel (-2011), then accepts the second
    desk, venue = fake_desk()
    desk.publish(approved("0.002", price="94000.0"))
    venue.accept(venue.submitted[0])
    desk.bus.drain()
    venue.cancel_errors.append(RequestRejectedError("Unknown order sent.", BinanceErrorCode.CANCEL_REJECTED))
    desk.publish(desk.command(CancelOrder, client_order_id="keel-1", symbol=BTC))

    # Act
    status_after_refusal = desk.orders.orders["keel-1"].status
    desk.publish(desk.command(CancelOrder, client_order_id="keel-1", symbol=BTC))

    # Assert
    assert desk.bus.handler_errors == 0
    assert venue.cancels == [(BTC, "keel-1"), (BTC, "keel-1")]
    assert status_after_refusal is OrderStatus.ACCEPTED


def test_a_submit_refused_by_the_venue_leaves_no_open_order(fake_desk) -> None:
    # Arrange
    desk, venue = fake_desk()
    venue.submit_errors.append(RequestRejectedError("Margin is insufficient.", BinanceErrorCode.MARGIN_NOT_SUFFICIENT))

    # Act
    desk.publish(approved("100"))

    # Assert
    order = desk.orders.orders["keel-1"]
    assert order.status is OrderStatus.REJECTED
    assert desk.orders.open_orders() == []


def test_reconciliation_closes_an_accepted_order_the_venue_no_longer_knows_as_canceled(simulated_desk) -> None:
    # Arrange: the journal saw the venue accept a resting order; the venue has no record of it any more
    # (Binance drops canceled or expired orders without fills from its order queries after 3 days).
    desk = simulated_desk()
    resting = desk.command(
        SubmitOrder, client_order_id="keel-7", symbol=ETH, side=OrderSide.BUY, order_type=OrderType.LIMIT,
        quantity=Decimal("0.01"), price=Decimal("1000.00"),
    )  # fmt: skip
    desk.orders.replay(resting)
    desk.orders.replay(desk.command(OrderAccepted, client_order_id="keel-7", venue_order_id="9001", symbol=ETH))

    # Act
    result = _run_now(desk.orders.reconcile(0))
    desk.bus.drain()

    # Assert
    order = desk.orders.orders["keel-7"]
    assert order.status is OrderStatus.CANCELED and order.filled_quantity == 0
    assert "keel-7" in result.resolved_orders and result.never_sent_orders == []
    canceled = [m for m in desk.seen if isinstance(m, OrderCanceled)]
    assert [c.client_order_id for c in canceled] == ["keel-7"] and "no longer knows" in canceled[0].reason


def _run_now(coroutine: Any) -> Any:
    """Drive a never-suspending coroutine of the simulated venue to its result."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise AssertionError("the simulated exchange suspended")


# --- ambiguous submits, venue-originated events, queries, and the state machine under random reports ---------


class AmbiguousVenue(SimulatedExchange):
    """The real simulated venue whose submit response is lost: the order may or may not have reached it."""

    def __init__(self, *args: Any, reaches: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reaches = reaches
        self.sent: list[str] = []

    async def submit_order(self, command: SubmitOrder) -> None:
        from keel.core.errors import AmbiguousOutcomeError

        self.sent.append(command.client_order_id)
        if self.reaches or len(self.sent) > 1:
            self.submit(command)
        if len(self.sent) == 1:
            raise AmbiguousOutcomeError(f"submit {command.client_order_id}: timed out (-1007)")


@pytest.fixture
def ambiguous_desk(real_data) -> Callable[[bool], tuple[Desk, AmbiguousVenue]]:
    """Build a desk on the venue whose first submit response is lost, marked by the first real BTCUSDT bar."""

    def build(reaches: bool) -> tuple[Desk, AmbiguousVenue]:
        (bar,) = real_data.bars(BTC, 1)
        clock = SimulatedClock(bar.ts_event)
        venue = AmbiguousVenue(real_data.instruments(), clock, initial_balance=Decimal("10000"), reaches=reaches)
        desk = Desk(venue, clock)
        venue.on_bar(bar)
        return desk, venue

    return build


def test_ambiguous_submit_that_reached_the_venue_is_resolved_by_query_without_resending(ambiguous_desk):
    # Arrange
    desk, venue = ambiguous_desk(reaches=True)

    # Act
    desk.bus.publish(approved("0.010", price="90000"))
    desk.bus.drain()

    # Assert
    assert venue.sent == ["keel-1"]
    assert desk.orders.orders["keel-1"].status is not OrderStatus.SUBMITTED
    assert desk.orders.resends == 0 and not desk.orders.unresolved
    assert desk.orders.venue_unreachable == 1


def test_ambiguous_submit_that_never_arrived_is_resent_under_the_same_id(ambiguous_desk):
    # Arrange
    desk, venue = ambiguous_desk(reaches=False)

    # Act
    desk.bus.publish(approved("0.010", price="90000"))
    desk.bus.drain()

    # Assert
    assert venue.sent == ["keel-1", "keel-1"]
    assert desk.orders.resends == 1
    assert desk.orders.orders["keel-1"].venue_order_id is not None
    assert len(desk.orders.orders) == 1


def test_venue_liquidation_events_are_published_and_fills_are_queryable(real_data):
    # Arrange
    from keel.core.messages import PositionLiquidated, PositionSide
    from keel.core.orders import LiquiditySide

    fake_clock = SimulatedClock(0)
    venue = SimulatedExchange(real_data.instruments(), fake_clock, initial_balance=Decimal("10000"))
    desk = Desk(venue, fake_clock)
    liquidated = PositionLiquidated(
        symbol=BTC, position_side=PositionSide.BOTH, margin_type=MarginType.CROSSED, client_order_id="autoclose-1",
        side=OrderSide.SELL, quantity=Decimal("0.5"), price=Decimal("76120.4"), mark_price=Decimal("76120.4"),
        realized_pnl=Decimal("-10"), liquidation_fee=Decimal("5"), insurance_fund_covered=Decimal(0),
        ts_event=1, ts_init=1,
    )  # fmt: skip
    fill = OrderFilled(
        client_order_id="autoclose-1", venue_order_id="9", symbol=BTC, trade_id="t9", side=OrderSide.SELL,
        last_quantity=Decimal("0.5"), last_price=Decimal("76120.4"), commission=Decimal("5"),
        liquidity_side=LiquiditySide.TAKER, ts_event=1, ts_init=1,
    )  # fmt: skip

    # Act
    desk.orders.on_report(fill)
    desk.orders.on_report(liquidated)
    desk.bus.drain()

    # Assert
    assert liquidated in desk.seen and fill in desk.seen
    assert desk.orders.venue_reports == 1 and desk.orders.unknown_reports == 0
    assert desk.orders.fills() == []


def _report_strategy():
    from hypothesis import strategies as st

    return st.lists(
        st.tuples(
            st.sampled_from(["fill", "fill", "fill", "accept", "cancel", "expire", "reject"]),
            st.sampled_from(["t1", "t2", "t3", "t4", "t5"]),
            st.sampled_from(["0.001", "0.002", "0.003"]),
        ),
        max_size=25,
    )


def test_order_state_machine_survives_random_report_orders(real_data):
    # Arrange
    from hypothesis import given, settings

    from keel.core.errors import InvalidTransitionError
    from keel.core.messages import OrderExpired, OrderRejected
    from keel.core.orders import LiquiditySide

    @settings(max_examples=200, deadline=None)
    @given(_report_strategy())
    def check(reports: list[tuple[str, str, str]]) -> None:
        bus, clock = EventBus(), SimulatedClock(0)
        venue = SimulatedExchange(real_data.instruments(), clock, initial_balance=Decimal("10000"))
        manager = OrderManager(venue, ClientOrderIdGenerator("keel"), bus, clock)
        order_quantity = Decimal("0.005")
        manager.orders["keel-1"] = order = Order(
            client_order_id="keel-1", symbol=BTC, side=OrderSide.BUY, order_type=OrderType.MARKET,
            quantity=order_quantity,
        )  # fmt: skip
        order.submit(0)
        applied: dict[str, Decimal] = {}
        common = {"client_order_id": "keel-1", "symbol": BTC, "ts_event": 1, "ts_init": 1}
        for kind, trade_id, quantity in reports:
            report = {
                "fill": lambda t=trade_id, q=quantity: OrderFilled(
                    venue_order_id="1", trade_id=t, side=OrderSide.BUY, last_quantity=Decimal(q),
                    last_price=Decimal("60000"), commission=Decimal(0), liquidity_side=LiquiditySide.TAKER, **common,
                ),
                "accept": lambda: OrderAccepted(venue_order_id="1", **common),
                "cancel": lambda: OrderCanceled(**common),
                "expire": lambda: OrderExpired(**common),
                "reject": lambda: OrderRejected(code=-2010, reason="insufficient margin", **common),
            }[kind]()  # fmt: skip
            before = (order.status, order.filled_quantity)
            try:
                manager.on_report(report)
            except InvalidTransitionError:
                # Act / Assert: a forbidden move changes nothing
                assert (order.status, order.filled_quantity) == before
                continue
            if kind == "fill" and trade_id not in applied:
                applied[trade_id] = Decimal(quantity)
            # Assert: filled is exactly the distinct applied fills, never above the order, and the status agrees
            assert order.filled_quantity == sum(applied.values(), Decimal(0)) <= order_quantity
            if order.status is OrderStatus.FILLED:
                assert order.filled_quantity == order_quantity
            if order.status is OrderStatus.REJECTED:
                assert order.filled_quantity == 0
        assert len(manager.fills()) == len(applied)

    # Act
    check()


# --- recovery: write-ahead, snapshot, journal replay, reconciliation ------------------------------------


def test_every_order_is_written_ahead_before_the_venue_call(fake_desk) -> None:
    # Arrange
    desk, venue = fake_desk()
    written: list[tuple[str, int]] = []
    desk.orders.set_write_ahead(lambda command: written.append((command.client_order_id, len(venue.submitted))))

    # Act
    desk.publish(approved("0.002"), approved("0.003", side=OrderSide.SELL))

    # Assert
    assert written == [("keel-1", 0), ("keel-2", 1)]


def _trade(desk: Desk, real_data: Any) -> list[Message]:
    """Place and fill a few orders on real bars; return every message a journal would hold, commands included."""
    journal: list[Message] = []
    desk.orders.set_write_ahead(journal.append)
    desk.bus.subscribe_all(lambda m: journal.append(m) if not isinstance(m, SubmitOrder) else None)
    bars = real_data.bars(BTC, 6)
    desk.publish(approved("0.004"), approved("0.010", side=OrderSide.SELL, price="200000"))
    desk.publish(bars[1])
    desk.publish(approved("0.002", side=OrderSide.SELL))
    desk.publish(bars[2])
    return journal


def test_a_snapshot_restores_every_order_and_the_account_events(real_data, simulated_desk) -> None:
    # Arrange
    desk = simulated_desk()
    _trade(desk, real_data)
    snapshot = desk.orders.snapshot()

    # Act
    restored = simulated_desk()
    restored.orders.restore(snapshot)

    # Assert
    assert restored.orders.snapshot() == snapshot
    assert restored.orders.fills() == desk.orders.fills()
    assert restored.orders.account_events() == desk.orders.account_events()
    assert restored.orders.next_client_order_id() == "keel-4"
    assert restored.orders.position(BTC) == desk.orders.position(BTC) == desk.positions.quantity(BTC)


def test_replaying_the_journal_rebuilds_the_orders_and_positions(real_data, simulated_desk) -> None:
    # Arrange
    desk = simulated_desk()
    journal = _trade(desk, real_data)
    rebuilt = simulated_desk()

    # Act
    for message in journal:
        event = rebuilt.orders.replay(message)
        if event is not None:
            rebuilt.positions.replay(event)

    # Assert
    assert rebuilt.orders.snapshot() == desk.orders.snapshot()
    assert rebuilt.positions.quantity(BTC) == desk.positions.quantity(BTC) == Decimal("0.002")
    assert rebuilt.orders.position(BTC) == Decimal("0.002")
    assert rebuilt.positions.fees_paid == desk.positions.fees_paid
    assert rebuilt.seen == []


def test_replaying_a_message_twice_changes_nothing(real_data, simulated_desk) -> None:
    # Arrange
    desk = simulated_desk()
    journal = _trade(desk, real_data)
    rebuilt = simulated_desk()
    for message in journal:
        rebuilt.orders.replay(message)

    # Act
    again = [rebuilt.orders.replay(message) for message in journal]

    # Assert
    assert again == [None] * len(journal)
    assert rebuilt.orders.snapshot() == desk.orders.snapshot()


def test_reconciliation_applies_what_the_journal_missed_and_closes_what_never_reached_the_venue(
    real_data, simulated_desk
) -> None:
    # Arrange: the journal kept every order (written ahead) but lost the events buffered after the
    # first fill; the venue went on. One more order was journaled but never left keel.
    desk = simulated_desk()
    journal = _trade(desk, real_data)
    first_fill = next(i for i, m in enumerate(journal) if isinstance(m, OrderFilled))
    kept = journal[: first_fill + 1] + [m for m in journal[first_fill + 1 :] if isinstance(m, SubmitOrder)]
    restarted = Desk(desk.exchange, desk.clock)
    for message in kept:
        event = restarted.orders.replay(message)
        if event is not None:
            restarted.positions.replay(event)
    never_sent = restarted.command(
        SubmitOrder, client_order_id="keel-9", symbol=ETH, side=OrderSide.BUY, order_type=OrderType.MARKET,
        quantity=Decimal("0.01"),
    )  # fmt: skip
    restarted.orders.replay(never_sent)

    # Act
    result = _run_now(restarted.orders.reconcile(0))
    restarted.bus.drain()

    # Assert
    assert result.missed_fills == len(desk.orders.fills()) - 1
    assert result.never_sent_orders == ["keel-9"] and result.adopted_orders == []
    assert result.mismatches == []
    assert restarted.orders.orders["keel-9"].status is OrderStatus.REJECTED
    for client_order_id, order in desk.orders.orders.items():
        mine = restarted.orders.orders[client_order_id]
        assert (mine.status, mine.filled_quantity) == (order.status, order.filled_quantity)
    assert restarted.positions.quantity(BTC) == desk.positions.quantity(BTC)


def test_reconciliation_adopts_an_order_only_the_venue_knows(real_data, simulated_desk) -> None:
    # Arrange: an order placed at the venue by someone else (another client id namespace).
    desk = simulated_desk()
    manual = desk.command(
        SubmitOrder, client_order_id="web_1", symbol=BTC, side=OrderSide.BUY, order_type=OrderType.LIMIT,
        quantity=Decimal("0.002"), price=Decimal("50000"),
    )  # fmt: skip
    desk.exchange.submit(manual)
    restarted = Desk(desk.exchange, desk.clock)
    journal: list[Message] = []
    restarted.orders.set_write_ahead(journal.append)

    # Act
    result = _run_now(restarted.orders.reconcile(0))
    restarted.bus.drain()

    # Assert
    assert result.adopted_orders == ["web_1"]
    assert restarted.orders.orders["web_1"].status is OrderStatus.ACCEPTED
    assert [m.client_order_id for m in journal] == ["web_1"]


# --- every failure on the submit path ends sent, rejected with a reason, or unresolved and asked about ---------


class UnreachableVenue(FakeVenue):
    """The fake venue whose calls fail as scripted: each submit and query pops its next error (None: it works)."""

    def __init__(self, instruments: dict[str, Instrument]) -> None:
        super().__init__(instruments)
        self.query_errors: list[Exception | None] = []
        self.queries: list[str] = []
        self.delivered: set[str] = set()

    async def submit_order(self, command: SubmitOrder) -> None:
        error = self.submit_errors.pop(0) if self.submit_errors else None
        self.submitted.append(command)
        if error is not None:
            raise error
        self.delivered.add(command.client_order_id)

    async def query_order(self, symbol: str, client_order_id: str) -> OrderStatusReport | None:
        self.queries.append(client_order_id)
        error = self.query_errors.pop(0) if self.query_errors else None
        if error is not None:
            raise error
        return None


RESOLVE_INTERVAL_NS = 5_000_000_000


def unreachable_desk(real_data: Any) -> tuple[Desk, UnreachableVenue]:
    venue = UnreachableVenue(real_data.instruments())
    desk = Desk(venue, SimulatedClock(real_data.bars(BTC, 1)[0].open_time))
    venue.order_manager = desk.orders
    return desk, venue


def later(desk: Desk, nanoseconds: int) -> None:
    desk.clock.advance_to(desk.clock.timestamp_ns() + nanoseconds)
    desk.bus.drain()


def test_a_submit_whose_connection_broke_stays_unresolved_and_is_asked_about_until_the_venue_answers(
    real_data,
) -> None:
    # Arrange: the submit's connection breaks, then the venue cannot be asked twice
    desk, venue = unreachable_desk(real_data)
    venue.submit_errors.append(ConnectionError("connection reset by peer"))
    venue.query_errors.extend([TimeoutError("query timed out"), ConnectionError("connection refused")])

    # Act
    desk.publish(approved("0.002"))
    after_submit = (desk.orders.orders["keel-1"].status, set(desk.orders.unresolved), len(venue.queries))
    later(desk, RESOLVE_INTERVAL_NS)
    after_first_retry = (set(desk.orders.unresolved), len(venue.queries))
    later(desk, RESOLVE_INTERVAL_NS)

    # Assert: unresolved while unanswered; once the venue says it does not know the order, it is sent again
    assert after_submit == (OrderStatus.SUBMITTED, {"keel-1"}, 1)
    assert after_first_retry == ({"keel-1"}, 2)
    assert venue.queries == ["keel-1", "keel-1", "keel-1"]
    assert [c.client_order_id for c in venue.submitted] == ["keel-1", "keel-1"]
    assert venue.delivered == {"keel-1"} and not desk.orders.unresolved
    assert desk.bus.handler_errors == 0


def test_an_order_that_cannot_be_written_ahead_is_rejected_with_the_reason_and_never_sent(fake_desk) -> None:
    # Arrange
    desk, venue = fake_desk()

    def unwritable(_command: SubmitOrder) -> None:
        raise OSError("No space left on device: the spill file")

    desk.orders.set_write_ahead(unwritable)

    # Act
    desk.publish(approved("0.002"))

    # Assert
    order = desk.orders.orders["keel-1"]
    assert order.status is OrderStatus.REJECTED
    assert order.reason is not None and "not sent" in order.reason and "No space left" in order.reason
    assert venue.submitted == []
    assert desk.orders.open_orders() == [] and desk.bus.handler_errors == 0


def _failures():
    from hypothesis import strategies as st

    from keel.core.errors import AmbiguousOutcomeError, OperatorActionRequiredError, RetryLaterError

    return st.sampled_from(
        [
            None,
            ConnectionError("connection reset"),
            TimeoutError("timed out"),
            OSError("network unreachable"),
            RuntimeError("adapter bug"),
            RetryLaterError("-1003 too many requests"),
            AmbiguousOutcomeError("-1007 timeout"),
            OperatorActionRequiredError("-2015 invalid key"),
            RequestRejectedError("Margin is insufficient.", BinanceErrorCode.MARGIN_NOT_SUFFICIENT),
        ]
    )


def test_every_failure_on_the_submit_path_ends_sent_rejected_or_unresolved(real_data) -> None:
    # Arrange
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None)
    @given(st.lists(_failures(), max_size=8), st.lists(_failures(), max_size=8), st.integers(1, 3))
    def check(submit_errors: list[Exception | None], query_errors: list[Exception | None], orders: int) -> None:
        desk, venue = unreachable_desk(real_data)
        venue.submit_errors.extend(submit_errors)  # type: ignore[arg-type]
        venue.query_errors.extend(query_errors)

        # Act
        for _ in range(orders):
            desk.publish(approved("0.002"))
        for _ in range(10):
            later(desk, RESOLVE_INTERVAL_NS)

            # Assert: at every step, each order is at the venue, rejected with a reason, or unresolved
            for client_order_id, order in desk.orders.orders.items():
                sent = client_order_id in venue.delivered
                rejected = order.status is OrderStatus.REJECTED and bool(order.reason)
                assert sent or rejected or client_order_id in desk.orders.unresolved, client_order_id
        assert desk.bus.handler_errors == 0

    # Act
    check()


def test_finished_orders_beyond_the_kept_number_are_forgotten_and_open_ones_stay(simulated_desk) -> None:
    # Arrange: six resting limit orders, the last five canceled; two finished orders are kept
    desk = simulated_desk()
    desk.orders.finished_orders_kept = 2
    for _ in range(6):
        desk.publish(approved("0.002", price="94000.0"))
    for number in range(2, 7):
        desk.publish(desk.command(CancelOrder, client_order_id=f"keel-{number}", symbol=BTC))

    # Act
    desk.publish(approved("0.002", price="94000.0"))

    # Assert: the three oldest finished orders are gone, the open one and the two newest finished stay
    assert list(desk.orders.orders) == ["keel-1", "keel-5", "keel-6", "keel-7"]
    assert desk.orders.orders_forgotten == 3
    assert [o.client_order_id for o in desk.orders.open_orders()] == ["keel-1", "keel-7"]
