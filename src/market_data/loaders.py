"""Load the recorded market-data files (gzip CSV) into validated frames.

One loader per file format of ``data/SOURCES.md``:

- :func:`load_ohlcv`: ``ohlcv`` bars, ``open_time_ms,open,high,low,close,volume``;
- :func:`load_funding`: ``funding``, ``symbol,time_ms,funding_rate,mark_price``;
- :func:`load_mark_price_klines`: ``mark_price_klines`` (8h),
  ``symbol,open_time_ms,open,high,low,close``;
- :func:`load_mark_price_stream`: ``mark_price_stream`` (1s), ``event_time_ms,
  mark_price,index_price,est_settle_price,funding_rate,next_funding_time_ms``;
- :func:`load_trades`: ``trades``, ``time_ms,price,qty,is_buyer_maker`` and an
  id column, plus ``recv_time_us,trade_type`` in the websocket-derived variant;
- :func:`load_book_snapshot`: ``book_snapshot``, ``recv_time_us,event_time_ms,
  transact_time_ms,last_update_id,side,price,qty``;
- :func:`load_depth_diffs`: ``depth_diff``, ``recv_time_us,event_time_ms,
  transact_time_ms,first_update_id,last_update_id,prev_last_update_id,side,
  price,qty``;
- :func:`load_book_ticker`: ``book_ticker`` (the ``bbo`` files),
  ``recv_time_us,event_time_ms,transact_time_ms,update_id,bid_price,bid_qty,
  ask_price,ask_qty``.

:func:`detect_kind` tells the format from the header row and :func:`load_any`
dispatches on it. Every loader returns :class:`LoadedData`: the kept rows as a
frame (columns as in the file, integers as ``int64``, or the nullable
``Int64`` for fields the format allows to be empty, decimals as ``float64``)
and a :class:`LoadReport`.

Bad-row policy
--------------
Values are never fixed, filled or guessed: a row is either kept exactly as
written or dropped and reported as a :class:`BadRow` with its 1-based line
number in the CSV text (the header is line 1) and a reason that starts with the
field's name. A row is dropped when

- a required field is empty, unparseable or not finite, or an optional one is
  unparseable (empty optional fields, such as ENAUSDT's ``mark_price`` at
  04/12/20 UTC or the ``event_time_ms`` of spot snapshots, are kept and
  counted in ``LoadReport.empty_optional_fields``);
- a price is not positive, or a quantity or volume is negative;
- in a bar, ``high < low`` or ``open`` / ``close`` lies outside ``[low, high]``;
- a book ``side`` is neither ``b`` nor ``a``;
- its sequence key is equal to (duplicate) or less than (out of order) the key
  of the last kept row. The key is the timestamp for bars, funding rates and
  the mark-price stream (checked per symbol in multi-symbol files); the trade
  id for trades (several trades share a millisecond); ``update_id`` for the
  book ticker (several updates share a millisecond); and ``last_update_id``
  for depth diffs, where the rows of one event share it, so only a decrease is
  out of order. Snapshot rows are not checked for order.

Only the first problem of a row is reported. Missing bars, including those
left by dropped rows, are reported as :class:`Gap` entries and never filled:
OHLCV files at the interval in their name, mark-price klines at 8 h per
symbol. A file that cannot be read at all (missing,
not gzip, empty, an unexpected header, a row with too many fields) raises
:class:`~keel.core.errors.MalformedDataError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from pandas.errors import ParserError

from keel.core.errors import MalformedDataError

KINDS = (
    "ohlcv",
    "funding",
    "mark_price_klines",
    "mark_price_stream",
    "trades",
    "book_snapshot",
    "depth_diff",
    "book_ticker",
)

_INTERVAL_UNIT_MS = {
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}
_OHLCV_FILE_NAME = re.compile(r"(?P<symbol>[A-Z0-9]+)_(?P<count>\d+)(?P<unit>[smhdw])\.csv\.gz")
_SYMBOL_TOKEN = re.compile(r"[A-Z][A-Z0-9]{3,}")
_EIGHT_HOURS_MS = 8 * 3_600_000


@dataclass(frozen=True, slots=True)
class BadRow:
    """A dropped row.

    Parameters
    ----------
    file
        The file the row came from.
    line
        1-based line number in the CSV text; the header is line 1.
    reason
        What is wrong, starting with the field's name.
    """

    file: str
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing bars between two consecutive kept bars of one symbol.

    Parameters
    ----------
    symbol
        The symbol of the series.
    start_ms
        Open time of the last bar before the gap.
    end_ms
        Open time of the first bar after the gap.
    missing_bars
        How many bar open times lie strictly between the two bars.
    """

    symbol: str
    start_ms: int
    end_ms: int
    missing_bars: int


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What a loader read, kept and dropped from one file.

    Parameters
    ----------
    path
        The file.
    kind
        Its format, one of :data:`KINDS`.
    rows_read
        Data rows in the file (the header excluded).
    rows_kept
        Rows in the returned frame.
    bad_rows
        The dropped rows, by line.
    gaps
        Missing bars, by symbol then time (bar files only).
    symbols
        Symbols of the kept rows, from the symbol column or else the file name.
    first_ms, last_ms
        Earliest and latest time of the kept rows (``None`` if none was kept).
        Book files without exchange times (spot) fall back to the local
        receive clock.
    empty_optional_fields
        ``(field, count)`` for each optional field left empty in kept rows.
    """

    path: str
    kind: str
    rows_read: int
    rows_kept: int
    bad_rows: tuple[BadRow, ...]
    gaps: tuple[Gap, ...]
    symbols: tuple[str, ...]
    first_ms: int | None
    last_ms: int | None
    empty_optional_fields: tuple[tuple[str, int], ...] = ()


class LoadedData(NamedTuple):
    """The kept rows of a file and the report on how it was loaded."""

    frame: pd.DataFrame
    report: LoadReport


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    type: Literal["int", "float", "bool", "str"]
    required: bool = True
    sign: Literal["positive", "non_negative"] | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Format:
    kind: str
    fields: tuple[_Field, ...]
    time_field: str
    sequence_field: str | None
    strict_sequence: bool = True
    symbol_field: str | None = None
    bar_interval_ms: int | None = None
    ohlc: bool = False
    receive_time_field: str | None = None

    @property
    def header(self) -> tuple[str, ...]:
        return tuple(field.name for field in self.fields)


def _price(name: str, required: bool = True) -> _Field:
    return _Field(name, "float", required=required, sign="positive")


def _quantity(name: str) -> _Field:
    return _Field(name, "float", sign="non_negative")


_SIDE = _Field("side", "str", choices=("b", "a"))
_RECEIVE_TIME = _Field("recv_time_us", "int")
_OHLC_PRICES = tuple(_price(name) for name in ("open", "high", "low", "close"))

_OHLCV = _Format(
    kind="ohlcv",
    fields=(_Field("open_time_ms", "int"), *_OHLC_PRICES, _quantity("volume")),
    time_field="open_time_ms",
    sequence_field="open_time_ms",
    ohlc=True,
)
_FUNDING = _Format(
    kind="funding",
    fields=(
        _Field("symbol", "str"),
        _Field("time_ms", "int"),
        _Field("funding_rate", "float"),
        _price("mark_price", required=False),
    ),
    time_field="time_ms",
    sequence_field="time_ms",
    symbol_field="symbol",
)
_MARK_PRICE_KLINES = _Format(
    kind="mark_price_klines",
    fields=(_Field("symbol", "str"), _Field("open_time_ms", "int"), *_OHLC_PRICES),
    time_field="open_time_ms",
    sequence_field="open_time_ms",
    symbol_field="symbol",
    bar_interval_ms=_EIGHT_HOURS_MS,
    ohlc=True,
)
_MARK_PRICE_STREAM = _Format(
    kind="mark_price_stream",
    fields=(
        _Field("event_time_ms", "int"),
        _price("mark_price"),
        _price("index_price"),
        _price("est_settle_price"),
        _Field("funding_rate", "float"),
        _Field("next_funding_time_ms", "int"),
    ),
    time_field="event_time_ms",
    sequence_field="event_time_ms",
)
_TRADE_FIELDS = (
    _Field("time_ms", "int"),
    _price("price"),
    _quantity("qty"),
    _Field("is_buyer_maker", "bool"),
)
_WEBSOCKET_TRADE_EXTRA = (_RECEIVE_TIME, _Field("trade_type", "str", required=False))
_BOOK_SNAPSHOT = _Format(
    kind="book_snapshot",
    fields=(
        _RECEIVE_TIME,
        _Field("event_time_ms", "int", required=False),
        _Field("transact_time_ms", "int", required=False),
        _Field("last_update_id", "int"),
        _SIDE,
        _price("price"),
        _quantity("qty"),
    ),
    time_field="event_time_ms",
    sequence_field=None,
    receive_time_field="recv_time_us",
)
_DEPTH_DIFF = _Format(
    kind="depth_diff",
    fields=(
        _RECEIVE_TIME,
        _Field("event_time_ms", "int"),
        _Field("transact_time_ms", "int", required=False),
        _Field("first_update_id", "int"),
        _Field("last_update_id", "int"),
        _Field("prev_last_update_id", "int", required=False),
        _SIDE,
        _price("price"),
        _quantity("qty"),
    ),
    time_field="event_time_ms",
    sequence_field="last_update_id",
    strict_sequence=False,
)
_BOOK_TICKER = _Format(
    kind="book_ticker",
    fields=(
        _RECEIVE_TIME,
        _Field("event_time_ms", "int", required=False),
        _Field("transact_time_ms", "int", required=False),
        _Field("update_id", "int"),
        _price("bid_price"),
        _quantity("bid_qty"),
        _price("ask_price"),
        _quantity("ask_qty"),
    ),
    time_field="event_time_ms",
    sequence_field="update_id",
    receive_time_field="recv_time_us",
)
_FIXED_FORMATS = {
    fmt.header: fmt
    for fmt in (
        _OHLCV,
        _FUNDING,
        _MARK_PRICE_KLINES,
        _MARK_PRICE_STREAM,
        _BOOK_SNAPSHOT,
        _DEPTH_DIFF,
        _BOOK_TICKER,
    )
}


# ---------------------------------------------------------------- public API


class BarSpacingError(MalformedDataError):
    """A bar file's bars are spaced differently from the configured bar interval."""


