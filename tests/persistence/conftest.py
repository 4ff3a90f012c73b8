"""Every persistence test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from keel.persistence import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A freshly migrated database of each kind."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    else:
        server = request.getfixturevalue("postgres_url")
        name = f"keel_{uuid.uuid4().hex[:12]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        db = Database(server.rsplit("/", 1)[0] + f"/{name}")
    db.migrate()
    yield db
    db.dispose()
