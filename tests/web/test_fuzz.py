"""OpenAPI-driven fuzzing of the real app: no generated request makes it fail with a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from fakes import AwaitedConfigChanges
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.schemas import BaseSchema

from conftest import TOKEN, session_config
from keel.integration.paper import PaperSession
from keel.optimization.config_optimizer import ConfigOptimizer
from keel.web import create_app

OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/positions"),
    ("GET", "/api/v1/orders"),
    ("GET", "/api/v1/trades"),
    ("GET", "/api/v1/risk"),
    ("GET", "/api/v1/strategies"),
    ("GET", "/api/v1/allocations"),
    ("POST", "/api/v1/emergency-stop"),
    ("POST", "/api/v1/resume"),
    ("POST", "/api/v1/recover"),
    ("PUT", "/api/v1/risk/limits"),
    ("POST", "/api/v1/strategies/{name}/start"),
    ("POST", "/api/v1/strategies/{name}/stop"),
    ("POST", "/api/v1/config/apply"),
    ("POST", "/api/v1/config/rollback"),
    ("POST", "/api/v1/config/split/conclude"),
    ("GET", "/metrics"),
]


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> BaseSchema:
    folder = Path(tmp_path_factory.mktemp("fuzz"))
    session = PaperSession(session_config(folder), folder)
    session.pipeline.start()
    session.pipeline.bus.drain()
    session.orchestrator.running = True
    app: FastAPI = create_app(
        session.orchestrator,
        api_token=TOKEN,
        audit=session.orchestrator.record_operator_action,
        control_requests_per_minute=1_000_000,
        config_changes=AwaitedConfigChanges(ConfigOptimizer(session.orchestrator)),
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_the_schema_lists_exactly_the_fuzzed_routes(schema: BaseSchema) -> None:
    # Act
    listed = {(op.method.upper(), op.path) for op in (result.ok() for result in schema.get_all_operations())}

    # Assert
    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_request_makes_the_server_fail(schema: BaseSchema, method: str, path: str) -> None:
    # Arrange
    operation = schema[path][method]
    failures: list[str] = []

    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case: schemathesis.Case) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
        response = case.call()
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} {case.body!r} -> {response.status_code} {response.text}"
            )

    # Act
    fuzz()

    # Assert
    assert failures == []
