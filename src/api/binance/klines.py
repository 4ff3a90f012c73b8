"""Closed klines before now over REST (``GET /fapi/v1/klines``): the history live strategies warm up on.

:func:`fetch_klines` walks back from ``end_ms`` in pages of at most 1500
klines (Binance's maximum), each page's ``endTime`` just before the oldest
open time of the previous one, until it has ``count`` closed klines or
Binance has no older ones. A kline is closed when its close time is before
``end_ms``: the kline still open at ``end_ms`` (Binance's last row) is left
out. Every row is parsed as the kline stream's closed kline by keel's own
:class:`~keel.market_data.normalization.BinanceUsdmNormalizer`, so a REST bar
and a stream bar are checked alike; rows it rejects are counted and skipped.
A 429 or 418 answer is waited out as its ``Retry-After`` says, then asked again.

:func:`fetch_kline_window` takes the closed klines of a time window instead,
paging forward from its start, and :func:`fetch_funding_rates` the funding
settlements of a window (``GET /fapi/v1/fundingRate``): the market history
the backtest gate runs on. Both can be paced by the adapter's
:class:`~keel.api.binance.rest.RateLimiter` (Binance's weight of each
request is acquired before it is sent; the used-weight header of its answer
is adopted).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import structlog

from keel.api.binance.constants import (
    FUNDING_RATE_PATH,
    KLINES_PATH,
    MAX_FUNDING_RATES_PER_REQUEST,
    MAX_KLINES_PER_REQUEST,
    RETRY_AFTER_HEADER,
    endpoint_weight,
    klines_weight,
)
from keel.api.binance.rest import RateLimiter
from keel.core.messages import BarClosed
from keel.market_data.normalization import BinanceUsdmNormalizer

if TYPE_CHECKING:
    # Only the type: the streams module loads the order book (and numba), which fetching klines never needs.
    from keel.api.binance.streams import Sleep

_log = structlog.get_logger("keel.api.binance.klines")

_ROW_FIELDS = 7  # open time, open, high, low, close, volume, close time (Binance sends 12)
_REPEATS = frozenset({"duplicate", "out_of_order"})


@dataclass(slots=True)
class KlineHistory:
    """The closed klines of one symbol, oldest first, and what fetching them took.

    ``malformed`` counts rows rejected as bad data; ``rejected`` the rejections by reason.
    """

    symbol: str
    bars: list[BarClosed] = field(default_factory=list)
    requests: int = 0
    malformed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


async def fetch_klines(
    session: aiohttp.ClientSession,
    rest_url: str,
    symbol: str,
    interval: str,
    count: int,
    end_ms: int,
    *,
    sleep: Sleep = asyncio.sleep,
    max_attempts: int = 5,
    now_ns: Callable[[], int] = time.time_ns,
) -> KlineHistory:
    """Return the last ``count`` klines of ``symbol`` that closed before ``end_ms`` (ms since the epoch).

    Parameters
    ----------
    session
        The HTTP session.
    rest_url
        Binance's REST base URL (``binance.rest_url``, or a local Binance).
    symbol, interval
        The symbol and kline interval (``data.bar_interval``).
    count
        Klines wanted; fewer come back when Binance has no older ones.
    end_ms
        Now: only klines whose close time is before it are taken.
    sleep
        Waits out a 429 or 418 answer.
    max_attempts
        Requests of one page before giving up on 429 / 418 answers.
    now_ns
        The clock stamping the bars' ``ts_init``.

    Raises
    ------
    aiohttp.ClientResponseError
        For an error answer (or a 429 / 418 still there after ``max_attempts``).
    """
    history = KlineHistory(symbol)
    pages: list[list[BarClosed]] = []
    taken = 0
    before_ms = end_ms - 1
    while taken < count:
        limit = min(MAX_KLINES_PER_REQUEST, count - taken + 1)  # one more: the kline still open
        page = await _page(session, rest_url, symbol, interval, limit, before_ms, sleep, max_attempts)
        history.requests += 1
        bars = _parse(history, page, interval, end_ms, now_ns())
        pages.append(bars)
        taken += len(bars)
        opens = [opened for opened in map(_open_time, page) if opened is not None]
        if len(page) < limit or not opens or min(opens) > before_ms:
            break  # Binance has no older klines
        before_ms = min(opens) - 1
    history.bars = [bar for bars in reversed(pages) for bar in bars][-count:] if count else []
    return history


async def _page(
    session: aiohttp.ClientSession,
    rest_url: str,
    symbol: str,
    interval: str,
    limit: int,
    end_ms: int,
    sleep: Sleep,
    max_attempts: int,
    start_ms: int | None = None,
    limiter: RateLimiter | None = None,
) -> list[Any]:
    """Return one page of raw kline rows (a body that is no JSON list is one malformed row)."""
    params = {"symbol": symbol, "interval": interval, "limit": str(limit), "endTime": str(end_ms)}
    if start_ms is not None:
        params["startTime"] = str(start_ms)
    return await _get_rows(session, rest_url, KLINES_PATH, params, klines_weight(limit), sleep, max_attempts, limiter)


async def _get_rows(
    session: aiohttp.ClientSession,
    rest_url: str,
    path: str,
    params: dict[str, str],
    weight: int,
    sleep: Sleep,
    max_attempts: int,
    limiter: RateLimiter | None,
) -> list[Any]:
    """GET ``path`` and return its JSON list (a body that is no JSON list is one malformed row).

    A 429 or 418 answer is waited out as its ``Retry-After`` says (and blocks
    ``limiter``), then asked again, at most ``max_attempts`` times.
    """
    url = f"{rest_url.rstrip('/')}{path}"
    for attempt in range(1, max_attempts + 1):
        if limiter is not None:
            await limiter.acquire(weight, False)
        async with session.get(url, params=params) as response:
            body = await response.read()
            if limiter is not None:
                limiter.observe(response.headers)
            if response.status in (418, 429) and attempt < max_attempts:
                wait = float(response.headers.get(RETRY_AFTER_HEADER, "1"))
                _log.warning("history request refused: waiting", path=path, status=response.status, seconds=wait)
                if limiter is not None:
                    limiter.block(wait, banned=response.status == 418)
                await sleep(wait)
                continue
            if response.status != 200:
                raise aiohttp.ClientResponseError(
                    response.request_info,
                    (),
                    status=response.status,
                    message=body[:200].decode("utf-8", "replace"),
                    headers=response.headers,
                )
        try:
            document = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return [body]
        return document if isinstance(document, list) else [document]
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


async def fetch_kline_window(
    session: aiohttp.ClientSession,
    rest_url: str,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    *,
    limiter: RateLimiter | None = None,
    sleep: Sleep = asyncio.sleep,
    max_attempts: int = 5,
    now_ns: Callable[[], int] = time.time_ns,
) -> KlineHistory:
    """Return the klines of ``symbol`` that open at or after ``start_ms`` and close before ``end_ms``, oldest first.

    Pages forward from ``start_ms``, at most 1500 klines a page, until a page
    comes back short or reaches ``end_ms``.

    Parameters
    ----------
    session, rest_url, symbol, interval
        As :func:`fetch_klines`.
    start_ms, end_ms
        The window (ms since the epoch): the kline still open at ``end_ms`` is left out.
    limiter
        Paces the requests by Binance's request weight (None: not paced).
    sleep, max_attempts, now_ns
        As :func:`fetch_klines`.

    Raises
    ------
    aiohttp.ClientResponseError
        For an error answer (or a 429 / 418 still there after ``max_attempts``).
    """
    history = KlineHistory(symbol)
    after_ms = start_ms
    while after_ms < end_ms:
        page = await _page(
            session,
            rest_url,
            symbol,
            interval,
            MAX_KLINES_PER_REQUEST,
            end_ms - 1,
            sleep,
            max_attempts,
            start_ms=after_ms,
            limiter=limiter,
        )
        history.requests += 1
        history.bars.extend(_parse(history, page, interval, end_ms, now_ns()))
        opens = [opened for opened in map(_open_time, page) if opened is not None]
        if len(page) < MAX_KLINES_PER_REQUEST or not opens or max(opens) < after_ms:
            break  # nothing more up to end_ms
        after_ms = max(opens) + 1
    return history


@dataclass(frozen=True, slots=True)
class FundingSettlement:
    """One funding settlement as ``GET /fapi/v1/fundingRate`` publishes it (rate and mark price as sent)."""

    symbol: str
    time_ms: int
    rate: str
    mark_price: str


async def fetch_funding_rates(
    session: aiohttp.ClientSession,
    rest_url: str,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    limiter: RateLimiter | None = None,
    sleep: Sleep = asyncio.sleep,
    max_attempts: int = 5,
) -> list[FundingSettlement]:
    """Return the funding settlements of ``symbol`` from ``start_ms`` to ``end_ms`` (inclusive), oldest first.

    Pages forward 1000 settlements at a time (Binance's maximum).

    Raises
    ------
    aiohttp.ClientResponseError
        For an error answer (or a 429 / 418 still there after ``max_attempts``).
    ValueError
        For a settlement row without a symbol, time or rate.
    """
    settlements: list[FundingSettlement] = []
    after_ms = start_ms
    weight = endpoint_weight("GET", FUNDING_RATE_PATH)
    while after_ms <= end_ms:
        params = {
            "symbol": symbol,
            "startTime": str(after_ms),
            "endTime": str(end_ms),
            "limit": str(MAX_FUNDING_RATES_PER_REQUEST),
        }
        rows = await _get_rows(session, rest_url, FUNDING_RATE_PATH, params, weight, sleep, max_attempts, limiter)
        page = [_settlement(symbol, row) for row in rows]
        settlements.extend(s for s in page if after_ms <= s.time_ms <= end_ms)
        if len(rows) < MAX_FUNDING_RATES_PER_REQUEST or not page:
            break
        after_ms = max(s.time_ms for s in page) + 1
    return settlements


def _settlement(symbol: str, row: Any) -> FundingSettlement:
    if not isinstance(row, dict) or not isinstance(row.get("fundingTime"), int) or "fundingRate" not in row:
        raise ValueError(f"funding rate row of {symbol} without fundingTime and fundingRate: {row!r:.200}")
    mark = row.get("markPrice")
    return FundingSettlement(symbol, row["fundingTime"], str(row["fundingRate"]), "" if mark is None else str(mark))


def _open_time(row: Any) -> int | None:
    if isinstance(row, list) and row and isinstance(row[0], int) and not isinstance(row[0], bool):
        return row[0]
    return None


def _parse(history: KlineHistory, rows: Sequence[Any], interval: str, end_ms: int, ts_init: int) -> list[BarClosed]:
    """Return one page's closed klines oldest first; the open one is skipped, bad rows counted in ``history``."""
    normalizer = BinanceUsdmNormalizer({})
    bars: list[BarClosed] = []
    keyed = sorted(rows, key=lambda row: (_open_time(row) is not None, _open_time(row) or 0))
    for row in keyed:
        if not isinstance(row, list) or len(row) < _ROW_FIELDS:
            history.malformed += 1
            history.rejected["bad_row"] += 1
            continue
        close = row[6]
        if isinstance(close, int) and close >= end_ms:
            continue  # still open at end_ms
        document = {
            "e": "kline",
            "s": history.symbol,
            "k": {
                "t": row[0],
                "T": close,
                "i": interval,
                "o": row[1],
                "h": row[2],
                "l": row[3],
                "c": row[4],
                "v": row[5],
                "x": True,
            },
        }
        rejected = normalizer.rejected.copy()
        bar = normalizer.parse(msgspec.json.encode(document), ts_init)
        if isinstance(bar, BarClosed):
            bars.append(bar)
            continue
        reasons = normalizer.rejected - rejected
        history.rejected.update(reasons)
        if not set(reasons) <= _REPEATS:
            history.malformed += 1
    return bars


async def fetch_warmup(
    rest_url: str,
    symbols: Sequence[str],
    interval: str,
    count: int,
    end_ms: int,
    session: aiohttp.ClientSession | None = None,
) -> dict[str, KlineHistory]:
    """Return the last ``count`` closed klines before ``end_ms`` of every symbol (one session for all)."""
    own = session is None
    http = aiohttp.ClientSession() if session is None else session
    try:
        return {symbol: await fetch_klines(http, rest_url, symbol, interval, count, end_ms) for symbol in symbols}
    finally:
        if own:
            await http.close()