def typical_spacing_ms(open_time_ms: np.ndarray) -> int | None:
    """Return the most common step between consecutive bar open times (None below two bars).

    Parameters
    ----------
    open_time_ms
        Bar open times in increasing order.
    """
    steps = np.diff(np.asarray(open_time_ms, dtype=np.int64))
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    values, counts = np.unique(steps, return_counts=True)
    return int(values[np.argmax(counts)])


def check_bar_spacing(path: str | Path, open_time_ms: np.ndarray, interval: str, interval_ms: int) -> None:
    """Raise BarSpacingError when the bars of ``path`` are not ``interval`` apart.

    Raises
    ------
    BarSpacingError
        Naming the file (absolute path), the spacing found and ``data.bar_interval``.
    """
    spacing = typical_spacing_ms(open_time_ms)
    if spacing is not None and spacing != interval_ms:
        raise BarSpacingError(
            f"{Path(path).resolve()}: bars are {_describe_ms(spacing)} apart, but data.bar_interval is {interval}"
        )


def _describe_ms(milliseconds: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms"


def find_gaps(open_time_ms: np.ndarray, interval_ms: int, symbol: str) -> tuple[Gap, ...]:
    """Find the missing bars of one symbol's bar series.

    Parameters
    ----------
    open_time_ms
        Bar open times in increasing order.
    interval_ms
        The bar interval.
    symbol
        The symbol, copied into each gap.

    Returns
    -------
    tuple of Gap
        One entry per pair of consecutive bars further apart than
        ``interval_ms``, in time order; ``missing_bars`` counts the interval
        slots strictly between them.
    """
    times = np.asarray(open_time_ms, dtype=np.int64)
    steps = np.diff(times)
    (where,) = np.nonzero(steps > interval_ms)
    missing = -(-steps[where] // interval_ms) - 1
    return tuple(
        Gap(symbol, int(times[i]), int(times[i + 1]), int(count)) for i, count in zip(where, missing, strict=True)
    )


def detect_kind(path: str | Path) -> str:
    """Tell a file's format from its header row.

    Parameters
    ----------
    path
        A gzip CSV file in one of the formats of ``data/SOURCES.md``.

    Returns
    -------
    str
        One of :data:`KINDS`.

    Raises
    ------
    MalformedDataError
        If the file cannot be read or its header matches no known format.
    """
    return _format_for(path, _read_header(path)).kind


def load_any(path: str | Path) -> LoadedData:
    """Load a file with the loader its header calls for.

    Parameters
    ----------
    path
        A gzip CSV file in one of the formats of ``data/SOURCES.md``.

    Returns
    -------
    LoadedData
        The kept rows and the load report.
    """
    return _LOADERS[detect_kind(path)](path)


def load_ohlcv(path: str | Path, symbol: str | None = None) -> LoadedData:
    """Load an OHLCV bar file named ``{SYMBOL}_{interval}.csv.gz``.

    Parameters
    ----------
    path
        The file; its name gives the bar interval (``1m``, ``1h``, ...) used
        to find gaps.
    symbol
        The symbol; taken from the file name when ``None``.

    Returns
    -------
    LoadedData
        Columns ``open_time_ms`` (int64), ``open``, ``high``, ``low``,
        ``close``, ``volume`` (float64).
    """
    match = _OHLCV_FILE_NAME.fullmatch(Path(path).name)
    if match is None:
        raise MalformedDataError(
            f"{path}: cannot tell the bar interval from the file name; "
            "expected {SYMBOL}_{interval}.csv.gz, e.g. BTCUSDT_1m.csv.gz"
        )
    interval_ms = int(match["count"]) * _INTERVAL_UNIT_MS[match["unit"]]
    fmt = replace(_OHLCV, bar_interval_ms=interval_ms)
    return _load(path, fmt, symbol if symbol is not None else match["symbol"])


def load_funding(path: str | Path) -> LoadedData:
    """Load a multi-symbol funding-rate file.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    LoadedData
        Columns ``symbol``, ``time_ms`` (int64), ``funding_rate``,
        ``mark_price`` (float64; NaN where the file leaves it empty, counted in
        the report).
    """
    return _load(path, _FUNDING)


def load_mark_price_klines(path: str | Path) -> LoadedData:
    """Load a multi-symbol file of 8h mark-price klines.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    LoadedData
        Columns ``symbol``, ``open_time_ms`` (int64), ``open``, ``high``,
        ``low``, ``close`` (float64); gaps are found per symbol.
    """
    return _load(path, _MARK_PRICE_KLINES)


def load_mark_price_stream(path: str | Path) -> LoadedData:
    """Load a recorded ``<symbol>@markPrice@1s`` stream.

    Parameters
    ----------
    path
        The file; its name gives the symbol.

    Returns
    -------
    LoadedData
        Columns ``event_time_ms``, ``next_funding_time_ms`` (int64),
        ``mark_price``, ``index_price``, ``est_settle_price``,
        ``funding_rate`` (float64).
    """
    return _load(path, _MARK_PRICE_STREAM)


def load_trades(path: str | Path) -> LoadedData:
    """Load a trade tape, in either variant.

    Parameters
    ----------
    path
        The file; its name gives the symbol. The short variant has
        ``time_ms,price,qty,is_buyer_maker`` and one id column; the
        websocket-derived variant has ``trade_id,recv_time_us,trade_type``
        after the first four.

    Returns
    -------
    LoadedData
        The file's columns; ``is_buyer_maker`` is bool, ``trade_type`` is
        empty (NaN) for spot.
    """
    return _load(path, _trades_format(path, _read_header(path)))


def load_book_snapshot(path: str | Path) -> LoadedData:
    """Load a REST order-book depth snapshot.

    Parameters
    ----------
    path
        The file; its name or folder gives the symbol.

    Returns
    -------
    LoadedData
        Columns ``recv_time_us``, ``last_update_id`` (int64),
        ``event_time_ms``, ``transact_time_ms`` (Int64, empty on spot),
        ``side`` (``b``/``a``), ``price``, ``qty`` (float64).
    """
    return _load(path, _BOOK_SNAPSHOT)


def load_depth_diffs(path: str | Path) -> LoadedData:
    """Load the rows of a recorded depth diff stream, one per changed level.

    Parameters
    ----------
    path
        The file; its name or folder gives the symbol.

    Returns
    -------
    LoadedData
        Columns ``recv_time_us``, ``event_time_ms``, ``first_update_id``,
        ``last_update_id`` (int64), ``transact_time_ms``,
        ``prev_last_update_id`` (Int64, empty on spot), ``side``, ``price``,
        ``qty`` (float64; 0 removes the level).
    """
    return _load(path, _DEPTH_DIFF)


def load_book_ticker(path: str | Path) -> LoadedData:
    """Load a recorded ``bookTicker`` (best bid and offer) stream.

    Parameters
    ----------
    path
        The file (``bbo.csv.gz``); its name or folder gives the symbol.

    Returns
    -------
    LoadedData
        Columns ``recv_time_us``, ``update_id`` (int64), ``event_time_ms``,
        ``transact_time_ms`` (Int64, empty on spot), ``bid_price``,
        ``bid_qty``, ``ask_price``, ``ask_qty`` (float64).
    """
    return _load(path, _BOOK_TICKER)


_LOADERS: dict[str, Callable[[str | Path], LoadedData]] = {
    "ohlcv": load_ohlcv,
    "funding": load_funding,
    "mark_price_klines": load_mark_price_klines,
    "mark_price_stream": load_mark_price_stream,
    "trades": load_trades,
    "book_snapshot": load_book_snapshot,
    "depth_diff": load_depth_diffs,
    "book_ticker": load_book_ticker,
}


# ---------------------------------------------------------------- reading


def _read_header(path: str | Path) -> tuple[str, ...]:
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as stream:
            line = stream.readline()
    except FileNotFoundError as error:
        raise MalformedDataError(f"{path}: file not found") from error
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
        raise MalformedDataError(f"{path}: not a readable gzip file ({error})") from error
    if not line.strip():
        raise MalformedDataError(f"{path}: empty file, no header row")
    return tuple(line.rstrip("\r\n").split(","))


def _format_for(path: str | Path, header: tuple[str, ...]) -> _Format:
    if header in _FIXED_FORMATS:
        return _FIXED_FORMATS[header]
    return _trades_format(path, header)


def _trades_format(path: str | Path, header: tuple[str, ...]) -> _Format:
    base = tuple(field.name for field in _TRADE_FIELDS)
    websocket = (*base, "trade_id", *(field.name for field in _WEBSOCKET_TRADE_EXTRA))
    is_short = len(header) == len(base) + 1 and header[: len(base)] == base
    if header != websocket and not (is_short and header[-1].endswith("id")):
        raise MalformedDataError(
            f"{path}: unknown header {','.join(header)!r}; "
            f"expected one of the formats in data/SOURCES.md ({', '.join(KINDS)})"
        )
    id_field = _Field(header[len(base)], "int")
    extra = _WEBSOCKET_TRADE_EXTRA if header == websocket else ()
    return _Format(
        kind="trades",
        fields=(*_TRADE_FIELDS, id_field, *extra),
        time_field="time_ms",
        sequence_field=id_field.name,
    )


def _read_rows(path: str | Path, fmt: _Format) -> tuple[pd.DataFrame, bool]:
    """Read the data rows; return them and whether they are already typed.

    The typed read is exact and fast; a file with an unparseable value fails
    it and is read again as text, to be parsed field by field.
    """
    header = _read_header(path)
    if header != fmt.header:
        raise MalformedDataError(
            f"{path}: header {','.join(header)!r} is not the {fmt.kind} header {','.join(fmt.header)!r}"
        )
    read_types = {"int": "Int64", "float": "float64", "bool": "str", "str": "str"}
    typed = {field.name: read_types[field.type] for field in fmt.fields}
    try:
        return _read_csv(path, typed), True
    except (ValueError, TypeError):
        return _read_csv(path, dict.fromkeys(fmt.header, "str")), False


def _read_csv(path: str | Path, dtype: dict[str, str]) -> pd.DataFrame:
    # Blank lines are kept as empty rows so that row i is always line i + 2.
    try:
        return pd.read_csv(path, compression="gzip", dtype=dtype, skip_blank_lines=False)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ParserError) as error:
        raise MalformedDataError(f"{path}: cannot read the CSV rows ({str(error).strip()})") from error


# ---------------------------------------------------------------- validating


class _Problems:
    """The first problem found in each row; later checks keep earlier reasons."""

    def __init__(self, size: int) -> None:
        self.bad = np.zeros(size, dtype=bool)
        self.reasons = np.empty(size, dtype=object)

    def add(self, mask: np.ndarray, reason: str, values: pd.Series | None = None) -> None:
        """Record ``reason`` where ``mask``; its ``{}`` shows the row's ``values``."""
        (rows,) = np.nonzero(mask & ~self.bad)
        if rows.size == 0:
            return
        if values is None:
            self.reasons[rows] = reason
        else:
            self.reasons[rows] = [reason.format(value) for value in values.iloc[rows]]
        self.bad[rows] = True


def _as_int(raw: pd.Series, typed: bool) -> pd.Series:
    if typed:
        return raw
    numbers = pd.to_numeric(raw, errors="coerce", dtype_backend="numpy_nullable")
    if pd.api.types.is_integer_dtype(numbers.dtype):
        return numbers
    whole = (numbers % 1 == 0).fillna(False)
    return numbers.where(whole).astype("Int64")


def _as_float(raw: pd.Series, typed: bool) -> pd.Series:
    return raw if typed else pd.to_numeric(raw, errors="coerce").astype("float64")


def _as_bool(raw: pd.Series, typed: bool) -> pd.Series:
    return raw.map({"True": True, "False": False}).astype("boolean")


def _as_str(raw: pd.Series, typed: bool) -> pd.Series:
    return raw


_PARSERS = {"int": _as_int, "float": _as_float, "bool": _as_bool, "str": _as_str}


def _parse_field(raw: pd.Series, field: _Field, typed: bool, problems: _Problems) -> pd.Series:
    """Return the field's values (NA where unparseable) and record parse problems."""
    missing = raw.isna().to_numpy()
    values = _PARSERS[field.type](raw, typed)
    if field.required:
        problems.add(missing, f"{field.name}: missing")
    problems.add(values.isna().to_numpy() & ~missing, f"{field.name}: unparseable {{!r}}", raw)
    if field.type == "float":
        problems.add(np.isinf(values.to_numpy()), f"{field.name}: not finite ({{}})", values)
    return values


def _check_values(columns: dict[str, pd.Series], fmt: _Format, problems: _Problems) -> None:
    for field in fmt.fields:
        values = columns[field.name]
        if field.sign == "positive":
            problems.add((values <= 0).to_numpy(), f"{field.name}: not positive ({{}})", values)
        elif field.sign == "non_negative":
            problems.add((values < 0).to_numpy(), f"{field.name}: negative ({{}})", values)
        if field.choices:
            allowed = (values.isin(field.choices) | values.isna()).to_numpy()
            choices = " or ".join(field.choices)
            problems.add(~allowed, f"{field.name}: not {choices} ({{!r}})", values)
    if fmt.ohlc:
        open_, high, low, close = (columns[name].to_numpy() for name in ("open", "high", "low", "close"))
        problems.add(high < low, "high: below low")
        problems.add((open_ < low) | (open_ > high), "open: outside [low, high]")
        problems.add((close < low) | (close > high), "close: outside [low, high]")


def _check_sequence(columns: dict[str, pd.Series], fmt: _Format, problems: _Problems) -> None:
    """Flag rows whose sequence key does not advance past the last kept row's.

    A dropped row never raises the running maximum (its key is not above it),
    so the last kept key before a row is the maximum of all earlier keys of
    rows that passed the value checks, per symbol in multi-symbol files.
    """
    name = fmt.sequence_field
    if name is None:
        return
    (rows,) = np.nonzero(~problems.bad)
    keys = pd.Series(columns[name].iloc[rows].to_numpy(dtype=np.int64))
    lowest = np.iinfo(np.int64).min
    if fmt.symbol_field is None:
        previous = keys.cummax().shift(1, fill_value=lowest)
    else:
        groups = columns[fmt.symbol_field].iloc[rows].to_numpy()
        previous = keys.groupby(groups).cummax().groupby(groups).shift(1, fill_value=lowest)
    last_kept = pd.Series(np.zeros(problems.bad.size, dtype=np.int64))
    last_kept.iloc[rows] = previous.to_numpy()
    key_values = columns[name]
    size = problems.bad.size
    if fmt.strict_sequence:
        duplicate = _at(rows, keys == previous, size)
        problems.add(duplicate, f"{name}: duplicate of the last kept row ({{}})", key_values)
    earlier = _at(rows, keys < previous, size)
    problems.add(earlier, f"{name}: out of order (last kept row has {{}})", last_kept)


def _at(rows: np.ndarray, selected: pd.Series, size: int) -> np.ndarray:
    """Spread a mask over the rows ``rows`` back to a mask over all ``size`` rows."""
    mask = np.zeros(size, dtype=bool)
    mask[rows] = selected.to_numpy()
    return mask


# ---------------------------------------------------------------- assembling


def _load(path: str | Path, fmt: _Format, symbol: str | None = None) -> LoadedData:
    raw, typed = _read_rows(path, fmt)
    problems = _Problems(len(raw))
    columns = {field.name: _parse_field(raw[field.name], field, typed, problems) for field in fmt.fields}
    _check_values(columns, fmt, problems)
    _check_sequence(columns, fmt, problems)
    frame = _kept_frame(columns, fmt, ~problems.bad)
    symbols = _symbols(path, frame, fmt, symbol)
    first_ms, last_ms = _span(frame, fmt)
    report = LoadReport(
        path=str(path),
        kind=fmt.kind,
        rows_read=len(raw),
        rows_kept=len(frame),
        bad_rows=tuple(
            BadRow(str(path), int(row) + 2, str(problems.reasons[row])) for row in np.flatnonzero(problems.bad)
        ),
        gaps=_gaps(frame, fmt, symbols),
        symbols=symbols,
        first_ms=first_ms,
        last_ms=last_ms,
        empty_optional_fields=tuple(
            (field.name, int(frame[field.name].isna().sum()))
            for field in fmt.fields
            if not field.required and frame[field.name].isna().any()
        ),
    )
    return LoadedData(frame, report)


def _kept_frame(columns: dict[str, pd.Series], fmt: _Format, keep: np.ndarray) -> pd.DataFrame:
    kept = {}
    for field in fmt.fields:
        values = columns[field.name][keep].reset_index(drop=True)
        if field.required and field.type == "int":
            values = values.astype("int64")
        elif field.type == "bool":
            values = values.astype("bool")
        kept[field.name] = values
    return pd.DataFrame(kept)


def _symbols(path: str | Path, frame: pd.DataFrame, fmt: _Format, symbol: str | None) -> tuple[str, ...]:
    if fmt.symbol_field is not None:
        return tuple(sorted(frame[fmt.symbol_field].unique()))
    if symbol is not None:
        return (symbol,)
    location = Path(path)
    for part in (location.name, location.parent.name):
        for token in re.split(r"[^A-Za-z0-9]+", part):
            if _SYMBOL_TOKEN.fullmatch(token):
                return (token,)
    return ()


def _span(frame: pd.DataFrame, fmt: _Format) -> tuple[int | None, int | None]:
    times = frame[fmt.time_field]
    if fmt.receive_time_field is not None:
        times = times.fillna(frame[fmt.receive_time_field] // 1000)
    if times.isna().all():
        return None, None
    return int(times.min()), int(times.max())


def _gaps(frame: pd.DataFrame, fmt: _Format, symbols: tuple[str, ...]) -> tuple[Gap, ...]:
    if fmt.bar_interval_ms is None:
        return ()
    times = frame[fmt.time_field].to_numpy()
    if fmt.symbol_field is None:
        return find_gaps(times, fmt.bar_interval_ms, symbols[0])
    by_symbol = frame[fmt.symbol_field].to_numpy()
    return tuple(gap for name in symbols for gap in find_gaps(times[by_symbol == name], fmt.bar_interval_ms, name))
