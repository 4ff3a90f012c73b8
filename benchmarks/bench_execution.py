"""Tick-to-order latency of the execution layer on the real BTCUSDT 2024-08-08 order-book session.

A book update enters the bus; the time until a child order reaches the
ExchangePort (``submit_order``) is measured for every update that produced
one, while TWAP and passive parents are worked through the simulated
exchange. Reference measured in the same run: the plain path without the
router (an ``OrderApproved`` straight through the OrderManager to the port).
Prints one JSON line. ``--quick`` plays a tenth of the session.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "api"), str(ROOT / "tests")]  # the venue harness and the test kit

from venue_harness import real_instruments, real_schedule, real_session  # noqa: E402

from keel.api.simulated_exchange import SimulatedExchange  # noqa: E402
from keel.core.bus import EventBus  # noqa: E402
from keel.core.clock import SimulatedClock  # noqa: E402
from keel.core.messages import BookUpdated, OrderApproved, SubmitOrder, TradeTick  # noqa: E402
from keel.core.orders import ClientOrderIdGenerator, OrderSide, OrderType  # noqa: E402
from keel.execution.order_manager import OrderManager  # noqa: E402
from keel.execution.router import RouterSettings, SmartOrderRouter  # noqa: E402


class TimedVenue(SimulatedExchange):
    """The simulated exchange noting when each order reached it."""

    arrivals: list[int]

    async def submit_order(self, command: SubmitOrder) -> None:
        self.arrivals.append(time.perf_counter_ns())
        self.submit(command)


def _desk(route: bool) -> tuple[EventBus, SimulatedClock, TimedVenue, OrderManager, SmartOrderRouter | None]:
    events = real_session()
    clock = SimulatedClock(events[0].ts_event)
    bus = EventBus()
    venue = TimedVenue(real_instruments(), clock, initial_balance=Decimal("10000000"), schedule=real_schedule())
    venue.arrivals = []
    bus.subscribe(BookUpdated, venue.on_book, name="exchange.books")
    bus.subscribe(TradeTick, venue.on_trade, name="exchange.trades")
    orders = OrderManager(venue, ClientOrderIdGenerator("keel"), bus, clock, route_approvals=not route)
    router = None
    if route:
        settings = RouterSettings(twap_horizon_seconds=300, twap_slices=300, passive_time_limit_seconds=600)
        router = SmartOrderRouter(orders, real_instruments(), settings, bus, clock)
        router.start()
    orders.start()
    bus.drain()
    return bus, clock, venue, orders, router


def tick_to_order(limit: int) -> np.ndarray:
    """Return the latencies (ns) of book updates that sent a child order, router path."""
    bus, clock, venue, _, router = _desk(route=True)
    assert router is not None
    latencies: list[int] = []
    started = False
    for event in real_session()[:limit]:
        clock.advance_to(max(clock.timestamp_ns(), event.ts_event))
        if isinstance(event, BookUpdated) and not started:
            bus.publish(event)
            bus.drain()
            router.execute_twap("BTCUSDT", OrderSide.BUY, Decimal("3.000"))
            router.execute_passive("BTCUSDT", OrderSide.SELL, Decimal("5.000"))
            started = True
            continue
        count = len(venue.arrivals)
        begin = time.perf_counter_ns()
        bus.publish(event)
        bus.drain()
        if isinstance(event, BookUpdated) and len(venue.arrivals) > count:
            latencies.append(venue.arrivals[count] - begin)
    return np.array(latencies, dtype=float)


def reference(samples: int) -> np.ndarray:
    """Return the latencies (ns) of the plain path: an approval straight through the OrderManager."""
    bus, _clock, venue, _, _ = _desk(route=False)
    book = next(e for e in real_session() if isinstance(e, BookUpdated))
    bus.publish(book)
    bus.drain()
    latencies = []
    for k in range(samples):
        side = OrderSide.BUY if k % 2 == 0 else OrderSide.SELL
        approval = OrderApproved(
            symbol="BTCUSDT", side=side, quantity=Decimal("0.002"), order_type=OrderType.MARKET, price=None,
            reduce_only=False, strategy="bench", ts_event=0, ts_init=0,
        )  # fmt: skip
        begin = time.perf_counter_ns()
        bus.publish(approval)
        bus.drain()
        latencies.append(venue.arrivals[-1] - begin)
    return np.array(latencies, dtype=float)


def main() -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="play a tenth of the session")
    args = parser.parse_args()
    events = len(real_session())
    limit = events // 10 if args.quick else events
    routed = tick_to_order(limit) / 1_000
    plain = reference(max(len(routed), 100)) / 1_000
    print(
        json.dumps(
            {
                "benchmark": "execution",
                "session": "binance_usdm_BTCUSDT_2024-08-08",
                "events": limit,
                "child_orders_from_book_updates": int(routed.size),
                "tick_to_order_p50_us": round(float(np.percentile(routed, 50)), 1),
                "tick_to_order_p99_us": round(float(np.percentile(routed, 99)), 1),
                "reference_order_manager_p50_us": round(float(np.percentile(plain, 50)), 1),
                "reference_order_manager_p99_us": round(float(np.percentile(plain, 99)), 1),
                "goal_p50_us": 50,
                "goal_p99_us": 500,
            }
        )
    )


if __name__ == "__main__":
    main()
