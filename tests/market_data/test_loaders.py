"""Tests of keel.market_data.loaders on the real bundled files and corrupted copies."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel.core.errors import MalformedDataError
from keel.market_data import (
    BadRow,
    Gap,
    detect_kind,
    find_gaps,
    load_any,
    load_book_snapshot,
    load_book_ticker,
    load_depth_diffs,
    load_funding,
    load_mark_price_klines,
    load_mark_price_stream,
    load_ohlcv,
    load_trades,
)

ONE_MINUTE_MS = 60_000
EIGHT_HOURS_MS = 8 * 3_600_000
ONE_MINUTE_ROWS = {
    "AVAXUSDT": 43199,
    "BCHUSDT": 43199,
    "BNBUSDT": 43199,
    "BTCUSDT": 43199,
    "ETHUSDT": 60191,
    "LINKUSDT": 43200,
    "LTCUSDT": 43199,
    "SOLUSDT": 43200,
    "SUIUSDT": 43199,
    "XRPUSDT": 43199,
}
ONE_HOUR_SYMBOLS = ("ADA", "BCH", "BNB", "BTC", "ETH", "LINK", "LTC", "SOL", "XRP")
ORDER_BOOK = "orderbook/binance_usdm_BTCUSDT_2024-08-08"
TRADES = "trades/binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"
FUNDING = "funding/binance_usdm_funding_2025-03_06.csv.gz"
MARK_PRICE_KLINES = "funding/binance_usdm_markprice_8h_2025-03_06.csv.gz"
MARK_PRICE_STREAM = "funding/binance_usdm_BTCUSDT_2023-04-04_markprice_1s.csv.gz"

ONE_MINUTE = "ohlcv/binance_usdm_1m_2025-05"
ONE_HOUR = "ohlcv/binance_usdm_1h_2025-03"

# data/SOURCES.md, "Per-file inventory": file, kind, rows, first and last (UTC).
# fmt: off
INVENTORY = [
    (MARK_PRICE_STREAM, "mark_price_stream", 514, "2023-04-04 23:58:21", "2023-04-05 00:06:54"),
    (FUNDING, "funding", 3407, "2025-03-06 16:00:00", "2025-06-15 00:00:00"),
    (MARK_PRICE_KLINES, "mark_price_klines", 3169, "2025-03-06 16:00:00", "2025-06-15 00:00:00"),
    *[
        (f"{ONE_HOUR}/{symbol}USDT_1h.csv.gz", "ohlcv", 719, "2025-03-06 11:00:00", "2025-04-05 09:00:00")
        for symbol in ONE_HOUR_SYMBOLS
    ],
    (f"{ONE_MINUTE}/AVAXUSDT_1m.csv.gz", "ohlcv", 43199, "2025-05-04 15:37:00", "2025-06-03 15:35:00"),
    (f"{ONE_MINUTE}/BCHUSDT_1m.csv.gz", "ohlcv", 43199, "2025-05-04 15:34:00", "2025-06-03 15:32:00"),
    (f"{ONE_MINUTE}/BNBUSDT_1m.csv.gz", "ohlcv", 43199, "2025-05-04 15:34:00", "2025-06-03 15:32:00"),
    (f"{ONE_MINUTE}/BTCUSDT_1m.csv.gz", "ohlcv", 43199, "2025-05-04 15:33:00", "2025-06-03 15:31:00"),
    (f"{ONE_MINUTE}/ETHUSDT_1m.csv.gz", "ohlcv", 60191, "2025-05-04 15:33:00", "2025-06-15 10:43:00"),
    (f"{ONE_MINUTE}/LINKUSDT_1m.csv.gz", "ohlcv", 43200, "2025-05-04 15:34:00", "2025-06-03 15:33:00"),
    (f"{ONE_MINUTE}/LTCUSDT_1m.csv.gz", "ohlcv", 43199, "2025-05-04 15:35:00", "2025-06-03 15:33:00"),
    (f"{ONE_MINUTE}/SOLUSDT_1m.csv.gz", "ohlcv", 43200, "2025-05-04 15:33:00", "2025-06-03 15:32:00"),
    (f"{ONE_MINUTE}/SUIUSDT_1m.csv.gz", "ohlcv", 43199, "2025-05-04 15:35:00", "2025-06-03 15:33:00"),
    (f"{ONE_MINUTE}/XRPUSDT_1m.csv.gz", "ohlcv", 43199, "2025-05-04 15:36:00", "2025-06-03 15:34:00"),
    (f"{ORDER_BOOK}/bbo.csv.gz", "book_ticker", 66089, "2024-08-08 23:54:16", "2024-08-09 00:00:00"),
    (f"{ORDER_BOOK}/depth_diff.csv.gz", "depth_diff", 443521, "2024-08-08 23:54:16", "2024-08-09 00:00:01"),
    (f"{ORDER_BOOK}/snapshot.csv.gz", "book_snapshot", 2000, "2024-08-08 23:54:16", "2024-08-08 23:54:16"),
    (TRADES, "trades", 21313, "2024-08-08 23:54:16", "2024-08-08 23:59:59"),
]
# fmt: on


def utc_seconds(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())


# ---------------------------------------------------------------- real files


@pytest.mark.parametrize(("relative", "kind", "rows", "first", "last"), INVENTORY)
def test_every_bundled_file_loads_whole_as_the_inventory_says(
    data_dir: Path, relative: str, kind: str, rows: int, first: str, last: str
) -> None:
    path = data_dir / relative

    detected = detect_kind(path)
    report = load_any(path).report

    assert detected == kind
    assert report.kind == kind
    assert (report.rows_read, report.rows_kept) == (rows, rows)
    assert report.bad_rows == ()
    assert report.first_ms is not None and report.last_ms is not None
    assert (report.first_ms // 1000, report.last_ms // 1000) == (
        utc_seconds(first),
        utc_seconds(last),
    )


@pytest.mark.parametrize(("symbol", "rows"), ONE_MINUTE_ROWS.items())
def test_one_minute_files_have_no_gaps(data_dir: Path, symbol: str, rows: int) -> None:
    path = data_dir / ONE_MINUTE / f"{symbol}_1m.csv.gz"

    frame, report = load_ohlcv(path)

    assert report.gaps == ()
    assert report.symbols == (symbol,)
    assert len(frame) == rows
    assert (np.diff(frame["open_time_ms"].to_numpy()) == ONE_MINUTE_MS).all()


def test_ohlcv_frame_has_the_documented_columns_and_types(data_dir: Path) -> None:
    path = data_dir / ONE_HOUR / "BTCUSDT_1h.csv.gz"

    frame = load_ohlcv(path).frame

    assert frame.dtypes.astype(str).to_dict() == {
        "open_time_ms": "int64",
        "open": "float64",
        "high": "float64",
        "low": "float64",
        "close": "float64",
        "volume": "float64",
    }
    assert frame.iloc[0].tolist() == [
        1741258800000,
        91250.0,
        91563.0,
        90953.1,
        91319.2,
        5659.315,
    ]


def test_ohlcv_symbol_argument_overrides_the_file_name(data_dir: Path) -> None:
    path = data_dir / ONE_HOUR / "BTCUSDT_1h.csv.gz"

    report = load_ohlcv(path, symbol="BTCUSDT-PERP").report

    assert report.symbols == ("BTCUSDT-PERP",)


def test_funding_keeps_and_counts_enausdt_empty_mark_prices(data_dir: Path) -> None:
    frame, report = load_funding(data_dir / FUNDING)

    empty = frame[frame["mark_price"].isna()]
    assert report.empty_optional_fields == (("mark_price", 238),)
    assert set(empty["symbol"]) == {"ENAUSDT"}
    assert (frame["symbol"] == "ENAUSDT").sum() == 474
    assert frame["funding_rate"].notna().all()
    assert len(report.symbols) == 12


def test_mark_price_klines_have_no_gaps_at_eight_hours(data_dir: Path) -> None:
    frame, report = load_mark_price_klines(data_dir / MARK_PRICE_KLINES)

    steps = frame.groupby("symbol")["open_time_ms"].diff().dropna()
    assert report.gaps == ()
    assert (steps == EIGHT_HOURS_MS).all()


def test_trades_frame_keeps_ids_and_aggressor_side(data_dir: Path) -> None:
    frame, report = load_trades(data_dir / TRADES)

    assert report.symbols == ("BTCUSDT",)
    assert frame["trade_id"].dtype == np.int64
    assert frame["is_buyer_maker"].dtype == bool
    assert frame["trade_id"].is_monotonic_increasing
    assert set(frame["trade_type"]) == {"MARKET"}


def test_order_book_files_keep_update_ids_exact(data_dir: Path) -> None:
    snapshot = load_book_snapshot(data_dir / ORDER_BOOK / "snapshot.csv.gz").frame
    diffs = load_depth_diffs(data_dir / ORDER_BOOK / "depth_diff.csv.gz").frame
    ticker = load_book_ticker(data_dir / ORDER_BOOK / "bbo.csv.gz").frame

    assert snapshot["last_update_id"].unique().tolist() == [5123107852948]
    assert snapshot["side"].value_counts().to_dict() == {"b": 1000, "a": 1000}
    assert diffs.iloc[0][["first_update_id", "last_update_id", "prev_last_update_id"]].tolist() == [
        5123107832006,
        5123107837557,
        5123107831937,
    ]
    assert diffs.drop_duplicates(["first_update_id", "last_update_id"]).shape[0] == 6551
    assert ticker["update_id"].iloc[0] == 5123107839020


def test_mark_price_stream_symbol_comes_from_the_file_name(data_dir: Path) -> None:
    frame, report = load_mark_price_stream(data_dir / MARK_PRICE_STREAM)

    assert report.symbols == ("BTCUSDT",)
    assert frame["next_funding_time_ms"].dtype == np.int64


# ---------------------------------------------------------------- corrupted bars


def test_corrupted_bars_report_each_bad_row_with_its_line_and_reason(
    corrupted_bars,
) -> None:
    report = load_ohlcv(corrupted_bars.path).report

    assert report.bad_rows == corrupted_bars.bad_rows
    assert report.rows_read == corrupted_bars.rows_read
    assert report.rows_kept == corrupted_bars.rows_read - len(corrupted_bars.bad_rows)


def test_corrupted_bars_keep_none_of_the_bad_values(corrupted_bars) -> None:
    frame = load_ohlcv(corrupted_bars.path).frame

    assert frame.notna().all().all()
    assert (frame["volume"] >= 0).all()
    assert (frame["high"] >= frame["low"]).all()
    assert (frame[["open", "high", "low", "close"]] > 0).all().all()
    assert (np.diff(frame["open_time_ms"].to_numpy()) > 0).all()


def test_corrupted_bars_report_the_removed_block_and_dropped_bars_as_gaps(
    corrupted_bars,
) -> None:
    report = load_ohlcv(corrupted_bars.path).report

    assert report.gaps == corrupted_bars.gaps
    assert report.gaps[-1].missing_bars == 90


def test_blank_line_is_reported_at_its_own_line(data_dir: Path, copy_with_edit) -> None:
    source = data_dir / ONE_HOUR / "ETHUSDT_1h.csv.gz"
    path = copy_with_edit(source, lambda lines: [*lines[:5], "", *lines[5:]])

    report = load_ohlcv(path).report

    assert report.bad_rows == (BadRow(str(path), 6, "open_time_ms: missing"),)
    assert report.rows_kept == 719


# ---------------------------------------------------------------- corrupted other formats


def test_unparseable_value_drops_only_its_row_and_keeps_the_rest_exact(
    data_dir: Path, copy_with_edit, set_field
) -> None:
    source = data_dir / TRADES
    path = copy_with_edit(source, lambda lines: [*lines[:4], set_field(lines[4], 1, "abc"), *lines[5:]])

    frame, report = load_trades(path)

    original = load_trades(source).frame
    assert report.bad_rows == (BadRow(str(path), 5, "price: unparseable 'abc'"),)
    pd.testing.assert_frame_equal(frame, original.drop(index=3).reset_index(drop=True))


def test_trades_use_the_trade_id_for_order(data_dir: Path, copy_with_edit, set_field) -> None:
    def corrupt(lines: list[str]) -> list[str]:
        edited = [*lines[:3], lines[2], *lines[3:]]
        edited[10] = set_field(edited[10], 2, "-0.001")
        edited[20] = set_field(edited[20], 3, "maybe")
        return edited

    path = copy_with_edit(data_dir / TRADES, corrupt)

    frame, report = load_trades(path)

    lines = [(row.line, row.reason) for row in report.bad_rows]
    assert lines == [
        (4, "trade_id: duplicate of the last kept row (5266583936)"),
        (11, "qty: negative (-0.001)"),
        (21, "is_buyer_maker: unparseable 'maybe'"),
    ]
    assert len(frame) == 21313 - 2
    assert frame["trade_id"].is_unique


def test_short_trades_variant_uses_its_id_column(data_dir: Path, copy_with_edit) -> None:
    def short(lines: list[str]) -> list[str]:
        rows = [",".join(line.split(",")[:5]) for line in lines]
        return [rows[0].replace("trade_id", "agg_trade_id"), *rows[1:]]

    path = copy_with_edit(data_dir / TRADES, short)

    frame, report = load_any(path)

    assert report.kind == "trades"
    assert list(frame.columns) == [
        "time_ms",
        "price",
        "qty",
        "is_buyer_maker",
        "agg_trade_id",
    ]
    assert frame["agg_trade_id"].is_monotonic_increasing
    assert report.rows_kept == 21313


def test_funding_checks_order_per_symbol_and_requires_the_rate(data_dir: Path, copy_with_edit, set_field) -> None:
    def corrupt(lines: list[str]) -> list[str]:
        edited = [*lines[:3], lines[2], *lines[3:]]
        edited[5] = set_field(edited[5], 2, "")
        return edited

    path = copy_with_edit(data_dir / FUNDING, corrupt)

    frame, report = load_funding(path)

    assert [(row.line, row.reason) for row in report.bad_rows] == [
        (4, "time_ms: duplicate of the last kept row (1741305600000)"),
        (6, "funding_rate: missing"),
    ]
    assert report.rows_kept == 3407 - 1
    assert report.empty_optional_fields == (("mark_price", 238),)
    assert frame["funding_rate"].notna().all()


def test_mark_price_klines_report_gaps_per_symbol(data_dir: Path, copy_with_edit, set_field) -> None:
    source = data_dir / MARK_PRICE_KLINES
    original = load_mark_price_klines(source).frame

    def corrupt(lines: list[str]) -> list[str]:
        edited = [*lines[:11], *lines[12:]]
        low = float(edited[20].split(",")[4])
        edited[20] = set_field(edited[20], 3, str(low / 2))
        return edited

    path = copy_with_edit(source, corrupt)

    report = load_mark_price_klines(path).report

    times = original["open_time_ms"]
    assert report.bad_rows == (BadRow(str(path), 21, "high: below low"),)
    assert report.gaps == (
        Gap("BTCUSDT", int(times[9]), int(times[11]), 1),
        Gap("BTCUSDT", int(times[19]), int(times[21]), 1),
    )


def test_mark_price_stream_drops_a_repeated_event(data_dir: Path, copy_with_edit) -> None:
    source = data_dir / MARK_PRICE_STREAM
    repeated = load_mark_price_stream(source).frame["event_time_ms"][6]
    path = copy_with_edit(source, lambda lines: [*lines[:8], lines[7], *lines[8:]])

    report = load_mark_price_stream(path).report

    assert report.bad_rows == (BadRow(str(path), 9, f"event_time_ms: duplicate of the last kept row ({repeated})"),)
    assert report.rows_kept == 514


def test_depth_diffs_keep_shared_update_ids_and_drop_a_decrease(data_dir: Path, copy_with_edit, set_field) -> None:
    def corrupt(lines: list[str]) -> list[str]:
        edited = [*lines[:3001], lines[1]]
        edited[9] = set_field(edited[9], 6, "x")
        return edited

    path = copy_with_edit(data_dir / ORDER_BOOK / "depth_diff.csv.gz", corrupt)

    frame, report = load_depth_diffs(path)

    last_kept = frame["last_update_id"].iloc[-1]
    assert [(row.line, row.reason) for row in report.bad_rows] == [
        (10, "side: not b or a ('x')"),
        (3002, f"last_update_id: out of order (last kept row has {last_kept})"),
    ]
    assert report.rows_kept == 3000 - 1


def test_book_ticker_drops_a_repeated_update(data_dir: Path, copy_with_edit, set_field) -> None:
    source = data_dir / ORDER_BOOK / "bbo.csv.gz"
    repeated = load_book_ticker(source).frame["update_id"][99]

    def corrupt(lines: list[str]) -> list[str]:
        edited = [*lines[:101], lines[100], *lines[101:1001]]
        edited[50] = set_field(edited[50], 4, "-61800.20")
        return edited

    path = copy_with_edit(source, corrupt)

    report = load_book_ticker(path).report

    assert [(row.line, row.reason) for row in report.bad_rows] == [
        (51, "bid_price: not positive (-61800.2)"),
        (102, f"update_id: duplicate of the last kept row ({repeated})"),
    ]
    assert report.rows_kept == 1000 - 1


def test_book_snapshot_has_no_order_check_but_checks_values(data_dir: Path, copy_with_edit, set_field) -> None:
    def corrupt(lines: list[str]) -> list[str]:
        edited = [lines[0], *reversed(lines[1:])]
        edited[3] = set_field(edited[3], 6, "-1.0")
        return edited

    path = copy_with_edit(data_dir / ORDER_BOOK / "snapshot.csv.gz", corrupt)

    report = load_book_snapshot(path).report

    assert report.bad_rows == (BadRow(str(path), 4, "qty: negative (-1.0)"),)
    assert report.rows_kept == 1999


# ---------------------------------------------------------------- unreadable files


def test_unknown_header_raises_naming_the_file(data_dir: Path, copy_with_edit) -> None:
    source = data_dir / ONE_HOUR / "BTCUSDT_1h.csv.gz"
    path = copy_with_edit(source, lambda lines: ["time,o,h,l,c,v", *lines[1:]])

    with pytest.raises(MalformedDataError, match="unknown header") as raised:
        detect_kind(path)

    assert str(path) in str(raised.value)


def test_non_gzip_file_raises_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT_1m.csv.gz"
    path.write_text("open_time_ms,open,high,low,close,volume\n1,2,3,1,2,5\n")

    with pytest.raises(MalformedDataError, match="not a readable gzip file") as raised:
        load_ohlcv(path)

    assert str(path) in str(raised.value)


def test_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT_1m.csv.gz"

    with pytest.raises(MalformedDataError, match="file not found"):
        load_any(path)


def test_empty_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT_1m.csv.gz"
    with gzip.open(path, "wt") as stream:
        stream.write("")

    with pytest.raises(MalformedDataError, match="empty file"):
        load_ohlcv(path)


def test_loader_given_another_format_raises(data_dir: Path) -> None:
    path = data_dir / ONE_HOUR / "BTCUSDT_1h.csv.gz"

    with pytest.raises(MalformedDataError, match="is not the funding header"):
        load_funding(path)


def test_row_with_extra_fields_raises(data_dir: Path, copy_with_edit) -> None:
    source = data_dir / ONE_HOUR / "BTCUSDT_1h.csv.gz"
    path = copy_with_edit(source, lambda lines: [*lines[:3], lines[3] + ",1,2", *lines[4:]])

    with pytest.raises(MalformedDataError, match="cannot read the CSV rows"):
        load_ohlcv(path)


def test_ohlcv_file_name_without_interval_raises(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "bars.csv.gz"
    path.write_bytes((data_dir / ONE_HOUR / "BTCUSDT_1h.csv.gz").read_bytes())

    with pytest.raises(MalformedDataError, match="bar interval"):
        load_ohlcv(path, symbol="BTCUSDT")


# ---------------------------------------------------------------- find_gaps


def test_find_gaps_counts_the_missing_slots() -> None:
    times = np.array([0, 60_000, 240_000, 300_000, 390_000])

    gaps = find_gaps(times, ONE_MINUTE_MS, "BTCUSDT")

    assert gaps == (
        Gap("BTCUSDT", 60_000, 240_000, 2),
        Gap("BTCUSDT", 300_000, 390_000, 1),
    )


def test_find_gaps_on_a_regular_series_is_empty() -> None:
    times = np.arange(0, 10 * ONE_MINUTE_MS, ONE_MINUTE_MS)

    assert find_gaps(times, ONE_MINUTE_MS, "BTCUSDT") == ()
