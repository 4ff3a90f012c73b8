"""The recorded feeds on the bundled real data: bars and funding, order-book sessions, merging, pacing."""

from __future__ import annotations

import asyncio
import gzip
from collections import Counter
from decimal import Decimal
from pathlib import Path

import msgspec
import pandas as pd
import pytest

from keel.core.clock import LiveClock
from keel.core.errors import MalformedDataError
from keel.core.messages import (
    BarClosed,
    BookTickerUpdated,
    BookUpdated,
    FundingRateUpdated,
    MarketDataEvent,
    MarkPriceUpdated,
    TradeTick,
)
from keel.core.orders import OrderSide
from keel.market_data.feeds import (
    DataNotCoveredError,
    MergedFeed,
    RecentPreparedFiles,
    RecordedBarFeed,
    RecordedSessionFeed,
    paced,
    use_prepared_data,
)
from keel.market_data.loaders import load_funding, load_ohlcv, load_trades

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


def test_a_symbols_bars_are_the_ones_the_feed_yields_for_it_in_the_same_order() -> None:
    # Arrange
    feed = RecordedBarFeed(BARS, ["ETHUSDT", "BTCUSDT"], "1m", FUNDING, start_ns=START, end_ns=START + DAY_NS)
    yielded = [e for e in feed if isinstance(e, BarClosed) and e.symbol == "BTCUSDT"]

    # Act
    ts, ohlcv = feed.symbol_bars("BTCUSDT")

    # Assert
    assert ts.tolist() == [e.ts_event for e in yielded]
    assert ohlcv.tolist() == [[e.open, e.high, e.low, e.close, e.volume] for e in yielded]
    with pytest.raises(KeyError):
        feed.symbol_bars("SOLUSDT")


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


def two_day_events(symbols: list[str], bars: Path = BARS) -> list[tuple[str, dict[str, object]]]:
    """The events of two days, each as its kind and fields (its id aside: every message gets a new one)."""
    feed = RecordedBarFeed(bars, symbols, "1m", FUNDING, start_ns=START, end_ns=START + 2 * DAY_NS)
    return [(type(e).__name__, {k: v for k, v in msgspec.structs.asdict(e).items() if k != "id"}) for e in feed]


def test_feeds_over_held_files_parse_each_once_and_yield_the_same_events() -> None:
    # Arrange
    held = RecentPreparedFiles()
    parsed = two_day_events(["BTCUSDT", "ETHUSDT"])

    # Act
    with use_prepared_data(held):
        first = two_day_events(["BTCUSDT", "ETHUSDT"])
        second = two_day_events(["ETHUSDT"])

    # Assert
    assert first == parsed
    assert second == [e for e in parsed if e[1]["symbol"] == "ETHUSDT"]
    assert (held.files_parsed, held.files_reused) == (3, 2)  # two bar files and the funding file; then two again


def test_a_held_file_written_again_is_parsed_again(tmp_path: Path) -> None:
    # Arrange
    bars = tmp_path / "bars"
    bars.mkdir()
    copy = bars / "BTCUSDT_1m.csv.gz"
    copy.write_bytes((BARS / "BTCUSDT_1m.csv.gz").read_bytes())
    held = RecentPreparedFiles()
    with use_prepared_data(held):
        before = two_day_events(["BTCUSDT"], bars)

    # Act
    copy.write_bytes((BARS / "ETHUSDT_1m.csv.gz").read_bytes())  # another symbol's prices under the same name
    with use_prepared_data(held):
        after = two_day_events(["BTCUSDT"], bars)

    # Assert
    assert held.files_parsed == 3
    closes = [[e["close"] for kind, e in events if kind == "BarClosed"] for events in (before, after)]
    assert closes[0] != closes[1]


