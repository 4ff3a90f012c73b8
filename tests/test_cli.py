"""The keel command, run as a user runs it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def keel(
    *arguments: str, environment: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *arguments],
        cwd=cwd,
        env={**os.environ, **(environment or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_bad_config_file_exits_2_with_one_line_naming_file_and_key(tmp_path: Path) -> None:
    # Arrange
    bad = tmp_path / "bad.yaml"
    bad.write_text("risk:\n  max_leverage: -1\n")

    # Act
    completed = keel("backtest", "--config", str(bad), "--output", str(tmp_path / "out"))

    # Assert
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(bad) in lines[0] and "risk.max_leverage" in lines[0]


def test_an_unknown_key_exits_2(tmp_path: Path) -> None:
    # Arrange
    bad = tmp_path / "typo.yaml"
    bad.write_text("risk:\n  max_levrage: 2\n")

    # Act
    completed = keel("run", "--mode", "paper", "--config", str(bad))

    # Assert
    assert completed.returncode == 2
    assert "risk.max_levrage" in completed.stderr


def test_a_bad_environment_override_exits_2_naming_the_variable(tmp_path: Path) -> None:
    # Act
    completed = keel("backtest", "--output", str(tmp_path), environment={"KEEL_BUS__CAPACITY": "zero"})

    # Assert
    assert completed.returncode == 2
    assert "KEEL_BUS__CAPACITY" in completed.stderr


def test_live_mode_without_confirmation_is_refused() -> None:
    # Act
    completed = keel("run", "--mode", "live")

    # Assert
    assert completed.returncode == 2
    assert "live" in completed.stderr


def test_backtest_command_writes_the_result_files(tmp_path: Path) -> None:
    # Act
    completed = keel(
        "backtest",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--start",
        "2025-05-05",
        "--end",
        "2025-05-06",
        "--output",
        str(tmp_path / "out"),
    )

    # Assert
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.splitlines()[0])
    assert summary["bars_processed"] == 2 * 24 * 60
    for name in ("metrics.json", "equity.csv", "trades.csv", "orders.csv"):
        assert (tmp_path / "out" / name).exists()


def test_data_inspect_reports_bad_rows_and_gaps_of_a_corrupted_copy(tmp_path: Path) -> None:
    # Arrange: the real BTCUSDT 1m file with a negative volume and 30 bars cut out
    real = REPO / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz"
    lines = gzip.decompress(real.read_bytes()).decode().splitlines()
    fields = lines[10].split(",")
    fields[5] = "-1"
    lines[10] = ",".join(fields)
    del lines[100:130]
    corrupted = tmp_path / "BTCUSDT_1m.csv.gz"
    corrupted.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))

    # Act
    completed = keel("data", "inspect", str(corrupted))

    # Assert
    assert completed.returncode == 0, completed.stderr
    assert ":11:" in completed.stdout and "volume" in completed.stdout
    assert "1 bad rows, 2 gaps" in completed.stdout


def test_data_inspect_reports_a_file_it_cannot_read_and_goes_on(tmp_path: Path) -> None:
    # Arrange: a folder with a real bar file and a file of no known format
    real = REPO / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz"
    (tmp_path / "BTCUSDT_1m.csv.gz").write_bytes(real.read_bytes())
    (tmp_path / "AAA_notes.csv.gz").write_bytes(gzip.compress(b"when,what\nmonday,lunch\n"))

    # Act
    completed = keel("data", "inspect", str(tmp_path))

    # Assert
    assert completed.returncode == 1
    assert f"{(tmp_path / 'AAA_notes.csv.gz').resolve()}\n  unreadable:" in completed.stdout
    assert str(tmp_path / "BTCUSDT_1m.csv.gz") in completed.stdout
    assert "1 files" in completed.stdout and "1 unreadable" in completed.stdout


def _bar_data_copy(root: Path, keep_every: int) -> None:
    real = REPO / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz"
    lines = gzip.decompress(real.read_bytes()).decode().splitlines()
    kept = [lines[0], *lines[1:3000:keep_every]]
    bars = root / "ohlcv" / "mine"
    bars.mkdir(parents=True)
    (bars / "BTCUSDT_1m.csv.gz").write_bytes(gzip.compress(("\n".join(kept) + "\n").encode()))
    (root / "funding").mkdir()
    funding = "funding/binance_usdm_funding_2025-03_06.csv.gz"
    (root / funding).write_bytes((REPO / "data" / funding).read_bytes())


def _user_config(folder: Path, root: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "user.yaml"
    config.write_text(
        f"data:\n  root: {root}\n  bars: ohlcv/mine\n  symbols: [BTCUSDT]\n"
        "  start: 2025-05-05T00:00:00Z\n  end: 2025-05-06T00:00:00Z\n"
    )
    return config


def test_five_minute_bars_given_as_one_minute_exit_2_naming_the_file(tmp_path: Path) -> None:
    # Arrange: every fifth 1m bar, written under a 1m name
    _bar_data_copy(tmp_path / "recorded", keep_every=5)
    config = _user_config(tmp_path / "site", "../recorded")

    # Act
    completed = keel("backtest", "--config", str(config), "--output", str(tmp_path / "out"))

    # Assert
    assert completed.returncode == 2
    errors = [line for line in completed.stderr.splitlines() if line.startswith("keel:")]
    assert len(errors) == 1
    assert str(tmp_path / "recorded/ohlcv/mine/BTCUSDT_1m.csv.gz") in errors[0]
    assert "5m apart" in errors[0] and "data.bar_interval is 1m" in errors[0]


def test_backtest_from_another_folder_reads_the_data_the_config_file_names(tmp_path: Path) -> None:
    # Arrange: a config file naming data relative to itself; run from an unrelated folder
    _bar_data_copy(tmp_path / "site" / "recorded", keep_every=1)
    config = _user_config(tmp_path / "site", "recorded")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # Act
    completed = keel("backtest", "--config", str(config), "--output", str(tmp_path / "out"), cwd=elsewhere)

    # Assert
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "out" / "metrics.json").exists()


def test_a_missing_data_folder_is_named_by_its_absolute_path(tmp_path: Path) -> None:
    config = _user_config(tmp_path / "site", "nowhere")

    completed = keel("backtest", "--config", str(config), "--output", str(tmp_path / "out"), cwd=tmp_path)

    assert completed.returncode == 1
    assert str(tmp_path / "site" / "nowhere" / "ohlcv" / "mine" / "BTCUSDT_1m.csv.gz") in completed.stderr


def test_data_inspect_of_the_bundled_data_finds_no_problem() -> None:
    # Act
    completed = keel("data", "inspect", "data/ohlcv", "data/funding")

    # Assert
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().endswith("0 bad rows, 0 gaps")


def test_run_recovers_an_unfinished_paper_session_unless_fresh_is_asked_for(tmp_path: Path) -> None:
    # Arrange: a paper run stopped by its duration long before its data ends
    environment = {"KEEL_RUN__OUTPUT_DIR": str(tmp_path)}
    options = ("run", "--mode", "paper", "--no-web", "--speed", "1000000", "--duration", "1", "--symbols")
    first = keel(*options, "BTCUSDT", environment=environment)

    # Act
    again = keel(*options, "BTCUSDT", environment=environment)
    fresh = keel(*options, "BTCUSDT", "--fresh", environment=environment)
    other_symbol = keel(*options, "ETHUSDT", environment=environment)

    # Assert
    assert first.returncode == again.returncode == fresh.returncode == 0, fresh.stderr
    assert "(fresh paper account)" in first.stdout
    assert "(recovering session 1)" in again.stdout
    assert "(fresh paper account)" in fresh.stdout
    assert other_symbol.returncode == 1
    assert "paper-venue.db does not fit this venue" in other_symbol.stderr
    assert "keel run --fresh" in other_symbol.stderr
