"""Binance USD-M WebSocket payloads turned into keel events, with bad data counted and kept out.

:class:`BinanceUsdmNormalizer` parses one payload at a time, raw or wrapped in
a combined-stream envelope (``{"stream": ..., "data": ...}``):

==================  ============================================================
``aggTrade``        ``TradeTick`` (``trade_id`` is ``a<aggregate id>``)
``trade``           ``TradeTick``
``kline``           ``BarClosed`` once the kline is final (``x`` true); open klines are skipped
``depthUpdate``     :class:`DepthDiff` for the local order book (not a bus message)
``bookTicker``      ``BookTickerUpdated``
``markPriceUpdate`` ``MarkPriceUpdated`` (mark, index, funding rate, next funding time)
``forceOrder``      ``LiquidationReported``
REST depth          :class:`DepthSnapshot`, via :meth:`BinanceUsdmNormalizer.parse_snapshot`
==================  ============================================================

A payload is rejected, counted under a reason in ``rejected`` and logged
(the first of each reason as a warning, the rest at debug level) when it is
not JSON, has an unknown event type, misses a field, has an unparseable,
NaN, infinite or negative value, a non-positive price, an inconsistent bar,
an off-grid depth price or a price twice on one side, or repeats
(``duplicate``) or goes behind (``out_of_order``) the last accepted sequence
number of its stream and symbol: the trade id, the aggregate trade id, the
``bookTicker`` update id, the kline open time, and the event time of mark
prices and liquidations. Depth sequencing is the order book's business.
Nothing rejected is returned, so nothing rejected reaches a strategy.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import numpy as np
import structlog

from keel.core.clock import NANOS_PER_MILLI
from keel.core.messages import (
    BarClosed,
    BookTickerUpdated,
    LiquidationReported,
    MarketDataEvent,
    MarkPriceUpdated,
    TradeTick,
)
from keel.core.orders import OrderSide
from keel.market_data.sessions import prices_to_ticks

_log = structlog.get_logger("keel.market_data.normalization")

_INTERVAL_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_SIDES = {"BUY": OrderSide.BUY, "SELL": OrderSide.SELL}


class _Rejected(Exception):
    """A payload failed a check; ``reason`` is the counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """One ``depthUpdate`` event: ``U``, ``u``, ``pu`` and the changed levels (ticks, quantities)."""

    symbol: str
    ts_event: int
    ts_init: int
    first_update_id: int
    last_update_id: int
    previous_update_id: int | None
    bid_ticks: np.ndarray
    bid_quantities: np.ndarray
    ask_ticks: np.ndarray
    ask_quantities: np.ndarray


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """A REST depth snapshot: ``lastUpdateId`` and both sides (ticks, quantities)."""

    symbol: str
    ts_event: int
    ts_init: int
    last_update_id: int
    bid_ticks: np.ndarray
    bid_quantities: np.ndarray
    ask_ticks: np.ndarray
    ask_quantities: np.ndarray


Parsed = MarketDataEvent | DepthDiff


