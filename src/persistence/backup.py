"""Backups of keel's state: create, list, verify, restore, with retention.

A backup is a folder ``<backup_dir>/<name>/`` holding:

- the database: ``database.sqlite`` (SQLite's online backup API, consistent
  while a run writes) or ``database.dump`` (``pg_dump --format=custom``);
- ``paper-venue.sqlite``, the paper venue's own state, when there is one (a
  restored account must match its venue, or reconciliation halts trading);
- ``snapshot.json``, the newest state snapshot (journal sequence and state);
- ``config.json``, the configuration the run used, without secrets;
- ``manifest.json``: when, from which backend, and the SHA-256 and size of
  every other file.

`BackupManager.verify` re-checks every checksum and restores the database
into a scratch database to prove it loads. `BackupManager.restore` verifies
the checksums first and refuses while a run holds the account (see
`AccountLock`), so a corrupted backup or a running system is refused before
anything is overwritten.

`AccountLock` is the single-writer guard: an exclusive ``flock`` on
``<database>.lock`` for SQLite, a session-level advisory lock for PostgreSQL,
held for as long as a run (or a restore) works on the account and released by
the operating system or the server if the process dies.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import psycopg
from sqlalchemy.engine import URL, make_url

from keel.core.errors import KeelError, OperatorActionRequiredError, RetryLaterError
from keel.persistence.database import Database
from keel.persistence.repositories import Journal, Snapshots

__all__ = [
    "AccountInUseError",
    "AccountLock",
    "BackupError",
    "BackupInfo",
    "BackupManager",
]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# pg_try_advisory_lock key of "this database's trading account" (any fixed 64-bit number).
ADVISORY_LOCK_KEY = 0x6B65656C  # "keel"


class BackupError(KeelError):
    """A backup is missing, incomplete or corrupted, or a backup tool failed."""


class AccountInUseError(OperatorActionRequiredError):
    """Another process (a run, a restore) holds the account."""


@dataclass(frozen=True)
class BackupInfo:
    """One backup: its name, folder, creation time, backend, and the files of its manifest."""

    name: str
    path: Path
    created_at: datetime
    backend: str
    journal_sequence: int
    files: Mapping[str, Mapping[str, Any]]


class AccountLock:
    """The one-writer lock on a database's trading account.

    Parameters
    ----------
    database
        The account's database.

    Raises
    ------
    AccountInUseError
        From `acquire` when another process holds the lock.
    RetryLaterError
        From `acquire` when the PostgreSQL server cannot be reached.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._file: TextIO | None = None
        self._connection: psycopg.Connection[Any] | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._file is not None or self._connection is not None

    def acquire(self) -> AccountLock:
        """Take the lock without waiting; return self."""
        if self.held:
            return self
        if self._database.backend == "sqlite":
            self._acquire_file()
        else:
            self._acquire_advisory()
        return self

    def release(self) -> None:
        """Give the lock back (a no-op when not held)."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            # Unlock before closing: the server drops a closed session's locks only when its backend has
            # exited, after close() returns, and a lock taken at once (a restart, a restore) would be refused.
            # (On a broken connection the backend is gone or going, and the lock with it.)
            with contextlib.suppress(psycopg.Error):
                self._connection.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
            self._connection.close()
            self._connection = None

    def __enter__(self) -> AccountLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _acquire_file(self) -> None:
        path = Path(f"{self._database.url.database}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - held open for as long as the lock is
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AccountInUseError(f"{path} is locked: a keel run (or a restore) holds this account") from None
        self._file = handle

    def _acquire_advisory(self) -> None:
        try:
            connection = psycopg.connect(
                _libpq_url(self._database.url), autocommit=True, password=_password(self._database.url)
            )
        except psycopg.OperationalError as error:
            raise RetryLaterError(
                f"cannot reach the database {self._database.url.render_as_string(hide_password=True)} "
                f"({str(error).splitlines()[0]}): start its server, or point persistence.url at one that runs"
            ) from None
        locked = connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
        if not (locked and locked[0]):
            connection.close()
            raise AccountInUseError(
                f"database {self._database.url.database!r} is locked: a keel run (or a restore) holds this account"
            )
        self._connection = connection


class BackupManager:
    """Create, list, verify, restore and prune backups of one account.

    Parameters
    ----------
    database_url
        The account's SQLAlchemy URL (SQLite or PostgreSQL).
    backup_dir
        Folder holding one sub-folder per backup.
    config
        The configuration to store with each backup (no secrets: the caller
        leaves them out).
    venue_state_file
        The paper venue's state file, backed up and restored with the
        database when it exists; None for none.
    """

    def __init__(
        self,
        database_url: str,
        backup_dir: Path,
        config: Mapping[str, Any] | None = None,
        venue_state_file: Path | None = None,
    ) -> None:
        self.database_url = database_url
        self.backup_dir = Path(backup_dir)
        self.config = dict(config or {})
        self.venue_state_file = venue_state_file

    # --- create -----------------------------------------------------------------------

    def create(self, now: datetime | None = None) -> BackupInfo:
        """Write a new backup; return it. A half-written backup is removed, never listed."""
        now = datetime.now(UTC) if now is None else now
        name = self._new_name(now)
        final = self.backup_dir / name
        partial = self.backup_dir / f".{name}.partial"
        partial.mkdir(parents=True)
        database = Database(self.database_url)
        try:
            files = [self._dump_database(database, partial)]
            if self.venue_state_file is not None and Path(self.venue_state_file).is_file():
                _sqlite_copy(Path(self.venue_state_file), partial / "paper-venue.sqlite")
                files.append("paper-venue.sqlite")
            sequence = self._write_snapshot(database, partial / "snapshot.json")
            (partial / "config.json").write_text(json.dumps(self.config, sort_keys=True, indent=2, default=str))
            files += ["snapshot.json", "config.json"]
            manifest = {
                "format": FORMAT_VERSION,
                "name": name,
                "created_at": now.isoformat(),
                "backend": database.backend,
                "journal_sequence": sequence,
                "files": {file: _describe(partial / file) for file in files},
            }
            (partial / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=2))
            partial.rename(final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            database.dispose()
        return self.read(name)

    def _new_name(self, now: datetime) -> str:
        base = f"keel-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
        name, counter = base, 1
        while (self.backup_dir / name).exists():
            counter += 1
            name = f"{base}-{counter}"
        return name

    def _dump_database(self, database: Database, folder: Path) -> str:
        if database.backend == "sqlite":
            source = Path(str(database.url.database))
            if not source.is_file():
                raise BackupError(f"no database at {source}: nothing to back up yet (a paper or live run creates it)")
            _sqlite_copy(source, folder / "database.sqlite")
            return "database.sqlite"
        target = folder / "database.dump"
        _run_tool(
            [
                "pg_dump",
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--file={target}",
                _libpq_url(database.url),
            ],
            database.url,
        )
        return "database.dump"

    @staticmethod
    def _write_snapshot(database: Database, path: Path) -> int:
        latest = Snapshots(database).latest()
        sequence = Journal(database).last_sequence()
        body = (
            {"journal_sequence": None, "state": None}
            if latest is None
            else {
                "journal_sequence": latest[0],
                "state": latest[1],
            }
        )
        path.write_text(json.dumps(body, sort_keys=True))
        return sequence

    # --- list and read ----------------------------------------------------------------

    def list(self) -> list[BackupInfo]:
        """Return the complete backups, oldest first (unreadable folders are skipped; `verify` names them)."""
        if not self.backup_dir.is_dir():
            return []
        found = []
        for folder in sorted(self.backup_dir.iterdir()):
            if folder.is_dir() and not folder.name.startswith("."):
                try:
                    found.append(self.read(folder.name))
                except BackupError:
                    continue
        return sorted(found, key=lambda info: (info.created_at, info.name))

    def read(self, name: str) -> BackupInfo:
        """Return the backup ``name`` as its manifest describes it.

        Raises
        ------
        BackupError
            If the folder or its manifest is missing or unreadable.
        """
        folder = self.backup_dir / name
        manifest_path = folder / MANIFEST
        if not folder.is_dir():
            raise BackupError(f"no backup named {name} in {self.backup_dir}: keel backup list shows the backups there")
        if not manifest_path.is_file():
            raise BackupError(f"{folder}: no {MANIFEST}; not a complete keel backup")
        try:
            manifest = json.loads(manifest_path.read_text())
            return BackupInfo(
                name=name,
                path=folder,
                created_at=datetime.fromisoformat(manifest["created_at"]),
                backend=str(manifest["backend"]),
                journal_sequence=int(manifest["journal_sequence"]),
                files=dict(manifest["files"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise BackupError(f"{manifest_path}: unreadable manifest ({error})") from None

    # --- verify -----------------------------------------------------------------------

    def verify(self, name: str) -> BackupInfo:
        """Re-check every checksum and test-restore the database into a scratch database.

        Raises
        ------
        BackupError
            Naming the first file that is missing, changed or does not load.
        """
        info = self._check_files(name)
        database_file = info.path / _database_file(info)
        if info.backend == "sqlite":
            _check_sqlite(database_file)
        else:
            self._test_restore_postgresql(database_file)
        venue = info.path / "paper-venue.sqlite"
        if "paper-venue.sqlite" in info.files:
            _check_sqlite(venue)
        return info

    def _check_files(self, name: str) -> BackupInfo:
        info = self.read(name)
        for file, described in info.files.items():
            path = info.path / file
            if not path.is_file():
                raise BackupError(f"backup {name}: {file} is missing")
            if _sha256(path) != described["sha256"]:
                raise BackupError(f"backup {name}: {file} does not match its SHA-256 in {MANIFEST} (corrupted)")
        return info

    def _test_restore_postgresql(self, dump: Path) -> None:
        url = make_url(self.database_url)
        scratch = f"keel_verify_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_libpq_url(url), autocommit=True, password=_password(url)) as admin:
            admin.execute(f'CREATE DATABASE "{scratch}"')
        try:
            target = url.set(database=scratch)
            _run_tool(
                [
                    "pg_restore",
                    "--no-owner",
                    "--no-privileges",
                    "--exit-on-error",
                    "--single-transaction",
                    f"--dbname={_libpq_url(target)}",
                    str(dump),
                ],
                target,
            )
            scratch_database = Database(target.render_as_string(hide_password=False))
            try:
                Journal(scratch_database).last_sequence()
            finally:
                scratch_database.dispose()
        finally:
            with psycopg.connect(_libpq_url(url), autocommit=True, password=_password(url)) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')

    # --- restore ----------------------------------------------------------------------

    def restore(self, name: str) -> BackupInfo:
        """Replace the account's database (and paper venue) with the backup ``name``.

        Raises
        ------
        BackupError
            If the backup is corrupted or from another backend; nothing is overwritten.
        AccountInUseError
            If a run holds the account; nothing is overwritten.
        """
        info = self._check_files(name)
        database = Database(self.database_url)
        try:
            if info.backend != database.backend:
                raise BackupError(f"backup {name} is of a {info.backend} database; this account is {database.backend}")
            with AccountLock(database):
                if info.backend == "sqlite":
                    _check_sqlite(info.path / "database.sqlite")
                    database.dispose()
                    _sqlite_copy(info.path / "database.sqlite", Path(str(database.url.database)))
                else:
                    _run_tool(
                        [
                            "pg_restore",
                            "--clean",
                            "--if-exists",
                            "--no-owner",
                            "--no-privileges",
                            "--exit-on-error",
                            "--single-transaction",
                            f"--dbname={_libpq_url(database.url)}",
                            str(info.path / "database.dump"),
                        ],
                        database.url,
                    )
                if "paper-venue.sqlite" in info.files and self.venue_state_file is not None:
                    _sqlite_copy(info.path / "paper-venue.sqlite", Path(self.venue_state_file))
        finally:
            database.dispose()
        return info

    # --- retention --------------------------------------------------------------------

    def prune(
        self, keep: int | None = None, max_age: timedelta | None = None, now: datetime | None = None
    ) -> builtins.list[str]:
        """Delete backups beyond the newest ``keep`` or older than ``max_age``; the newest always stays.

        Returns
        -------
        list of str
            The names deleted.
        """
        now = datetime.now(UTC) if now is None else now
        backups = self.list()
        removed = []
        for index, info in enumerate(reversed(backups)):
            too_many = keep is not None and index >= keep
            too_old = max_age is not None and now - info.created_at > max_age
            if index > 0 and (too_many or too_old):
                shutil.rmtree(info.path)
                removed.append(info.name)
        return removed


def _database_file(info: BackupInfo) -> str:
    return "database.sqlite" if info.backend == "sqlite" else "database.dump"


def _describe(path: Path) -> dict[str, Any]:
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy a SQLite database page by page with the online backup API (consistent while it is written)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as reader, sqlite3.connect(target) as writer:
        reader.backup(writer)
    reader.close()
    writer.close()


def _check_sqlite(path: Path) -> None:
    """Open a SQLite file read-only in a scratch copy and run its integrity check."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / path.name
        shutil.copyfile(path, copy)
        try:
            with sqlite3.connect(copy) as connection:
                (result,) = connection.execute("PRAGMA integrity_check").fetchone()
            connection.close()
        except sqlite3.DatabaseError as error:
            raise BackupError(f"{path}: not a loadable SQLite database ({error})") from None
        if result != "ok":
            raise BackupError(f"{path}: SQLite integrity check failed ({result})")


def _libpq_url(url: URL) -> str:
    """The URL libpq tools take: no SQLAlchemy driver, no password (that goes in PGPASSWORD)."""
    return url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)


def _password(url: URL) -> str | None:
    return None if url.password is None else str(url.password)


def _run_tool(command: list[str], url: URL) -> None:
    environment = dict(os.environ)
    if url.password is not None:
        environment["PGPASSWORD"] = str(url.password)
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} is not installed (Debian: postgresql-client)")
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if result.returncode != 0:
        raise BackupError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
