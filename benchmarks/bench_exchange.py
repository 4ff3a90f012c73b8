"""Cost of the simulated exchange per market event, on the bundled real data.

Book: the BTCUSDT 2024-08-08 session (books of 20 levels and prints, about
28k events) replayed through the venue while it works orders: a post-only
order joins each side of the touch every 50 books (older ones canceled) and a
small market order walks the book every 200 events. Bars: the 43k BTCUSDT 1m
bars of May 2025 (with their funding); every 30 bars one market order and one
resting limit (the previous one canceled). The bar run is measured twice: in
memory, and durable, with a :class:`~keel.api.venue_store.VenueStore` attached
(one SQLite transaction per venue operation, in a temporary directory).

The reference, measured in the same run, is a plain float implementation of
the same fill rules (book walk, queue and trade-through checks) with no
decimals, validation, margin or reports: the price of keel's exact,
Binance-faithful accounting.

Prints one JSON line. ``--quick`` replays a few thousand events once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

from keel.api.brackets import load_leverage_schedule
from keel.api.simulated_exchange import SimulatedExchange
from keel.api.venue_store import VenueStore
from keel.core.clock import SimulatedClock, datetime_to_ns
from keel.core.instruments import load_instruments
from keel.core.messages import BarClosed, BookUpdated, FundingRateUpdated, MarketDataEvent, SubmitOrder, TradeTick
from keel.core.orders import OrderSide, OrderType, TimeInForce
from keel.market_data.feeds import RecordedBarFeed, RecordedSessionFeed

ROOT = Path(__file__).resolve().parents[1]
SESSION = ROOT / "data" / "orderbook" / "binance_usdm_BTCUSDT_2024-08-08"
TRADES = ROOT / "data" / "trades" / "binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"
BARS = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
FUNDING = ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz"


def venue(start_ns: int) -> tuple[SimulatedExchange, SimulatedClock, list[object]]:
    clock = SimulatedClock(start_ns)
    exchange = SimulatedExchange(
        load_instruments(ROOT / "config" / "instruments.yaml"),
        clock,
        initial_balance=Decimal("10000000"),
        schedule=load_leverage_schedule(ROOT / "config" / "leverage_brackets.yaml"),
        participation_rate=Decimal("0.1"),
    )
    reports: list[object] = []
    exchange.set_report_handler(reports.append)
    return exchange, clock, reports


def command(
    ids: count, ts: int, side: OrderSide, order_type: OrderType, quantity: str, **fields: object
) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=f"b-{next(ids)}",
        symbol="BTCUSDT",
        side=side,
        order_type=order_type,
        quantity=Decimal(quantity),
        ts_event=ts,
        ts_init=ts,
        **fields,  # type: ignore[arg-type]
    )


def run_venue_book(events: list[MarketDataEvent]) -> tuple[float, int]:
    exchange, clock, reports = venue(events[0].ts_event)
    ids = count(1)
    books = 0
    started = time.perf_counter()
    for index, event in enumerate(events):
        clock.advance_to(event.ts_event)
        if isinstance(event, BookUpdated):
            exchange.on_book(event)
            books += 1
            if books % 50 == 0:
                _requote(exchange, ids, event)
        else:
            exchange.on_trade(event)  # type: ignore[arg-type]
        if index % 200 == 199:
            side = OrderSide.BUY if index % 400 == 199 else OrderSide.SELL
            exchange.submit(command(ids, event.ts_event, side, OrderType.MARKET, "0.050"))
    elapsed = time.perf_counter() - started
    return elapsed / len(events) * 1e6, sum(1 for r in reports if type(r).__name__ == "OrderFilled")


def _requote(exchange: SimulatedExchange, ids: count, book: BookUpdated) -> None:
    _run(exchange.cancel_all_orders("BTCUSDT"))
    bid, ask = Decimal(repr(book.bids[0][0])), Decimal(repr(book.asks[0][0]))
    buy = command(ids, book.ts_event, OrderSide.BUY, OrderType.LIMIT, "0.100", price=bid, time_in_force=TimeInForce.GTX)
    sell = command(
        ids, book.ts_event, OrderSide.SELL, OrderType.LIMIT, "0.100", price=ask, time_in_force=TimeInForce.GTX
    )
    exchange.submit(buy)
    exchange.submit(sell)


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Drive a coroutine of the synchronous venue (it never suspends)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return


def run_plain_book(events: list[MarketDataEvent]) -> float:
    """The same fill rules in floats: walk the book, queue behind displayed size, fill on prints."""
    bids: tuple[tuple[float, float], ...] = ()
    asks: tuple[tuple[float, float], ...] = ()
    resting: list[list[float]] = []  # [side, price, quantity, queue]
    books = fills = 0
    position = cash = 0.0
    started = time.perf_counter()
    for index, event in enumerate(events):
        if isinstance(event, BookUpdated):
            bids, asks = event.bids, event.asks
            books += 1
            for order in resting:
                levels = bids if order[0] > 0 else asks
                shown = next((q for p, q in levels if p == order[1]), None)
                if shown is not None and shown < order[3]:
                    order[3] = shown
            if books % 50 == 0:
                resting = [[1.0, bids[0][0], 0.1, bids[0][1]], [-1.0, asks[0][0], 0.1, asks[0][1]]]
        else:
            trade: TradeTick = event  # type: ignore[assignment]
            for order in resting:
                if order[2] <= 0 or (order[0] > 0) == (trade.aggressor_side is OrderSide.BUY):
                    continue
                volume = trade.quantity
                if trade.price == order[1]:
                    reached = max(volume - order[3], 0.0)
                    order[3] = max(order[3] - volume, 0.0)
                elif (trade.price < order[1]) == (order[0] > 0):
                    reached, order[3] = volume, 0.0
                else:
                    continue
                filled = min(reached, order[2])
                if filled > 0:
                    order[2] -= filled
                    position += order[0] * filled
                    cash -= order[0] * filled * order[1]
                    fills += 1
        if index % 200 == 199:
            levels = asks if index % 400 == 199 else bids
            remaining = 0.05
            for price, quantity in levels:
                taken = min(quantity, remaining)
                cash += price * taken
                remaining -= taken
                fills += 1
                if remaining <= 0:
                    break
    return (time.perf_counter() - started) / len(events) * 1e6


def bar_events(quick: bool) -> list[BarClosed | FundingRateUpdated]:
    """BTCUSDT 1m bars with their recorded funding, up to where the funding file ends (2025-06-03 08:00)."""
    end = datetime(2025, 5, 7, tzinfo=UTC) if quick else datetime(2025, 6, 3, 8, tzinfo=UTC)
    feed = RecordedBarFeed(BARS, ["BTCUSDT"], "1m", FUNDING, end_ns=datetime_to_ns(end))
    return list(feed)  # type: ignore[arg-type]


def run_durable_venue_bars(events: list[BarClosed | FundingRateUpdated]) -> float:
    """The bar run with every venue transaction committed to a venue store."""
    with tempfile.TemporaryDirectory() as directory:
        store = VenueStore(Path(directory) / "venue.sqlite")
        try:
            return run_venue_bars(events, store)
        finally:
            store.close()


def run_venue_bars(events: list[BarClosed | FundingRateUpdated], store: VenueStore | None = None) -> float:
    exchange, clock, _ = venue(events[0].ts_event)
    if store is not None:
        store.attach(exchange)
    ids = count(1)
    bars = 0
    started = time.perf_counter()
    for event in events:
        clock.advance_to(event.ts_event)
        if isinstance(event, FundingRateUpdated):
            exchange.on_funding(event)
            continue
        exchange.on_bar(event)
        bars += 1
        if bars % 30 == 0:
            _run(exchange.cancel_all_orders("BTCUSDT"))
            side = OrderSide.BUY if bars % 60 == 0 else OrderSide.SELL
            exchange.submit(command(ids, event.ts_event, side, OrderType.MARKET, "0.010"))
            price = Decimal(repr(event.close)) - Decimal("20")
            exchange.submit(command(ids, event.ts_event, OrderSide.BUY, OrderType.LIMIT, "0.010", price=price))
    return (time.perf_counter() - started) / bars * 1e6


def run_plain_bars(events: list[BarClosed | FundingRateUpdated]) -> float:
    bars = [e for e in events if isinstance(e, BarClosed)]
    started = time.perf_counter()
    pending_market = 0.0
    limits: list[float] = []
    position = cash = 0.0
    for index, bar in enumerate(bars):
        if pending_market:
            price = bar.open * (1 + 0.0001 * (1 if pending_market > 0 else -1))
            position += pending_market
            cash -= pending_market * price
            pending_market = 0.0
        kept = []
        for limit in limits:
            if bar.low < limit:
                position += 0.01
                cash -= 0.01 * limit
            else:
                kept.append(limit)
        limits = kept
        if index % 30 == 0:
            pending_market = 0.01 if index % 60 == 0 else -0.01
            limits = [bar.close - 20]
    return (time.perf_counter() - started) / len(bars) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few thousand events, one repeat")
    args = parser.parse_args()
    feed = RecordedSessionFeed(SESSION, TRADES, depth=20)
    events = [e for e in feed if isinstance(e, BookUpdated | TradeTick)]
    bars = bar_events(args.quick)
    if args.quick:
        events = events[:4000]
    repeats = 1 if args.quick else 3
    book_runs = [run_venue_book(events) for _ in range(repeats)]
    venue_book = statistics.median(us for us, _ in book_runs)
    plain_book = statistics.median(run_plain_book(events) for _ in range(repeats))
    venue_bars = statistics.median(run_venue_bars(bars) for _ in range(repeats))
    durable_bars = statistics.median(run_durable_venue_bars(bars) for _ in range(repeats))
    plain_bars = statistics.median(run_plain_bars(bars) for _ in range(repeats))
    print(
        json.dumps(
            {
                "benchmark": "exchange",
                "book_events": len(events),
                "book_fills": book_runs[0][1],
                "venue_us_per_book_event": round(venue_book, 2),
                "plain_float_us_per_book_event": round(plain_book, 2),
                "book_cost_ratio": round(venue_book / plain_book, 1),
                "bars": sum(1 for e in bars if isinstance(e, BarClosed)),
                "venue_us_per_bar": round(venue_bars, 2),
                "durable_venue_us_per_bar": round(durable_bars, 2),
                "plain_float_us_per_bar": round(plain_bars, 2),
                "bar_cost_ratio": round(venue_bars / plain_bars, 1),
                "repeats": repeats,
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
