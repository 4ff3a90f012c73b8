"""What the web app needs from a running trading system.

:class:`TradingService` is the interface the REST routes, the dashboard
WebSocket and ``/metrics`` are written against. The integration layer's
orchestrator implements it; the web layer never reaches into components.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class TradingService(Protocol):
    """Queries and operator commands of a running system."""

    def status(self) -> dict[str, Any]:
        """Return health, trading state, equity, P&L, ROI, drawdown, exposure and active strategies."""

    def positions(self) -> list[dict[str, Any]]:
        """Return the open positions."""

    def orders(self, open_only: bool = False) -> list[dict[str, Any]]:
        """Return orders, newest last."""

    def trades(self, limit: int = 100) -> list[dict[str, Any]]:
        """Return the most recent fills, newest last."""

    def risk(self) -> dict[str, Any]:
        """Return risk use against limits (VaR, leverage, drawdown) and the trading state."""

    def strategies(self) -> list[dict[str, Any]]:
        """Return each strategy with its state and parameters."""

    def allocations(self) -> dict[str, float]:
        """Return the current target weights by symbol."""

    def equity_curve(self, limit: int = 2000) -> list[tuple[int, float]]:
        """Return recent (time in ms, equity) points."""

    def metrics(self) -> dict[str, Any]:
        """Return the numbers /metrics exports (see keel.web.metrics)."""

    async def emergency_stop(self, reason: str, flatten: bool = False) -> dict[str, Any]:
        """Halt trading, cancel every open order, optionally flatten; return the outcome."""

    async def resume(self, reason: str) -> dict[str, Any]:
        """Return trading to ACTIVE after a halt."""

    def update_risk_limits(self, limits: Mapping[str, float]) -> dict[str, Any]:
        """Change risk limits at run time (ValueError for an unknown or invalid limit)."""

    def start_strategy(self, name: str) -> dict[str, Any]:
        """Let a strategy trade again (``keel.integration.orchestrator.UnknownStrategyError`` if unknown)."""

    def stop_strategy(self, name: str) -> dict[str, Any]:
        """Stop a strategy's signals (``keel.integration.orchestrator.UnknownStrategyError`` if unknown)."""
