"""The simulated venue on real BTCUSDT 1m bars: triggers, time in force, participation, latency, filters, settings.

Every expected price is worked out by hand from the real rows (bar 0 of
2025-05-04 15:33 UTC onwards); the first bars are:

    bar  open     high     low      close    volume
    0    95505.4  95505.5  95502.7  95502.7  16.536
    1    95502.8  95502.8  95478.0  95478.1  28.313
    2    95478.0  95478.1  95457.6  95457.6  28.674
    3    95457.7  95467.7  95457.6  95467.7  29.715
    5    95473.7  95474.3  95450.3  95463.8  45.483
    6    95463.8  95486.5  95463.8  95486.4  35.375
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from venue_harness import Harness, HarnessFactory, money, real_bars, real_instruments, with_funding

from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import RequestRejectedError
from keel.core.messages import (
    BarClosed,
    OrderAccepted,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionSide,
    WorkingType,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderStatus, OrderType, TimeInForce
from keel.core.ports import MarginType, PositionMode

BTC = "BTCUSDT"
BARS = real_bars(BTC)
STOP = OrderType.STOP_MARKET
TAKE_PROFIT = OrderType.TAKE_PROFIT_MARKET


def rejection(venue: Harness) -> OrderRejected:
    (rejected,) = venue.of_type(OrderRejected)
    return rejected


# --- stop and take-profit orders ------------------------------------------------------------------------


def test_sell_stop_on_the_last_price_triggers_inside_the_bar_and_fills_at_the_slipped_stop(
    bar_venue: HarnessFactory,
) -> None:
    # Arrange: after bar 0 (close 95502.7) a sell stop at 95480.0; bar 1 trades down to 95478.0
    venue = bar_venue()
    venue.feed(BARS[0])
    venue.submit(OrderSide.SELL, "0.010", STOP, stop_price=Decimal("95480.0"))

    # Act
    venue.feed(BARS[1])

    # Assert: 95480.0 * 0.9999 = 95470.452, rounded down to the tick
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == Decimal("95470.4")
    assert fill.liquidity_side is LiquiditySide.TAKER
    assert fill.ts_event == BARS[1].open_time
    assert fill.commission == Decimal("0.010") * Decimal("95470.4") * Decimal("0.0005")


def test_buy_stop_reached_at_the_open_fills_from_the_open(bar_venue: HarnessFactory) -> None:
    # Arrange: after bar 2 (close 95457.6) a buy stop at 95457.7; bar 3 opens at 95457.7
    venue = bar_venue()
    venue.feed(*BARS[:3])
    venue.submit(OrderSide.BUY, "0.010", STOP, stop_price=Decimal("95457.7"))

    # Act
    venue.feed(BARS[3])

    # Assert: 95457.7 * 1.0001 = 95467.24577, rounded up
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == Decimal("95467.3")


def test_a_stop_the_bar_never_reaches_stays_working(bar_venue: HarnessFactory) -> None:
    # Arrange: bar 1's low is 95478.0
    venue = bar_venue()
    venue.feed(BARS[0])
    command = venue.submit(OrderSide.SELL, "0.010", STOP, stop_price=Decimal("95477.9"))

    # Act
    venue.feed(BARS[1])

    # Assert
    assert venue.of_type(OrderFilled) == []
    (working,) = venue.run(venue.exchange.open_orders())
    assert working.client_order_id == command.client_order_id and working.stop_price == Decimal("95477.9")


def test_take_profit_sell_closes_a_long_when_the_bar_rises_to_it(bar_venue: HarnessFactory) -> None:
    # Arrange: a long from bar 5's close; a reduce-only take-profit at 95480.0, reached by bar 6 (high 95486.5)
    venue = bar_venue()
    venue.feed(*BARS[:5])
    venue.submit(OrderSide.BUY, "0.010")
    venue.feed(BARS[5])
    venue.submit(OrderSide.SELL, "0.010", TAKE_PROFIT, stop_price=Decimal("95480.0"), reduce_only=True)

    # Act
    venue.feed(BARS[6])

    # Assert: 95480.0 * 0.9999 = 95470.452 -> 95470.4
    _, take_profit = venue.of_type(OrderFilled)
    assert take_profit.last_price == Decimal("95470.4") and take_profit.side is OrderSide.SELL
    assert venue.run(venue.exchange.positions()) == []


def test_mark_price_stop_triggers_at_the_close_and_fills_at_the_next_open(bar_venue: HarnessFactory) -> None:
    # Arrange: the same sell stop at 95460.0 twice: on the last price it triggers inside bar 2
    # (low 95457.6); on the mark (the close stands in for it) it triggers at bar 2's close 95457.6.
    venue = bar_venue(initial_balance=Decimal("100000"))
    venue.feed(*BARS[:2])
    last = venue.submit(OrderSide.SELL, "0.010", STOP, stop_price=Decimal("95460.0"))
    mark = venue.submit(
        OrderSide.SELL, "0.010", STOP, stop_price=Decimal("95460.0"), working_type=WorkingType.MARK_PRICE
    )

    # Act
    venue.feed(BARS[2])
    after_bar_2 = [f.client_order_id for f in venue.of_type(OrderFilled)]
    venue.feed(BARS[3])

    # Assert: 95460.0 * 0.9999 = 95450.454 -> 95450.4; bar 3 open 95457.7 * 0.9999 = 95448.15423 -> 95448.1
    assert after_bar_2 == [last.client_order_id]
    by_id = {f.client_order_id: f for f in venue.of_type(OrderFilled)}
    assert by_id[last.client_order_id].last_price == Decimal("95450.4")
    assert by_id[mark.client_order_id].last_price == Decimal("95448.1")
    assert by_id[mark.client_order_id].ts_event == BARS[3].open_time


def test_close_position_stop_closes_the_whole_position_whatever_its_quantity(bar_venue: HarnessFactory) -> None:
    # Arrange: a 0.010 long, then a closePosition sell stop whose quantity field (0.001) Binance ignores
    venue = bar_venue()
    venue.feed(BARS[0])
    venue.submit(OrderSide.BUY, "0.010")
    venue.feed(BARS[1])
    command = venue.submit(OrderSide.SELL, "0.001", STOP, stop_price=Decimal("95460.0"), close_position=True)

    # Act
    venue.feed(BARS[2])

    # Assert
    _, close = venue.of_type(OrderFilled)
    assert close.last_quantity == Decimal("0.010")
    assert venue.run(venue.exchange.positions()) == []
    report = venue.run(venue.exchange.query_order(BTC, command.client_order_id))
    assert report is not None and report.status is OrderStatus.FILLED and report.close_position


def test_reduce_only_stop_expires_when_the_position_is_gone_at_trigger(bar_venue: HarnessFactory) -> None:
    # Arrange: a long with a reduce-only stop below, then the long is sold before bar 2 reaches the stop
    venue = bar_venue()
    venue.feed(BARS[0])
    venue.submit(OrderSide.BUY, "0.010")
    venue.feed(BARS[1])
    venue.submit(OrderSide.SELL, "0.010")
    stop = venue.submit(OrderSide.SELL, "0.010", STOP, stop_price=Decimal("95460.0"), reduce_only=True)

    # Act
    venue.feed(BARS[2])

    # Assert
    (expired,) = venue.of_type(OrderExpired)
    assert expired.client_order_id == stop.client_order_id
    assert venue.run(venue.exchange.positions()) == []


@pytest.mark.parametrize(
    ("order_type", "side", "stop"),
    [(STOP, OrderSide.BUY, "95500.0"), (STOP, OrderSide.SELL, "95505.0"), (TAKE_PROFIT, OrderSide.BUY, "95510.0")],
)
def test_a_stop_already_beyond_the_last_price_is_rejected_with_2021(
    bar_venue: HarnessFactory, order_type: OrderType, side: OrderSide, stop: str
) -> None:
    # Arrange: last price 95502.7
    venue = bar_venue()
    venue.feed(BARS[0])

    # Act
    venue.submit(side, "0.010", order_type, stop_price=Decimal(stop))

    # Assert
    assert rejection(venue).code == BinanceErrorCode.ORDER_WOULD_IMMEDIATELY_TRIGGER


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"order_type": STOP}, BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED),
        (
            {"order_type": STOP, "stop_price": Decimal("95400.0"), "price": Decimal("95400.0")},
            BinanceErrorCode.PARAM_NOT_REQUIRED,
        ),
        ({"order_type": OrderType.MARKET, "stop_price": Decimal("95400.0")}, BinanceErrorCode.PARAM_NOT_REQUIRED),
        ({"order_type": OrderType.MARKET, "close_position": True}, BinanceErrorCode.PARAM_NOT_REQUIRED),
        (
            {"order_type": STOP, "stop_price": Decimal("95400.0"), "close_position": True, "reduce_only": True},
            BinanceErrorCode.PARAM_NOT_REQUIRED,
        ),
        ({"order_type": STOP, "stop_price": Decimal("95400.05")}, BinanceErrorCode.PRICE_NOT_INCREASED_BY_TICK_SIZE),
        ({"order_type": STOP, "stop_price": Decimal("95400.055")}, BinanceErrorCode.BAD_PRECISION),
    ],
)
def test_malformed_stop_orders_are_rejected_with_binances_code(
    bar_venue: HarnessFactory, fields: dict[str, object], code: BinanceErrorCode
) -> None:
    # Arrange
    venue = bar_venue()
    venue.feed(BARS[0])
    order_type = fields.pop("order_type")

    # Act
    venue.submit(OrderSide.SELL, "0.010", order_type, **fields)  # type: ignore[arg-type]

    # Assert
    assert rejection(venue).code == code
    assert rejection(venue).reason


# --- time in force and participation --------------------------------------------------------------------


def test_a_market_order_beyond_the_participation_cap_fills_in_parts_over_the_next_bars(
    bar_venue: HarnessFactory,
) -> None:
    # Arrange: 1% of bars 1, 2 and 3 (28.313, 28.674, 29.715 BTC) is 0.283, 0.286 and 0.297
    venue = bar_venue(initial_balance=Decimal("100000"), participation_rate=Decimal("0.01"))
    venue.feed(BARS[0])
    command = venue.submit(OrderSide.BUY, "0.600")

    # Act
    venue.feed(BARS[1])
    after_one = venue.run(venue.exchange.query_order(BTC, command.client_order_id))
    venue.feed(BARS[2], BARS[3])

    # Assert
    assert after_one is not None and after_one.status is OrderStatus.PARTIALLY_FILLED
    fills = venue.of_type(OrderFilled)
    assert [f.last_quantity for f in fills] == [Decimal("0.283"), Decimal("0.286"), Decimal("0.031")]
    assert [f.last_price for f in fills] == [Decimal("95512.4"), Decimal("95487.6"), Decimal("95467.3")]


def test_ioc_fills_what_the_cap_allows_at_the_next_open_and_expires_the_rest(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue(initial_balance=Decimal("100000"), participation_rate=Decimal("0.01"))
    venue.feed(BARS[0])
    command = venue.limit(OrderSide.BUY, "0.600", "95520.0", TimeInForce.IOC)

    # Act
    venue.feed(BARS[1])

    # Assert
    (fill,) = venue.of_type(OrderFilled)
    (expired,) = venue.of_type(OrderExpired)
    assert fill.last_quantity == Decimal("0.283") and fill.last_price == Decimal("95512.4")
    assert expired.client_order_id == command.client_order_id


def test_fok_beyond_the_cap_expires_without_any_fill(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue(initial_balance=Decimal("100000"), participation_rate=Decimal("0.01"))
    venue.feed(BARS[0])
    venue.limit(OrderSide.BUY, "0.600", "95520.0", TimeInForce.FOK)

    # Act
    venue.feed(BARS[1])

    # Assert
    assert venue.of_type(OrderFilled) == []
    assert len(venue.of_type(OrderExpired)) == 1


def test_fok_within_the_cap_fills_in_full(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue(participation_rate=Decimal("0.01"))
    venue.feed(BARS[0])
    venue.limit(OrderSide.BUY, "0.050", "95520.0", TimeInForce.FOK)

    # Act
    venue.feed(BARS[1])

    # Assert
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_quantity == Decimal("0.050")


# --- latency ------------------------------------------------------------------------------------------


def test_with_latency_an_order_reaches_the_venue_late_and_skips_the_bar_it_missed(bar_venue: HarnessFactory) -> None:
    # Arrange: 5 s of latency; sent at bar 0's close (bar 1 opens then), it arrives 5 s into bar 1
    venue = bar_venue(latency_ns=5_000_000_000)
    venue.feed(BARS[0])
    sent_at = venue.clock.timestamp_ns()
    command = venue.submit(OrderSide.BUY, "0.010")
    in_flight = venue.run(venue.exchange.query_order(BTC, command.client_order_id))

    # Act
    venue.feed(BARS[1])
    after_bar_1 = venue.of_type(OrderFilled)
    venue.feed(BARS[2])

    # Assert: accepted at arrival, filled at bar 2's open 95478.0 * 1.0001 = 95487.5478 -> 95487.6
    assert in_flight is None
    (accepted,) = venue.of_type(OrderAccepted)
    assert accepted.ts_event == sent_at + 5_000_000_000
    assert after_bar_1 == []
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == Decimal("95487.6") and fill.ts_event == BARS[2].open_time


def test_jitter_is_deterministic_for_a_seed() -> None:
    # Arrange
    def arrivals(seed: int) -> list[int]:
        venue = Harness(BARS[0].open_time, latency_ns=1_000_000, latency_jitter_ns=50_000_000, seed=seed)
        venue.feed(BARS[0])
        for _ in range(5):
            venue.limit(OrderSide.BUY, "0.002", "94000.0")
        venue.feed(BARS[1])
        return [a.ts_event for a in venue.of_type(OrderAccepted)]

    # Act
    first, again, other = arrivals(7), arrivals(7), arrivals(8)

    # Assert
    assert first == again
    assert first != other
    assert first == sorted(first)


# --- filters and account limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "quantity", "price", "code"),
    [
        (OrderSide.BUY, "0.010", "95000.055", BinanceErrorCode.BAD_PRECISION),
        (OrderSide.BUY, "0.0015", "95000.0", BinanceErrorCode.BAD_PRECISION),
        (OrderSide.BUY, "0.010", "95000.05", BinanceErrorCode.PRICE_NOT_INCREASED_BY_TICK_SIZE),
        (OrderSide.BUY, "0.010", "100300.0", BinanceErrorCode.PRICE_HIGHER_THAN_MULTIPLIER_UP),
        (OrderSide.SELL, "0.010", "90700.0", BinanceErrorCode.PRICE_LOWER_THAN_MULTIPLIER_DOWN),
        (OrderSide.BUY, "0.001", "95000.0", BinanceErrorCode.MIN_NOTIONAL),
    ],
)
def test_limit_orders_breaking_a_filter_are_rejected_with_its_code(
    bar_venue: HarnessFactory, side: OrderSide, quantity: str, price: str, code: BinanceErrorCode
) -> None:
    # Arrange: mark 95502.7; PERCENT_PRICE allows 0.95 to 1.05 of it (90727.565 to 100277.835)
    venue = bar_venue()
    venue.feed(BARS[0])

    # Act
    venue.limit(side, quantity, price)

    # Assert
    assert rejection(venue).code == code


def test_max_open_orders_is_enforced_with_2025(bar_venue: HarnessFactory) -> None:
    # Arrange: BTCUSDT's filter allows 10000; this venue's copy allows 2
    instruments = dict(real_instruments())
    instruments[BTC] = msgspec.structs.replace(instruments[BTC], max_open_orders=2)
    venue = bar_venue(instruments=instruments)
    venue.feed(BARS[0])
    venue.limit(OrderSide.BUY, "0.002", "94000.0")
    venue.limit(OrderSide.BUY, "0.002", "94000.0")

    # Act
    venue.limit(OrderSide.BUY, "0.002", "94000.0")

    # Assert
    assert rejection(venue).code == BinanceErrorCode.MAX_OPEN_ORDER_EXCEEDED
    assert len(venue.run(venue.exchange.open_orders())) == 2


def test_a_position_beyond_the_leverage_cap_is_rejected_with_2027(bar_venue: HarnessFactory) -> None:
    # Arrange: at 125x BTCUSDT allows 50000 of notional; 0.6 BTC is about 57300
    venue = bar_venue(initial_balance=Decimal("100000"))
    venue.feed(BARS[0])
    venue.run(venue.exchange.set_leverage(BTC, 125))

    # Act
    venue.submit(OrderSide.BUY, "0.600")

    # Assert
    assert rejection(venue).code == BinanceErrorCode.MAX_LEVERAGE_RATIO


# --- account settings -----------------------------------------------------------------------------------


def test_leverage_and_margin_type_settings_and_their_refusals(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue(initial_balance=Decimal("100000"))
    venue.feed(BARS[0])
    exchange = venue.exchange

    # Act
    configured = venue.run(exchange.set_leverage(BTC, 100))
    venue.run(exchange.set_margin_type(BTC, MarginType.ISOLATED))
    venue.submit(OrderSide.BUY, "0.300")
    venue.feed(BARS[1])

    # Assert
    assert (configured.leverage, configured.max_notional) == (100, Decimal("250000"))
    for call, code in [
        (lambda: exchange.set_leverage(BTC, 126), BinanceErrorCode.INVALID_LEVERAGE),
        (lambda: exchange.set_leverage(BTC, 50), BinanceErrorCode.ISOLATED_LEVERAGE_REJECT_WITH_POSITION),
        (lambda: exchange.set_margin_type(BTC, MarginType.ISOLATED), BinanceErrorCode.NO_NEED_TO_CHANGE_MARGIN_TYPE),
        (lambda: exchange.set_margin_type(BTC, MarginType.CROSSED), BinanceErrorCode.THERE_EXISTS_QUANTITY),
        (lambda: exchange.set_leverage("DOGEUSDT", 5), BinanceErrorCode.BAD_SYMBOL),
    ]:
        with pytest.raises(RequestRejectedError) as raised:
            venue.run(call())
        assert raised.value.code == code
    (position,) = venue.run(exchange.positions())
    assert position.margin_type is MarginType.ISOLATED and position.leverage == 100
    assert position.isolated_margin > 0


def test_settings_cannot_change_under_open_orders(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue()
    venue.feed(BARS[0])
    venue.limit(OrderSide.BUY, "0.002", "94000.0")
    exchange = venue.exchange

    # Act / Assert
    with pytest.raises(RequestRejectedError) as margin:
        venue.run(exchange.set_margin_type(BTC, MarginType.ISOLATED))
    with pytest.raises(RequestRejectedError) as mode:
        venue.run(exchange.set_position_mode(PositionMode.HEDGE))
    with pytest.raises(RequestRejectedError) as same:
        venue.run(exchange.set_position_mode(PositionMode.ONE_WAY))
    assert margin.value.code == BinanceErrorCode.THERE_EXISTS_OPEN_ORDERS
    assert mode.value.code == BinanceErrorCode.POSITION_SIDE_CHANGE_EXISTS_OPEN_ORDERS
    assert same.value.code == BinanceErrorCode.NO_NEED_TO_CHANGE_POSITION_SIDE
    assert venue.run(exchange.set_leverage(BTC, 125)).leverage == 125
    assert venue.run(exchange.symbol_configuration(BTC)).margin_type is MarginType.CROSSED


def test_hedge_mode_holds_a_long_and_a_short_and_checks_position_sides(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue(initial_balance=Decimal("100000"))
    venue.feed(BARS[0])
    venue.run(venue.exchange.set_position_mode(PositionMode.HEDGE))

    # Act
    venue.submit(OrderSide.BUY, "0.020", position_side=PositionSide.LONG)
    venue.submit(OrderSide.SELL, "0.010", position_side=PositionSide.SHORT)
    venue.submit(OrderSide.BUY, "0.010", client_order_id="both")
    venue.submit(OrderSide.SELL, "0.030", position_side=PositionSide.LONG, client_order_id="too-much")
    venue.submit(OrderSide.SELL, "0.010", position_side=PositionSide.LONG, reduce_only=True, client_order_id="ro")
    venue.feed(BARS[1])
    venue.submit(OrderSide.SELL, "0.005", position_side=PositionSide.LONG)
    venue.feed(BARS[2])

    # Assert
    codes = {r.client_order_id: r.code for r in venue.of_type(OrderRejected)}
    assert codes == {
        "both": BinanceErrorCode.POSITION_SIDE_NOT_MATCH,
        "too-much": BinanceErrorCode.REDUCE_ONLY_REJECT,
        "ro": BinanceErrorCode.PARAM_NOT_REQUIRED,
    }
    positions = {p.position_side: p.quantity for p in venue.run(venue.exchange.positions())}
    assert positions == {PositionSide.LONG: Decimal("0.015"), PositionSide.SHORT: Decimal("-0.010")}
    with pytest.raises(RequestRejectedError) as raised:
        venue.run(venue.exchange.set_position_mode(PositionMode.ONE_WAY))
    assert raised.value.code == BinanceErrorCode.POSITION_SIDE_CHANGE_EXISTS_QUANTITY


def test_exchange_info_and_leverage_brackets(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue()

    # Act
    info = venue.run(venue.exchange.exchange_info())
    brackets = venue.run(venue.exchange.leverage_brackets(BTC))
    everything = venue.run(venue.exchange.leverage_brackets())

    # Assert
    assert info[BTC] == real_instruments()[BTC]
    assert brackets[BTC][0].initial_leverage == 125 and len(brackets[BTC]) == 10
    assert set(everything) == set(real_instruments())


# --- prices never better than the bar allowed ----------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    orders=st.lists(
        st.tuples(
            st.sampled_from([OrderSide.BUY, OrderSide.SELL]),
            st.sampled_from(["market", "limit", "stop"]),
            st.integers(min_value=-60, max_value=60),
            st.integers(min_value=2, max_value=30),
        ),
        min_size=1,
        max_size=25,
    ),
    start=st.integers(min_value=0, max_value=200),
)
def test_no_fill_is_better_than_the_bar_it_happened_in_allowed(
    orders: list[tuple[OrderSide, str, int, int]], start: int
) -> None:
    # Arrange: one order per bar, priced off the last close by a random number of ticks
    venue = Harness(BARS[start].open_time, initial_balance=Decimal("1000000"), participation_rate=Decimal("0.05"))
    bars = BARS[start : start + len(orders) + 30]
    events = with_funding(bars)
    by_open = {b.open_time: b for b in bars}
    by_close = {b.ts_event: b for b in bars}
    limits: dict[str, Decimal] = {}
    stops: dict[str, Decimal] = {}

    # Act
    index = -1
    for event in events:
        venue.feed(event)
        if not isinstance(event, BarClosed):
            continue
        index += 1
        bar = event
        if index >= len(orders):
            continue
        side, kind, ticks, steps = orders[index]
        reference = money(bar.close) + Decimal(ticks) * Decimal("0.1")
        quantity = str(Decimal(steps) / 1000)
        if kind == "market":
            venue.submit(side, quantity)
        elif kind == "limit":
            limits[venue.limit(side, quantity, reference).client_order_id] = reference
        else:
            stops[venue.submit(side, quantity, STOP, stop_price=reference).client_order_id] = reference

    # Assert: a maker fills at its limit only when the bar traded through it; a taker never gets a
    # better price than the bar's open, a limit or a stop's trigger price.
    for fill in venue.of_type(OrderFilled):
        buy = fill.side is OrderSide.BUY
        if fill.liquidity_side is LiquiditySide.MAKER:
            bar = by_close[fill.ts_event]
            assert fill.last_price == limits[fill.client_order_id]
            assert money(bar.low) < fill.last_price if buy else money(bar.high) > fill.last_price
            continue
        bar_open = money(by_open[fill.ts_event].open)
        assert fill.last_price >= bar_open if buy else fill.last_price <= bar_open
        limit = limits.get(fill.client_order_id)
        if limit is not None:
            assert fill.last_price <= limit if buy else fill.last_price >= limit
        stop = stops.get(fill.client_order_id)
        if stop is not None:
            assert fill.last_price >= stop if buy else fill.last_price <= stop
