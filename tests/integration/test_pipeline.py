"""The pipeline wiring shared by backtest and paper runs."""

from __future__ import annotations

from decimal import Decimal

from keel.config import load_config
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.fsm import ComponentState
from keel.core.instruments import load_instruments
from keel.core.messages import BarClosed
from keel.integration.pipeline import build_pipeline


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
