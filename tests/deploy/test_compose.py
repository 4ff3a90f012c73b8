"""The compose stack's files: compose, Prometheus config and alerts, Grafana dashboard, against keel's /metrics."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\bkeel_[a-z0-9_]+")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/ensure-system-packages (make test does)")
    return found


def _web_fixtures() -> ModuleType:
    """tests/web/conftest.py: a real paper session served by the real app."""
    spec = importlib.util.spec_from_file_location("keel_web_fixtures", ROOT / "tests" / "web" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exported_names(exposition: str) -> set[str]:
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE ") or line.startswith("# HELP "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _alert_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "keel.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_docker_compose_accepts_the_compose_file() -> None:
    environment = {
        **os.environ,
        "POSTGRES_PASSWORD": "compose-test",
        "KEEL_API_TOKEN": "compose-test",
        "GRAFANA_ADMIN_PASSWORD": "compose-test",
    }

    # Act
    result = subprocess.run(
        [_tool("docker-compose"), "-f", str(DEPLOY / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )

    # Assert
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"keel", "postgres", "redis", "prometheus", "grafana"}
    assert services["keel"]["read_only"] is True
    ports = [str(port) for service in services.values() for port in service.get("ports", [])]
    assert ports and all(port.startswith("127.0.0.1:") for port in ports)
    # keel stops at start when its database is out of reach: it starts once PostgreSQL answers.
    assert services["keel"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["keel"]["depends_on"]["redis"] == {"condition": "service_started"}  # keel runs uncached without


def test_docker_compose_refuses_to_start_without_the_secrets() -> None:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("POSTGRES_PASSWORD", "KEEL_API_TOKEN", "GRAFANA_ADMIN_PASSWORD")
    }

    # Act
    result = subprocess.run(
        [_tool("docker-compose"), "-f", str(DEPLOY / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )

    # Assert
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ("check", "config", "prometheus/prometheus.yml"),
        ("check", "rules", "prometheus/alerts.yml"),
        ("test", "rules", "prometheus/alerts_test.yml"),
    ],
    ids=["config", "rules", "rule-unit-tests"],
)
def test_promtool_accepts_the_prometheus_files(arguments: tuple[str, ...]) -> None:
    # Act
    result = subprocess.run([_tool("promtool"), *arguments], capture_output=True, text=True, cwd=DEPLOY, check=False)

    # Assert
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_in_the_alerts_and_the_dashboard_is_one_keel_exports(tmp_path: Path) -> None:
    fixtures = _web_fixtures()

    async def scrape() -> str:
        async with fixtures.running_session(tmp_path, min_bars=100) as (_, client):
            return (await client.get("/metrics")).text

    expressions = _alert_expressions() + _dashboard_expressions()
    used = {name for expression in expressions for name in METRIC.findall(expression)}

    # Act
    exported = _exported_names(asyncio.run(scrape()))

    # Assert
    assert len(used) >= 20
    assert used - exported == set()


def test_the_alerts_cover_what_an_operator_must_know() -> None:
    used = {name for expression in _alert_expressions() for name in METRIC.findall(expression)}

    assert {
        "keel_feed_staleness_seconds",
        "keel_trading_state",
        "keel_reconciliation_mismatches",
        "keel_bus_conflated_total",
        "keel_exchange_server_time_offset_seconds",
        "keel_exchange_rate_limit_usage_ratio",
    } <= used
