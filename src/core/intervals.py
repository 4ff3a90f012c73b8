"""Binance kline intervals: their lengths, and how many of them make a day or a year.

Every place that turns a bar count into time (feeds, warm-up, staleness,
annualization, risk horizons) reads :data:`INTERVAL_MS`, so a new interval is
one line here. ``1M`` (calendar months) is left out: its bars differ in length.
"""

from __future__ import annotations

from typing import Literal

BarInterval = Literal["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w"]

_MINUTE_MS = 60_000
INTERVAL_MS: dict[str, int] = {
    "1m": _MINUTE_MS,
    "3m": 3 * _MINUTE_MS,
    "5m": 5 * _MINUTE_MS,
    "15m": 15 * _MINUTE_MS,
    "30m": 30 * _MINUTE_MS,
    "1h": 60 * _MINUTE_MS,
    "2h": 120 * _MINUTE_MS,
    "4h": 240 * _MINUTE_MS,
    "6h": 360 * _MINUTE_MS,
    "8h": 480 * _MINUTE_MS,
    "12h": 720 * _MINUTE_MS,
    "1d": 1_440 * _MINUTE_MS,
    "3d": 3 * 1_440 * _MINUTE_MS,
    "1w": 7 * 1_440 * _MINUTE_MS,
}
DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS  # crypto trades every day of the year


def interval_ms(interval: str) -> int:
    """Return the length of a bar interval in milliseconds.

    Raises
    ------
    ValueError
        For a name that is not a Binance kline interval, listing the valid ones.
    """
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        raise ValueError(f"bar interval must be one of {', '.join(INTERVAL_MS)}, got {interval!r}") from None


def bars_per_day(interval: str) -> float:
    """Return how many bars of ``interval`` make a day (fractional above a day)."""
    return DAY_MS / interval_ms(interval)


def bars_per_year(interval: str) -> float:
    """Return how many bars of ``interval`` make a 365-day year: the annualization factor."""
    return YEAR_MS / interval_ms(interval)