def test_the_least_recently_used_file_goes_first_past_the_byte_limit() -> None:
    # Arrange: room for about one month of one symbol's bars
    held = RecentPreparedFiles(max_bytes=3 * 2**20)
    with use_prepared_data(held):
        two_day_events(["BTCUSDT"])
        two_day_events(["ETHUSDT"])

        # Act
        two_day_events(["ETHUSDT"])
        two_day_events(["BTCUSDT"])

    # Assert: ETHUSDT and the small funding file were held; BTCUSDT was dropped for ETHUSDT and parsed again
    assert (held.files_parsed, held.files_reused) == (4, 4)


def test_held_arrays_are_read_only() -> None:
    # Arrange
    held = RecentPreparedFiles()
    with use_prepared_data(held):
        feed = RecordedBarFeed(BARS, ["BTCUSDT"], "1m", FUNDING, start_ns=START, end_ns=START + DAY_NS)

    # Act
    prepared = held.prepared(BARS / "BTCUSDT_1m.csv.gz", "bars:BTCUSDT:1m:1m", lambda: pytest.fail("parsed again"))

    # Assert
    assert len(list(feed)) > 0
    with pytest.raises(ValueError, match="read-only"):
        prepared.arrays["close"][0] = 0.0


def test_a_missing_symbol_file_is_a_clear_error_naming_the_symbols_the_folder_has() -> None:
    # Act
    with pytest.raises(MalformedDataError) as caught:
        RecordedBarFeed(BARS, ["BTCUSDT", "DOGEUSDT"], "1m")

    # Assert
    message = str(caught.value)
    assert "DOGEUSDT_1m.csv.gz" in message
    assert "AVAXUSDT, BCHUSDT, BNBUSDT, BTCUSDT" in message and "data.symbols" in message


def test_a_folder_without_files_of_the_interval_says_which_intervals_it_has() -> None:
    # Act
    with pytest.raises(MalformedDataError) as caught:
        RecordedBarFeed(BARS, ["BTCUSDT"], "1h")

    # Assert
    assert "no 1h bar files" in str(caught.value) and "1m" in str(caught.value)


def test_a_range_without_bars_is_a_clear_error() -> None:
    # Act / Assert
    with pytest.raises(MalformedDataError, match="the files there cover 2025-05-04 15:33 to 2025-06-03 15:32"):
        RecordedBarFeed(BARS, ["BTCUSDT"], "1m", start_ns=0, end_ns=MINUTE_NS)


JAN_2025 = 1735689600 * 1_000_000_000  # 2025-01-01T00:00:00Z, before the bundled bars
JAN_2030 = 1893456000 * 1_000_000_000  # 2030-01-01T00:00:00Z, after them
MAR_2030 = 1898553600 * 1_000_000_000  # 2030-03-01T00:00:00Z


@pytest.mark.parametrize(
    ("start_ns", "end_ns", "months"),
    [
        (JAN_2030, MAR_2030, "--start 2030-01 --end 2030-02 --to data/binance-2030-01"),
        (JAN_2030, None, "--start 2030-01 --end 2030-01 --to data/binance-2030-01"),
        (None, JAN_2025, "--start 2024-12 --end 2024-12 --to data/binance-2024-12"),
    ],
    ids=["both bounds", "open end", "open start"],
)
def test_a_range_without_bars_says_which_months_to_download(
    start_ns: int | None, end_ns: int | None, months: str
) -> None:
    # Act
    with pytest.raises(DataNotCoveredError) as raised:
        RecordedBarFeed(BARS, ["BTCUSDT"], "1m", start_ns=start_ns, end_ns=end_ns)

    # Assert: the months run from the start's to the last one before the (exclusive) end, never backwards
    assert raised.value.command == f"keel data download --symbols BTCUSDT --interval 1m {months}"


