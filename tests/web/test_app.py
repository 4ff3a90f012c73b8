"""The control API against a real running paper session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fakes import AuditRecord, FakeConfigChanges, FakePublisher, FakeTradingSystem, run_what_was_handed_to
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conftest import TOKEN, bearer, running_session, session_config
from keel.core.messages import BarClosed
from keel.integration.paper import PaperSession
from keel.integration.responses import SystemStatus
from keel.optimization.config_optimizer import ConfigOptimizer
from keel.optimization.space import apply_values
from keel.persistence import AuditLog, Database
from keel.web import ConfigChangesOnLoop, SnapshotService, create_app

CONTROL_ROUTES = [
    ("POST", "/api/v1/emergency-stop", {"reason": "test"}),
    ("POST", "/api/v1/resume", {"reason": "test"}),
    ("POST", "/api/v1/recover", {"reason": "test"}),
    ("PUT", "/api/v1/risk/limits", {"max_leverage": 2.0}),
    ("POST", "/api/v1/strategies/ma_cross/start", None),
    ("POST", "/api/v1/strategies/ma_cross/stop", None),
    ("POST", "/api/v1/config/apply", {"values": {"risk.max_leverage": 2.0}}),
]


def test_read_routes_describe_the_running_system(tmp_path: Path) -> None:
    async def scenario() -> dict[str, object]:
        async with running_session(tmp_path, min_bars=200) as (_, client):
            return {
                path: (await client.get(path))
                for path in (
                    "/health",
                    "/api/v1/status",
                    "/api/v1/positions",
                    "/api/v1/orders",
                    "/api/v1/trades",
                    "/api/v1/risk",
                    "/api/v1/strategies",
                    "/api/v1/allocations",
                    "/docs",
                    "/openapi.json",
                )
            }

    # Act
    responses = asyncio.run(scenario())

    # Assert
    for path, response in responses.items():
        assert response.status_code == 200, (path, response.text)
        assert response.headers["X-Request-ID"]
    status = responses["/api/v1/status"].json()
    assert status["running"] is True and status["health"] == "HEALTHY" and status["trading_state"] == "ACTIVE"
    assert status["active_strategies"] == ["ma_cross"]
    assert {"equity", "pnl", "current_roi", "drawdown", "gross_exposure"} <= set(status)
    assert status["session"] == {"number": 1, "recovered": False, "reconciliation": None}
    assert responses["/health"].json()["ready"] is True
    assert len(responses["/api/v1/trades"].json()) > 0
    assert set(responses["/api/v1/allocations"].json()) == {"BTCUSDT", "ETHUSDT"}


@pytest.mark.parametrize(("method", "path", "body"), CONTROL_ROUTES)
@pytest.mark.parametrize(
    ("headers", "expected"), [({}, 401), (bearer("wrong-token"), 403), ({"Authorization": "Basic abc"}, 401)]
)
def test_every_state_changing_route_refuses_a_missing_or_wrong_token(
    tmp_path: Path, method: str, path: str, body: dict | None, headers: dict[str, str], expected: int
) -> None:
    async def scenario() -> tuple[int, dict, str]:
        async with running_session(tmp_path, min_bars=1) as (session, client):
            response = await client.request(method, path, json=body, headers=headers)
            return response.status_code, response.json(), session.orchestrator.risk()["trading_state"]

    # Act
    status, payload, trading_state = asyncio.run(scenario())

    # Assert
    assert status == expected
    assert payload["error"]["code"] in ("unauthorized", "forbidden")
    assert trading_state == "ACTIVE"


@pytest.mark.parametrize(("method", "path", "body"), CONTROL_ROUTES)
def test_without_a_configured_token_state_changing_routes_are_refused(
    tmp_path: Path, method: str, path: str, body: dict | None
) -> None:
    async def scenario() -> int:
        async with running_session(tmp_path, token=None, min_bars=1) as (_, client):
            return (await client.request(method, path, json=body, headers=bearer())).status_code

    assert asyncio.run(scenario()) == 403


def test_emergency_stop_halts_cancels_and_is_audited_then_resume(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict, dict, dict, dict]:
        async with running_session(tmp_path, min_bars=100) as (_, client):
            stop = await client.post(
                "/api/v1/emergency-stop", json={"reason": "Risk limit exceeded", "flatten": True}, headers=bearer()
            )
            await asyncio.sleep(0.3)
            halted = (await client.get("/api/v1/status")).json()
            orders_after = [
                o for o in (await client.get("/api/v1/orders")).json() if o["strategy"] != "emergency_flatten"
            ]
            resumed = (await client.post("/api/v1/resume", json={"reason": "checked"}, headers=bearer())).json()
            return stop.json(), halted, {"new_orders": [o for o in orders_after if o["time"] > halted["time"]]}, resumed

    # Act
    stopped, halted, after, resumed = asyncio.run(scenario())

    # Assert
    assert stopped["trading_state"] == "HALTED"
    assert halted["trading_state"] == "HALTED" and halted["open_orders"] == 0
    assert after["new_orders"] == []
    assert resumed["trading_state"] == "ACTIVE"
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    actions = [(e.action, e.actor.split("@")[0]) for e in AuditLog(database).entries()]
    assert actions == [("emergency_stop", "operator"), ("resume", "operator")]


def test_recover_returns_a_component_a_past_fault_degraded_to_running_and_is_audited(tmp_path: Path) -> None:
    # Arrange: a handler of the risk controller raised once (the bus marks its component degraded)
    async def scenario() -> tuple[dict, dict, dict]:
        async with running_session(tmp_path, min_bars=50) as (session, client):
            bar = BarClosed(
                symbol="BTCUSDT",
                interval="1m",
                open_time=0,
                open=1.0,
                high=1.0,
                low=1.0,
                close=1.0,
                volume=0.0,
                ts_event=60_000_000_000,
                ts_init=60_000_000_000,
            )
            session.pipeline.handler_failed("risk.controller.monitor", bar, ZeroDivisionError("a bug"))
            await asyncio.sleep(0.3)
            degraded = (await client.get("/api/v1/status")).json()

            # Act
            outcome = await client.post("/api/v1/recover", json={"reason": "fixed the bug"}, headers=bearer())
            await asyncio.sleep(0.3)
            after = (await client.get("/api/v1/status")).json()
            return degraded, outcome.json(), after

    degraded, outcome, after = asyncio.run(scenario())

    # Assert
    assert degraded["components"]["risk.controller"] == "DEGRADED"
    assert "risk.controller" in outcome["recovered_components"]
    assert outcome["trading_state"] == degraded["trading_state"]
    assert after["components"]["risk.controller"] == "RUNNING"
    assert not any(reason.startswith("risk.controller degraded") for reason in after["health_reasons"])
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    assert [(e.action, json.loads(e.details)) for e in AuditLog(database).entries()] == [
        ("recover", {"reason": "fixed the bug"})
    ]


def test_risk_limits_are_validated_and_applied(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[int, dict]]:
        async with running_session(tmp_path, min_bars=1) as (_, client):
            results = []
            bodies = ({"max_leverage": 2.5}, {"max_leverage": -1}, {"max_leverage": "a lot"}, {}, {"leverage": 2})
            for body in (*bodies, {"max_leverage": True}, {"max_leverage": "3"}):
                response = await client.put("/api/v1/risk/limits", json=body, headers=bearer())
                results.append((response.status_code, response.json()))
            results.append((200, (await client.get("/api/v1/risk")).json()))
            return results

    # Act
    results = asyncio.run(scenario())

    # Assert
    # Assert: JSON true is not a leverage of 1, nor is a string a number
    assert results[0][0] == 200 and results[0][1]["max_leverage"] == 2.5
    assert [code for code, _ in results[1:7]] == [422] * 6
    assert all(body["error"]["code"] == "invalid_request" for _, body in results[1:7])
    assert results[7][1]["max_leverage"] == 2.5


def test_every_limit_update_limits_takes_can_be_changed_over_http(tmp_path: Path) -> None:
    # Arrange: the limits a Python caller changes with risk_controller.update_limits that the route lacked
    body = {
        "var_confidence": 0.95,
        "var_recovery_fraction": 0.5,
        "max_orders_per_window": 30,
        "rate_window_seconds": 30.0,
    }

    async def scenario() -> tuple[int, dict]:
        async with running_session(tmp_path, min_bars=1) as (_, client):
            # Act
            response = await client.put("/api/v1/risk/limits", json=body, headers=bearer())
            return response.status_code, (await client.get("/api/v1/risk")).json()

    status, risk = asyncio.run(scenario())

    # Assert
    assert status == 200
    assert {name: risk["limits"][name] for name in body} == body


def test_a_risk_limit_change_the_controller_refuses_is_audited_as_refused(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, dict]:
        async with running_session(tmp_path, min_bars=1) as (_, client):
            # Arrange: the default halt_drawdown_pct is 0.35, so reducing at 0.5 conflicts with it
            body = {"max_drawdown_pct": 0.5}

            # Act
            response = await client.put("/api/v1/risk/limits", json=body, headers=bearer())
            return response.status_code, (await client.get("/api/v1/risk")).json()

    status, risk = asyncio.run(scenario())

    # Assert
    assert status == 422
    assert risk["limits"]["max_drawdown_pct"] == 0.25
    entries = AuditLog(Database(f"sqlite:///{tmp_path / 'keel.db'}")).entries()
    details = [json.loads(e.details) for e in entries if e.action == "update_risk_limits"]
    assert [(d["max_drawdown_pct"], d["outcome"]) for d in details] == [(0.5, "refused")]


def test_strategies_stop_and_start_and_unknown_is_404(tmp_path: Path) -> None:
    async def scenario() -> list[int | bool]:
        async with running_session(tmp_path, min_bars=1) as (_, client):
            stop = await client.post("/api/v1/strategies/ma_cross/stop", headers=bearer())
            stopped = (await client.get("/api/v1/strategies")).json()[0]["enabled"]
            start = await client.post("/api/v1/strategies/ma_cross/start", headers=bearer())
            started = (await client.get("/api/v1/strategies")).json()[0]["enabled"]
            missing = await client.post("/api/v1/strategies/nope/stop", headers=bearer())
            return [stop.status_code, stopped, start.status_code, started, missing.status_code]

    assert asyncio.run(scenario()) == [200, False, 200, True, 404]


def test_control_routes_are_rate_limited(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        async with running_session(tmp_path, min_bars=1) as (_, client):
            return [
                (await client.put("/api/v1/risk/limits", json={"max_leverage": 3}, headers=bearer())).status_code
                for _ in range(35)
            ]

    codes = asyncio.run(scenario())
    assert codes[:30] == [200] * 30 and set(codes[30:]) == {429}


def test_metrics_are_prometheus_text(tmp_path: Path) -> None:
    async def scenario() -> str:
        async with running_session(tmp_path, min_bars=200) as (_, client):
            response = await client.get("/metrics")
            assert response.headers["content-type"].startswith("text/plain")
            return response.text

    text = asyncio.run(scenario())
    for name in (
        "keel_bus_depth",
        "keel_bus_high_water_mark",
        "keel_bus_conflated_total",
        "keel_bus_handler_latency_p99_seconds",
        'keel_orders{status="FILLED"}',
        "keel_fills_total",
        "keel_fees_paid_usdt_total",
        "keel_funding_paid_usdt",
        "keel_pnl_usdt",
        "keel_equity_usdt",
        'keel_trading_state{state="ACTIVE"} 1.0',
        "keel_feed_staleness_seconds",
        "keel_exchange_latency_seconds",
    ):
        assert name in text, name
    assert TOKEN not in text


def _typed(schema: object) -> bool:
    """Whether a JSON schema names its content: a model, or a list or map of typed values (not ``{}``)."""
    if not isinstance(schema, dict):
        return False
    if "$ref" in schema or ("type" in schema and schema["type"] not in ("object", "array")):
        return True
    if "anyOf" in schema:
        return all(_typed(option) for option in schema["anyOf"])
    return _typed(schema.get("items")) or _typed(schema.get("additionalProperties"))


def test_openapi_documents_every_control_api_response(tmp_path: Path) -> None:
    # Arrange
    session = PaperSession(session_config(tmp_path), tmp_path)
    app = create_app(session.orchestrator, api_token=TOKEN, audit=session.orchestrator.record_operator_action)

    # Act
    document = app.openapi()

    # Assert
    routes = [
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/api/v1/")
        for method in route.methods
    ]
    assert len(routes) >= 12
    for path, method in routes:
        response = document["paths"][path][method]["responses"]["200"]
        schema = response["content"]["application/json"]["schema"]
        assert _typed(schema), (method, path, schema)
    status = document["paths"]["/api/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert status == {"$ref": "#/components/schemas/SystemStatus"}
    documented = document["components"]["schemas"]["SystemStatus"]["properties"]
    assert set(documented) == set(SystemStatus.model_fields)


def test_responses_read_like_mappings_for_the_use_cases(tmp_path: Path) -> None:
    # Arrange
    session = PaperSession(session_config(tmp_path), tmp_path)

    # Act
    status = session.orchestrator.get_system_status()

    # Assert
    assert status["health"] == status.health == "HEALTHY"
    assert status.get("no such field", "absent") == "absent"
    assert "equity" in status and "no such field" not in status
    with pytest.raises(KeyError, match="no such field"):
        status["no such field"]


@pytest.mark.parametrize(("method", "path", "body"), CONTROL_ROUTES)
def test_the_token_is_checked_before_the_body_is_read(
    tmp_path: Path, method: str, path: str, body: dict | None
) -> None:
    async def scenario() -> tuple[int, str]:
        async with running_session(tmp_path, min_bars=1) as (_, client):
            response = await client.request(
                method, path, content=b"{not json", headers={"Content-Type": "application/json"}
            )
            return response.status_code, response.json()["error"]["code"]

    assert asyncio.run(scenario()) == (401, "unauthorized")


def test_a_body_over_the_limit_gets_413_declared_or_streamed(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 1024

    async def scenario() -> tuple[int, int, str]:
        async with running_session(tmp_path, min_bars=1) as (session, client):
            declared = await client.post("/api/v1/resume", content=b" " * 20_000, headers=bearer())
            streamed = await client.post("/api/v1/resume", content=chunks(), headers=bearer())
            return declared.status_code, streamed.status_code, session.orchestrator.risk()["trading_state"]

    assert asyncio.run(scenario()) == (413, 413, "ACTIVE")


def test_failed_attempts_are_audited_at_a_limited_rate(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_session(tmp_path, min_bars=1) as (_, client):
            for _ in range(25):
                await client.post("/api/v1/emergency-stop", json={"reason": "x"}, headers=bearer("guess"))

    # Act
    asyncio.run(scenario())

    # Assert
    entries = AuditLog(Database(f"sqlite:///{tmp_path / 'keel.db'}")).entries()
    assert [e.action for e in entries] == ["authentication_failed"] * 10
    refused = {"method": "POST", "path": "/api/v1/emergency-stop", "refused": "forbidden"}
    assert json.loads(entries[0].details) == refused


def test_read_routes_and_dashboards_are_limited_per_client(tmp_path: Path) -> None:
    session = PaperSession(session_config(tmp_path), tmp_path)
    app = create_app(
        session.orchestrator,
        api_token=TOKEN,
        audit=session.orchestrator.record_operator_action,
        read_requests_per_second=5,
        max_websockets_per_client=1,
    )
    client = TestClient(app)

    # Act
    statuses = [client.get("/api/v1/status").status_code for _ in range(8)]
    with client.websocket_connect("/ws/dashboard") as first:
        first.receive_json()
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws/dashboard") as second:
            second.receive_json()

    # Assert
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
    assert refused.value.code == 1013


FAST = "strategy.parameters.trend_following.fast_period"


@asynccontextmanager
async def tunable_session(run_dir: Path) -> AsyncIterator[tuple[ConfigOptimizer, httpx.AsyncClient]]:
    """A paper session running trend following, with the configuration routes over its ConfigOptimizer."""
    config = apply_values(
        session_config(run_dir, speed=300.0),
        {
            "strategy.name": "strategy_manager",
            "strategy.strategies": ("trend_following",),
            "strategy.regime.enabled": False,
        },
    )
    session = PaperSession(config, run_dir)
    optimizer = ConfigOptimizer(session.orchestrator)
    app = create_app(
        session.orchestrator,
        api_token=TOKEN,
        audit=session.orchestrator.record_operator_action,
        config_changes=ConfigChangesOnLoop(optimizer, asyncio.get_running_loop()),
    )
    task = asyncio.create_task(session.run())
    while session.bars < 2 and not task.done():
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keel.test") as client:
        try:
            yield optimizer, client
        finally:
            session.request_stop("test finished")
            await task


async def applied(optimizer: ConfigOptimizer, count: int) -> None:
    """Wait until ``count`` changes were applied at bar boundaries."""
    while len(optimizer.history) < count:
        await asyncio.sleep(0.01)


def test_tuned_values_are_staged_as_an_ab_split_then_concluded_through_the_api_and_audited(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict, dict, int, dict]:
        async with tunable_session(tmp_path) as (optimizer, client):
            split = await client.post(
                "/api/v1/config/apply", json={"values": {FAST: 12}, "split": 0.3}, headers=bearer()
            )
            await applied(optimizer, 1)
            conclude = await client.post("/api/v1/config/split/conclude", json={"keep": "new"}, headers=bearer())
            await applied(optimizer, 2)
            refused = await client.post(
                "/api/v1/config/apply", json={"values": {"data.symbols": "X"}}, headers=bearer()
            )
            strategies = (await client.get("/api/v1/strategies")).json()
            return split.json(), conclude.json(), refused.status_code, strategies[0]

    # Act
    split, conclude, refused, strategy = asyncio.run(scenario())

    # Assert
    assert (split["action"], split["split"], split["values"]) == ("start_ab_split", 0.3, {FAST: 12})
    assert conclude["action"] == "conclude_ab_split_new"
    assert refused == 422
    assert strategy["parameters"]["fast_period"] == 12
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    entries = AuditLog(database).entries()
    outcomes = [json.loads(e.details).get("outcome") for e in entries]
    actions = [(e.action, e.actor.split("@")[0]) for e, outcome in zip(entries, outcomes, strict=True) if not outcome]
    assert actions == [
        ("stage_tuned_config", "operator"),
        ("start_ab_split", "config_optimizer"),
        ("stage_split_conclusion", "operator"),
        ("conclude_ab_split_new", "config_optimizer"),
    ]
    assert [e.action for e, outcome in zip(entries, outcomes, strict=True) if outcome] == ["stage_tuned_config"]


def test_configuration_routes_answer_503_when_the_run_has_no_optimizer(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, str]:
        async with running_session(tmp_path, min_bars=1) as (_, client):
            response = await client.post("/api/v1/config/rollback", headers=bearer())
            return response.status_code, response.json()["error"]["code"]

    assert asyncio.run(scenario()) == (503, "unavailable")


def test_an_unknown_path_and_a_wrong_method_answer_the_api_error_format(tmp_path: Path) -> None:
    # Arrange
    session = PaperSession(session_config(tmp_path), tmp_path)
    app = create_app(session.orchestrator, api_token=TOKEN, audit=session.orchestrator.record_operator_action)
    client = TestClient(app)

    # Act
    unknown = client.get("/api/v1/no-such-route", headers={"X-Request-ID": "missing-1"})
    wrong_method = client.delete("/api/v1/status", headers={**bearer(), "X-Request-ID": "wrong-1"})
    session.database.dispose()

    # Assert
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {"code": "not_found", "message": "Not Found", "request_id": "missing-1"}
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert wrong_method.json()["error"]["request_id"] == "wrong-1"
    assert wrong_method.headers["Allow"] == "GET"


@pytest.mark.parametrize(
    ("method", "path", "body", "action", "details"),
    [
        (
            "POST",
            "/api/v1/emergency-stop",
            {"reason": "stuck"},
            "emergency_stop",
            {"reason": "stuck", "flatten": False},
        ),
        ("POST", "/api/v1/resume", {"reason": "checked"}, "resume", {"reason": "checked"}),
        ("PUT", "/api/v1/risk/limits", {"max_leverage": 2.0}, "update_risk_limits", {"max_leverage": 2.0}),
        ("POST", "/api/v1/strategies/ma_cross/stop", None, "stop_strategy", {"strategy": "ma_cross"}),
    ],
)
def test_a_command_the_trading_loop_does_not_confirm_in_time_answers_504_is_audited_and_still_runs(
    method: str, path: str, body: dict | None, action: str, details: dict
) -> None:
    # Arrange: the web app in its own loop, over a trading loop that does not run while the command waits
    system = FakeTradingSystem()
    stuck = asyncio.new_event_loop()
    audit = AuditRecord()
    service = SnapshotService(FakePublisher(system), stuck, command_timeout_seconds=0.05)  # type: ignore[arg-type]
    app = create_app(service, api_token=TOKEN, audit=audit)

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keel.test") as client:
            return await client.request(method, path, json=body, headers={**bearer(), "X-Request-ID": "req-7"})

    # Act
    response = asyncio.run(scenario())
    run_what_was_handed_to(stuck)

    # Assert
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "not_confirmed"
    assert "sent to the trading loop but not confirmed" in error["message"]
    assert "GET /api/v1/status" in error["message"]
    assert [entry[1:] for entry in audit.entries] == [(action, {**details, "outcome": "timed out"}, "req-7")]
    assert [name for name, _ in system.commands] == [action]


def test_a_config_change_the_trading_loop_does_not_confirm_in_time_answers_504_is_audited_and_still_runs() -> None:
    # Arrange: the web app in its own loop, over a trading loop that does not run while the change waits
    changes = FakeConfigChanges()
    stuck = asyncio.new_event_loop()
    audit = AuditRecord()
    app = create_app(
        SnapshotService(FakePublisher(FakeTradingSystem()), stuck),  # type: ignore[arg-type]
        api_token=TOKEN,
        audit=audit,
        config_changes=ConfigChangesOnLoop(changes, stuck, timeout_seconds=0.05),
    )
    values = {"risk.max_leverage": 2.0}

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keel.test") as client:
            return await client.post("/api/v1/config/apply", json={"values": values}, headers=bearer())

    # Act
    response = asyncio.run(scenario())
    run_what_was_handed_to(stuck)

    # Assert
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "not_confirmed"
    assert [entry[1:3] for entry in audit.entries] == [
        ("stage_tuned_config", {"values": values, "split": None, "outcome": "timed out"})
    ]
    assert changes.staged == [values]
