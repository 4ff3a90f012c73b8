"""Binance kline intervals and their annualization."""

from __future__ import annotations

import pytest

from keel.core.intervals import INTERVAL_MS, bars_per_day, bars_per_year, interval_ms


@pytest.mark.parametrize(
    ("interval", "minutes"),
    [
        ("1m", 1),
        ("3m", 3),
        ("5m", 5),
        ("15m", 15),
        ("30m", 30),
        ("1h", 60),
        ("2h", 120),
        ("4h", 240),
        ("6h", 360),
        ("8h", 480),
        ("12h", 720),
        ("1d", 1440),
        ("3d", 4320),
        ("1w", 10080),
    ],
)
def test_every_binance_interval_has_its_length(interval: str, minutes: int) -> None:
    # Act / Assert
    assert interval_ms(interval) == minutes * 60_000
    assert bars_per_day(interval) == pytest.approx(1440 / minutes)
    assert bars_per_year(interval) == pytest.approx(365 * 1440 / minutes)


def test_one_minute_bars_annualize_over_a_365_day_year() -> None:
    # Act / Assert
    assert bars_per_year("1m") == 525_600
    assert len(INTERVAL_MS) == 14


def test_an_unknown_interval_lists_the_valid_ones() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="1m, 3m, 5m"):
        interval_ms("7m")
