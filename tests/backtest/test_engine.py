"""The backtest engine on the bundled real data: outputs, determinism, the user's API."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from keel.backtest import BacktestEngine
from keel.backtest.engine import funding_coverage_end
from keel.config import load_config
from keel.core.errors import MalformedDataError
from keel.execution.tca import TCA_COLUMNS
from keel.market_data.feeds import use_prepared_data
from keel.strategy_engine import BaseStrategy, MovingAverageCrossStrategy, StrategySignal

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
# These tests check what a run writes, so they need fills in a few days of three symbols: the cost rule off,
# and the optimizer's larger weights and 8-hourly re-optimizations of before benchmarks/cost_walk_forward.py.
TRADING = {"portfolio": {"no_trade_band": False, "risk_aversion": 100.0, "rebalance_interval_minutes": 480}}


def run_small(tmp_path: Path, name: str) -> Path:
    engine = BacktestEngine(load_config("backtest", overrides=TRADING))
    result = engine.run(symbols=SYMBOLS, start="2025-05-05", end="2025-05-08")
    return result.write(tmp_path / name)


def test_backtests_in_one_process_parse_each_data_file_once() -> None:
    # Arrange
    engine = BacktestEngine(load_config("backtest", overrides=TRADING))
    engine.run(symbols=["BTCUSDT"], start="2025-05-05", end="2025-05-06")
    held = BacktestEngine.prepared_files
    parsed, reused = held.files_parsed, held.files_reused

    # Act
    result = engine.run(symbols=["BTCUSDT"], start="2025-05-06", end="2025-05-07")

    # Assert
    assert result["bars_processed"] > 0
    assert held.files_parsed == parsed
    assert held.files_reused >= reused + 2  # the bars and the funding


def test_two_runs_write_byte_identical_trades_and_orders(tmp_path: Path) -> None:
    # Arrange / Act
    first = run_small(tmp_path, "first")
    second = run_small(tmp_path, "second")

    # Assert
    for name in ("trades.csv", "orders.csv", "equity.csv", "tca.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # The default strategy manager trades hour- to day-scale views: a few trades in three days.
    assert len((first / "trades.csv").read_text().splitlines()) > 1


def test_metrics_json_has_the_documented_keys(tmp_path: Path) -> None:
    # Arrange / Act
    folder = run_small(tmp_path, "run")

    # Assert
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in (
        "total_return",
        "sharpe_ratio",
        "sortino_ratio",
        "max_drawdown",
        "win_rate",
        "n_trades",
        "fees_paid",
        "funding_paid",
        "bars_processed",
        "events_processed",
        "wall_seconds",
        "fees_by_symbol",
        "funding_paid_by_symbol",
        "liquidations",
        "liquidations_by_symbol",
        "liquidation_fees",
        "signals_published",
        "views_not_worth_costs",
    ):
        assert key in metrics, key
    assert metrics["liquidations"] == 0 and metrics["liquidations_by_symbol"] == {}
    assert set(metrics["fees_by_symbol"]) <= set(SYMBOLS) and metrics["fees_by_symbol"]
    assert metrics["bars_processed"] == 3 * 3 * 24 * 60
    assert metrics["handler_errors"] == 0
    assert metrics["n_trades"] > 0 and metrics["fees_paid"] > 0
    assert 0.0 <= metrics["max_drawdown"] < 1.0


class AlwaysLong(BaseStrategy):
    """A user's strategy: a half-confident BUY on every bar."""

    def __init__(self) -> None:
        super().__init__("always_long")

    def generate_signal(self, market_data: Mapping[str, Any], current_index: int) -> StrategySignal | None:
        return StrategySignal(market_data["symbol"], "BUY", strength=1.0, confidence=0.5)


@pytest.mark.parametrize(
    "portfolio",
    [
        {"allocator": "markowitz"},
        {"allocator": "markowitz", "no_trade_band": False},  # the optimizer's solve alone
        {"allocator": "equal_weight"},
    ],
)
def test_a_view_too_weak_for_its_costs_is_counted_so_no_orders_are_explained(portfolio: dict[str, Any]) -> None:
    # Arrange: on one-minute BTC bars a half-confident view's edge does not pay a taker round trip
    engine = BacktestEngine(load_config("backtest", overrides={"portfolio": portfolio}))

    # Act
    result = engine.run(AlwaysLong(), symbols=["BTCUSDT"], start="2025-05-05", end="2025-05-08")

    # Assert
    assert result["n_orders"] == 0 and result["n_orders_denied"] == 0
    assert result["signals_published"] == 1 and result["views_not_worth_costs"] >= 1


