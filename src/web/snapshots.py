"""Serve the operator API from snapshots, so readers never run on the trading loop.

The trading loop runs :meth:`SnapshotPublisher.run`: every
``interval_seconds`` it asks the running system once for everything the read
routes, the dashboard and ``/metrics`` show, and publishes it as one
:class:`Snapshot` (replacing a reference is atomic, so a reader sees a whole
snapshot or the previous one). :class:`SnapshotService` is the
:class:`~keel.web.service.TradingService` the web app is given when it runs in
its own thread (:class:`~keel.web.server.ThreadedServer`): its queries read the
latest snapshot; its operator commands are handed to the trading loop with
:func:`asyncio.run_coroutine_threadsafe` and awaited (the web loop goes on
serving meanwhile), so every state change still happens on the trading loop.
A command the trading loop does not confirm within the timeout raises
:class:`~keel.web.service.CommandNotConfirmed` and still runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from keel.integration.responses import (
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
from keel.web.service import CommandNotConfirmed, ConfigChanges, StagedChange, TradingService

_R = TypeVar("_R")

TRADES_KEPT = 1000
"""Most recent fills a snapshot holds (the most ``/api/v1/trades`` returns when served from snapshots)."""

CURVE_KEPT = 2000
"""Most recent equity points a snapshot holds."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the read routes show, as of ``published_monotonic`` (the models are immutable)."""

    status: SystemStatus
    positions: tuple[PositionRow, ...]
    orders: tuple[OrderRow, ...]
    open_orders: tuple[OrderRow, ...]
    trades: tuple[FillRow, ...]
    risk: RiskReport
    strategies: tuple[StrategyRow, ...]
    allocations: Mapping[str, float]
    equity_curve: tuple[tuple[int, float], ...]
    metrics: MetricsSnapshot
    published_monotonic: float


