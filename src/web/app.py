"""The operator web app: REST control API, the live dashboard, Prometheus metrics.

:func:`create_app` builds a FastAPI app over a :class:`~keel.web.service.TradingService`.
Read routes are open (the server binds to 127.0.0.1 by default); every
state-changing route needs ``Authorization: Bearer <token>`` with the token
from config or ``KEEL_API_TOKEN``. With no token configured those routes are
refused (403) and :func:`create_app` logs it at start. Every operator action
is written to the audit log; every response carries an ``X-Request-ID``;
errors are JSON ``{"error": {"code", "message", "request_id"}}``; control
routes are rate limited per client.
"""

# No `from __future__ import annotations` here: FastAPI resolves the route
# signatures at run time, and they refer to names local to create_app.
import asyncio
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import structlog
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from keel.core.instruments import LARGEST_LEVERAGE
from keel.integration.orchestrator import UnknownStrategyError
from keel.integration.responses import (
    EmergencyStopOutcome,
    FillRow,
    OrderRow,
    PositionRow,
    RecoveryOutcome,
    ResumeOutcome,
    RiskReport,
    StrategyRow,
    StrategySwitch,
    SystemStatus,
)
from keel.web.metrics import render_metrics
from keel.web.service import CommandNotConfirmed, ConfigCommands, StagedChange, TradingService

_log = structlog.get_logger("keel.web")

STATIC = Path(__file__).resolve().parent / "static"

_R = TypeVar("_R")

AuditCallback = Callable[[str, str, Mapping[str, Any], str], None]
"""Called with (actor, action, details, request id) for every operator action."""


class EmergencyStopRequest(BaseModel):
    """Body of POST /api/v1/emergency-stop."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="Why trading is being stopped.")
    flatten: bool = Field(False, description="Also close every position with market orders.")


class ResumeRequest(BaseModel):
    """Body of POST /api/v1/resume."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="Why trading may resume.")


class RecoveryRequest(BaseModel):
    """Body of POST /api/v1/recover."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="Why the faults may be taken as past.")


class RiskLimitsUpdate(BaseModel):
    """Body of PUT /api/v1/risk/limits: the limits to change (at least one), as JSON numbers."""

    # Strict: JSON true would otherwise be a limit of 1, and "3" a number.
    model_config = ConfigDict(extra="forbid", strict=True)
    max_leverage: float | None = Field(None, gt=0, le=LARGEST_LEVERAGE, allow_inf_nan=False)
    max_net_leverage: float | None = Field(None, gt=0, le=LARGEST_LEVERAGE, allow_inf_nan=False)
    max_drawdown_pct: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    halt_drawdown_pct: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    var_daily_pct: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    max_order_notional: float | None = Field(None, gt=0, le=1e12, allow_inf_nan=False)
    max_position_notional: float | None = Field(None, gt=0, le=1e12, allow_inf_nan=False)
    var_confidence: float | None = Field(None, gt=0.5, lt=1, allow_inf_nan=False)
    var_recovery_fraction: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    max_orders_per_window: int | None = Field(None, ge=1)
    rate_window_seconds: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_at_least(self) -> "RiskLimitsUpdate":
        if not self.model_dump(exclude_none=True):
            raise ValueError("name at least one limit to change")
        return self


class ConfigChangeRequest(BaseModel):
    """Body of POST /api/v1/config/apply: tuned values, applied at the next bar boundary."""

    model_config = ConfigDict(extra="forbid")
    values: dict[str, bool | int | float | str] = Field(
        min_length=1,
        description="Dotted keys (strategy.parameters.<strategy>.<name>, risk.<limit>) and their new values.",
    )
    split: float | None = Field(
        None,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="Run the new strategy parameters with this share of the capital beside the old ones (A/B).",
    )


class StagedConfigChange(BaseModel):
    """A configuration change as queued: it applies (and is journaled) at the next bar boundary."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    change_id: int
    action: str = Field(description="apply_tuned_config, start_ab_split, rollback_tuned_config or conclude_ab_split_*.")
    values: dict[str, Any] = Field(description="The dotted keys and the values they get.")
    previous: dict[str, Any] = Field(description="The values they replace.")
    split: float | None = Field(description="The new parameters' share of the capital in an A/B split.")
    applied_at_ns: int | None = Field(description="The bar time it applied at; None while queued.")


class SplitConclusion(BaseModel):
    """Body of POST /api/v1/config/split/conclude."""

    model_config = ConfigDict(extra="forbid")
    keep: Literal["new", "old"] = Field(description="The parameters that keep all the capital.")


