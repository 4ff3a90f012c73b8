"""The container engine a keel service runs on: its port, and Docker behind it.

A deployment replaces a running container by one of a new image with the
same settings. :class:`ContainerSpec` holds those settings as the operator
gave them (``docker run``'s flags), not what the old image supplied: the new
image brings its own defaults (command, environment, health check). The
settings keel's container needs are all carried; a container that uses one
that is not (devices, ulimits, privileged mode...) is reported in
:attr:`ContainerSpec.unsupported` and a deployment refuses it rather than
drop the setting.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from keel.core.errors import KeelError

DOCKER_TIMEOUT_SECONDS = 120.0
"""The longest one ``docker`` call may take (a stop waits up to its grace period first)."""

_DEFAULT_SHM_BYTES = 64 * 1024 * 1024
_DEFAULT_IPC_MODES = ("", "private", "shareable")
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
_NOT_CARRIED = ("Devices", "DeviceRequests", "Ulimits", "VolumesFrom", "Links", "Sysctls", "GroupAdd")
"""HostConfig lists a deployment cannot carry: a container using any of them is refused."""


class ContainerEngineError(KeelError):
    """The container engine refused or failed a call; its message says which call and why."""


@dataclass(frozen=True)
class ContainerSpec:
    """A container's operator-given settings: what ``docker run`` needs to make it again.

    Attributes
    ----------
    name
        The container's name.
    image
        The image reference it runs (``repository:tag``).
    image_id
        The image's content id (``sha256:...``; empty for a spec not yet created).
    id
        The container's id (empty for a spec not yet created).
    environment
        ``KEY=value`` entries the operator set (left out of ``repr``: they hold secrets).
    entrypoint, command
        The operator's overrides of the image's (None: the image's own).
    unsupported
        Settings of the container a new one cannot be given (refused by a deployment).
    compose_project
        The docker compose project that manages the container (None: none does).
    """

    name: str
    image: str
    image_id: str = ""
    id: str = ""
    environment: tuple[str, ...] = field(default=(), repr=False)
    entrypoint: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    user: str | None = None
    working_dir: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    volumes: tuple[str, ...] = ()
    network: str | None = None
    published_ports: tuple[str, ...] = ()
    read_only: bool = False
    tmpfs: tuple[str, ...] = ()
    restart: str = "no"
    memory_bytes: int = 0
    nano_cpus: int = 0
    capabilities_added: tuple[str, ...] = ()
    capabilities_dropped: tuple[str, ...] = ()
    security_options: tuple[str, ...] = ()
    log_driver: str | None = None
    log_options: tuple[tuple[str, str], ...] = ()
    extra_hosts: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    init: bool = False
    stop_signal: str | None = None
    stop_timeout_seconds: int | None = None
    unsupported: tuple[str, ...] = ()
    compose_project: str | None = None

    @property
    def repository(self) -> str:
        """Return the image reference without its tag (``keel`` of ``keel:v2.1.0``)."""
        reference = self.image.split("@", 1)[0]
        slash = reference.rfind("/")
        colon = reference.rfind(":")
        return reference[:colon] if colon > slash else reference

    @property
    def version(self) -> str:
        """Return the image's tag (``latest`` when the reference names none)."""
        reference = self.image.split("@", 1)[0]
        colon = reference.rfind(":")
        return reference[colon + 1 :] if colon > reference.rfind("/") else "latest"

    def renamed(self, name: str, image: str) -> ContainerSpec:
        """Return the same settings for a container ``name`` of ``image``."""
        return replace(self, name=name, image=image, image_id="", id="")


@dataclass(frozen=True)
class ContainerState:
    """Where a container is in its life.

    Attributes
    ----------
    running
        Whether its process runs.
    restarting
        Whether the engine is restarting it after an exit (its restart policy).
    exit_code
        The last exit's code (0 while it never exited).
    restart_count
        How often the engine restarted it.
    health
        Its health check's status (``starting``, ``healthy``, ``unhealthy``), None without a check.
    """

    running: bool
    restarting: bool = False
    exit_code: int = 0
    restart_count: int = 0
    health: str | None = None


class ContainerEngine(Protocol):
    """The calls a deployment makes on the engine that runs the service."""

    async def container(self, name: str) -> ContainerSpec | None:
        """Return the settings of container ``name`` (None: there is none)."""
        ...

    async def image_id(self, image: str) -> str | None:
        """Return the content id of ``image`` on this host (None: it is not here)."""
        ...

    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container from ``spec``; return its id."""
        ...

    async def start(self, name: str) -> None:
        """Start container ``name``."""
        ...

    async def stop(self, name: str, grace_seconds: float) -> None:
        """Stop container ``name``: its stop signal, then a kill after ``grace_seconds``."""
        ...

    async def rename(self, name: str, new_name: str) -> None:
        """Rename container ``name`` to ``new_name``."""
        ...

    async def remove(self, name: str) -> None:
        """Remove stopped container ``name`` (its volumes stay)."""
        ...

    async def state(self, name: str) -> ContainerState:
        """Return the state of container ``name``."""
        ...

    async def logs(self, name: str, lines: int) -> str:
        """Return the last ``lines`` lines of the container's output."""
        ...


class DockerEngine:
    """:class:`ContainerEngine` on the Docker Engine, through the ``docker`` command.

    Parameters
    ----------
    docker
        The docker client to run (its path or name on ``PATH``).
    timeout_seconds
        The longest one call may take, beyond a stop's grace period.
    """

    def __init__(self, docker: str = "docker", timeout_seconds: float = DOCKER_TIMEOUT_SECONDS) -> None:
        self.docker = docker
        self.timeout_seconds = timeout_seconds

    async def _run(self, *arguments: str, timeout: float | None = None) -> tuple[int, str, str]:
        try:
            process = await asyncio.create_subprocess_exec(
                self.docker,
                *arguments,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as error:
            raise ContainerEngineError(
                f"the docker client {self.docker!r} is not installed: install Docker, or pass its path"
            ) from error
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout or self.timeout_seconds)
        except TimeoutError as error:
            process.kill()
            await process.wait()
            raise ContainerEngineError(
                f"docker {arguments[0]} did not finish within {timeout or self.timeout_seconds:g} s: "
                "check that the Docker daemon answers (docker info)"
            ) from error
        assert process.returncode is not None
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def _checked(self, *arguments: str, timeout: float | None = None) -> str:
        code, out, err = await self._run(*arguments, timeout=timeout)
        if code != 0:
            raise ContainerEngineError(f"docker {arguments[0]} {arguments[-1]} failed ({code}): {err.strip()}")
        return out

    async def container(self, name: str) -> ContainerSpec | None:
        """Return the settings of container ``name`` (None: there is none)."""
        code, out, err = await self._run("container", "inspect", name)
        if code != 0:
            if "no such" in err.lower():
                return None
            raise ContainerEngineError(f"docker container inspect {name} failed ({code}): {err.strip()}")
        (container,) = json.loads(out)
        (image,) = json.loads(await self._checked("image", "inspect", container["Image"]))
        return spec_from_inspect(container, image)

    async def image_id(self, image: str) -> str | None:
        """Return the content id of ``image`` on this host (None: it is not here)."""
        code, out, _ = await self._run("image", "inspect", "--format", "{{.Id}}", image)
        return out.strip() if code == 0 else None

    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container from ``spec``; return its id.

        The environment goes through a file only this user can read, removed
        at once, so no secret shows in the process list.
        """
        with tempfile.TemporaryDirectory(prefix="keel-deploy-") as folder:
            env_file = Path(folder) / "env"
            descriptor = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.writelines(f"{entry}\n" for entry in spec.environment)
            out = await self._checked("create", f"--env-file={env_file}", *run_arguments(spec))
        return out.strip()

    async def start(self, name: str) -> None:
        """Start container ``name``."""
        await self._checked("start", name)

    async def stop(self, name: str, grace_seconds: float) -> None:
        """Stop container ``name``: its stop signal, then a kill after ``grace_seconds``."""
        grace = max(0, round(grace_seconds))
        await self._checked("stop", f"--time={grace}", name, timeout=grace + self.timeout_seconds)

    async def rename(self, name: str, new_name: str) -> None:
        """Rename container ``name`` to ``new_name``."""
        await self._checked("rename", name, new_name)

    async def remove(self, name: str) -> None:
        """Remove stopped container ``name`` (its volumes stay)."""
        await self._checked("rm", name)

    async def state(self, name: str) -> ContainerState:
        """Return the state of container ``name``."""
        out = await self._checked("container", "inspect", "--format", "{{json .State}} {{.RestartCount}}", name)
        state_json, _, restarts = out.strip().rpartition(" ")
        state = json.loads(state_json)
        health = state.get("Health")
        return ContainerState(
            running=bool(state.get("Running")),
            restarting=bool(state.get("Restarting")),
            exit_code=int(state.get("ExitCode") or 0),
            restart_count=int(restarts or 0),
            health=None if not health else str(health.get("Status")),
        )

    async def logs(self, name: str, lines: int) -> str:
        """Return the last ``lines`` lines of the container's output (both streams)."""
        code, out, err = await self._run("logs", f"--tail={lines}", name)
        return (out + err).strip() if code == 0 else f"(no logs: {err.strip()})"


def spec_from_inspect(container: dict[str, Any], image: dict[str, Any]) -> ContainerSpec:
    """Return the operator-given settings of a ``docker container inspect`` answer.

    ``image`` is ``docker image inspect`` of the image the container runs: a
    setting equal to the image's own is the image's default, not the
    operator's, and is left for the new image to supply.
    """
    config = container["Config"]
    host = container["HostConfig"]
    own = image.get("Config") or {}
    entrypoint = _override(config.get("Entrypoint"), own.get("Entrypoint"))
    command = _override(config.get("Cmd"), own.get("Cmd"))
    if entrypoint is not None:
        # A new entrypoint clears the image's command: the container's whole command must go with it.
        command = tuple(config.get("Cmd") or ())
    image_environment = set(own.get("Env") or ())
    image_labels = own.get("Labels") or {}
    restart = host.get("RestartPolicy") or {}
    restart_name = restart.get("Name") or "no"
    if restart_name == "on-failure" and restart.get("MaximumRetryCount"):
        restart_name = f"on-failure:{restart['MaximumRetryCount']}"
    log = host.get("LogConfig") or {}
    return ContainerSpec(
        name=container["Name"].lstrip("/"),
        image=config["Image"],
        image_id=container["Image"],
        id=container["Id"],
        environment=tuple(entry for entry in config.get("Env") or () if entry not in image_environment),
        entrypoint=entrypoint,
        command=command,
        user=_changed(config.get("User"), own.get("User")),
        working_dir=_changed(config.get("WorkingDir"), own.get("WorkingDir")),
        labels=tuple(sorted((k, v) for k, v in (config.get("Labels") or {}).items() if image_labels.get(k) != v)),
        volumes=tuple(_volume(mount) for mount in container.get("Mounts") or () if mount.get("Type") != "tmpfs"),
        network=host.get("NetworkMode") or None,
        published_ports=_published_ports(host.get("PortBindings") or {}),
        read_only=bool(host.get("ReadonlyRootfs")),
        tmpfs=_tmpfs(host, container.get("Mounts") or ()),
        restart=restart_name,
        memory_bytes=int(host.get("Memory") or 0),
        nano_cpus=int(host.get("NanoCpus") or 0),
        capabilities_added=tuple(host.get("CapAdd") or ()),
        capabilities_dropped=tuple(host.get("CapDrop") or ()),
        security_options=tuple(host.get("SecurityOpt") or ()),
        log_driver=log.get("Type") or None,
        log_options=tuple(sorted((log.get("Config") or {}).items())),
        extra_hosts=tuple(host.get("ExtraHosts") or ()),
        dns=tuple(host.get("Dns") or ()),
        init=bool(host.get("Init")),
        stop_signal=_changed(config.get("StopSignal"), own.get("StopSignal")),
        stop_timeout_seconds=config.get("StopTimeout"),
        unsupported=_unsupported(container),
        compose_project=(config.get("Labels") or {}).get(COMPOSE_PROJECT_LABEL),
    )


def run_arguments(spec: ContainerSpec) -> list[str]:
    """Return ``docker create``'s arguments for ``spec``, without its environment (see :meth:`DockerEngine.create`)."""
    flags = [f"--name={spec.name}", f"--restart={spec.restart}"]
    flags += [f"--volume={volume}" for volume in spec.volumes]
    flags += [f"--tmpfs={tmpfs}" for tmpfs in spec.tmpfs]
    flags += [f"--publish={port}" for port in spec.published_ports]
    flags += [f"--label={key}={value}" for key, value in spec.labels]
    flags += [f"--cap-add={name}" for name in spec.capabilities_added]
    flags += [f"--cap-drop={name}" for name in spec.capabilities_dropped]
    flags += [f"--security-opt={option}" for option in spec.security_options]
    flags += [f"--add-host={host}" for host in spec.extra_hosts]
    flags += [f"--dns={server}" for server in spec.dns]
    flags += [f"--log-opt={key}={value}" for key, value in spec.log_options]
    optional = {
        "--network": spec.network,
        "--user": spec.user,
        "--workdir": spec.working_dir,
        "--log-driver": spec.log_driver,
        "--stop-signal": spec.stop_signal,
        "--stop-timeout": spec.stop_timeout_seconds,
        "--memory": spec.memory_bytes or None,
        "--cpus": spec.nano_cpus / 1e9 if spec.nano_cpus else None,
    }
    flags += [f"{flag}={value}" for flag, value in optional.items() if value is not None]
    if spec.read_only:
        flags.append("--read-only")
    if spec.init:
        flags.append("--init")
    arguments = list(spec.command or ())
    if spec.entrypoint is not None:
        flags.append(f"--entrypoint={spec.entrypoint[0] if spec.entrypoint else ''}")
        arguments = [*spec.entrypoint[1:], *arguments]
    return [*flags, spec.image, *arguments]


def _override(value: list[str] | None, image_value: list[str] | None) -> tuple[str, ...] | None:
    return None if value == image_value or value is None else tuple(value)


def _changed(value: Any, image_value: Any) -> Any:
    return None if not value or value == image_value else value


def _volume(mount: dict[str, Any]) -> str:
    """The ``--volume`` of a mount: a named (or anonymous) volume by name, a bind mount by its host path."""
    source = mount["Name"] if mount.get("Type") == "volume" else mount["Source"]
    return f"{source}:{mount['Destination']}" + ("" if mount.get("RW", True) else ":ro")


def _published_ports(bindings: dict[str, Any]) -> tuple[str, ...]:
    published = []
    for container_port, hosts in sorted(bindings.items()):
        for binding in hosts or ():
            address, port = binding.get("HostIp") or "", binding.get("HostPort") or ""
            published.append(":".join(part for part in (address, port) if part) + f":{container_port}")
    return tuple(published)


def _tmpfs(host: dict[str, Any], mounts: Any) -> tuple[str, ...]:
    paths = [f"{path}:{options}" if options else path for path, options in sorted((host.get("Tmpfs") or {}).items())]
    paths += [mount["Destination"] for mount in mounts if mount.get("Type") == "tmpfs"]
    return tuple(paths)


def _unsupported(container: dict[str, Any]) -> tuple[str, ...]:
    """Name each setting of the container a new one would not get (empty: every setting is carried)."""
    host = container["HostConfig"]
    found = [f"HostConfig.{key}" for key in _NOT_CARRIED if host.get(key)]
    if host.get("Privileged"):
        found.append("HostConfig.Privileged")
    for key in ("PidMode", "UTSMode", "UsernsMode", "CgroupParent", "Runtime"):
        value = host.get(key) or ""
        if value and not (key == "Runtime" and value == "runc"):
            found.append(f"HostConfig.{key}={value}")
    if (host.get("IpcMode") or "") not in _DEFAULT_IPC_MODES:
        found.append(f"HostConfig.IpcMode={host['IpcMode']}")
    if host.get("ShmSize") not in (None, 0, _DEFAULT_SHM_BYTES):
        found.append("HostConfig.ShmSize")
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    if len(networks) > 1:
        found.append(f"NetworkSettings.Networks ({', '.join(sorted(networks))}: more than one network)")
    if any("\n" in entry for entry in container["Config"].get("Env") or ()):
        found.append("Config.Env (a value with a line break)")
    return tuple(found)
