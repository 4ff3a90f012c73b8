"""Market-data layer speed on the real BTCUSDT 2024-08-08 session: book, analyzers, whole replay.

Every depth diff event of the session is applied to keel's OrderBook and
published as a ``BookUpdated`` (the "book update"); then each analyzer runs
on the events it reads: the OrderBookAnalyzer on every book, the
TickDataAnalyzer on every trade, the MarketImpactModel's observation
collector on books and trades, the LiquidityProfiler on the 1m bars built
from the trades, and the snapshot (with an impact estimate from a model
calibrated on the session) once per second of exchange time. Each part is
timed in its own loop over pre-built inputs and reported as mean microseconds per depth event (its total time divided by
the number of depth events), so the parts add up to the cost per depth event
of book update plus all analyzers; the goal is <= 20 us.

The book and its analyzer are timed per event inside one loop (the timer's
own cost is subtracted). Like every other timed loop here, and like a real
consumer (which holds only the latest book and metrics), that loop keeps no
event, so the garbage collector is not charged for every book of the session
kept alive; an untimed second pass keeps them as the other parts' inputs.

Two references run in the same process: a plain book (a dict per side, exact
Decimal prices and quantities, the top 20 levels by heapq) on the same events,
and the whole replay through keel's RecordedSessionFeed, event bus and
MicrostructureEngine (events/s).

Prints one JSON line. ``--quick`` replays the first 1,000 depth events once.
Profile with ``pyinstrument benchmarks/bench_market_data.py --quick``.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

import pandas as pd

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_SECOND, SimulatedClock
from keel.core.messages import BookUpdated, MarketDataEvent, TradeTick
from keel.market_data.bars import TimeBarAggregator
from keel.market_data.book_analyzer import OrderBookAnalyzer
from keel.market_data.feeds import RecordedSessionFeed
from keel.market_data.impact import ImpactCollector, MarketImpactModel
from keel.market_data.liquidity import LiquidityProfiler
from keel.market_data.microstructure import MicrostructureEngine, SymbolAnalyzers
from keel.market_data.order_book import DiffResult, OrderBook
from keel.market_data.sessions import RecordedSession
from keel.market_data.tick_analyzer import TickDataAnalyzer

ROOT = Path(__file__).resolve().parents[1]
SESSION = ROOT / "data/orderbook/binance_usdm_BTCUSDT_2024-08-08"
TRADES = ROOT / "data/trades/binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"
REPEATS = 3
BUCKET_VOLUME = 5.0


def diff_arguments(session: RecordedSession, limit: int) -> list[tuple]:
    diffs = session.diffs
    starts, asks = diffs.bid_start.tolist(), diffs.ask_start.tolist()
    rows = []
    for i in range(min(limit, len(diffs))):
        b, a, e = starts[i], asks[i], starts[i + 1]
        rows.append(
            (
                int(diffs.time_ns[i]),
                int(diffs.first_update_id[i]),
                int(diffs.last_update_id[i]),
                int(diffs.previous_update_id[i]),
                diffs.ticks[b:a],
                diffs.quantities[b:a],
                diffs.ticks[a:e],
                diffs.quantities[a:e],
            )
        )
    return rows


def run_book(
    session: RecordedSession, diffs: list[tuple], analyzer: OrderBookAnalyzer | None = None, keep: bool = True
) -> tuple[int, int, list]:
    """Apply the diffs and publish a BookUpdated per applied one; with ``analyzer``, time it on each book too.

    Returns (book ns, analyzer ns, [(BookUpdated, BookMetrics or None)], the list empty unless ``keep``).
    """
    snapshot = session.snapshot
    book = OrderBook(session.symbol, session.tick_size)
    book.apply_snapshot_ticks(
        snapshot.last_update_id,
        snapshot.bid_ticks,
        snapshot.bid_quantities,
        snapshot.ask_ticks,
        snapshot.ask_quantities,
    )
    applied = DiffResult.APPLIED
    books = []
    clock = time.perf_counter_ns
    book_ns = analyzer_ns = 0
    for ts, first, last, previous, bid_ticks, bid_quantities, ask_ticks, ask_quantities in diffs:
        start = clock()
        if (
            book.apply_diff_ticks(first, last, previous, bid_ticks, bid_quantities, ask_ticks, ask_quantities)
            is applied
        ):
            event = book.to_event(ts, ts, 20)
            middle = clock()
            metrics = None if analyzer is None else analyzer.update_arrays(event.update_id, ts, *book.published_levels)
            end = clock()
            book_ns += middle - start
            analyzer_ns += end - middle
            if keep:
                books.append((event, metrics))
        else:
            book_ns += clock() - start
    return book_ns, analyzer_ns, books


def plain_levels(diffs: list[tuple], tick: Decimal) -> list[tuple]:
    rows = []
    for ts, first, last, previous, bid_ticks, bid_quantities, ask_ticks, ask_quantities in diffs:
        bids = [(tick * t, Decimal(repr(q))) for t, q in zip(bid_ticks.tolist(), bid_quantities.tolist(), strict=True)]
        asks = [(tick * t, Decimal(repr(q))) for t, q in zip(ask_ticks.tolist(), ask_quantities.tolist(), strict=True)]
        rows.append((ts, first, last, previous, bids, asks))
    return rows


def run_plain_book(session: RecordedSession, rows: list[tuple]) -> float:
    """The reference: a dict per side with Decimal keys, the top 20 levels by heapq."""
    tick = session.tick_size
    snapshot = session.snapshot
    bids = {
        tick * t: Decimal(repr(q))
        for t, q in zip(snapshot.bid_ticks.tolist(), snapshot.bid_quantities.tolist(), strict=True)
    }
    asks = {
        tick * t: Decimal(repr(q))
        for t, q in zip(snapshot.ask_ticks.tolist(), snapshot.ask_quantities.tolist(), strict=True)
    }
    last_id = snapshot.last_update_id
    synced = False
    start = time.perf_counter_ns()
    for _ts, first, last, previous, bid_levels, ask_levels in rows:
        if last < last_id:
            continue
        if synced and previous != last_id:
            raise RuntimeError("plain book lost the sequence")
        if not synced and not first <= last_id <= last:
            raise RuntimeError("plain book cannot start")
        synced = True
        last_id = last
        for side, levels in ((bids, bid_levels), (asks, ask_levels)):
            for price, quantity in levels:
                if quantity:
                    side[price] = quantity
                else:
                    side.pop(price, None)
        top_bids = heapq.nlargest(20, bids)
        top_asks = heapq.nsmallest(20, asks)
        (tuple((float(p), float(bids[p])) for p in top_bids), tuple((float(p), float(asks[p])) for p in top_asks))
    return time.perf_counter_ns() - start


def timed(function, items) -> int:  # type: ignore[no-untyped-def]
    start = time.perf_counter_ns()
    for item in items:
        function(item)
    return time.perf_counter_ns() - start


def measure(
    events: list[MarketDataEvent], session: RecordedSession, diffs: list[tuple], plain_rows: list[tuple]
) -> dict[str, float]:
    book_ns, analyzer_ns, _ = run_book(session, diffs, OrderBookAnalyzer(), keep=False)
    timer_ns = timer_overhead()
    book_ns -= timer_ns * 2 * len(diffs)
    _, _, published = run_book(session, diffs, OrderBookAnalyzer())
    analyzer_ns -= timer_ns * len(published)
    books = [event for event, _ in published]
    metrics = {event.update_id: m for event, m in published}
    end = books[-1].ts_event
    trades = [e for e in events if isinstance(e, TradeTick) and e.ts_event <= end]
    merged = [e for e in events if isinstance(e, BookUpdated | TradeTick) and e.ts_event <= end]
    ticks = TickDataAnalyzer(bucket_volume=BUCKET_VOLUME)
    tick_ns = timed(ticks.on_trade, trades)
    collector = ImpactCollector()
    update_book, on_trade = collector.update_book, collector.on_trade
    start = time.perf_counter_ns()
    for event in merged:
        if type(event) is BookUpdated:
            m = metrics[event.update_id]
            update_book(event.ts_event, m.mid_price, m.spread_bps, m.bid_visible_quantity, m.ask_visible_quantity)
        else:
            on_trade(event)
    impact_ns = time.perf_counter_ns() - start
    aggregator, profiler = TimeBarAggregator(session.symbol, "1m"), LiquidityProfiler()
    start = time.perf_counter_ns()
    for trade in trades:
        for bar in aggregator.on_trade(trade):
            profiler.on_bar(bar)
    liquidity_ns = time.perf_counter_ns() - start
    snapshot_ns = time_snapshots(books, trades, session.symbol)
    return {
        "depth_events": len(books),
        "trades": len(trades),
        "book_update": book_ns,
        "order_book_analyzer": analyzer_ns,
        "tick_data_analyzer": tick_ns,
        "market_impact": impact_ns,
        "liquidity_profiler": liquidity_ns,
        "snapshot": snapshot_ns,
        "plain_decimal_book": run_plain_book(session, plain_rows),
    }


def timer_overhead() -> float:
    """Return the cost of one perf_counter_ns call, subtracted from the in-loop timings."""
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(100_000):
        clock()
    return (clock() - start) / 100_000


def time_snapshots(books: list[BookUpdated], trades: list[TradeTick], symbol: str) -> int:
    """Time one snapshot per second of exchange time, with an impact model calibrated on the session."""
    collector = ImpactCollector()
    merged = sorted([*books, *trades], key=lambda e: (e.ts_event, type(e) is TradeTick))
    for event in merged:
        collector.on_book(event) if type(event) is BookUpdated else collector.on_trade(event)
    analyzers = SymbolAnalyzers(symbol, BUCKET_VOLUME, MarketImpactModel(n_bootstrap=100).fit(collector.frame()))
    for event in merged:
        analyzers.on_book(event) if type(event) is BookUpdated else analyzers.on_trade(event)
    due = [
        books[0].ts_event + k * NANOS_PER_SECOND
        for k in range((books[-1].ts_event - books[0].ts_event) // NANOS_PER_SECOND + 1)
    ]
    start = time.perf_counter_ns()
    for ts in due:
        analyzers.snapshot(ts)
    return time.perf_counter_ns() - start


def replay_rate(limit_ns: int | None) -> tuple[float, int]:
    """Events per second of the whole replay: feed, bus, MicrostructureEngine."""
    feed = RecordedSessionFeed(SESSION, TRADES)
    bus = EventBus(capacity=100_000, measure_latency=False)
    clock = SimulatedClock(feed.first_ns)
    engine = MicrostructureEngine("microstructure", bus, clock, {feed.symbol: BUCKET_VOLUME})
    engine.start()
    count = 0
    start = time.perf_counter()
    for event in feed:
        if limit_ns is not None and event.ts_event > limit_ns:
            break
        clock.advance_to(event.ts_event)
        bus.publish(event)
        bus.drain()
        count += 1
    return count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="first 1,000 depth events, one repeat")
    args = parser.parse_args()
    limit, repeats = (1_000, 1) if args.quick else (10**9, REPEATS)
    feed = RecordedSessionFeed(SESSION, TRADES)
    session = feed.session
    events = list(feed)
    diffs = diff_arguments(session, limit)
    plain_rows = plain_levels(diffs, session.tick_size)
    measure(events, session, diffs[:300], plain_rows[:300])  # warm-up: loads the compiled kernels
    runs = [measure(events, session, diffs, plain_rows) for _ in range(repeats)]
    depth_events = runs[0]["depth_events"]
    parts = (
        "book_update",
        "order_book_analyzer",
        "tick_data_analyzer",
        "market_impact",
        "liquidity_profiler",
        "snapshot",
    )
    per_event = {part: statistics.median(run[part] for run in runs) / depth_events / 1_000 for part in parts}
    total = sum(per_event.values())
    plain = statistics.median(run["plain_decimal_book"] for run in runs) / depth_events / 1_000
    limit_ns = diffs[-1][0] if args.quick else None
    rates = [replay_rate(limit_ns) for _ in range(repeats)]
    with gzip.open(TRADES, "rt") as stream:
        tape_trades = len(pd.read_csv(stream, usecols=["trade_id"]))
    print(
        json.dumps(
            {
                "benchmark": "market_data",
                "session": SESSION.name,
                "repeats": repeats,
                "depth_events": depth_events,
                "trades": runs[0]["trades"],
                "tape_trades": tape_trades,
                "us_per_depth_event": {part: round(value, 2) for part, value in per_event.items()},
                "book_plus_analyzers_us_per_depth_event": round(total, 2),
                "goal_us_per_depth_event": 20.0,
                "meets_goal": total <= 20.0,
                "reference_plain_decimal_book_us_per_depth_event": round(plain, 2),
                "book_update_speedup_vs_plain": round(plain / per_event["book_update"], 2),
                "replay_events": rates[0][1],
                "replay_events_per_s": round(statistics.median(rate for rate, _ in rates)),
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
