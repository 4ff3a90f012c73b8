"""The market-data side of the local Binance: combined streams and depth snapshots replayed from real data.

A :class:`LocalMarket` plays a tape of Binance payloads to the WebSocket
clients of ``/stream?streams=a/b/c`` (at most 200 streams per connection, as
Binance allows) and answers ``GET /fapi/v1/depth`` from its own order book,
which follows the diffs it has played, and ``GET /fapi/v1/klines`` from the
closed klines of the tape before its position (:meth:`LocalMarket.start_at`
makes the start of a tape history: served as klines, never played). Two tapes:

* :func:`capture_tape`: the real raw capture ``data/orderbook/raw/*.jsonl.gz``
  (depth at 0 ms, trades, ``bookTicker``), starting at its REST snapshot. The
  0 ms diffs are merged into 100 ms ones, as Binance does for ``depth@100ms``
  (first ``U`` and ``pu``, last ``u``, each level's last quantity); each trade
  becomes a one-trade ``aggTrade``; closed 1m klines are built from the
  trades of each whole minute (with an open kline update every 500 trades).
  The capture has no mark prices, so none are played.
* :func:`bar_tape`: the bundled 1m bars as closed klines, each followed by a
  ``markPriceUpdate`` marking to the bar's close and carrying the recorded
  funding rate of the symbol's next funding time; one second before each
  funding time, a ``markPriceUpdate`` at the recorded mark price of that
  funding. Where the funding file has no next funding, no mark prices are played.

Whatever is played is also parsed with keel's own stream code
(:class:`~keel.api.binance.streams.MarketStreamState`) and fed to the local
Binance's :class:`SimulatedExchange`, so its fills happen at the prices it streams.

Fault injection: :meth:`LocalMarket.drop_mid_message` (the next message is
cut mid-frame and the TCP connection closed), :attr:`LocalMarket.gap_diffs`
(depth diffs applied to the local book but not sent: a sequence gap),
:meth:`LocalMarket.force_disconnect` (Binance's 24-hour close; or at chosen tape
positions of :meth:`LocalMarket.run` through :attr:`LocalMarket.disconnect_at`),
:attr:`LocalMarket.delay_seconds` (a pause before each message) and
:meth:`LocalMarket.inject` (any text, e.g. malformed JSON).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from keel.api.binance.streams import MAX_STREAMS_PER_CONNECTION, MarketStreamState
from keel.api.simulated_exchange import SimulatedExchange
from keel.core.clock import NANOS_PER_MILLI, SimulatedClock
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    FundingRateUpdated,
    MarketDataEvent,
    MarkPriceUpdated,
    TradeTick,
)
from keel.market_data.feeds import RecordedBarFeed
from keel.market_data.loaders import load_funding
from keel.market_data.order_book import BookSyncState

_MINUTE_MS = 60_000
_DIFF_WINDOW_MS = 100
_OPEN_KLINE_EVERY = 500
FUNDING_PERIOD_MS = 8 * 3_600_000


@dataclass(frozen=True, slots=True)
class TapeMessage:
    """One payload of a combined stream, due at ``ts_ms`` (exchange time)."""

    ts_ms: int
    stream: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Tape:
    """Messages in play order, and the REST depth snapshot each symbol's book starts from."""

    messages: list[TapeMessage]
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)

    def shifted(self, offset_ms: int) -> Tape:
        """Return the tape with every time moved by ``offset_ms`` (keep it a multiple of 8 h for funding times)."""
        return Tape(
            [TapeMessage(m.ts_ms + offset_ms, m.stream, _shift(m.payload, offset_ms)) for m in self.messages],
            {symbol: _shift(snapshot, offset_ms) for symbol, snapshot in self.snapshots.items()},
        )

    def starting_from(self, now_ms: int) -> Tape:
        """Return the tape moved by whole 8-hour funding periods so that it starts at or after ``now_ms``.

        Played this way, a recording looks live to a client whose clock is the wall clock.
        """
        if not self.messages:
            return self
        periods = -(-(now_ms - self.messages[0].ts_ms) // FUNDING_PERIOD_MS)
        return self.shifted(max(periods, 0) * FUNDING_PERIOD_MS)


def _shift(payload: dict[str, Any], offset_ms: int) -> dict[str, Any]:
    moved = dict(payload)
    for name in ("E", "T"):
        if name in moved:
            moved[name] = int(moved[name]) + offset_ms
    if isinstance(moved.get("k"), dict):
        moved["k"] = {**moved["k"], "t": moved["k"]["t"] + offset_ms, "T": moved["k"]["T"] + offset_ms}
    return moved


def _merge_diffs(window: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge consecutive 0 ms diff events into one, as Binance's 100 ms stream does."""
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    for event in window:
        bids.update((price, quantity) for price, quantity in event["b"])
        asks.update((price, quantity) for price, quantity in event["a"])
    first, last = window[0], window[-1]
    return {
        "e": "depthUpdate",
        "E": last["E"],
        "T": last["T"],
        "s": last["s"],
        "U": first["U"],
        "u": last["u"],
        "pu": first["pu"],
        "b": [list(level) for level in bids.items()],
        "a": [list(level) for level in asks.items()],
    }


def _kline(symbol: str, open_ms: int, trades: list[dict[str, Any]], closed: bool) -> dict[str, Any]:
    prices = [Decimal(t["p"]) for t in trades]
    volume = sum((Decimal(t["q"]) for t in trades), Decimal(0))
    end_ms = open_ms + _MINUTE_MS
    return {
        "e": "kline",
        "E": end_ms if closed else trades[-1]["E"],
        "s": symbol,
        "k": {
            "t": open_ms,
            "T": end_ms - 1,
            "s": symbol,
            "i": "1m",
            "f": trades[0]["t"],
            "L": trades[-1]["t"],
            "o": str(prices[0]),
            "c": str(prices[-1]),
            "h": str(max(prices)),
            "l": str(min(prices)),
            "v": str(volume),
            "n": len(trades),
            "x": closed,
        },
    }


def _aggregate_trade(trade: dict[str, Any]) -> dict[str, Any]:
    return {
        "e": "aggTrade",
        "E": trade["E"],
        "s": trade["s"],
        "a": trade["t"],
        "p": trade["p"],
        "q": trade["q"],
        "f": trade["t"],
        "l": trade["t"],
        "T": trade["T"],
        "m": trade["m"],
    }


def capture_tape(path: str | Path) -> Tape:
    """Read a raw capture (``<ns> <json>`` lines) into a tape starting at its REST snapshot.

    Raises
    ------
    ValueError
        If the capture holds no REST snapshot or no depth stream.
    """
    lines = []
    with gzip.open(path, "rt") as file:
        for line in file:
            _, _, text = line.partition(" ")
            lines.append(json.loads(text))
    snapshot = next((doc for doc in lines if "lastUpdateId" in doc), None)
    symbols = {doc["data"]["s"] for doc in lines if doc.get("data", {}).get("e") == "depthUpdate"}
    if snapshot is None or len(symbols) != 1:
        raise ValueError(f"{path}: a capture needs one REST depth snapshot and the depth stream of one symbol")
    symbol = symbols.pop()
    lower = symbol.lower()
    start_ms = int(snapshot["E"])
    messages: list[TapeMessage] = []
    window: list[dict[str, Any]] = []
    trades: list[dict[str, Any]] = []
    minute = -1

    def flush_window() -> None:
        if window:
            merged = _merge_diffs(window)
            messages.append(TapeMessage(int(merged["E"]), f"{lower}@depth@100ms", merged))
            window.clear()

    # Diffs received before the snapshot's answer may already be past it: they are kept by update id.
    for doc in lines:
        data = doc.get("data")
        if not isinstance(data, dict):
            continue
        kind, ts = data.get("e"), int(data.get("E", 0))
        if kind == "depthUpdate":
            if data["u"] < snapshot["lastUpdateId"]:
                continue
            if window and ts // _DIFF_WINDOW_MS != window[0]["E"] // _DIFF_WINDOW_MS:
                flush_window()
            window.append(data)
            continue
        flush_window()
        if ts < start_ms:
            continue
        if kind == "bookTicker":
            messages.append(TapeMessage(ts, f"{lower}@bookTicker", data))
        elif kind == "trade":
            trade_minute = int(data["T"]) // _MINUTE_MS
            if trade_minute != minute:
                if minute >= 0 and trades and minute * _MINUTE_MS >= start_ms:
                    # A minute the capture saw whole: its closed kline.
                    kline = _kline(symbol, minute * _MINUTE_MS, trades, closed=True)
                    messages.append(TapeMessage(kline["E"], f"{lower}@kline_1m", kline))
                minute, trades = trade_minute, []
            trades.append(data)
            messages.append(TapeMessage(ts, f"{lower}@aggTrade", _aggregate_trade(data)))
            if len(trades) % _OPEN_KLINE_EVERY == 0:
                kline = _kline(symbol, minute * _MINUTE_MS, trades, closed=False)
                messages.append(TapeMessage(ts, f"{lower}@kline_1m", kline))
    flush_window()
    return Tape(messages, {symbol: snapshot})


def bar_tape(
    bars_dir: str | Path,
    symbols: Sequence[str],
    funding_file: str | Path | None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> Tape:
    """Build a tape of closed 1m klines and mark prices from the bundled bars and funding file."""
    feed = RecordedBarFeed(bars_dir, symbols, "1m", None, start_ns, end_ns)
    fundings: dict[str, list[tuple[int, str, str]]] = {symbol: [] for symbol in symbols}
    if funding_file is not None:
        frame = load_funding(funding_file).frame
        for symbol, time_ms, rate, mark in zip(
            frame["symbol"], frame["time_ms"], frame["funding_rate"], frame["mark_price"], strict=True
        ):
            if symbol in fundings and mark == mark:
                fundings[symbol].append((int(time_ms), repr(float(rate)), repr(float(mark))))
    keyed: list[tuple[int, int, TapeMessage]] = []
    settled: set[tuple[str, int]] = set()
    for event in feed:
        if not isinstance(event, BarClosed):
            continue
        close_ms = event.ts_event // NANOS_PER_MILLI
        lower = event.symbol.lower()
        payload = {
            "e": "kline",
            "E": close_ms,
            "s": event.symbol,
            "k": {
                "t": close_ms - _MINUTE_MS,
                "T": close_ms - 1,
                "s": event.symbol,
                "i": "1m",
                "o": repr(event.open),
                "c": repr(event.close),
                "h": repr(event.high),
                "l": repr(event.low),
                "v": repr(event.volume),
                "x": True,
            },
        }
        keyed.append((close_ms, 0, TapeMessage(close_ms, f"{lower}@kline_1m", payload)))
        upcoming = next((row for row in fundings[event.symbol] if row[0] > close_ms), None)
        due = next((row for row in fundings[event.symbol] if close_ms - _MINUTE_MS < row[0] <= close_ms), None)
        if due is not None and (event.symbol, due[0]) not in settled:
            settled.add((event.symbol, due[0]))
            mark = _mark_price(event.symbol, due[0] - 1000, due[2], due[1], due[0])
            keyed.append((due[0] - 1000, 1, TapeMessage(due[0] - 1000, f"{lower}@markPrice@1s", mark)))
        if upcoming is not None:
            # In the second before a settlement the mark is the settlement's (the last one streamed before it).
            price = upcoming[2] if close_ms >= upcoming[0] - 1000 else repr(event.close)
            mark = _mark_price(event.symbol, close_ms, price, upcoming[1], upcoming[0])
            keyed.append((close_ms, 1, TapeMessage(close_ms, f"{lower}@markPrice@1s", mark)))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return Tape([message for _, _, message in keyed])


def _kline_row(kline: dict[str, Any]) -> list[Any]:
    """Return a stream kline as a row of Binance's REST klines answer."""
    prices = [kline[name] for name in ("o", "h", "l", "c")]
    return [kline["t"], *prices, kline["v"], kline["T"], "0", kline.get("n", 0), "0", "0", "0"]


def _mark_price(symbol: str, ts_ms: int, price: str, rate: str, next_funding_ms: int) -> dict[str, Any]:
    return {
        "e": "markPriceUpdate",
        "E": ts_ms,
        "s": symbol,
        "p": price,
        "i": price,
        "P": price,
        "r": rate,
        "T": next_funding_ms,
    }


@dataclass(slots=True)
class _Subscriber:
    socket: web.WebSocketResponse
    request: web.Request
    streams: frozenset[str]


class LocalMarket:
    """Plays a :class:`Tape` to combined-stream clients and serves depth snapshots from its book.

    Parameters
    ----------
    tape
        What to play.
    tick_sizes
        Tick size of every symbol on the tape.
    exchange, clock
        The local Binance's venue and clock: fed every played event (None: not fed).
    """

    def __init__(
        self,
        tape: Tape,
        tick_sizes: dict[str, Decimal],
        exchange: SimulatedExchange | None = None,
        clock: SimulatedClock | None = None,
    ) -> None:
        self.tape = tape
        self.exchange = exchange
        self.clock = clock
        self.state = MarketStreamState(tick_sizes, book_depth=20)
        for symbol, snapshot in tape.snapshots.items():
            self.state.books[symbol].apply_snapshot(
                int(snapshot["lastUpdateId"]),
                [(Decimal(p), Decimal(q)) for p, q in snapshot["bids"]],
                [(Decimal(p), Decimal(q)) for p, q in snapshot["asks"]],
            )
        self.position = 0
        self.subscribers: list[_Subscriber] = []
        self.connections_made = 0
        self.refused_connections = 0
        self.snapshots_served = 0
        self.gap_diffs = 0
        self.diffs_withheld = 0
        self.delay_seconds = 0.0
        self.disconnect_at: set[int] = set()
        self.drop_handshakes = 0
        self._drop_next = False
        self._changed = asyncio.Condition()
        self.finished = asyncio.Event()
        self._dispatch: dict[type[MarketDataEvent], Callable[[Any], None]] = {}
        if exchange is not None:
            self._dispatch = {
                BarClosed: exchange.on_bar,
                BookUpdated: exchange.on_book,
                TradeTick: exchange.on_trade,
                MarkPriceUpdated: exchange.on_mark_price,
                FundingRateUpdated: exchange.on_funding,
            }

    @property
    def now_ms(self) -> int:
        """Return the exchange time of the last played message (the first one's before any)."""
        messages = self.tape.messages
        if not messages:
            return 0
        return messages[max(self.position - 1, 0)].ts_ms

    # --- HTTP side ---------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Serve ``/stream?streams=a/b/c``: refuse more than 200 streams, else play to the client until it leaves."""
        names = [name for name in request.query.get("streams", "").split("/") if name]
        if self.drop_handshakes > 0 and request.transport is not None:
            self.drop_handshakes -= 1  # closed in the handshake, before any answer
            request.transport.close()
            return web.Response()
        if not names or len(names) > MAX_STREAMS_PER_CONNECTION:
            self.refused_connections += 1
            return web.json_response(
                {"code": -1121, "msg": f"{len(names)} streams: one connection takes 1 to 200"}, status=400
            )
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        subscriber = _Subscriber(socket, request, frozenset(names))
        self.subscribers.append(subscriber)
        self.connections_made += 1
        async with self._changed:
            self._changed.notify_all()
        try:
            async for _ in socket:
                pass
        finally:
            if subscriber in self.subscribers:
                self.subscribers.remove(subscriber)
        return socket

    def depth_snapshot(self, symbol: str, limit: int) -> dict[str, Any] | None:
        """Return the REST depth answer of ``symbol`` from the local book (None: not on the tape)."""
        book = self.state.books.get(symbol)
        if book is None or book.state is BookSyncState.AWAITING_SNAPSHOT:
            return None
        bids, asks = book.top(limit)
        self.snapshots_served += 1
        now = self.now_ms
        return {
            "lastUpdateId": book.last_update_id,
            "E": now,
            "T": now,
            "bids": [[str(price), str(quantity)] for price, quantity in bids],
            "asks": [[str(price), str(quantity)] for price, quantity in asks],
        }

    def start_at(self, position: int) -> None:
        """Play from tape ``position`` on: the messages before it are the market's past, served only as klines."""
        self.position = position

    def klines(
        self, symbol: str, interval: str, limit: int, start_ms: int | None, end_ms: int | None
    ) -> list[list[Any]] | None:
        """Return the REST klines answer of ``symbol`` from the closed klines before the tape position.

        As Binance: klines opened from ``start_ms`` to ``end_ms``, the first
        ``limit`` of them with a start time, else the last ``limit``. None: not on the tape.
        """
        if symbol not in self.state.books:
            return None
        stream = f"{symbol.lower()}@kline_{interval}"
        rows = []
        for message in self.tape.messages[: self.position]:
            kline = message.payload.get("k")
            if message.stream != stream or not isinstance(kline, dict) or not kline.get("x"):
                continue
            opened = kline["t"]
            if (start_ms is None or opened >= start_ms) and (end_ms is None or opened <= end_ms):
                rows.append(_kline_row(kline))
        return rows[:limit] if start_ms is not None else rows[-limit:]

    def funding_rates(self, symbol: str, start_ms: int | None, end_ms: int | None) -> list[dict[str, Any]]:
        """Return the market's funding settlements of ``symbol`` from ``start_ms`` to ``end_ms``, oldest first.

        A settlement is the funding time of a played mark-price message that
        the tape has passed, with the rate and mark price of the last
        mark-price message before it (what Binance settles).
        """
        stream = f"{symbol.lower()}@markPrice@1s"
        now = self.now_ms
        last: dict[int, tuple[str, str]] = {}
        for message in self.tape.messages[: self.position]:
            if message.stream == stream and message.ts_ms < int(message.payload["T"]) <= now:
                last[int(message.payload["T"])] = (str(message.payload["r"]), str(message.payload["p"]))
        return [
            {"symbol": symbol, "fundingTime": time_ms, "fundingRate": rate, "markPrice": mark}
            for time_ms, (rate, mark) in sorted(last.items())
            if (start_ms is None or time_ms >= start_ms) and (end_ms is None or time_ms <= end_ms)
        ]

    async def wait_for_connections(self, count: int) -> None:
        """Return once ``count`` clients are connected."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.subscribers) >= count)

    # --- playing -------------------------------------------------------------------------

    async def play(self, count: int | None = None) -> int:
        """Play the next ``count`` messages (all left when None); return how many were played."""
        messages = self.tape.messages
        end = len(messages) if count is None else min(len(messages), self.position + count)
        played = 0
        while self.position < end:
            message = messages[self.position]
            self.position += 1
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            await self._play(message)
            played += 1
        if self.position >= len(messages):
            self.finished.set()
        return played

    async def run(self, speed: float | None = None, first_clients: int = 1) -> None:
        """Wait for ``first_clients`` connections, then play the tape (``speed`` times real time; None: at once).

        Playing pauses while no client is connected, and closes every connection
        before the positions in :attr:`disconnect_at`.
        """
        await self.wait_for_connections(first_clients)
        loop = asyncio.get_running_loop()
        messages = self.tape.messages
        started, origin = loop.time(), messages[self.position].ts_ms if self.position < len(messages) else 0
        while self.position < len(messages):
            if self.position in self.disconnect_at:
                self.disconnect_at.discard(self.position)
                await self.force_disconnect()
            if not self.subscribers:
                # A tape pauses while nobody listens, so a reconnecting client misses nothing but the book's diffs.
                await self.wait_for_connections(first_clients)
            if speed is not None:
                due = started + (messages[self.position].ts_ms - origin) / 1000 / speed
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
            await self.play(1)
            # Let the clients read what was sent before the next message.
            await asyncio.sleep(0)
        self.finished.set()

    async def _play(self, message: TapeMessage) -> None:
        text = json.dumps({"stream": message.stream, "data": message.payload}, separators=(",", ":"))
        self._feed_venue(message, text)
        if self.gap_diffs and "@depth" in message.stream:
            self.gap_diffs -= 1
            self.diffs_withheld += 1
            return
        await self._send(message.stream, text)

    def _feed_venue(self, message: TapeMessage, text: str) -> None:
        ts = message.ts_ms * NANOS_PER_MILLI
        if self.clock is not None and ts > self.clock.timestamp_ns():
            self.clock.advance_to(ts)
        for event in self.state.on_message(text, ts):
            handler = self._dispatch.get(type(event))
            if handler is not None:
                handler(event)

    async def _send(self, stream: str, text: str) -> None:
        for subscriber in list(self.subscribers):
            if stream not in subscriber.streams or subscriber.socket.closed:
                continue
            if self._drop_next:
                self._cut(subscriber, text)
                continue
            await subscriber.socket.send_str(text)
        self._drop_next = False

    def _cut(self, subscriber: _Subscriber, text: str) -> None:
        """Send half of a text frame, then close the TCP connection (a connection dropped mid-message)."""
        data = text.encode()
        header = (
            b"\x81\x7e" + struct.pack("!H", len(data))
            if len(data) < 65_536
            else b"\x81\x7f" + struct.pack("!Q", len(data))
        )
        transport = subscriber.request.transport
        if transport is not None:
            transport.write(header + data[: len(data) // 2])
            transport.close()
        self.subscribers.remove(subscriber)

    def drop_mid_message(self) -> None:
        """Cut the next message mid-frame on every connection that would receive it."""
        self._drop_next = True

    async def force_disconnect(self) -> None:
        """Close every market-stream connection, as Binance does after 24 hours."""
        subscribers, self.subscribers = self.subscribers, []
        for subscriber in subscribers:
            await subscriber.socket.close()

    async def inject(self, text: str) -> None:
        """Send ``text`` as is to every connection (e.g. a malformed message)."""
        for subscriber in list(self.subscribers):
            if not subscriber.socket.closed:
                await subscriber.socket.send_str(text)
