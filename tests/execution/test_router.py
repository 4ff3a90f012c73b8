"""The smart order router on the real BTCUSDT 2024-08-08 order-book session through the simulated exchange."""

from __future__ import annotations

import functools
import sys
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.api.simulated_exchange import SimulatedExchange
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.fsm import TradingState
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    ExecutionCompleted,
    MarketDataEvent,
    OrderFilled,
    OrderRejected,
    PositionSide,
    TradeTick,
    TradingStateChanged,
)
from keel.core.orders import ClientOrderIdGenerator, LiquiditySide, OrderSide
from keel.execution.algorithms import ExecutionStyle, Slice, twap_schedule
from keel.execution.order_manager import OrderManager
from keel.execution.router import ParentOrder, RouterSettings, SmartOrderRouter
from keel.execution.tca import Execution, implementation_shortfall
from keel.market_data.liquidity import LiquidityProfiler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from venue_harness import real_bars, real_instruments, real_schedule, real_session

BTC = "BTCUSDT"


@functools.cache
def session() -> tuple[MarketDataEvent, ...]:
    return real_session()


class Desk:
    """Simulated venue, order manager and router on one bus, driven by the real session."""

    def __init__(
        self, settings: RouterSettings, profiler: LiquidityProfiler | None = None, history: int = 100_000
    ) -> None:
        events = session()
        self.clock = SimulatedClock(events[0].ts_event)
        self.bus = EventBus()
        self.exchange = SimulatedExchange(
            real_instruments(), self.clock, initial_balance=Decimal("1000000"), schedule=real_schedule(), leverage=5
        )
        self.bus.subscribe(BookUpdated, self.exchange.on_book, name="exchange.books")
        self.bus.subscribe(TradeTick, self.exchange.on_trade, name="exchange.trades")
        self.orders = OrderManager(self.exchange, ClientOrderIdGenerator("keel"), self.bus, self.clock,
                                   route_approvals=False)  # fmt: skip
        self.router = SmartOrderRouter(
            self.orders,
            real_instruments(),
            settings,
            self.bus,
            self.clock,
            profilers=None if profiler is None else {BTC: profiler},
            history=history,
        )
        self.fills: list[OrderFilled] = []
        self.bus.subscribe(OrderFilled, self.fills.append, name="test.fills")
        self.orders.start()
        self.router.start()
        self.bus.drain()
        self.position = 0

    def play(self, start: int, stop: int, probe=None) -> None:
        self.play_events(session()[start:stop], probe)

    def play_events(self, events, probe=None) -> None:
        for event in events:
            self.clock.advance_to(max(self.clock.timestamp_ns(), event.ts_event))
            self.bus.publish(event)
            self.bus.drain()
            if probe is not None:
                probe(event.ts_event)

    def completed(self) -> ExecutionCompleted:
        assert len(self.router.completed) == 1
        return self.router.completed[0]


def first_book_index() -> int:
    return next(i for i, e in enumerate(session()) if isinstance(e, BookUpdated))


