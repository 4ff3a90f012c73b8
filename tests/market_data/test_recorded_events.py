"""The merge of recorded bars and funding settlements into one ordered stream of messages."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from keel.core.messages import BarClosed, FundingRateUpdated
from keel.market_data.recorded_events import BAR, FUNDING, merged_events


def funding(position: int) -> FundingRateUpdated:
    return FundingRateUpdated(
        symbol="ETHUSDT", funding_time=position, rate=Decimal("0.0001"), mark_price=None, ts_event=0, ts_init=0
    )


def without_id(event: BarClosed | FundingRateUpdated) -> BarClosed | FundingRateUpdated:
    """The message's content (every message gets its own id)."""
    return msgspec.structs.replace(event, id=0)


def test_each_event_is_its_row_of_the_bars_or_the_funding_in_the_merged_order(real_data) -> None:
    # Arrange
    btc, eth = real_data.bars("BTCUSDT", 2), real_data.bars("ETHUSDT", 1)
    bars = [btc[0], eth[0], btc[1]]
    columns = [
        [b.open_time for b in bars],
        [b.ts_event for b in bars],
        [b.open for b in bars],
        [b.high for b in bars],
        [b.low for b in bars],
        [b.close for b in bars],
        [b.volume for b in bars],
        [0, 1, 0],
    ]

    # Act
    events = list(merged_events([BAR, FUNDING, BAR, BAR], [2, 7, 0, 1], columns, ("BTCUSDT", "ETHUSDT"), "1m", funding))

    # Assert
    assert [without_id(e) for e in events] == [without_id(e) for e in (btc[1], funding(7), btc[0], eth[0])]
    assert all(isinstance(event, BarClosed) for event in events[2:])


def test_no_rows_make_no_events() -> None:
    assert list(merged_events([], [], [[]] * 8, (), "1m", funding)) == []
