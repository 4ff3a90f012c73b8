"""keel's image run as a paper-trading container on loopback, its state on a named volume (the deploy tests')."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from docker_harness import BuiltImage, docker

TOKEN = "docker-test-token-5f2c9e"
READY_TIMEOUT_SECONDS = 180.0
# Mounted at /etc/keel/keel.yaml: two symbols, a fast moving-average cross on equal weights.
CONFIG_FILE = """
data:
  symbols: [BTCUSDT, ETHUSDT]
strategy:
  name: moving_average_cross
  fast_period: 3
  slow_period: 8
portfolio:
  allocator: equal_weight
  rebalance_threshold: 0.01
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = READY_TIMEOUT_SECONDS) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.25)


@dataclass
class KeelContainer:
    """keel's image run in paper mode on loopback (host network), its state on a named volume."""

    image: BuiltImage
    database_url: str
    redis_url: str
    config_file: Path
    volume: str = field(default_factory=lambda: f"keel-test-{uuid.uuid4().hex[:12]}")
    port: int = field(default_factory=_free_port)
    names: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def current(self) -> str:
        return self.names[-1]

    def start(self, name: str | None = None, image: str | None = None) -> str:
        """Start a new container on the volume (``name``, of ``image``: by default a new name, of keel's image)."""
        name = name or f"{self.volume}-{len(self.names)}"
        environment = {
            "KEEL_WEB__HOST": "127.0.0.1",
            "KEEL_WEB__PORT": str(self.port),
            "KEEL_API_TOKEN": TOKEN,
            "KEEL_PERSISTENCE__URL": self.database_url,
            "KEEL_WEB__STATUS_CACHE_URL": self.redis_url,
            "KEEL_PAPER__SPEED": "1200",
            "KEEL_PERSISTENCE__SNAPSHOT_EVERY": "50",
        }
        flags = [f"--env={key}={value}" for key, value in environment.items()]
        docker(
            "run",
            "--detach",
            f"--name={name}",
            "--network=host",
            "--read-only",
            "--tmpfs=/tmp",
            f"--volume={self.volume}:/var/lib/keel",
            f"--volume={self.config_file}:/etc/keel/keel.yaml:ro",
            *flags,
            image or self.image.tag,
        )
        self.names.append(name)
        return name

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10.0)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30.0)

    def running_status(self) -> dict[str, Any] | None:
        """The status once the session runs (recovered and reconciled), else None."""
        self.raise_if_exited()
        response = self.get("/api/v1/status")
        return response.json() if response.status_code == 200 and response.json()["running"] else None

    def raise_if_exited(self) -> None:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", self.current).stdout)
        if not state["Running"]:
            logs = docker("logs", "--tail", "40", self.current, check=False)
            pytest.fail(f"container {self.current} exited ({state['ExitCode']}): {logs.stdout}{logs.stderr}")

    def logs(self, name: str) -> tuple[str, str]:
        result = docker("logs", name)
        return result.stdout, result.stderr

    def remove(self) -> None:
        for name in self.names:
            docker("rm", "--force", name, check=False)
        docker("volume", "rm", "--force", self.volume, check=False)
