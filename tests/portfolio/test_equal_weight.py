"""The skeleton's equal-weight allocator: signals to signed weights, and the rebalance timer."""

from __future__ import annotations

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_HOUR, SimulatedClock
from keel.core.costs import CostModel, CostSettings
from keel.core.instruments import bundled_instruments
from keel.core.messages import AllocationProposed, SignalAction, SignalGenerated
from keel.portfolio import EqualWeightAllocator

START = 1746403200 * 1_000_000_000  # 2025-05-05T00:00:00Z


def signal(symbol: str, action: SignalAction, ts: int = START) -> SignalGenerated:
    return SignalGenerated(
        strategy="test", symbol=symbol, action=action, strength=1.0, confidence=1.0, ts_event=ts, ts_init=ts
    )


def make(interval_ns: int = 0) -> tuple[EventBus, SimulatedClock, list[AllocationProposed]]:
    bus = EventBus()
    clock = SimulatedClock(START)
    proposals: list[AllocationProposed] = []
    bus.subscribe(AllocationProposed, proposals.append)
    EqualWeightAllocator(["BTCUSDT", "ETHUSDT"], 1.0, bus, clock, rebalance_interval_ns=interval_ns).start()
    bus.drain()
    return bus, clock, proposals


def test_each_direction_change_proposes_signed_equal_weights() -> None:
    # Arrange
    bus, _, proposals = make()

    # Act
    for event in (
        signal("BTCUSDT", SignalAction.BUY),
        signal("BTCUSDT", SignalAction.BUY),
        signal("ETHUSDT", SignalAction.SELL),
        signal("BTCUSDT", SignalAction.HOLD),
        signal("DOGEUSDT", SignalAction.BUY),
    ):
        bus.publish(event)
    bus.drain()

    # Assert
    assert [p.weights for p in proposals] == [
        {"BTCUSDT": 0.5, "ETHUSDT": 0.0},
        {"BTCUSDT": 0.5, "ETHUSDT": -0.5},
        {"BTCUSDT": 0.0, "ETHUSDT": -0.5},
    ]


def test_the_rebalance_timer_reproposes_the_weights_on_schedule() -> None:
    # Arrange
    bus, clock, proposals = make(interval_ns=8 * NANOS_PER_HOUR)
    bus.publish(signal("BTCUSDT", SignalAction.BUY))
    bus.drain()

    # Act: a day passes
    clock.advance_to(START + 24 * NANOS_PER_HOUR)
    bus.drain()

    # Assert: 08:00, 16:00 and 00:00 UTC
    scheduled = [p for p in proposals if p.reason.startswith("rebalance")]
    assert [p.ts_event - START for p in scheduled] == [8 * NANOS_PER_HOUR, 16 * NANOS_PER_HOUR, 24 * NANOS_PER_HOUR]
    assert all(p.weights == {"BTCUSDT": 0.5, "ETHUSDT": 0.0} for p in scheduled)


def test_with_the_cost_model_a_view_too_weak_to_pay_its_round_trip_counts_as_flat() -> None:
    # Arrange: 10 bp round trip; bars moving 1 % each, so a full view earns 0.05 x 1 % x 60 = 3 % over 60 bars
    bus, clock = EventBus(), SimulatedClock(START)
    costs = CostModel(bundled_instruments(), CostSettings(taker_fee=0.0005, slippage_bps=0.0))
    for k in range(400):
        costs.observe_bar("BTCUSDT", 100.0 if k % 2 else 101.0, 1e9)
    proposals: list[AllocationProposed] = []
    bus.subscribe(AllocationProposed, proposals.append)
    allocator = EqualWeightAllocator(["BTCUSDT", "ETHUSDT"], 1.0, bus, clock, costs=costs, holding_bars=60)
    allocator.start()

    # Act: a 2 % view (0.06 % over 60 bars), then a full one, on BTC; a full one on ETH, whose volatility is unknown
    for strength, symbol in ((0.02, "BTCUSDT"), (1.0, "BTCUSDT"), (1.0, "ETHUSDT")):
        bus.publish(
            SignalGenerated(
                strategy="test", symbol=symbol, action=SignalAction.SELL, strength=strength, confidence=1.0,
                ts_event=START, ts_init=START,
            )
        )  # fmt: skip
    bus.drain()

    # Assert: only the full BTC view takes a direction; the two others are counted
    assert [p.weights for p in proposals] == [{"BTCUSDT": -0.5, "ETHUSDT": 0.0}]
    assert allocator.views_not_worth_costs == 2
