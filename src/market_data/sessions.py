"""Recorded order-book sessions, read into arrays ready to replay.

A session folder in the format of ``data/SOURCES.md``
(``data/orderbook/binance_{market}_{SYMBOL}_{date}/``) holds the REST depth
snapshot, the depth diff stream and the ``bookTicker`` stream; its trade tape
lives under ``data/trades``. :func:`load_session` reads them with
:mod:`keel.market_data.loaders`, turns prices into integer ticks (checking
every one lies on the grid) and groups the diff rows into events.

A diff event that lost a row to the loader (or has an off-grid price, or a
price twice on one side) cannot be applied correctly, so the whole event is
marked malformed; skipping it breaks the update-id chain and the book waits
for a new snapshot instead of publishing a wrong state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from math import gcd
from pathlib import Path

import numpy as np
import pandas as pd

from keel.core.clock import NANOS_PER_MILLI
from keel.core.errors import MalformedDataError
from keel.market_data.loaders import (
    LoadReport,
    load_book_snapshot,
    load_book_ticker,
    load_depth_diffs,
    load_mark_price_stream,
    load_trades,
)

_SESSION_NAME = re.compile(r"binance_(?P<market>usdm|spot)_(?P<symbol>[A-Z0-9]+)_(?P<date>\d{4}-\d{2}-\d{2})")
_PRICE_SCALE = 10**8


@dataclass(frozen=True, slots=True)
class DiffEvents:
    """The depth diff events of a session, rows grouped per event and side.

    Event ``i`` has its bid rows at ``[bid_start[i], ask_start[i])`` and its
    ask rows at ``[ask_start[i], bid_start[i + 1])`` of ``ticks`` and
    ``quantities``; ``previous_update_id`` is -1 where the stream has no
    ``pu`` (spot); ``malformed`` marks events that must not be applied.
    """

    time_ns: np.ndarray
    first_update_id: np.ndarray
    last_update_id: np.ndarray
    previous_update_id: np.ndarray
    bid_start: np.ndarray
    ask_start: np.ndarray
    ticks: np.ndarray
    quantities: np.ndarray
    malformed: np.ndarray

    def __len__(self) -> int:
        return len(self.time_ns)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The REST depth snapshot: ``lastUpdateId`` and both sides in ticks."""

    time_ns: int
    last_update_id: int
    bid_ticks: np.ndarray
    bid_quantities: np.ndarray
    ask_ticks: np.ndarray
    ask_quantities: np.ndarray


@dataclass(frozen=True, slots=True)
class RecordedSession:
    """Everything of one recorded session, as arrays.

    Times are exchange times in ns: the transaction time ``T`` where the
    stream has it, else the event time ``E``.
    """

    symbol: str
    market: str
    tick_size: Decimal
    snapshot: Snapshot
    diffs: DiffEvents
    book_ticker: pd.DataFrame
    trades: pd.DataFrame | None
    mark_prices: pd.DataFrame | None
    reports: list[LoadReport] = field(default_factory=list)

    @property
    def has_previous_update_id(self) -> bool:
        """Return True for USD-M streams, whose diff events carry ``pu``."""
        return self.market == "usdm"


def parse_session_name(session_dir: Path) -> tuple[str, str]:
    """Return (market, symbol) from a folder named ``binance_{usdm|spot}_{SYMBOL}_{date}``.

    Raises
    ------
    MalformedDataError
        If the folder name does not follow that pattern.
    """
    match = _SESSION_NAME.fullmatch(Path(session_dir).name)
    if match is None:
        raise MalformedDataError(
            f"{session_dir}: a session folder must be named binance_{{usdm|spot}}_{{SYMBOL}}_{{YYYY-MM-DD}}"
        )
    return match["market"], match["symbol"]


def infer_tick_size(prices: np.ndarray) -> Decimal:
    """Return the coarsest grid (down to 1e-8) every price lies on.

    Raises
    ------
    MalformedDataError
        If there are no prices.
    """
    if not len(prices):
        raise MalformedDataError("cannot infer a tick size from no prices")
    scaled = np.unique(np.rint(np.asarray(prices, dtype=np.float64) * _PRICE_SCALE).astype(np.int64))
    step = 0
    for value in scaled.tolist():
        step = gcd(step, value)
        if step == 1:
            break
    return (Decimal(step) / _PRICE_SCALE).normalize()


