"""A user's order given to the router whole (a SubmitOrder or a mapping), and awaiting the parent for its analysis.

On real BTCUSDT 1m bars (2025-05-04 15:33 UTC onwards) through the simulated venue: an AGGRESSIVE
child sent after bar 0 fills at bar 1's open.
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from keel.api.simulated_exchange import SimulatedExchange
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.fsm import TradingState
from keel.core.messages import BarClosed, ExecutionCompleted, SubmitOrder, TradingStateChanged
from keel.core.orders import ClientOrderIdGenerator, OrderSide, OrderType, TimeInForce
from keel.execution.order_manager import OrderManager
from keel.execution.router import ParentOrder, RouterSettings, SmartOrderRouter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from venue_harness import real_bars, real_instruments, real_schedule

BTC = "BTCUSDT"
BARS = real_bars(BTC, 20)
SECOND = 1_000_000_000


class OrderDesk:
    """Venue, order manager and router on one bus, fed real bars (the venue sees each bar first)."""

    def __init__(self, settings: RouterSettings | None = None) -> None:
        self.clock = SimulatedClock(BARS[0].open_time)
        self.bus = EventBus()
        self.exchange = SimulatedExchange(
            real_instruments(), self.clock, initial_balance=Decimal("1000000"), schedule=real_schedule()
        )
        self.bus.subscribe(BarClosed, self.exchange.on_bar, name="exchange.bars")
        self.orders = OrderManager(
            self.exchange, ClientOrderIdGenerator("keel"), self.bus, self.clock, route_approvals=False
        )
        self.router = SmartOrderRouter(
            self.orders, real_instruments(), settings or RouterSettings(), self.bus, self.clock
        )
        self.orders.start()
        self.router.start()
        self.bus.drain()
        self.feed(BARS[0])

    def feed(self, *bars: BarClosed) -> None:
        self.bus.drain()  # the children sent so far reach the venue before the bar
        for bar in bars:
            self.clock.advance_to(max(self.clock.timestamp_ns(), bar.ts_event))
            self.bus.publish(bar)
            self.bus.drain()

    def nothing_sent(self) -> bool:
        self.bus.drain()
        return not self.orders.orders and not self.router.parents


async def result_of(parent: ParentOrder) -> ExecutionCompleted:
    return await parent


def market_order(**fields: object) -> SubmitOrder:
    terms: dict = {"client_order_id": "mine-1", "symbol": BTC, "side": OrderSide.SELL, "order_type": OrderType.MARKET,
                   "quantity": Decimal("0.020"), "ts_event": 0, "ts_init": 0}  # fmt: skip
    return SubmitOrder(**{**terms, **fields})


# --- the order shapes -------------------------------------------------------------------------


def test_a_mapping_order_is_worked_as_the_same_parent_as_its_fields():
    # Arrange
    desk = OrderDesk()
    order = {"symbol": "btcusdt", "side": "buy", "quantity": "0.010", "strategy": "desk", "urgency": 0.9}

    # Act
    parent = desk.router.execute_aggressive(order)
    desk.bus.drain()

    # Assert
    assert (parent.symbol, parent.side, parent.quantity) == (BTC, OrderSide.BUY, Decimal("0.010"))
    assert (parent.strategy, parent.urgency, parent.reduce_only) == ("desk", 0.9, False)
    (child,) = desk.orders.orders.values()
    assert child.time_in_force is TimeInForce.IOC and child.quantity == Decimal("0.010")


def test_a_market_submit_order_is_worked_with_its_side_quantity_reduce_only_and_strategy():
    # Arrange: a short to reduce
    desk = OrderDesk()
    desk.router.execute_aggressive(BTC, OrderSide.SELL, Decimal("0.050"))
    desk.feed(BARS[1])

    # Act
    parent = desk.router.execute_passive(
        market_order(side=OrderSide.BUY, quantity=Decimal("0.020"), reduce_only=True, strategy="hedge")
    )

    # Assert
    assert (parent.side, parent.quantity, parent.reduce_only, parent.strategy) == (
        OrderSide.BUY, Decimal("0.020"), True, "hedge"
    )  # fmt: skip
    assert parent.style.value == "PASSIVE" and parent.parent_order_id in desk.router.parents


@pytest.mark.parametrize(
    ("order", "error", "named"),
    [
        ({"symbol": BTC, "side": "BUY", "quantity": "0.010", "price": "95000", "tif": "IOC"}, ValueError, "price"),
        ({"symbol": BTC, "side": "BUY", "quantity": "0.010", "price": "95000", "tif": "IOC"}, ValueError, "tif"),
        ({"symbol": BTC, "quantity": "0.010"}, ValueError, "side"),
        ({"symbol": BTC, "side": "BUY", "quantity": 0.01}, TypeError, r"Decimal\('0.01'\)"),
        ({"symbol": BTC, "side": "UP", "quantity": "0.010"}, ValueError, "'UP'"),
        ({"symbol": BTC, "side": "BUY", "quantity": "0.010", "urgency": 1.5}, ValueError, "urgency"),
        ({"symbol": BTC, "side": "BUY", "quantity": "0.010", "urgency": float("nan")}, ValueError, "urgency"),
        ({"symbol": BTC, "side": "BUY", "quantity": "0.010", "reduce_only": "no"}, TypeError, "reduce_only"),
        ({"symbol": "DOGEUSDT", "side": "BUY", "quantity": "100"}, ValueError, "DOGEUSDT"),
        ({"symbol": BTC, "side": "BUY", "quantity": "-1"}, ValueError, "positive"),
        (market_order(order_type=OrderType.LIMIT, price=Decimal("95000")), ValueError, "order_type, price"),
        (market_order(stop_price=Decimal("90000")), ValueError, "stop_price"),
        (market_order(approval_id=7), ValueError, "approval_id"),
        (("BTCUSDT", "BUY", "0.010"), TypeError, "SubmitOrder or a mapping"),
    ],
)
def test_an_order_that_is_not_one_is_refused_naming_what_is_wrong_and_nothing_is_sent(order, error, named):
    # Arrange
    desk = OrderDesk()

    # Act
    with pytest.raises(error, match=named):
        desk.router.execute_aggressive(order)

    # Assert
    assert desk.nothing_sent()


def test_an_order_comes_alone_and_a_symbol_comes_with_its_side_and_quantity():
    # Arrange
    desk = OrderDesk()
    order = {"symbol": BTC, "side": "BUY", "quantity": "0.010"}

    # Act / Assert
    with pytest.raises(TypeError, match="an order comes alone"):
        desk.router.execute_twap(order, urgency=0.5)
    with pytest.raises(TypeError, match="give symbol, side and quantity"):
        desk.router.execute_twap(BTC, quantity=Decimal("0.010"))
    assert desk.nothing_sent()


def test_a_parent_schedule_spans_the_horizon_it_is_given_and_a_bad_horizon_is_refused():
    # Arrange: no jitter, 4 slices
    desk = OrderDesk(RouterSettings(twap_horizon_seconds=240, twap_slices=4, size_jitter=0, time_jitter=0))

    # Act
    parent = desk.router.execute_twap(BTC, "BUY", Decimal("0.040"), horizon_seconds=120)

    # Assert
    assert [(s.ts - parent.start_ns) // SECOND for s in parent.schedule] == [0, 30, 60, 90]
    for horizon in (0, float("inf"), "120"):
        with pytest.raises(ValueError, match="horizon_seconds"):
            desk.router.execute_twap(BTC, "BUY", Decimal("0.040"), horizon_seconds=horizon)


# --- awaiting a parent ------------------------------------------------------------------------


def test_awaiting_a_finished_parent_returns_its_analysis_at_once():
    # Arrange: the child fills at bar 1's open
    desk = OrderDesk()
    parent = desk.router.execute_aggressive(BTC, "BUY", Decimal("0.010"))
    desk.feed(BARS[1])

    # Act
    result = asyncio.run(result_of(parent))

    # Assert
    assert result is desk.router.completed[-1]
    assert result.reason == "filled" and result.filled_quantity == Decimal("0.010")


def test_awaiting_a_working_parent_returns_its_analysis_once_it_finished():
    # Arrange
    desk = OrderDesk()

    async def operator() -> tuple[bool, ExecutionCompleted]:
        waiting = asyncio.ensure_future(desk.router.execute_aggressive({"symbol": BTC, "side": "SELL", "quantity": 1}))
        await asyncio.sleep(0)  # the waiting task starts and awaits the parent
        working = not waiting.done()
        desk.feed(BARS[1])
        return working, await waiting

    # Act
    working, result = asyncio.run(operator())

    # Assert
    assert working
    assert (result.symbol, result.side, result.filled_quantity) == (BTC, OrderSide.SELL, Decimal(1))
    assert result.parent_order_id == desk.router.completed[-1].parent_order_id


def test_awaiting_a_parent_the_risk_layer_halts_returns_its_analysis_with_the_reason():
    # Arrange: a post that bar 1 does not reach yet
    desk = OrderDesk(RouterSettings(passive_time_limit_seconds=3600))

    async def operator() -> ExecutionCompleted:
        waiting = asyncio.ensure_future(
            desk.router.execute_passive({"symbol": BTC, "side": "BUY", "quantity": "0.010"})
        )
        await asyncio.sleep(0)
        halt = TradingStateChanged(
            previous=TradingState.ACTIVE, state=TradingState.HALTED, reason="drawdown", ts_event=0, ts_init=0
        )
        desk.bus.publish(halt)
        desk.bus.drain()
        return await waiting

    # Act
    result = asyncio.run(operator())

    # Assert
    assert result.reason == "trading halted: drawdown" and result.style == "PASSIVE"


def test_a_parent_finished_on_another_thread_wakes_its_awaiter_on_the_loop():
    # Arrange: a run replayed off the event loop (as a backtest from Python) finishes the parent
    desk = OrderDesk()

    async def operator() -> ExecutionCompleted:
        waiting = asyncio.ensure_future(desk.router.execute_aggressive(BTC, "BUY", Decimal("0.010")))
        await asyncio.sleep(0)
        await asyncio.to_thread(desk.feed, BARS[1])
        return await waiting

    # Act
    result = asyncio.run(operator())

    # Assert
    assert result.reason == "filled"


def test_a_parent_still_working_when_the_router_stops_raises_in_its_awaiter():
    # Arrange
    desk = OrderDesk()

    async def operator() -> None:
        waiting = asyncio.ensure_future(desk.router.execute_passive(BTC, "BUY", Decimal("0.010")))
        await asyncio.sleep(0)
        desk.router.stop()
        await waiting

    # Act / Assert
    with pytest.raises(RuntimeError, match="router stopped while parent P-1 still worked"):
        asyncio.run(operator())
