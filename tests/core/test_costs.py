"""The shared cost model: fees, half-spread, impact, funding carry, the no-trade rule and the smallest order."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.costs import CostModel, CostSettings
from keel.core.instruments import bundled_instruments
from keel.core.messages import FundingRateUpdated, OrderFilled
from keel.core.orders import LiquiditySide, OrderSide

BTC = "BTCUSDT"


def model(**settings: float) -> CostModel:
    return CostModel(bundled_instruments(), CostSettings(**settings))  # type: ignore[arg-type]


def fill(liquidity: LiquiditySide) -> OrderFilled:
    return OrderFilled(
        client_order_id="c-1",
        venue_order_id="1",
        symbol=BTC,
        trade_id="1",
        side=OrderSide.BUY,
        last_quantity=Decimal("0.001"),
        last_price=Decimal("100000"),
        commission=Decimal("0.02"),
        liquidity_side=liquidity,
        strategy="s",
        ts_event=0,
        ts_init=0,
    )


def test_fees_come_from_the_instrument_unless_overridden():
    # Arrange
    instrument = bundled_instruments()[BTC]
    plain, overridden = model(), model(maker_fee=0.0, taker_fee=0.0004)

    # Act / Assert
    assert plain.fee_rate(BTC, LiquiditySide.MAKER) == float(instrument.maker_fee)
    assert plain.fee_rate(BTC, LiquiditySide.TAKER) == float(instrument.taker_fee)
    assert overridden.fee_rate(BTC, LiquiditySide.MAKER) == 0.0
    assert overridden.fee_rate(BTC, LiquiditySide.TAKER) == 0.0004


def test_half_spread_is_the_books_when_seen_else_the_bar_slippage_or_half_a_tick():
    # Arrange
    costs = model(slippage_bps=1.0)
    costs.observe_bar(BTC, 100_000.0, 10.0)

    # Act
    on_bars = costs.half_spread(BTC)
    costs.observe_book(BTC, 99_999.0, 100_001.0)
    on_book = costs.half_spread(BTC)

    # Assert: the BTC tick (0.1) is 0.05 bp of 100,000, below the 1 bp slippage
    assert on_bars == pytest.approx(1e-4)
    assert on_book == pytest.approx(1.0 / 100_000.0)
    assert model(slippage_bps=0.0).half_spread(BTC) == 0.0  # nothing seen: no tick size in price terms


def test_impact_follows_the_square_root_law_of_recent_bars():
    # Arrange: a steady 10 bp move per bar, 1,000,000 USDT traded per bar
    costs = model(halflife_bars=5.0, impact_coefficient=1.0)
    price = 100.0
    for _ in range(50):
        costs.observe_bar(BTC, price, 10_000.0)
        price *= 1.001

    # Act
    small, large = costs.impact(BTC, 10_000.0), costs.impact(BTC, 40_000.0)

    # Assert: sigma ~ log(1.001); sqrt(10,000 / ~1,000,000) ~ 0.1; four times the size doubles it
    assert small == pytest.approx(math.log(1.001) * 0.1, rel=0.05)
    assert large == pytest.approx(2 * small)
    assert costs.impact(BTC, 0.0) == 0.0


def test_funding_carry_is_paid_by_a_long_when_the_rate_is_positive():
    # Arrange
    costs = model()
    costs.on_funding(
        FundingRateUpdated(symbol=BTC, funding_time=0, rate=Decimal("0.0001"), mark_price=None, ts_event=0, ts_init=0)
    )

    # Act / Assert
    assert costs.funding_carry(BTC, 1, 3) == pytest.approx(0.0003)
    assert costs.funding_carry(BTC, -1, 3) == pytest.approx(-0.0003)


def test_a_maker_pays_only_its_fee_a_taker_pays_fee_spread_and_impact():
    # Arrange
    costs = model(maker_fee=0.0002, taker_fee=0.0005, slippage_bps=1.0)
    costs.observe_bar(BTC, 100_000.0, 10.0)

    # Act / Assert
    assert costs.cost_rate(BTC, 1000.0, LiquiditySide.MAKER) == 0.0002
    assert costs.cost_rate(BTC, 1000.0, LiquiditySide.TAKER) == pytest.approx(0.0006)
    assert costs.round_trip(BTC, 1000.0, LiquiditySide.TAKER) == pytest.approx(0.0012)


def test_the_expected_maker_share_starts_at_the_setting_and_follows_the_fills():
    # Arrange
    costs = model(maker_fee=0.0002, taker_fee=0.0005, slippage_bps=1.0, maker_share=1.0, halflife_fills=1.0)
    costs.observe_bar(BTC, 100_000.0, 10.0)
    before = costs.cost_rate(BTC)

    # Act: one taker fill halves the maker share (half-life of one fill)
    costs.on_fill(fill(LiquiditySide.TAKER))

    # Assert
    assert before == pytest.approx(0.0002)
    assert costs.maker_share == pytest.approx(0.5)
    assert costs.cost_rate(BTC) == pytest.approx(0.5 * 0.0002 + 0.5 * 0.0006)


def test_a_trade_is_worth_it_only_when_the_edge_over_the_horizon_covers_the_round_trip():
    # Arrange: round trip of a taker 12 bp
    costs = model(maker_fee=0.0002, taker_fee=0.0005, slippage_bps=1.0)
    costs.observe_bar(BTC, 100_000.0, 10.0)

    # Act / Assert
    assert costs.worth_trading(BTC, 1000.0, edge_per_bar=1e-5, horizon_bars=120)
    assert not costs.worth_trading(BTC, 1000.0, edge_per_bar=1e-5, horizon_bars=119)
    assert not costs.worth_trading(BTC, 1000.0, edge_per_bar=-1e-3, horizon_bars=120)
    assert not costs.worth_trading(BTC, 1000.0, edge_per_bar=math.nan, horizon_bars=120)


def test_a_close_is_worth_it_when_the_loss_avoided_over_the_horizon_covers_one_way():
    # Arrange: 6 bp one way (5 bp taker fee, 1 bp half-spread), no impact; opening takes twice the edge
    costs = model(maker_fee=0.0002, taker_fee=0.0005, impact_coefficient=0.0)
    costs.observe_bar(BTC, 100_000.0, 10.0)

    # Act / Assert: a view turned against the position by 5e-6 per bar pays a close over 121 bars
    assert costs.worth_closing(BTC, 1000.0, edge_per_bar=-5e-6, horizon_bars=121)
    assert not costs.worth_closing(BTC, 1000.0, edge_per_bar=-5e-6, horizon_bars=119)
    assert not costs.worth_closing(BTC, 1000.0, edge_per_bar=0.0, horizon_bars=120)
    assert not costs.worth_trading(BTC, 1000.0, edge_per_bar=5e-6, horizon_bars=120)
    assert costs.worth_closing(BTC, 1000.0, edge_per_bar=math.nan, horizon_bars=120)


def test_posting_pays_while_the_fee_and_spread_saved_exceed_the_risk_of_waiting():
    # Arrange: 4 bp saved (6 bp taker, 2 bp maker); a quiet and a wild market
    quiet, wild = model(maker_fee=0.0002, taker_fee=0.0005), model(maker_fee=0.0002, taker_fee=0.0005)
    for k in range(100):
        quiet.observe_bar(BTC, 100_000.0 * (1.00001 if k % 2 else 1.0), 1e6)
        wild.observe_bar(BTC, 100_000.0 * (1.002 if k % 2 else 1.0), 1e6)

    # Act / Assert
    assert quiet.maker_pays(BTC, 1000.0, wait_bars=1)
    assert not wild.maker_pays(BTC, 1000.0, wait_bars=1)


def test_the_smallest_order_is_the_venue_minimum_or_a_share_of_equity():
    # Arrange
    costs = model()
    minimum = float(bundled_instruments()[BTC].min_notional)

    # Act / Assert
    assert costs.min_order_notional(BTC, 10_000.0, 0.0) == minimum
    assert costs.min_order_notional(BTC, 10_000.0, 0.05) == 500.0
    assert costs.min_order_notional(BTC, -1.0, 0.05) == minimum


def test_bad_settings_and_unknown_symbols_are_refused_with_the_name():
    with pytest.raises(ValueError, match="maker_share"):
        CostSettings(maker_share=1.5)
    with pytest.raises(ValueError, match="taker_fee"):
        CostSettings(taker_fee=math.inf)
    with pytest.raises(ValueError, match="DOGEUSDT"):
        model().fee_rate("DOGEUSDT", LiquiditySide.TAKER)


@settings(deadline=None)
@given(
    closes=st.lists(st.floats(1.0, 1e6), min_size=1, max_size=40),
    volumes=st.floats(0.0, 1e6),
    notional=st.floats(0.0, 1e7),
    share=st.floats(0.0, 1.0),
)
def test_costs_are_finite_a_taker_never_pays_less_than_a_maker_and_impact_grows_with_size(
    closes: list[float], volumes: float, notional: float, share: float
):
    # Arrange
    costs = model(maker_share=share)
    for close in closes:
        costs.observe_bar(BTC, close, volumes)

    # Act
    maker = costs.cost_rate(BTC, notional, LiquiditySide.MAKER)
    taker = costs.cost_rate(BTC, notional, LiquiditySide.TAKER)
    blended = costs.cost_rate(BTC, notional)

    # Assert
    assert all(math.isfinite(v) and v >= 0 for v in (maker, taker, blended))
    assert maker <= blended <= taker + 1e-15
    assert costs.impact(BTC, notional) <= costs.impact(BTC, notional * 2 + 1.0)
    assert costs.round_trip(BTC, notional) == pytest.approx(2 * blended)
