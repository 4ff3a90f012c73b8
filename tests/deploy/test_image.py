"""keel's image, built and run: paper mode on PostgreSQL, operated over HTTP, killed, and recovered."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from docker_harness import docker
from keel_container import TOKEN, KeelContainer, wait_for

from keel.core.messages import OrderFilled, SubmitOrder
from keel.optimization.cache import CacheManager, StatusCache
from keel.persistence import Database, Journal

pytestmark = pytest.mark.docker


def _published_status(redis_url: str) -> Any:
    """The latest status the container published to Redis for API readers elsewhere (None if none)."""
    reader = StatusCache(CacheManager(redis_url))
    try:
        return reader.latest()
    finally:
        reader.close()


def _journaled(database_url: str) -> tuple[list[str], list[str]]:
    """The client order ids of the journaled order submissions and the trade ids of the journaled fills."""
    database = Database(database_url)
    try:
        journal = Journal(database)
        submitted = [message.client_order_id for _, message in journal.entries_of(SubmitOrder)]
        filled = [message.trade_id for _, message in journal.entries_of(OrderFilled)]
    finally:
        database.dispose()
    return submitted, filled


def test_the_image_runs_paper_trading_on_postgresql_and_recovers_a_halt_after_docker_kill(
    keel_container: KeelContainer,
) -> None:
    # Arrange: a running container that has traded
    keel_container.start()
    wait_for("the first container to become ready", lambda: keel_container.get("/health").status_code == 200)
    wait_for(
        "the first fills",
        lambda: (status := keel_container.running_status()) is not None and status["fills"] >= 2,
    )
    metrics = keel_container.get("/metrics")
    halted = keel_container.post("/api/v1/emergency-stop", {"reason": "docker test"})
    before = {
        "status": keel_container.get("/api/v1/status").json(),
        "orders": keel_container.get("/api/v1/orders").json(),
        "trades": keel_container.get("/api/v1/trades?limit=10000").json(),
        "allocations": keel_container.get("/api/v1/allocations").json(),
    }
    first = keel_container.current

    # Act: kill it mid-run, start a new container on the same volume and database
    docker("kill", "--signal=KILL", first)
    docker("wait", first)
    keel_container.start()
    after_status = wait_for("the restarted container's session to run", keel_container.running_status)
    published = wait_for(
        "the restarted container's status in Redis",
        lambda: (
            (status := _published_status(keel_container.redis_url)) is not None
            and status["session"] is not None
            and status["session"]["recovered"]
            and status
        ),
    )
    after_orders = keel_container.get("/api/v1/orders").json()
    live = keel_container.get("/health/live")
    backup = docker("exec", keel_container.current, "keel", "backup", "create", check=False)
    listed = docker("exec", keel_container.current, "keel", "backup", "list", check=False)
    name = listed.stdout.split()[0] if listed.stdout else ""
    verified = docker("exec", keel_container.current, "keel", "backup", "verify", name, check=False)
    restore = docker("exec", keel_container.current, "keel", "backup", "restore", name, check=False)
    first_stdout, first_stderr = keel_container.logs(first)

    # Assert: the API and metrics served, the halt took
    assert set(before["allocations"]) == {"BTCUSDT", "ETHUSDT"}
    assert metrics.status_code == 200
    assert "keel_trading_state" in metrics.text and "keel_fills_total" in metrics.text
    assert halted.status_code == 200, halted.text
    assert before["status"]["trading_state"] == "HALTED"
    # Recovered: still HALTED, nothing the venue disagrees with, no order lost or duplicated
    assert after_status["session"]["recovered"] is True
    assert after_status["session"]["reconciliation"]["mismatches"] == []
    assert after_status["trading_state"] == "HALTED"
    assert live.status_code == 200
    # The status reached Redis for readers in other processes (the status cache of web.status_cache_url)
    assert published["trading_state"] == "HALTED" and published["mode"] == "paper"
    before_ids = [order["client_order_id"] for order in before["orders"]]
    after_ids = [order["client_order_id"] for order in after_orders]
    assert len(before_ids) >= 2
    assert after_ids == before_ids
    assert after_status["fills"] == before["status"]["fills"]
    submitted, filled = _journaled(keel_container.database_url)
    assert submitted == before_ids
    assert sorted(filled) == sorted(fill["trade_id"] for fill in before["trades"])
    # pg_dump in the image backs the account up while it runs; a restore is refused while it runs
    assert backup.returncode == 0, backup.stderr
    assert verified.returncode == 0, verified.stderr
    assert restore.returncode == 1
    assert "holds this account" in restore.stderr
    # JSON log lines when not on a terminal, and the token never in them
    log_lines = [line for line in first_stderr.splitlines() if line.strip()]
    assert log_lines and all(json.loads(line)["level"] for line in log_lines)
    assert TOKEN not in first_stdout + first_stderr


def test_sigterm_stops_the_container_cleanly(keel_container: KeelContainer) -> None:
    # Arrange
    name = keel_container.start()
    wait_for("the container's session to run", keel_container.running_status)

    # Act
    started = time.monotonic()
    docker("stop", "--time=30", name)
    seconds = time.monotonic() - started
    state = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)

    # Assert: exit 0 from keel's own shutdown, well before docker's SIGKILL
    assert state["ExitCode"] == 0
    assert not state["OOMKilled"]
    assert seconds < 30
