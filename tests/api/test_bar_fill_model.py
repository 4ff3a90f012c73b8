"""The bar fill model of resting limit orders on real BTCUSDT 1m bars: through, touch (queue haircut), untouched.

The bars used (2025-05-04 15:33 UTC onwards):

    bar  open     high     low      close
    0    95505.4  95505.5  95502.7  95502.7
    1    95502.8  95502.8  95478.0  95478.1
    2    95478.0  95478.1  95457.6  95457.6
    3    95457.7  95467.7  95457.6  95467.7
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from venue_harness import HarnessFactory, real_bars, strip_ids

from keel.api.matching import touch_draw, touched
from keel.core.messages import OrderFilled
from keel.core.orders import LiquiditySide, OrderSide

BARS = real_bars("BTCUSDT")


def test_a_bar_trading_through_a_resting_buy_fills_it_at_its_price_as_a_maker(bar_venue: HarnessFactory) -> None:
    # Arrange: after bar 0 a buy at 95490.0; bar 1 opens above it and trades down to 95478.0
    venue = bar_venue()
    venue.feed(BARS[0])
    venue.limit(OrderSide.BUY, "0.010", "95490.0")

    # Act
    venue.feed(BARS[1])

    # Assert
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == Decimal("95490.0")
    assert fill.last_quantity == Decimal("0.010")
    assert fill.liquidity_side is LiquiditySide.MAKER
    assert fill.ts_event == BARS[1].ts_event


def test_a_bar_that_never_reaches_the_price_fills_nothing(bar_venue: HarnessFactory) -> None:
    # Arrange: after bar 2 a buy at 95457.5, one tick under bar 3's low
    venue = bar_venue(touch_fill_probability=1.0)
    venue.feed(*BARS[:3])
    venue.limit(OrderSide.BUY, "0.010", "95457.5")

    # Act
    venue.feed(BARS[3])

    # Assert
    assert venue.of_type(OrderFilled) == []


def test_a_bar_only_touching_the_price_fills_with_the_touch_probability(bar_venue: HarnessFactory) -> None:
    # Arrange: after bar 2 a buy at 95457.6, exactly bar 3's low
    never, always = bar_venue(touch_fill_probability=0.0), bar_venue(touch_fill_probability=1.0)
    for venue in (never, always):
        venue.feed(*BARS[:3])
        venue.limit(OrderSide.BUY, "0.010", "95457.6")

    # Act
    never.feed(BARS[3])
    always.feed(BARS[3])

    # Assert
    assert never.of_type(OrderFilled) == []
    (fill,) = always.of_type(OrderFilled)
    assert fill.last_price == Decimal("95457.6")
    assert fill.liquidity_side is LiquiditySide.MAKER


def test_the_touch_haircut_is_a_draw_fixed_by_seed_order_and_bar(bar_venue: HarnessFactory) -> None:
    # Arrange: the same touch on two venues of one seed, and the draw it depends on
    runs = []
    for _ in range(2):
        venue = bar_venue(touch_fill_probability=0.5, seed=11)
        venue.feed(*BARS[:3])
        command = venue.limit(OrderSide.BUY, "0.010", "95457.6")
        venue.feed(BARS[3])
        runs.append(strip_ids(venue.reports))
    draw = touch_draw(11, command.client_order_id, BARS[3].open_time)

    # Assert: identical reports, filled exactly when the draw is under the probability
    assert runs[0] == runs[1]
    filled = any(r["type"] == "OrderFilled" for r in runs[0])
    assert filled is (draw < 0.5)
    assert 0.0 <= draw < 1.0
    assert touch_draw(11, command.client_order_id, BARS[3].open_time) == draw
    assert touch_draw(12, command.client_order_id, BARS[3].open_time) != draw


def test_a_resting_order_placed_after_a_bar_never_fills_from_that_bar(bar_venue: HarnessFactory) -> None:
    # Arrange: bar 1 traded up to 95502.8; after it closes, a sell rests at 95490.0
    venue = bar_venue(touch_fill_probability=1.0)
    venue.feed(*BARS[:2])
    venue.limit(OrderSide.SELL, "0.010", "95490.0")

    # Act: bar 2 never comes back above 95478.1
    venue.feed(BARS[2])

    # Assert: bar 1 (seen before the order) cannot fill it, bar 2 does not reach it
    assert venue.of_type(OrderFilled) == []


@settings(max_examples=50, deadline=None)
@given(limit=st.decimals(90_000, 100_000, places=1), high=st.decimals(90_000, 100_000, places=1))
def test_touched_means_the_bars_extreme_equals_the_limit(limit: Decimal, high: Decimal) -> None:
    low = min(limit, high)
    assert touched(OrderSide.SELL, limit, high, low) is (high == limit)
    assert touched(OrderSide.BUY, limit, high, low) is (low == limit)
