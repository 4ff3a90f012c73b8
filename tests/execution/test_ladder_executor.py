"""Ladders on real BTCUSDT 1m bars: post-only orders per level through the risk layer, re-armed on fills.

The venue (bar fill model: a resting limit fills as a maker when a later bar
trades through it), the order manager, the position book, the risk
controller and the ladder executor run on one bus. The bars used
(2025-05-04 15:33 UTC onwards):

    bar  low      high     close
    0    95502.7  95505.5  95502.7
    1    95478.0  95502.8  95478.1
    2    95457.6  95478.1  95457.6   trades through 95460
    10   95412.3  95467.2  95412.3   trades through 95420
    13   95380.0  95425.6  95380.0   touches 95380
    28   95419.9  95461.6  95461.6   trades through 95460 upwards
"""

from __future__ import annotations

from decimal import Decimal

from keel.api.brackets import load_leverage_schedule
from keel.api.simulated_exchange import SimulatedExchange
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.fsm import TradingState
from keel.core.instruments import load_instruments
from keel.core.messages import (
    BarClosed,
    LadderProposed,
    LevelOrderProposed,
    OrderApproved,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    SetTradingState,
)
from keel.core.orders import ClientOrderIdGenerator, LiquiditySide, OrderSide, OrderStatus, OrderType, TimeInForce
from keel.execution.ladder_executor import LadderExecutor
from keel.execution.order_manager import OrderBookkeeping, OrderManager
from keel.risk_management.position_manager import PositionManager
from keel.risk_management.risk_controller import DenialReason, RiskController
from kit import ROOT, real_bars

BTC = "BTCUSDT"
BARS = real_bars(BTC, 40)
PRICES = (95380.0, 95420.0, 95460.0, 95500.0, 95540.0, 95580.0)
GRID = (OrderSide.BUY, OrderSide.BUY, OrderSide.BUY, None, OrderSide.SELL, OrderSide.SELL)


class GridDesk:
    """Venue, positions, risk, order manager and ladder executor on one bus, fed real bars (the venue first)."""

    def __init__(self) -> None:
        instruments = load_instruments(ROOT / "config" / "instruments.yaml")
        self.clock = SimulatedClock(BARS[0].open_time)
        self.bus = EventBus()
        self.exchange = SimulatedExchange(
            instruments,
            self.clock,
            initial_balance=Decimal("100000"),
            schedule=load_leverage_schedule(ROOT / "config" / "leverage_brackets.yaml"),
        )
        self.bus.subscribe(BarClosed, self.exchange.on_bar, name="exchange.bars")
        self.positions = PositionManager(Decimal("100000"), self.bus, self.clock)
        self.risk = RiskController(instruments, self.positions, symbols=(BTC,), bus=self.bus, clock=self.clock)
        self.orders = OrderManager(
            self.exchange, ClientOrderIdGenerator("keel"), self.bus, self.clock, route_approvals=False
        )
        self.ladders = LadderExecutor(self.orders, self.bus, self.clock)
        for component in (self.positions, self.risk, self.orders, self.ladders):
            component.start()
        self.submitted: list[OrderSubmitted] = []
        self.proposals: list[LevelOrderProposed] = []
        self.denials: list[OrderDenied] = []
        self.approvals: list[OrderApproved] = []
        self.fills: list[OrderFilled] = []
        self.rejections: list[OrderRejected] = []
        self.bus.subscribe(OrderSubmitted, self.submitted.append, name="test.submitted")
        self.bus.subscribe(LevelOrderProposed, self.proposals.append, name="test.proposals")
        self.bus.subscribe(OrderDenied, self.denials.append, name="test.denials")
        self.bus.subscribe(OrderApproved, self.approvals.append, name="test.approvals")
        self.bus.subscribe(OrderFilled, self.fills.append, name="test.fills")
        self.bus.subscribe(OrderRejected, self.rejections.append, name="test.rejections")
        self.bus.drain()

    def feed(self, first: int, last: int) -> None:
        """Feed bars ``first`` to ``last`` (inclusive)."""
        for bar in BARS[first : last + 1]:
            self.clock.advance_to(max(self.clock.timestamp_ns(), bar.ts_event))
            self.bus.publish(bar)
            self.bus.drain()

    def ladder(
        self,
        prices: tuple[float, ...] = PRICES,
        sides: tuple[OrderSide | None, ...] = GRID,
        cap: int = 2,
        notional: float = 500.0,
    ) -> None:
        now = self.clock.timestamp_ns()
        self.bus.publish(
            LadderProposed(
                strategy="grid_trading",
                symbol=BTC,
                prices=prices,
                sides=sides,
                level_notional=notional,
                max_inventory_levels=cap,
                reason="test",
                ts_event=now,
                ts_init=now,
            )
        )
        self.bus.drain()

    def set_state(self, state: TradingState) -> None:
        now = self.clock.timestamp_ns()
        self.bus.publish(SetTradingState(state=state, reason="operator", ts_event=now, ts_init=now))
        self.bus.drain()

    def resting(self) -> dict[Decimal, OrderSide]:
        """Return the side of the open order at each price."""
        return {o.price: o.side for o in self.orders.open_orders() if o.price is not None}


