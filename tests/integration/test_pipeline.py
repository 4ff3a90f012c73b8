"""The pipeline wiring shared by backtest and paper runs."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from keel.config import load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, SimulatedClock
from keel.core.fsm import ComponentState
from keel.core.instruments import load_instruments
from keel.core.messages import BarClosed, FundingRateUpdated, PositionSide, SubmitOrder
from keel.core.orders import OrderSide, OrderType
from keel.core.ports import ExchangePort
from keel.integration.pipeline import build_pipeline
from keel.market_data.feeds import RecordedBarFeed


def test_a_raising_handler_degrades_its_component_and_the_run_goes_on() -> None:
    # Arrange
    config = load_config("backtest", environ={})
    bus = EventBus()
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), bus, SimulatedClock(0))
    pipeline.start()
    bus.drain()

    def broken_risk_handler(bar: BarClosed) -> None:
        raise ArithmeticError("bug in a risk handler")

    bus.subscribe(BarClosed, broken_risk_handler, name="risk.controller.volatility")
    bar = BarClosed(
        symbol="BTCUSDT",
        interval="1m",
        open_time=0,
        open=95505.4,
        high=95505.5,
        low=95502.7,
        close=95502.7,
        volume=16.536,
        ts_event=60_000_000_000,
        ts_init=60_000_000_000,
    )

    # Act
    bus.publish(bar)
    bus.drain()

    # Assert
    assert bus.handler_errors == 1
    assert pipeline.risk.state is ComponentState.DEGRADED
    assert pipeline.orders.state is ComponentState.RUNNING
    assert pipeline.positions.marks["BTCUSDT"] == Decimal("95502.7")


def test_the_venues_liquidation_reaches_the_position_book_and_the_recorder() -> None:
    # Arrange: BTCUSDT only, isolated at 100x; a 0.1 BTC long sent through the order manager on
    # the real bars of 2025-05-04 (the strategies may trade too).
    base = load_config("backtest", environ={})
    config = base.model_copy(
        update={
            "data": base.data.model_copy(update={"symbols": ("BTCUSDT",)}),
            "exchange": base.exchange.model_copy(update={"margin_type": "ISOLATED", "leverage": 100}),
            "strategy": base.strategy.model_copy(
                update={"name": "moving_average_cross", "fast_period": 900, "slow_period": 1000}
            ),
            "portfolio": base.portfolio.model_copy(update={"rebalance_interval_minutes": 0}),
        }
    )
    root = Path(__file__).resolve().parents[2]
    feed = RecordedBarFeed(
        root / "data" / config.data.bars,
        ("BTCUSDT",),
        "1m",
        root / "data" / config.data.funding,
        end_ns=1_746_403_200_000 * NANOS_PER_MILLI,
    )
    events = list(feed)
    clock = SimulatedClock(events[0].ts_event)
    bus = EventBus()
    pipeline = build_pipeline(config, load_instruments(root / "config" / "instruments.yaml"), bus, clock)
    pipeline.start()
    bus.drain()

    # Act
    for index, event in enumerate(events):
        clock.advance_to(event.ts_event)
        bus.publish(event)
        bus.drain()
        if index == 0:
            bus.publish(
                SubmitOrder(
                    client_order_id="manual-1",
                    symbol="BTCUSDT",
                    side=OrderSide.BUY,
                    order_type=OrderType.MARKET,
                    quantity=Decimal("0.100"),
                    ts_event=event.ts_event,
                    ts_init=event.ts_event,
                )
            )
            bus.drain()

    # Assert: whatever else the strategies traded, every liquidation's fill reached the books
    liquidations = pipeline.recorder.liquidations
    assert liquidations and pipeline.recorder.fills[0].client_order_id == "manual-1"
    fill_ids = [f.client_order_id for f in pipeline.recorder.fills]
    assert all(liquidation.client_order_id in fill_ids for liquidation in liquidations)
    assert pipeline.positions.quantity("BTCUSDT") == pipeline.exchange.account.quantity(("BTCUSDT", PositionSide.BOTH))
    assert pipeline.positions.fees_paid == pipeline.exchange.fees_paid
    assert any(isinstance(e, FundingRateUpdated) for e in events)
    assert pipeline.positions.equity() == pipeline.exchange.balance().margin_balance
    assert pipeline.orders.unknown_reports == 0


class _OtherVenue:
    name = "other"


def test_the_pipeline_holds_its_venue_by_the_exchange_port() -> None:
    # Arrange
    config = load_config("backtest", environ={})
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), EventBus(), SimulatedClock(0))
    elsewhere = dataclasses.replace(pipeline, exchange=_OtherVenue())

    # Act
    simulated = pipeline.simulated_exchange()

    # Assert
    assert isinstance(pipeline.exchange, ExchangePort)
    assert simulated is pipeline.exchange
    with pytest.raises(TypeError, match="the venue other is not the simulated exchange"):
        elsewhere.simulated_exchange()
