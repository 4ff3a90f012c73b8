"""Binance's public data archive: download or import files, write them in keel's format.

Binance publishes USDⓈ-M history as zipped CSV files under one layout::

    data/futures/um/monthly/klines/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{YYYY-MM}.zip
    data/futures/um/daily/klines/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{YYYY-MM-DD}.zip
    data/futures/um/monthly/fundingRate/{SYMBOL}/{SYMBOL}-fundingRate-{YYYY-MM}.zip
    data/futures/um/monthly/markPriceKlines/{SYMBOL}/1h/{SYMBOL}-1h-{YYYY-MM}.zip
    data/futures/um/monthly/aggTrades/{SYMBOL}/{SYMBOL}-aggTrades-{YYYY-MM}.zip

each with a ``.CHECKSUM`` file beside it (``<sha256>  <file name>``). Months
before the current one come as monthly files, the current month as daily files
up to yesterday. :class:`BinanceArchive` downloads them (verifying every
checksum, skipping files already verified, resuming partial downloads), and
:func:`convert_archive` turns a folder of such zips into keel's data format
(``data/SOURCES.md``):

- ``ohlcv/{SYMBOL}_{interval}.csv.gz``: ``open_time_ms,open,high,low,close,volume``;
- ``funding/funding.csv.gz``: ``symbol,time_ms,funding_rate,mark_price``, the
  mark price being the open of the mark-price kline (1h by default) that
  starts at the funding hour (empty where there is none);
- ``trades/{SYMBOL}_agg_trades.csv.gz``: ``time_ms,price,qty,is_buyer_maker,agg_trade_id``;

and a ``data.yaml`` config layer that ``keel backtest --config`` runs as it is.
Files are read with and without their header row (Binance added headers in
2022); values are copied, never changed, except times in microseconds, which
are written in milliseconds like every other keel file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml

from keel.core.errors import MalformedDataError

DEFAULT_BASE_URL = "https://data.binance.vision"
KINDS = ("klines", "funding", "mark_price", "agg_trades")
INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
MARK_PRICE_INTERVAL = "1h"
_PREFIX = "data/futures/um"
_MICROSECONDS_FROM = 10**14  # an epoch time above this is in microseconds (ms reach it in year 5138)
_CHUNK = 1 << 16

Progress = Callable[[int, int], None]


class ArchiveError(Exception):
    """A file of the archive could not be used; the message names it and what to do."""


@dataclass(frozen=True)
class ArchiveFile:
    """One zip of the archive: its path under the base URL and what it holds."""

    kind: str
    symbol: str
    path: str

    @property
    def name(self) -> str:
        """Return the zip's file name."""
        return self.path.rsplit("/", 1)[-1]


@dataclass
class ArchiveResult:
    """What a download or import did.

    Attributes
    ----------
    downloaded, reused
        Files fetched now, and files already present with a verified checksum.
    missing
        Files the archive does not have (HTTP 404): their period is a gap in the data.
    failed
        Files refused, with the reason (a bad checksum, a server error); never used.
    written
        keel data files written.
    config
        The ``data.yaml`` config layer, when one was written.
    """

    downloaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    config: Path | None = None


def parse_month(text: str) -> date:
    """Return the first day of the month written ``YYYY-MM`` (or a ``YYYY-MM-DD`` date's month)."""
    try:
        parsed = datetime.strptime(text[:7], "%Y-%m")
    except ValueError as error:
        raise ValueError(f"{text!r} is not a month: write it as YYYY-MM, e.g. 2024-03") from error
    return parsed.date().replace(day=1)


def archive_files(
    symbols: Sequence[str],
    interval: str,
    start: date,
    end: date,
    kinds: Sequence[str],
    today: date,
    mark_interval: str = MARK_PRICE_INTERVAL,
) -> list[ArchiveFile]:
    """List the archive files that cover ``start`` to ``end`` (months, inclusive).

    Parameters
    ----------
    symbols
        Binance symbols, e.g. ``("BTCUSDT",)``.
    interval
        Kline interval, one of :data:`INTERVALS`.
    start, end
        First and last month (any day of them).
    kinds
        Any of :data:`KINDS`.
    today
        The current UTC date: the current month comes as daily files up to
        yesterday, later months are not listed.
    mark_interval
        Interval of the mark-price klines; a funding settlement takes the open
        of the one starting at its hour (none starts there: no mark price).

    Returns
    -------
    list of ArchiveFile
    """
    if interval not in INTERVALS:
        raise ValueError(f"interval {interval!r} is not a Binance kline interval; use one of {', '.join(INTERVALS)}")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown data kinds {', '.join(unknown)}; use any of {', '.join(KINDS)}")
    if end < start:
        raise ValueError(f"end month {end:%Y-%m} is before start month {start:%Y-%m}")
    files: list[ArchiveFile] = []
    for symbol in symbols:
        for kind in kinds:
            for period, daily in _periods(start, end, today, kind):
                size = mark_interval if kind == "mark_price" else interval
                files.append(ArchiveFile(kind, symbol, _path(kind, symbol, size, period, daily)))
    return files


