"""A container's settings read from ``docker inspect`` and given back to ``docker create``.

The documents below are trimmed from Docker 28's answers for keel's image run as the README runs it.
"""

from __future__ import annotations

import copy
from typing import Any

from keel.operations.containers import run_arguments, spec_from_inspect

IMAGE_ENV = ["PATH=/opt/keel/venv/bin:/usr/bin", "KEEL_WEB__HOST=0.0.0.0", "KEEL_WEB__PORT=8000"]
IMAGE: dict[str, Any] = {
    "Config": {
        "User": "10001:10001",
        "Env": IMAGE_ENV,
        "Entrypoint": ["keel"],
        "Cmd": ["run", "--mode", "paper", "--config", "/etc/keel/keel.yaml"],
        "WorkingDir": "/opt/keel",
        "StopSignal": "SIGTERM",
        "Labels": None,
    }
}
CONTAINER: dict[str, Any] = {
    "Id": "25775470bfd7",
    "Name": "/trading_system",
    "Image": "sha256:74e6e5e655ae",
    "Config": {
        "User": "10001:10001",
        "Env": ["KEEL_API_TOKEN=s3cret", "KEEL_WEB__PORT=9000", *IMAGE_ENV[:2]],
        "Entrypoint": ["keel"],
        "Cmd": ["run", "--mode", "paper", "--config", "/etc/keel/keel.yaml"],
        "Image": "keel:v2.0.0",
        "WorkingDir": "/opt/keel",
        "StopSignal": "SIGTERM",
        "Labels": {"team": "desk"},
    },
    "HostConfig": {
        "Binds": ["keel-state:/var/lib/keel", "/srv/keel.yaml:/etc/keel/keel.yaml:ro"],
        "NetworkMode": "bridge",
        "PortBindings": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000"}]},
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "ReadonlyRootfs": True,
        "Tmpfs": {"/tmp": ""},
        "IpcMode": "private",
        "ShmSize": 67108864,
        "Runtime": "runc",
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}},
    },
    "Mounts": [
        {"Type": "volume", "Name": "keel-state", "Destination": "/var/lib/keel", "RW": True},
        {"Type": "bind", "Source": "/srv/keel.yaml", "Destination": "/etc/keel/keel.yaml", "RW": False},
        {"Type": "volume", "Name": "3f9a0c1e", "Destination": "/var/cache/keel", "RW": True},
    ],
    "NetworkSettings": {"Networks": {"bridge": {}}},
}


def test_the_operators_settings_are_read_and_the_images_own_left_to_the_new_image() -> None:
    # Act
    spec = spec_from_inspect(CONTAINER, IMAGE)

    # Assert
    assert (spec.name, spec.image, spec.id, spec.image_id) == (
        "trading_system",
        "keel:v2.0.0",
        "25775470bfd7",
        "sha256:74e6e5e655ae",
    )
    assert spec.environment == ("KEEL_API_TOKEN=s3cret", "KEEL_WEB__PORT=9000")
    assert (spec.entrypoint, spec.command, spec.user, spec.working_dir, spec.stop_signal) == (None,) * 5
    # The anonymous volume is carried by its name: a new container would otherwise get an empty one.
    assert spec.volumes == (
        "keel-state:/var/lib/keel",
        "/srv/keel.yaml:/etc/keel/keel.yaml:ro",
        "3f9a0c1e:/var/cache/keel",
    )
    assert (spec.restart, spec.read_only, spec.tmpfs, spec.network) == ("on-failure:3", True, ("/tmp",), "bridge")
    assert spec.published_ports == ("127.0.0.1:8000:8000/tcp",)
    assert spec.labels == (("team", "desk"),)
    assert spec.unsupported == () and spec.compose_project is None
    assert "s3cret" not in repr(spec)


def test_docker_create_gets_every_setting_and_the_new_image() -> None:
    # Arrange
    spec = spec_from_inspect(CONTAINER, IMAGE).renamed("trading_system-next", "keel:v2.1.0")

    # Act
    arguments = run_arguments(spec)

    # Assert
    assert arguments[-1] == "keel:v2.1.0"
    assert set(arguments[:-1]) == {
        "--name=trading_system-next",
        "--restart=on-failure:3",
        "--volume=keel-state:/var/lib/keel",
        "--volume=/srv/keel.yaml:/etc/keel/keel.yaml:ro",
        "--volume=3f9a0c1e:/var/cache/keel",
        "--tmpfs=/tmp",
        "--publish=127.0.0.1:8000:8000/tcp",
        "--label=team=desk",
        "--log-opt=max-size=10m",
        "--network=bridge",
        "--log-driver=json-file",
        "--read-only",
    }
    assert not any("s3cret" in argument for argument in arguments)


def test_an_entrypoint_override_takes_the_whole_command_with_it() -> None:
    # Arrange
    container = copy.deepcopy(CONTAINER)
    container["Config"]["Entrypoint"] = ["python3", "-m", "keel.cli"]

    # Act
    arguments = run_arguments(spec_from_inspect(container, IMAGE))

    # Assert
    assert "--entrypoint=python3" in arguments
    assert arguments[-8:] == [
        "keel:v2.0.0",
        "-m",
        "keel.cli",
        "run",
        "--mode",
        "paper",
        "--config",
        "/etc/keel/keel.yaml",
    ]


def test_settings_a_new_container_would_not_get_and_compose_management_are_reported() -> None:
    # Arrange
    container = copy.deepcopy(CONTAINER)
    container["HostConfig"].update(Privileged=True, Devices=[{"PathOnHost": "/dev/fuse"}], ShmSize=1 << 30)
    container["NetworkSettings"]["Networks"] = {"front": {}, "back": {}}
    container["Config"]["Labels"]["com.docker.compose.project"] = "deploy"

    # Act
    spec = spec_from_inspect(container, IMAGE)

    # Assert
    assert spec.unsupported == (
        "HostConfig.Devices",
        "HostConfig.Privileged",
        "HostConfig.ShmSize",
        "NetworkSettings.Networks (back, front: more than one network)",
    )
    assert spec.compose_project == "deploy"
