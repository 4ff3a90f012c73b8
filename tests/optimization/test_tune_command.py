"""keel tune: two worker processes on the real PostgreSQL server share one study; the outputs it writes."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import yaml

from keel.config import KeelConfig, load_config
from keel.integration.paper import PaperSession
from keel.optimization.cli import TrialClaims
from keel.optimization.config_optimizer import CapitalSplit, ConfigOptimizer
from keel.optimization.space import apply_values
from keel.web import ConfigChangesOnLoop, SnapshotPublisher, SnapshotService, ThreadedServer, create_app

ROOT = Path(__file__).resolve().parents[2]
SMALL = {
    "strategy": {"warmup_bars": 200, "regime": {"enabled": False}},
    "tuning": {"train_days": 1.0, "test_days": 0.5, "embargo_hours": 1.0, "holdout_days": 0.5},
}


def keel(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_two_workers_share_a_postgresql_study_and_every_trial_runs_once(postgres_url: str, tmp_path: Path) -> None:
    # Arrange
    config_file = tmp_path / "small.yaml"
    config_file.write_text(yaml.safe_dump(SMALL))
    output = tmp_path / "out"

    # Act
    done = keel(
        "tune", "--strategy", "trend_following", "--trials", "4", "--objective", "sharpe",
        "--param", "fast_period=5:20", "--param", "slow_period=20:50",
        "--storage", postgres_url, "--study", "two-workers", "--workers", "2", "--output", str(output),
        "--config", str(config_file), "--symbols", "BTCUSDT", "--start", "2025-05-10", "--end", "2025-05-13",
    )  # fmt: skip

    # Assert
    assert done.returncode == 0, done.stderr[-2000:]
    trials = optuna.load_study(study_name="two-workers", storage=postgres_url).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.is_finished() for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert {p.name for p in output.iterdir()} == {"report.html", "trials.csv", "best.yaml"}
    assert len((output / "trials.csv").read_text().splitlines()) == 5
    tuned = load_config("backtest", output / "best.yaml")
    assert tuned.strategy.strategies == ("trend_following",)
    assert tuned.strategy.parameters.trend_following.fast_period < tuned.strategy.parameters.trend_following.slow_period
    html = (output / "report.html").read_text()
    assert "Held-out window" in html and "Deflated Sharpe ratio" in html and "http" not in html
    # trend following's default 320-bar channel gives no entry in these days: the study says its winner is arbitrary
    assert "completed trials traded in any walk-forward window" in done.stderr

    # Act: rebuild the report of the stored study
    rebuilt = keel(
        "tune", "report", "--storage", postgres_url, "--study", "two-workers", "--output", str(tmp_path / "r")
    )

    # Assert
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert "completed trials traded in any walk-forward window" in rebuilt.stderr
    assert (tmp_path / "r" / "best.yaml").read_text() == (output / "best.yaml").read_text()


def test_a_missing_strategy_is_a_usage_error() -> None:
    # Act
    done = keel("tune", "--output", "unused")

    # Assert
    assert done.returncode == 2 and "--strategy" in done.stderr


def tunable_paper_config(run_dir: Path) -> KeelConfig:
    """A paper session over one day of BTCUSDT running trend following alone, state under ``run_dir``."""
    return apply_values(
        load_config("paper", environ={}),
        {
            "data.symbols": ("BTCUSDT",),
            "data.start": "2025-05-05",
            "data.end": "2025-05-06",
            "strategy.name": "strategy_manager",
            "strategy.strategies": ("trend_following",),
            "strategy.regime.enabled": False,
            "paper.speed": 300.0,
            "paper.status_interval_seconds": 3600.0,
            "run.output_dir": str(run_dir),
        },
    )


def test_tune_apply_sends_best_yaml_to_a_running_session_as_an_ab_split(tmp_path: Path) -> None:
    # Arrange: a running paper session served on 127.0.0.1, and a tuned layer
    best = tmp_path / "best.yaml"
    layer = {"strategy": {"name": "strategy_manager", "strategies": ["trend_following"]}}
    layer["strategy"]["parameters"] = {"trend_following": {"fast_period": 11, "slow_period": 90}}
    best.write_text(yaml.safe_dump(layer))

    async def scenario() -> tuple[int, str, object]:
        session = PaperSession(tunable_paper_config(tmp_path / "account"), tmp_path / "run")
        loop = asyncio.get_running_loop()
        optimizer = ConfigOptimizer(session.orchestrator)
        publisher = SnapshotPublisher(session.orchestrator)
        app = create_app(
            SnapshotService(publisher, loop),
            api_token="apply-token-0123456789",
            audit=session.orchestrator.record_operator_action,
            config_changes=ConfigChangesOnLoop(optimizer, loop),
        )
        server = ThreadedServer(app, "127.0.0.1", 0)
        server.start()
        running = asyncio.create_task(session.run())
        try:
            # Act
            command = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "keel.cli", "tune", "apply", str(best), "--split", "0.4",
                "--url", f"http://127.0.0.1:{server.port}",
                env={**os.environ, "KEEL_API_TOKEN": "apply-token-0123456789"},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            output, errors = await command.communicate()
            while not optimizer.history and not running.done():
                await asyncio.sleep(0.01)
            manager = session.pipeline.strategy.manager
            return command.returncode, (output + errors).decode(), manager.strategies[0]
        finally:
            session.request_stop("test finished")
            await running
            await asyncio.to_thread(server.stop)

    returncode, output, running = asyncio.run(scenario())

    # Assert
    assert returncode == 0, output
    assert isinstance(running, CapitalSplit) and running.share == 0.4
    assert (running.new.parameters["fast_period"], running.new.parameters["slow_period"]) == (11, 90)


def test_tune_apply_without_a_token_is_a_usage_error(tmp_path: Path) -> None:
    # Arrange
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"risk": {"max_leverage": 2.0}}))

    # Act
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "tune", "apply", str(best)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "KEEL_API_TOKEN"},
    )  # fmt: skip

    # Assert
    assert done.returncode == 2 and "KEEL_API_TOKEN" in done.stderr


def _claim_all(claims: TrialClaims, taken: Any) -> None:
    while claims():
        with taken.get_lock():
            taken.value += 1


def test_forked_workers_drawing_from_one_count_take_every_trial_exactly_once() -> None:
    # Arrange: three processes racing for 200 trials
    context = multiprocessing.get_context("fork")
    claims = TrialClaims(context, 200)
    taken = context.Value("i", 0)
    workers = [context.Process(target=_claim_all, args=(claims, taken)) for _ in range(3)]

    # Act
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    # Assert
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert taken.value == 200
    assert claims() is False


def test_a_bad_command_line_range_is_a_usage_error_naming_the_key() -> None:
    # Act
    done = keel(
        "tune", "--strategy", "trend_following", "--start", "2025-05-10", "--end", "2025-05-09", "--output", "x"
    )

    # Assert: it said "1 validation error for KeelConfig" and nothing else
    assert done.returncode == 2
    assert "command line: data.end: end (2025-05-09T00:00:00+00:00) must be after start" in done.stderr


def test_a_parameter_given_twice_is_a_usage_error(tmp_path: Path) -> None:
    # Act: the first range would be dropped without a word
    done = keel(
        "tune", "--strategy", "trend_following", "--param", "fast_period=5:10", "--param", "fast_period=20:30",
        "--output", str(tmp_path / "out"),
    )  # fmt: skip

    # Assert
    assert done.returncode == 2 and "--param fast_period is given twice" in done.stderr