def test_files_without_bars_ask_for_the_months(tmp_path: Path) -> None:
    # Arrange: a bar file with its header only
    with gzip.open(BARS / "BTCUSDT_1m.csv.gz", "rt") as recorded:
        header = recorded.readline()
    with gzip.open(tmp_path / "BTCUSDT_1m.csv.gz", "wt") as empty:
        empty.write(header)

    # Act
    with pytest.raises(DataNotCoveredError) as raised:
        RecordedBarFeed(tmp_path, ["BTCUSDT"], "1m")

    # Assert
    assert "--start YYYY-MM --end YYYY-MM" in raised.value.command


# --- recorded order-book sessions ----------------------------------------------------------------

SESSION = DATA / "orderbook/binance_usdm_BTCUSDT_2024-08-08"
TRADES = DATA / "trades/binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"
ETH_SESSION = DATA / "orderbook/binance_usdm_ETHUSDT_2024-08-08"
ETH_TRADES = DATA / "trades/binance_usdm_ETHUSDT_2024-08-08_trades.csv.gz"
SESSION_2023 = DATA / "orderbook/binance_usdm_BTCUSDT_2023-04-04"
MARK_2023 = DATA / "funding/binance_usdm_BTCUSDT_2023-04-04_markprice_1s.csv.gz"


@pytest.fixture(scope="module")
def session_events() -> tuple[RecordedSessionFeed, list[MarketDataEvent]]:
    feed = RecordedSessionFeed(SESSION, TRADES)
    return feed, list(feed)


