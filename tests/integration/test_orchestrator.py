"""The trading orchestrator's operator commands on the pipeline a backtest wires."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from keel.config import load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, SimulatedClock
from keel.core.errors import RiskRefusedError
from keel.core.instruments import load_instruments
from keel.core.messages import BarClosed, OrderRejected, PositionSide, SubmitOrder
from keel.core.orders import OrderSide, OrderType, TimeInForce
from keel.integration.orchestrator import TradingOrchestrator
from keel.integration.pipeline import Pipeline, build_pipeline

BTC = "BTCUSDT"
# 2025-05-05 00:00 UTC, a funding time: the test ends long before the next one.
START_NS = 1_746_403_200_000 * NANOS_PER_MILLI


def bar(index: int, price: float) -> BarClosed:
    open_time = START_NS + index * NANOS_PER_MINUTE
    return BarClosed(
        symbol=BTC,
        interval="1m",
        open_time=open_time,
        open=price,
        high=price,
        low=price,
        close=price,
        volume=1000.0,
        ts_event=open_time + NANOS_PER_MINUTE,
        ts_init=open_time + NANOS_PER_MINUTE,
    )


def quiet_pipeline() -> tuple[Pipeline, SimulatedClock]:
    """BTCUSDT alone, strategies that never trade: only the test's orders reach the venue."""
    base = load_config("backtest", environ={})
    config = base.model_copy(
        update={
            "data": base.data.model_copy(update={"symbols": (BTC,), "start": None, "end": None}),
            "strategy": base.strategy.model_copy(
                update={"name": "moving_average_cross", "fast_period": 900, "slow_period": 1000, "warmup_bars": 0}
            ),
            "portfolio": base.portfolio.model_copy(
                update={"allocator": "equal_weight", "rebalance_interval_minutes": 0}
            ),
        }
    )
    clock = SimulatedClock(START_NS)
    bus = EventBus()
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), bus, clock)
    pipeline.start()
    bus.drain()
    return pipeline, clock


def play(pipeline: Pipeline, clock: SimulatedClock, event: BarClosed | SubmitOrder) -> None:
    clock.advance_to(max(clock.timestamp_ns(), event.ts_event))
    pipeline.bus.publish(event)
    pipeline.bus.drain()


def order(client_order_id: str, quantity: str, ts: int, price: Decimal | None = None) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=client_order_id,
        symbol=BTC,
        side=OrderSide.BUY,
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        quantity=Decimal(quantity),
        price=price,
        time_in_force=TimeInForce.GTC,
        ts_event=ts,
        ts_init=ts,
    )


def test_an_emergency_flatten_closes_the_venue_position_not_the_orders_still_working() -> None:
    # Arrange: long 0.010 BTC, and a BUY of 0.020 resting far below the market
    pipeline, clock = quiet_pipeline()
    rejected: list[OrderRejected] = []
    pipeline.bus.subscribe(OrderRejected, rejected.append, name="test.rejections")
    play(pipeline, clock, bar(0, 95_000.0))
    play(pipeline, clock, order("manual-1", "0.010", clock.timestamp_ns()))
    play(pipeline, clock, bar(1, 95_000.0))
    play(pipeline, clock, order("manual-2", "0.020", clock.timestamp_ns(), price=Decimal("92000.0")))
    assert pipeline.positions.quantity(BTC) == Decimal("0.010")
    orchestrator = TradingOrchestrator(pipeline, load_config("backtest", environ={}))

    # Act
    outcome = asyncio.run(orchestrator.emergency_stop("test", flatten=True))
    play(pipeline, clock, bar(2, 95_000.0))

    # Assert
    (flatten_id,) = outcome["flatten_orders"]
    flatten = pipeline.orders.orders[flatten_id]
    assert (flatten.side, flatten.quantity, flatten.reduce_only) == (OrderSide.SELL, Decimal("0.010"), True)
    assert rejected == []
    assert pipeline.positions.quantity(BTC) == 0 == pipeline.exchange.account.quantity((BTC, PositionSide.BOTH))
    assert pipeline.orders.open_orders() == []


def test_an_order_by_hand_after_an_emergency_stop_is_refused_unless_it_only_reduces() -> None:
    # Arrange: long 0.010 BTC bought by hand through the run's router, then an emergency stop
    pipeline, clock = quiet_pipeline()
    orchestrator = TradingOrchestrator(pipeline, load_config("backtest", environ={}))
    router = orchestrator.router
    play(pipeline, clock, bar(0, 95_000.0))
    router.execute_aggressive({"symbol": BTC, "side": "BUY", "quantity": "0.010"})
    play(pipeline, clock, bar(1, 95_000.0))  # the venue takes the child
    play(pipeline, clock, bar(2, 95_000.0))  # and fills it at this bar's open
    assert pipeline.positions.quantity(BTC) == Decimal("0.010")
    asyncio.run(orchestrator.emergency_stop("test"))
    sent = len(pipeline.orders.orders)

    # Act
    with pytest.raises(RiskRefusedError) as raised:
        router.execute_aggressive({"symbol": BTC, "side": "BUY", "quantity": "0.010"})
    router.execute_aggressive({"symbol": BTC, "side": "SELL", "quantity": "0.010", "reduce_only": True})
    play(pipeline, clock, bar(3, 95_000.0))
    play(pipeline, clock, bar(4, 95_000.0))

    # Assert: the buy never reached the venue, the reduce-only sell closed the position
    assert "TRADING_HALTED" in str(raised.value)
    assert len(pipeline.orders.orders) == sent + 1
    assert pipeline.positions.quantity(BTC) == 0
    assert [d.reason_code for d in pipeline.recorder.denials] == ["TRADING_HALTED"]
