"""Paper trading over the replayed bundled data, in wall-clock time (sped up)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from keel.backtest import BacktestEngine
from keel.config import KeelConfig, load_config
from keel.core.fsm import TradingState
from keel.core.messages import BarClosed, SessionEnded, SessionStarted, TradingStateChanged
from keel.integration.paper import PaperSession
from keel.persistence import Database, Journal
from keel.persistence.write_behind import SpillFile
from keel.portfolio import PortfolioOptimizer

REPO = Path(__file__).resolve().parents[2]


def paper_config(output_dir: Path, **paper: object) -> KeelConfig:
    config = load_config("paper", environ={})
    data = config.data.model_copy(update={"symbols": ("BTCUSDT", "ETHUSDT"), "end": None})
    data = data.model_validate({**data.model_dump(), "start": "2025-05-05T00:00:00Z", "end": "2025-05-05T06:00:00Z"})
    run = config.run.model_copy(update={"output_dir": output_dir})
    return config.model_copy(update={"data": data, "paper": config.paper.model_copy(update=paper), "run": run})


def test_paper_session_replays_to_the_end_and_writes_its_final_state(tmp_path: Path) -> None:
    # Arrange: 6 hours of 1m bars at 36,000x replay in well under a second of data time per bar
    config = paper_config(tmp_path, speed=36_000.0, status_interval_seconds=0.05)
    statuses: list[dict[str, object]] = []
    session = PaperSession(config, tmp_path / "run", on_status=statuses.append)

    # Act
    final = asyncio.run(session.run())

    # Assert
    assert final["stop_reason"] == "end of data"
    assert final["bars"] == 2 * 6 * 60
    assert final["open_orders"] == 0
    assert final["handler_errors"] == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["trading_state"] == "ACTIVE"
    for name in ("orders.csv", "trades.csv", "equity.csv", "config.json"):
        assert (tmp_path / "run" / name).exists()
    assert statuses, "status callback never ran"


def test_paper_and_backtest_place_the_same_orders(tmp_path: Path) -> None:
    # Arrange: hour-scale strategy windows, so that six hours of bars hold trades
    config = paper_config(tmp_path, speed=36_000.0)
    hourly = {
        "trend_following": {"fast_period": 20, "slow_period": 80, "channel_period": 60, "atr_period": 30},
        "mean_reversion": {"lookback": 60, "entry_z": 2.0, "exit_z": 0.5, "stop_z": 4.0, "trend_window": 120},
        "range_trading": {"range_period": 120, "entry_band": 0.15, "min_range_width": 0.004},
    }
    strategy = config.strategy.model_validate({**config.strategy.model_dump(), "parameters": hourly})
    # Six hours are too short for views to pay the cost model's round trip: the band is off so that orders exist.
    portfolio = config.portfolio.model_copy(update={"no_trade_band": False})
    config = config.model_copy(update={"strategy": strategy, "portfolio": portfolio})
    session = PaperSession(config, tmp_path / "paper")

    # Act
    asyncio.run(session.run())
    backtest = BacktestEngine(config).run()
    backtest.write(tmp_path / "backtest")

    # Assert: same client ids, sides, quantities, prices, statuses (timestamps differ: wall clock)
    def orders(folder: Path) -> list[list[str]]:
        rows = [line.split(",") for line in (folder / "orders.csv").read_text().splitlines()[1:]]
        return [row[:14] for row in rows]

    assert orders(tmp_path / "paper") == orders(tmp_path / "backtest")
    assert len(orders(tmp_path / "backtest")) > 0


def test_stop_request_cancels_open_orders_and_stops_cleanly(tmp_path: Path) -> None:
    # Arrange: slow enough that the data cannot end before the stop; a stop that cancels what works
    config = paper_config(tmp_path, speed=600.0, cancel_orders_on_stop=True)
    session = PaperSession(config, tmp_path / "run")

    async def run_then_stop() -> dict[str, object]:
        task = asyncio.create_task(session.run())
        while session.bars < 20:
            await asyncio.sleep(0.01)
        session.request_stop("operator")
        return await task

    # Act
    final = asyncio.run(run_then_stop())

    # Assert
    assert final["stop_reason"] == "operator"
    assert final["open_orders"] == 0
    assert (tmp_path / "run" / "state.json").exists()


def test_keel_run_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    # Arrange
    environment = {
        **os.environ,
        "KEEL_RUN__OUTPUT_DIR": str(tmp_path),
        "KEEL_PAPER__STATUS_INTERVAL_SECONDS": "0.2",
        "KEEL_PAPER__CANCEL_ORDERS_ON_STOP": "true",
    }
    command = [
        sys.executable,
        "-m",
        "keel.cli",
        "run",
        "--mode",
        "paper",
        "--speed",
        "600",
        "--symbols",
        "BTCUSDT",
        "--port",
        "0",
    ]
    process = subprocess.Popen(
        command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    # Act: wait for the first status line, then interrupt
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("["):
            break
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=60)

    # Assert
    assert process.returncode == 0, errors
    assert "signal SIGINT" in output
    runs = list(tmp_path.glob("paper-*/state.json"))
    assert len(runs) == 1
    assert json.loads(runs[0].read_text())["status"]["open_orders"] == 0


def test_what_a_run_left_in_the_spill_file_is_in_the_journal_before_the_next_start_reads_it(tmp_path: Path) -> None:
    # Arrange: a run ended while the database was out: its last trading-state change is only in the spill file
    config = paper_config(tmp_path, speed=36_000.0)
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    database.migrate()
    journal = Journal(database)
    last = journal.append([SessionStarted(session=1, mode="paper", recovered=False, ts_event=1, ts_init=1)])
    halted = TradingStateChanged(
        previous=TradingState.ACTIVE, state=TradingState.HALTED, reason="operator: checks", ts_event=2, ts_init=2
    )
    ended = SessionEnded(session=1, reason="end of data", finished=True, ts_event=3, ts_init=3)
    spill = SpillFile(tmp_path / config.persistence.spill_file)
    spill.append([(last + 1, halted), (last + 2, ended)])

    # Act
    session = PaperSession(config, tmp_path / "run")

    # Assert
    assert [m for _, m in journal.read(last)] == [halted, ended]
    assert spill.is_empty()
    assert session.plan.session == 2
    assert session.state.last_trading_state() == halted
    database.dispose()
    session.database.dispose()


def test_a_paper_session_freezes_its_set_up_objects_while_it_trades_and_hands_them_back_when_it_ends(
    tmp_path: Path,
) -> None:
    # Arrange
    gc.unfreeze()
    session = PaperSession(paper_config(tmp_path, speed=36_000.0), tmp_path / "run")
    frozen_while_trading: list[int] = []

    def count_frozen(bar: BarClosed) -> None:
        if not frozen_while_trading:  # counting walks every frozen object: once is enough
            frozen_while_trading.append(gc.get_freeze_count())

    session.pipeline.bus.subscribe(BarClosed, count_frozen, name="test.gc")

    # Act
    try:
        asyncio.run(session.run())
        frozen_after = gc.get_freeze_count()
    finally:
        gc.unfreeze()

    # Assert
    assert frozen_while_trading[0] > 10_000
    assert frozen_after == 0


def test_a_paper_session_compiles_the_optimizers_problem_while_it_warms_up_not_on_the_loop(tmp_path: Path) -> None:
    # Arrange
    config = paper_config(tmp_path, speed=36_000.0)

    # Act: set-up only (the warm-up bars replayed), no bar traded yet
    session = PaperSession(config, tmp_path / "run")

    # Assert: the costly first solve is done, no rebalance was solved
    optimizer = session.pipeline.allocator
    assert isinstance(optimizer, PortfolioOptimizer)
    assert optimizer.compiled_sizes == (len(config.data.symbols),)
    assert optimizer.solves == 0
    session.database.dispose()
    session.account_lock.release()


def test_a_paper_process_loads_neither_the_regime_fitting_libraries_nor_numba() -> None:
    # Arrange: a fresh interpreter, as `keel run` starts
    probe = (
        "import sys, json, keel.integration.paper, keel.backtest, keel.market_data as m;"
        "loaded = sorted(x for x in ('arch', 'hmmlearn', 'statsmodels', 'numba') if x in sys.modules);"
        "book = m.OrderBook.__name__;"
        "print(json.dumps([loaded, book, 'numba' in sys.modules]))"
    )

    # Act
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)

    # Assert: nothing heavy at start; the order book (and numba with it) on first use
    assert json.loads(completed.stdout) == [[], "OrderBook", True]
