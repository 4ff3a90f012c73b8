"""Brinson-Fachler attribution, Carino linking and the cost breakdown, on a real backtest run."""

from __future__ import annotations

import asyncio
import csv
import functools
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.backtest import BacktestEngine
from keel.backtest.engine import BacktestResult
from keel.config import load_config
from keel.core.messages import OrderFilled, SignalAction, SignalGenerated
from keel.core.orders import LiquiditySide, OrderSide
from keel.portfolio.attribution import PerformanceAttributor, brinson_fachler, carino_coefficient


@functools.cache
def run() -> BacktestResult:
    """Three days of the 3-symbol backtest on the bundled data (optimizer, risk and attribution wired).

    Three days are too short for most views to pay the cost model's round trip: the no-trade band is off, and
    the optimizer has its larger weights and 8-hourly re-optimizations of before the cost walk-forward, so
    that the attribution has trades to explain.
    """
    config = load_config(
        "backtest",
        overrides={"portfolio": {"no_trade_band": False, "risk_aversion": 100.0, "rebalance_interval_minutes": 480}},
    )
    return BacktestEngine(config).run(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], start="2025-05-05", end="2025-05-08")


def test_single_period_effects_sum_to_the_active_return() -> None:
    # Arrange: real daily returns of 2025-05-05 (BTC, ETH, SOL), a long/short book and 20% cash
    benchmark_returns = {"BTCUSDT": -0.0125, "ETHUSDT": -0.0162, "SOLUSDT": -0.0248, "cash": 0.0}
    weights = {"BTCUSDT": 0.5, "ETHUSDT": 0.2, "SOLUSDT": 0.1, "cash": 0.2}
    returns = {"BTCUSDT": 0.004, "ETHUSDT": -0.03, "SOLUSDT": 0.01, "cash": 0.0}
    benchmark = {"BTCUSDT": 1 / 3, "ETHUSDT": 1 / 3, "SOLUSDT": 1 / 3, "cash": 0.0}

    # Act
    effects = brinson_fachler(weights, returns, benchmark, benchmark_returns)

    # Assert
    portfolio = sum(weights[k] * returns[k] for k in weights)
    market = sum(benchmark[k] * benchmark_returns[k] for k in benchmark)
    assert sum(e.total for e in effects.values()) == pytest.approx(portfolio - market)
    btc = effects["BTCUSDT"]
    assert btc.allocation == pytest.approx((0.5 - 1 / 3) * (-0.0125 - market))
    assert btc.selection == pytest.approx(1 / 3 * (0.004 + 0.0125))
    assert btc.interaction == pytest.approx((0.5 - 1 / 3) * (0.004 + 0.0125))


def test_carino_linking_sums_to_the_compounded_difference() -> None:
    # Arrange: two periods with active returns (portfolio, benchmark)
    periods = [(0.02, 0.01), (-0.015, 0.005)]
    total_p = (1.02 * 0.985) - 1
    total_b = (1.01 * 1.005) - 1

    # Act
    overall = carino_coefficient(total_p, total_b)
    linked = sum((p - b) * carino_coefficient(p, b) / overall for p, b in periods)

    # Assert
    assert linked == pytest.approx(total_p - total_b, abs=1e-15)
    assert carino_coefficient(0.01, 0.01) == pytest.approx(1 / 1.01)


def test_attribution_of_a_backtest_as_the_user_calls_it() -> None:
    # Arrange
    result = run()
    performance_attributor = result.pipeline.attribution
    assert performance_attributor is not None

    # Act
    attribution = asyncio.run(performance_attributor.calculate_attribution())

    # Assert
    effects = attribution["asset_allocation"] + attribution["security_selection"] + attribution["interaction_effect"]
    assert effects == pytest.approx(attribution["active_return"], abs=1e-12)
    assert attribution["portfolio_return"] == pytest.approx(result["total_return"], abs=1e-9)
    assert attribution["periods"] == 4
    by_symbol = sum(v["total"] for v in attribution["by_symbol"].values())
    by_strategy = sum(v["total"] for v in attribution["by_strategy"].values())
    assert by_symbol == pytest.approx(effects, abs=1e-12) and by_strategy == pytest.approx(effects, abs=1e-12)
    assert "cash" in attribution["by_strategy"]
    fees = sum(float(fill.commission) for fill in result.pipeline.recorder.fills)
    assert attribution["costs"]["fees"] == pytest.approx(fees, abs=1e-9)
    assert sum(v["fees"] for v in attribution["costs"]["by_strategy"].values()) == pytest.approx(fees, abs=1e-9)


