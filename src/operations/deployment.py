"""Deploy a new version of a running keel service, and roll it back when it does not come up (UC-4.1).

A keel service trades one account, so two versions must never run at once:
every strategy replaces the one container in place. The old container is
stopped gracefully (keel journals its state on SIGTERM), the new one starts
on the same volumes, database and settings with the new image, and must
become healthy (its image's health check; running for a while without one)
within a time limit. If it exits, restarts, turns unhealthy or runs out of
time, it is stopped and kept under a ``-failed-<version>`` name for its logs,
and the old container starts again under the service's name.

Nothing changes before the new container has been created: a missing image,
a setting that cannot be carried or a leftover from an interrupted deployment
is refused with the service untouched.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from pydantic import Field

from keel.core.errors import OperatorActionRequiredError
from keel.integration.responses import Response
from keel.operations.containers import ContainerEngine, ContainerEngineError, ContainerSpec, DockerEngine

STRATEGIES = ("rolling", "recreate")
"""Deployment strategies; for one trading container both replace it in place, one at a time."""

SIMULTANEOUS_STRATEGIES = ("blue_green", "canary")
"""Strategies that run two versions side by side: refused, as both would trade the same account."""

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_LOG_LINES = 30


class DeploymentError(OperatorActionRequiredError):
    """A deployment could not start, or could not put the service back: the message says what to do."""


class DeploymentResult(Response):
    """What a deployment did (UC-4.1's ``deployment_tools.deploy_service(...)``)."""

    service_name: str
    version: str = Field(description="The version asked for (the image tag).")
    previous_version: str = Field(description="The version that ran before.")
    strategy: str
    status: str = Field(
        description="deployed (the new version runs healthy), unchanged (it already ran), rolled_back (the new "
        "version failed; the previous one runs again) or failed (neither runs: an operator must act)."
    )
    reason: str = Field(description="Why the new version was rolled back or failed ('' when deployed).")
    image: str = Field(description="The image the service runs now.")
    container_id: str = Field(description="The id of the container that runs the service now ('' when none).")
    failed_container: str = Field(description="Where the failed new container is kept for its logs ('' when none).")
    failed_logs: str = Field(description="The failed container's last lines of output ('' when none).")
    health: str = Field(description="healthy, running (an image without a health check) or the failure's state.")
    started_at: str = Field(description="ISO 8601 UTC.")
    finished_at: str = Field(description="ISO 8601 UTC.")
    duration_seconds: float


class DeploymentTools:
    """Deploy versions of keel services on a container engine.

    Parameters
    ----------
    engine
        The engine the services run on (Docker by default).
    ready_timeout_seconds
        How long a new container has to become healthy before it is rolled back.
    stop_grace_seconds
        How long a stopped container may take to save its state before it is killed.
    settle_seconds
        How long a container of an image without a health check must keep running to count as up.
    poll_seconds
        How often the new container's state is looked at.
    clock, sleep
        The monotonic clock and the sleep the waits use (a test's simulated ones).
    """

    def __init__(
        self,
        engine: ContainerEngine | None = None,
        *,
        ready_timeout_seconds: float = 300.0,
        stop_grace_seconds: float = 60.0,
        settle_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.engine: ContainerEngine = DockerEngine() if engine is None else engine
        self.ready_timeout_seconds = ready_timeout_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self.settle_seconds = settle_seconds
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._sleep = sleep

    async def deploy_service(
        self, service_name: str, version: str, strategy: str = "rolling", image: str | None = None
    ) -> DeploymentResult:
        """Replace the service's container by one of ``version``; roll back if it does not become healthy.

        Parameters
        ----------
        service_name
            The running container's name.
        version
            The image tag to run, of the repository the service runs now (``keel:<version>``).
        strategy
            ``rolling`` or ``recreate`` (the same for one container: stop, replace, check, roll back).
        image
            The whole image reference to run instead of ``<repository>:<version>``.

        Raises
        ------
        ValueError
            If the strategy or the version is not one that can be deployed.
        DeploymentError
            If the deployment cannot start (no such service, no such image,
            a setting it cannot carry, a leftover container, the running one
            would not stop): the service is left as it was.
        ContainerEngineError
            If the engine failed a call midway (a rename): the message names the call.
        """
        started_wall, started = datetime.now(UTC), self._clock()
        _check_strategy(strategy)
        if not _TAG.fullmatch(version):
            raise ValueError(f"version {version!r} is not an image tag: letters, digits, '_', '.' and '-', at most 128")
        current = await self._current(service_name)
        target = image or f"{current.repository}:{version}"
        target_id = await self.engine.image_id(target)
        if target_id is None:
            raise DeploymentError(
                f"image {target} is not on this Docker host: build it (make image IMAGE={target}) or pull it, "
                f"then deploy again; {service_name} was not changed"
            )
        base = _Outcome(service_name, version, current.version, strategy, started_wall, started)
        if target_id == current.image_id:
            return self._result(base, "unchanged", "", current.image, current.id, "healthy")
        previous_name, next_name = f"{service_name}-previous", f"{service_name}-next"
        await self._clear_leftovers(service_name, previous_name, next_name)
        created = await self.engine.create(current.renamed(next_name, target))
        health, reason = await self._switch(service_name, previous_name, next_name)
        if not reason:
            await self.engine.remove(previous_name)
            return self._result(base, "deployed", "", target, created, health)
        return await self._roll_back(base, current, target, previous_name, health, reason)

    async def _current(self, service_name: str) -> ContainerSpec:
        current = await self.engine.container(service_name)
        if current is None:
            raise DeploymentError(
                f"no container named {service_name} on this Docker host: start the service first "
                "(docker run, or docker-compose -f deploy/docker-compose.yml up -d), then deploy new versions"
            )
        if current.compose_project is not None:
            raise DeploymentError(
                f"{service_name} is managed by docker compose (project {current.compose_project}): a container made "
                "beside compose would be replaced by its next 'up'; set the image in deploy/docker-compose.yml "
                f"and run docker-compose -f deploy/docker-compose.yml up -d; {service_name} was not changed"
            )
        if current.unsupported:
            raise DeploymentError(
                f"{service_name} uses settings a new container would not get ({'; '.join(current.unsupported)}): "
                f"deploy it with docker yourself; {service_name} was not changed"
            )
        return current

    async def _clear_leftovers(self, service_name: str, previous_name: str, next_name: str) -> None:
        """Refuse a leftover new container; remove a stopped previous one (a past deployment's, kept by a crash)."""
        if await self.engine.container(next_name) is not None:
            raise DeploymentError(
                f"container {next_name} is left from an interrupted deployment: look at it (docker logs "
                f"{next_name}), remove it (docker rm -f {next_name}) and deploy again; {service_name} was not changed"
            )
        if await self.engine.container(previous_name) is not None:
            if (await self.engine.state(previous_name)).running:
                raise DeploymentError(
                    f"container {previous_name} is running beside {service_name}: two versions may both be "
                    f"trading; stop one (docker stop {previous_name}) before deploying"
                )
            await self.engine.remove(previous_name)

    async def _switch(self, service_name: str, previous_name: str, next_name: str) -> tuple[str, str]:
        """Stop the running container, keep it as ``previous_name``, start ``next_name`` as the service.

        Return the new container's health and why it is not up ('' when it is).
        """
        try:
            await self.engine.stop(service_name, self.stop_grace_seconds)
        except ContainerEngineError as error:
            await self.engine.remove(next_name)
            raise DeploymentError(
                f"stopping {service_name} failed ({error}): it was left as it is and the new container removed; "
                f"check it (docker inspect {service_name}) and deploy again"
            ) from error
        await self.engine.rename(service_name, previous_name)
        await self.engine.rename(next_name, service_name)
        try:
            await self.engine.start(service_name)
        except ContainerEngineError as error:
            return "not started", f"it did not start ({error})"
        return await self._wait_until_up(service_name)

    async def _wait_until_up(self, name: str) -> tuple[str, str]:
        """Wait for container ``name`` to be up; return its health and why it is not ('' when it is)."""
        started = self._clock()
        while True:
            state = await self.engine.state(name)
            waited = self._clock() - started
            if state.restarting or state.restart_count:
                return "restarting", f"it exited with code {state.exit_code} and was restarted"
            if not state.running:
                return "exited", f"it exited with code {state.exit_code}"
            if state.health == "healthy":
                return "healthy", ""
            if state.health == "unhealthy":
                return "unhealthy", "its health check failed"
            if state.health is None and waited >= self.settle_seconds:
                return "running", ""
            if waited >= self.ready_timeout_seconds:
                return state.health or "running", (
                    f"it was not healthy within {self.ready_timeout_seconds:g} s (health: {state.health})"
                )
            await self._sleep(self.poll_seconds)

    async def _roll_back(
        self,
        base: _Outcome,
        current: ContainerSpec,
        target: str,
        previous_name: str,
        health: str,
        reason: str,
    ) -> DeploymentResult:
        """Stop the failed new container, keep it for its logs, and start the previous one again."""
        service_name = base.service_name
        logs = await self.engine.logs(service_name, _LOG_LINES)
        failed_name = f"{service_name}-failed-{base.version}"
        if await self.engine.container(failed_name) is not None:
            await self.engine.remove(failed_name)
        reason = f"{target} did not come up: {reason}"
        outcome = replace(base, failed_container=failed_name, failed_logs=logs)
        try:
            await self.engine.stop(service_name, self.stop_grace_seconds)
            await self.engine.rename(service_name, failed_name)
            await self.engine.rename(previous_name, service_name)
            await self.engine.start(service_name)
        except ContainerEngineError as error:
            back_health, back_reason = "not started", f"putting it back failed ({error})"
        else:
            back_health, back_reason = await self._wait_until_up(service_name)
        if back_reason:
            reason = (
                f"{reason}; and {current.image} did not come back: {back_reason}. Neither version runs: "
                f"start the previous container by hand (docker start {service_name}, or {previous_name})"
            )
            return self._result(outcome, "failed", reason, "", "", back_health)
        return self._result(outcome, "rolled_back", reason, current.image, current.id, back_health)

    def _result(
        self, outcome: _Outcome, status: str, reason: str, image: str, container_id: str, health: str
    ) -> DeploymentResult:
        return DeploymentResult(
            service_name=outcome.service_name,
            version=outcome.version,
            previous_version=outcome.previous_version,
            strategy=outcome.strategy,
            status=status,
            reason=reason,
            image=image,
            container_id=container_id,
            failed_container=outcome.failed_container,
            failed_logs=outcome.failed_logs,
            health=health,
            started_at=outcome.started_wall.isoformat(),
            finished_at=datetime.now(UTC).isoformat(),
            duration_seconds=round(self._clock() - outcome.started, 3),
        )


@dataclass(frozen=True)
class _Outcome:
    """What a deployment result holds besides its status."""

    service_name: str
    version: str
    previous_version: str
    strategy: str
    started_wall: datetime
    started: float
    failed_container: str = ""
    failed_logs: str = ""


def _check_strategy(strategy: str) -> None:
    if strategy in SIMULTANEOUS_STRATEGIES:
        raise ValueError(
            f"strategy {strategy!r} runs two versions at once, and both would trade the same account: "
            f"use one of {', '.join(STRATEGIES)} (each replaces the container in place and rolls back on failure)"
        )
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown deployment strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
