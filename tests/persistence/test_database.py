"""The database: the schema on plain PostgreSQL (a hypertable only with TimescaleDB), a damaged file."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import create_engine, text

from keel.core.errors import OperatorActionRequiredError
from keel.core.log import configure_logging
from keel.persistence import Database


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    alembic_level = logging.getLogger("alembic").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(alembic_level)
    structlog.reset_defaults()


def test_plain_postgresql_migrates_to_plain_tables(postgres_url: str) -> None:
    # Arrange
    name = f"keel_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
        available = connection.execute(
            text("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
        ).scalar_one()
    admin.dispose()
    database = Database(postgres_url.rsplit("/", 1)[0] + f"/{name}")

    # Act
    database.migrate()
    database.migrate()
    with database.engine.connect() as connection:
        installed = connection.execute(text("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")).scalar()
    tables = database.table_names()
    database.dispose()

    # Assert
    assert available == 0
    assert installed == 0
    assert {"journal", "state_snapshots", "equity_snapshots", "orders", "fills"} <= set(tables)


def test_a_damaged_database_file_stops_with_what_to_do_and_is_left_as_it_was(tmp_path: Path) -> None:
    # Arrange: not a database at all (a crash mid-copy, a wrong file)
    path = tmp_path / "keel.db"
    path.write_bytes(b"garbage")

    # Act / Assert: it raised sqlalchemy's DatabaseError from a pragma, as a traceback
    with pytest.raises(
        OperatorActionRequiredError, match=r"cannot be read \(file is not a database\).*keel backup restore"
    ):
        Database(f"sqlite:///{path}").migrate()
    assert path.read_bytes() == b"garbage"


@pytest.mark.usefixtures("restore_logging")
def test_a_migration_logs_one_keel_event_with_the_revisions_and_none_of_alembics_internals(tmp_path: Path) -> None:
    # Arrange
    stream = io.StringIO()
    configure_logging(format="json", stream=stream)
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")

    # Act
    database.migrate()
    database.migrate()
    database.dispose()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]

    # Assert
    assert [line["logger"] for line in lines if str(line["logger"]).startswith("alembic")] == []
    (migrated,) = [line for line in lines if line["logger"] == "keel.persistence.database"]
    assert migrated["from_revision"] is None
    assert migrated["to_revision"] == "0001"
