"""Brinson-Fachler attribution, Carino linking and the cost breakdown, on a real backtest run."""

from __future__ import annotations

import asyncio
import csv
import functools
from pathlib import Path

import pytest

from keel.backtest import BacktestEngine
from keel.backtest.engine import BacktestResult
from keel.config import load_config
from keel.portfolio.attribution import brinson_fachler, carino_coefficient


@functools.cache
def run() -> BacktestResult:
    """Three days of the 3-symbol backtest on the bundled data (optimizer, risk and attribution wired)."""
    return BacktestEngine(load_config("backtest")).run(
        symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], start="2025-05-05", end="2025-05-08"
    )


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
    traders = {fill.strategy for fill in result.pipeline.recorder.fills}
    assert traders and set(attribution["by_strategy"]) >= traders | {"cash"}


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