class ReturnsADict(BaseStrategy):
    """A user's strategy answering with a mapping instead of a StrategySignal."""

    def __init__(self) -> None:
        super().__init__("returns_a_dict")

    def generate_signal(self, market_data: Mapping[str, Any], current_index: int) -> Any:
        return {"symbol": market_data["symbol"], "action": "BUY"}


def test_a_strategy_that_raises_is_counted_with_the_symbols_it_was_switched_off_for() -> None:
    # Arrange
    engine = BacktestEngine(load_config("backtest"))

    # Act
    result = engine.run(ReturnsADict(), symbols=["BTCUSDT", "ETHUSDT"], start="2025-05-05", end="2025-05-06")

    # Assert: ten errors in a row switch it off for a symbol, in the warm-up on the day before and again in the run
    assert result["strategy_errors"] == 2 * 2 * 10
    assert result["strategies_disabled"] == {"returns_a_dict": ["BTCUSDT", "ETHUSDT"]}
    assert result["handler_errors"] == 0 and result["n_orders"] == 0


def test_equity_curve_matches_the_final_metrics(tmp_path: Path) -> None:
    # Arrange / Act
    folder = run_small(tmp_path, "run")

    # Assert
    metrics = json.loads((folder / "metrics.json").read_text())
    lines = (folder / "equity.csv").read_text().splitlines()
    first_equity = float(lines[1].split(",")[2])
    last_equity = float(lines[-1].split(",")[2])
    assert first_equity == metrics["initial_capital"]
    assert last_equity == pytest.approx(metrics["final_equity"], abs=1e-6)
    assert metrics["total_return"] == pytest.approx(last_equity / first_equity - 1.0)


def test_fees_in_metrics_equal_the_sum_of_fill_commissions(tmp_path: Path) -> None:
    # Arrange / Act
    folder = run_small(tmp_path, "run")

    # Assert
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = (folder / "trades.csv").read_text().splitlines()[1:]
    commissions = sum(float(row.split(",")[7]) for row in rows)
    assert metrics["fees_paid"] == pytest.approx(commissions, rel=1e-9)
    assert metrics["n_trades"] == len(rows)


def test_tca_csv_has_one_row_per_parent_with_the_fees_of_its_fills(tmp_path: Path) -> None:
    # Arrange
    engine = BacktestEngine(load_config("backtest", overrides=TRADING))
    result = engine.run(symbols=SYMBOLS, start="2025-05-05", end="2025-05-08")

    # Act
    folder = result.write(tmp_path / "run")

    # Assert
    with (folder / "tca.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    router = result.pipeline.router
    assert tuple(rows[0]) == TCA_COLUMNS
    assert [row["parent_order_id"] for row in rows] == [c.parent_order_id for c in router.completed]
    assert len({row["parent_order_id"] for row in rows}) == len(rows) > 0
    fees: dict[str, Decimal] = {}
    for fill in result.pipeline.recorder.fills:
        parent = router.parent_of(fill.client_order_id)
        assert parent is not None, fill.client_order_id
        fees[parent] = fees.get(parent, Decimal(0)) + fill.commission
    for row in rows:
        assert Decimal(row["fees"]) == fees.get(row["parent_order_id"], Decimal(0))
    assert sum(Decimal(row["fees"]) for row in rows) == sum(fees.values())


def test_run_backtest_as_the_user_calls_it() -> None:
    # Arrange
    engine = BacktestEngine()
    strategy = MovingAverageCrossStrategy(fast_period=10, slow_period=30)

    # Act
    results = asyncio.run(
        engine.run_backtest(
            strategy=strategy,
            start_date="2025-05-10",
            end_date="2025-05-11",
            initial_capital=10000.0,
            symbols=["BTCUSDT"],
        )
    )

    # Assert
    assert isinstance(results["total_return"], float)
    assert isinstance(results["sharpe_ratio"], float)
    assert isinstance(results["max_drawdown"], float)
    assert results["initial_capital"] == 10000.0
    assert results["bars_processed"] == 24 * 60


def test_a_date_that_is_not_iso_8601_is_refused_naming_the_argument() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match=r"end '10/05/2025' is not an ISO 8601 date or time: write e\.g\. 2025-05-10"):
        BacktestEngine().run(symbols=["BTCUSDT"], end="10/05/2025")


