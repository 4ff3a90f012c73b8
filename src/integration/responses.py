"""What the orchestrator answers: the control API's response types.

The orchestrator returns these models, the REST routes declare them (so
``/openapi.json`` documents every response) and the dashboard sends their
JSON. Fields read like a mapping too (``status["health"]``, ``status.get``),
as the user's use cases do.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Response(BaseModel):
    """A frozen response whose fields can also be read by name: ``response["field"]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __getitem__(self, name: str) -> Any:
        if name not in type(self).model_fields:
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return name in type(self).model_fields

    def get(self, name: str, default: Any = None) -> Any:
        """Return the field ``name``, ``default`` when there is no such field."""
        return getattr(self, name) if name in type(self).model_fields else default

    def keys(self) -> list[str]:
        """Return the field names."""
        return list(type(self).model_fields)


class SystemStatus(Response):
    """Health, trading state, equity, P&L, ROI, drawdown, exposure and active strategies (UC-1.1)."""

    mode: str = Field(description="backtest, paper or live.")
    running: bool
    time: str = Field(description="The run's clock, ISO 8601 UTC.")
    health: str = Field(description="HEALTHY, DEGRADED or UNHEALTHY.")
    health_reasons: list[str] = Field(description="The monitor's open problems, worst first.")
    components: dict[str, str] = Field(description="Each component's state by name.")
    trading_state: str = Field(description="ACTIVE, REDUCING or HALTED.")
    active_strategies: list[str]
    equity: float = Field(description="USDT.")
    pnl: float = Field(description="Equity less the initial capital, USDT.")
    current_roi: float = Field(description="P&L over the initial capital.")
    drawdown: float = Field(description="From the running equity peak, a positive fraction.")
    gross_exposure: float = Field(description="Sum of absolute position values, USDT.")
    open_orders: int
    fills: int
    session: dict[str, Any] | None = Field(
        description="Which session runs and, after a restart, what its reconciliation found."
    )
    venue: dict[str, Any] | None = Field(
        None,
        description="A live venue's connection: clock offset, rate-limit use, user-data stream or polling, "
        "ban, open conditions; for the simulated venue on Binance's market, instruments_checked false and "
        "instruments_unchecked_reason when exchangeInfo did not answer at the start (None: nothing to show).",
    )


class PositionRow(Response):
    """One open position (quantities and prices as exact decimal text)."""

    symbol: str
    quantity: str
    entry_price: str
    mark_price: str
    notional: float
    unrealized_pnl: float
    realized_pnl: float


class OrderRow(Response):
    """One order (quantities and prices as exact decimal text)."""

    client_order_id: str
    symbol: str
    side: str
    type: str
    quantity: str
    price: str | None
    status: str
    filled_quantity: str
    average_price: str | None
    reduce_only: bool
    strategy: str
    time: str


class FillRow(Response):
    """One fill (quantities, prices and commission as exact decimal text)."""

    time: str
    trade_id: str
    client_order_id: str
    symbol: str
    side: str
    quantity: str
    price: str
    commission: str
    liquidity_side: str


class RiskReport(Response):
    """Risk use against the limits, and the trading state."""

    trading_state: str
    leverage: float | None = Field(description="Gross exposure over equity; None without equity.")
    max_leverage: float
    drawdown: float = Field(
        description="Drawdown of equity from its peak now (the risk controller's, the system's one)."
    )
    max_drawdown_seen: float = Field(description="The deepest drawdown of the session so far.")
    max_drawdown: float = Field(description="The drawdown limit.")
    var: float | None = Field(description="One-day value at risk, USDT; None before the first estimate.")
    cvar: float | None
    var_method: str | None
    var_limit: float = Field(description="The VaR limit in USDT at the current equity.")
    limits: dict[str, float | int] = Field(description="Every risk limit by name.")
    orders_approved: int
    orders_denied: int


