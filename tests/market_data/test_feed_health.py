"""Feed health on the real trade tape: silences longer than the limit publish stale, then recovered.

Skipping the checks that cannot find anything is checked against a reference
that checks every interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, SimulatedClock
from keel.core.messages import BarClosed, FeedHealthChanged, TradeTick
from keel.market_data.feed_health import FeedHealthMonitor
from keel.market_data.feeds import RecordedSessionFeed

DATA = Path(__file__).resolve().parents[2] / "data"
SESSION = DATA / "orderbook/binance_usdm_BTCUSDT_2024-08-08"
TRADES = DATA / "trades/binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"


def test_real_trade_silences_over_the_limit_are_reported_stale_then_recovered() -> None:
    # Arrange: the tape's longest silences are 1199, 944, 938 and 829 ms; the limit is 900 ms
    trades = [e for e in RecordedSessionFeed(SESSION, TRADES) if isinstance(e, TradeTick)]
    clock = SimulatedClock(trades[0].ts_event)
    bus = EventBus(capacity=100_000)
    health: list[FeedHealthChanged] = []
    bus.subscribe(FeedHealthChanged, health.append)
    monitor = FeedHealthMonitor(
        "feed_health", bus, clock, stale_after_ns=900 * NANOS_PER_MILLI, check_interval_ns=5 * NANOS_PER_MILLI
    )
    monitor.start()

    # Act
    for trade in trades:
        clock.advance_to(trade.ts_event)
        bus.publish(trade)
        bus.drain()

    # Assert
    gaps = np.diff([t.ts_event for t in trades])
    expected = int((gaps > 905 * NANOS_PER_MILLI).sum())
    assert expected == 3 and int((gaps > 900 * NANOS_PER_MILLI).sum()) == expected
    assert [(h.stale, h.stream, h.symbol) for h in health] == [
        (True, "trade", "BTCUSDT"),
        (False, "trade", "BTCUSDT"),
    ] * 3
    assert all(h.silent_ns > 900 * NANOS_PER_MILLI for h in health)
    assert monitor.stale_reports == 3


def test_an_expected_stream_that_never_starts_is_reported() -> None:
    # Arrange
    clock = SimulatedClock(0)
    bus = EventBus()
    health: list[FeedHealthChanged] = []
    bus.subscribe(FeedHealthChanged, health.append)
    monitor = FeedHealthMonitor(
        "feed_health", bus, clock, 2_000 * NANOS_PER_MILLI, 100 * NANOS_PER_MILLI, expected=[("ETHUSDT", "depth")]
    )
    monitor.start()

    # Act
    clock.advance_to(10_000 * NANOS_PER_MILLI)
    bus.drain()
    monitor.stop()

    # Assert
    assert [(h.symbol, h.stream, h.stale) for h in health] == [("ETHUSDT", "depth", True)]
    assert health[0].ts_event == 2_100 * NANOS_PER_MILLI


def reference_reports(
    arrivals: list[tuple[int, str]], start: int, stale_after: int, interval: int, end: int, expected: list[str]
) -> list[tuple[int, str, bool]]:
    """The (ts, symbol, stale) reports of a check at every interval, as the monitor's doc states them."""
    last = dict.fromkeys(expected, start)
    stale: set[str] = set()
    reports = []
    checks = iter(range(start + interval, end + 1, interval))
    check = next(checks, None)
    for ts, symbol in [*arrivals, (end + 1, "")]:
        while check is not None and check <= ts:
            for key, seen in last.items():
                if check - seen > stale_after and key not in stale:
                    stale.add(key)
                    reports.append((check, key, True))
            check = next(checks, None)
        if symbol:
            if symbol in stale:
                stale.discard(symbol)
                reports.append((ts, symbol, False))
            last[symbol] = ts
    return reports


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(1, 400), st.sampled_from(["BTCUSDT", "ETHUSDT", "SOLUSDT"])), max_size=60),
    stale_after=st.integers(1, 300),
)
def test_skipping_checks_reports_the_same_silences_at_the_same_times_as_checking_every_interval(
    steps: list[tuple[int, str]], stale_after: int
) -> None:
    # Arrange: bars of three symbols at random times (one expected from the start), checks every 10 ns
    interval, start = 10, 1_000
    arrivals, ts = [], start
    for gap, symbol in steps:
        ts += gap
        arrivals.append((ts, symbol))
    end = ts + 2 * stale_after + 3 * interval
    clock = SimulatedClock(start)
    bus = EventBus()
    health: list[FeedHealthChanged] = []
    bus.subscribe(FeedHealthChanged, health.append)
    monitor = FeedHealthMonitor("feed_health", bus, clock, stale_after, interval, expected=[("BTCUSDT", "kline")])
    monitor.start()

    # Act
    for at, symbol in arrivals:
        clock.advance_to(at)
        bus.publish(bar(symbol, at))
        bus.drain()
    clock.advance_to(end)
    bus.drain()

    # Assert
    reports = [(h.ts_event, h.symbol, h.stale) for h in health]
    assert reports == reference_reports(arrivals, start, stale_after, interval, end, ["BTCUSDT"])


def test_a_steady_feed_is_checked_once_per_staleness_limit_not_every_interval() -> None:
    # Arrange: a bar a minute, stale after three minutes of silence, a check due every minute
    clock = SimulatedClock(0)
    bus = EventBus()
    monitor = FeedHealthMonitor("feed_health", bus, clock, 3 * NANOS_PER_MINUTE, NANOS_PER_MINUTE)
    monitor.start()

    # Act
    fired = 0
    for minute in range(1, 301):
        fired += clock.advance_to(minute * NANOS_PER_MINUTE)
        bus.publish(bar("BTCUSDT", minute * NANOS_PER_MINUTE))
        bus.drain()

    # Assert
    assert monitor.stale_reports == 0
    assert fired <= 300 // 3 + 1


def bar(symbol: str, ts: int) -> BarClosed:
    return BarClosed(
        symbol=symbol,
        interval="1m",
        open_time=ts - NANOS_PER_MINUTE,
        open=100.0,
        high=101.0,
        low=99.0,
        close=100.5,
        volume=1.0,
        ts_event=ts,
        ts_init=ts,
    )