def test_the_order_manager_sees_one_post_only_limit_per_level_at_the_level_prices_within_the_cap() -> None:
    # Arrange
    desk = GridDesk()
    desk.feed(0, 0)

    # Act: a cap of 2 levels either way
    desk.ladder()

    # Assert: the two buys and two sells nearest the empty level, 0.005 BTC (500 USDT) each
    orders = list(desk.orders.orders.values())
    assert {(o.order_type, o.time_in_force, o.strategy) for o in orders} == {
        (OrderType.LIMIT, TimeInForce.GTX, "grid_trading")
    }
    assert desk.resting() == {
        Decimal("95460.0"): OrderSide.BUY,
        Decimal("95420.0"): OrderSide.BUY,
        Decimal("95540.0"): OrderSide.SELL,
        Decimal("95580.0"): OrderSide.SELL,
    }
    assert {o.quantity for o in orders} == {Decimal("0.005")}
    assert len(desk.submitted) == 4 and all(s.approval_id is not None for s in desk.submitted)


def test_a_filled_level_re_arms_the_opposite_side_one_level_away_and_the_cap_stops_the_next_buy() -> None:
    # Arrange
    desk = GridDesk()
    desk.feed(0, 0)
    desk.ladder()

    # Act: bar 2 trades through 95460, bar 10 through 95420, bar 13 reaches 95380
    desk.feed(1, 13)

    # Assert: both buys filled as makers at their prices; each re-armed a sell one level up
    assert [(f.side, f.last_price, f.liquidity_side) for f in desk.fills] == [
        (OrderSide.BUY, Decimal("95460.0"), LiquiditySide.MAKER),
        (OrderSide.BUY, Decimal("95420.0"), LiquiditySide.MAKER),
    ]
    assert desk.resting() == {
        Decimal("95460.0"): OrderSide.SELL,
        Decimal("95500.0"): OrderSide.SELL,
        Decimal("95540.0"): OrderSide.SELL,
        Decimal("95580.0"): OrderSide.SELL,
    }
    # two filled levels are the cap: no buy rests at 95380, which bar 13 reached
    assert desk.positions.quantity(BTC) == Decimal("0.010")
    assert desk.ladders.rearmed == 2


def test_a_filled_sell_re_arms_a_buy_one_level_down() -> None:
    # Arrange: two buys filled (bars 2 and 10)
    desk = GridDesk()
    desk.feed(0, 0)
    desk.ladder()
    desk.feed(1, 13)

    # Act: bar 28 trades up through 95460
    desk.feed(14, 28)

    # Assert
    assert desk.fills[-1].side is OrderSide.SELL and desk.fills[-1].last_price == Decimal("95460.0")
    assert desk.resting()[Decimal("95420.0")] is OrderSide.BUY
    assert desk.positions.quantity(BTC) == Decimal("0.005")


def test_halted_cancels_every_level_order_and_places_none_until_active() -> None:
    # Arrange
    desk = GridDesk()
    desk.feed(0, 0)
    desk.ladder()

    # Act
    desk.set_state(TradingState.HALTED)
    desk.feed(1, 13)
    halted_fills = len(desk.fills)
    desk.set_state(TradingState.ACTIVE)

    # Assert: nothing rested or filled while halted (bars 2 and 10 traded through both buys)
    assert halted_fills == 0
    assert [o.status for o in list(desk.orders.orders.values())[:4]] == [OrderStatus.CANCELED] * 4
    # ACTIVE placed the sells again; the buys, now above the price (95380), would take and wait
    assert desk.resting() == {Decimal("95540.0"): OrderSide.SELL, Decimal("95580.0"): OrderSide.SELL}
    assert desk.ladders.would_take == 2


