"""`keel backtest --profile`: where the run spent its time, written next to its outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def backtest(output: Path, *extra: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "keel.cli", "backtest", "--symbols", "BTCUSDT", "--start", "2025-05-05"]
    command += ["--end", "2025-05-06", "--output", str(output), *extra]
    env = {**os.environ, **(environ or {})}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def test_profile_flag_writes_the_run_profile_next_to_its_outputs(tmp_path: Path) -> None:
    # Arrange
    output = tmp_path / "run"

    # Act: from the Python sources, as the compiled modules' calls leave no frames (their time is their callers')
    completed = backtest(output, "--profile", environ={"KEEL_PURE_PYTHON": "1"})

    # Assert
    assert completed.returncode == 0, completed.stderr
    assert (output / "metrics.json").exists()
    speedscope = json.loads((output / "profile.speedscope.json").read_text())
    frames = {frame["name"] for frame in speedscope["shared"]["frames"]}
    # The samples reach into the engine's own code: the replay, the bus dispatching bars to handlers.
    assert {"replay", "drain", "on_bar"} <= frames
    assert speedscope["profiles"][0]["endValue"] > speedscope["profiles"][0]["startValue"]
    html = (output / "profile.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "RecordedRun" in html


def test_the_flame_graph_keeps_every_sample_of_the_strategies_bar_by_bar(tmp_path: Path) -> None:
    # Arrange: the strategies in the replay, not in the fit worker, so the profiled process runs them.
    output = tmp_path / "run"

    # Act
    completed = backtest(output, "--profile", environ={"KEEL_RUN__REGIME_FIT_WORKER": "false"})

    # Assert: each bar's call of a strategy is a short one; the flame graph keeps them all the same.
    assert completed.returncode == 0, completed.stderr
    speedscope = json.loads((output / "profile.speedscope.json").read_text())
    files = {(frame["name"], Path(frame.get("file") or "").name) for frame in speedscope["shared"]["frames"]}
    assert {("step", "trend_following.py"), ("step", "mean_reversion.py"), ("signal_after", "base.py")} <= files


def test_without_the_flag_no_profile_is_written(tmp_path: Path) -> None:
    # Arrange
    output = tmp_path / "run"

    # Act
    completed = backtest(output)

    # Assert
    assert completed.returncode == 0, completed.stderr
    assert not (output / "profile.html").exists() and not (output / "profile.speedscope.json").exists()
