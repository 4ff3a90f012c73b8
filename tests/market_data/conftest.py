"""Fixtures for the market-data tests: the bundled real files and edited copies."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.core.messages import BookUpdated, MarketDataEvent, TradeTick
from keel.market_data import BadRow, Gap
from keel.market_data.feeds import RecordedSessionFeed

EditLines = Callable[[list[str]], list[str]]
CopyWithEdit = Callable[[Path, EditLines], Path]


@dataclass(frozen=True)
class CorruptedBars:
    """A corrupted copy of a real 1m bar file and what a loader must report."""

    path: Path
    bad_rows: tuple[BadRow, ...]
    gaps: tuple[Gap, ...]
    rows_read: int


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data bundled with the repository."""
    return Path(__file__).resolve().parents[2] / "data"


@pytest.fixture
def copy_with_edit(tmp_path: Path) -> CopyWithEdit:
    """Return a function that writes an edited copy of a gzip CSV file.

    The copy keeps the file name (loaders read the symbol and interval from
    it) under a folder named like the source's. ``edit`` gets the text lines,
    header first (index ``i`` is CSV line ``i + 1``), and returns new lines.
    """

    def write(source: Path, edit: EditLines) -> Path:
        with gzip.open(source, "rt", newline="") as stream:
            lines = stream.read().splitlines()
        target = tmp_path / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(target, "wt", newline="", compresslevel=1) as stream:
            stream.write("".join(f"{line}\n" for line in edit(lines)))
        return target

    return write


def with_field(line: str, index: int, value: str) -> str:
    """Return a CSV line with field ``index`` replaced by ``value``."""
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


@pytest.fixture
def set_field() -> Callable[[str, int, str], str]:
    """Return :func:`with_field`, for tests (conftest is not importable)."""
    return with_field


@pytest.fixture
def corrupted_bars(data_dir: Path, copy_with_edit: CopyWithEdit) -> CorruptedBars:
    """BTCUSDT 1m bars with six bad rows and a 90-bar hole.

    Line 11 has a NaN close, line 21 a negative volume, line 31 high < low,
    line 41 a zero open; line 52 repeats line 51 and line 62 is an old row
    (line 6) replayed; the 90 rows after line 1001 of the original are removed.
    Dropping the four bad bars leaves a one-bar gap at each of them; the two
    extra rows leave none.
    """
    source = data_dir / "ohlcv" / "binance_usdm_1m_2025-05" / "BTCUSDT_1m.csv.gz"
    original: list[str] = []

    def corrupt(lines: list[str]) -> list[str]:
        original.extend(lines)
        edited = list(lines)
        edited[10] = with_field(edited[10], 4, "NaN")
        edited[20] = with_field(edited[20], 5, "-5.0")
        low = float(edited[30].split(",")[3])
        edited[30] = with_field(edited[30], 2, str(low - 1.0))
        edited[40] = with_field(edited[40], 1, "0")
        del edited[1001:1091]
        edited.insert(51, edited[50])
        edited.insert(61, edited[5])
        return edited

    path = copy_with_edit(source, corrupt)

    def time_ms(line_number: int) -> int:
        return int(original[line_number - 1].split(",")[0])

    file = str(path)
    return CorruptedBars(
        path=path,
        bad_rows=(
            BadRow(file, 11, "close: missing"),
            BadRow(file, 21, "volume: negative (-5.0)"),
            BadRow(file, 31, "high: below low"),
            BadRow(file, 41, "open: not positive (0.0)"),
            BadRow(
                file,
                52,
                f"open_time_ms: duplicate of the last kept row ({time_ms(51)})",
            ),
            BadRow(
                file,
                62,
                f"open_time_ms: out of order (last kept row has {time_ms(60)})",
            ),
        ),
        gaps=(
            *(Gap("BTCUSDT", time_ms(line - 1), time_ms(line + 1), 1) for line in (11, 21, 31, 41)),
            Gap("BTCUSDT", time_ms(1001), time_ms(1092), 90),
        ),
        rows_read=43199 - 90 + 2,
    )


@pytest.fixture(scope="session")
def btc_session_events(data_dir: Path) -> list[MarketDataEvent]:
    """Every event of the real BTCUSDT 2024-08-08 session replay (books, book tickers, trades)."""
    session = data_dir / "orderbook/binance_usdm_BTCUSDT_2024-08-08"
    trades = data_dir / "trades/binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"
    return list(RecordedSessionFeed(session, trades))


@pytest.fixture(scope="session")
def btc_books(btc_session_events: list[MarketDataEvent]) -> list[BookUpdated]:
    """The session's published books."""
    return [event for event in btc_session_events if isinstance(event, BookUpdated)]


@pytest.fixture(scope="session")
def btc_trades(btc_session_events: list[MarketDataEvent]) -> list[TradeTick]:
    """The session's trades."""
    return [event for event in btc_session_events if isinstance(event, TradeTick)]