class BinanceUsdmNormalizer:
    """Parse Binance USD-M market-stream payloads into keel events.

    Parameters
    ----------
    tick_sizes
        Tick size per symbol; depth payloads of other symbols are rejected
        (``no_tick_size``), since their prices cannot be checked.

    Attributes
    ----------
    accepted : Counter
        Accepted payloads per event type.
    rejected : Counter
        Rejected payloads per reason.
    skipped : Counter
        Valid payloads that yield no event (klines still open).
    """

    def __init__(self, tick_sizes: Mapping[str, Decimal]) -> None:
        self.tick_sizes = {symbol: Decimal(size) for symbol, size in tick_sizes.items()}
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self._last_sequence: dict[tuple[str, str], int] = {}
        self._decoder = msgspec.json.Decoder()
        self._parsers = {
            "aggTrade": self._aggregate_trade,
            "trade": self._trade,
            "kline": self._kline,
            "depthUpdate": self._depth,
            "bookTicker": self._book_ticker,
            "markPriceUpdate": self._mark_price,
            "forceOrder": self._liquidation,
        }

    def parse(self, payload: bytes | str, ts_init: int) -> Parsed | None:
        """Return the event of one stream payload, or None if it was rejected or yields nothing.

        Parameters
        ----------
        payload
            The WebSocket message text.
        ts_init
            When keel received it (ns); becomes the event's ``ts_init``.
        """
        try:
            document = self._document(payload)
            kind = document.get("e")
            parser = self._parsers.get(kind)  # type: ignore[arg-type]
            if parser is None:
                raise _Rejected("unknown_event", f"unknown event type {kind!r}")
            result = parser(document, ts_init)
        except _Rejected as rejection:
            self._reject(rejection, payload)
            return None
        if result is None:
            self.skipped[kind] += 1  # type: ignore[index]
        else:
            self.accepted[kind] += 1  # type: ignore[index]
        return result

    def parse_snapshot(self, payload: bytes | str, symbol: str, ts_init: int) -> DepthSnapshot | None:
        """Return a REST ``GET /fapi/v1/depth`` response as a snapshot, or None if rejected."""
        try:
            document = self._document(payload)
            tick = self._tick_size(symbol)
            bid_ticks, bid_quantities = _levels(_field(document, "bids"), tick, "bids")
            ask_ticks, ask_quantities = _levels(_field(document, "asks"), tick, "asks")
            snapshot = DepthSnapshot(
                symbol=symbol,
                ts_event=_time(document, "T", "E", default=ts_init),
                ts_init=ts_init,
                last_update_id=_integer(document, "lastUpdateId"),
                bid_ticks=bid_ticks,
                bid_quantities=bid_quantities,
                ask_ticks=ask_ticks,
                ask_quantities=ask_quantities,
            )
        except _Rejected as rejection:
            self._reject(rejection, payload)
            return None
        self.accepted["depthSnapshot"] += 1
        return snapshot

    def _document(self, payload: bytes | str) -> dict[str, Any]:
        try:
            document = self._decoder.decode(payload)
        except msgspec.DecodeError as error:
            raise _Rejected("malformed_json", f"not JSON: {error}") from None
        if isinstance(document, dict) and "stream" in document and isinstance(document.get("data"), dict):
            document = document["data"]
        if not isinstance(document, dict):
            raise _Rejected("malformed_json", "a stream payload must be a JSON object")
        return document

    def _reject(self, rejection: _Rejected, payload: bytes | str) -> None:
        first = self.rejected[rejection.reason] == 0
        self.rejected[rejection.reason] += 1
        text = payload[:200] if isinstance(payload, str) else payload[:200].decode("utf-8", "replace")
        log = _log.warning if first else _log.debug
        log("market data payload rejected", reason=rejection.reason, detail=str(rejection), payload=text)

    def _advance(self, stream: str, symbol: str, sequence: int) -> None:
        """Accept ``sequence`` only if it is past the last accepted one of (stream, symbol)."""
        key = (stream, symbol)
        last = self._last_sequence.get(key)
        if last is not None:
            if sequence == last:
                raise _Rejected("duplicate", f"{stream} {symbol}: {sequence} was already accepted")
            if sequence < last:
                raise _Rejected("out_of_order", f"{stream} {symbol}: {sequence} is behind {last}")
        self._last_sequence[key] = sequence

    def _tick_size(self, symbol: str) -> Decimal:
        tick = self.tick_sizes.get(symbol)
        if tick is None:
            raise _Rejected("no_tick_size", f"no tick size configured for {symbol}: cannot check depth prices")
        return tick

    # --- one parser per event type -----------------------------------------------------

    def _trade(self, document: dict[str, Any], ts_init: int) -> TradeTick:
        symbol = _symbol(document)
        trade_id = _integer(document, "t")
        price, quantity = _price(document, "p"), _quantity(document, "q")
        maker = _boolean(document, "m")
        ts_event = _time(document, "T", "E")
        self._advance("trade", symbol, trade_id)
        return TradeTick(
            symbol=symbol,
            trade_id=str(trade_id),
            price=price,
            quantity=quantity,
            aggressor_side=OrderSide.SELL if maker else OrderSide.BUY,
            ts_event=ts_event,
            ts_init=ts_init,
        )

    def _aggregate_trade(self, document: dict[str, Any], ts_init: int) -> TradeTick:
        symbol = _symbol(document)
        aggregate_id = _integer(document, "a")
        price, quantity = _price(document, "p"), _quantity(document, "q")
        maker = _boolean(document, "m")
        ts_event = _time(document, "T", "E")
        self._advance("aggTrade", symbol, aggregate_id)
        return TradeTick(
            symbol=symbol,
            trade_id=f"a{aggregate_id}",
            price=price,
            quantity=quantity,
            aggressor_side=OrderSide.SELL if maker else OrderSide.BUY,
            ts_event=ts_event,
            ts_init=ts_init,
        )

    def _kline(self, document: dict[str, Any], ts_init: int) -> BarClosed | None:
        symbol = _symbol(document)
        kline = _field(document, "k")
        if not isinstance(kline, dict):
            raise _Rejected("bad_value", "k: not an object")
        if not _boolean(kline, "x"):
            return None
        interval = _field(kline, "i")
        if not isinstance(interval, str) or interval[-1:] not in _INTERVAL_MS or not interval[:-1].isdigit():
            raise _Rejected("bad_value", f"i: unknown kline interval {interval!r}")
        open_ms = _integer(kline, "t")
        close_ms = _integer(kline, "T")
        if close_ms + 1 - open_ms != int(interval[:-1]) * _INTERVAL_MS[interval[-1]]:
            raise _Rejected(
                "bad_value", f"T: close time {close_ms} does not end a {interval} kline opened at {open_ms}"
            )
        open_, high, low, close = (_price(kline, name) for name in ("o", "h", "l", "c"))
        volume = _quantity(kline, "v")
        if high < low or not low <= open_ <= high or not low <= close <= high:
            raise _Rejected("bad_value", f"kline {open_ms}: open/close outside [low, high] or high < low")
        self._advance(f"kline_{interval}", symbol, open_ms)
        return BarClosed(
            symbol=symbol,
            interval=interval,
            open_time=open_ms * NANOS_PER_MILLI,
            open=open_,
            high=high,
            low=low,
            close=close,
            volume=volume,
            ts_event=(close_ms + 1) * NANOS_PER_MILLI,
            ts_init=ts_init,
        )

    def _depth(self, document: dict[str, Any], ts_init: int) -> DepthDiff:
        symbol = _symbol(document)
        tick = self._tick_size(symbol)
        bid_ticks, bid_quantities = _levels(_field(document, "b"), tick, "b")
        ask_ticks, ask_quantities = _levels(_field(document, "a"), tick, "a")
        previous = document.get("pu")
        return DepthDiff(
            symbol=symbol,
            ts_event=_time(document, "T", "E"),
            ts_init=ts_init,
            first_update_id=_integer(document, "U"),
            last_update_id=_integer(document, "u"),
            previous_update_id=None if previous is None else _integer(document, "pu"),
            bid_ticks=bid_ticks,
            bid_quantities=bid_quantities,
            ask_ticks=ask_ticks,
            ask_quantities=ask_quantities,
        )

    def _book_ticker(self, document: dict[str, Any], ts_init: int) -> BookTickerUpdated:
        symbol = _symbol(document)
        update_id = _integer(document, "u")
        bid, ask = _price(document, "b"), _price(document, "a")
        bid_quantity, ask_quantity = _quantity(document, "B"), _quantity(document, "A")
        ts_event = _time(document, "T", "E")
        self._advance("bookTicker", symbol, update_id)
        return BookTickerUpdated(
            symbol=symbol,
            update_id=update_id,
            bid_price=bid,
            bid_quantity=bid_quantity,
            ask_price=ask,
            ask_quantity=ask_quantity,
            ts_event=ts_event,
            ts_init=ts_init,
        )

    def _mark_price(self, document: dict[str, Any], ts_init: int) -> MarkPriceUpdated:
        symbol = _symbol(document)
        event_ms = _integer(document, "E")
        event = MarkPriceUpdated(
            symbol=symbol,
            mark_price=_decimal(document, "p", positive=True),
            index_price=_decimal(document, "i", positive=True),
            estimated_settle_price=_decimal(document, "P", positive=True),
            funding_rate=_decimal(document, "r", positive=False),
            next_funding_time=_integer(document, "T") * NANOS_PER_MILLI,
            ts_event=event_ms * NANOS_PER_MILLI,
            ts_init=ts_init,
        )
        self._advance("markPrice", symbol, event_ms)
        return event

    def _liquidation(self, document: dict[str, Any], ts_init: int) -> LiquidationReported:
        order = _field(document, "o")
        if not isinstance(order, dict):
            raise _Rejected("bad_value", "o: not an object")
        symbol = _symbol(order)
        side = _SIDES.get(_field(order, "S"))
        if side is None:
            raise _Rejected("bad_value", f"S: not BUY or SELL ({order.get('S')!r})")
        status = _field(order, "X")
        if not isinstance(status, str) or not status:
            raise _Rejected("bad_value", "X: not an order status")
        event_ms = _integer(document, "E")
        event = LiquidationReported(
            symbol=symbol,
            side=side,
            price=_price(order, "p"),
            average_price=_quantity(order, "ap"),
            quantity=_quantity(order, "q"),
            last_filled_quantity=_quantity(order, "l"),
            filled_quantity=_quantity(order, "z"),
            status=status,
            ts_event=_integer(order, "T") * NANOS_PER_MILLI,
            ts_init=ts_init,
        )
        self._advance("forceOrder", symbol, event_ms)
        return event