def _periods(start: date, end: date, today: date, kind: str) -> Iterator[tuple[str, bool]]:
    month = start.replace(day=1)
    current = today.replace(day=1)
    while month <= end.replace(day=1) and month <= current:
        if month < current:
            yield f"{month:%Y-%m}", False
        elif kind != "funding":  # the archive has no daily funding files
            day = month
            while day < today:
                yield f"{day:%Y-%m-%d}", True
                day += timedelta(days=1)
        month = (month + timedelta(days=32)).replace(day=1)


def _path(kind: str, symbol: str, interval: str, period: str, daily: bool) -> str:
    frequency = "daily" if daily else "monthly"
    if kind == "klines":
        return f"{_PREFIX}/{frequency}/klines/{symbol}/{interval}/{symbol}-{interval}-{period}.zip"
    if kind == "mark_price":
        return f"{_PREFIX}/{frequency}/markPriceKlines/{symbol}/{interval}/{symbol}-{interval}-{period}.zip"
    if kind == "funding":
        return f"{_PREFIX}/{frequency}/fundingRate/{symbol}/{symbol}-fundingRate-{period}.zip"
    return f"{_PREFIX}/{frequency}/aggTrades/{symbol}/{symbol}-aggTrades-{period}.zip"


class BinanceArchive:
    """Download files of Binance's public archive into a local mirror of its layout.

    Parameters
    ----------
    base_url
        The archive's address (a mirror, or a local server in tests).
    timeout
        Seconds to wait for each HTTP response.
    """

    def __init__(self, base_url: str = DEFAULT_BASE_URL, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def download(
        self,
        files: Iterable[ArchiveFile],
        mirror: Path,
        result: ArchiveResult,
        progress: Progress | None = None,
    ) -> list[Path]:
        """Fetch each file into ``mirror`` (same relative path), verified by its checksum.

        A file already there whose checksum matches is reused; a ``.part`` left
        by an interrupted download is resumed. Returns the verified zips; the
        others are recorded in ``result.missing`` or ``result.failed``.
        """
        files = list(files)
        verified: list[Path] = []
        for done, item in enumerate(files, start=1):
            target = mirror / item.path
            try:
                if self._fetch(item, target, result):
                    verified.append(target)
            except ArchiveError as error:
                result.failed.append((item.path, str(error)))
            if progress is not None:
                progress(done, len(files))
        return verified

    def _fetch(self, item: ArchiveFile, target: Path, result: ArchiveResult) -> bool:
        expected = self._checksum(item)
        if expected is None:
            result.missing.append(item.path)
            return False
        if target.exists() and _sha256(target) == expected:
            result.reused.append(item.path)
            return True
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        if not self._get_to(item.path, part):
            result.missing.append(item.path)
            return False
        actual = _sha256(part)
        if actual != expected:
            part.unlink()
            raise ArchiveError(
                f"checksum mismatch: sha256 {actual} but {item.name}.CHECKSUM says {expected}; "
                "the file was deleted, run the command again to download it anew"
            )
        part.replace(target)
        result.downloaded.append(item.path)
        return True

    def _checksum(self, item: ArchiveFile) -> str | None:
        body = self._get(item.path + ".CHECKSUM")
        if body is None:
            return None
        text = body.decode("ascii", errors="replace").strip()
        digest = text.split()[0].lower() if text else ""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ArchiveError(f"{item.name}.CHECKSUM is not a sha256 line: {text[:80]!r}")
        return digest

    def _get(self, path: str) -> bytes | None:
        try:
            with self._open(path, {}) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise ArchiveError(f"{self.base_url}/{path}: HTTP {error.code} {error.reason}") from error

    def _get_to(self, path: str, part: Path) -> bool:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self._open(path, headers) as response:
                append = offset > 0 and response.status == 206
                with part.open("ab" if append else "wb") as stream:
                    while chunk := response.read(_CHUNK):
                        stream.write(chunk)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            if error.code == 416:  # the part is already whole; its checksum decides
                return True
            raise ArchiveError(f"{self.base_url}/{path}: HTTP {error.code} {error.reason}") from error
        return True

    def _open(self, path: str, headers: dict[str, str]):  # type: ignore[no-untyped-def]
        request = urllib.request.Request(f"{self.base_url}/{path}", headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise ArchiveError(
                f"{self.base_url}/{path}: cannot connect ({error}); check the network or --base-url, then run again "
                "(files already verified are kept)"
            ) from error


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- converting


def classify(path: Path) -> tuple[str, str, str | None]:
    """Tell what an archive zip or CSV holds from its name: (kind, symbol, interval).

    Raises
    ------
    ArchiveError
        When the name is not one of the archive's.
    """
    stem = path.name.removesuffix(".zip").removesuffix(".csv")
    parts = stem.split("-")
    parent = path.parent
    if len(parts) >= 3 and parts[1] == "fundingRate":
        return "funding", parts[0], None
    if len(parts) >= 3 and parts[1] == "aggTrades":
        return "agg_trades", parts[0], None
    if len(parts) >= 3 and parts[1] in INTERVALS:
        kind = "mark_price" if parent.parent.name == "markPriceKlines" or "markPrice" in str(parent) else "klines"
        return kind, parts[0], parts[1]
    raise ArchiveError(
        f"{path}: not a Binance archive file name (expected e.g. BTCUSDT-5m-2024-03.zip, "
        "BTCUSDT-fundingRate-2024-03.zip or BTCUSDT-aggTrades-2024-03.zip)"
    )


def _rows(path: Path) -> Iterator[list[str]]:
    """Yield the CSV rows of a zip (its one CSV member) or a plain CSV, header row left out."""
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                members = [name for name in archive.namelist() if name.endswith(".csv")]
                if len(members) != 1:
                    raise ArchiveError(f"{path}: expected one CSV inside, found {len(members)}")
                text = archive.read(members[0]).decode("utf-8")
        except zipfile.BadZipFile as error:
            raise ArchiveError(f"{path}: not a readable zip ({error})") from error
    else:
        text = path.read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text))
    for number, row in enumerate(reader, start=1):
        if not row:
            continue
        if number == 1 and not _is_number(row[0]):
            continue
        yield row


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _milliseconds(text: str) -> int | None:
    """Return a time in milliseconds (microseconds are scaled down), None when it is not an integer."""
    try:
        value = int(text)
    except ValueError:
        return None
    return value // 1000 if value >= _MICROSECONDS_FROM else value


