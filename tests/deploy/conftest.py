"""Fixtures of the deploy tests: Docker, keel's image, a database of its own on the suite's PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from docker_harness import (
    ROOT,
    BuiltImage,
    DockerUnavailableError,
    ensure_base_image,
    ensure_daemon,
    ensure_keel_image,
)
from keel_container import CONFIG_FILE, KeelContainer


@pytest.fixture(scope="session")
def keel_image() -> BuiltImage:
    """keel's image built from the working tree on a debootstrapped base; reused while nothing changed.

    Writes its size and build time to ``runs/docker-image.json``.
    """
    try:
        ensure_daemon()
        base = ensure_base_image()
    except DockerUnavailableError as error:
        pytest.fail(f"Docker is needed for the deploy tests: {error}")
    image = ensure_keel_image(base)
    report = ROOT / "runs" / "docker-image.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text(
        json.dumps(
            {
                "image": image.tag,
                "base": image.base,
                "size_mb": round(image.size_bytes / 1e6, 1),
                "build_seconds": round(image.build_seconds, 1),
                "reused": image.reused,
            }
        )
        + "\n"
    )
    return image


@pytest.fixture
def keel_database(postgres_url: str) -> Iterator[str]:
    """A fresh database on the suite's PostgreSQL server; yield its SQLAlchemy URL."""
    name = f"keel_docker_{uuid.uuid4().hex[:12]}"
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(plain, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def keel_container(
    keel_image: BuiltImage, keel_database: str, redis_url: str, tmp_path: Path
) -> Iterator[KeelContainer]:
    """keel's image set up to run paper trading on a fresh database; its containers and volume removed after."""
    config_file = tmp_path / "keel.yaml"
    config_file.write_text(CONFIG_FILE)
    config_file.chmod(0o644)
    container = KeelContainer(keel_image, keel_database, redis_url, config_file)
    try:
        yield container
    finally:
        container.remove()