class StrategyRow(Response):
    """A strategy: its state, whether its signals count, its parameters and performance."""

    name: str
    state: str
    enabled: bool
    parameters: dict[str, Any]
    performance: dict[str, Any]
    disabled_symbols: list[str]
    gate: str | None = Field(None, description="Why the backtest gate keeps the strategy out (None: it does not).")
    next_fire: str | None = Field(
        None, description="When a scheduled strategy's schedule fires next, ISO 8601 UTC (None: not scheduled)."
    )


class EmergencyStopOutcome(Response):
    """What an emergency stop did."""

    trading_state: str
    canceled_orders: int = Field(description="Orders open when the stop came, all canceled.")
    flatten_orders: list[str] = Field(description="Client order ids of the reduce-only market orders sent.")
    reason: str


class ResumeOutcome(Response):
    """The trading state after a resume."""

    trading_state: str
    reason: str


class StrategySwitch(Response):
    """A strategy switched on or off."""

    name: str
    enabled: bool


class BusActivity(Response):
    """The event bus's queue and throughput counters and its handlers' latency."""

    depth: int
    high_water_mark: int
    capacity: int
    published: int
    dispatched: int
    conflated: int
    overflow: int = Field(description="Messages accepted beyond a full bus lane.")
    handler_errors: int
    handler_latency_ns: dict[str, dict[str, float]] = Field(description="Latency statistics by handler.")
    slowest_p99_us: float = Field(description="The slowest handler's 99th-percentile bound, microseconds.")


class MetricsSnapshot(Response):
    """The numbers ``/metrics`` exports (USDT amounts as floats)."""

    bus: BusActivity
    orders_by_status: dict[str, int]
    fills: int
    fees: float
    funding: float = Field(description="Funding paid (negative: received).")
    equity: float
    pnl: float
    realized_pnl: float
    unrealized_pnl: float
    gross_exposure: float
    exposure: dict[str, float] = Field(description="Absolute position value by symbol.")
    var: float | None
    trading_state: str
    feed_staleness_seconds: float | None = Field(description="Wall-clock seconds since the last market data.")
    exchange_latency_seconds: float | None
    reconciliation_mismatches: int = Field(description="Mismatches the last reconciliation with the venue found.")
    event_loop_lag_seconds: float | None = Field(
        None, description="How late the trading loop ran recently, seconds (None: not watched)."
    )
    exchange_server_time_offset_seconds: float | None = Field(
        None, description="The live venue's clock minus the local clock, seconds (None: unmeasured or no live venue)."
    )
    exchange_rate_limit_usage: dict[str, float] = Field(
        default_factory=dict, description="Share of each of the live venue's rate limits in use, 0 to 1."
    )
    process: dict[str, float] | None = Field(
        None,
        description="CPU, memory, GC and knob figures of the PerformanceEnhancer (None: not running).",
    )


class HealthCheck(Response):
    """The system's health, checked when asked (UC-4.1's ``monitor.check_system_health()``)."""

    status: str = Field(description="HEALTHY, DEGRADED or UNHEALTHY.")
    reasons: list[str] = Field(description="The open problems, worst first.")
    degraded_components: list[str] = Field(description="Components running in a DEGRADED state, by name.")
    trading_state: str = Field(description="ACTIVE, REDUCING or HALTED.")
    time: str = Field(description="The run's clock at the check, ISO 8601 UTC.")


class RecoveryOutcome(Response):
    """What an automatic recovery cleared and what is left (UC-4.1's ``monitor.trigger_auto_recovery()``)."""

    previous_status: str = Field(description="The health before the recovery.")
    status: str = Field(description="The health after it.")
    recovered_components: list[str] = Field(description="Components returned from DEGRADED to RUNNING.")
    cleared: list[str] = Field(description="Problems no longer open.")
    remaining: list[str] = Field(description="Problems still open: ongoing conditions, or ones for an operator.")
    operator_required: list[str] = Field(
        description="Of those, the ones only an operator's resume clears (risk breaches, reconciliation "
        "mismatches, repeated rejections, margin calls)."
    )
    trading_state: str = Field(description="ACTIVE, REDUCING or HALTED; a recovery never changes it.")
