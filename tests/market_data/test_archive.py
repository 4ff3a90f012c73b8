"""Binance's public data archive: download, verify, resume and convert, against a local copy of it."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from archive_server import BARS_1M, FUNDING, PREFIX, real_archive, serve

from keel.market_data import archive as archive_module
from keel.market_data.archive import (
    ArchiveError,
    ArchiveResult,
    BinanceArchive,
    archive_files,
    convert_archive,
    mirror_files,
    write_data_config,
)
from keel.market_data.loaders import load_funding, load_ohlcv, load_trades

MAY, JUNE = date(2025, 5, 1), date(2025, 6, 1)
LATER = date(2025, 7, 15)


def _download(base_url: str, destination: Path, today: date = LATER, kinds=("klines", "funding", "mark_price")):
    files = archive_files(["BTCUSDT"], "1m", MAY, JUNE, kinds, today, mark_interval="8h")
    result = ArchiveResult()
    zips = BinanceArchive(base_url).download(files, destination / "archive", result)
    return zips, result


def test_archive_files_follow_the_archive_layout_monthly_then_daily_for_the_current_month() -> None:
    # Act
    files = archive_files(["BTCUSDT"], "5m", MAY, JUNE, ["klines", "funding"], today=date(2025, 6, 3))

    # Assert
    paths = [item.path for item in files]
    assert paths == [
        f"{PREFIX}/monthly/klines/BTCUSDT/5m/BTCUSDT-5m-2025-05.zip",
        f"{PREFIX}/daily/klines/BTCUSDT/5m/BTCUSDT-5m-2025-06-01.zip",
        f"{PREFIX}/daily/klines/BTCUSDT/5m/BTCUSDT-5m-2025-06-02.zip",
        f"{PREFIX}/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2025-05.zip",
    ]


@pytest.mark.parametrize(
    ("interval", "kinds", "problem"),
    [("7m", ["klines"], "not a Binance kline interval"), ("1m", ["candles"], "unknown data kinds")],
)
def test_archive_files_refuses_what_the_archive_does_not_have(interval: str, kinds: list[str], problem: str) -> None:
    # Act / Assert
    with pytest.raises(ValueError, match=problem):
        archive_files(["BTCUSDT"], interval, MAY, JUNE, kinds, LATER)


def test_download_verifies_every_checksum_and_converts_to_the_bundled_values(tmp_path: Path) -> None:
    # Arrange
    served = real_archive(with_header_months=("2025-05",))  # June has no header row, as older files

    # Act
    with serve(served) as url:
        zips, result = _download(url, tmp_path)
    section = convert_archive(zips, tmp_path, result)

    # Assert
    assert result.failed == [] and result.missing == [] and len(result.downloaded) == 6
    bars = load_ohlcv(tmp_path / "ohlcv" / "BTCUSDT_1m.csv.gz")
    bundled = load_ohlcv(BARS_1M)
    pd.testing.assert_frame_equal(bars.frame, bundled.frame)
    assert bars.report.bad_rows == () and bars.report.gaps == bundled.report.gaps
    funding = load_funding(tmp_path / "funding" / "funding.csv.gz").frame
    recorded = load_funding(FUNDING).frame
    recorded = recorded[(recorded["symbol"] == "BTCUSDT") & (recorded["time_ms"] >= 1746057600000)]
    recorded = recorded[recorded["time_ms"] < 1751328000000].reset_index(drop=True)
    pd.testing.assert_frame_equal(funding, recorded)
    assert section == {
        "root": ".",
        "bars": "ohlcv",
        "bar_interval": "1m",
        "symbols": ["BTCUSDT"],
        "funding": "funding/funding.csv.gz",
    }


def test_a_bad_checksum_refuses_the_file_and_a_missing_month_is_reported(tmp_path: Path) -> None:
    # Arrange
    served = real_archive()
    june = f"{PREFIX}/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-06.zip"
    served.add(june, "BTCUSDT-1m-2025-06.csv", "corrupted in transit\n", checksum="0" * 64)
    del served.files[f"{PREFIX}/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2025-06.zip.CHECKSUM"]

    # Act
    with serve(served) as url:
        zips, result = _download(url, tmp_path)

    # Assert
    assert [path for path, _ in result.failed] == [june]
    assert "checksum mismatch" in result.failed[0][1]
    assert result.missing == [f"{PREFIX}/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2025-06.zip"]
    assert all(path.name != "BTCUSDT-1m-2025-06.zip" for path in zips)
    assert not (tmp_path / "archive" / june).exists()


def test_a_second_download_reuses_verified_files_and_resumes_a_partial_one(tmp_path: Path) -> None:
    # Arrange
    served = real_archive()
    may = f"{PREFIX}/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-05.zip"
    with serve(served) as url:
        _download(url, tmp_path)
        whole = (tmp_path / "archive" / may).read_bytes()
        (tmp_path / "archive" / may).unlink()
        (tmp_path / "archive" / (may + ".part")).write_bytes(whole[: len(whole) // 2])
        served.requests.clear()

        # Act
        _, result = _download(url, tmp_path)

    # Assert
    assert result.downloaded == [may] and len(result.reused) == 5
    assert (tmp_path / "archive" / may).read_bytes() == whole
    ranged = [header for path, header in served.requests if path == may]
    assert ranged == [f"bytes={len(whole) // 2}-"]
    assert hashlib.sha256(whole).hexdigest() in served.files[may + ".CHECKSUM"].decode()


def test_the_current_month_comes_from_daily_files(tmp_path: Path) -> None:
    # Arrange
    served = real_archive(daily_from="2025-06")

    # Act
    with serve(served) as url:
        zips, result = _download(url, tmp_path, today=date(2025, 6, 3), kinds=("klines",))
    convert_archive(zips, tmp_path, result)

    # Assert
    assert result.missing == [] and len(result.downloaded) == 3  # May, June 1st and 2nd
    bars = load_ohlcv(tmp_path / "ohlcv" / "BTCUSDT_1m.csv.gz").frame
    bundled = load_ohlcv(BARS_1M).frame
    assert bars["open_time_ms"].iloc[-1] == bundled["open_time_ms"][bundled["open_time_ms"] < 1748908800000].iloc[-1]


def test_data_config_layer_is_written_and_loadable(tmp_path: Path) -> None:
    # Arrange
    from keel.config import load_config

    result = ArchiveResult()
    section = {"root": ".", "bars": "ohlcv", "bar_interval": "5m", "symbols": ["BTCUSDT"]}

    # Act
    path = write_data_config(tmp_path, section, result)
    config = load_config("backtest", str(path))

    # Assert: the data root is the folder of data.yaml, wherever keel runs from
    assert result.config == path
    assert config.data.bar_interval == "5m" and config.data.symbols == ("BTCUSDT",)
    assert config.data.root == tmp_path.resolve()


def test_a_klines_only_import_writes_a_layer_that_backtests_as_written(tmp_path: Path) -> None:
    # Arrange: a day of real BTCUSDT minutes in the archive's layout, and no funding file
    recorded = load_ohlcv(BARS_1M).frame.head(1440)
    lines = [
        f"{t},{o},{h},{lo},{c},{v},{t + 59_999},0,0,0,0,0" for t, o, h, lo, c, v in recorded.itertuples(index=False)
    ]
    klines = tmp_path / "BTCUSDT-1m-2025-05.csv"
    klines.write_text("\n".join(lines) + "\n")
    result = ArchiveResult()
    section = convert_archive([klines], tmp_path / "out", result)
    path = write_data_config(tmp_path / "out", section, result)

    # Act: the command `keel data import` prints
    from keel.backtest import BacktestEngine
    from keel.config import load_config

    config = load_config("backtest", str(path), overrides={"strategy": {"warmup_bars": 0}})
    metrics = BacktestEngine(config).run().metrics

    # Assert: candles without funding records, not the bundled funding file looked for under the import
    assert config.data.funding is None
    assert metrics["funding_data"] == "none" and metrics["bars_processed"] == 1440


def test_convert_refuses_files_not_named_as_the_archive_names_them(tmp_path: Path) -> None:
    # Arrange
    stray = tmp_path / "prices.zip"
    stray.write_bytes(b"")

    # Act / Assert
    with pytest.raises(ArchiveError, match="not a Binance archive file name"):
        convert_archive([stray], tmp_path, ArchiveResult())


def test_mirror_files_lists_the_zips_of_a_download(tmp_path: Path) -> None:
    # Arrange
    with serve(real_archive()) as url:
        zips, _ = _download(url, tmp_path, kinds=("klines",))

    # Act / Assert
    assert mirror_files(tmp_path / "archive") == sorted(zips)
    assert archive_module.KINDS == ("klines", "funding", "mark_price", "agg_trades")


def test_convert_keeps_rows_whose_time_is_unreadable_for_the_loaders_to_count_and_skip(tmp_path: Path) -> None:
    # Arrange: real minutes in the archive's layout; one time garbled, one row cut short; a funding time garbled
    recorded = load_ohlcv(BARS_1M).frame.head(10)
    lines = [
        f"{t},{o},{h},{lo},{c},{v},{t + 59_999},0,0,0,0,0" for t, o, h, lo, c, v in recorded.itertuples(index=False)
    ]
    lines[3] = "garbage" + lines[3][lines[3].index(",") :]
    lines[6] = lines[6].split(",", 2)[0] + ",95000.0"
    klines = tmp_path / "BTCUSDT-1m-2025-05.csv"
    klines.write_text("\n".join(lines) + "\n")
    funding = tmp_path / "BTCUSDT-fundingRate-2025-05.csv"
    funding.write_text("calc_time,funding_interval_hours,last_funding_rate\n1746403200000,8,0.0001\nsoon,8,0.0002\n")

    # Act
    section = convert_archive([klines, funding], tmp_path / "out", ArchiveResult())

    # Assert: nothing aborted, every good row kept, the two bad ones counted by the loader
    bars = load_ohlcv(tmp_path / "out" / "ohlcv" / "BTCUSDT_1m.csv.gz")
    assert section["symbols"] == ["BTCUSDT"]
    assert len(bars.frame) == 8 and len(bars.report.bad_rows) == 2
    rates = load_funding(tmp_path / "out" / "funding" / "funding.csv.gz")
    assert len(rates.frame) == 1 and len(rates.report.bad_rows) == 1


def test_convert_keeps_an_aggregate_trade_whose_id_is_unreadable_for_the_loader_to_skip(tmp_path: Path) -> None:
    # Arrange: three aggregate trades in the archive's layout, the second with a garbled id
    source = tmp_path / "BTCUSDT-aggTrades-2024-08.csv"
    source.write_text(
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
        "1,56000.1,0.010,1,1,1723075200000,true\n"
        "x2,56000.2,0.020,2,2,1723075200100,false\n"
        "3,56000.0,0.030,3,4,1723075200200,true\n"
    )

    # Act
    convert_archive([source], tmp_path / "out", ArchiveResult())

    # Assert
    trades = load_trades(tmp_path / "out" / "trades" / "BTCUSDT_agg_trades.csv.gz")
    assert len(trades.frame) == 2 and len(trades.report.bad_rows) == 1


def test_convert_refuses_a_csv_of_another_layout_naming_the_one_it_needs(tmp_path: Path) -> None:
    # Arrange: a user's own export, times as dates
    source = tmp_path / "BTCUSDT-5m-2025-05.csv"
    source.write_text(
        "timestamp,open,high,low,close,volume\n2025-05-04 15:30:00+00:00,95505.4,95505.5,95478.0,95478.1,44.8\n"
    )

    # Act / Assert
    with pytest.raises(ArchiveError, match="no row is a kline in Binance's archive layout"):
        convert_archive([source], tmp_path / "out", ArchiveResult())
