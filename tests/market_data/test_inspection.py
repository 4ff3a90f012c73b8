"""Tests of keel.market_data.inspection on the real bundled files."""

from __future__ import annotations

from pathlib import Path

from keel.market_data import inspect_paths, load_ohlcv, render_report


def test_folder_stands_for_every_gzip_csv_below_it_sorted(data_dir: Path) -> None:
    folder = data_dir / "ohlcv"

    reports = inspect_paths([folder])

    paths = [report.path for report in reports]
    assert paths == sorted(str(path) for path in folder.rglob("*.csv.gz"))
    assert len(reports) == 19
    assert {report.kind for report in reports} == {"ohlcv"}


def test_paths_keep_the_order_given(data_dir: Path) -> None:
    trades = data_dir / "trades" / "binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"
    book = data_dir / "orderbook" / "binance_usdm_BTCUSDT_2024-08-08"

    reports = inspect_paths([trades, book])

    assert [report.kind for report in reports] == [
        "trades",
        "book_ticker",
        "depth_diff",
        "book_snapshot",
    ]


def test_render_report_of_a_clean_file(data_dir: Path) -> None:
    path = data_dir / "ohlcv" / "binance_usdm_1m_2025-05" / "BTCUSDT_1m.csv.gz"
    report = inspect_paths([path])[0]

    text = render_report(report)

    assert text == "\n".join(
        [
            str(path),
            "  kind: ohlcv",
            "  rows: 43199 read, 43199 kept",
            "  span: 2025-05-04T15:33:00.000Z .. 2025-06-03T15:31:00.000Z",
            "  symbols: BTCUSDT",
            "  gaps: 0",
            "  bad rows: 0",
        ]
    )


def test_render_report_shows_milliseconds_and_empty_optional_fields(
    data_dir: Path,
) -> None:
    report = inspect_paths([data_dir / "funding" / "binance_usdm_funding_2025-03_06.csv.gz"])[0]

    lines = render_report(report).splitlines()

    assert "  kind: funding" in lines
    assert "  empty optional fields: mark_price 238" in lines
    assert lines[3].startswith("  span: 2025-03-06T16:00:00.")
    assert lines[4].startswith("  symbols: ADAUSDT, AVAXUSDT, BCHUSDT,")


def test_render_report_lists_the_first_gaps_and_bad_rows(corrupted_bars) -> None:
    report = load_ohlcv(corrupted_bars.path).report

    lines = render_report(report, max_listed=2).splitlines()

    file = str(corrupted_bars.path)
    start = lines.index("  gaps: 5")
    assert lines[start + 1] == "    BTCUSDT 2025-05-04T15:41:00.000Z .. 2025-05-04T15:43:00.000Z: 1 missing bar"
    assert lines[start + 3] == "    ... and 3 more"
    assert lines[start + 4 :] == [
        "  bad rows: 6",
        f"    {file}:11: close: missing",
        f"    {file}:21: volume: negative (-5.0)",
        "    ... and 4 more",
    ]