def _klines(paths: Iterable[Path]) -> list[tuple[object, ...]]:
    """Return the bars in time order (the last row of a time wins), then the malformed rows as they were.

    A row without six fields or with a time that is not an integer is kept,
    not dropped: the loader counts it and skips it, ``keel data inspect`` lists it.

    Raises
    ------
    ArchiveError
        When no row of a file is a kline: the file is in another layout.
    """
    bars: dict[int, tuple[object, ...]] = {}
    malformed: list[tuple[object, ...]] = []
    for path in paths:
        good, first_bad = 0, len(malformed)
        for row in _rows(path):
            time = _milliseconds(row[0]) if len(row) >= 6 else None
            if time is None:
                malformed.append(tuple(row[:6]))
                continue
            bars[time] = (time, row[1], row[2], row[3], row[4], row[5])
            good += 1
        if not good and len(malformed) > first_bad:
            raise ArchiveError(
                f"{path}: no row is a kline in Binance's archive layout (open time in milliseconds, open, high, "
                f"low, close, volume, ...); the first reads {','.join(map(str, malformed[first_bad]))!r}"
            )
    return [bars[time] for time in sorted(bars)] + malformed


def _funding(paths: Iterable[Path]) -> tuple[list[tuple[int, str]], list[tuple[str, str]]]:
    """Return the settled rates in time order and the malformed rows' (time, rate) as they were."""
    rates: dict[int, str] = {}
    malformed: list[tuple[str, str]] = []
    for path in paths:
        for row in _rows(path):
            time = _milliseconds(row[0]) if len(row) >= 3 else None
            if time is None:
                malformed.append((row[0], row[2] if len(row) >= 3 else ""))
                continue
            rates[time] = row[2]
    return sorted(rates.items()), malformed


def _agg_trades(paths: Iterable[Path]) -> list[tuple[object, ...]]:
    """Return the trades in id order, then the malformed rows (keel's columns, as they were)."""
    trades: dict[int, tuple[object, ...]] = {}
    malformed: list[tuple[object, ...]] = []
    for path in paths:
        for row in _rows(path):
            trade_id = _milliseconds(row[0]) if len(row) >= 7 else None
            time = _milliseconds(row[5]) if trade_id is not None else None
            if trade_id is None or time is None:
                malformed.append(tuple(row[5:6] + row[1:3] + row[6:7] + row[:1]))
                continue
            maker = "True" if row[6].strip().lower() == "true" else "False"
            trades[int(row[0])] = (time, row[1], row[2], maker, row[0])
    return [trades[trade_id] for trade_id in sorted(trades)] + malformed


