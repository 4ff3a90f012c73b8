"""Wire one trading pipeline on a bus, the same way for backtest, paper and live.

:func:`build_pipeline` creates the components of DESIGN.md's pipeline from the
configuration and subscribes them in an order that makes every run
deterministic: the venue sees a bar first (orders placed on earlier bars fill
at its open), then the position book marks to it, then strategies, the
allocator, risk and execution react to it. The venue also takes recorded
books, prints and mark prices when the feed has them. Approved orders go to
the smart order router, which works them as child orders through the order
manager; every venue report goes to the order manager, which also publishes
the account events no order of keel's caused (the venue's liquidations and
their ``autoclose-`` fills, funding).
A :class:`~keel.integration.run_recorder.RunRecorder` keeps the fills,
denials, liquidations and equity curve that reports are written from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import structlog

from keel.api.brackets import load_leverage_schedule
from keel.api.simulated_exchange import SimulatedExchange
from keel.config import KeelConfig
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, Clock, datetime_to_ns
from keel.core.component import Component
from keel.core.costs import CostModel, CostSettings
from keel.core.errors import ConfigurationError, MalformedDataError
from keel.core.fsm import TradingState
from keel.core.instruments import Instrument
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    FundingRateUpdated,
    MarketDataEvent,
    MarkPriceUpdated,
    Message,
    OrderFilled,
    TradeTick,
)
from keel.core.orders import ClientOrderIdGenerator
from keel.core.ports import ExchangePort, MarginType, PositionMode
from keel.execution.algorithms import ExecutionStyle
from keel.execution.ladder_executor import LadderExecutor
from keel.execution.order_manager import OrderManager
from keel.execution.router import RouterSettings, SmartOrderRouter
from keel.integration.run_recorder import RunRecorder
from keel.integration.strategy_gate import build_gatekeeper
from keel.integration.system_monitor import SystemMonitor
from keel.market_data.feed_health import FeedHealthMonitor
from keel.market_data.feeds import INTERVAL_MS, RecordedBarFeed
from keel.market_data.liquidity import MINUTES_PER_DAY, LiquidityProfiler
from keel.portfolio import AdaptiveAllocator, EqualWeightAllocator, PerformanceAttributor, PortfolioOptimizer
from keel.risk_management.limits import RiskLimits
from keel.risk_management.position_manager import PositionManager
from keel.risk_management.risk_controller import RiskController
from keel.risk_management.sizing import PositionSizer
from keel.strategy_engine import (
    BaseStrategy,
    MovingAverageCrossStrategy,
    StrategyFactory,
    StrategyManager,
    StrategyRunner,
)

_log = structlog.get_logger("keel.pipeline")


@dataclass(slots=True)
class Pipeline:
    """The components of one run, in start order."""

    bus: EventBus
    clock: Clock
    exchange: ExchangePort
    positions: PositionManager
    strategy: StrategyRunner
    allocator: PortfolioOptimizer | EqualWeightAllocator
    risk: RiskController
    router: SmartOrderRouter
    orders: OrderManager
    recorder: RunRecorder
    attribution: PerformanceAttributor | None = None
    costs: CostModel | None = None
    excluded_strategies: dict[str, str] = field(default_factory=dict)
    gatekeeper: Component | None = None
    ladders: LadderExecutor | None = None
    warmup: RecordedBarFeed | None = None

    @property
    def components(self) -> tuple[Component, ...]:
        """Return the components in start order."""
        core: tuple[Component, ...] = (
            self.positions,
            self.strategy,
            self.allocator,
            self.risk,
            self.router,
            self.orders,
        )
        core = core if self.gatekeeper is None else (self.gatekeeper, *core)
        core = core if self.ladders is None else (*core, self.ladders)
        return core if self.attribution is None else (*core, self.attribution)

    def start(self) -> None:
        """Start every component in order (the order manager takes the venue's reports)."""
        for component in self.components:
            component.start()

    def stop(self) -> None:
        """Stop every component in reverse order."""
        for component in reversed(self.components):
            component.stop()

    def simulated_exchange(self) -> SimulatedExchange:
        """Return the venue as the simulated exchange (paper and backtest runs trade on it).

        Raises
        ------
        TypeError
            If the venue is another one.
        """
        if not isinstance(self.exchange, SimulatedExchange):
            raise TypeError(f"the venue {self.exchange.name} is not the simulated exchange")
        return self.exchange

    def deliver_in_flight(self) -> None:
        """Let the venue take every request still on its way (only the simulated venue delays them)."""
        if isinstance(self.exchange, SimulatedExchange):
            self.exchange.deliver_in_flight()

    def handler_failed(self, handler: str, message: Message, error: BaseException) -> None:
        """Mark the component that owns a failed bus handler degraded."""
        for component in self.components:
            if handler == component.name or handler.startswith(f"{component.name}."):
                component.degrade(f"{handler} raised on message {message.id}: {error!r}")
                return

    def record_equity(self, ts: int) -> None:
        """Append the current equity and gross exposure to the curve."""
        self.recorder.record_equity_of(self.positions, ts)


def build_feed(config: KeelConfig) -> RecordedBarFeed:
    """Build the recorded feed of the configured symbols, interval, funding file and dates."""
    data = config.data
    return RecordedBarFeed(
        data.root / data.bars,
        data.symbols,
        data.bar_interval,
        funding_file(config),
        start_ns=None if data.start is None else datetime_to_ns(data.start),
        end_ns=None if data.end is None else datetime_to_ns(data.end),
        resample_from=data.resample_from,
    )


def funding_file(config: KeelConfig) -> Path | None:
    """Return the configured funding-rate file, or None when ``data.funding`` is none."""
    data = config.data
    return None if data.funding is None else data.root / data.funding


def excluded_strategies(config: KeelConfig) -> dict[str, str]:
    """Return the configured strategies the data cannot serve, each with the reason."""
    if config.strategy.name != "strategy_manager" or config.data.funding is not None:
        return {}
    reason = "no funding data (data.funding: none): it trades funding rates"
    return {name: reason for name in config.strategy.strategies if name == "funding_arbitrage"}


def build_monitors(
    config: KeelConfig,
    bus: EventBus,
    clock: Clock,
    *,
    venue_failures: Callable[[], int] | None = None,
    database_component: str = "integration.state",
    loop_lag: Callable[[], float] | None = None,
    components: Sequence[Component] = (),
) -> tuple[SystemMonitor, FeedHealthMonitor]:
    """Build the system monitor and the bar-feed watchdog (silence counted in data time), for every mode.

    A gap in the recorded bars is a silent feed: past ``monitor.stale_after_bars``
    bar intervals it moves trading to ``monitor.stale_data_state`` and back, in a
    backtest as in a paper or live run. ``components`` are those the system
    monitor's automatic recovery may return from DEGRADED to RUNNING.
    """
    interval_ns = INTERVAL_MS[config.data.bar_interval] * NANOS_PER_MILLI
    settings = config.monitor
    system = SystemMonitor(
        bus,
        clock,
        stale_data_state=_state_or_none(settings.stale_data_state),
        mismatch_state=_state_or_none(settings.reconciliation_mismatch_state),
        check_interval_ns=interval_ns,
        venue_failures=venue_failures,
        database_outage_state=_state_or_none(settings.database_outage_state),
        database_component=database_component,
        rejection_limit=settings.rejections_before_alert,
        rejection_window_ns=round(settings.rejection_window_minutes * NANOS_PER_MINUTE),
        rejection_state=_state_or_none(settings.rejection_state),
        loop_lag=loop_lag,
        loop_lag_threshold_seconds=settings.loop_lag_degraded_seconds,
        venue_ban_state=_state_or_none(settings.venue_ban_state),
        components=components,
    )
    feeds = FeedHealthMonitor(
        "market_data.feed_health",
        bus,
        clock,
        stale_after_ns=settings.stale_after_bars * interval_ns,
        check_interval_ns=interval_ns,
        expected=[(symbol, "kline") for symbol in config.data.symbols],
    )
    return system, feeds


def _state_or_none(name: str) -> TradingState | None:
    return None if name == "none" else TradingState(name)


def log_gaps(feed: RecordedBarFeed, limit: int = 20) -> int:
    """Log the recorded data's gaps (the first ``limit`` one by one, then their count); return how many."""
    gaps = [gap for report in feed.reports for gap in report.gaps]
    for gap in gaps[:limit]:
        _log.warning(
            "gap in the recorded data",
            symbol=gap.symbol,
            start_ms=gap.start_ms,
            end_ms=gap.end_ms,
            missing_bars=gap.missing_bars,
        )
    if len(gaps) > limit:
        _log.warning("more gaps in the recorded data", logged=limit, total=len(gaps))
    return len(gaps)


def build_exchange(
    config: KeelConfig, instruments: Mapping[str, Instrument], clock: Clock, capital: Decimal
) -> SimulatedExchange:
    """Build the simulated venue with the configured fees, margin, brackets, latency and seed."""
    settings = config.exchange
    return SimulatedExchange(
        instruments,
        clock,
        initial_balance=capital,
        leverage=settings.leverage,
        slippage_bps=settings.slippage_bps,
        maker_fee=settings.maker_fee,
        taker_fee=settings.taker_fee,
        schedule=load_leverage_schedule(settings.leverage_brackets),
        margin_type=MarginType(settings.margin_type),
        position_mode=PositionMode(settings.position_mode),
        participation_rate=settings.participation_rate,
        latency_ns=round(settings.latency_ms * NANOS_PER_MILLI),
        latency_jitter_ns=round(settings.latency_jitter_ms * NANOS_PER_MILLI),
        seed=config.run.seed,
        touch_fill_probability=settings.touch_fill_probability,
        funding_interval_hours=settings.funding_interval_hours,
        expect_funding=config.data.funding is not None,
    )


def build_warmup_feed(config: KeelConfig) -> RecordedBarFeed | None:
    """Build the feed of the ``strategy.warmup_bars`` recorded bars before ``data.start`` (None: nothing before)."""
    data, bars = config.data, config.strategy.warmup_bars
    if data.start is None or bars == 0:
        return None
    start = datetime_to_ns(data.start)
    span = bars * INTERVAL_MS[data.bar_interval] * NANOS_PER_MILLI
    try:
        return RecordedBarFeed(
            data.root / data.bars,
            data.symbols,
            data.bar_interval,
            funding_file(config),
            start - span,
            start,
            resample_from=data.resample_from,
        )
    except MalformedDataError:
        return None  # the recording starts at data.start: the strategies warm up live


def require_instruments(config: KeelConfig, instruments: Mapping[str, Instrument]) -> None:
    """Raise naming the instruments file and the command that fills it unless every symbol has a specification.

    Raises
    ------
    ConfigurationError
        For a configured symbol without an instrument specification.
    """
    symbols = config.data.symbols
    missing = [s for s in symbols if s not in instruments]
    if missing:
        raise ConfigurationError(
            str(Path(config.exchange.instruments).resolve()),
            f"instruments.{missing[0]}",
            f"no instrument specification for {', '.join(missing)}; add it with: "
            f"keel data instruments --from exchangeInfo.json --symbols {','.join(missing)} (or --download)",
        )


def build_strategy(config: KeelConfig) -> BaseStrategy | StrategyManager:
    """Build the configured strategy: the regime-weighted strategy manager, or the moving-average cross."""
    settings = config.strategy
    if settings.name == "moving_average_cross":
        return MovingAverageCrossStrategy(fast_period=settings.fast_period, slow_period=settings.slow_period)
    fee = config.exchange.taker_fee
    manager_settings = settings.model_dump()
    excluded = excluded_strategies(config)
    manager_settings["strategies"] = [name for name in settings.strategies if name not in excluded]
    if not manager_settings["strategies"]:
        raise ConfigurationError(
            "configuration", "strategy.strategies", f"nothing left to run: {'; '.join(excluded.values())}"
        )
    return StrategyFactory.create_manager(manager_settings, fee_rate=None if fee is None else float(fee))


def check_execution_styles(config: KeelConfig, traded: BaseStrategy | StrategyManager) -> None:
    """Refuse an ``execution.styles`` key that names no strategy whose orders carry its name in this run.

    The orders of a manager's combined view carry the manager's name (its
    voting strategies' names never reach the router); a strategy that places
    its own orders (``places_own_orders``), ``portfolio`` (a weight with no
    view behind it) and ``manual`` (orders placed by hand) carry their own.

    Raises
    ------
    ConfigurationError
        Naming the key and the names orders carry.
    """
    members = traded.strategies if isinstance(traded, StrategyManager) else ()
    carried = {traded.name, "portfolio", "manual", *(s.name for s in members if s.places_own_orders)}
    # Names orders carry in other runs of the same file (a tuning trial runs one strategy of it): not a mistake.
    elsewhere = {"strategy_manager", "moving_average_cross"} | {
        name for name, kind in StrategyFactory.registry.items() if kind.places_own_orders
    }
    for key in config.execution.styles:
        if key in carried or (key in elsewhere and key not in {s.name for s in members}):
            continue
        if key in {s.name for s in members}:
            detail = (
                f"{key} votes in {traded.name}'s combined view, whose orders carry {traded.name}: set "
                f"execution.styles.{traded.name} instead"
            )
        else:
            detail = f"no order carries the strategy {key!r} in this run; orders carry one of {sorted(carried)}"
        raise ConfigurationError("configuration", f"execution.styles.{key}", detail)


def build_cost_model(config: KeelConfig, instruments: Mapping[str, Instrument]) -> CostModel:
    """Build the cost model the allocator, the risk layer and the router share.

    Fees are the venue's (``exchange`` overrides or each instrument's) and
    the bar half-spread is the venue's bar slippage. The expected maker share
    starts at 0 whatever the style and follows the fills: a post that does not
    fill (or that the router does not send because waiting does not pay) ends
    as a taker, so the no-trade band counts on maker fees only once fills show them.
    """
    exchange = config.exchange
    settings = CostSettings(
        maker_fee=None if exchange.maker_fee is None else float(exchange.maker_fee),
        taker_fee=None if exchange.taker_fee is None else float(exchange.taker_fee),
        slippage_bps=exchange.slippage_bps,
        impact_coefficient=config.portfolio.impact_coefficient,
    )
    return CostModel(instruments, settings)


def build_allocator(
    config: KeelConfig, bus: EventBus, clock: Clock, costs: CostModel | None = None
) -> PortfolioOptimizer | EqualWeightAllocator:
    """Build the configured allocator: the Markowitz optimizer, or the skeleton's equal weights."""
    settings = config.portfolio
    interval = settings.rebalance_interval_minutes * NANOS_PER_MINUTE
    symbols = config.data.symbols
    if settings.allocator == "equal_weight":
        return EqualWeightAllocator(
            symbols,
            settings.gross_exposure,
            bus,
            clock,
            rebalance_interval_ns=interval,
            costs=costs if settings.shared_costs else None,
            information_coefficient=settings.information_coefficient,
            holding_bars=settings.edge_horizon_bars,
        )
    constraints = {
        "long_short": settings.long_short,
        "max_weight": settings.max_weight,
        "gross_leverage": settings.gross_exposure,
        "net_exposure": None,
        "net_exposure_bounds": (-settings.net_exposure_limit, settings.net_exposure_limit),
        "turnover": settings.turnover_limit,
        # Trading costs are paid once and earned back over the holding period.
        "transaction_cost": settings.transaction_cost / settings.holding_period_bars,
    }
    if settings.objective in ("max_sharpe", "min_volatility", "efficient_return", "efficient_risk"):
        constraints.update(net_exposure=1.0, net_exposure_bounds=None)
    return PortfolioOptimizer(
        objective=settings.objective,
        covariance=settings.covariance,
        constraints=constraints,
        risk_aversion=settings.risk_aversion,
        target_return=settings.target_return,
        target_volatility=settings.target_volatility,
        halflife=settings.covariance_halflife_bars,
        signal_weight=settings.signal_weight,
        information_coefficient=settings.information_coefficient,
        cost_assumption=None if costs is not None else settings.transaction_cost,
        costs=costs,
        holding_bars=settings.holding_period_bars,
        symbols=symbols,
        lookback=settings.lookback_bars,
        min_history=settings.min_history_bars,
        rebalance_interval_ns=interval,
        reduce_factor=settings.reduce_factor,
        decision_interval_bars=settings.decision_interval_bars,
        signal_persistence_bars=settings.signal_persistence_bars,
        weight_step=settings.weight_step,
        allocator=AdaptiveAllocator(
            halflife=settings.strategy_halflife_bars, floor=settings.strategy_floor, cap=settings.strategy_cap
        ),
        bus=bus,
        clock=clock,
    )


def build_risk(
    config: KeelConfig,
    instruments: Mapping[str, Instrument],
    positions: PositionManager,
    bus: EventBus,
    clock: Clock,
    costs: CostModel | None = None,
) -> RiskController:
    """Build the risk controller with the configured limits and sizer."""
    risk = config.risk
    limits = RiskLimits(
        max_order_notional=float(risk.max_order_notional),
        max_position_notional=float(risk.max_position_notional),
        max_leverage=risk.max_leverage,
        max_net_leverage=risk.max_net_leverage,
        var_daily_pct=risk.var_daily_pct,
        var_confidence=risk.var_confidence,
        max_drawdown_pct=risk.max_drawdown_pct,
        halt_drawdown_pct=risk.halt_drawdown_pct,
        max_orders_per_window=risk.max_orders_per_minute,
    )
    sizer = PositionSizer(
        kelly_fraction=risk.kelly_fraction,
        atr_risk_pct=risk.atr_risk_pct,
        atr_multiple=risk.atr_multiple,
        var_budget_pct=risk.var_budget_pct,
        var_confidence=risk.var_confidence,
        leverage=config.exchange.leverage,
        liquidation_sigmas=risk.liquidation_sigmas,
    )
    return RiskController(
        instruments,
        positions,
        rebalance_threshold=config.portfolio.rebalance_threshold,
        costs=costs if config.portfolio.no_trade_band else None,
        min_order_weight=config.portfolio.min_order_weight,
        holding_bars=config.portfolio.edge_horizon_bars,
        hold_band=config.portfolio.hold_band,
        limits=limits,
        sizer=sizer,
        symbols=config.data.symbols,
        var_method=risk.var_method,
        var_window=risk.var_window_bars,
        signal_weight=config.portfolio.signal_weight,
        information_coefficient=config.portfolio.information_coefficient,
        bus=bus,
        clock=clock,
    )


def build_router_settings(config: KeelConfig) -> RouterSettings:
    """Build the router's settings from the ``execution`` section (TWAP randomization seeded by ``run.seed``)."""
    settings = config.execution
    return RouterSettings(
        default_style=ExecutionStyle(settings.default_style),
        twap_horizon_seconds=settings.twap_horizon_seconds,
        twap_slices=settings.twap_slices,
        size_jitter=settings.size_jitter,
        time_jitter=settings.time_jitter,
        passive_time_limit_seconds=settings.passive_time_limit_seconds,
        protection_bps=settings.protection_bps,
        max_orders_per_10s=settings.max_orders_per_10s,
        urgency=settings.urgency,
        pause_seconds=settings.pause_seconds,
        slow_down_factor=settings.slow_down_factor,
        passive_adverse_bps=settings.passive_adverse_bps,
        seed=config.run.seed,
    )


def build_pipeline(
    config: KeelConfig,
    instruments: Mapping[str, Instrument],
    bus: EventBus,
    clock: Clock,
    *,
    strategy: BaseStrategy | StrategyManager | None = None,
    initial_capital: Decimal | None = None,
    client_order_namespace: str = "keel",
    exchange: ExchangePort | None = None,
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
    exchange
        The venue (a live adapter); None builds the simulated exchange fed by the bus.
    """
    capital = config.exchange.initial_balance if initial_capital is None else initial_capital
    symbols = config.data.symbols
    require_instruments(config, instruments)
    if exchange is None:
        exchange = simulated = build_exchange(config, {s: instruments[s] for s in symbols}, clock, capital)
        bus.subscribe(BarClosed, simulated.on_bar, name="exchange.simulated.bars")
        bus.subscribe(BookUpdated, simulated.on_book, name="exchange.simulated.books")
        bus.subscribe(TradeTick, simulated.on_trade, name="exchange.simulated.trades")
        bus.subscribe(MarkPriceUpdated, simulated.on_mark_price, name="exchange.simulated.marks")
        bus.subscribe(FundingRateUpdated, simulated.on_funding, name="exchange.simulated.funding")
    costs = build_cost_model(config, {s: instruments[s] for s in symbols})
    bus.subscribe(BarClosed, costs.on_bar, name="costs.bars")
    bus.subscribe(BookUpdated, costs.on_book, name="costs.books")
    bus.subscribe(FundingRateUpdated, costs.on_funding, name="costs.funding")
    bus.subscribe(OrderFilled, costs.on_fill, name="costs.fills")
    positions = PositionManager(capital, bus, clock)
    traded = strategy or build_strategy(config)
    check_execution_styles(config, traded)
    if config.portfolio.shared_costs:
        traded.use_costs(costs)
    runner = StrategyRunner(traded, bus, clock)
    allocator = build_allocator(config, bus, clock, costs)
    risk = build_risk(config, instruments, positions, bus, clock, costs)
    orders = OrderManager(exchange, ClientOrderIdGenerator(client_order_namespace), bus, clock, route_approvals=False)
    styles = {name: ExecutionStyle(style) for name, style in config.execution.styles.items()}
    router = SmartOrderRouter(
        orders,
        {s: instruments[s] for s in symbols},
        build_router_settings(config),
        bus,
        clock,
        styles=styles,
        costs=costs,
        profilers=vwap_profilers(config, symbols),
    )
    router.manual_order_check = risk.check_manual_order
    recorder = RunRecorder()
    recorder.attach(bus)
    period = config.portfolio.attribution_period_hours * 60 * NANOS_PER_MINUTE
    attribution = PerformanceAttributor(symbols, capital, period_ns=period, bus=bus, clock=clock)
    pipeline = Pipeline(bus, clock, exchange, positions, runner, allocator, risk, router, orders, recorder, attribution)
    pipeline.costs = costs
    pipeline.ladders = LadderExecutor(orders, bus, clock)
    if strategy is None:
        pipeline.excluded_strategies = excluded_strategies(config)
    if config.strategy.gates and config.run.mode != "backtest":
        pipeline.gatekeeper = build_gatekeeper(config, runner.manager, bus, clock)
    pipeline.warmup = build_warmup_feed(config)
    if pipeline.warmup is not None:
        warm_up(pipeline, list(pipeline.warmup))
    bus.add_handler_error_listener(pipeline.handler_failed)
    return pipeline


def vwap_profilers(config: KeelConfig, symbols: Sequence[str]) -> dict[str, LiquidityProfiler] | None:
    """Return a liquidity profile per symbol for the router's VWAP schedules, when a strategy's style is VWAP.

    None otherwise: a profile costs every bar an update. Its buckets are
    half an hour, or one bar of longer bars (a day at most).
    """
    execution = config.execution
    if "VWAP" not in (execution.default_style, *execution.styles.values()):
        return None
    bar_minutes = INTERVAL_MS[config.data.bar_interval] // 60_000
    bucket = min(MINUTES_PER_DAY, max(30, bar_minutes))
    return {symbol: LiquidityProfiler(bucket_minutes=bucket, bar_minutes=bar_minutes) for symbol in symbols}


def warm_up(pipeline: Pipeline, history: Sequence[MarketDataEvent]) -> None:
    """Feed recorded history from before the run to every component that estimates from it, trading nothing.

    The strategies and regime detectors, the risk estimates (VaR, ATR), the
    optimizer's history, the router's prices and the positions' marks all
    start the run from the last recorded bars instead of from nothing.
    """
    pipeline.strategy.warm_up(history)
    bars = [event for event in history if isinstance(event, BarClosed)]
    pipeline.risk.warm_up(bars)
    if isinstance(pipeline.allocator, PortfolioOptimizer):
        pipeline.allocator.warm_up(bars)
    pipeline.router.warm_up(bars)
    for bar in bars:
        pipeline.positions.on_bar(bar)
        if pipeline.costs is not None:
            pipeline.costs.on_bar(bar)
