"""OpenAPI-driven fuzzing of the real app: no generated request makes it fail with a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.schemas import BaseSchema
from hypothesis import HealthCheck, settings

from conftest import TOKEN, session_config
from keel.integration.paper import PaperSession
from keel.web import create_app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    session = PaperSession(session_config(), tmp_path_factory.mktemp("fuzz"))
    session.pipeline.start()
    session.pipeline.bus.drain()
    return create_app(
        session.orchestrator, api_token=TOKEN, audit=session.orchestrator.record_operator_action,
        control_requests_per_minute=1_000_000,
    )


schema = schemathesis.pytest.from_fixture("openapi")


@pytest.fixture(scope="module")
def openapi(app: FastAPI) -> BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_server_fail(case: schemathesis.Case) -> None:
    # Arrange
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}

    # Act
    response = case.call()

    # Assert
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)


def test_fuzzing_covers_every_route(openapi: BaseSchema) -> None:
    paths = {operation.path for operation in (result.ok() for result in openapi.get_all_operations())}
    assert {
        "/health", "/api/v1/status", "/api/v1/emergency-stop", "/api/v1/resume", "/api/v1/risk/limits",
        "/api/v1/strategies/{name}/start", "/api/v1/strategies/{name}/stop", "/metrics",
    } <= paths