def write_gzip_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a gzip CSV in keel's data format atomically (a ``.part`` file renamed); return ``path``.

    The gzip header's mtime is 0, so equal rows give equal bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with (
        part.open("wb") as raw,
        gzip.GzipFile(filename=path.name.removesuffix(".gz"), fileobj=raw, mode="wb", mtime=0) as zipped,
    ):
        text = io.TextIOWrapper(zipped, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        text.flush()
        text.detach()
    part.replace(path)
    return path


def convert_archive(sources: Iterable[Path], destination: Path, result: ArchiveResult) -> dict[str, object]:
    """Write keel data files from archive zips/CSVs and return the ``data`` config section they make.

    Parameters
    ----------
    sources
        Archive files (``.zip`` or the ``.csv`` inside one), named as the archive names them.
    destination
        Folder receiving ``ohlcv/``, ``funding/`` and ``trades/``.
    result
        Receives the written files.

    Returns
    -------
    dict
        The ``data`` section of a config layer (root, bars, bar_interval,
        funding, symbols); empty when there were no klines.
    """
    groups: dict[tuple[str, str, str | None], list[Path]] = {}
    for path in sorted(sources):
        groups.setdefault(classify(path), []).append(path)
    intervals = sorted({interval for (kind, _, interval) in groups if kind == "klines" and interval})
    if len(intervals) > 1:
        raise ArchiveError(f"klines of several intervals ({', '.join(intervals)}): import one interval at a time")
    section: dict[str, object] = {}
    symbols = sorted({symbol for (kind, symbol, _) in groups if kind == "klines"})
    for (kind, symbol, interval), paths in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1])):
        if kind == "klines":
            header: tuple[str, ...] = ("open_time_ms", "open", "high", "low", "close", "volume")
            target = destination / "ohlcv" / f"{symbol}_{interval}.csv.gz"
            result.written.append(write_gzip_csv(target, header, _klines(paths)))
        elif kind == "agg_trades":
            header = ("time_ms", "price", "qty", "is_buyer_maker", "agg_trade_id")
            target = destination / "trades" / f"{symbol}_agg_trades.csv.gz"
            result.written.append(write_gzip_csv(target, header, _agg_trades(paths)))
    funding_symbols = sorted({symbol for (kind, symbol, _) in groups if kind == "funding"})
    if funding_symbols:
        rows: list[tuple[object, ...]] = []
        for symbol in funding_symbols:
            mark_files = [
                path
                for (kind, name, _), paths in groups.items()
                if kind == "mark_price" and name == symbol
                for path in paths
            ]
            marks = {bar[0]: bar[1] for bar in _klines(mark_files)}
            settled, malformed = _funding(groups[("funding", symbol, None)])
            for time, rate in settled:
                rows.append((symbol, time, rate, marks.get(time - time % 3_600_000, "")))
            rows.extend((symbol, time, rate, "") for time, rate in malformed)
        target = destination / "funding" / "funding.csv.gz"
        result.written.append(write_gzip_csv(target, ("symbol", "time_ms", "funding_rate", "mark_price"), rows))
    if symbols:
        section = {
            "root": ".",
            "bars": "ohlcv",
            "bar_interval": intervals[0],
            "symbols": symbols,
            # Without this key the default's bundled funding file would be looked for under this folder.
            "funding": "funding/funding.csv.gz" if funding_symbols else "none",
        }
    return section


def write_data_config(destination: Path, section: dict[str, object], result: ArchiveResult) -> Path:
    """Write ``destination/data.yaml``: the config layer ``keel backtest --config`` takes as it is."""
    path = destination / "data.yaml"
    lines = "# Written by keel data download/import: the data these files hold (root: this folder).\n"
    path.write_text(lines + yaml.safe_dump({"data": section}, sort_keys=False), encoding="utf-8")
    result.config = path
    return path


def mirror_files(mirror: Path) -> list[Path]:
    """Return every archive zip under a mirror folder."""
    return sorted(path for path in mirror.rglob("*.zip") if path.is_file())


def check_sources(paths: Sequence[Path]) -> list[Path]:
    """Expand folders into their archive zips/CSVs; refuse a path that is neither."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".zip", ".csv") and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise MalformedDataError(f"{path.resolve()}: no such file or folder")
    return found


def today_utc() -> date:
    """Return the current UTC date."""
    return datetime.now(UTC).date()
