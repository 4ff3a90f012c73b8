"""Feed health on the real trade tape: silences longer than the limit publish stale, then recovered."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, SimulatedClock
from keel.core.messages import FeedHealthChanged, TradeTick
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
