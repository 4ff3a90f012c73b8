"""A local copy of Binance's public data archive on 127.0.0.1, built from the bundled real data.

The files follow the archive's layout and formats (zipped CSV, ``.CHECKSUM``
beside each zip); their values are the bundled recordings: 1m BTCUSDT klines
of May and June 2025, their funding rates and 8h mark-price klines. The server
answers ``Range`` requests as the archive's does, and records every path asked.
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
BARS_1M = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05" / "BTCUSDT_1m.csv.gz"
FUNDING = ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz"
MARK_8H = ROOT / "data" / "funding" / "binance_usdm_markprice_8h_2025-03_06.csv.gz"
PREFIX = "data/futures/um"
KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
)


@dataclass
class Archive:
    """Files served by path, and the requests seen."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def add(self, path: str, member: str, text: str, checksum: str | None = None) -> None:
        """Serve a zip holding ``member`` with ``text`` at ``path``, and its ``.CHECKSUM``."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(zipfile.ZipInfo(member, date_time=(2025, 7, 1, 0, 0, 0)), text)
        body = buffer.getvalue()
        self.files[path] = body
        digest = checksum or hashlib.sha256(body).hexdigest()
        self.files[path + ".CHECKSUM"] = f"{digest}  {path.rsplit('/', 1)[-1]}\n".encode()


def _month(ms: pd.Series) -> pd.Series:
    return pd.to_datetime(ms, unit="ms", utc=True).dt.strftime("%Y-%m")


def _kline_rows(frame: pd.DataFrame, interval_ms: int) -> list[list[str]]:
    # Fields the bundled files do not keep (quote volume, counts) are left empty, never made up.
    return [
        [str(row.open_time_ms), row.open, row.high, row.low, row.close, row.volume, *_empty_fields(row, interval_ms)]
        for row in frame.itertuples(index=False)
    ]


def _empty_fields(row: object, interval_ms: int) -> list[str]:
    return [str(row.open_time_ms + interval_ms - 1), "", "", "", "", "0"]  # type: ignore[attr-defined]


def _csv(rows: list[list[str]], header: str | None) -> str:
    out = io.StringIO()
    if header:
        out.write(header + "\n")
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def real_archive(daily_from: str | None = None, with_header_months: tuple[str, ...] = ("2025-05",)) -> Archive:
    """Build the archive of BTCUSDT's bundled May-June 2025 data.

    Parameters
    ----------
    daily_from
        A month (``YYYY-MM``) served as daily kline/mark files instead of a monthly one.
    with_header_months
        Months whose CSVs carry Binance's header row (the others have none, as before 2022).
    """
    archive = Archive()
    bars = pd.read_csv(BARS_1M, dtype=str)
    bars["open_time_ms"] = bars["open_time_ms"].astype("int64")
    for month, frame in bars.groupby(_month(bars["open_time_ms"])):
        header = KLINE_HEADER if month in with_header_months else None
        if month == daily_from:
            days = pd.to_datetime(frame["open_time_ms"], unit="ms", utc=True).dt.strftime("%Y-%m-%d")
            for day, rows in frame.groupby(days):
                name = f"BTCUSDT-1m-{day}"
                path = f"{PREFIX}/daily/klines/BTCUSDT/1m/{name}.zip"
                archive.add(path, f"{name}.csv", _csv(_kline_rows(rows, 60_000), header))
            continue
        name = f"BTCUSDT-1m-{month}"
        archive.add(
            f"{PREFIX}/monthly/klines/BTCUSDT/1m/{name}.zip", f"{name}.csv", _csv(_kline_rows(frame, 60_000), header)
        )
    funding = pd.read_csv(FUNDING, dtype=str)
    funding = funding[funding["symbol"] == "BTCUSDT"]
    funding_ms = funding["time_ms"].astype("int64")
    for month in ("2025-05", "2025-06"):
        rows = funding[_month(funding_ms) == month]
        lines = [[row.time_ms, "8", row.funding_rate] for row in rows.itertuples(index=False)]
        name = f"BTCUSDT-fundingRate-{month}"
        text = _csv(lines, "calc_time,funding_interval_hours,last_funding_rate")
        archive.add(f"{PREFIX}/monthly/fundingRate/BTCUSDT/{name}.zip", f"{name}.csv", text)
    marks = pd.read_csv(MARK_8H, dtype=str)
    marks = marks[marks["symbol"] == "BTCUSDT"]
    marks_ms = marks["open_time_ms"].astype("int64")
    for month in ("2025-05", "2025-06"):
        rows = marks[_month(marks_ms) == month].drop(columns="symbol").assign(volume="0")
        rows["open_time_ms"] = rows["open_time_ms"].astype("int64")
        name = f"BTCUSDT-8h-{month}"
        text = _csv(_kline_rows(rows, 8 * 3_600_000), KLINE_HEADER)
        archive.add(f"{PREFIX}/monthly/markPriceKlines/BTCUSDT/8h/{name}.zip", f"{name}.csv", text)
    return archive


def _handler(archive: Archive) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.lstrip("/")
            ranged = self.headers.get("Range")
            archive.requests.append((path, ranged))
            body = archive.files.get(path)
            if body is None:
                self.send_error(404)
                return
            if ranged and ranged.startswith("bytes="):
                start = int(ranged.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                body = body[start:]
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@contextmanager
def serve(archive: Archive) -> Iterator[str]:
    """Serve ``archive`` on a free port of 127.0.0.1; yield its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(archive))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def utc_ms(text: str) -> int:
    """Return the epoch ms of a UTC ``YYYY-MM-DD`` date."""
    return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