def test_twap_follows_its_schedule_within_one_slice_on_the_real_session():
    # Arrange
    settings = RouterSettings(twap_horizon_seconds=240, twap_slices=8, seed=7)
    desk = Desk(settings)
    start = first_book_index() + 1
    desk.play(0, start)
    parent = desk.router.execute_twap(BTC, OrderSide.BUY, Decimal("0.800"))
    worst: list[Decimal] = []

    def probe(ts: int) -> None:
        if parent.parent_order_id in desk.router.parents:
            worst.append(abs(parent.filled - parent.target(ts)))

    # Act
    desk.play(start, len(session()), probe)

    # Assert
    done = desk.completed()
    assert done.filled_quantity == Decimal("0.800")
    assert done.reason == "filled"
    assert done.child_orders >= 8
    one_slice = Decimal("0.800") / 8 * Decimal("1.5")  # the largest jittered slice
    assert max(worst) <= one_slice
    assert sorted(worst)[len(worst) // 2] <= Decimal("0.002")  # most of the time exactly on schedule


def test_a_halt_stops_every_parent_and_no_child_follows():
    # Arrange: a TWAP parent is working on the real session
    desk = Desk(RouterSettings(twap_horizon_seconds=240, twap_slices=8, seed=7))
    start = first_book_index() + 1
    desk.play(0, start)
    parent = desk.router.execute_twap(BTC, OrderSide.BUY, Decimal("0.800"))
    desk.play(start, start + 200)
    sent_before = len(desk.orders.orders)

    # Act
    desk.bus.publish(
        TradingStateChanged(
            previous=TradingState.ACTIVE, state=TradingState.HALTED, reason="operator", ts_event=0, ts_init=0
        )
    )
    desk.bus.drain()
    desk.play(start + 200, len(session()))

    # Assert
    assert parent.parent_order_id not in desk.router.parents
    assert desk.completed().reason == "trading halted: operator"
    assert len(desk.orders.orders) == sent_before
    assert desk.orders.open_orders() == []


def bar_router() -> tuple[SmartOrderRouter, OrderManager, EventBus, list[BarClosed]]:
    """A bar-driven router (no books) on the simulated venue, its clock at the last of 30 real BTCUSDT bars."""
    clock = SimulatedClock(0)
    bus = EventBus()
    exchange = SimulatedExchange(
        real_instruments(), clock, initial_balance=Decimal("1000000"), schedule=real_schedule()
    )
    orders = OrderManager(exchange, ClientOrderIdGenerator("keel"), bus, clock, route_approvals=False)
    router = SmartOrderRouter(orders, real_instruments(), RouterSettings(), bus, clock)
    orders.start()
    router.start()
    history = real_bars(BTC, 30)
    clock.advance_to(history[-1].ts_event)
    return router, orders, bus, history


def warmed_router() -> tuple[SmartOrderRouter, OrderManager, EventBus]:
    """:func:`bar_router` once it has seen its bars."""
    router, orders, bus, history = bar_router()
    router.warm_up(history)
    return router, orders, bus


def test_a_router_warmed_up_on_recorded_bars_prices_children_before_the_first_live_bar():
    # Arrange: a bar-driven router that has seen only history
    router, orders, bus, history = bar_router()

    # Act
    warmed = router.warm_up(history)
    router.execute_aggressive(BTC, OrderSide.BUY, Decimal("0.010"))
    bus.drain()

    # Assert
    (child,) = orders.orders.values()
    close = Decimal(repr(history[-1].close))
    assert warmed == 30
    assert close < child.price <= close * Decimal("1.001")


def test_a_parent_order_takes_its_side_by_name_and_its_quantity_as_int_or_decimal_string():
    # Arrange
    router, orders, bus = warmed_router()

    # Act
    parents = [router.execute_aggressive(BTC, "BUY", "0.010"), router.execute_aggressive(BTC, "SELL", 1)]
    bus.drain()

    # Assert
    assert [(p.side, p.quantity) for p in parents] == [(OrderSide.BUY, Decimal("0.010")), (OrderSide.SELL, 1)]
    assert len(orders.orders) == 2


@pytest.mark.parametrize(
    ("side", "quantity", "error", "message"),
    [
        (OrderSide.BUY, 0.01, TypeError, r"pass Decimal\('0\.01'\), not the float 0\.01"),
        ("HOLD", Decimal("0.01"), ValueError, "order side must be BUY or SELL, got 'HOLD'"),
        (OrderSide.BUY, "a lot", ValueError, "order quantity 'a lot' is not a number"),
        (OrderSide.BUY, Decimal("NaN"), ValueError, "parent quantity must be positive, got NaN"),
        (OrderSide.BUY, True, TypeError, "got bool"),
    ],
    ids=["float quantity", "unknown side", "not a number", "NaN", "bool"],
)
def test_a_parent_order_with_a_bad_side_or_quantity_is_refused_by_name(side, quantity, error, message):
    # Arrange
    router, orders, _ = warmed_router()

    # Act / Assert
    with pytest.raises(error, match=message):
        router.execute_aggressive(BTC, side, quantity)
    assert not router.parents and not orders.orders


def test_twap_schedule_is_seeded_sums_to_one_and_stays_within_bounds():
    # Arrange
    start, horizon = 1_000, 80_000_000_000

    # Act
    first = twap_schedule(start, horizon, 8, seed=3, size_jitter=0.2, time_jitter=0.2)
    again = twap_schedule(start, horizon, 8, seed=3, size_jitter=0.2, time_jitter=0.2)
    other = twap_schedule(start, horizon, 8, seed=4, size_jitter=0.2, time_jitter=0.2)

    # Assert
    assert first == again != other
    assert first[-1].fraction == pytest.approx(1.0)
    sizes = [b.fraction - a.fraction for a, b in zip([Slice(start, 0.0), *first], first, strict=False)]
    assert all(0.8 / 1.2 / 8 <= s <= 1.2 / 0.8 / 8 for s in sizes)
    assert all(abs(s.ts - (start + k * horizon / 8)) <= 0.2 * horizon / 8 for k, s in enumerate(first))


def test_vwap_follows_the_liquidity_profile_volume_curve_on_the_real_session():
    # Arrange
    profiler = LiquidityProfiler(bucket_minutes=1)
    for bar in real_bars(BTC, 600) + real_bars(BTC, 1440)[600:]:
        profiler.on_bar(bar)
    desk = Desk(RouterSettings(twap_horizon_seconds=240, protection_bps=50), profiler=profiler)
    start = first_book_index() + 1
    desk.play(0, start)
    parent = desk.router.execute_vwap(BTC, OrderSide.SELL, Decimal("0.600"))
    gaps: list[Decimal] = []
    desk.play(
        start, len(session()),
        lambda ts: gaps.append(abs(parent.filled - parent.target(ts)))
        if parent.parent_order_id in desk.router.parents else None,
    )  # fmt: skip

    # Assert
    fractions = [s.fraction for s in parent.schedule]
    assert len(fractions) == 4 and fractions[-1] == pytest.approx(1.0)
    assert desk.completed().filled_quantity == Decimal("0.600")
    largest_step = max(b - a for a, b in zip([0.0, *fractions], fractions, strict=False))
    assert max(gaps) <= Decimal("0.600") * Decimal(repr(largest_step))


def test_passive_children_never_take_liquidity():
    # Arrange
    desk = Desk(RouterSettings(passive_time_limit_seconds=120))
    start = first_book_index() + 1
    desk.play(0, start)

    # Act
    parent = desk.router.execute_passive(BTC, OrderSide.SELL, Decimal("0.500"))
    passive_end = parent.passive_deadline
    desk.play(start, len(session()))

    # Assert
    before_fallback = [f for f in desk.fills if f.ts_event < passive_end]
    assert before_fallback, "the passive order should trade on the real tape within its time limit"
    assert all(f.liquidity_side is LiquiditySide.MAKER for f in before_fallback)
    assert len(desk.router.completed[0].parent_order_id) > 0


def test_aggressive_children_never_fill_beyond_the_protection_price():
    # Arrange: 40 BTC is far more than the top 20 levels hold within 2 bps
    desk = Desk(RouterSettings(protection_bps=2.0, passive_time_limit_seconds=20))
    start = first_book_index() + 1
    desk.play(0, start)

    # Act
    parent = desk.router.execute_aggressive(BTC, OrderSide.BUY, Decimal("40.000"))
    desk.play(start, start + 3000)

    # Assert
    assert desk.fills
    assert all(f.last_price <= parent.protection_price for f in desk.fills)
    assert all(f.liquidity_side is LiquiditySide.TAKER for f in desk.fills)
    assert parent.protection_price <= parent.arrival_price * Decimal("1.0002") + Decimal("0.1")


def test_adaptive_parent_finishes_and_reports_its_costs():
    # Arrange
    desk = Desk(RouterSettings(twap_horizon_seconds=120, twap_slices=4))
    start = first_book_index() + 1
    desk.play(0, start)

    # Act
    desk.router.execute_adaptive(BTC, OrderSide.BUY, Decimal("0.300"), urgency=0.9)
    desk.play(start, len(session()))

    # Assert
    done = desk.completed()
    assert done.filled_quantity == Decimal("0.300")
    assert done.style == "ADAPTIVE"
    assert done.fees > 0
    assert done.interval_vwap is not None


def test_implementation_shortfall_matches_a_hand_checked_case():
    # Arrange: buy 1.000 at arrival mid 100; 0.6 at 100.5 (fee 0.03), 0.2 at 101 (fee 0.01); final mid 102
    fills = [
        Execution(Decimal("0.6"), Decimal("100.5"), Decimal("0.03"), Decimal("100.4")),
        Execution(Decimal("0.2"), Decimal("101"), Decimal("0.01"), Decimal("100.9")),
    ]

    # Act
    shortfall = implementation_shortfall(1, Decimal("1.000"), Decimal("100"), Decimal("102"), fills)

    # Assert: 0.6*0.5 + 0.2*1 + fees 0.04 + unfilled 0.2 * (102 - 100) = 0.3 + 0.2 + 0.04 + 0.4
    assert shortfall == Decimal("0.94")


def test_router_style_defaults_to_the_strategy_mapping():
    # Arrange
    desk = Desk(RouterSettings())
    desk.router.styles["slow"] = ExecutionStyle.TWAP

    # Act / Assert
    assert desk.router.styles.get("slow") is ExecutionStyle.TWAP
    with pytest.raises(ValueError, match="no order book"):
        desk.router.execute_twap(BTC, OrderSide.BUY, Decimal("0.1"))


def perturbed(event: MarketDataEvent) -> MarketDataEvent:
    """Return the event with its prices moved up 1 %."""
    if isinstance(event, BookUpdated):
        bids = tuple((p * 1.01, q) for p, q in event.bids)
        asks = tuple((p * 1.01, q) for p, q in event.asks)
        return msgspec.structs.replace(event, bids=bids, asks=asks)
    if isinstance(event, TradeTick):
        return msgspec.structs.replace(event, price=event.price * 1.01)
    return event


def router_decisions(desk: Desk, until: int) -> list[tuple[object, ...]]:
    """Return every child order the router sent up to ``until``: id, time, side, size, price, time in force."""
    return [
        (o.client_order_id, o.ts_init, o.side, o.quantity, o.price, o.time_in_force, o.reduce_only)
        for o in desk.orders.orders.values()
        if o.ts_init <= until
    ]


def run_twap_until(cut: int, tail: tuple[MarketDataEvent, ...]) -> Desk:
    desk = Desk(RouterSettings(twap_horizon_seconds=240, twap_slices=8, seed=7))
    start = first_book_index() + 1
    desk.play(0, start)
    desk.router.execute_twap(BTC, OrderSide.BUY, Decimal("0.800"))
    desk.play(start, cut)
    desk.play_events(tail)
    return desk


def test_router_decisions_have_no_lookahead():
    # Arrange: stop two minutes into the TWAP, where the next event is strictly later
    events = session()
    start = first_book_index() + 1
    cut = next(
        i for i in range(start + 1, len(events))
        if events[i].ts_event >= events[start].ts_event + 120 * 1_000_000_000
        and events[i].ts_event > events[i - 1].ts_event
    )  # fmt: skip
    until = events[cut - 1].ts_event

    # Act
    stopped = run_twap_until(cut, ())
    continued = run_twap_until(cut, events[cut:])
    changed = run_twap_until(cut, tuple(perturbed(e) for e in events[cut:]))

    # Assert
    decided = router_decisions(stopped, until)
    assert len(decided) >= 3
    assert router_decisions(continued, until) == decided
    assert router_decisions(changed, until) == decided
    assert router_decisions(continued, events[-1].ts_event) != router_decisions(changed, events[-1].ts_event)


def test_a_reduce_only_parent_never_sends_more_than_the_venue_position_left_to_reduce():
    # Arrange: 0.100 BTC bought on the real session
    desk = Desk(RouterSettings())
    rejected: list[OrderRejected] = []
    desk.bus.subscribe(OrderRejected, rejected.append, name="test.rejections")
    start = first_book_index() + 1
    desk.play(0, start)
    desk.router.execute_aggressive(BTC, OrderSide.BUY, Decimal("0.100"))
    desk.play(start, start + 500)
    assert desk.orders.position(BTC) == Decimal("0.100")

    # Act: a reduce-only SELL of three times the position
    parent = desk.router.execute_aggressive(BTC, OrderSide.SELL, Decimal("0.300"), reduce_only=True)
    desk.play(start + 500, start + 1000)

    # Assert: one child of what was held, the position closed, the rest dropped with the reason
    children = [desk.orders.orders[c] for c in parent.children]
    assert [(c.quantity, c.reduce_only) for c in children] == [(Decimal("0.100"), True)]
    assert rejected == []
    assert desk.orders.position(BTC) == 0 == desk.exchange.account.quantity((BTC, PositionSide.BOTH))
    done = desk.router.completed[-1]
    assert done.filled_quantity == Decimal("0.100")
    assert done.reason.startswith("nothing left to reduce")


def test_a_reduce_only_parent_pointing_the_way_the_position_goes_sends_nothing():
    # Arrange: flat, then long 0.050 BTC
    desk = Desk(RouterSettings())
    start = first_book_index() + 1
    desk.play(0, start)

    # Act: a reduce-only SELL while flat, then a reduce-only BUY while long
    flat = desk.router.execute_aggressive(BTC, OrderSide.SELL, Decimal("0.100"), reduce_only=True)
    desk.router.execute_aggressive(BTC, OrderSide.BUY, Decimal("0.050"))
    desk.play(start, start + 500)
    long = desk.router.execute_aggressive(BTC, OrderSide.BUY, Decimal("0.050"), reduce_only=True)

    # Assert
    assert flat.children == [] and long.children == []
    reasons = [
        c.reason for c in desk.router.completed if c.parent_order_id in (flat.parent_order_id, long.parent_order_id)
    ]
    assert len(reasons) == 2 and all(r.startswith("nothing left to reduce") for r in reasons)
    assert all(o.status.value != "REJECTED" for o in desk.orders.orders.values())


def plain_target(parent: ParentOrder, now: int) -> Decimal:
    """The schedule's target by a walk over every step (what ParentOrder.target resumes incrementally)."""
    fraction = 0.0
    for step in parent.schedule:
        if parent.start_ns + (step.ts - parent.start_ns) * parent.stretch > now:
            break
        fraction = step.fraction
    return parent.quantity if fraction >= 1.0 else parent.quantity * Decimal(repr(fraction))


def a_parent(schedule: list[Slice], quantity: Decimal) -> ParentOrder:
    start = schedule[0].ts
    return ParentOrder(
        parent_order_id="P-1", symbol=BTC, side=OrderSide.BUY, quantity=quantity, reduce_only=False,
        strategy="test", style=ExecutionStyle.TWAP, passive=False, schedule=schedule, start_ns=start,
        arrival_price=Decimal("60000"), protection_price=Decimal("60060"), passive_deadline=start,
        end_ns=schedule[-1].ts, urgency=0.5, estimated_impact_bps=None,
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    slices=st.integers(1, 40),
    seed=st.integers(0, 1000),
    quantity=st.decimals(min_value="0.001", max_value="100", places=3),
    moves=st.lists(st.tuples(st.integers(-50, 400), st.booleans()), min_size=1, max_size=60),
)
def test_parent_target_resumed_between_calls_equals_a_walk_over_the_whole_schedule(slices, seed, quantity, moves):
    # Arrange: a jittered TWAP schedule; clock steps (mostly forward, sometimes back) and a mid-way stretch
    schedule = twap_schedule(1_000_000_000, 300_000_000_000, slices, seed=seed, size_jitter=0.2, time_jitter=0.4)
    parent = a_parent(schedule, quantity)
    now = schedule[0].ts - 5_000_000_000

    for step_seconds, stretch in moves:
        now += step_seconds * 1_000_000_000 // 10
        if stretch:
            parent.stretch = 2.0

        # Act
        target = parent.target(now)

        # Assert
        assert target == plain_target(parent, now)


def test_a_router_keeps_a_bounded_history_of_finished_parents_and_lets_them_go():
    # Arrange: a history of 3; six aggressive parents worked to the end on the real session
    desk = Desk(RouterSettings(), history=3)
    start = first_book_index()
    desk.play(0, start + 1)
    parents = []

    # Act
    for k in range(6):
        side = OrderSide.BUY if k % 2 == 0 else OrderSide.SELL
        parents.append(desk.router.execute_aggressive(BTC, side, Decimal("0.010")))
        desk.play(start + 1 + 20 * k, start + 21 + 20 * k)

    # Assert
    assert not desk.router.parents
    assert [c.parent_order_id for c in desk.router.completed] == [p.parent_order_id for p in parents[-3:]]
    assert len(desk.router._finished_children) == 3
    assert not desk.router._parent_of
    assert desk.router.parent_of(parents[-1].children[-1]) == parents[-1].parent_order_id
    assert desk.router.parent_of(parents[0].children[0]) is None


def bar_desk() -> tuple[SimulatedClock, EventBus, SimulatedExchange, OrderManager, SmartOrderRouter]:
    """A bar-driven desk (no books), passive for ten bars: the venue sees each bar before the router."""
    clock = SimulatedClock(0)
    bus = EventBus()
    exchange = SimulatedExchange(
        real_instruments(), clock, initial_balance=Decimal("1000000"), schedule=real_schedule()
    )
    bus.subscribe(BarClosed, exchange.on_bar, name="exchange.bars")
    orders = OrderManager(exchange, ClientOrderIdGenerator("keel"), bus, clock, route_approvals=False)
    settings = RouterSettings(passive_time_limit_seconds=600.0)
    router = SmartOrderRouter(orders, real_instruments(), settings, bus, clock)
    orders.start()
    router.start()
    return clock, bus, exchange, orders, router


def play_bars(clock: SimulatedClock, bus: EventBus, bars: tuple[BarClosed, ...]) -> None:
    for bar in bars:
        clock.advance_to(bar.ts_event)
        bus.publish(bar)
        bus.drain()


def test_a_passive_child_on_bars_posts_a_tick_away_from_the_close_and_rests():
    # Arrange: a bar-driven router that has seen 30 real bars (the close is both its bid and its ask)
    clock, bus, _exchange, orders, router = bar_desk()
    bars = real_bars(BTC, 31)
    play_bars(clock, bus, bars[:30])

    # Act
    parent = router.execute_passive(BTC, OrderSide.BUY, Decimal("0.010"))
    bus.drain()

    # Assert: posted below the close (at it, it would take and the venue would reject it), and resting
    (child,) = [orders.orders[c] for c in parent.children]
    tick = real_instruments()[BTC].tick_size
    assert child.price == Decimal(repr(bars[29].close)) - tick
    assert child.status.value == "ACCEPTED"
    assert router.resume() == {child.client_order_id}


def test_resume_counts_a_fill_reported_again_once_and_releases_a_closed_child():
    # Arrange: a passive parent worked over real bars until a child filled and the next one works
    clock, bus, _exchange, orders, router = bar_desk()
    bars = real_bars(BTC, 120)
    play_bars(clock, bus, bars[:30])
    parent = router.execute_passive(BTC, OrderSide.BUY, Decimal("0.020"))
    bus.drain()
    played = 30
    while not orders.fills() and played < 120:
        play_bars(clock, bus, bars[played : played + 1])
        played += 1
    fill = orders.fills()[0]
    filled = parent.filled

    # Act: the same fill reported again (as a reconciliation after a restart would find it), then resume
    router.on_fill(fill)
    working = router.resume()

    # Assert: counted once; what is working is the parent's open live child, if it has one
    assert filled > 0 and parent.filled == filled
    live = [c for c in parent.children if not orders.orders[c].is_closed]
    assert working == set(live) == ({parent.live_child} if parent.live_child else set())


def test_vwap_of_a_symbol_without_a_liquidity_profile_is_refused_naming_it_and_nothing_is_sent() -> None:
    # Arrange: a router given the profile of another symbol only
    profiler = LiquidityProfiler(bucket_minutes=1)
    for bar in real_bars(BTC, 120):
        profiler.on_bar(bar)
    desk = Desk(RouterSettings(), profiler=profiler)
    desk.router.profilers = {"ETHUSDT": desk.router.profilers.pop(BTC)}
    desk.play(0, first_book_index() + 1)

    # Act
    with pytest.raises(ValueError, match=f"VWAP needs a liquidity profile of {BTC}"):
        desk.router.execute_vwap(BTC, OrderSide.BUY, Decimal("0.010"))

    # Assert
    assert desk.router.parents == {} and desk.orders.orders == {}