def test_costs_come_from_the_actual_fills_and_funding() -> None:
    # Arrange
    result = run()
    attributor = result.pipeline.attribution
    assert attributor is not None

    # Act
    costs = attributor.costs()

    # Assert
    assert costs["fees"] == pytest.approx(result["fees_paid"], rel=1e-12)
    assert costs["funding"] == pytest.approx(result["funding_paid"], abs=1e-9)
    assert sum(v["fees"] for v in costs["by_symbol"].values()) == pytest.approx(costs["fees"])
    expected_slippage = 0.0
    for fill in result.pipeline.recorder.fills:
        mark = attributor._decision_marks[fill.client_order_id]
        expected_slippage += float(fill.last_quantity) * fill.side.sign * (float(fill.last_price) - mark)
    assert costs["slippage"] == pytest.approx(expected_slippage)
    assert costs["slippage"] > 0, "market orders pay the spread model's slippage on average"
    assert attributor.equity() == pytest.approx(result["final_equity"], rel=1e-9)


def test_attribution_csv_is_written_with_the_backtest(tmp_path: Path) -> None:
    # Act
    folder = run().write(tmp_path / "run")

    # Assert
    rows = list(csv.DictReader((folder / "attribution.csv").open()))
    total = rows[0]
    assert total["level"] == "total"
    parts = float(total["allocation"]) + float(total["selection"]) + float(total["interaction"])
    assert parts == pytest.approx(float(total["total_effect"]), abs=1e-9)
    assert {r["symbol"] for r in rows if r["level"] == "symbol"} == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "cash"}
    segments = [r for r in rows if r["level"] == "segment"]
    # A symbol no strategy traded keeps its benchmark weight in a "none" segment.
    traders = {fill.strategy for fill in run().pipeline.recorder.fills}
    assert segments and {r["strategy"] for r in segments} <= traders | {"none"}


def _signal(contributions: dict[str, float]) -> SignalGenerated:
    return SignalGenerated(
        strategy="strategy_manager",
        symbol="BTCUSDT",
        action=SignalAction.HOLD,
        strength=0.0,
        confidence=0.0,
        contributions=contributions,
        ts_event=0,
        ts_init=0,
    )


def _fill(number: int, quantity: Decimal, price: str = "94000.0") -> OrderFilled:
    return OrderFilled(
        client_order_id=f"keel-{number}",
        venue_order_id=str(number),
        symbol="BTCUSDT",
        trade_id=str(number),
        side=OrderSide.BUY if quantity > 0 else OrderSide.SELL,
        last_quantity=abs(quantity),
        last_price=Decimal(price),
        commission=abs(quantity) * Decimal(price) * Decimal("0.0005"),
        liquidity_side=LiquiditySide.TAKER,
        strategy="strategy_manager",
        ts_event=0,
        ts_init=0,
    )


def _holdings(attributor: PerformanceAttributor) -> dict[str, float]:
    return {strategy: book.quantity for (strategy, _), book in attributor._books.items() if book.quantity}


def test_fills_of_a_combined_view_are_booked_to_the_strategies_behind_it() -> None:
    # Arrange
    attributor = PerformanceAttributor(["BTCUSDT"], 10_000.0)
    attributor.start()

    # Act: trend (0.3) and range (0.1) point long, mean reversion short; then mean reversion alone points short
    attributor.on_signal(_signal({"trend_following": 0.3, "range_trading": 0.1, "mean_reversion": -0.2}))
    attributor.on_fill(_fill(1, Decimal("0.004")))
    opened = _holdings(attributor)
    attributor.on_signal(_signal({"trend_following": 0.0, "range_trading": 0.0, "mean_reversion": -0.4}))
    attributor.on_fill(_fill(2, Decimal("-0.006")))

    # Assert: the long is opened by the strategies pointing long; the sell closes it pro rata, then opens
    # a short for mean reversion
    assert opened == pytest.approx({"trend_following": 0.003, "range_trading": 0.001})
    assert _holdings(attributor) == pytest.approx({"mean_reversion": -0.002})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(
                st.sampled_from(["trend_following", "mean_reversion", "range_trading"]),
                st.floats(-1, 1, allow_nan=False),
                max_size=3,
            ),
            st.integers(-50, 50).filter(bool),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_splitting_fills_across_strategies_keeps_quantity_cash_and_fees(steps: list) -> None:
    # Arrange
    attributor = PerformanceAttributor(["BTCUSDT"], 10_000.0)
    attributor.start()
    net = Decimal(0)
    fees = Decimal(0)

    # Act
    for number, (contributions, lots) in enumerate(steps):
        attributor.on_signal(_signal(contributions))
        fill = _fill(number, Decimal(lots) * Decimal("0.001"))
        attributor.on_fill(fill)
        net += Decimal(lots) * Decimal("0.001")
        fees += fill.commission

    # Assert
    books = attributor._books.values()
    assert sum(b.quantity for b in books) == pytest.approx(float(net), abs=1e-12)
    assert sum(b.fees for b in books) == pytest.approx(float(fees), rel=1e-12)
    assert sum(b.cash for b in books) == pytest.approx(-float(net) * 94000.0, abs=1e-6)
    # No segment is left holding the other side of the net position beyond what contributions opened.
    assert all(b.quantity * float(net) >= -1e-12 for b in books) or net == 0