def test_symbols_given_as_one_string_are_symbols_not_letters() -> None:
    # Arrange: "BTCUSDT" was read as the symbols B, T, C, ... ("duplicate symbols: T")
    engine = BacktestEngine()

    # Act
    one = engine.run(symbols="BTCUSDT", end="2025-05-05T06:00:00")
    two = engine.run(symbols="BTCUSDT, ETHUSDT", end="2025-05-05T06:00:00")

    # Assert
    assert one["symbols"] == ["BTCUSDT"] and two["symbols"] == ["BTCUSDT", "ETHUSDT"]


@pytest.mark.parametrize("capital", [float("nan"), -100.0, 0.0])
def test_a_starting_capital_that_is_not_a_positive_number_is_refused_by_name(capital: float) -> None:
    # Act / Assert: a NaN capital gave a NaN return, a negative one a run that never traded, both silently
    with pytest.raises(ValueError, match="initial_capital must be a positive finite number"):
        asyncio.run(BacktestEngine().run_backtest(end_date="2025-05-06", initial_capital=capital))


def test_dates_outside_the_data_say_which_data_is_missing_and_how_to_fetch_it() -> None:
    # Arrange: UC-2.2 as the review writes it, on dates keel does not bundle
    engine = BacktestEngine()

    # Act
    with pytest.raises(MalformedDataError) as raised:
        asyncio.run(
            engine.run_backtest(
                strategy=MovingAverageCrossStrategy(fast_period=20, slow_period=60),
                start_date="2023-01-01",
                end_date="2024-01-01",
                initial_capital=10000.0,
            )
        )

    # Assert
    message = str(raised.value)
    assert "from 2023-01-01 00:00 to 2024-01-01 00:00" in message
    assert "the files there cover 2025-05-04" in message
    assert "keel data download --symbols BTCUSDT,ETHUSDT" in message and "--start 2023-01 --end 2023-12" in message


def test_without_an_end_a_run_stops_where_the_funding_data_of_its_symbols_stops() -> None:
    # Arrange: the real funding file's last settlements: BTCUSDT 2025-06-03 00:00, ETHUSDT 2025-06-15
    # 00:00 (8-hourly), ENAUSDT 2025-06-03 08:00 (4-hourly)
    config = load_config("backtest")

    # Act
    btc = funding_coverage_end(config, ("BTCUSDT",))
    eth = funding_coverage_end(config, ("ETHUSDT",))
    both = funding_coverage_end(config, ("BTCUSDT", "ETHUSDT"))
    ena = funding_coverage_end(config, ("ENAUSDT",))

    # Assert
    assert btc == both == datetime(2025, 6, 3, 8, tzinfo=UTC)
    assert eth == datetime(2025, 6, 15, 8, tzinfo=UTC)
    assert ena == datetime(2025, 6, 3, 12, tzinfo=UTC)
    assert funding_coverage_end(config, ("DOGEUSDT",)) is None


