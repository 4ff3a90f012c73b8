"""keel tune: two worker processes on the real PostgreSQL server share one study; the outputs it writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import yaml

from keel.config import load_config

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

    # Act: rebuild the report of the stored study
    rebuilt = keel(
        "tune", "report", "--storage", postgres_url, "--study", "two-workers", "--output", str(tmp_path / "r")
    )

    # Assert
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert (tmp_path / "r" / "best.yaml").read_text() == (output / "best.yaml").read_text()


def test_a_missing_strategy_is_a_usage_error() -> None:
    # Act
    done = keel("tune", "--output", "unused")

    # Assert
    assert done.returncode == 2 and "--strategy" in done.stderr