def test_a_post_only_level_that_would_take_is_placed_again_when_the_close_is_on_its_passive_side() -> None:
    # Arrange: after bar 0 (close 95502.7) a sell at 95490 would take
    desk = GridDesk()
    desk.feed(0, 0)

    # Act
    desk.ladder(prices=(95400.0, 95490.0), sides=(None, OrderSide.SELL))
    rejected = [r.code for r in desk.rejections]
    desk.feed(1, 1)  # close 95478.1: below the level, where a sell rests
    resting = desk.resting()
    desk.feed(2, 30)  # bar 30 trades up through it (high 95497.3)

    # Assert
    assert rejected == [-5022]
    assert desk.ladders.would_take == 1
    assert resting == {Decimal("95490.0"): OrderSide.SELL}
    assert [(f.side, f.last_price, f.liquidity_side) for f in desk.fills] == [
        (OrderSide.SELL, Decimal("95490.0"), LiquiditySide.MAKER)
    ]


def test_reducing_approves_only_the_level_orders_that_reduce_the_position() -> None:
    # Arrange: two buys filled
    desk = GridDesk()
    desk.feed(0, 0)
    desk.ladder()
    desk.feed(1, 13)

    # Act
    desk.set_state(TradingState.REDUCING)

    # Assert: the sells (which reduce the long) rest again, up to the position; the rest were denied
    sides = set(desk.resting().values())
    assert sides == {OrderSide.SELL}
    resting_quantity = sum(o.remaining_quantity for o in desk.orders.open_orders())
    assert resting_quantity <= desk.positions.quantity(BTC)
    assert DenialReason.REDUCE_ONLY_STATE.value in {d.reason_code for d in desk.denials}


def test_an_ended_ladder_cancels_its_orders_and_the_risk_layer_closes_what_it_filled() -> None:
    # Arrange: two buys filled (0.010 BTC)
    desk = GridDesk()
    desk.feed(0, 0)
    desk.ladder()
    desk.feed(1, 13)

    # Act
    desk.ladder(prices=(), sides=())

    # Assert
    assert desk.orders.open_orders() == []
    (close,) = desk.approvals
    assert (close.side, close.quantity, close.strategy) == (OrderSide.SELL, Decimal("0.010"), "grid_trading")


def test_after_a_restart_the_level_orders_the_records_hold_open_go_on_and_the_others_are_placed_again() -> None:
    # Arrange: four levels resting; the records then lose all but the first two (a restart's restored books)
    desk = GridDesk()
    desk.feed(0, 0)
    desk.ladder()
    first, second, *_ = desk.orders.orders
    snapshot = desk.orders.snapshot()
    kept = [o for o in snapshot.orders if o.client_order_id in (first, second)]
    desk.orders.restore(OrderBookkeeping(orders=kept, commands=[], account_events=[]))
    proposals_before = len(desk.proposals)

    # Act
    working = desk.ladders.resume()
    desk.bus.drain()

    # Assert
    assert working == {first, second}
    assert len(desk.proposals) - proposals_before == 2


def test_a_level_order_the_venue_expires_on_arrival_waits_for_the_next_passive_close_like_a_rejection() -> None:
    # Arrange: the two-level ladder's sell rests at 95600 after bar 0
    desk = GridDesk()
    desk.feed(0, 0)
    desk.ladder(prices=(95400.0, 95600.0), sides=(None, OrderSide.SELL))
    (client_order_id,) = desk.orders.orders
    now = desk.clock.timestamp_ns()

    # Act: a venue that expires a post-only order that would take reports it so
    desk.bus.publish(OrderExpired(client_order_id=client_order_id, symbol=BTC, reason="GTX", ts_event=now, ts_init=now))
    desk.bus.drain()
    proposals = len(desk.proposals)
    desk.feed(1, 1)

    # Assert
    assert desk.ladders.would_take == 1
    assert len(desk.proposals) == proposals + 1 and desk.proposals[-1].level == 1
