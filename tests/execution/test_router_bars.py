"""PASSIVE (maker with a taker fallback) on real BTCUSDT 1m bars, through the simulated venue and the cost model.

The bars used (2025-05-04 15:33 UTC onwards):

    bar  open     high     low      close
    0    95505.4  95505.5  95502.7  95502.7
    1    95502.8  95502.8  95478.0  95478.1
    2    95478.0  95478.1  95457.6  95457.6
    3    95457.7  95467.7  95457.6  95467.7
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

from keel.api.simulated_exchange import SimulatedExchange
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.costs import CostModel, CostSettings
from keel.core.messages import BarClosed, OrderFilled
from keel.core.orders import ClientOrderIdGenerator, LiquiditySide, OrderSide, TimeInForce
from keel.execution.order_manager import OrderManager
from keel.execution.router import RouterSettings, SmartOrderRouter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from venue_harness import real_bars, real_instruments, real_schedule

BTC = "BTCUSDT"
BARS = real_bars(BTC, 40)


class BarDesk:
    """Venue, order manager, cost model and router on one bus, fed real bars (the venue sees each bar first)."""

    def __init__(self, settings: RouterSettings, costs: CostModel | None = None) -> None:
        self.clock = SimulatedClock(BARS[0].open_time)
        self.bus = EventBus()
        self.exchange = SimulatedExchange(
            real_instruments(), self.clock, initial_balance=Decimal("1000000"), schedule=real_schedule()
        )
        self.costs = costs if costs is not None else CostModel(real_instruments(), CostSettings(slippage_bps=1.0))
        self.bus.subscribe(BarClosed, self.exchange.on_bar, name="exchange.bars")
        self.bus.subscribe(BarClosed, self.costs.on_bar, name="costs.bars")
        self.orders = OrderManager(
            self.exchange, ClientOrderIdGenerator("keel"), self.bus, self.clock, route_approvals=False
        )
        self.router = SmartOrderRouter(
            self.orders, real_instruments(), settings, self.bus, self.clock, costs=self.costs
        )
        self.fills: list[OrderFilled] = []
        self.bus.subscribe(OrderFilled, self.fills.append, name="test.fills")
        self.orders.start()
        self.router.start()
        self.bus.drain()

    def feed(self, *bars: BarClosed) -> None:
        for bar in bars:
            self.clock.advance_to(max(self.clock.timestamp_ns(), bar.ts_event))
            self.bus.publish(bar)
            self.bus.drain()

    def children(self) -> list:
        return list(self.orders.orders.values())


def test_a_passive_buy_posts_below_the_close_and_fills_as_a_maker_when_the_next_bar_trades_through():
    # Arrange: after bar 0 (close 95502.7) with a 1 bp half-spread: post at 95493.1
    desk = BarDesk(RouterSettings(passive_time_limit_seconds=30))
    desk.feed(BARS[0])

    # Act
    desk.router.execute_passive(BTC, OrderSide.BUY, Decimal("0.010"))
    desk.bus.drain()
    (child,) = desk.children()
    desk.feed(BARS[1])

    # Assert: bar 1 traded down to 95478.0, through the post
    assert child.time_in_force is TimeInForce.GTX
    assert child.price == Decimal("95493.1")
    (fill,) = desk.fills
    assert fill.liquidity_side is LiquiditySide.MAKER
    assert fill.last_price == Decimal("95493.1")
    assert desk.router.completed[0].reason == "filled"


def test_a_post_the_bars_do_not_reach_falls_back_to_a_taker_after_the_time_limit():
    # Arrange: after bar 2 (close 95457.6) a buy posts at 95448.0; bar 3's low is 95457.6
    desk = BarDesk(RouterSettings(passive_time_limit_seconds=30))
    desk.feed(*BARS[:3])

    # Act
    desk.router.execute_passive(BTC, OrderSide.BUY, Decimal("0.010"))
    desk.bus.drain()
    desk.feed(*BARS[3:6])

    # Assert: the post was canceled after bar 3 and an IOC took the quantity at bar 4's open
    first, second = desk.children()
    assert first.time_in_force is TimeInForce.GTX and first.filled_quantity == 0
    assert second.time_in_force is TimeInForce.IOC
    (fill,) = desk.fills
    assert fill.liquidity_side is LiquiditySide.TAKER
    assert fill.ts_event == BARS[4].open_time


def test_a_resting_post_is_not_repriced_on_every_bar_but_an_adverse_move_makes_it_take():
    # Arrange: the same post after bar 2 on two desks with a long time limit; bar 3 closes 1.06 bp higher
    patient = BarDesk(RouterSettings(passive_time_limit_seconds=3600, passive_adverse_bps=50.0))
    chased = BarDesk(RouterSettings(passive_time_limit_seconds=3600, passive_adverse_bps=1.0))
    for desk in (patient, chased):
        desk.feed(*BARS[:3])
        desk.router.execute_passive(BTC, OrderSide.BUY, Decimal("0.010"))
        desk.bus.drain()

    # Act
    patient.feed(BARS[3])
    chased.feed(BARS[3], BARS[4])

    # Assert: the patient post still rests at its first price; the chased one took after the move
    (resting,) = patient.children()
    assert not resting.is_closed and resting.price == Decimal("95448.0")
    assert [c.time_in_force for c in chased.children()] == [TimeInForce.GTX, TimeInForce.IOC]
    assert chased.fills[-1].liquidity_side is LiquiditySide.TAKER


def test_a_passive_parent_takes_at_once_when_the_cost_model_says_posting_does_not_pay():
    # Arrange: maker and taker fees equal and no spread: nothing is saved by waiting
    costs = CostModel(real_instruments(), CostSettings(maker_fee=0.0004, taker_fee=0.0004, slippage_bps=0.0))
    desk = BarDesk(RouterSettings(), costs)
    desk.feed(*BARS[:3])

    # Act
    desk.router.execute_passive(BTC, OrderSide.BUY, Decimal("0.010"))
    desk.bus.drain()

    # Assert
    (child,) = desk.children()
    assert child.time_in_force is TimeInForce.IOC


def test_bar_driven_children_of_a_symbol_wait_for_its_first_bar_of_the_run():
    # Arrange: warmed up on history of BTC and ETH; the run's first bar is BTC's
    desk = BarDesk(RouterSettings())
    eth = real_bars("ETHUSDT", 40)
    desk.router.warm_up([*BARS[:3], *eth[:3]])
    desk.feed(BARS[3])

    # Act
    desk.router.execute_aggressive("ETHUSDT", OrderSide.BUY, Decimal("0.100"))
    desk.bus.drain()
    before = desk.children()
    desk.feed(eth[3])

    # Assert: nothing went out before ETH's own bar reached the venue, then the child did
    assert before == []
    (child,) = desk.children()
    assert child.symbol == "ETHUSDT"
