"""exchangeInfo and leverageBracket answers written as keel's instrument and bracket files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keel.api.brackets import load_leverage_schedule
from keel.core.exchange_info import (
    ExchangeInfoError,
    brackets_document,
    dump_yaml,
    instruments_document,
    liquidation_fees,
    merge_brackets,
    read_json,
)
from keel.core.instruments import load_instruments

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "market_data" / "fixtures"
BUNDLED = ROOT / "config" / "instruments.yaml"
BRACKETS = ROOT / "config" / "leverage_brackets.yaml"
_FILTERS = (
    "tick_size",
    "min_price",
    "max_price",
    "step_size",
    "min_quantity",
    "max_quantity",
    "market_step_size",
    "market_min_quantity",
    "market_max_quantity",
    "min_notional",
    "multiplier_up",
    "multiplier_down",
    "multiplier_decimal",
    "price_precision",
    "quantity_precision",
)


def test_instruments_from_exchange_info_equal_the_bundled_specifications(tmp_path: Path) -> None:
    # Arrange
    answer = read_json(FIXTURES / "exchange_info.json")
    target = tmp_path / "instruments.yaml"

    # Act
    document = instruments_document(answer, ["BTCUSDT", "ETHUSDT", "DOGEUSDT"], "test")
    dump_yaml(target, "# test\n", {"instruments": document})
    written = load_instruments(target)

    # Assert
    bundled = load_instruments(BUNDLED)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for name in _FILTERS:
            assert getattr(written[symbol], name) == getattr(bundled[symbol], name), (symbol, name)
    assert written["DOGEUSDT"].tick_size > 0 and written["DOGEUSDT"].min_notional > 0


def test_every_trading_perpetual_is_written_when_no_symbol_is_named() -> None:
    # Act
    document = instruments_document(read_json(FIXTURES / "exchange_info.json"), None, "test")

    # Assert
    assert sorted(document) == ["BTCUSDT", "DOGEUSDT", "ETHUSDT"]


def test_a_symbol_the_answer_lacks_is_named() -> None:
    # Act / Assert
    with pytest.raises(ExchangeInfoError, match="PEPEUSDT"):
        instruments_document(read_json(FIXTURES / "exchange_info.json"), ["PEPEUSDT"], "test")


def test_a_missing_filter_is_named() -> None:
    # Arrange
    answer = read_json(FIXTURES / "exchange_info.json")
    entry = answer["symbols"][0]
    entry["filters"] = [f for f in entry["filters"] if f["filterType"] != "MIN_NOTIONAL"]

    # Act / Assert
    with pytest.raises(ExchangeInfoError, match=f"{entry['symbol']}: filter MIN_NOTIONAL missing"):
        instruments_document(answer, [entry["symbol"]], "test")


def test_leverage_brackets_from_the_answer_load_and_match_the_bundled_table(tmp_path: Path) -> None:
    # Arrange
    tables = brackets_document(read_json(FIXTURES / "leverage_bracket.json"), "test")
    fees = liquidation_fees(read_json(FIXTURES / "exchange_info.json"), ["BTCUSDT", "DOGEUSDT"])
    target = tmp_path / "brackets.yaml"
    target.write_text(BRACKETS.read_text(encoding="utf-8"), encoding="utf-8")

    # Act
    dump_yaml(target, "# test\n", merge_brackets(target, tables, fees))
    schedule = load_leverage_schedule(target)

    # Assert
    bundled = load_leverage_schedule(BRACKETS)
    assert schedule.brackets("BTCUSDT") == bundled.brackets("BTCUSDT")
    assert yaml.safe_load(target.read_text())["liquidation_fees"]["DOGEUSDT"] == fees["DOGEUSDT"]
