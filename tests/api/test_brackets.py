"""Leverage brackets: the documented subset in config/, Binance's maintenance-amount rule, lookups."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from venue_harness import BRACKETS_FILE, real_schedule

from keel.api.brackets import bracket_for, load_leverage_schedule, maintenance_margin, max_notional
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import ConfigurationError, RequestRejectedError


def test_btcusdt_maintenance_amounts_follow_binances_rule_and_match_the_published_response() -> None:
    # Arrange: the file carries the maintenance amounts of the real leverageBracket response;
    # the loader recomputes each as floor * (rate - previous rate) + previous amount and refuses a mismatch.
    schedule = real_schedule()

    # Act
    brackets = schedule.brackets("BTCUSDT")

    # Assert
    assert [b.maintenance_amount for b in brackets] == [
        Decimal(a)
        for a in ("0", "50", "1300", "46300", "546300", "2546300", "5046300", "8046300", "28046300", "103046300")
    ]
    assert [b.initial_leverage for b in brackets] == [125, 100, 50, 20, 10, 5, 4, 3, 2, 1]
    assert [b.bracket for b in brackets] == list(range(1, 11))


def test_xrpusdt_maintenance_amounts_are_computed_by_hand() -> None:
    # Arrange: tiers 0.50% <= 10k, 0.65% <= 20k, 1.00% <= 160k, 2.00% <= 800k ...
    schedule = real_schedule()

    # Act
    amounts = [b.maintenance_amount for b in schedule.brackets("XRPUSDT")][:4]

    # Assert: 0; 10000 * 0.0015 = 15; 20000 * 0.0035 + 15 = 85; 160000 * 0.01 + 85 = 1685
    assert amounts == [Decimal("0"), Decimal("15"), Decimal("85"), Decimal("1685")]


def test_symbols_without_their_own_table_use_the_documented_default_and_fee() -> None:
    # Arrange
    schedule = real_schedule()

    # Act
    sol = schedule.brackets("SOLUSDT")

    # Assert
    assert sol == schedule.brackets("AVAXUSDT")
    assert sol[0].initial_leverage == 50 and sol[0].maintenance_margin_rate == Decimal("0.0100")
    assert sol[-1].notional_cap is None
    assert schedule.liquidation_fee("BCHUSDT") == Decimal("0.015000")
    assert schedule.liquidation_fee("SOLUSDT") == Decimal("0.020000")


@pytest.mark.parametrize(
    ("notional", "bracket"),
    [("0", 1), ("50000", 1), ("50000.01", 2), ("250000", 2), ("250000.1", 3), ("500000000", 10)],
)
def test_a_notional_belongs_to_the_bracket_whose_cap_it_does_not_exceed(notional: str, bracket: int) -> None:
    # Arrange
    brackets = real_schedule().brackets("BTCUSDT")

    # Act
    found = bracket_for(brackets, Decimal(notional))

    # Assert
    assert found.bracket == bracket


def test_a_notional_beyond_the_last_bracket_is_refused_with_2027() -> None:
    # Arrange
    brackets = real_schedule().brackets("BTCUSDT")

    # Act / Assert
    with pytest.raises(RequestRejectedError) as raised:
        bracket_for(brackets, Decimal("500000000.1"))
    assert raised.value.code == BinanceErrorCode.MAX_LEVERAGE_RATIO


def test_maintenance_margin_is_notional_times_rate_minus_amount() -> None:
    # Arrange
    brackets = real_schedule().brackets("BTCUSDT")

    # Act
    small = maintenance_margin(brackets, Decimal("40000"))
    large = maintenance_margin(brackets, Decimal("300000"))

    # Assert: 40000 * 0.004; 300000 * 0.01 - 1300
    assert small == Decimal("160.000")
    assert large == Decimal("1700.00")


@pytest.mark.parametrize(("leverage", "cap"), [(125, "50000"), (101, "50000"), (100, "250000"), (20, "20000000")])
def test_max_notional_is_the_cap_of_the_last_bracket_allowing_the_leverage(leverage: int, cap: str) -> None:
    # Arrange
    brackets = real_schedule().brackets("BTCUSDT")

    # Act / Assert
    assert max_notional(brackets, leverage) == Decimal(cap)


@pytest.mark.parametrize("leverage", [0, 126])
def test_a_leverage_the_brackets_do_not_offer_is_refused_with_4028(leverage: int) -> None:
    # Arrange
    brackets = real_schedule().brackets("BTCUSDT")

    # Act / Assert
    with pytest.raises(RequestRejectedError) as raised:
        max_notional(brackets, leverage)
    assert raised.value.code == BinanceErrorCode.INVALID_LEVERAGE


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    text = BRACKETS_FILE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "brackets.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('maintenance_amount: "50.0"', 'maintenance_amount: "51.0"', "brackets.BTCUSDT.brackets[1].maintenance_amount"),
        (
            'notional_floor: "50000", notional_cap: "250000"',
            'notional_floor: "60000", notional_cap: "250000"',
            "brackets.BTCUSDT.brackets[1].notional_floor",
        ),
        ("default_liquidation_fee:", "default_liquidation_fees:", "default_liquidation_fees"),
        ('BCHUSDT: "0.015000"', "BCHUSDT: 0.015", "liquidation_fees.BCHUSDT"),
        ("initial_leverage: 125", "initial_leverage: 0", "brackets.BTCUSDT.brackets[0].initial_leverage"),
    ],
)
def test_a_bad_file_names_the_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    # Arrange
    path = _edited(tmp_path, old, new)

    # Act / Assert
    with pytest.raises(ConfigurationError) as raised:
        load_leverage_schedule(path)
    assert raised.value.key == key