class _AskedStore:
    """A prepared-data store that records what it is asked for and prepares every file anew."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def prepared(self, path: Path, variant: str, prepare: Any) -> Any:
        self.asked.append((path.name, variant))
        return prepare()


def test_the_funding_coverage_is_read_through_the_installed_prepared_data() -> None:
    # Arrange: a run without an end asks for the coverage at its start, inside the engine's prepared files
    config = load_config("backtest")
    store = _AskedStore()

    # Act
    with use_prepared_data(store):
        covered = funding_coverage_end(config, ("BTCUSDT",))

    # Assert
    assert covered == funding_coverage_end(config, ("BTCUSDT",)) == datetime(2025, 6, 3, 8, tzinfo=UTC)
    assert store.asked == [(Path(config.data.funding).name, "funding")]


def test_data_without_funding_runs_with_zero_funding_and_keeps_funding_arbitrage_out() -> None:
    # Arrange
    config = load_config("backtest", overrides=TRADING)
    config = config.model_copy(update={"data": config.data.model_copy(update={"funding": None})})

    # Act
    result = BacktestEngine(config).run(symbols=["BTCUSDT", "ETHUSDT"], start="2025-05-05", end="2025-05-07")

    # Assert
    assert result["handler_errors"] == 0
    assert result["funding_data"] == "none" and result["funding_paid"] == 0.0
    assert set(result["strategies_excluded"]) == {"funding_arbitrage"}
    assert "funding_arbitrage" not in [s.name for s in result.pipeline.strategy.strategy.strategies]
    assert result["n_trades"] > 0


@pytest.mark.parametrize(("interval", "source", "bars"), [("5m", "1m", 2 * 288), ("1h", None, 2 * 24)])
def test_other_intervals_run_natively_or_resampled_from_finer_files(
    interval: str, source: str | None, bars: int
) -> None:
    # Arrange
    config = load_config("backtest")
    data = {"bar_interval": interval, "resample_from": source}
    if source is None:
        data["bars"] = "ohlcv/binance_usdm_1h_2025-03"
    config = config.model_copy(update={"data": config.data.model_copy(update=data)})
    start = "2025-05-05" if source else "2025-03-20"
    end = "2025-05-07" if source else "2025-03-22"

    # Act
    result = BacktestEngine(config).run(symbols=["BTCUSDT"], start=start, end=end)

    # Assert
    assert result["bar_interval"] == interval and result["bars_processed"] == bars
    assert result["handler_errors"] == 0


def test_a_gap_in_the_recorded_bars_moves_trading_as_in_paper(tmp_path: Path) -> None:
    # Arrange: the real BTCUSDT month with 30 bars of 2025-05-05 cut out
    import gzip

    real = Path(__file__).resolve().parents[2] / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz"
    lines = gzip.decompress(real.read_bytes()).decode().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("1746446400000"))  # 2025-05-05 12:00
    del lines[first : first + 30]
    (tmp_path / "bars").mkdir()
    (tmp_path / "bars" / "BTCUSDT_1m.csv.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    config = load_config("backtest")
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"root": tmp_path, "bars": "bars", "funding": None})}
    )

    # Act
    result = BacktestEngine(config).run(symbols=["BTCUSDT"], start="2025-05-05", end="2025-05-06")

    # Assert
    states = [(change.state.value, change.reason) for change in result.pipeline.recorder.trading_states]
    assert result["data_gaps"] == 1
    assert states[0][0] == "REDUCING" and "stale" in states[0][1]
    assert states[-1][0] == "ACTIVE"


def test_an_open_start_before_the_data_suggests_the_month_the_run_ends_in() -> None:
    # Arrange: no start, an end before the bundled month begins
    config = load_config("backtest")

    # Act
    with pytest.raises(MalformedDataError) as raised:
        BacktestEngine(config).run(symbols=["BTCUSDT"], end="2025-05-04T00:00:00+00:00")

    # Assert
    message = str(raised.value)
    assert "from the start to 2025-05-04 00:00" in message
    assert "--start 2025-05 --end 2025-05 --to data/binance-2025-05" in message


def test_views_before_the_optimizer_has_enough_history_are_counted_so_no_orders_are_explained() -> None:
    # Arrange: a month of daily bars, fewer than the 60 a symbol needs before the optimizer weighs it
    config = load_config("backtest", overrides={"data": {"bar_interval": "1d", "resample_from": "1m"}})

    # Act
    result = BacktestEngine(config).run(symbols=["BTCUSDT", "ETHUSDT"])

    # Assert
    assert result["n_orders"] == 0 and result["n_orders_denied"] == 0
    assert result["signals_published"] > 0
    assert result["views_before_history"] > 0


def test_strategies_no_symbol_gave_enough_bars_are_named_with_what_they_need() -> None:
    # Arrange: two weeks of hourly bars, no warm-up: 336 bars a symbol, fewer than range_trading's 1441
    config = load_config(
        "backtest",
        overrides={"data": {"bar_interval": "1h", "resample_from": "1m"}, "strategy": {"warmup_bars": 0}},
    )

    # Act
    result = BacktestEngine(config).run(symbols=["BTCUSDT"], start="2025-05-05", end="2025-05-19")

    # Assert: only the strategy whose warm-up is longer than the run, with its need
    assert result["bars_processed"] == 336
    assert result["strategies_not_ready"] == {"range_trading": "needs 1441 bars of a symbol, the run gave at most 336"}


def test_a_vwap_style_works_its_orders_along_each_symbols_volume_profile() -> None:
    # Arrange: every strategy's orders worked as VWAP, on hourly bars resampled from the bundled minutes
    config = load_config(
        "backtest",
        overrides={
            "data": {"bar_interval": "1h", "resample_from": "1m"},
            "execution": {"default_style": "VWAP", "twap_horizon_seconds": 7200},
            "strategy": {"warmup_bars": 0},
        },
    )

    # Act
    result = BacktestEngine(config).run(symbols=["BTCUSDT", "ETHUSDT"])

    # Assert: the orders were worked and filled as VWAP parents, with no handler error
    assert result["handler_errors"] == 0
    assert result["n_trades"] > 0
    assert {parent.style for parent in result.pipeline.router.completed} == {"VWAP"}
