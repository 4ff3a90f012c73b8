"""The recorded bar-and-funding feed on the bundled real data."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from keel.core.errors import MalformedDataError
from keel.core.messages import BarClosed, FundingRateUpdated
from keel.market_data.feeds import RecordedBarFeed
from keel.market_data.loaders import load_funding, load_ohlcv

DATA = Path(__file__).resolve().parents[2] / "data"
BARS = DATA / "ohlcv/binance_usdm_1m_2025-05"
FUNDING = DATA / "funding/binance_usdm_funding_2025-03_06.csv.gz"
MINUTE_NS = 60_000_000_000
DAY_NS = 24 * 60 * MINUTE_NS
START = 1746403200 * 1_000_000_000  # 2025-05-05T00:00:00Z


def test_events_come_in_time_order_with_deterministic_ties() -> None:
    # Arrange
    feed = RecordedBarFeed(BARS, ["ETHUSDT", "BTCUSDT"], "1m", FUNDING, start_ns=START, end_ns=START + DAY_NS)

    # Act
    events = list(feed)

    # Assert
    keys = [(e.ts_event, isinstance(e, FundingRateUpdated)) for e in events]
    assert keys == sorted(keys)
    first_minute = [e.symbol for e in events if e.ts_event == START + MINUTE_NS]
    assert first_minute == ["ETHUSDT", "BTCUSDT"]
    assert sum(isinstance(e, BarClosed) for e in events) == 2 * 24 * 60


def test_bars_carry_the_recorded_values_with_close_time_as_event_time() -> None:
    # Arrange
    frame = load_ohlcv(BARS / "BTCUSDT_1m.csv.gz").frame
    feed = RecordedBarFeed(BARS, ["BTCUSDT"], "1m", None, start_ns=START, end_ns=START + 10 * MINUTE_NS)

    # Act
    bars = list(feed)

    # Assert
    row = frame[frame["open_time_ms"] == START // 1_000_000].iloc[0]
    first = bars[0]
    assert isinstance(first, BarClosed)
    assert first.open_time == START and first.ts_event == START + MINUTE_NS
    assert (first.open, first.high, first.low, first.close, first.volume) == (
        row["open"],
        row["high"],
        row["low"],
        row["close"],
        row["volume"],
    )
    assert len(bars) == 10


def test_funding_events_hold_the_recorded_rate_and_mark_as_decimals() -> None:
    # Arrange
    funding = load_funding(FUNDING).frame
    feed = RecordedBarFeed(BARS, ["BTCUSDT"], "1m", FUNDING, start_ns=START, end_ns=START + DAY_NS)

    # Act
    events = [e for e in feed if isinstance(e, FundingRateUpdated)]

    # Assert
    expected = funding[
        (funding["symbol"] == "BTCUSDT")
        & (funding["time_ms"] >= START // 1_000_000)
        & (funding["time_ms"] <= (START + DAY_NS) // 1_000_000)
    ]
    assert len(events) == len(expected) == 3
    for event, (_, row) in zip(events, expected.iterrows(), strict=True):
        assert event.rate == Decimal(repr(row["funding_rate"]))
        assert event.mark_price == Decimal(repr(row["mark_price"]))
        assert event.funding_time == row["time_ms"] * 1_000_000


def test_a_missing_symbol_file_is_a_clear_error() -> None:
    # Act / Assert
    with pytest.raises(MalformedDataError, match="DOGEUSDT"):
        RecordedBarFeed(BARS, ["DOGEUSDT"], "1m")


def test_a_range_without_bars_is_a_clear_error() -> None:
    # Act / Assert
    with pytest.raises(MalformedDataError, match="inside the requested dates"):
        RecordedBarFeed(BARS, ["BTCUSDT"], "1m", start_ns=0, end_ns=MINUTE_NS)
