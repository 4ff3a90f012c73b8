"""Speed work changes no order: backtests on a pinned configuration reproduce golden orders and trades.

The golden fingerprints (``golden_orders.json``) were recorded from main's
engine before the speed work, with the configuration pinned in
``pinned_config/`` (a copy of the defaults of that day, so later changes to
keel's defaults do not move them). They were re-recorded on purpose twice:
when the shared cost model (no-trade band, smallest order, maker posts on
bars) changed the trading, and when the risk layer stopped approving a child
order's unfilled leftover a second time beside its parent's retry (450 -> 441
orders over the month); every speed change since keeps them. A fingerprint is the SHA-256 of the run's
``orders.csv`` and ``trades.csv`` bytes, with their row counts.

Re-record only when a change of trading behaviour is intended::

    .venv/bin/python tests/backtest/test_identical_orders.py --record
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from keel.backtest import BacktestEngine
from keel.config import KeelConfig, load_config

HERE = Path(__file__).resolve().parent
PINNED_CONFIG = HERE / "pinned_config"
GOLDEN = HERE / "golden_orders.json"

CASES: dict[str, dict[str, Any]] = {
    # The 1-symbol moving-average cross (benchmarks/bench_backtest.py), the whole month.
    "moving_average_cross_btcusdt_month": {
        "environ": {"KEEL_STRATEGY__NAME": "moving_average_cross", "KEEL_PORTFOLIO__ALLOCATOR": "equal_weight"},
        "symbols": ["BTCUSDT"],
        "end": None,
    },
    # The default pipeline (four strategies, regimes, Markowitz, risk, router, funding), 10 symbols, ten days.
    "default_pipeline_10_symbols_10_days": {"environ": {}, "symbols": None, "end": "2025-05-11"},
    # The same over the whole month (slow).
    "default_pipeline_10_symbols_month": {"environ": {}, "symbols": None, "end": None},
}


def pinned_config(environ: dict[str, str]) -> KeelConfig:
    """The pinned backtest configuration with ``environ``'s ``KEEL_*`` overrides."""
    return load_config("backtest", config_dir=PINNED_CONFIG, environ=environ)


def fingerprint(case: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run ``case`` through the backtest engine and return the fingerprint of its orders and trades."""
    result = BacktestEngine(pinned_config(case["environ"])).run(symbols=case["symbols"], end=case["end"])
    written = result.write(folder)
    prints: dict[str, Any] = {}
    for name in ("orders.csv", "trades.csv"):
        data = (written / name).read_bytes()
        prints[name] = {"sha256": hashlib.sha256(data).hexdigest(), "rows": data.count(b"\n") - 1}
    prints["handler_errors"] = result["handler_errors"]
    return prints


def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


def test_moving_average_cross_month_places_the_golden_orders(tmp_path: Path) -> None:
    # Arrange
    name = "moving_average_cross_btcusdt_month"

    # Act
    observed = fingerprint(CASES[name], tmp_path)

    # Assert
    assert observed == golden()[name]


def test_default_pipeline_ten_days_places_the_golden_orders(tmp_path: Path) -> None:
    # Arrange
    name = "default_pipeline_10_symbols_10_days"

    # Act
    observed = fingerprint(CASES[name], tmp_path)

    # Assert
    assert observed == golden()[name]


@pytest.mark.slow
def test_default_pipeline_month_places_the_golden_orders(tmp_path: Path) -> None:
    # Arrange
    name = "default_pipeline_10_symbols_month"

    # Act
    observed = fingerprint(CASES[name], tmp_path)

    # Assert
    assert observed == golden()[name]


def record() -> None:
    """Run every case and write ``golden_orders.json``."""
    recorded = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, case in CASES.items():
            recorded[name] = fingerprint(case, Path(scratch) / name)
    GOLDEN.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: test_identical_orders.py --record")
    record()
