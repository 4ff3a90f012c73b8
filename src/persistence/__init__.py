"""Persistence: SQLAlchemy models, alembic migrations and repositories.

SQLite by default (one file, no server), PostgreSQL through psycopg 3 in
production. :class:`Database` owns the engine and migrations; the repositories
(:class:`Journal`, :class:`Snapshots`, :class:`Orders`, :class:`Positions`,
:class:`Settings`, :class:`AuditLog`) read and write keel's domain types.
:class:`BackupManager` backs an account up and restores it; :class:`AccountLock`
keeps one writer per account.
"""

from keel.persistence.backup import AccountInUseError, AccountLock, BackupError, BackupInfo, BackupManager
from keel.persistence.database import Database
from keel.persistence.repositories import AuditLog, Journal, Orders, Positions, Settings, Snapshots

__all__ = [
    "AccountInUseError",
    "AccountLock",
    "AuditLog",
    "BackupError",
    "BackupInfo",
    "BackupManager",
    "Database",
    "Journal",
    "Orders",
    "Positions",
    "Settings",
    "Snapshots",
]
