"""UC-4.1's ``deploy_service`` on Docker itself: a running paper-trading container replaced by a new version,
and a version that fails at start rolled back (tests/operations/test_deployment.py covers every decision)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from docker_harness import BuiltImage, docker
from keel_container import KeelContainer, wait_for

from keel.cli import main
from keel.operations import DeploymentTools, DockerEngine

pytestmark = pytest.mark.docker

REPOSITORY = "keel-deploy-test"


def _build(tag: str, dockerfile: str) -> None:
    """Build ``tag`` from a Dockerfile with no context (FROM keel's image, so nothing is fetched)."""
    subprocess.run(["docker", "build", "--quiet", "-t", tag, "-"], input=dockerfile, text=True, check=True)


@pytest.fixture
def versions(keel_image: BuiltImage) -> Iterator[dict[str, str]]:
    """Three versions of keel's image: v1 and v2 both work (v2 only adds a label), v3 fails at start."""
    run_id = uuid.uuid4().hex[:8]
    tags = {name: f"{REPOSITORY}:{name}-{run_id}" for name in ("v1", "v2", "v3")}
    docker("tag", keel_image.tag, tags["v1"])
    _build(tags["v2"], f"FROM {keel_image.tag}\nLABEL org.opencontainers.image.version=v2\n")
    # A release whose default command reads a configuration file that is not there: keel exits 2 at start.
    _build(tags["v3"], f'FROM {keel_image.tag}\nCMD ["run", "--mode", "paper", "--config", "/etc/keel/gone.yaml"]\n')
    try:
        yield tags
    finally:
        for tag in tags.values():
            docker("rmi", tag, check=False)


def _image_of(name: str) -> str:
    return docker("inspect", "--format", "{{.Config.Image}}", name).stdout.strip()


def _mounts_of(name: str) -> list[tuple[str, str]]:
    mounts = json.loads(docker("inspect", "--format", "{{json .Mounts}}", name).stdout)
    return sorted((mount.get("Name") or mount["Source"], mount["Destination"]) for mount in mounts)


def test_a_new_version_replaces_the_running_one_and_a_failing_one_is_rolled_back(
    keel_container: KeelContainer, versions: dict[str, str], request: pytest.FixtureRequest
) -> None:
    # Arrange: v1 runs as the service, has traded, and is halted by its operator
    service = f"{keel_container.volume}-service"
    for leftover in ("previous", "next", "failed-" + versions["v3"].split(":", 1)[1]):
        request.addfinalizer(lambda name=f"{service}-{leftover}": docker("rm", "--force", name, check=False))
    keel_container.start(name=service, image=versions["v1"])
    wait_for("v1 to trade", lambda: (s := keel_container.running_status()) is not None and s["fills"] >= 1)
    assert keel_container.post("/api/v1/emergency-stop", {"reason": "deploy test"}).status_code == 200
    mounts = _mounts_of(service)
    tools = DeploymentTools(DockerEngine(), ready_timeout_seconds=180.0, stop_grace_seconds=30.0)
    v2 = versions["v2"].split(":", 1)[1]
    v3 = versions["v3"].split(":", 1)[1]

    # Act: deploy v2, then the failing v3
    deployed = asyncio.run(tools.deploy_service(service_name=service, version=v2, strategy="rolling"))
    after_v2 = wait_for("v2's session to run", keel_container.running_status)
    rolled_back = asyncio.run(tools.deploy_service(service_name=service, version=v3, strategy="rolling"))
    after_v3 = wait_for("v2's session to run again", keel_container.running_status)

    # Assert: v2 took over the same volume, database, port and token, and recovered v1's halted session
    assert (deployed.status, deployed.health, deployed.previous_version) == ("deployed", "healthy", "v1-" + v2[3:])
    assert after_v2["session"]["recovered"] is True
    assert after_v2["trading_state"] == "HALTED"
    assert after_v2["session"]["reconciliation"]["mismatches"] == []
    # v3 exited at start; v2 runs again as the service, v3 is kept for its logs
    assert rolled_back.status == "rolled_back"
    assert "exited with code 2" in rolled_back.reason
    assert "gone.yaml" in rolled_back.failed_logs
    assert _image_of(service) == versions["v2"]
    assert _mounts_of(service) == mounts
    assert after_v3["trading_state"] == "HALTED" and after_v3["fills"] == after_v2["fills"]
    failed_state = json.loads(docker("inspect", "--format", "{{json .State}}", rolled_back.failed_container).stdout)
    assert (failed_state["Running"], failed_state["ExitCode"]) == (False, 2)
    assert docker("inspect", f"{service}-previous", check=False).returncode != 0


def test_keel_deploy_refuses_a_service_that_is_not_there_and_says_how_to_start_it(keel_image: BuiltImage) -> None:
    # Arrange
    missing = f"keel-not-running-{uuid.uuid4().hex[:8]}"

    # Act
    result = CliRunner().invoke(main, ["deploy", missing, "--version", "v2.1.0"])

    # Assert
    assert result.exit_code == 2
    assert f"no container named {missing}" in result.output
    assert "start the service first" in result.output