class ControlGuard:
    """ASGI middleware that checks the token of a state-changing request before its body is read.

    A request to a control route (any method but GET/HEAD under ``/api/v1``)
    without the right bearer token is answered 401/403 without reading its
    body, and the failure is audited (at most ``audits_per_minute`` per
    client, so a flood cannot fill the audit log). A body declared or found
    larger than ``max_body_bytes`` is answered 413 as soon as it passes the
    limit, without reading the rest.
    """

    def __init__(
        self,
        app: Any,
        *,
        api_token: str | None,
        audit: AuditCallback,
        max_body_bytes: int,
        audits_per_minute: int = 10,
    ) -> None:
        self.app = app
        self.api_token = api_token
        self.audit = audit
        self.max_body_bytes = max_body_bytes
        self._audit_limiter = RateLimiter(audits_per_minute)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Refuse unauthenticated or oversized control requests; pass the rest on."""
        if scope["type"] != "http" or not _is_control(scope):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        refusal = self._refusal(headers)
        if refusal is not None:
            status, code, message = refusal
            self._audit_failure(scope, headers, code)
            await _send_error(send, status, code, message, headers)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_error(send, 413, "too_large", f"bodies are limited to {self.max_body_bytes} bytes", headers)
            return
        await self._forward_bounded(scope, receive, send, headers)

    def _refusal(self, headers: Mapping[str, str]) -> tuple[int, str, str] | None:
        if self.api_token is None:
            return 403, "forbidden", "state-changing routes are disabled: no API token is configured (KEEL_API_TOKEN)"
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return 401, "unauthorized", "send Authorization: Bearer <token>"
        if not hmac.compare_digest(given.encode(), self.api_token.encode()):
            return 403, "forbidden", "the token is wrong"
        return None

    def _audit_failure(self, scope: Any, headers: Mapping[str, str], code: str) -> None:
        client = scope["client"][0] if scope.get("client") else "unknown"
        if self._audit_limiter.allow(client):
            details = {"method": scope["method"], "path": scope["path"], "refused": code}
            self.audit(f"anonymous@{client}", "authentication_failed", details, headers.get("x-request-id", "")[:64])

    async def _forward_bounded(self, scope: Any, receive: Any, send: Any, headers: Mapping[str, str]) -> None:
        """Read the (small) body up to the limit, then hand it to the app; 413 past the limit."""
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await _send_error(send, 413, "too_large", f"bodies are limited to {self.max_body_bytes} bytes", headers)
                return
        delivered = False

        async def replay() -> Any:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _is_control(scope: Any) -> bool:
    return scope["method"] not in ("GET", "HEAD", "OPTIONS") and scope["path"].startswith("/api/v1/")


async def _send_error(send: Any, status: int, code: str, message: str, headers: Mapping[str, str]) -> None:
    given = headers.get("x-request-id", "")
    request_id = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
    response = _error(status, code, message, request_id)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    await response({"type": "http"}, _no_body, send)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.disconnect"}


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests, refilled continuously, at most ``burst`` at once."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, burst: int | None = None) -> None:
        self.per_minute = per_minute
        self.burst = per_minute if burst is None else burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> bool:
        """Take one token for ``client``; return False when its bucket is empty."""
        now = self._clock()
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        return True


def _error(status: int, code: str, message: str, request_id: str) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": message, "request_id": request_id}},
        headers={"X-Request-ID": request_id},
    )


def create_app(
    service: TradingService,
    *,
    api_token: str | None,
    audit: AuditCallback,
    dashboard_interval_seconds: float = 0.5,
    control_requests_per_minute: int = 30,
    max_body_bytes: int = 16_384,
    read_requests_per_second: int | None = None,
    max_websockets_per_client: int | None = None,
    config_changes: ConfigCommands | None = None,
    max_snapshot_age_seconds: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Build the web app.

    Parameters
    ----------
    service
        The running system.
    api_token
        The bearer token state-changing routes require; None refuses them all.
    audit
        Records every operator action.
    dashboard_interval_seconds
        How often the dashboard WebSocket pushes a snapshot.
    control_requests_per_minute
        Rate limit of state-changing routes per client.
    max_body_bytes
        Largest request body a state-changing route accepts (413 above it).
    read_requests_per_second
        Rate limit of every other route per client (429 above it); None: unlimited.
    max_websockets_per_client
        Dashboard WebSockets one client may hold open (more are closed with
        code 1013, try again later); None: unlimited.
    config_changes
        Applies tuned configuration at bar boundaries (the ``/api/v1/config``
        routes); None: those routes answer 503.
    max_snapshot_age_seconds
        Oldest the data shown may be (see ``TradingService.snapshot_time``):
        older, the trading loop has stopped publishing, so the app is not ready
        and the dashboard says the data is stale.
    clock
        The app's monotonic clock, which snapshot ages are measured on.
    """
    app = FastAPI(title="keel", version="0.1.0", description="Control API and live dashboard of keel.")
    limiter = RateLimiter(control_requests_per_minute)
    readers = (
        None
        if read_requests_per_second is None
        else RateLimiter(read_requests_per_second * 60, burst=read_requests_per_second)
    )
    sockets: dict[str, int] = {}
    if api_token is None:
        _log.warning("no API token configured: every state-changing route is refused; set KEEL_API_TOKEN")
    app.add_middleware(ControlGuard, api_token=api_token, audit=audit, max_body_bytes=max_body_bytes)

    @app.middleware("http")
    async def request_id(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = request.headers.get("X-Request-ID", "")
        request.state.request_id = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
        client = request.client.host if request.client else "unknown"
        if readers is not None and request.method in ("GET", "HEAD") and not readers.allow(client):
            return _error(429, "rate_limited", f"at most {readers.burst} requests a second", request.state.request_id)
        try:
            response = await call_next(request)
        except Exception as error:
            _log.error("request failed", path=request.url.path, request_id=request.state.request_id, error=repr(error))
            return _error(500, "internal_error", "the server failed; see its log", request.state.request_id)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    # Starlette's HTTPException (FastAPI's is a subclass): routing raises it for an unknown path or a wrong method.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
            422: "invalid_request",
            429: "rate_limited",
            503: "unavailable",
            504: "not_confirmed",
        }.get(error.status_code, "error")
        response = _error(error.status_code, code, str(error.detail), _request_id(request))
        response.headers.update(error.headers or {})  # the Allow header of a 405
        if error.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        return _error(422, "invalid_request", problems, _request_id(request))

    def operator(request: Request) -> str:
        """Apply the rate limit; return the acting client's name (ControlGuard has checked the token)."""
        client = request.client.host if request.client else "unknown"
        if not limiter.allow(client):
            raise HTTPException(429, f"at most {limiter.per_minute} control requests a minute")
        return f"operator@{client}"

    Operator = Annotated[str, Depends(operator)]

    def snapshot_age() -> float | None:
        """Seconds since the data shown was taken, on the app's clock (None: read as asked)."""
        taken = service.snapshot_time()
        return None if taken is None else round(clock() - taken, 3)

    def staleness(age: float | None) -> list[str]:
        """Why the data shown is too old, as a reason or none."""
        if age is None or age <= max_snapshot_age_seconds:
            return []
        limit = max_snapshot_age_seconds
        return [
            f"the latest snapshot is {age:.1f} s old (at most {limit:g} s): the trading loop has stopped publishing"
        ]

    def unready_reasons(status: SystemStatus, age: float | None) -> list[str]:
        """Why the app is not ready (empty: ready)."""
        reasons = []
        if not status.running:
            reasons.append("the session is not running (still recovering or reconciling, or stopped)")
        if status.health == "UNHEALTHY":
            reasons.append("health is UNHEALTHY")
        return reasons + staleness(age)

    @app.get("/health")
    async def health() -> JSONResponse:
        """Liveness and readiness for container probes (503 when not ready)."""
        status, age = service.status(), snapshot_age()
        ready = not unready_reasons(status, age)
        body = {
            "live": True,
            "ready": ready,
            "health": status.get("health"),
            "trading_state": status.get("trading_state"),
            "reasons": [*status.get("health_reasons", []), *staleness(age)],
            "venue": status.get("venue"),
            "snapshot_age_seconds": age,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/health/live")
    async def health_live() -> dict[str, bool]:
        """Liveness: the process serves requests (a restart will not help otherwise)."""
        return {"live": True}

    @app.get("/health/ready")
    async def health_ready() -> JSONResponse:
        """Readiness: recovered, reconciled, running, not UNHEALTHY and a recent snapshot (503 otherwise)."""
        status, age = service.status(), snapshot_age()
        reasons = unready_reasons(status, age)
        body = {"ready": not reasons, "health": status.get("health"), "snapshot_age_seconds": age, "reasons": reasons}
        return JSONResponse(body, status_code=503 if reasons else 200)

    @app.get("/api/v1/status")
    async def get_status() -> SystemStatus:
        """Health, trading state, equity, P&L, ROI, drawdown, exposure and active strategies."""
        return service.status()

    @app.get("/api/v1/positions")
    async def get_positions() -> list[PositionRow]:
        """Open positions."""
        return service.positions()

    @app.get("/api/v1/orders")
    async def get_orders(open_only: bool = False) -> list[OrderRow]:
        """Orders, newest last (``open_only`` for working orders)."""
        return service.orders(open_only=open_only)

    @app.get("/api/v1/trades")
    async def get_trades(limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[FillRow]:
        """The most recent fills, newest last."""
        return service.trades(limit=limit)

    @app.get("/api/v1/risk")
    async def get_risk() -> RiskReport:
        """Risk use against limits and the trading state."""
        return service.risk()

    @app.get("/api/v1/strategies")
    async def get_strategies() -> list[StrategyRow]:
        """Strategies with their state and parameters."""
        return service.strategies()

    @app.get("/api/v1/allocations")
    async def get_allocations() -> dict[str, float]:
        """Target weights by symbol."""
        return service.allocations()

    @app.post("/api/v1/emergency-stop")
    async def emergency_stop(
        request: Request, body: Annotated[EmergencyStopRequest, Body()], actor: Operator
    ) -> EmergencyStopOutcome:
        """Halt trading: cancel every open order, trading state HALTED, optionally flatten."""
        details = {"reason": body.reason, "flatten": body.flatten}
        return await _command(
            "emergency_stop", details, service.emergency_stop(body.reason, flatten=body.flatten), request, actor
        )

    @app.post("/api/v1/resume")
    async def resume(request: Request, body: Annotated[ResumeRequest, Body()], actor: Operator) -> ResumeOutcome:
        """Return trading to ACTIVE after a halt."""
        return await _command("resume", {"reason": body.reason}, service.resume(body.reason), request, actor)

    @app.post("/api/v1/recover")
    async def recover(request: Request, body: Annotated[RecoveryRequest, Body()], actor: Operator) -> RecoveryOutcome:
        """Return the components a past fault left DEGRADED to RUNNING; list what stays open (trading unchanged)."""
        return await _command("recover", {"reason": body.reason}, service.recover(body.reason), request, actor)

    @app.put("/api/v1/risk/limits")
    async def update_limits(
        request: Request, body: Annotated[RiskLimitsUpdate, Body()], actor: Operator
    ) -> dict[str, float | int]:
        """Change risk limits at run time."""
        limits = body.model_dump(exclude_none=True)
        try:
            return await _command("update_risk_limits", limits, service.update_risk_limits(limits), request, actor)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None

    @app.post("/api/v1/strategies/{name}/start")
    async def start_strategy(request: Request, name: str, actor: Operator) -> StrategySwitch:
        """Let a strategy trade again."""
        return await _strategy_action(service.start_strategy, name, "start_strategy", request, actor)

    @app.post("/api/v1/strategies/{name}/stop")
    async def stop_strategy(request: Request, name: str, actor: Operator) -> StrategySwitch:
        """Stop a strategy's signals."""
        return await _strategy_action(service.stop_strategy, name, "stop_strategy", request, actor)

    async def _strategy_action(
        action: Callable[[str], Awaitable[StrategySwitch]], name: str, label: str, request: Request, actor: str
    ) -> StrategySwitch:
        try:
            return await _command(label, {"strategy": name}, action(name), request, actor)
        except UnknownStrategyError:
            raise HTTPException(404, f"no strategy named {name!r}") from None

    async def _command(
        action: str,
        details: Mapping[str, Any],
        command: Awaitable[_R],
        request: Request,
        actor: str,
        outcome_details: Callable[[_R], Mapping[str, Any]] = lambda _: {},
    ) -> _R:
        """Await an operator command and audit it; one the trading loop does not confirm in time answers 504.

        A command the system refuses (its ``ValueError``, answered 422 by the route) is audited with
        ``"outcome": "refused"`` and the reason, then raised again.
        """
        try:
            outcome = await command
        except ValueError as error:
            audit(actor, action, {**details, "outcome": "refused", "error": str(error)}, _request_id(request))
            raise
        except CommandNotConfirmed as error:
            audit(actor, action, {**details, "outcome": "timed out"}, _request_id(request))
            advice = (
                "check GET /api/v1/status (or /risk, /strategies) for whether it took effect before sending it again"
            )
            raise HTTPException(504, f"{error}: {advice}") from None
        audit(actor, action, {**details, **outcome_details(outcome)}, _request_id(request))
        return outcome

    @app.post("/api/v1/config/apply")
    async def apply_config(
        request: Request, body: Annotated[ConfigChangeRequest, Body()], actor: Operator
    ) -> StagedConfigChange:
        """Stage tuned values (or an A/B split of capital) for the next bar boundary; journaled when applied."""
        return await _config_change(
            "stage_tuned_config",
            {"values": body.values, "split": body.split},
            lambda changes: changes.stage(body.values, split=body.split),
            request,
            actor,
        )

    @app.post("/api/v1/config/rollback")
    async def rollback_config(request: Request, actor: Operator) -> StagedConfigChange:
        """Stage the values the last applied change (or the running A/B split) replaced."""
        return await _config_change("stage_config_rollback", {}, lambda changes: changes.rollback(), request, actor)

    @app.post("/api/v1/config/split/conclude")
    async def conclude_split(
        request: Request, body: Annotated[SplitConclusion, Body()], actor: Operator
    ) -> StagedConfigChange:
        """End the running A/B split at the next bar boundary, keeping the new or the old parameters."""
        return await _config_change(
            "stage_split_conclusion",
            {"keep": body.keep},
            lambda changes: changes.conclude_split(body.keep),
            request,
            actor,
        )

    async def _config_change(
        action: str,
        details: Mapping[str, Any],
        call: Callable[[ConfigCommands], Awaitable[StagedChange]],
        request: Request,
        actor: str,
    ) -> StagedConfigChange:
        if config_changes is None:
            raise HTTPException(503, "configuration changes are not available in this run")
        try:
            change = await _command(action, details, call(config_changes), request, actor, _change_id)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        return StagedConfigChange(**change.as_dict())

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        body, content_type = render_metrics(service.metrics().model_dump())
        return Response(body, media_type=content_type)

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html")

    @app.websocket("/ws/dashboard")
    async def dashboard_feed(socket: WebSocket) -> None:
        client = socket.client.host if socket.client else "unknown"
        if max_websockets_per_client is not None and sockets.get(client, 0) >= max_websockets_per_client:
            await socket.close(code=1013, reason=f"at most {max_websockets_per_client} dashboards per client")
            return
        sockets[client] = sockets.get(client, 0) + 1
        await socket.accept()
        try:
            await socket.send_json(dashboard_message(full_curve=True))
            while True:
                await asyncio.sleep(dashboard_interval_seconds)
                await socket.send_json(dashboard_message(full_curve=False))
        except WebSocketDisconnect:
            return
        finally:
            sockets[client] -= 1

    def dashboard_message(*, full_curve: bool) -> dict[str, Any]:
        age = snapshot_age()
        return dashboard_snapshot(
            service,
            full_curve=full_curve,
            snapshot_age_seconds=age,
            stale=bool(staleness(age)),
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def dashboard_snapshot(
    service: TradingService, *, full_curve: bool, snapshot_age_seconds: float | None = None, stale: bool = False
) -> dict[str, Any]:
    """Build one dashboard message: everything the page shows.

    Parameters
    ----------
    service
        The running system.
    full_curve
        Send the whole equity curve (the first message) rather than its last point.
    snapshot_age_seconds
        How old the data is (None: read as asked).
    stale
        Whether the data is older than the app accepts (the page shows it).
    """
    curve = service.equity_curve(limit=2000 if full_curve else 1)
    return {
        "type": "snapshot",
        "snapshot_age_seconds": snapshot_age_seconds,
        "stale": stale,
        "status": service.status().model_dump(mode="json"),
        "risk": service.risk().model_dump(mode="json"),
        "positions": [row.model_dump(mode="json") for row in service.positions()],
        "allocations": service.allocations(),
        "open_orders": [row.model_dump(mode="json") for row in service.orders(open_only=True)[-50:]],
        "recent_fills": [row.model_dump(mode="json") for row in service.trades(limit=20)],
        "strategies": [
            row.model_dump(mode="json", include={"name", "enabled", "gate", "next_fire"})
            for row in service.strategies()
        ],
        "equity_curve": [list(point) for point in curve],
        "full_curve": full_curve,
        "bus": service.metrics().bus.model_dump(mode="json"),
    }


def _change_id(change: StagedChange) -> dict[str, Any]:
    return {"change_id": change.as_dict()["change_id"]}


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "")