# --- field readers: each raises _Rejected naming the field ------------------------------


def _field(document: Mapping[str, Any], name: str) -> Any:
    try:
        return document[name]
    except KeyError:
        raise _Rejected("missing_field", f"{name}: missing") from None


def _symbol(document: Mapping[str, Any]) -> str:
    symbol = _field(document, "s")
    if not isinstance(symbol, str) or not symbol.isalnum():
        raise _Rejected("bad_value", f"s: not a symbol ({symbol!r})")
    return symbol


def _integer(document: Mapping[str, Any], name: str) -> int:
    value = _field(document, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Rejected("bad_value", f"{name}: not an integer ({value!r})")
    if value < 0:
        raise _Rejected("negative", f"{name}: negative ({value})")
    return value


def _boolean(document: Mapping[str, Any], name: str) -> bool:
    value = _field(document, name)
    if not isinstance(value, bool):
        raise _Rejected("bad_value", f"{name}: not true or false ({value!r})")
    return value


def _time(document: Mapping[str, Any], name: str, fallback: str, default: int | None = None) -> int:
    """Return a millisecond time field in ns (``fallback`` when ``name`` is absent)."""
    if name in document:
        return _integer(document, name) * NANOS_PER_MILLI
    if fallback in document or default is None:
        return _integer(document, fallback) * NANOS_PER_MILLI
    return default


def _number(document: Mapping[str, Any], name: str) -> float:
    value = _field(document, name)
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _Rejected("bad_value", f"{name}: not a number ({value!r})")
    try:
        number = float(value)
    except ValueError:
        raise _Rejected("bad_value", f"{name}: not a number ({value!r})") from None
    if not math.isfinite(number):
        raise _Rejected("not_finite", f"{name}: not finite ({value!r})")
    if number < 0:
        raise _Rejected("negative", f"{name}: negative ({value!r})")
    return number


def _price(document: Mapping[str, Any], name: str) -> float:
    price = _number(document, name)
    if price <= 0:
        raise _Rejected("non_positive_price", f"{name}: price must be positive ({price!r})")
    return price


def _quantity(document: Mapping[str, Any], name: str) -> float:
    return _number(document, name)


def _decimal(document: Mapping[str, Any], name: str, positive: bool) -> Decimal:
    value = _field(document, name)
    try:
        number = Decimal(value) if isinstance(value, str) else Decimal(repr(value))
    except (InvalidOperation, TypeError):
        raise _Rejected("bad_value", f"{name}: not a number ({value!r})") from None
    if not number.is_finite():
        raise _Rejected("not_finite", f"{name}: not finite ({value!r})")
    if positive and number <= 0:
        raise _Rejected("non_positive_price", f"{name}: price must be positive ({value!r})")
    return number


def _levels(raw: Any, tick_size: Decimal, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``[[price, quantity], ...]`` into (ticks, quantities), checking every value."""
    if not isinstance(raw, list):
        raise _Rejected("bad_value", f"{name}: not a list of levels")
    try:
        pairs = np.array(raw, dtype=np.float64).reshape(len(raw), 2) if raw else np.zeros((0, 2))
    except (ValueError, TypeError):
        raise _Rejected("bad_value", f"{name}: levels must be [price, quantity] pairs of numbers") from None
    prices, quantities = pairs[:, 0], pairs[:, 1]
    if not np.isfinite(pairs).all():
        raise _Rejected("not_finite", f"{name}: a price or quantity is not finite")
    if (quantities < 0).any():
        raise _Rejected("negative", f"{name}: a quantity is negative")
    if (prices <= 0).any():
        raise _Rejected("non_positive_price", f"{name}: a price is not positive")
    ticks, on_grid = prices_to_ticks(prices, tick_size)
    if not on_grid.all():
        raise _Rejected("off_tick_grid", f"{name}: price {prices[~on_grid][0]!r} is not on the tick grid {tick_size}")
    if len(np.unique(ticks)) != len(ticks):
        raise _Rejected("repeated_level", f"{name}: a price appears twice")
    return ticks, quantities