def prices_to_ticks(prices: np.ndarray, tick_size: Decimal) -> tuple[np.ndarray, np.ndarray]:
    """Return (ticks, on_grid): the nearest tick of each price and whether the price is exactly on it.

    A price is on the grid when the float nearest to ``tick * tick_size`` is the
    price's own float, so the decimal text it was parsed from is that tick.
    """
    numerator, denominator = tick_size.as_integer_ratio()
    prices = np.asarray(prices, dtype=np.float64)
    ticks = np.rint(prices * denominator / numerator).astype(np.int64)
    back = ticks / denominator if numerator == 1 else (ticks * numerator) / denominator
    return ticks, (back == prices) & (ticks > 0)


def _exchange_time_ns(frame: pd.DataFrame) -> np.ndarray:
    """Return ``T``, else ``E``, else (spot ``bookTicker`` has neither) the local receive time, in ns."""
    millis = frame["transact_time_ms"].astype("Int64").fillna(frame["event_time_ms"].astype("Int64"))
    if millis.isna().any():
        millis = millis.fillna(frame["recv_time_us"] // 1000)
    return millis.to_numpy(dtype=np.int64) * NANOS_PER_MILLI


def load_session(
    session_dir: str | Path,
    trades_file: str | Path | None = None,
    mark_price_file: str | Path | None = None,
    tick_size: Decimal | None = None,
) -> RecordedSession:
    """Read a recorded session folder (and optionally its trades and 1s mark prices).

    Parameters
    ----------
    session_dir
        Folder with ``snapshot.csv.gz``, ``depth_diff.csv.gz`` and ``bbo.csv.gz``.
    trades_file
        The session's trade tape, or None.
    mark_price_file
        A 1s mark-price stream file, or None.
    tick_size
        The price grid; inferred from the snapshot and diff prices when None.

    Raises
    ------
    MalformedDataError
        If the folder name or a file is unusable, or a snapshot price is off the grid.
    """
    folder = Path(session_dir)
    market, symbol = parse_session_name(folder)
    for name in ("snapshot.csv.gz", "depth_diff.csv.gz", "bbo.csv.gz"):
        if not (folder / name).exists():
            raise MalformedDataError(f"{folder}: missing {name} (see data/SOURCES.md for a session folder's files)")
    snapshot_data = load_book_snapshot(folder / "snapshot.csv.gz")
    diff_data = load_depth_diffs(folder / "depth_diff.csv.gz")
    ticker_data = load_book_ticker(folder / "bbo.csv.gz")
    reports = [snapshot_data.report, diff_data.report, ticker_data.report]
    if tick_size is None:
        tick_size = infer_tick_size(np.concatenate([snapshot_data.frame["price"], diff_data.frame["price"]]))
    snapshot = _snapshot(snapshot_data.frame, tick_size, folder)
    diffs = _diff_events(diff_data.frame, diff_data.report, tick_size)
    ticker = ticker_data.frame.assign(time_ns=_exchange_time_ns(ticker_data.frame))
    trades = None
    if trades_file is not None:
        loaded = load_trades(trades_file)
        reports.append(loaded.report)
        trades = loaded.frame.assign(time_ns=loaded.frame["time_ms"].to_numpy(np.int64) * NANOS_PER_MILLI)
    marks = None
    if mark_price_file is not None:
        loaded = load_mark_price_stream(mark_price_file)
        reports.append(loaded.report)
        marks = loaded.frame.assign(time_ns=loaded.frame["event_time_ms"].to_numpy(np.int64) * NANOS_PER_MILLI)
    return RecordedSession(symbol, market, tick_size, snapshot, diffs, ticker, trades, marks, reports)


def _snapshot(frame: pd.DataFrame, tick_size: Decimal, folder: Path) -> Snapshot:
    if frame.empty:
        raise MalformedDataError(f"{folder}/snapshot.csv.gz: no usable snapshot rows")
    ids = frame["last_update_id"].unique()
    if len(ids) != 1:
        raise MalformedDataError(f"{folder}/snapshot.csv.gz: rows of {len(ids)} different snapshots; expected one")
    ticks, on_grid = prices_to_ticks(frame["price"].to_numpy(), tick_size)
    if not on_grid.all():
        row = int(np.flatnonzero(~on_grid)[0])
        raise MalformedDataError(
            f"{folder}/snapshot.csv.gz: price {frame['price'].iloc[row]} is not on the tick grid {tick_size}"
        )
    quantities = frame["qty"].to_numpy(dtype=np.float64)
    is_bid = (frame["side"] == "b").to_numpy()
    times = frame["transact_time_ms"].fillna(frame["event_time_ms"])
    time_ns = (
        int(times.iloc[0]) * NANOS_PER_MILLI if times.notna().all() else int(frame["recv_time_us"].iloc[0]) * 1_000
    )
    return Snapshot(
        time_ns=time_ns,
        last_update_id=int(ids[0]),
        bid_ticks=ticks[is_bid],
        bid_quantities=quantities[is_bid],
        ask_ticks=ticks[~is_bid],
        ask_quantities=quantities[~is_bid],
    )


def _diff_events(frame: pd.DataFrame, report: LoadReport, tick_size: Decimal) -> DiffEvents:
    first = frame["first_update_id"].to_numpy(dtype=np.int64)
    last = frame["last_update_id"].to_numpy(dtype=np.int64)
    rows = len(frame)
    changes = np.r_[True, (first[1:] != first[:-1]) | (last[1:] != last[:-1])] if rows else np.zeros(0, bool)
    starts = np.flatnonzero(changes)
    event_of_row = np.cumsum(changes) - 1
    is_ask = (frame["side"] == "a").to_numpy()
    ticks, on_grid = prices_to_ticks(frame["price"].to_numpy(), tick_size)
    malformed = np.zeros(len(starts), dtype=bool)
    malformed[event_of_row[~on_grid]] = True
    malformed[_events_near_bad_rows(report, rows, event_of_row)] = True
    order = np.lexsort((ticks, is_ask, event_of_row))
    ticks, quantities = ticks[order], frame["qty"].to_numpy(dtype=np.float64)[order]
    events, asks = event_of_row[order], is_ask[order]
    repeated = (events[1:] == events[:-1]) & (asks[1:] == asks[:-1]) & (ticks[1:] == ticks[:-1])
    malformed[events[1:][repeated]] = True
    bid_start = np.searchsorted(events, np.arange(len(starts)), side="left")
    ask_start = bid_start + np.bincount(event_of_row[~is_ask], minlength=len(starts))
    previous = frame["prev_last_update_id"]
    previous_ids = previous.fillna(-1).to_numpy(dtype=np.int64)[starts]
    times = _exchange_time_ns(frame)[starts]
    return DiffEvents(
        time_ns=times,
        first_update_id=first[starts],
        last_update_id=last[starts],
        previous_update_id=previous_ids,
        bid_start=np.r_[bid_start, rows].astype(np.int64),
        ask_start=ask_start.astype(np.int64),
        ticks=ticks,
        quantities=quantities,
        malformed=malformed,
    )


def _events_near_bad_rows(report: LoadReport, kept_rows: int, event_of_row: np.ndarray) -> np.ndarray:
    """Return the events of the kept rows on both sides of every dropped row."""
    if not report.bad_rows or not kept_rows:
        return np.zeros(0, dtype=np.int64)
    bad = np.array(sorted({row.line - 2 for row in report.bad_rows}), dtype=np.int64)
    kept = np.setdiff1d(np.arange(report.rows_read, dtype=np.int64), bad)
    after = np.searchsorted(kept, bad)
    neighbours = np.concatenate([after - 1, after])
    neighbours = neighbours[(neighbours >= 0) & (neighbours < kept_rows)]
    return np.unique(event_of_row[neighbours])
