"""The benchmark scripts run and print one JSON line (their numbers are not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize(
    "script",
    [
        "bench_backtest.py",
        "bench_vs_backtrader.py",
        "bench_bus.py",
        "bench_strategies.py",
        "bench_market_data.py",
        "bench_exchange.py",
        "bench_portfolio.py",
        "bench_risk.py",
        "bench_execution.py",
        "bench_recovery.py",
    ],
)
def test_benchmark_prints_one_json_line(script: str) -> None:
    # Arrange
    command = [sys.executable, str(BENCHMARKS / script), "--quick"]

    # Act
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)

    # Assert
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1
    assert isinstance(json.loads(lines[0]), dict)
