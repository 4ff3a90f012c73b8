"""The database: an engine for SQLite (default) or PostgreSQL (psycopg 3), migrated by alembic.

``sqlite:///runs/keel.db`` keeps everything in one file with no server;
``postgresql+psycopg://user@host:5432/keel`` is for production and for several
processes sharing one database. :meth:`Database.migrate` brings the schema to
the newest revision of ``keel/persistence/migrations`` (new revisions are
written by hand as ``versions/NNNN_name.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from keel.core.errors import ConfigurationError, OperatorActionRequiredError, RetryLaterError
from keel.core.log import get_logger

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

_log = get_logger(__name__)

CONNECT_TIMEOUT_SECONDS = 2
"""How long a PostgreSQL connection attempt may take before it counts as failed."""


class Database:
    """One database, its engine and its sessions.

    Parameters
    ----------
    url
        SQLAlchemy URL: ``sqlite:///path/to/file.db`` or ``postgresql+psycopg://...``.
        A SQLite file's folder is created when missing.
    """

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except Exception as error:
            raise ConfigurationError("database url", "persistence.url", f"not a database URL: {error}") from None
        self.backend = parsed.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise ConfigurationError("database url", "persistence.url", f"unsupported database {self.backend!r}")
        if self.backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.url = parsed
        self.engine: Engine = create_engine(parsed, future=True, **self._engine_options())
        if self.backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)})"

    def _engine_options(self) -> dict[str, Any]:
        if self.backend == "postgresql":
            # A server that is gone must fail a connection attempt quickly, not hang the writer.
            return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}}
        return {}

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration (a no-op when already there).

        Raises
        ------
        OperatorActionRequiredError
            If the database is there but cannot be read as one (a damaged or
            foreign file): the message says how to go on.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                before = MigrationContext.configure(connection).get_current_revision()
                command.upgrade(config, "head")
                after = MigrationContext.configure(connection).get_current_revision()
                if after != before:
                    _log.info("database schema migrated", from_revision=before, to_revision=after)
                if self.backend == "postgresql":
                    _use_timescale(connection)
        except OperationalError:
            raise  # a server out of reach or a locked file: not damage
        except DatabaseError as error:
            raise OperatorActionRequiredError(
                f"the database {self.url.render_as_string(hide_password=True)} cannot be read ({error.orig}): "
                "if it is damaged, restore a backup "
                "(keel backup list, keel backup restore NAME), or move it away (a SQLite file with its -wal and "
                "-shm files) to start a fresh account, losing its journal and audit log"
            ) from error

    def table_names(self) -> list[str]:
        """Return the tables that exist."""
        return sorted(inspect(self.engine).get_table_names())

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a session that commits on success and rolls back on error.

        Raises
        ------
        RetryLaterError
            If the database cannot be reached.
        """
        session = self._sessions()
        try:
            yield session
            session.commit()
        except OSError as error:
            session.rollback()
            raise RetryLaterError(f"database {self!r} unreachable: {error}") from error
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _use_timescale(connection: Connection) -> bool:
    """Make the equity curve a TimescaleDB hypertable when the server has the extension; return whether it did.

    On plain PostgreSQL nothing changes: the schema is the same tables either way.
    """
    available = connection.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).scalar_one_or_none()
    if available is None:
        return False
    connection.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    connection.execute(
        text(
            "SELECT create_hypertable('equity_snapshots', 'ts', chunk_time_interval => CAST(:interval AS BIGINT),"
            " if_not_exists => TRUE, migrate_data => TRUE)"
        ),
        {"interval": 86_400_000_000_000},
    )
    return True


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