class SnapshotPublisher:
    """Take a snapshot of a running system on the trading loop, every ``interval_seconds``.

    Parameters
    ----------
    service
        The running system (called only from the trading loop).
    interval_seconds
        Time between two snapshots.
    extra_metrics
        Fields of :class:`~keel.integration.responses.MetricsSnapshot` the system does not fill
        itself (for example the event loop's lag).
    on_publish
        Called with every published snapshot, on the trading loop (so it must
        not block: hand the snapshot on, as :class:`~keel.optimization.cache.StatusCache` does).
    """

    def __init__(
        self,
        service: TradingService,
        interval_seconds: float = 0.25,
        extra_metrics: Callable[[], Mapping[str, Any]] | None = None,
        on_publish: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.service = service
        self.interval_seconds = interval_seconds
        self._extra_metrics = extra_metrics
        self._on_publish = on_publish
        self.latest = self.take()

    def take(self) -> Snapshot:
        """Ask the system for everything once and return it as a snapshot."""
        service = self.service
        metrics = service.metrics()
        if self._extra_metrics is not None:
            metrics = metrics.model_copy(update=dict(self._extra_metrics()))
        return Snapshot(
            status=service.status(),
            positions=tuple(service.positions()),
            orders=tuple(service.orders()),
            open_orders=tuple(service.orders(open_only=True)),
            trades=tuple(service.trades(limit=TRADES_KEPT)),
            risk=service.risk(),
            strategies=tuple(service.strategies()),
            allocations=MappingProxyType(dict(service.allocations())),
            equity_curve=tuple(service.equity_curve(limit=CURVE_KEPT)),
            metrics=metrics,
            published_monotonic=time.monotonic(),
        )

    def publish(self) -> None:
        """Replace the published snapshot with a new one."""
        self.latest = self.take()
        if self._on_publish is not None:
            self._on_publish(self.latest)

    async def run(self) -> None:
        """Publish every ``interval_seconds`` until cancelled."""
        while True:
            self.publish()
            await asyncio.sleep(self.interval_seconds)


class SnapshotService:
    """A :class:`~keel.web.service.TradingService` over published snapshots, for another thread.

    Parameters
    ----------
    publisher
        Publishes the snapshots the queries read.
    loop
        The trading loop, where operator commands run.
    command_timeout_seconds
        How long a command may wait for the trading loop.
    """

    def __init__(
        self, publisher: SnapshotPublisher, loop: asyncio.AbstractEventLoop, command_timeout_seconds: float = 10.0
    ) -> None:
        self.publisher = publisher
        self.loop = loop
        self.command_timeout_seconds = command_timeout_seconds

    def status(self) -> SystemStatus:
        """Return the published status."""
        return self.publisher.latest.status

    def positions(self) -> list[PositionRow]:
        """Return the published open positions."""
        return list(self.publisher.latest.positions)

    def orders(self, open_only: bool = False) -> list[OrderRow]:
        """Return the published orders, newest last."""
        latest = self.publisher.latest
        return list(latest.open_orders if open_only else latest.orders)

    def trades(self, limit: int = 100) -> list[FillRow]:
        """Return the published most recent fills, newest last (at most TRADES_KEPT)."""
        return list(self.publisher.latest.trades[-limit:])

    def risk(self) -> RiskReport:
        """Return the published risk use."""
        return self.publisher.latest.risk

    def strategies(self) -> list[StrategyRow]:
        """Return the published strategies."""
        return list(self.publisher.latest.strategies)

    def allocations(self) -> dict[str, float]:
        """Return the published target weights."""
        return dict(self.publisher.latest.allocations)

    def equity_curve(self, limit: int = 2000) -> list[tuple[int, float]]:
        """Return the published most recent equity points."""
        return list(self.publisher.latest.equity_curve[-limit:])

    def metrics(self) -> MetricsSnapshot:
        """Return the published metrics."""
        return self.publisher.latest.metrics

    def snapshot_time(self) -> float:
        """Return when the published snapshot was taken (:func:`time.monotonic`)."""
        return self.publisher.latest.published_monotonic

    async def emergency_stop(self, reason: str, flatten: bool = False) -> EmergencyStopOutcome:
        """Run the emergency stop on the trading loop and wait for its outcome."""
        command = self.publisher.service.emergency_stop(reason, flatten=flatten)
        return await self._on_trading_loop("emergency_stop", command)

    async def resume(self, reason: str) -> ResumeOutcome:
        """Resume trading on the trading loop and wait for the outcome."""
        return await self._on_trading_loop("resume", self.publisher.service.resume(reason))

    async def recover(self, reason: str) -> RecoveryOutcome:
        """Run the automatic recovery on the trading loop and wait for the outcome."""
        return await self._on_trading_loop("recover", self.publisher.service.recover(reason))

    async def update_risk_limits(self, limits: Mapping[str, float]) -> dict[str, float | int]:
        """Change risk limits on the trading loop (ValueError as the system raises it)."""
        return await self._on_trading_loop("update_risk_limits", self.publisher.service.update_risk_limits(limits))

    async def start_strategy(self, name: str) -> StrategySwitch:
        """Let a strategy trade again, on the trading loop."""
        return await self._on_trading_loop("start_strategy", self.publisher.service.start_strategy(name))

    async def stop_strategy(self, name: str) -> StrategySwitch:
        """Stop a strategy's signals, on the trading loop."""
        return await self._on_trading_loop("stop_strategy", self.publisher.service.stop_strategy(name))

    async def _on_trading_loop(self, name: str, command: Coroutine[Any, Any, _R]) -> _R:
        return await _await_on(name, self._then_publish(command), self.loop, self.command_timeout_seconds)

    async def _then_publish(self, command: Coroutine[Any, Any, _R]) -> _R:
        outcome = await command
        self.publisher.publish()
        return outcome


class ConfigChangesOnLoop:
    """:class:`~keel.web.service.ConfigCommands` for another thread: every call runs on the trading loop.

    A call the trading loop does not confirm within ``timeout_seconds`` raises
    :class:`~keel.web.service.CommandNotConfirmed` and still runs.

    Parameters
    ----------
    changes
        The running system's configuration optimizer (called only on ``loop``).
    loop
        The trading loop.
    timeout_seconds
        How long a call may wait for the trading loop.
    """

    def __init__(self, changes: ConfigChanges, loop: asyncio.AbstractEventLoop, timeout_seconds: float = 10.0) -> None:
        self.changes = changes
        self.loop = loop
        self.timeout_seconds = timeout_seconds

    async def stage(
        self, values: Mapping[str, Any], action: str = "apply_tuned_config", *, split: float | None = None
    ) -> StagedChange:
        """Stage ``values`` on the trading loop."""
        return await self._on_loop("the configuration change", lambda: self.changes.stage(values, action, split=split))

    async def rollback(self) -> StagedChange:
        """Stage the rollback on the trading loop."""
        return await self._on_loop("the configuration rollback", self.changes.rollback)

    async def conclude_split(self, keep: Literal["new", "old"]) -> StagedChange:
        """Stage the end of the A/B split on the trading loop."""
        return await self._on_loop("the end of the A/B split", lambda: self.changes.conclude_split(keep))

    async def _on_loop(self, name: str, call: Callable[[], StagedChange]) -> StagedChange:
        async def run() -> StagedChange:
            return call()

        return await _await_on(name, run(), self.loop, self.timeout_seconds)


async def _await_on(
    name: str, command: Coroutine[Any, Any, _R], loop: asyncio.AbstractEventLoop, timeout_seconds: float
) -> _R:
    """Hand ``command`` to ``loop`` (another thread's) and await its outcome without blocking the caller's loop.

    Raises
    ------
    CommandNotConfirmed
        If the outcome does not come within ``timeout_seconds``; the command is
        not canceled (a timed-out emergency stop still stops).
    """
    future = asyncio.run_coroutine_threadsafe(command, loop)
    try:  # shielded: wait_for's timeout would otherwise cancel the command on the trading loop
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout_seconds)
    except TimeoutError:
        raise CommandNotConfirmed(name, timeout_seconds) from None
