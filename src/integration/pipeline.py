"""Wire one trading pipeline on a bus, the same way for backtest, paper and live.

:func:`build_pipeline` creates the components of DESIGN.md's pipeline from the
configuration and subscribes them in an order that makes every run
deterministic: the venue sees a bar first (orders placed on earlier bars fill
at its open), then the position book marks to it, then strategies, the
allocator, risk and execution react to it. :class:`RunRecorder` keeps the
fills, denials and equity curve that reports are written from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from keel.api.simulated_exchange import SimulatedExchange
from keel.config import KeelConfig
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MINUTE, Clock, datetime_to_ns
from keel.core.component import Component
from keel.core.instruments import Instrument
from keel.core.messages import (
    BarClosed,
    FundingRateUpdated,
    Message,
    OrderDenied,
    OrderFilled,
    OrderRejected,
    TradingStateChanged,
)
from keel.core.orders import ClientOrderIdGenerator
from keel.execution.order_manager import OrderManager
from keel.market_data.feeds import RecordedBarFeed
from keel.portfolio.equal_weight import EqualWeightAllocator
from keel.risk_management.position_manager import PositionManager
from keel.risk_management.risk_controller import RiskController
from keel.strategy_engine.base import BaseStrategy, StrategyRunner
from keel.strategy_engine.moving_average_cross import MovingAverageCrossStrategy


@dataclass(slots=True)
class EquityPoint:
    """Equity and exposure at one bar close."""

    ts: int
    equity: Decimal
    gross_exposure: Decimal


@dataclass(slots=True)
class RunRecorder:
    """Keep what a run report needs: fills, venue rejections, risk denials, equity."""

    fills: list[OrderFilled] = field(default_factory=list)
    rejections: list[OrderRejected] = field(default_factory=list)
    denials: list[OrderDenied] = field(default_factory=list)
    trading_states: list[TradingStateChanged] = field(default_factory=list)
    equity: list[EquityPoint] = field(default_factory=list)

    def attach(self, bus: EventBus) -> None:
        """Subscribe to the events it records."""
        bus.subscribe(OrderFilled, self.fills.append, name="recorder.fills")
        bus.subscribe(OrderRejected, self.rejections.append, name="recorder.rejections")
        bus.subscribe(OrderDenied, self.denials.append, name="recorder.denials")
        bus.subscribe(TradingStateChanged, self.trading_states.append, name="recorder.trading_state")


@dataclass(slots=True)
class Pipeline:
    """The components of one run, in start order."""

    bus: EventBus
    clock: Clock
    exchange: SimulatedExchange
    positions: PositionManager
    strategy: StrategyRunner
    allocator: EqualWeightAllocator
    risk: RiskController
    orders: OrderManager
    recorder: RunRecorder

    @property
    def components(self) -> tuple[Component, ...]:
        """Return the components in start order."""
        return (self.positions, self.strategy, self.allocator, self.risk, self.orders)

    def start(self) -> None:
        """Start every component in order."""
        for component in self.components:
            component.start()

    def stop(self) -> None:
        """Stop every component in reverse order."""
        for component in reversed(self.components):
            component.stop()

    def handler_failed(self, handler: str, message: Message, error: BaseException) -> None:
        """Mark the component that owns a failed bus handler degraded."""
        for component in self.components:
            if handler == component.name or handler.startswith(f"{component.name}."):
                component.degrade(f"{handler} raised on message {message.id}: {error!r}")
                return

    def record_equity(self, ts: int) -> None:
        """Append the current equity and gross exposure to the curve."""
        self.recorder.equity.append(EquityPoint(ts, self.positions.equity(), self.positions.gross_exposure()))


def build_feed(config: KeelConfig) -> RecordedBarFeed:
    """Build the recorded feed of the configured symbols, interval, funding file and dates."""
    data = config.data
    return RecordedBarFeed(
        data.root / data.bars,
        data.symbols,
        data.bar_interval,
        data.root / data.funding,
        start_ns=None if data.start is None else datetime_to_ns(data.start),
        end_ns=None if data.end is None else datetime_to_ns(data.end),
    )


def build_strategy(config: KeelConfig) -> BaseStrategy:
    """Build the configured strategy."""
    settings = config.strategy
    return MovingAverageCrossStrategy(fast_period=settings.fast_period, slow_period=settings.slow_period)


def build_pipeline(
    config: KeelConfig,
    instruments: Mapping[str, Instrument],
    bus: EventBus,
    clock: Clock,
    *,
    strategy: BaseStrategy | None = None,
    initial_capital: Decimal | None = None,
    client_order_namespace: str = "keel",
) -> Pipeline:
    """Create and wire every component of a run on ``bus`` (not started yet).

    Parameters
    ----------
    config
        The run's configuration.
    instruments
        Filters of every tradable symbol.
    bus, clock
        The event bus and the clock every component uses.
    strategy
        The strategy to run; the configured one when None.
    initial_capital
        Starting balance; ``exchange.initial_balance`` when None.
    client_order_namespace
        Prefix of every client order id of this run.
    """
    capital = config.exchange.initial_balance if initial_capital is None else initial_capital
    symbols = config.data.symbols
    missing = [s for s in symbols if s not in instruments]
    if missing:
        raise ValueError(
            f"no instrument specification for {', '.join(missing)}: add them to {config.exchange.instruments}"
        )
    exchange = SimulatedExchange(
        {s: instruments[s] for s in symbols},
        clock,
        initial_balance=capital,
        leverage=config.exchange.leverage,
        slippage_bps=config.exchange.slippage_bps,
        maker_fee=config.exchange.maker_fee,
        taker_fee=config.exchange.taker_fee,
    )
    bus.subscribe(BarClosed, exchange.on_bar, name="exchange.simulated.bars")
    bus.subscribe(FundingRateUpdated, exchange.on_funding, name="exchange.simulated.funding")
    positions = PositionManager(capital, bus, clock)
    runner = StrategyRunner(strategy or build_strategy(config), bus, clock)
    allocator = EqualWeightAllocator(
        symbols,
        config.portfolio.gross_exposure,
        bus,
        clock,
        rebalance_interval_ns=config.portfolio.rebalance_interval_minutes * NANOS_PER_MINUTE,
    )
    risk = RiskController(
        instruments,
        positions,
        max_order_notional=config.risk.max_order_notional,
        max_position_notional=config.risk.max_position_notional,
        max_leverage=config.risk.max_leverage,
        rebalance_threshold=config.portfolio.rebalance_threshold,
        bus=bus,
        clock=clock,
    )
    orders = OrderManager(exchange, ClientOrderIdGenerator(client_order_namespace), bus, clock)
    recorder = RunRecorder()
    recorder.attach(bus)
    pipeline = Pipeline(bus, clock, exchange, positions, runner, allocator, risk, orders, recorder)
    bus.add_handler_error_listener(pipeline.handler_failed)
    return pipeline
