"""The trading orchestrator: one running pipeline, operated.

:class:`TradingOrchestrator` answers what an operator asks of a running system
(``get_system_status()`` as in the user's UC-1.1, positions, orders, fills,
risk use, allocations, the equity curve, metrics) and carries out operator
commands over the bus: ``emergency_stop(reason, flatten)`` halts trading,
cancels every open order and optionally closes every position with
reduce-only market orders; ``resume(reason)`` returns to ACTIVE;
``update_risk_limits`` changes limits at run time (``set_risk_limits`` from
code already on the trading loop). The web app is written
against these methods (:class:`keel.web.service.TradingService`).

From Python (a script or a notebook, whose event loop may already run),
:meth:`TradingOrchestrator.from_config` builds the same system ``keel run``
(or ``keel backtest``) builds::

    async with TradingOrchestrator.from_config(mode="paper", paper={"speed": 600}) as orchestrator:
        status = orchestrator.get_system_status()
        await orchestrator.emergency_stop("Risk limit exceeded")

and trades by hand through its execution engine (``orchestrator.router``, the
smart order router, and ``orchestrator.algorithms``)::

    result = await orchestrator.router.execute_aggressive({"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01"})
    result = await orchestrator.algorithms.execute_dynamic_twap(order, {"urgency": 0.8})
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from keel.config import KeelConfig, load_config
from keel.core.fsm import ComponentState, TradingState
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    CancelAllOrders,
    SetTradingState,
    SubmitOrder,
    SystemHealth,
    TradeTick,
)
from keel.core.orders import Order, OrderSide, OrderType
from keel.execution.execution_algorithms import ExecutionAlgorithms
from keel.execution.router import SmartOrderRouter
from keel.integration.pipeline import Pipeline
from keel.integration.reports import iso_time
from keel.integration.responses import (
    BusActivity,
    EmergencyStopOutcome,
    FillRow,
    MetricsSnapshot,
    OrderRow,
    PositionRow,
    RecoveryOutcome,
    ResumeOutcome,
    RiskReport,
    StrategyRow,
    StrategySwitch,
    SystemStatus,
)
from keel.integration.system_monitor import SystemMonitor, worst_health
from keel.persistence import AuditLog, Settings
from keel.strategy_engine.base import BaseStrategy
from keel.strategy_engine.scheduled_dca import ScheduledDcaStrategy


class UnknownStrategyError(KeyError):
    """No strategy of that name runs here."""


class Runner(Protocol):
    """What drives a pipeline the orchestrator operates: a paper session or a recorded replay."""

    async def run(self) -> Any:
        """Run until the data ends or a stop is requested."""
        ...

    def request_stop(self, reason: str) -> None:
        """Ask the run to end cleanly."""
        ...


class _Replay:
    """Runs a :class:`~keel.integration.replay.RecordedRun` off the event loop (a backtest from Python)."""

    def __init__(self, run: Any) -> None:
        self.recorded = run

    async def run(self) -> None:
        await asyncio.to_thread(self.recorded.replay)

    def request_stop(self, reason: str) -> None:
        """A backtest ends with its data; nothing to ask."""


class TradingOrchestrator:
    """Operate one running pipeline.

    Parameters
    ----------
    pipeline
        The wired (and started) components.
    config
        The run's configuration.
    audit_log, monitor, settings
        Where operator actions are written, the system monitor, the saved settings.
    venue_status
        Returns a live venue's connection state (clock offset, rate-limit use, user-data
        stream or polling, conditions) for the status, health and ``/metrics``.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        config: KeelConfig,
        audit_log: AuditLog | None = None,
        monitor: SystemMonitor | None = None,
        settings: Settings | None = None,
        venue_status: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.venue_status = venue_status
        self.monitor = monitor
        self.config = config
        self.audit_log = audit_log
        self.settings = settings
        self.session: dict[str, Any] | None = None
        self.running = False
        # The process's resource figures for /metrics (set by a session running a PerformanceEnhancer).
        self.process_metrics: Callable[[], dict[str, float]] | None = None
        # When a wall-clock scheduler fires a strategy next (set by a session running one; else the bars' clock).
        self.scheduled_fire: Callable[[str], int | None] | None = None
        self._last_market_data: float | None = None
        for kind in (BarClosed, BookUpdated, TradeTick):
            pipeline.bus.subscribe(kind, self._market_data_seen, name="orchestrator.feed_staleness")
        self._runner: Runner | None = None
        self._task: asyncio.Task[Any] | None = None

    # --- a system from Python -------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        path_or_dict: str | Path | Mapping[str, Any] | None = None,
        mode: str = "paper",
        **overrides: Mapping[str, Any],
    ) -> TradingOrchestrator:
        """Build the system the ``keel`` command builds, ready for :meth:`start` (or ``async with``).

        Parameters
        ----------
        path_or_dict
            A YAML file layered over ``config/``, or the same as a mapping of sections.
        mode
            ``"paper"`` (the bundled month replayed at ``paper.speed``, the
            simulated venue, the journal and recovery of ``keel run``),
            ``"backtest"`` (the recorded data as fast as it goes, as ``keel
            backtest``) or ``"live"`` (the Binance account of ``binance`` and
            the keys in the environment, as ``keel run --mode live``: it needs
            ``live={"confirm": True}`` or ``KEEL_LIVE__CONFIRM=true``).
        **overrides
            Sections laid over everything else, e.g. ``risk={"max_leverage": 2}``.

        Raises
        ------
        ConfigurationError
            For a bad value, naming where it came from and its key; for ``mode="live"``
            without the confirmation or the keys.
        """
        layers: dict[str, Any] = {}
        config_file: str | Path | None = None
        if isinstance(path_or_dict, Mapping):
            layers = {section: dict(values) for section, values in path_or_dict.items()}
        else:
            config_file = path_or_dict
        for section, values in overrides.items():
            layers[section] = {**layers.get(section, {}), **dict(values)}
        config = load_config(mode, config_file, overrides=layers, overrides_source="from_config arguments")
        if mode == "backtest":
            return cls._backtest(config)
        return cls._paper(config)

    @classmethod
    def _paper(cls, config: KeelConfig) -> TradingOrchestrator:
        from keel.integration.live import BinanceVenue
        from keel.integration.paper import PaperSession

        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        venue = BinanceVenue(config, live_feed=config.paper.feed == "binance") if config.run.mode == "live" else None
        session = PaperSession(config, Path(config.run.output_dir) / f"{config.run.mode}-{stamp}", venue=venue)
        orchestrator = session.orchestrator
        orchestrator._runner = session
        return orchestrator

    @classmethod
    def _backtest(cls, config: KeelConfig) -> TradingOrchestrator:
        from keel.integration.replay import RecordedRun, bounded_by_funding

        run = RecordedRun(bounded_by_funding(config), fit_worker=config.run.regime_fit_worker)
        orchestrator = cls(run.pipeline, run.config, monitor=run.monitors[0])
        orchestrator._runner = _Replay(run)
        return orchestrator

    async def start(self) -> None:
        """Start the run as a task of the running event loop and return at once.

        Raises
        ------
        RuntimeError
            When this orchestrator was not built by :meth:`from_config` (its pipeline runs
            elsewhere), or it was started already.
        """
        if self._runner is None:
            raise RuntimeError("this orchestrator operates a pipeline run elsewhere; build one with from_config")
        if self._task is not None:
            raise RuntimeError("the run was started already")
        self._task = asyncio.get_running_loop().create_task(self._runner.run(), name="keel-run")
        await asyncio.sleep(0)
        self.running = True

    async def wait(self) -> Any:
        """Wait for the run to end (its data ends, or a stop) and return its final status."""
        if self._task is None:
            raise RuntimeError("the run has not been started")
        try:
            return await self._task
        finally:
            self.running = False

    async def stop(self, reason: str = "stopped from Python") -> Any:
        """Ask the run to stop cleanly (open orders canceled, final state written) and wait for it."""
        if self._task is None:
            return None
        if self._runner is not None:
            self._runner.request_stop(reason)
        return await self.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def router(self) -> SmartOrderRouter:
        """Return the run's smart order router: ``await router.execute_aggressive(order)`` trades by hand.

        Its parents are the operator's (strategy ``"manual"`` unless the order
        names one): they are not sized as the strategies' are, but the risk
        layer refuses one the trading state or a limit forbids before anything
        is sent (``RiskRefusedError``), and counts their working orders
        and fills; a halt ends them. Trade through it on a paper or live run,
        whose pipeline works on the caller's event loop: a backtest's replays
        on a worker thread, which the router does not share.
        """
        return self.pipeline.router

    @functools.cached_property
    def algorithms(self) -> ExecutionAlgorithms:
        """Return the execution algorithms over :attr:`router` (``execute_dynamic_twap``, ``execute_adaptive``)."""
        return ExecutionAlgorithms(self.pipeline.router)

    def _market_data_seen(self, _event: BarClosed | BookUpdated | TradeTick) -> None:
        self._last_market_data = time.monotonic()

    def feed_staleness_seconds(self) -> float | None:
        """Return wall-clock seconds since the last market data event (None before the first)."""
        return None if self._last_market_data is None else time.monotonic() - self._last_market_data

    # --- queries ----------------------------------------------------------------------

    def get_system_status(self) -> SystemStatus:
        """Return health, active strategies, equity, P&L, ROI, drawdown, exposure and trading state.

        ``session`` says which session runs and, after a restart, what its reconciliation found.
        """
        positions = self.pipeline.positions
        equity = positions.equity()
        pnl = equity - positions.initial_capital
        return SystemStatus(
            mode=self.config.run.mode,
            running=self.running,
            time=iso_time(self.pipeline.clock.timestamp_ns()),
            health=self.health(),
            health_reasons=self.health_reasons(),
            components={c.name: c.state.value for c in self.pipeline.components},
            trading_state=self.pipeline.risk.trading_state.value,
            active_strategies=self._active_strategies(),
            equity=float(equity),
            pnl=float(pnl),
            current_roi=float(pnl / positions.initial_capital),
            drawdown=self.drawdown(),
            gross_exposure=float(positions.gross_exposure()),
            open_orders=len(self.pipeline.orders.open_orders()),
            fills=positions.fills,
            session=self.session,
            venue=self._venue(),
        )

    status = get_system_status

    def _venue(self) -> dict[str, Any] | None:
        venue = None if self.venue_status is None else self.venue_status()
        return None if venue is None else dict(venue)

    def health(self) -> str:
        """Return HEALTHY, DEGRADED or UNHEALTHY: the monitor's verdict and the components' own states."""
        states = [c.state for c in self.pipeline.components]
        verdicts = [SystemHealth.HEALTHY if self.monitor is None else self.monitor.health]
        if ComponentState.FAULTED in states or (self.running and ComponentState.STOPPED in states):
            verdicts.append(SystemHealth.UNHEALTHY)
        if ComponentState.DEGRADED in states:
            verdicts.append(SystemHealth.DEGRADED)
        return worst_health(verdicts).value

    def health_reasons(self) -> list[str]:
        """Return the monitor's open problems, worst first."""
        return [] if self.monitor is None else self.monitor.reasons()

    def drawdown(self) -> float:
        """Return the drawdown of equity from its peak, as a positive fraction (the risk controller's)."""
        return self.pipeline.risk.drawdown

    def positions(self) -> list[PositionRow]:
        """Return every open position with its mark, notional and P&L."""
        book = self.pipeline.positions
        rows = []
        for symbol, position in sorted(book.positions.items()):
            if position.quantity == 0:
                continue
            mark = book.marks[symbol]
            rows.append(
                PositionRow(
                    symbol=symbol,
                    quantity=str(position.quantity),
                    entry_price=str(position.entry_price),
                    mark_price=str(mark),
                    notional=float(position.notional(mark)),
                    unrealized_pnl=float(position.unrealized_pnl(mark)),
                    realized_pnl=float(position.realized_pnl),
                )
            )
        return rows

    def orders(self, open_only: bool = False) -> list[OrderRow]:
        """Return orders in submission order."""
        orders = self.pipeline.orders.open_orders() if open_only else list(self.pipeline.orders.orders.values())
        return [_order_row(order) for order in orders]

    def trades(self, limit: int = 100) -> list[FillRow]:
        """Return the most recent fills, oldest first."""
        return [
            FillRow(
                time=iso_time(fill.ts_event),
                trade_id=fill.trade_id,
                client_order_id=fill.client_order_id,
                symbol=fill.symbol,
                side=fill.side.value,
                quantity=str(fill.last_quantity),
                price=str(fill.last_price),
                commission=str(fill.commission),
                liquidity_side=fill.liquidity_side.value,
            )
            for fill in self.pipeline.recorder.fills[-limit:]
        ]

    def risk(self) -> RiskReport:
        """Return risk use against limits (VaR, leverage, drawdown) and the trading state."""
        risk = self.pipeline.risk
        limits = risk.limits
        equity = self.pipeline.positions.equity()
        gross = self.pipeline.positions.gross_exposure()
        var = risk.last_var
        return RiskReport(
            trading_state=risk.trading_state.value,
            leverage=float(gross / equity) if equity > 0 else None,
            max_leverage=limits.max_leverage,
            drawdown=risk.drawdown,
            max_drawdown_seen=risk.max_drawdown,
            max_drawdown=limits.max_drawdown_pct,
            var=None if var is None else var.var,
            cvar=None if var is None else var.cvar,
            var_method=None if var is None else var.method,
            var_limit=limits.var_daily_pct * float(equity),
            limits=dataclasses.asdict(limits),
            orders_approved=risk.approved,
            orders_denied=risk.denied,
        )

    def strategies(self) -> list[StrategyRow]:
        """Return each strategy with its state, whether its signals count, parameters and performance."""
        runner = self.pipeline.strategy
        manager = runner.manager
        status = manager.get_system_status()["strategies"]
        return [
            StrategyRow(
                name=strategy.name,
                state=runner.state.value,
                enabled=runner.enabled and manager.strategy_enabled(strategy.name),
                parameters=dict(strategy.parameters),
                performance=status[strategy.name]["performance"],
                disabled_symbols=status[strategy.name]["disabled_symbols"],
                gate=status[strategy.name]["gate"],
                next_fire=self._next_fire(strategy),
            )
            for strategy in manager.strategies
        ]

    def _next_fire(self, strategy: BaseStrategy) -> str | None:
        """Return when a scheduled strategy fires next: the wall-clock scheduler's job, else its schedule after now."""
        if not isinstance(strategy, ScheduledDcaStrategy):
            return None
        if self.scheduled_fire is not None:
            fire = self.scheduled_fire(strategy.name)
            return None if fire is None else iso_time(fire)
        return iso_time(strategy.next_fire_after(self.pipeline.clock.timestamp_ns()))

    def allocations(self) -> dict[str, float]:
        """Return the target weights."""
        return self.pipeline.allocator.weights()

    def equity_curve(self, limit: int = 2000) -> list[tuple[int, float]]:
        """Return the most recent equity points as (ms, equity)."""
        return [(p.ts // 1_000_000, float(p.equity)) for p in self.pipeline.recorder.equity[-limit:]]

    def snapshot_time(self) -> None:
        """Return None: every query reads the running system as it is asked."""
        return None

    def metrics(self) -> MetricsSnapshot:
        """Return the numbers /metrics exports."""
        positions = self.pipeline.positions
        bus = self.pipeline.bus.metrics()
        statuses: dict[str, int] = {}
        for order in self.pipeline.orders.orders.values():
            statuses[order.status.value] = statuses.get(order.status.value, 0) + 1
        slowest = max((s["p99_ns_upper_bound"] for s in bus.handler_latency_ns.values()), default=0)
        equity = positions.equity()
        venue = self._venue() or {}
        return MetricsSnapshot(
            bus=BusActivity(
                depth=bus.depth,
                high_water_mark=bus.high_water_mark,
                capacity=bus.capacity,
                published=bus.published,
                dispatched=bus.dispatched,
                conflated=bus.conflated,
                overflow=bus.overflow,
                handler_errors=bus.handler_errors,
                handler_latency_ns=bus.handler_latency_ns,
                slowest_p99_us=slowest / 1000,
            ),
            orders_by_status=statuses,
            fills=positions.fills,
            fees=float(positions.fees_paid),
            funding=float(-positions.funding_received),
            equity=float(equity),
            pnl=float(equity - positions.initial_capital),
            realized_pnl=float(positions.realized_pnl()),
            unrealized_pnl=float(positions.unrealized_pnl()),
            gross_exposure=float(positions.gross_exposure()),
            exposure={s: float(positions.exposure(s)) for s in sorted(positions.positions)},
            var=None if self.pipeline.risk.last_var is None else self.pipeline.risk.last_var.var,
            trading_state=self.pipeline.risk.trading_state.value,
            feed_staleness_seconds=self.feed_staleness_seconds(),
            exchange_latency_seconds=self.pipeline.orders.venue_latency_seconds,
            reconciliation_mismatches=len(((self.session or {}).get("reconciliation") or {}).get("mismatches", ())),
            exchange_server_time_offset_seconds=venue.get("exchange_server_time_offset_seconds"),
            exchange_rate_limit_usage=venue.get("exchange_rate_limit_usage", {}),
            process=None if self.process_metrics is None else self.process_metrics(),
        )

    # --- operator commands --------------------------------------------------------------

    def record_operator_action(self, actor: str, action: str, details: Mapping[str, Any], request_id: str = "") -> None:
        """Write an operator action to the audit log (wall-clock time)."""
        if self.audit_log is not None:
            self.audit_log.record(time.time_ns(), actor, action, details, request_id)

    async def emergency_stop(self, reason: str, flatten: bool = False) -> EmergencyStopOutcome:
        """Halt trading, cancel every open order and, with ``flatten``, close every position."""
        bus, now = self.pipeline.bus, self.pipeline.clock.timestamp_ns()
        canceled = len(self.pipeline.orders.open_orders())
        bus.publish(SetTradingState(state=TradingState.HALTED, reason=reason, ts_event=now, ts_init=now))
        bus.publish(CancelAllOrders(symbol=None, reason=f"emergency stop: {reason}", ts_event=now, ts_init=now))
        flattening = self._flatten(reason, now) if flatten else []
        await bus.join()
        return EmergencyStopOutcome(
            trading_state=self.pipeline.risk.trading_state.value,
            canceled_orders=canceled,
            flatten_orders=flattening,
            reason=reason,
        )

    def _flatten(self, reason: str, now: int) -> list[str]:
        ids = []
        for symbol in sorted(self.pipeline.positions.positions):
            # The venue's position: every working order is canceled first, and a reduce-only order
            # beyond the position (or against an order that never filled) is one the venue rejects.
            held = self.pipeline.orders.position(symbol)
            if held == 0:
                continue
            client_order_id = self.pipeline.orders.next_client_order_id()
            self.pipeline.bus.publish(
                SubmitOrder(
                    client_order_id=client_order_id,
                    symbol=symbol,
                    side=OrderSide.SELL if held > 0 else OrderSide.BUY,
                    order_type=OrderType.MARKET,
                    quantity=abs(held),
                    reduce_only=True,
                    strategy="emergency_flatten",
                    ts_event=now,
                    ts_init=now,
                )
            )
            ids.append(client_order_id)
        return ids

    async def resume(self, reason: str) -> ResumeOutcome:
        """Return trading to ACTIVE."""
        now = self.pipeline.clock.timestamp_ns()
        self.pipeline.bus.publish(SetTradingState(state=TradingState.ACTIVE, reason=reason, ts_event=now, ts_init=now))
        await self.pipeline.bus.join()
        return ResumeOutcome(trading_state=self.pipeline.risk.trading_state.value, reason=reason)

    async def recover(self, reason: str) -> RecoveryOutcome:
        """Clear the faults that are past, as the system monitor's :meth:`~SystemMonitor.trigger_auto_recovery`.

        Raises
        ------
        RuntimeError
            If the system runs without a monitor (nothing keeps its problems).
        """
        if self.monitor is None:
            raise RuntimeError("this system runs without a system monitor: there is nothing to recover")
        return await self.monitor.trigger_auto_recovery(reason)

    async def update_risk_limits(self, limits: Mapping[str, float]) -> dict[str, float | int]:
        """Change risk limits now, as an operator command (see :meth:`set_risk_limits`)."""
        return self.set_risk_limits(limits)

    def set_risk_limits(self, limits: Mapping[str, float]) -> dict[str, float | int]:
        """Change risk limits now (as the user's UC-1.2 ``risk_controller.update_limits``).

        Raises
        ------
        ValueError
            If a limit is unknown or its value invalid; nothing changes then.
        """
        updated: dict[str, float | int] = dataclasses.asdict(self.pipeline.risk.update_limits(limits))
        if self.settings is not None:
            self.settings.save_risk_limits({name: updated[name] for name in limits}, "operator", time.time_ns())
        return updated

    def apply_saved_settings(self) -> None:
        """Put back the risk limits and strategy switches operators set before a restart."""
        if self.settings is None:
            return
        saved = self.settings.risk_limits()
        if saved:
            self.pipeline.risk.update_limits({name: float(value) for name, value in saved.items()})
        for name, record in sorted(self.settings.strategies().items()):
            try:
                self._switch_strategy(name, record.enabled)
            except UnknownStrategyError:
                continue  # a strategy the current configuration no longer runs

    async def start_strategy(self, name: str) -> StrategySwitch:
        """Let a strategy's signals count again (``strategy_manager``: every signal is published again)."""
        return self._set_strategy(name, True)

    async def stop_strategy(self, name: str) -> StrategySwitch:
        """Keep a strategy updating but take it out of the vote (``strategy_manager``: publish no signal)."""
        return self._set_strategy(name, False)

    def _set_strategy(self, name: str, enabled: bool) -> StrategySwitch:
        self._switch_strategy(name, enabled)
        if self.settings is not None:
            self.settings.save_strategy(name, "strategy", self._strategy_parameters(name), enabled, time.time_ns())
        return StrategySwitch(name=name, enabled=enabled)

    def _strategy_parameters(self, name: str) -> dict[str, Any]:
        manager = self.pipeline.strategy.manager
        strategy = next((s for s in manager.strategies if s.name == name), None)
        parameters = {} if strategy is None else getattr(strategy, "parameters", {})
        return json.loads(json.dumps(parameters, default=str))

    def _switch_strategy(self, name: str, enabled: bool) -> None:
        runner = self.pipeline.strategy
        if name == runner.manager.name and name not in {s.name for s in runner.manager.strategies}:
            runner.enabled = enabled
        else:
            try:
                runner.manager.set_strategy_enabled(name, enabled)
            except KeyError:
                raise UnknownStrategyError(name) from None

    def _active_strategies(self) -> list[str]:
        runner = self.pipeline.strategy
        if not runner.enabled or runner.state not in (ComponentState.RUNNING, ComponentState.DEGRADED):
            return []
        return [s.name for s in runner.manager.strategies if runner.manager.strategy_enabled(s.name)]


def _order_row(order: Order) -> OrderRow:
    return OrderRow(
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side.value,
        type=order.order_type.value,
        quantity=str(order.quantity),
        price=None if order.price is None else str(order.price),
        status=order.status.value,
        filled_quantity=str(order.filled_quantity),
        average_price=None if order.average_price is None else str(order.average_price),
        reduce_only=order.reduce_only,
        strategy=order.strategy,
        time=iso_time(order.ts_init),
    )