def test_a_session_replays_every_kind_in_exchange_time_order(session_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    feed, events = session_events

    # Act
    kinds = Counter(type(event) for event in events)

    # Assert
    assert [e.ts_event for e in events] == sorted(e.ts_event for e in events)
    assert kinds[TradeTick] == 21_313
    assert kinds[BookTickerUpdated] == 66_089
    assert kinds[BookUpdated] == feed.statistics.diffs_applied == 6_551 - 4
    assert feed.statistics.diffs_dropped == 4 and feed.statistics.gaps == 0 and feed.statistics.crossed == 0


def test_book_events_are_uncrossed_sorted_and_follow_the_update_ids(session_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    _, events = session_events

    # Act
    books = [e for e in events if isinstance(e, BookUpdated)]

    # Assert
    update_ids = [b.update_id for b in books]
    assert update_ids == sorted(update_ids) and len(set(update_ids)) == len(update_ids)
    for book in books:
        bid_prices = [p for p, _ in book.bids]
        ask_prices = [p for p, _ in book.asks]
        assert bid_prices == sorted(bid_prices, reverse=True) and ask_prices == sorted(ask_prices)
        assert bid_prices[0] < ask_prices[0]
        assert len(book.bids) == len(book.asks) == 20


def test_book_events_agree_with_the_book_ticker_of_the_same_update_id(session_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    _, events = session_events
    tickers = {e.update_id: e for e in events if isinstance(e, BookTickerUpdated)}

    # Act
    pairs = [(b, tickers[b.update_id]) for b in events if isinstance(b, BookUpdated) and b.update_id in tickers]

    # Assert
    assert len(pairs) == 629
    for book, ticker in pairs:
        assert book.bids[0] == (ticker.bid_price, ticker.bid_quantity)
        assert book.asks[0] == (ticker.ask_price, ticker.ask_quantity)


def test_trades_carry_the_aggressor_from_is_buyer_maker() -> None:
    # Arrange
    frame = load_trades(TRADES).frame
    feed = RecordedSessionFeed(SESSION, TRADES)

    # Act
    trades = [e for e in feed if isinstance(e, TradeTick)]

    # Assert
    assert [t.trade_id for t in trades] == [str(i) for i in frame["trade_id"]]
    sells = [t.aggressor_side is OrderSide.SELL for t in trades]
    assert sells == frame["is_buyer_maker"].tolist()
    assert [t.price for t in trades[:3]] == frame["price"].tolist()[:3]


def test_two_replays_are_identical(session_events) -> None:  # type: ignore[no-untyped-def]
    # Arrange
    feed, first = session_events

    # Act
    second = list(feed)

    # Assert
    strip = [msgspec.structs.replace(e, id=0) for e in first]
    assert strip == [msgspec.structs.replace(e, id=0) for e in second]


def test_mark_prices_replay_with_their_funding_rate() -> None:
    # Arrange
    frame = pd.read_csv(MARK_2023, dtype=str)
    feed = RecordedSessionFeed(SESSION_2023, mark_price_file=MARK_2023)

    # Act
    events = list(feed)
    marks = [e for e in events if isinstance(e, MarkPriceUpdated)]

    # Assert
    assert len(marks) == len(frame) == 514
    assert [m.mark_price for m in marks] == [Decimal(text) for text in frame["mark_price"]]
    assert [m.funding_rate for m in marks] == [Decimal(text) for text in frame["funding_rate"]]
    assert [m.index_price for m in marks] == [Decimal(text) for text in frame["index_price"]]
    assert marks[0].next_funding_time == int(frame["next_funding_time_ms"].iloc[0]) * 1_000_000
    assert [e.ts_event for e in events] == sorted(e.ts_event for e in events)
    assert feed.statistics.gaps == 0 and feed.statistics.book_events == 16_110


def test_a_damaged_diff_event_is_skipped_and_the_book_stops_until_a_snapshot(copy_with_edit, set_field) -> None:  # type: ignore[no-untyped-def]
    # Arrange: the quantity of line 5001 of the diff file becomes NaN
    folder = SESSION.name
    damaged = copy_with_edit(
        SESSION / "depth_diff.csv.gz", lambda lines: [*lines[:5000], set_field(lines[5000], 8, "NaN"), *lines[5001:]]
    )
    for name in ("snapshot.csv.gz", "bbo.csv.gz"):
        copy_with_edit(SESSION / name, lambda lines: lines)
    assert damaged.parent.name == folder
    clean = RecordedSessionFeed(SESSION)
    clean_books = [e for e in clean if isinstance(e, BookUpdated)]

    # Act
    feed = RecordedSessionFeed(damaged.parent)
    books = [e for e in feed if isinstance(e, BookUpdated)]

    # Assert
    statistics = feed.statistics
    assert statistics.malformed_diff_events == 1 and statistics.gaps == 1
    assert 0 < len(books) < len(clean_books)
    assert [(b.update_id, b.bids, b.asks) for b in books] == [
        (b.update_id, b.bids, b.asks) for b in clean_books[: len(books)]
    ]
    assert feed.reports[1].bad_rows[0].line == 5001


def test_feeds_of_several_symbols_and_kinds_merge_by_exchange_time() -> None:
    # Arrange
    btc = RecordedSessionFeed(SESSION, TRADES)
    eth = RecordedSessionFeed(ETH_SESSION, ETH_TRADES)

    # Act
    merged = list(MergedFeed([btc, eth]))

    # Assert
    assert len(merged) == len(list(btc)) + len(list(eth))
    keys = [e.ts_event for e in merged]
    assert keys == sorted(keys)
    assert {e.symbol for e in merged} == {"BTCUSDT", "ETHUSDT"}
    same_time = [e.symbol for e in merged if e.ts_event == merged[500].ts_event]
    assert same_time == sorted(same_time)


def test_paced_replay_waits_for_each_event_time() -> None:
    # Arrange
    feed = RecordedBarFeed(BARS, ["BTCUSDT"], "1m", None, start_ns=START, end_ns=START + 30 * MINUTE_NS)
    clock = LiveClock(origin_ns=START, speed=60 * 600)  # thirty minutes of bars in about 0.05 s

    async def replay() -> list[tuple[int, int]]:
        return [(event.ts_event, clock.timestamp_ns()) async for event in paced(feed, clock)]

    # Act
    seen = asyncio.run(replay())

    # Assert
    assert len(seen) == 30
    assert all(now >= due for due, now in seen)


def test_a_session_folder_with_another_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MalformedDataError, match="must be named"):
        RecordedSessionFeed(tmp_path)
