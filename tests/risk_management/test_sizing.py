"""PositionSizer: the smallest of four limits, on the exchange grid, on real prices and filters."""

from __future__ import annotations

import functools
import math
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.core.instruments import Instrument, load_instruments
from keel.core.messages import MarketRegime
from keel.market_data.loaders import load_ohlcv
from keel.risk_management.sizing import PositionSizer, floor_to_step, kelly_fraction

ROOT = Path(__file__).resolve().parents[2]
BARS_1M = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
SYMBOLS = (
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "LINKUSDT",
    "LTCUSDT",
    "BCHUSDT",
    "AVAXUSDT",
    "SUIUSDT",
)


@functools.cache
def instruments() -> dict[str, Instrument]:
    return load_instruments(ROOT / "config" / "instruments.yaml")


@functools.cache
def closes(symbol: str) -> tuple[float, ...]:
    return tuple(float(c) for c in load_ohlcv(BARS_1M / f"{symbol}_1m.csv.gz").frame["close"].head(5000))


def test_kelly_is_the_fraction_of_mean_over_variance_and_never_negative() -> None:
    # Act / Assert
    assert kelly_fraction(2e-5, 1e-6, fraction=0.25) == pytest.approx(5.0)
    assert kelly_fraction(2e-5, 1e-6, fraction=0.25, multiplier=0.5) == pytest.approx(2.5)
    assert kelly_fraction(-2e-5, 1e-6) == 0.0
    assert kelly_fraction(2e-5, 0.0) == 0.0
    assert kelly_fraction(float("nan"), 1e-6) == 0.0


def test_size_is_the_smallest_limit_rounded_down_to_the_step() -> None:
    # Arrange: BTCUSDT at its first real 1m close; per-minute volatility 0.05%, ATR 40 USDT
    sizer = PositionSizer()
    price = closes("BTCUSDT")[0]

    # Act
    decision = sizer.size(
        instruments()["BTCUSDT"],
        equity=10_000.0,
        expected_return=2e-5,
        volatility=5e-4,
        atr=40.0,
        price=price,
        bars_per_day=1440,
        regime=MarketRegime.TRENDING,
    )

    # Assert
    limits = decision.limits
    assert limits.kelly == pytest.approx(0.25 * 2e-5 / 25e-8 * 10_000)
    assert limits.var_budget == pytest.approx(0.05 * 10_000 / (2.3263478740408408 * 5e-4 * math.sqrt(1440)))
    assert limits.atr == pytest.approx(0.05 * 10_000 * price / (3 * 40 * math.sqrt(1440)))
    assert limits.liquidation == pytest.approx(min(50_000, 10_000 / (4 * 5e-4 * math.sqrt(1440))))
    assert decision.quantity == floor_to_step(limits.notional / price, instruments()["BTCUSDT"])
    assert decision.quantity * Decimal(repr(price)) <= Decimal(repr(limits.notional))
    assert decision.reason == f"limited by {limits.binding}"


REAL_INPUTS = {"equity": 10_000.0, "expected_return": 2e-5, "volatility": 5e-4, "atr": 40.0, "bars_per_day": 1440.0}


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("volatility", math.nan, "position sizing needs a finite volatility, got nan"),
        ("atr", math.nan, "position sizing needs a finite atr, got nan"),
        ("equity", math.inf, "position sizing needs a finite equity, got inf"),
        ("expected_return", math.nan, "position sizing needs a finite expected_return, got nan"),
        ("volatility", -5e-4, "volatility and ATR cannot be negative"),
        ("bars_per_day", 0.0, "bars_per_day must be positive, got 0.0"),
    ],
)
def test_an_input_that_is_not_a_usable_number_is_refused_by_name(name: str, value: float, match: str) -> None:
    # Arrange: a NaN volatility read as "no estimate yet" and switched the Kelly, VaR and liquidation limits off
    inputs = {**REAL_INPUTS, name: value}

    sizer = PositionSizer()
    daily = math.sqrt(inputs["bars_per_day"]) if inputs["bars_per_day"] > 0 else 0.0

    # Act / Assert: the pre-trade hot path refuses them as well
    with pytest.raises(ValueError, match=match):
        sizer.size(instruments()["BTCUSDT"], price=closes("BTCUSDT")[0], **inputs)
    with pytest.raises(ValueError, match=match):
        sizer.max_notional(
            inputs["equity"], inputs["expected_return"], inputs["volatility"], inputs["atr"], 95_000.0, daily, 1.0
        )


