"""DeploymentTools' decisions, on a hand-written container engine and a simulated clock.

tests/deploy/test_deploy_service.py runs the same deployments on Docker itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from keel.operations import ContainerSpec, ContainerState, DeploymentError, DeploymentTools
from keel.operations.containers import ContainerEngineError

SERVICE = "trading_system"
SECRET = "KEEL_API_TOKEN=s3cret-token-never-shown"
STARTING = ContainerState(running=True, health="starting")
HEALTHY = ContainerState(running=True, health="healthy")
RUNNING_UNCHECKED = ContainerState(running=True)


@dataclass
class FakeContainer:
    spec: ContainerSpec
    behaviour: Sequence[ContainerState]
    started: bool = False
    polls: int = 0

    def state(self) -> ContainerState:
        if not self.started:
            return ContainerState(running=False)
        found = self.behaviour[min(self.polls, len(self.behaviour) - 1)]
        self.polls += 1
        return found


@dataclass
class FakeEngine:
    """Containers by name; each image behaves, once started, as its script of states says (the last one stays)."""

    images: dict[str, str]
    behaviours: dict[str, Sequence[ContainerState]]
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    changes: list[tuple[str, ...]] = field(default_factory=list)
    refuse_start: set[str] = field(default_factory=set)
    created: int = 0

    def run(self, spec: ContainerSpec) -> None:
        spec = replace(spec, image_id=self.images[spec.image], id=f"id-{spec.image}")
        self.containers[spec.name] = FakeContainer(spec, self.behaviours[spec.image], started=True)

    async def container(self, name: str) -> ContainerSpec | None:
        found = self.containers.get(name)
        return None if found is None else replace(found.spec, name=name)

    async def image_id(self, image: str) -> str | None:
        return self.images.get(image)

    async def create(self, spec: ContainerSpec) -> str:
        self.changes.append(("create", spec.name, spec.image))
        self.created += 1
        created = replace(spec, image_id=self.images[spec.image], id=f"id-{self.created}")
        self.containers[spec.name] = FakeContainer(created, self.behaviours[spec.image])
        return created.id

    async def start(self, name: str) -> None:
        self.changes.append(("start", name))
        container = self.containers[name]
        if container.spec.image in self.refuse_start:
            raise ContainerEngineError(f"docker start {name} failed (1): port is already allocated")
        container.started, container.polls = True, 0

    async def stop(self, name: str, grace_seconds: float) -> None:
        self.changes.append(("stop", name, str(grace_seconds)))
        self.containers[name].started = False

    async def rename(self, name: str, new_name: str) -> None:
        self.changes.append(("rename", name, new_name))
        assert new_name not in self.containers
        self.containers[new_name] = self.containers.pop(name)

    async def remove(self, name: str) -> None:
        self.changes.append(("remove", name))
        assert not self.containers[name].started
        del self.containers[name]

    async def state(self, name: str) -> ContainerState:
        return self.containers[name].state()

    async def logs(self, name: str, lines: int) -> str:
        return f"last {lines} lines of {self.containers[name].spec.image}"

    def running(self, name: str) -> str | None:
        """The image container ``name`` runs (None: stopped or absent)."""
        found = self.containers.get(name)
        return found.spec.image if found is not None and found.started else None


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def running_service(behaviours: dict[str, Sequence[ContainerState]]) -> FakeEngine:
    images = {image: f"sha256:{image.rsplit(':', 1)[1]}" for image in behaviours}
    engine = FakeEngine(images, behaviours)
    engine.run(
        ContainerSpec(
            name=SERVICE,
            image="keel:v2.0.0",
            environment=(SECRET, "KEEL_WEB__PORT=8000"),
            volumes=("keel-state:/var/lib/keel",),
            network="host",
            read_only=True,
            restart="unless-stopped",
        )
    )
    return engine


def tools(engine: FakeEngine, clock: SimulatedClock) -> DeploymentTools:
    return DeploymentTools(
        engine,
        ready_timeout_seconds=120.0,
        stop_grace_seconds=60.0,
        settle_seconds=20.0,
        poll_seconds=1.0,
        clock=clock,
        sleep=clock.sleep,
    )


@pytest.mark.asyncio
async def test_a_healthy_new_version_replaces_the_old_one_with_the_same_settings() -> None:
    # Arrange
    engine = running_service({"keel:v2.0.0": [HEALTHY], "keel:v2.1.0": [STARTING, STARTING, HEALTHY]})
    clock = SimulatedClock()

    # Act
    result = await tools(engine, clock).deploy_service(service_name=SERVICE, version="v2.1.0", strategy="rolling")

    # Assert
    assert (result["status"], result.health, result.reason) == ("deployed", "healthy", "")
    assert (result.version, result.previous_version, result.image) == ("v2.1.0", "v2.0.0", "keel:v2.1.0")
    assert engine.running(SERVICE) == "keel:v2.1.0"
    new = engine.containers[SERVICE].spec
    assert result.container_id == new.id
    assert (new.environment, new.volumes, new.network, new.read_only, new.restart) == (
        (SECRET, "KEEL_WEB__PORT=8000"),
        ("keel-state:/var/lib/keel",),
        "host",
        True,
        "unless-stopped",
    )
    assert set(engine.containers) == {SERVICE}
    # The old one was stopped (with its grace period) before the new one started: never two at once.
    assert engine.changes.index(("stop", SERVICE, "60.0")) < engine.changes.index(("start", SERVICE))
    assert result.duration_seconds == 2.0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("behaviour", "health", "why"),
    [
        ([STARTING, ContainerState(running=False, exit_code=3)], "exited", "exited with code 3"),
        ([STARTING, ContainerState(running=True, health="unhealthy")], "unhealthy", "health check failed"),
        ([ContainerState(running=True, restart_count=1, exit_code=2)], "restarting", "was restarted"),
        ([STARTING], "starting", "not healthy within 120 s"),
    ],
)
async def test_a_new_version_that_does_not_come_up_is_rolled_back_and_kept_for_its_logs(
    behaviour: list[ContainerState], health: str, why: str
) -> None:
    # Arrange
    engine = running_service({"keel:v2.0.0": [STARTING, HEALTHY], "keel:v2.1.0": behaviour})
    clock = SimulatedClock()

    # Act
    result = await tools(engine, clock).deploy_service(SERVICE, "v2.1.0")

    # Assert
    assert result.status == "rolled_back"
    assert why in result.reason and "keel:v2.1.0" in result.reason
    assert (result.image, result.health) == ("keel:v2.0.0", "healthy")
    assert result.container_id == "id-keel:v2.0.0"
    assert engine.running(SERVICE) == "keel:v2.0.0"
    assert result.failed_container == f"{SERVICE}-failed-v2.1.0"
    assert engine.containers[result.failed_container].spec.image == "keel:v2.1.0"
    assert engine.running(result.failed_container) is None
    assert result.failed_logs == "last 30 lines of keel:v2.1.0"
    assert set(engine.containers) == {SERVICE, result.failed_container}
    assert health in {"exited", "unhealthy", "restarting", "starting"}


@pytest.mark.asyncio
async def test_a_new_version_that_cannot_start_is_rolled_back() -> None:
    # Arrange
    engine = running_service({"keel:v2.0.0": [HEALTHY], "keel:v2.1.0": [HEALTHY]})
    engine.refuse_start.add("keel:v2.1.0")

    # Act
    result = await tools(engine, SimulatedClock()).deploy_service(SERVICE, "v2.1.0")

    # Assert
    assert result.status == "rolled_back"
    assert "did not start" in result.reason and "port is already allocated" in result.reason
    assert engine.running(SERVICE) == "keel:v2.0.0"


@pytest.mark.asyncio
async def test_when_the_old_version_does_not_come_back_either_the_result_says_neither_runs() -> None:
    # Arrange: the old container exits on its restart too
    engine = running_service(
        {"keel:v2.0.0": [ContainerState(running=False, exit_code=1)], "keel:v2.1.0": [ContainerState(running=False)]}
    )

    # Act
    result = await tools(engine, SimulatedClock()).deploy_service(SERVICE, "v2.1.0")

    # Assert
    assert result.status == "failed"
    assert "Neither version runs" in result.reason and f"docker start {SERVICE}" in result.reason
    assert (result.image, result.container_id) == ("", "")
    assert not (await engine.state(SERVICE)).running


@pytest.mark.asyncio
async def test_an_image_without_a_health_check_counts_as_up_once_it_kept_running_for_the_settle_time() -> None:
    # Arrange
    engine = running_service({"keel:v2.0.0": [RUNNING_UNCHECKED], "keel:v2.1.0": [RUNNING_UNCHECKED]})
    clock = SimulatedClock()

    # Act
    result = await tools(engine, clock).deploy_service(SERVICE, "v2.1.0", strategy="recreate")

    # Assert
    assert (result.status, result.health) == ("deployed", "running")
    assert clock.now == 20.0


@pytest.mark.asyncio
async def test_the_version_already_running_is_left_alone() -> None:
    # Arrange
    engine = running_service({"keel:v2.0.0": [HEALTHY]})

    # Act
    result = await tools(engine, SimulatedClock()).deploy_service(SERVICE, "v2.0.0")

    # Assert
    assert (result.status, result.image, result.container_id) == ("unchanged", "keel:v2.0.0", "id-keel:v2.0.0")
    assert engine.changes == []


@pytest.mark.asyncio
async def test_a_stopped_previous_container_of_an_earlier_deployment_is_removed_first() -> None:
    # Arrange
    engine = running_service({"keel:v2.0.0": [HEALTHY], "keel:v1.9.0": [HEALTHY], "keel:v2.1.0": [HEALTHY]})
    engine.run(ContainerSpec(name=f"{SERVICE}-previous", image="keel:v1.9.0"))
    await engine.stop(f"{SERVICE}-previous", 0)

    # Act
    result = await tools(engine, SimulatedClock()).deploy_service(SERVICE, "v2.1.0")

    # Assert
    assert result.status == "deployed"
    assert set(engine.containers) == {SERVICE}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("arrange", "version", "message"),
    [
        (lambda engine: None, "v9.9.9", "image keel:v9.9.9 is not on this Docker host"),
        (lambda engine: engine.containers.pop(SERVICE), "v2.1.0", "no container named trading_system"),
        (
            lambda engine: engine.run(ContainerSpec(name=f"{SERVICE}-next", image="keel:v2.1.0")),
            "v2.1.0",
            "left from an interrupted deployment",
        ),
        (
            lambda engine: engine.run(ContainerSpec(name=f"{SERVICE}-previous", image="keel:v2.1.0")),
            "v2.1.0",
            "two versions may both be trading",
        ),
        (
            lambda engine: setattr(
                engine.containers[SERVICE],
                "spec",
                replace(engine.containers[SERVICE].spec, unsupported=("HostConfig.Devices",)),
            ),
            "v2.1.0",
            "HostConfig.Devices",
        ),
        (
            lambda engine: setattr(
                engine.containers[SERVICE],
                "spec",
                replace(engine.containers[SERVICE].spec, compose_project="deploy"),
            ),
            "v2.1.0",
            "managed by docker compose (project deploy)",
        ),
    ],
)
async def test_a_deployment_that_cannot_start_is_refused_and_changes_nothing(
    arrange: object, version: str, message: str
) -> None:
    # Arrange
    engine = running_service({"keel:v2.0.0": [HEALTHY], "keel:v2.1.0": [HEALTHY]})
    assert callable(arrange)
    arrange(engine)
    changes_before = list(engine.changes)

    # Act
    with pytest.raises(DeploymentError) as raised:
        await tools(engine, SimulatedClock()).deploy_service(SERVICE, version)

    # Assert
    assert message in str(raised.value)
    assert engine.changes == changes_before


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("strategy", "version", "message"),
    [
        ("blue_green", "v2.1.0", "both would trade the same account"),
        ("canary", "v2.1.0", "both would trade the same account"),
        ("shadow", "v2.1.0", "unknown deployment strategy 'shadow'"),
        ("rolling", "v2.1.0:latest", "is not an image tag"),
        ("rolling", "", "is not an image tag"),
    ],
)
async def test_a_strategy_or_version_that_cannot_be_deployed_is_refused(
    strategy: str, version: str, message: str
) -> None:
    # Arrange
    engine = running_service({"keel:v2.0.0": [HEALTHY], "keel:v2.1.0": [HEALTHY]})

    # Act
    with pytest.raises(ValueError) as raised:
        await tools(engine, SimulatedClock()).deploy_service(SERVICE, version, strategy=strategy)

    # Assert
    assert message in str(raised.value)
    assert engine.changes == []


@pytest.mark.asyncio
async def test_the_services_secrets_appear_in_no_representation_or_result() -> None:
    # Arrange
    engine = running_service({"keel:v2.0.0": [HEALTHY], "keel:v2.1.0": [ContainerState(running=False)]})
    secret = SECRET.split("=", 1)[1]

    # Act
    result = await tools(engine, SimulatedClock()).deploy_service(SERVICE, "v2.1.0")

    # Assert
    assert secret not in repr(engine.containers[SERVICE].spec)
    assert secret not in result.model_dump_json()
    assert secret not in repr(result)


def test_an_image_reference_splits_into_repository_and_version_past_a_registry_port() -> None:
    # Arrange
    spec = ContainerSpec(name="s", image="registry.example:5000/team/keel:v2.1.0")

    # Act
    found = (spec.repository, spec.version, ContainerSpec(name="s", image="keel").version)

    # Assert
    assert found == ("registry.example:5000/team/keel", "v2.1.0", "latest")
