"""Fill rules: book walking and queue position on the real BTCUSDT 2024-08-08 book, bar triggers on real bars."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from venue_harness import money, real_bars, real_instruments, real_session

from keel.api.matching import (
    bar_trigger_reference,
    displayed_quantity,
    fillable,
    participation_budget,
    queue_after_trade,
    slipped_price,
    stop_triggered,
    traded_through,
    walk_book,
)
from keel.core.messages import BookUpdated
from keel.core.orders import OrderSide, OrderType

FIRST_BOOK = next(e for e in real_session() if isinstance(e, BookUpdated))
BOOKS = [e for e in real_session() if isinstance(e, BookUpdated)][:400]


def test_a_buy_walks_the_real_asks_best_first_and_stops_at_its_limit() -> None:
    # Arrange: asks 61800.3 x 1.072, 61800.7 x 0.002, 61801.0 x 0.003, ...
    asks = FIRST_BOOK.asks
    assert asks[:3] == ((61800.3, 1.072), (61800.7, 0.002), (61801.0, 0.003))

    # Act
    fills = walk_book(asks, Decimal("2"), Decimal("61800.7"), OrderSide.BUY, {})

    # Assert
    assert fills == [(Decimal("61800.3"), Decimal("1.072")), (Decimal("61800.7"), Decimal("0.002"))]


def test_liquidity_taken_since_the_last_update_is_not_taken_twice() -> None:
    # Arrange
    consumed: dict[Decimal, Decimal] = {}
    walk_book(FIRST_BOOK.bids, Decimal("2.000"), None, OrderSide.SELL, consumed)

    # Act
    second = walk_book(FIRST_BOOK.bids, Decimal("1.000"), None, OrderSide.SELL, consumed)

    # Assert: the first sell took 2.000 of the 2.909 at 61800.2
    assert second == [(Decimal("61800.2"), Decimal("0.909")), (Decimal("61800.1"), Decimal("0.091"))]
    assert fillable(FIRST_BOOK.bids, Decimal("61800.1"), OrderSide.SELL, consumed) == Decimal("0.605")


@settings(max_examples=100, deadline=None)
@given(
    book_index=st.integers(min_value=0, max_value=len(BOOKS) - 1),
    quantity=st.integers(min_value=1, max_value=40_000).map(lambda n: Decimal(n) / 1000),
    side=st.sampled_from([OrderSide.BUY, OrderSide.SELL]),
)
def test_a_walk_never_fills_better_than_the_touch_nor_more_than_displayed(
    book_index: int, quantity: Decimal, side: OrderSide
) -> None:
    # Arrange
    book = BOOKS[book_index]
    levels = book.asks if side is OrderSide.BUY else book.bids

    # Act
    fills = walk_book(levels, quantity, None, side, {})

    # Assert
    touch = money(levels[0][0])
    displayed = {money(p): money(q) for p, q in levels}
    assert sum((q for _, q in fills), Decimal(0)) == min(quantity, sum(displayed.values(), Decimal(0)))
    for price, taken in fills:
        assert (price >= touch) if side is OrderSide.BUY else (price <= touch)
        assert taken <= displayed[price]


def test_displayed_quantity_knows_empty_levels_inside_the_view_and_unknown_ones_beyond() -> None:
    # Arrange: bids 61800.2, 61800.1, 61800.0, ...; the 20th is the deepest displayed
    bids = FIRST_BOOK.bids
    deepest = money(bids[-1][0])

    # Act / Assert
    assert displayed_quantity(bids, Decimal("61800.1"), OrderSide.BUY) == Decimal("0.696")
    assert displayed_quantity(bids, Decimal("61800.25"), OrderSide.BUY) == 0
    assert displayed_quantity(bids, deepest - Decimal("50"), OrderSide.BUY) is None


def test_prints_at_the_price_consume_the_queue_first_and_prints_through_it_fill() -> None:
    # Arrange: a buy joined behind 0.696 at 61800.1
    limit, queue = Decimal("61800.1"), Decimal("0.696")

    # Act
    queue, first = queue_after_trade(OrderSide.BUY, limit, queue, Decimal("61800.1"), Decimal("0.5"))
    queue, second = queue_after_trade(OrderSide.BUY, limit, queue, Decimal("61800.1"), Decimal("0.3"))
    queue, third = queue_after_trade(OrderSide.BUY, limit, queue, Decimal("61799.5"), Decimal("0.2"))
    untouched = queue_after_trade(OrderSide.BUY, limit, Decimal("1"), Decimal("61800.2"), Decimal("5"))

    # Assert
    assert (first, second, third) == (Decimal(0), Decimal("0.104"), Decimal("0.2"))
    assert queue == 0
    assert untouched == (Decimal("1"), Decimal(0))


def test_stop_and_take_profit_trigger_directions() -> None:
    # Arrange
    stop = Decimal("95000")

    # Act / Assert
    assert stop_triggered(OrderType.STOP_MARKET, OrderSide.BUY, stop, Decimal("95000"))
    assert not stop_triggered(OrderType.STOP_MARKET, OrderSide.BUY, stop, Decimal("94999.9"))
    assert stop_triggered(OrderType.STOP_MARKET, OrderSide.SELL, stop, Decimal("94999.9"))
    assert stop_triggered(OrderType.TAKE_PROFIT_MARKET, OrderSide.BUY, stop, Decimal("94999.9"))
    assert stop_triggered(OrderType.TAKE_PROFIT_MARKET, OrderSide.SELL, stop, Decimal("95000.1"))


def test_a_last_price_stop_triggers_at_its_price_inside_a_real_bar_or_at_a_gapped_open() -> None:
    # Arrange: bar 2 opens 95478.0, high 95478.1, low 95457.6
    bar = real_bars("BTCUSDT")[2]
    bar_open, high, low = money(bar.open), money(bar.high), money(bar.low)

    # Act
    inside = bar_trigger_reference(OrderType.STOP_MARKET, OrderSide.SELL, Decimal("95460.0"), bar_open, high, low)
    gapped = bar_trigger_reference(OrderType.STOP_MARKET, OrderSide.SELL, Decimal("95490.0"), bar_open, high, low)
    missed = bar_trigger_reference(OrderType.STOP_MARKET, OrderSide.SELL, Decimal("95450.0"), bar_open, high, low)

    # Assert
    assert (inside, gapped, missed) == (Decimal("95460.0"), bar_open, None)
    assert traded_through(OrderSide.BUY, Decimal("95457.7"), high, low)
    assert not traded_through(OrderSide.BUY, low, high, low)


def test_participation_budget_is_rate_times_volume_on_the_step_grid() -> None:
    # Arrange: the first real bar traded 16.536 BTC
    bar = real_bars("BTCUSDT")[0]
    step = real_instruments()["BTCUSDT"].step_size

    # Act / Assert
    assert participation_budget(bar.volume, Decimal("0.1"), step) == Decimal("1.653")
    assert participation_budget(bar.volume, None, step) is None


def test_slipped_price_rounds_away_from_the_taker() -> None:
    # Arrange
    instrument = real_instruments()["BTCUSDT"]
    bar_open = money(real_bars("BTCUSDT")[1].open)

    # Act / Assert: 95502.8 * 1.0001 = 95512.35028 -> 95512.4; * 0.9999 = 95493.24972 -> 95493.2
    assert slipped_price(OrderSide.BUY, bar_open, Decimal("0.0001"), instrument) == Decimal("95512.4")
    assert slipped_price(OrderSide.SELL, bar_open, Decimal("0.0001"), instrument) == Decimal("95493.2")
