"""What the web app needs from a running trading system.

:class:`TradingService` is the interface the REST routes, the dashboard
WebSocket and ``/metrics`` are written against. The integration layer's
orchestrator implements it; the web layer never reaches into components.
Every operator command is a coroutine, so the web app awaits it without
blocking its own loop when the command runs on another (the trading) loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

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


class TradingService(Protocol):
    """Queries and operator commands of a running system."""

    def status(self) -> SystemStatus:
        """Return health, trading state, equity, P&L, ROI, drawdown, exposure and active strategies."""

    def positions(self) -> list[PositionRow]:
        """Return the open positions."""

    def orders(self, open_only: bool = False) -> list[OrderRow]:
        """Return orders, newest last."""

    def trades(self, limit: int = 100) -> list[FillRow]:
        """Return the most recent fills, newest last."""

    def risk(self) -> RiskReport:
        """Return risk use against limits (VaR, leverage, drawdown) and the trading state."""

    def strategies(self) -> list[StrategyRow]:
        """Return each strategy with its state and parameters."""

    def allocations(self) -> dict[str, float]:
        """Return the current target weights by symbol."""

    def equity_curve(self, limit: int = 2000) -> list[tuple[int, float]]:
        """Return recent (time in ms, equity) points."""

    def metrics(self) -> MetricsSnapshot:
        """Return the numbers /metrics exports (see keel.web.metrics)."""

    def snapshot_time(self) -> float | None:
        """Return when the data the queries answer was taken (:func:`time.monotonic`); None: taken as asked."""

    async def emergency_stop(self, reason: str, flatten: bool = False) -> EmergencyStopOutcome:
        """Halt trading, cancel every open order, optionally flatten; return the outcome."""

    async def resume(self, reason: str) -> ResumeOutcome:
        """Return trading to ACTIVE after a halt."""

    async def recover(self, reason: str) -> RecoveryOutcome:
        """Return the components a past fault left DEGRADED to RUNNING; say what is left open."""

    async def update_risk_limits(self, limits: Mapping[str, float]) -> dict[str, float | int]:
        """Change risk limits at run time (ValueError for an unknown or invalid limit)."""

    async def start_strategy(self, name: str) -> StrategySwitch:
        """Let a strategy trade again (``keel.integration.orchestrator.UnknownStrategyError`` if unknown)."""

    async def stop_strategy(self, name: str) -> StrategySwitch:
        """Stop a strategy's signals (``keel.integration.orchestrator.UnknownStrategyError`` if unknown)."""


class CommandNotConfirmed(TimeoutError):
    """An operator command was handed to the trading loop, which did not confirm it in time.

    The command is not withdrawn: it runs when the trading loop gets to it.

    Parameters
    ----------
    command
        The command's name (``emergency_stop``, ``update_risk_limits``...).
    timeout_seconds
        How long its outcome was waited for.
    """

    def __init__(self, command: str, timeout_seconds: float) -> None:
        super().__init__(
            f"{command} was sent to the trading loop but not confirmed within {timeout_seconds:g} s; "
            "it runs when the loop gets to it"
        )
        self.command = command
        self.timeout_seconds = timeout_seconds


class StagedChange(Protocol):
    """A configuration change queued for (or applied at) a bar boundary."""

    def as_dict(self) -> dict[str, Any]:
        """Return the change as JSON-able data."""


class ConfigChanges(Protocol):
    """Tuned configuration applied to a running system (:class:`keel.optimization.ConfigOptimizer`)."""

    def stage(self, values: Mapping[str, Any], action: str = ..., *, split: float | None = None) -> StagedChange:
        """Validate and queue ``values`` (an A/B split when ``split``); ValueError when refused."""

    def rollback(self) -> StagedChange:
        """Queue the values the last applied change replaced; ValueError when there is none."""

    def conclude_split(self, keep: Literal["new", "old"]) -> StagedChange:
        """Queue the end of the running A/B split; ValueError when none runs."""


class ConfigCommands(Protocol):
    """The operator's :class:`ConfigChanges`, awaited (:class:`keel.web.snapshots.ConfigChangesOnLoop`)."""

    async def stage(self, values: Mapping[str, Any], action: str = ..., *, split: float | None = None) -> StagedChange:
        """Validate and queue ``values`` (an A/B split when ``split``); ValueError when refused."""

    async def rollback(self) -> StagedChange:
        """Queue the values the last applied change replaced; ValueError when there is none."""

    async def conclude_split(self, keep: Literal["new", "old"]) -> StagedChange:
        """Queue the end of the running A/B split; ValueError when none runs."""
