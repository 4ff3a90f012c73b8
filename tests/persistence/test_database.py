"""The schema on plain PostgreSQL: TimescaleDB's hypertable only where the extension exists."""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text

from keel.persistence import Database


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
