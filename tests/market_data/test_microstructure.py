"""The microstructure engine on the real session: snapshots on the bus, deterministic, no look-ahead."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import msgspec

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_SECOND, SimulatedClock
from keel.core.messages import BarClosed, BookUpdated, MarketDataEvent, MicrostructureSnapshot, TradeTick
from keel.market_data.feeds import RecordedBarFeed
from keel.market_data.microstructure import MicrostructureEngine

BARS = Path(__file__).resolve().parents[2] / "data/ohlcv/binance_usdm_1m_2025-05"


def _run(
    events: list[MarketDataEvent], refit_every: int | None = 2_000
) -> tuple[MicrostructureEngine, list[MicrostructureSnapshot]]:
    bus = EventBus(capacity=100_000)
    clock = SimulatedClock(events[0].ts_event)
    snapshots: list[MicrostructureSnapshot] = []
    bus.subscribe(MicrostructureSnapshot, snapshots.append)
    engine = MicrostructureEngine("microstructure", bus, clock, {"BTCUSDT": 5.0}, refit_every=refit_every)
    engine.start()
    for event in events:
        clock.advance_to(event.ts_event)
        bus.publish(event)
        bus.drain()
    return engine, snapshots


def _comparable(snapshots: list[MicrostructureSnapshot]) -> list[dict]:
    return [msgspec.structs.asdict(msgspec.structs.replace(s, id=0)) for s in snapshots]


def test_snapshots_come_once_a_second_with_every_field_usable(btc_session_events: list[MarketDataEvent]) -> None:
    # Act
    engine, snapshots = _run(btc_session_events)

    # Assert
    seconds = (btc_session_events[-1].ts_event - btc_session_events[0].ts_event) / NANOS_PER_SECOND
    assert seconds * 0.9 <= len(snapshots) <= seconds + 1
    gaps = [b.ts_event - a.ts_event for a, b in itertools.pairwise(snapshots)]
    assert min(gaps) >= NANOS_PER_SECOND
    for snapshot in snapshots:
        for name, value in msgspec.structs.asdict(snapshot).items():
            assert not (isinstance(value, float) and not math.isfinite(value)), name
    last = snapshots[-1]
    assert last.vpin is not None and last.kyle_lambda is not None and last.impact_bps is not None
    assert engine.analyzers["BTCUSDT"].refits >= 2


def test_a_replay_gives_the_same_snapshots(btc_session_events: list[MarketDataEvent]) -> None:
    first = _run(btc_session_events[:30_000])[1]
    second = _run(btc_session_events[:30_000])[1]

    assert _comparable(first) == _comparable(second)


def test_lookahead_snapshots_up_to_t_ignore_later_events(btc_session_events: list[MarketDataEvent]) -> None:
    # Arrange: stop at event 60,000, or go on with every later trade and book perturbed
    cut = 60_000
    later: list[MarketDataEvent] = []
    for e in btc_session_events[cut:]:
        if isinstance(e, TradeTick):
            later.append(msgspec.structs.replace(e, quantity=e.quantity * 3))
        elif isinstance(e, BookUpdated):
            later.append(msgspec.structs.replace(e, bids=tuple((p, q * 2) for p, q in e.bids)))
    cut_ts = btc_session_events[cut - 1].ts_event

    # Act
    stopped = _run(btc_session_events[:cut])[1]
    continued = _run([*btc_session_events[:cut], *later])[1]

    # Assert
    upto = [s for s in continued if s.ts_event <= cut_ts]
    assert _comparable(upto) == _comparable(stopped)
    assert _comparable(continued[len(upto) :]) != _comparable(_run(btc_session_events)[1][len(upto) :])


def test_bars_feed_the_liquidity_profile_and_the_bar_vpin() -> None:
    # Arrange
    bars = [b for b in RecordedBarFeed(BARS, ["BTCUSDT"], "1m") if isinstance(b, BarClosed)][:5_000]
    bus = EventBus(capacity=100_000)
    engine = MicrostructureEngine("microstructure", bus, SimulatedClock(0), {"BTCUSDT": 2_000.0})
    engine.start()

    # Act
    for bar in bars:
        bus.publish(bar)
    bus.drain()

    # Assert
    analyzers = engine.analyzers["BTCUSDT"]
    assert analyzers.liquidity.profile()["bars"].sum() == 5_000
    assert analyzers.ticks.bar_buckets.buckets > 50 and analyzers.ticks.vpin is not None
