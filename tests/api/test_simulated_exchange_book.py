"""The simulated venue against the real BTCUSDT 2024-08-08 order book and trade tape.

The session is replayed through :class:`keel.market_data.feeds.RecordedSessionFeed`
(top 20 levels a side, prints with their aggressor side). Expected fills are
computed from the recorded events themselves: the levels of the book in force
when an order reached the venue, and the prints that reached a resting order.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from venue_harness import Harness, HarnessFactory, money, real_session

from keel.core.error_codes import BinanceErrorCode
from keel.core.messages import (
    BookUpdated,
    MarketDataEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    TradeTick,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderStatus, OrderType, TimeInForce

BTC = "BTCUSDT"
EVENTS = real_session()
BOOK_INDICES = [i for i, e in enumerate(EVENTS) if isinstance(e, BookUpdated)]
# The 101st book of the session: bids 61809.4 x 4.588, asks 61809.5 x 1.883, 61810.0 x 0.002, ...
START = BOOK_INDICES[100]


def book_at(index: int) -> BookUpdated:
    """The last book published at or before event ``index``."""
    return next(EVENTS[i] for i in range(index, -1, -1) if isinstance(EVENTS[i], BookUpdated))  # type: ignore[return-value]


def replay_to(venue: Harness, index: int) -> None:
    venue.feed(*EVENTS[: index + 1])


def walk(levels: tuple[tuple[float, float], ...], quantity: Decimal, limit: Decimal | None = None) -> list[tuple]:
    """What a taker takes from recorded levels, best first (a plain reference)."""
    taken = []
    for price, size in levels:
        if quantity == 0 or (limit is not None and (money(price) > limit)):
            break
        amount = min(quantity, money(size))
        taken.append((money(price), amount))
        quantity -= amount
    return taken


def test_market_buy_walks_the_recorded_asks_in_force(book_venue: HarnessFactory) -> None:
    # Arrange
    venue = book_venue(initial_balance=Decimal("100000"))
    replay_to(venue, START)
    book = book_at(START)
    assert book.asks[0] == (61809.5, 1.883)

    # Act
    venue.submit(OrderSide.BUY, "2.000")

    # Assert: 1.883 at 61809.5, then 0.002 at 61810.0, ... up to 2.000
    fills = venue.of_type(OrderFilled)
    assert [(f.last_price, f.last_quantity) for f in fills] == walk(book.asks, Decimal("2.000"))
    assert fills[0].last_price == Decimal("61809.5") and fills[0].last_quantity == Decimal("1.883")
    assert all(f.liquidity_side is LiquiditySide.TAKER and f.ts_event == book.ts_event for f in fills)
    assert sum(f.commission for f in fills) == sum(f.last_quantity * f.last_price for f in fills) * Decimal("0.0005")


def test_marketable_limit_takes_up_to_its_price_and_rests_the_rest(book_venue: HarnessFactory) -> None:
    # Arrange
    venue = book_venue(initial_balance=Decimal("100000"))
    replay_to(venue, START)

    # Act: a buy limit at 61809.5 for 2.5: only the 1.883 displayed there can be taken
    command = venue.limit(OrderSide.BUY, "2.500", "61809.5")

    # Assert
    (fill,) = venue.of_type(OrderFilled)
    assert (fill.last_price, fill.last_quantity) == (Decimal("61809.5"), Decimal("1.883"))
    report = venue.run(venue.exchange.query_order(BTC, command.client_order_id))
    assert report is not None and report.status is OrderStatus.PARTIALLY_FILLED
    assert report.filled_quantity == Decimal("1.883")


def test_ioc_leftover_expires_and_fok_that_cannot_fill_is_rejected_with_5021(book_venue: HarnessFactory) -> None:
    # Arrange
    venue = book_venue(initial_balance=Decimal("100000"))
    replay_to(venue, START)

    # Act
    ioc = venue.limit(OrderSide.BUY, "2.500", "61809.5", TimeInForce.IOC)
    fok = venue.limit(OrderSide.BUY, "2.500", "61809.5", TimeInForce.FOK)
    fok_ok = venue.limit(OrderSide.SELL, "1.000", "61809.4", TimeInForce.FOK)

    # Assert
    fills = venue.of_type(OrderFilled)
    assert [(f.client_order_id, f.last_quantity) for f in fills] == [
        (ioc.client_order_id, Decimal("1.883")),
        (fok_ok.client_order_id, Decimal("1.000")),
    ]
    (expired,) = venue.of_type(OrderExpired)
    assert expired.client_order_id == ioc.client_order_id
    (rejected,) = venue.of_type(OrderRejected)
    assert rejected.client_order_id == fok.client_order_id
    assert rejected.code == BinanceErrorCode.FOK_ORDER_REJECT


def test_post_only_crossing_the_best_ask_is_rejected_and_at_the_best_bid_rests(book_venue: HarnessFactory) -> None:
    # Arrange
    venue = book_venue(initial_balance=Decimal("100000"))
    replay_to(venue, START)

    # Act
    taking = venue.limit(OrderSide.BUY, "0.100", "61809.5", TimeInForce.GTX)
    resting = venue.limit(OrderSide.BUY, "0.100", "61809.4", TimeInForce.GTX)

    # Assert
    (rejected,) = venue.of_type(OrderRejected)
    assert rejected.client_order_id == taking.client_order_id
    assert rejected.code == BinanceErrorCode.GTX_ORDER_REJECT
    assert [o.client_order_id for o in venue.run(venue.exchange.open_orders())] == [resting.client_order_id]


def reference_queue_fills(start: int, side: OrderSide, price: Decimal, quantity: Decimal) -> list[tuple[int, Decimal]]:
    """Fills of a resting order by the documented queue rule, replayed by hand over the recorded events.

    Join behind the displayed quantity; a book update can only shorten the
    queue to what is displayed; prints hitting our side at our price consume
    the queue first; prints through our price fill us.
    """
    own = (lambda b: b.bids) if side is OrderSide.BUY else (lambda b: b.asks)
    queue = dict((money(p), money(q)) for p, q in own(book_at(start))).get(price, Decimal(0))
    fills: list[tuple[int, Decimal]] = []
    left = quantity
    for event in EVENTS[start + 1 :]:
        if left == 0:
            break
        if isinstance(event, BookUpdated):
            levels = dict((money(p), money(q)) for p, q in own(event))
            deepest = money(own(event)[-1][0])
            inside = price >= deepest if side is OrderSide.BUY else price <= deepest
            shown = levels.get(price, Decimal(0) if inside else None)
            if shown is not None:
                queue = min(queue, shown)
        elif isinstance(event, TradeTick) and event.aggressor_side is not side:
            traded, volume = money(event.price), money(event.quantity)
            through = traded < price if side is OrderSide.BUY else traded > price
            if traded == price:
                reached = max(volume - queue, Decimal(0))
                queue = max(queue - volume, Decimal(0))
            elif through:
                reached, queue = volume, Decimal(0)
            else:
                continue
            filled = min(reached, left)
            if filled > 0:
                fills.append((event.ts_event, filled))
                left -= filled
    return fills


def test_a_resting_sell_fills_only_as_printed_volume_passes_its_place_in_the_queue(book_venue: HarnessFactory) -> None:
    # Arrange: a post-only sell of 0.5 at the best ask 61809.5 joins behind the 1.883 displayed there
    venue = book_venue(initial_balance=Decimal("100000"))
    replay_to(venue, START)
    command = venue.limit(OrderSide.SELL, "0.500", "61809.5", TimeInForce.GTX)
    expected = reference_queue_fills(START, OrderSide.SELL, Decimal("61809.5"), Decimal("0.500"))

    # Act
    venue.feed(*EVENTS[START + 1 :])

    # Assert
    fills = [f for f in venue.of_type(OrderFilled) if f.client_order_id == command.client_order_id]
    assert [(f.ts_event, f.last_quantity) for f in fills] == expected
    assert sum(q for _, q in expected) == Decimal("0.500")
    assert expected[0][0] > EVENTS[START + 1].ts_event
    assert all(f.last_price == Decimal("61809.5") and f.liquidity_side is LiquiditySide.MAKER for f in fills)
    printed_before_first_fill = sum(
        money(e.quantity)
        for e in EVENTS[START + 1 :]
        if isinstance(e, TradeTick) and e.ts_event < expected[0][0] and e.aggressor_side is OrderSide.BUY
    )
    assert printed_before_first_fill > 0


def test_a_resting_buy_below_the_market_fills_by_the_same_rule(book_venue: HarnessFactory) -> None:
    # Arrange: two ticks under the best bid 61809.4
    venue = book_venue(initial_balance=Decimal("100000"))
    replay_to(venue, START)
    command = venue.limit(OrderSide.BUY, "0.300", "61809.2")
    expected = reference_queue_fills(START, OrderSide.BUY, Decimal("61809.2"), Decimal("0.300"))

    # Act
    venue.feed(*EVENTS[START + 1 :])

    # Assert
    fills = [f for f in venue.of_type(OrderFilled) if f.client_order_id == command.client_order_id]
    assert [(f.ts_event, f.last_quantity) for f in fills] == expected
    assert expected, "the recorded market traded through 61809.2 during the session"


def test_latency_fills_against_the_book_in_force_when_the_order_arrives(book_venue: HarnessFactory) -> None:
    # Arrange: 120 ms of latency; books are published about every 50 ms
    venue = book_venue(initial_balance=Decimal("100000"), latency_ns=120_000_000)
    replay_to(venue, START)
    sent = venue.clock.timestamp_ns()
    arrival = sent + 120_000_000
    last_before_arrival = max(i for i in BOOK_INDICES if EVENTS[i].ts_event <= arrival)
    assert last_before_arrival > START

    # Act
    venue.submit(OrderSide.BUY, "2.000")
    venue.feed(*EVENTS[START + 1 : last_before_arrival + 10])

    # Assert
    (accepted,) = venue.of_type(OrderAccepted)
    assert accepted.ts_event == arrival
    fills = venue.of_type(OrderFilled)
    assert [(f.last_price, f.last_quantity) for f in fills] == walk(book_at(last_before_arrival).asks, Decimal("2.000"))
    assert all(f.ts_event == arrival for f in fills)


def test_a_fill_can_arrive_after_a_cancel_request_and_the_cancel_then_has_no_effect(
    book_venue: HarnessFactory,
) -> None:
    # Arrange: with latency, a market order and its cancel are both on their way
    venue = book_venue(initial_balance=Decimal("100000"), latency_ns=20_000_000)
    replay_to(venue, START)
    command = venue.submit(OrderSide.BUY, "0.500")

    # Act
    venue.run(venue.exchange.cancel_order(BTC, command.client_order_id))
    reports_at_request = list(venue.reports)
    venue.feed(*EVENTS[START + 1 : START + 40])

    # Assert
    assert reports_at_request == []
    assert [type(r) for r in venue.reports] == [OrderAccepted, OrderFilled]
    assert venue.of_type(OrderCanceled) == []
    report = venue.run(venue.exchange.query_order(BTC, command.client_order_id))
    assert report is not None and report.status is OrderStatus.FILLED


def test_a_cancel_that_arrives_first_cancels_a_resting_order(book_venue: HarnessFactory) -> None:
    # Arrange
    venue = book_venue(initial_balance=Decimal("100000"), latency_ns=20_000_000)
    replay_to(venue, START)
    command = venue.limit(OrderSide.BUY, "0.500", "61700.0")
    venue.feed(*EVENTS[START + 1 : START + 20])

    # Act
    venue.run(venue.exchange.cancel_order(BTC, command.client_order_id))
    sent = venue.clock.timestamp_ns()
    venue.feed(*EVENTS[START + 20 : START + 60])

    # Assert
    (canceled,) = venue.of_type(OrderCanceled)
    assert canceled.ts_event == sent + 20_000_000
    assert venue.run(venue.exchange.open_orders()) == []


def test_sell_stop_triggers_on_a_print_and_takes_the_bids(book_venue: HarnessFactory) -> None:
    # Arrange: a sell stop 10 USDT under the best bid
    venue = book_venue(initial_balance=Decimal("100000"))
    replay_to(venue, START)
    stop = Decimal("61799.4")
    venue.submit(OrderSide.SELL, "0.300", OrderType.STOP_MARKET, stop_price=stop)
    trigger = next(
        i for i in range(START + 1, len(EVENTS)) if isinstance(EVENTS[i], TradeTick) and money(EVENTS[i].price) <= stop
    )

    # Act
    venue.feed(*EVENTS[START + 1 : trigger + 1])

    # Assert
    fills = venue.of_type(OrderFilled)
    assert [(f.last_price, f.last_quantity) for f in fills] == walk_bids(book_at(trigger), Decimal("0.300"))
    assert all(f.ts_event == EVENTS[trigger].ts_event for f in fills)


def walk_bids(book: BookUpdated, quantity: Decimal) -> list[tuple[Decimal, Decimal]]:
    taken = []
    for price, size in book.bids:
        if quantity == 0:
            break
        amount = min(quantity, money(size))
        taken.append((money(price), amount))
        quantity -= amount
    return taken


def test_positions_are_marked_at_the_mid_of_the_recorded_book(book_venue: HarnessFactory) -> None:
    # Arrange
    venue = book_venue(initial_balance=Decimal("100000"))
    replay_to(venue, START)
    venue.submit(OrderSide.BUY, "0.100")

    # Act
    venue.feed(*EVENTS[START + 1 : START + 200])

    # Assert
    book = book_at(START + 199)
    (position,) = venue.run(venue.exchange.positions())
    assert position.mark_price == (money(book.bids[0][0]) + money(book.asks[0][0])) / 2


@pytest.mark.parametrize("count", [2_000])
def test_replaying_the_session_twice_gives_the_same_reports(book_venue: HarnessFactory, count: int) -> None:
    # Arrange
    def run() -> list[MarketDataEvent]:
        venue = book_venue(initial_balance=Decimal("100000"), latency_ns=3_000_000, latency_jitter_ns=9_000_000, seed=3)
        replay_to(venue, START)
        venue.limit(OrderSide.BUY, "0.400", "61809.2")
        venue.limit(OrderSide.SELL, "0.400", "61809.6")
        venue.submit(OrderSide.BUY, "0.300")
        venue.feed(*EVENTS[START + 1 : START + count])
        return [(type(r).__name__, r.ts_event, getattr(r, "last_quantity", None)) for r in venue.reports]  # type: ignore[misc]

    # Act / Assert
    assert run() == run()
