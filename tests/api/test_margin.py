"""Binance's liquidation-price formula, computed by hand on BTCUSDT's real brackets, and break-even price."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from venue_harness import real_schedule

from keel.api.brackets import bracket_for, maintenance_margin
from keel.api.margin import Leg, break_even_price, liquidation_price

BTC_BRACKETS = real_schedule().brackets("BTCUSDT")


def test_isolated_long_liquidation_price_by_hand() -> None:
    # Arrange: 0.1 BTC bought at 95512.4 with 100x isolated margin: wallet = 9551.24 / 100 - the taker
    # fee 4.77562 = 90.73678. Bracket 1 (MMR 0.4%, cum 0).
    leg = Leg(direction=1, size=Decimal("0.1"), entry_price=Decimal("95512.4"), brackets=BTC_BRACKETS)

    # Act
    price = liquidation_price([leg], Decimal("90.73678"))

    # Assert: LP = (WB + cum - size * EP) / (size * MMR - size) = (90.73678 - 9551.24) / (0.0004 - 0.1)
    assert price == Decimal("-9460.50322") / Decimal("-0.0996")
    assert str(price)[:12] == "94984.972088"  # 95000 - (9462 - 9460.50322) / 0.0996


def test_cross_short_liquidation_price_moves_to_the_bracket_at_the_liquidation_price() -> None:
    # Arrange: a 0.5 BTC short at 95000, wallet 10000, other cross positions: maintenance 150, P&L -200.
    leg = Leg(direction=-1, size=Decimal("0.5"), entry_price=Decimal("95000"), brackets=BTC_BRACKETS)

    # Act
    price = liquidation_price([leg], Decimal("10000"), Decimal("150"), Decimal("-200"))

    # Assert: bracket 1 would give 57150 / 0.502 = 113844.6, a notional of 56922 > 50000, so
    # bracket 2 (MMR 0.5%, cum 50) applies: (10000 - 150 - 200 + 50 + 47500) / (0.0025 + 0.5).
    assert price == Decimal("57200") / Decimal("0.5025")
    assert bracket_for(BTC_BRACKETS, leg.size * price).bracket == 2


def test_hedge_mode_long_and_short_share_one_cross_liquidation_price() -> None:
    # Arrange: LONG 1.0 at 95000 and SHORT 0.4 at 96000 in cross, wallet 20000.
    legs = [
        Leg(direction=1, size=Decimal("1.0"), entry_price=Decimal("95000"), brackets=BTC_BRACKETS),
        Leg(direction=-1, size=Decimal("0.4"), entry_price=Decimal("96000"), brackets=BTC_BRACKETS),
    ]

    # Act
    price = liquidation_price(legs, Decimal("20000"))

    # Assert: numerator 20000 + cumL 50 + cumS 0 - 95000 + 38400 = -36550 (the long is in bracket 2 at
    # the answer, the short in bracket 1); denominator 1.0 * 0.005 + 0.4 * 0.004 - 1.0 + 0.4 = -0.5934.
    assert price == Decimal("-36550") / Decimal("-0.5934")
    assert price is not None
    margin = Decimal("20000") + (price - Decimal("95000")) - Decimal("0.4") * (price - Decimal("96000"))
    maintenance = maintenance_margin(BTC_BRACKETS, price) + maintenance_margin(BTC_BRACKETS, Decimal("0.4") * price)
    assert abs(margin - maintenance) < Decimal("1e-20")


def test_a_long_backed_by_more_than_its_notional_has_no_liquidation_price() -> None:
    # Arrange
    leg = Leg(direction=1, size=Decimal("0.1"), entry_price=Decimal("95000"), brackets=BTC_BRACKETS)

    # Act / Assert
    assert liquidation_price([leg], Decimal("10000")) is None
    assert liquidation_price([], Decimal("10000")) is None


@settings(max_examples=200, deadline=None)
@given(
    direction=st.sampled_from([1, -1]),
    size=st.integers(min_value=1, max_value=50_000).map(lambda n: Decimal(n) / 1000),
    entry=st.integers(min_value=20_000_0, max_value=150_000_0).map(lambda n: Decimal(n) / 10),
    leverage=st.integers(min_value=2, max_value=100),
)
def test_at_the_liquidation_price_margin_balance_equals_maintenance_margin(
    direction: int, size: Decimal, entry: Decimal, leverage: int
) -> None:
    # Arrange: an isolated position with its initial margin as wallet, at a leverage its bracket allows
    assume(leverage <= bracket_for(BTC_BRACKETS, size * entry).initial_leverage)
    wallet = size * entry / leverage
    leg = Leg(direction=direction, size=size, entry_price=entry, brackets=BTC_BRACKETS)

    # Act
    price = liquidation_price([leg], wallet)

    # Assert
    if price is None:
        return
    margin = wallet + direction * size * (price - entry)
    assert abs(margin - maintenance_margin(BTC_BRACKETS, size * price)) < Decimal("1e-18")
    if direction == 1:
        assert price < entry
    else:
        assert price > entry


def test_break_even_price_is_cost_over_signed_size() -> None:
    # Arrange: bought 2 at 100 and sold 1 at 110 (cost 200 - 110) with 0.3 of fees; then a short
    # sold 2 at 100 and bought 1 at 90 with 0.2 of fees.
    long_cost = Decimal("200") - Decimal("110") + Decimal("0.3")
    short_cost = Decimal("-200") + Decimal("90") + Decimal("0.2")

    # Act / Assert
    assert break_even_price(Decimal("1"), long_cost) == Decimal("90.3")
    assert break_even_price(Decimal("-1"), short_cost) == Decimal("109.8")
    assert break_even_price(Decimal("0"), Decimal("5")) is None
