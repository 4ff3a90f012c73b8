"""Tick-to-order latency of the execution layer on the real BTCUSDT 2024-08-08 order-book session.

A book update enters the bus; the time until a child order reaches the
ExchangePort (``submit_order``) is measured for every update that produced
one, while TWAP and passive parents are worked through the simulated
exchange. Reference measured in the same run, one sample right after each
routed one: the plain path without the router (an ``OrderApproved`` straight
through the OrderManager to the port, on a desk of its own).

Two figures per percentile: ``tick_to_order`` is keel's own path (the time the
simulated exchange spends taking the same book update, its trades and the
cancels of a cancel/replace, which a real venue does on its own servers, is left
out: the venue notes it as it runs), and
``tick_to_order_with_venue`` the whole window including it. The long-lived
objects of the set-up (the recorded session) are frozen out of the garbage
collector before timing, as ``keel paper`` and ``keel live`` do after their
warm-up. Prints one JSON line. ``--quick`` plays a tenth of the session;
``--cpu`` times with the thread's CPU clock instead of the wall clock, so other
processes on a shared machine do not land in the percentiles.
"""

from __future__ import annotations

import argparse
import gc
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

_now = time.perf_counter_ns
"""The clock of every measurement: wall time, or with ``--cpu`` this thread's CPU time."""


class TimedVenue(SimulatedExchange):
    """The simulated exchange noting when each order reached it and how long it worked on its own.

    ``venue_ns`` adds up the time spent taking market data and cancels: work a
    real venue does on its own servers.
    """

    arrivals: list[int]
    venue_ns: int

    async def submit_order(self, command: SubmitOrder) -> None:
        self.arrivals.append(_now())
        self.submit(command)

    def on_book(self, book: BookUpdated) -> None:
        begin = _now()
        super().on_book(book)
        self.venue_ns += _now() - begin

    def on_trade(self, trade: TradeTick) -> None:
        begin = _now()
        super().on_trade(trade)
        self.venue_ns += _now() - begin

    async def cancel_order(self, symbol: str, client_order_id: str) -> None:
        begin = _now()
        await super().cancel_order(symbol, client_order_id)
        self.venue_ns += _now() - begin


def _desk(route: bool) -> tuple[EventBus, SimulatedClock, TimedVenue, OrderManager, SmartOrderRouter | None]:
    events = real_session()
    clock = SimulatedClock(events[0].ts_event)
    bus = EventBus()
    venue = TimedVenue(real_instruments(), clock, initial_balance=Decimal("10000000"), schedule=real_schedule())
    venue.arrivals = []
    venue.venue_ns = 0
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


class Reference:
    """The plain path on its own desk: an approval straight through the OrderManager to the port."""

    def __init__(self) -> None:
        self.bus, _clock, self.venue, _, _ = _desk(route=False)
        book = next(e for e in real_session() if isinstance(e, BookUpdated))
        self.bus.publish(book)
        self.bus.drain()
        self.latencies: list[int] = []

    def sample(self) -> None:
        """Time one approval to the port."""
        side = OrderSide.BUY if len(self.latencies) % 2 == 0 else OrderSide.SELL
        approval = OrderApproved(
            symbol="BTCUSDT", side=side, quantity=Decimal("0.002"), order_type=OrderType.MARKET, price=None,
            reduce_only=False, strategy="bench", ts_event=0, ts_init=0,
        )  # fmt: skip
        begin = _now()
        self.bus.publish(approval)
        self.bus.drain()
        self.latencies.append(self.venue.arrivals[-1] - begin)


def tick_to_order(limit: int, reference: Reference) -> tuple[np.ndarray, np.ndarray]:
    """Return the latencies (ns) of book updates that sent a child order: keel's own path, and with the venue's.

    Right after each, ``reference`` times one plain submit, so both see the
    same moment of the machine.
    """
    bus, clock, venue, _, router = _desk(route=True)
    assert router is not None
    own: list[int] = []
    whole: list[int] = []
    started = False
    events = real_session()[:limit]
    gc.collect()
    gc.freeze()
    for event in events:
        clock.advance_to(max(clock.timestamp_ns(), event.ts_event))
        if isinstance(event, BookUpdated) and not started:
            bus.publish(event)
            bus.drain()
            router.execute_twap("BTCUSDT", OrderSide.BUY, Decimal("3.000"))
            router.execute_passive("BTCUSDT", OrderSide.SELL, Decimal("5.000"))
            started = True
            continue
        count = len(venue.arrivals)
        venue.venue_ns = 0
        begin = _now()
        bus.publish(event)
        bus.drain()
        if isinstance(event, BookUpdated) and len(venue.arrivals) > count:
            whole.append(venue.arrivals[count] - begin)
            own.append(whole[-1] - venue.venue_ns)
            reference.sample()
    while len(reference.latencies) < 100:
        reference.sample()
    gc.unfreeze()
    return np.array(own, dtype=float), np.array(whole, dtype=float)


def main() -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="play a tenth of the session")
    parser.add_argument(
        "--cpu", action="store_true", help="measure this thread's CPU time (robust to other processes on the machine)"
    )
    args = parser.parse_args()
    global _now
    if args.cpu:
        _now = time.thread_time_ns
    events = len(real_session())
    limit = events // 10 if args.quick else events
    reference = Reference()
    own, whole = tick_to_order(limit, reference)
    routed, with_venue = own / 1_000, whole / 1_000
    plain = np.array(reference.latencies, dtype=float) / 1_000
    p50, p99 = float(np.percentile(plain, 50)), float(np.percentile(plain, 99))
    print(
        json.dumps(
            {
                "benchmark": "execution",
                "session": "binance_usdm_BTCUSDT_2024-08-08",
                "events": limit,
                "clock": "thread_cpu" if args.cpu else "wall",
                "child_orders_from_book_updates": int(routed.size),
                "tick_to_order_p50_us": round(float(np.percentile(routed, 50)), 1),
                "tick_to_order_p99_us": round(float(np.percentile(routed, 99)), 1),
                "tick_to_order_with_venue_p50_us": round(float(np.percentile(with_venue, 50)), 1),
                "tick_to_order_with_venue_p99_us": round(float(np.percentile(with_venue, 99)), 1),
                "reference_order_manager_p50_us": round(p50, 1),
                "reference_order_manager_p99_us": round(p99, 1),
                "p50_ratio": round(float(np.percentile(routed, 50)) / p50, 2),
                "p99_ratio": round(float(np.percentile(routed, 99)) / p99, 2),
                "goal_p50_ratio": 3,
                "goal_p99_ratio": 10,
            }
        )
    )


if __name__ == "__main__":
    main()