def test_no_equity_sizes_nothing_and_says_so() -> None:
    # Act
    decision = PositionSizer().size(
        instruments()["BTCUSDT"], price=closes("BTCUSDT")[0], **{**REAL_INPUTS, "equity": 0.0}
    )

    # Assert
    assert (decision.quantity, decision.reason) == (0, "no equity to size from")


def test_regime_shrinks_kelly_and_no_edge_sizes_nothing() -> None:
    # Arrange
    sizer = PositionSizer()
    common = {"equity": 10_000.0, "volatility": 5e-4, "atr": 40.0, "price": 95_000.0, "bars_per_day": 1440}

    # Act
    calm = sizer.limits(expected_return=2e-5, regime=MarketRegime.TRENDING, **common)
    wild = sizer.limits(expected_return=2e-5, regime=MarketRegime.HIGH_VOLATILITY, **common)
    none = sizer.size(instruments()["BTCUSDT"], expected_return=-1e-5, **common)

    # Assert
    assert wild.kelly == pytest.approx(calm.kelly / 2)
    assert none.quantity == 0 and "kelly" in none.reason


def test_below_min_notional_sizes_nothing() -> None:
    # Arrange: 20 USDT of equity can carry no 100 USDT BTCUSDT order
    decision = PositionSizer().size(
        instruments()["BTCUSDT"],
        equity=20.0,
        expected_return=1e-4,
        volatility=5e-4,
        atr=40.0,
        price=95_000.0,
        bars_per_day=1440,
    )

    # Assert
    assert decision.quantity == 0
    assert "below" in decision.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    symbol=st.sampled_from(SYMBOLS),
    row=st.integers(min_value=0, max_value=4999),
    equity=st.floats(min_value=10.0, max_value=1e7),
    edge=st.floats(min_value=-1e-4, max_value=1e-3),
    volatility=st.floats(min_value=1e-5, max_value=0.05),
    atr_share=st.floats(min_value=0.0, max_value=0.05),
    regime=st.sampled_from(list(MarketRegime)),
)
def test_sizing_never_violates_an_exchange_filter(
    symbol: str, row: int, equity: float, edge: float, volatility: float, atr_share: float, regime: MarketRegime
) -> None:
    # Arrange
    price = closes(symbol)[row]
    instrument = instruments()[symbol]

    # Act
    decision = PositionSizer().size(
        instrument,
        equity=equity,
        expected_return=edge,
        volatility=volatility,
        atr=atr_share * price,
        price=price,
        bars_per_day=1440,
        regime=regime,
    )

    # Assert
    if decision.quantity > 0:
        reference = Decimal(repr(price))
        violation = instrument.check_order(
            side="BUY",
            price=None,
            quantity=decision.quantity,
            reference_price=reference,
            market=True,
            reduce_only=False,
        )
        assert violation is None, violation
        assert float(decision.quantity) * price <= decision.limits.notional * (1 + 1e-12)


@given(quantity=st.floats(min_value=0.0, max_value=1e6), symbol=st.sampled_from(SYMBOLS))
def test_floor_to_step_never_rounds_up_and_stays_on_the_grid(quantity: float, symbol: str) -> None:
    # Act
    rounded = floor_to_step(quantity, instruments()[symbol])

    # Assert
    instrument = instruments()[symbol]
    assert rounded <= Decimal(repr(quantity))
    assert rounded <= instrument.market_max_quantity
    if rounded > 0:
        assert (rounded - instrument.market_min_quantity) % instrument.market_step_size == 0
    if Decimal(repr(quantity)) <= instrument.market_max_quantity and rounded > 0:
        assert Decimal(repr(quantity)) - rounded < instrument.market_step_size * 2


@given(
    equity=st.floats(min_value=0.0, max_value=1e7),
    edge=st.floats(min_value=-1e-3, max_value=1e-3),
    volatility=st.floats(min_value=0.0, max_value=0.05),
    atr=st.floats(min_value=0.0, max_value=5_000.0),
    price=st.floats(min_value=0.01, max_value=200_000.0),
    regime=st.sampled_from(list(MarketRegime)),
)
def test_the_fast_max_notional_agrees_with_the_plain_limits(
    equity: float, edge: float, volatility: float, atr: float, price: float, regime: MarketRegime
) -> None:
    # Arrange
    sizer = PositionSizer()

    # Act
    plain = sizer.limits(
        equity=equity,
        expected_return=edge,
        volatility=volatility,
        atr=atr,
        price=price,
        bars_per_day=1440,
        regime=regime,
    ).notional
    fast = sizer.max_notional(equity, edge, volatility, atr, price, math.sqrt(1440), sizer.multiplier(regime))

    # Assert
    assert fast == pytest.approx(plain, rel=1e-12, abs=1e-12)
