"""The user's use cases (reference/system-review.md, UC-1.1 ... UC-3.2), each call as the review writes it.

Every call here is typed the way a user types it in a script or a notebook;
the data is the bundled recording.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from keel.backtest import BacktestEngine
from keel.core.errors import ConfigurationError, MalformedDataError
from keel.core.messages import BarClosed, ExecutionCompleted
from keel.integration import TradingOrchestrator
from keel.market_data.loaders import load_ohlcv
from keel.portfolio import CorrelationAnalyzer, PerformanceAttributor, PortfolioOptimizer
from keel.risk_management import RiskController
from keel.strategy_engine import BaseStrategy, StrategyManager, StrategySignal

ROOT = Path(__file__).resolve().parents[2]
BARS = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def hourly_returns() -> pd.DataFrame:
    """Hourly returns of three bundled symbols (the strategy returns a portfolio manager passes)."""
    closes = {s: load_ohlcv(BARS / f"{s}_1m.csv.gz").frame.set_index("open_time_ms")["close"] for s in SYMBOLS}
    frame = pd.DataFrame(closes).iloc[::60]
    return frame.pct_change().dropna()


def real_bars(symbol: str, count: int) -> list[BarClosed]:
    frame = load_ohlcv(BARS / f"{symbol}_1m.csv.gz").frame.iloc[:count]
    return [
        BarClosed(
            symbol=symbol,
            interval="1m",
            open_time=int(row.open_time_ms) * 1_000_000,
            open=row.open,
            high=row.high,
            low=row.low,
            close=row.close,
            volume=row.volume,
            ts_event=(int(row.open_time_ms) + 60_000) * 1_000_000,
            ts_init=(int(row.open_time_ms) + 60_000) * 1_000_000,
        )
        for row in frame.itertuples(index=False)
    ]


class VolatilityBreakoutStrategy(BaseStrategy):
    """UC-2.1, verbatim (with the volatility helper the review leaves out)."""

    def __init__(self, **parameters: Any) -> None:
        super().__init__("VolatilityBreakout", parameters)
        self.lookback_period = parameters.get("lookback_period", 20)
        self.volatility_threshold = parameters.get("volatility_threshold", 2.0)

    def generate_signal(self, market_data: dict, current_index: int) -> StrategySignal:
        volatility = self._calculate_volatility(market_data, current_index)
        if volatility > self.volatility_threshold:
            return StrategySignal(
                symbol=market_data["symbol"],
                action="BUY",
                strength=min(volatility / self.volatility_threshold, 1.0),
                confidence=0.8,
            )
        return StrategySignal(market_data["symbol"], "HOLD", 0.0, 0.0)

    def _calculate_volatility(self, market_data: dict, current_index: int) -> float:
        if current_index < self.lookback_period + 1:
            return 0.0
        window = np.asarray(market_data["close"][current_index - self.lookback_period : current_index + 1])
        returns = np.diff(np.log(window))
        spread = returns[:-1].std()
        return float(abs(returns[-1]) / spread) if spread > 0 else 0.0


# --- UC-1.1: monitoring and control -----------------------------------------------------------


def test_uc_1_1_a_running_paper_system_from_python(tmp_path: Path) -> None:
    # Arrange
    orchestrator = TradingOrchestrator.from_config(
        mode="paper",
        run={"output_dir": str(tmp_path)},
        data={"symbols": ["BTCUSDT", "ETHUSDT"]},
        paper={"speed": 100_000, "status_interval_seconds": 3600},
        web={"enabled": False},
    )

    async def operate() -> tuple[dict, dict, dict]:
        async with orchestrator:
            while orchestrator.pipeline.recorder.equity == []:
                await asyncio.sleep(0.01)
            status = orchestrator.get_system_status()
            print(f"System Health: {status['health']}")
            print(f"Active Strategies: {status['active_strategies']}")
            print(f"Current ROI: {status['current_roi']}")
            stopped = await orchestrator.emergency_stop("Risk limit exceeded")
            after = orchestrator.get_system_status()
        return status, stopped, after

    # Act
    status, stopped, after = asyncio.run(operate())

    # Assert
    assert status["health"] in ("HEALTHY", "DEGRADED")
    assert status["active_strategies"] and isinstance(status["current_roi"], float)
    assert after["trading_state"] == "HALTED"
    assert stopped["trading_state"] == "HALTED"
    assert not orchestrator.running


def test_uc_1_1_a_backtest_system_from_python_and_inside_a_running_loop() -> None:
    # Arrange: a notebook's loop is already running when the user's code runs
    async def notebook_cell() -> dict:
        orchestrator = TradingOrchestrator.from_config(
            mode="backtest", data={"symbols": ["BTCUSDT"], "start": "2025-05-05", "end": "2025-05-06"}
        )
        await orchestrator.start()
        await orchestrator.wait()
        return orchestrator.get_system_status()

    # Act
    status = asyncio.run(notebook_cell())

    # Assert
    assert status["health"] == "HEALTHY" and status["mode"] == "backtest"
    assert status["running"] is False


def test_uc_4_1_health_checked_on_request_and_the_automatic_recovery(tmp_path: Path) -> None:
    # Arrange: a running paper system in which a handler raised once (the pipeline degrades its component)
    orchestrator = TradingOrchestrator.from_config(
        mode="paper",
        run={"output_dir": str(tmp_path)},
        data={"symbols": ["BTCUSDT"]},
        paper={"speed": 100_000, "status_interval_seconds": 3600},
        web={"enabled": False},
    )
    monitor = orchestrator.monitor
    assert monitor is not None

    async def administrator() -> tuple[Any, Any, str]:
        async with orchestrator:
            while orchestrator.pipeline.recorder.equity == []:
                await asyncio.sleep(0.01)
            bar = BarClosed(
                symbol="BTCUSDT",
                interval="1m",
                open_time=0,
                open=1.0,
                high=1.0,
                low=1.0,
                close=1.0,
                volume=0.0,
                ts_event=60_000_000_000,
                ts_init=60_000_000_000,
            )
            orchestrator.pipeline.handler_failed("risk.controller.monitor", bar, ZeroDivisionError("a bug"))
            health_status = await monitor.check_system_health()
            recovery = None
            if health_status["status"] == "DEGRADED":
                recovery = await monitor.trigger_auto_recovery()
            components = orchestrator.get_system_status()["components"]["risk.controller"]
        return health_status, recovery, components

    # Act
    health_status, recovery, risk_state = asyncio.run(administrator())

    # Assert
    assert "risk.controller" in health_status["degraded_components"]
    assert recovery is not None and "risk.controller" in recovery["recovered_components"]
    assert not any(reason.startswith("risk.controller degraded") for reason in recovery["remaining"])
    assert risk_state == "RUNNING"
    assert recovery["trading_state"] == health_status["trading_state"]


def test_4_4_the_execution_engine_calls_as_written_on_a_running_paper_system(tmp_path: Path) -> None:
    # Arrange: a running paper system on the bundled month, and the review's four execution calls
    orchestrator = TradingOrchestrator.from_config(
        mode="paper",
        run={"output_dir": str(tmp_path)},
        data={"symbols": ["BTCUSDT", "ETHUSDT"]},
        paper={"speed": 100_000, "status_interval_seconds": 3600},
        web={"enabled": False},
    )

    async def trader() -> list[ExecutionCompleted]:
        async with orchestrator:
            while orchestrator.pipeline.recorder.equity == []:
                await asyncio.sleep(0.01)
            router, algorithms = orchestrator.router, orchestrator.algorithms
            results = []
            order = {"symbol": "ETHUSDT", "side": "BUY", "quantity": "0.50"}
            result = await router.execute_aggressive(order)
            results.append(result)
            order = {"symbol": "ETHUSDT", "side": "SELL", "quantity": "0.20"}
            result = await router.execute_passive(order)
            results.append(result)
            order = {"symbol": "ETHUSDT", "side": "BUY", "quantity": "0.30"}
            market_analysis = {"urgency": 0.8}
            result = await algorithms.execute_dynamic_twap(order, market_analysis)
            results.append(result)
            order = {"symbol": "ETHUSDT", "side": "SELL", "quantity": "0.10"}
            market_signals = {"urgency": 0.9}
            result = await algorithms.execute_adaptive(order, market_signals)
            results.append(result)
        return results

    # Act
    results = asyncio.run(asyncio.wait_for(trader(), timeout=300))

    # Assert: each finished with its analysis, filled
    expected = [("AGGRESSIVE", "BUY", "0.50"), ("PASSIVE", "SELL", "0.20"), ("TWAP", "BUY", "0.30"),
                ("ADAPTIVE", "SELL", "0.10")]  # fmt: skip
    for result, (style, side, quantity) in zip(results, expected, strict=True):
        assert isinstance(result, ExecutionCompleted)
        assert (result.style, result.symbol, result.side.value, result.quantity) == (
            style, "ETHUSDT", side, Decimal(quantity)
        )  # fmt: skip
        assert result.filled_quantity > 0
    # ... placed by hand (checked by the risk layer, not sized by it): no approval id, the fills in the risk
    # layer's position book under the strategy "manual"
    assert all(result.approval_id is None and result.strategy == "manual" for result in results)
    net = sum((r.filled_quantity * r.side.sign for r in results), Decimal(0))
    assert orchestrator.pipeline.positions.strategy_positions[("manual", "ETHUSDT")].quantity == net
    manual = [row for row in orchestrator.orders() if row["strategy"] == "manual"]
    assert len(manual) == sum(result.child_orders for result in results)


def test_uc_1_1_live_from_python_needs_the_confirmation() -> None:
    # Act / Assert: the same rule as keel run --mode live (tests/integration/test_live.py runs it on a local Binance)
    with pytest.raises(ConfigurationError, match="i-understand-this-trades-real-money"):
        TradingOrchestrator.from_config(mode="live")


def test_uc_1_1_strategy_manager_signals() -> None:
    # Arrange
    closes = load_ohlcv(BARS / "BTCUSDT_1m.csv.gz").frame.iloc[:3000]
    market_data = {"symbol": "BTCUSDT", **{c: closes[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}}

    # Act
    strategy_manager = StrategyManager()
    signals = strategy_manager.generate_trading_signals(market_data)
    performance = strategy_manager.get_system_status()

    # Assert
    assert [s.symbol for s in signals] == ["BTCUSDT"]
    assert performance["active_strategies"] >= 3


# --- UC-1.2 and UC-3.2: risk --------------------------------------------------------------------


def test_uc_1_2_and_3_2_a_risk_controller_built_from_keywords_alone() -> None:
    # Arrange
    risk_controller = RiskController(
        initial_capital_usdt=100000.0,
        var_daily_pct=0.02,  # 2% 일일 VaR
        max_drawdown_pct=0.12,  # 12% 최대 낙폭
        max_leverage=10.0,  # 10배 최대 레버리지
    )
    # Its VaR needs return history: recorded bars before now, whose symbols become its universe.
    history = sorted((bar for symbol in SYMBOLS for bar in real_bars(symbol, 1500)), key=lambda bar: bar.ts_event)
    risk_controller.warm_up(history)
    portfolio_state = {"equity": 100000.0, "exposures": {"BTCUSDT": 700000.0, "ETHUSDT": 200000.0, "SOLUSDT": 150000.0}}

    # Act
    violations = risk_controller.check_var_limit(portfolio_state)
    leverage_violations = risk_controller.check_leverage_limit(portfolio_state)
    drawdown = risk_controller.update_drawdown(94000.0)
    risk_controller.update_limits({"max_drawdown_pct": 0.10, "var_daily_pct": 0.015, "max_leverage": 8.0})

    # Assert
    assert [v.limit for v in violations] == ["var_daily_pct"]
    assert [v.limit for v in leverage_violations] == ["max_leverage", "max_net_leverage"]
    assert drawdown == pytest.approx(0.06)
    assert risk_controller.limits.max_leverage == 8.0 and risk_controller.limits.var_daily_pct == 0.015


def test_uc_3_2_correlation_and_risk_decomposition_then_reduce_exposure() -> None:
    # Arrange: no allocation on a bus here, so the decomposition is of the weights an optimization gave
    correlation_analyzer = CorrelationAnalyzer(list(SYMBOLS)).fit(hourly_returns())
    portfolio_optimizer = PortfolioOptimizer()
    allocation = asyncio.run(portfolio_optimizer.optimize_weights(returns_data=hourly_returns())).weights

    # Act
    correlation_matrix = correlation_analyzer.calculate_correlation_matrix()
    risk_decomposition = correlation_analyzer.decompose_portfolio_risk(allocation)
    reduced = asyncio.run(portfolio_optimizer.reduce_risk_exposure())

    # Assert
    assert list(correlation_matrix.columns) == list(SYMBOLS)
    assert np.allclose(np.diag(correlation_matrix.to_numpy()), 1.0)
    assert risk_decomposition.volatility > 0
    assert sum(risk_decomposition.component.values()) == pytest.approx(risk_decomposition.volatility)
    assert reduced == {}


# --- UC-2.1 and UC-2.2: a strategy of the user's, backtested ---------------------------------------


def test_uc_2_1_and_2_2_the_users_strategy_trades_sanely_on_the_bundled_week() -> None:
    # Arrange
    backtest_engine = BacktestEngine()
    strategy = VolatilityBreakoutStrategy(lookback_period=20)

    # Act
    results = asyncio.run(
        backtest_engine.run_backtest(
            strategy=strategy, start_date="2025-05-05", end_date="2025-05-12", initial_capital=10000.0
        )
    )
    print(f"Total Return: {results['total_return']:.2%}")
    print(f"Sharpe Ratio: {results['sharpe_ratio']:.2f}")
    print(f"Max Drawdown: {results['max_drawdown']:.2%}")

    # Assert: its HOLD on quiet bars is "no new view", so it does not buy every spike and sell it a bar later
    assert results["handler_errors"] == 0
    assert 0 < results["n_trades"] < 200
    assert results["fees_paid"] < 0.01 * 10000.0


def test_uc_2_2_as_written_on_dates_keel_does_not_have_names_the_missing_data() -> None:
    # Arrange
    backtest_engine = BacktestEngine()
    strategy = VolatilityBreakoutStrategy(lookback_period=20)

    # Act / Assert
    with pytest.raises(MalformedDataError, match="keel data download"):
        asyncio.run(
            backtest_engine.run_backtest(
                strategy=strategy, start_date="2023-01-01", end_date="2024-01-01", initial_capital=10000.0
            )
        )


# --- UC-3.1: allocation and attribution ------------------------------------------------------------


def test_uc_3_1_markowitz_weights_and_attribution() -> None:
    # Arrange
    portfolio_optimizer = PortfolioOptimizer()
    performance_attributor = PerformanceAttributor()
    strategy_returns = hourly_returns()

    # Act
    optimization_result = asyncio.run(
        portfolio_optimizer.optimize_weights(
            returns_data=strategy_returns,
            constraints={"min_weight": 0.05, "max_weight": 0.6},
            objective="max_sharpe",
        )
    )
    attribution = asyncio.run(performance_attributor.calculate_attribution())
    print(f"Asset Allocation: {attribution['asset_allocation']}")
    print(f"Security Selection: {attribution['security_selection']}")
    print(f"Interaction Effect: {attribution['interaction_effect']}")

    # Assert
    weights = optimization_result.weights
    assert set(weights) == set(SYMBOLS)
    assert all(0.05 - 1e-6 <= w <= 0.6 + 1e-6 for w in weights.values())
    assert attribution["asset_allocation"] == 0.0 and attribution["periods"] == 0
