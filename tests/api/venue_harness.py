"""The venue tests' helpers: the bundled real data as keel events, and a venue harness.

Prices come from the real files of ``data/SOURCES.md``: the BTCUSDT/ETHUSDT
1m bars of May 2025, the funding file (datasets 1, 3, 4), and the BTCUSDT
2024-08-08 order-book session with its trade tape (dataset 9), replayed
through :class:`keel.market_data.feeds.RecordedSessionFeed`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec

import kit
from keel.api.brackets import LeverageSchedule, load_leverage_schedule
from keel.api.simulated_exchange import SimulatedExchange
from keel.core.clock import NANOS_PER_MILLI, SimulatedClock
from keel.core.instruments import Instrument, load_instruments
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    Event,
    FundingRateUpdated,
    MarketDataEvent,
    MarkPriceUpdated,
    SubmitOrder,
    TradeTick,
)
from keel.core.orders import OrderSide, OrderType, TimeInForce
from keel.market_data.feeds import RecordedSessionFeed
from keel.market_data.loaders import load_funding

ROOT = Path(__file__).resolve().parents[2]
BARS_1M = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
FUNDING_FILE = ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz"
SESSION_DIR = ROOT / "data" / "orderbook" / "binance_usdm_BTCUSDT_2024-08-08"
SESSION_TRADES = ROOT / "data" / "trades" / "binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"
INSTRUMENTS_FILE = ROOT / "config" / "instruments.yaml"
BRACKETS_FILE = ROOT / "config" / "leverage_brackets.yaml"
MINUTE_NS = 60_000 * NANOS_PER_MILLI

T = TypeVar("T")


@functools.cache
def real_instruments() -> dict[str, Instrument]:
    """The instruments of config/instruments.yaml."""
    return load_instruments(INSTRUMENTS_FILE)


@functools.cache
def real_schedule() -> LeverageSchedule:
    """The brackets and liquidation fees of config/leverage_brackets.yaml."""
    return load_leverage_schedule(BRACKETS_FILE)


def real_bars(symbol: str, count: int = 600) -> tuple[BarClosed, ...]:
    """The first ``count`` real 1m bars of ``symbol``."""
    return kit.real_bars(symbol, count)


@functools.cache
def real_funding(symbol: str) -> tuple[FundingRateUpdated, ...]:
    """Every recorded funding settlement of ``symbol`` (mark price None where the file has none)."""
    frame = load_funding(FUNDING_FILE).frame
    events = []
    for row in frame[frame["symbol"] == symbol].itertuples(index=False):
        ts = int(row.time_ms) * NANOS_PER_MILLI
        mark = float(row.mark_price)
        events.append(
            FundingRateUpdated(
                symbol=symbol,
                funding_time=ts,
                rate=Decimal(repr(float(row.funding_rate))),
                mark_price=None if mark != mark else Decimal(repr(mark)),
                ts_event=ts,
                ts_init=ts,
            )
        )
    return tuple(events)


@functools.cache
def real_session() -> tuple[MarketDataEvent, ...]:
    """The BTCUSDT 2024-08-08 session: books (top 20) and prints, in exchange-time order."""
    feed = RecordedSessionFeed(SESSION_DIR, SESSION_TRADES, depth=20)
    return tuple(e for e in feed if isinstance(e, BookUpdated | TradeTick))


def with_funding(bars: Iterable[BarClosed]) -> list[BarClosed | FundingRateUpdated]:
    """The bars with the real funding settlements of their symbols inside their span, in feed order.

    A settlement at a bar's close time comes after the bar, as in the recorded feed.
    """
    bars = list(bars)
    symbols = {b.symbol for b in bars}
    first, last = min(b.open_time for b in bars), max(b.ts_event for b in bars)
    funding = [e for s in symbols for e in real_funding(s) if first < e.funding_time <= last]
    merged: list[BarClosed | FundingRateUpdated] = [*bars, *funding]
    return sorted(merged, key=lambda e: (e.ts_event, isinstance(e, FundingRateUpdated)))


def money(value: float) -> Decimal:
    """The decimal a recorded float was written as."""
    return Decimal(repr(value))


def run_now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine of the synchronous venue to its result; it must never suspend."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("the simulated exchange suspended although is_synchronous is True")


def strip_ids(events: Iterable[Event]) -> list[dict[str, Any]]:
    """The reports as plain data without their process-wide message ids (for comparing two runs)."""
    stripped = []
    for event in events:
        data = msgspec.to_builtins(event)
        data.pop("id")
        data["type"] = type(event).__name__
        stripped.append(data)
    return stripped


class Harness:
    """A simulated exchange on a simulated clock, fed real events, with every report collected."""

    def __init__(self, start_ns: int, **settings: Any) -> None:
        settings.setdefault("initial_balance", Decimal("10000"))
        settings.setdefault("schedule", real_schedule())
        instruments = settings.pop("instruments", real_instruments())
        self.clock = SimulatedClock(start_ns)
        self.exchange = SimulatedExchange(instruments, self.clock, **settings)
        self.reports: list[Event] = []
        self.exchange.set_report_handler(self.reports.append)
        self._ids = iter(range(1, 1_000_000))

    def feed(self, *events: MarketDataEvent) -> None:
        for event in events:
            self.clock.advance_to(max(self.clock.timestamp_ns(), event.ts_event))
            if isinstance(event, BarClosed):
                self.exchange.on_bar(event)
            elif isinstance(event, BookUpdated):
                self.exchange.on_book(event)
            elif isinstance(event, TradeTick):
                self.exchange.on_trade(event)
            elif isinstance(event, MarkPriceUpdated):
                self.exchange.on_mark_price(event)
            elif isinstance(event, FundingRateUpdated):
                self.exchange.on_funding(event)

    def of_type(self, kind: type[T]) -> list[T]:
        return [r for r in self.reports if isinstance(r, kind)]

    def order(
        self, side: OrderSide, quantity: str, order_type: OrderType = OrderType.MARKET, **fields: Any
    ) -> SubmitOrder:
        now = self.clock.timestamp_ns()
        fields.setdefault("client_order_id", f"o-{next(self._ids)}")
        fields.setdefault("symbol", "BTCUSDT")
        return SubmitOrder(
            side=side, order_type=order_type, quantity=Decimal(quantity), ts_event=now, ts_init=now, **fields
        )

    def submit(
        self, side: OrderSide, quantity: str, order_type: OrderType = OrderType.MARKET, **fields: Any
    ) -> SubmitOrder:
        command = self.order(side, quantity, order_type, **fields)
        self.exchange.submit(command)
        return command

    def limit(
        self, side: OrderSide, quantity: str, price: str | Decimal, tif: TimeInForce = TimeInForce.GTC, **fields: Any
    ) -> SubmitOrder:
        return self.submit(side, quantity, OrderType.LIMIT, price=Decimal(price), time_in_force=tif, **fields)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return run_now(coroutine)


HarnessFactory = Callable[..., Harness]
