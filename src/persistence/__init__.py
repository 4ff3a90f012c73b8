"""Persistence: SQLAlchemy models, alembic migrations and repositories.

SQLite by default (one file, no server), PostgreSQL through psycopg 3 in
production. :class:`Database` owns the engine and migrations; the repositories
(:class:`Journal`, :class:`Snapshots`, :class:`Orders`, :class:`Positions`,
:class:`Settings`, :class:`AuditLog`) read and write keel's domain types.
"""

from keel.persistence.database import Database
from keel.persistence.repositories import AuditLog, Journal, Orders, Positions, Settings, Snapshots

__all__ = ["AuditLog", "Database", "Journal", "Orders", "Positions", "Settings", "Snapshots"]
