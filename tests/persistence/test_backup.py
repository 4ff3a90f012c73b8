"""BackupManager on SQLite and PostgreSQL, around real paper sessions; AccountLock keeps one writer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keel.config import KeelConfig, load_config
from keel.core.errors import RetryLaterError
from keel.integration.paper import PaperSession, backup_manager
from keel.persistence import Database, Journal, Snapshots
from keel.persistence.backup import AccountInUseError, AccountLock, BackupError, BackupManager


def _url(database: Database) -> str:
    return database.url.render_as_string(hide_password=False)


def _config(database: Database, output_dir: Path) -> KeelConfig:
    """Two symbols, moving-average cross, equal weights, fast replay, many snapshots; state in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    config = load_config("paper", environ={})
    updates = {
        "data": config.data.model_copy(
            update={"symbols": ("BTCUSDT", "ETHUSDT"), "start": datetime(2025, 5, 5, tzinfo=UTC)}
        ),
        "strategy": config.strategy.model_copy(
            update={"name": "moving_average_cross", "fast_period": 3, "slow_period": 8, "warmup_bars": 0}
        ),
        "portfolio": config.portfolio.model_copy(update={"allocator": "equal_weight", "rebalance_threshold": 0.01}),
        "paper": config.paper.model_copy(update={"speed": 6000.0, "status_interval_seconds": 3600.0}),
        "run": config.run.model_copy(update={"output_dir": output_dir}),
        "persistence": config.persistence.model_copy(update={"url": _url(database), "snapshot_every": 20}),
    }
    return config.model_copy(update=updates)


def _trade(config: KeelConfig, run_dir: Path, bars: int) -> None:
    """Run a paper session (recovering the account when it exists) for about ``bars`` bars, then stop it."""

    async def scenario() -> None:
        session = PaperSession(config, run_dir)
        task = asyncio.create_task(session.run())
        while session.bars < bars and not task.done():
            await asyncio.sleep(0.01)
        session.request_stop("test")
        await task

    asyncio.run(scenario())


def _manager(config: KeelConfig, root: Path) -> BackupManager:
    output = Path(config.run.output_dir)
    return BackupManager(
        str(config.persistence.url),
        root / "backups",
        config=config.model_dump(mode="json", exclude={"secrets"}),
        venue_state_file=output / config.paper.venue_state_file,
    )


def _account_state(url: str) -> tuple[int, tuple[int, dict] | None]:
    database = Database(url)
    try:
        return Journal(database).last_sequence(), Snapshots(database).latest()
    finally:
        database.dispose()


def _sqlite_content(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def test_restore_returns_the_account_to_the_backup_point(database: Database, tmp_path: Path) -> None:
    # Arrange: trade, back up, trade on
    config = _config(database, tmp_path / "runs")
    manager = _manager(config, tmp_path)
    venue = Path(config.run.output_dir) / config.paper.venue_state_file
    _trade(config, tmp_path / "runs" / "first", bars=60)
    at_backup = _account_state(_url(database))
    info = manager.create()
    venue_at_backup = _sqlite_content(venue)
    _trade(config, tmp_path / "runs" / "second", bars=60)
    after_trading_on = _account_state(_url(database))

    # Act
    verified = manager.verify(info.name)
    restored = manager.restore(info.name)

    # Assert
    assert after_trading_on[0] > at_backup[0]
    assert verified.name == restored.name == info.name
    assert info.journal_sequence == at_backup[0]
    assert _account_state(_url(database)) == at_backup
    assert json.loads((info.path / "snapshot.json").read_text())["journal_sequence"] == at_backup[1][0]
    assert _sqlite_content(venue) == venue_at_backup == _sqlite_content(info.path / "paper-venue.sqlite")
    assert set(info.files) == {
        "database.sqlite" if database.backend == "sqlite" else "database.dump",
        "paper-venue.sqlite",
        "snapshot.json",
        "config.json",
    }


def test_a_corrupted_backup_is_refused_and_nothing_is_overwritten(database: Database, tmp_path: Path) -> None:
    # Arrange
    config = _config(database, tmp_path / "runs")
    manager = _manager(config, tmp_path)
    _trade(config, tmp_path / "runs" / "first", bars=40)
    info = manager.create()
    _trade(config, tmp_path / "runs" / "second", bars=40)
    before = _account_state(_url(database))
    dump = info.path / ("database.sqlite" if database.backend == "sqlite" else "database.dump")
    corrupted = bytearray(dump.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF
    dump.write_bytes(bytes(corrupted))

    # Act
    with pytest.raises(BackupError, match=f"{dump.name} does not match its SHA-256") as verify_error:
        manager.verify(info.name)
    with pytest.raises(BackupError, match="corrupted") as restore_error:
        manager.restore(info.name)

    # Assert
    assert info.name in str(verify_error.value) and info.name in str(restore_error.value)
    assert _account_state(_url(database)) == before


def test_a_backup_missing_a_file_is_refused(database: Database, tmp_path: Path) -> None:
    # Arrange
    config = _config(database, tmp_path / "runs")
    manager = _manager(config, tmp_path)
    _trade(config, tmp_path / "runs" / "first", bars=20)
    info = manager.create()
    (info.path / "snapshot.json").unlink()

    # Act / Assert
    with pytest.raises(BackupError, match=r"snapshot\.json is missing"):
        manager.restore(info.name)


class _RecordingConnection:
    """A PostgreSQL connection that notes what is done with it, in order."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.done: list[str] = []

    def execute(self, query: str, params: Any = None) -> Any:
        self.done.append(query)
        return self.connection.execute(query, params)

    def close(self) -> None:
        self.done.append("close")
        self.connection.close()


def test_a_backup_before_any_run_says_there_is_no_database_yet(tmp_path: Path) -> None:
    # Arrange: a fresh folder, no run has created the account's database
    missing = tmp_path / "runs" / "keel.db"
    manager = BackupManager(f"sqlite:///{missing}", tmp_path / "backups")

    # Act
    with pytest.raises(BackupError) as caught:
        manager.create()

    # Assert: named, and neither a backup nor a half-written one is left behind
    assert str(missing) in str(caught.value) and "nothing to back up" in str(caught.value)
    assert list((tmp_path / "backups").iterdir()) == [] and not missing.exists()


def test_a_backup_name_that_is_not_there_says_so_and_where_it_looked(tmp_path: Path) -> None:
    # Arrange
    manager = BackupManager(f"sqlite:///{tmp_path / 'keel.db'}", tmp_path / "backups")

    # Act
    with pytest.raises(BackupError) as caught:
        manager.read("keel-2025")

    # Assert
    assert (
        str(caught.value)
        == f"no backup named keel-2025 in {tmp_path / 'backups'}: keel backup list shows the backups there"
    )


def test_a_released_account_lock_can_be_taken_again_at_once(database: Database) -> None:
    # Arrange: a run stops and the next (a restart, a restore) starts straight away
    lock = AccountLock(database).acquire()
    recording = None
    if database.backend != "sqlite":
        recording = lock._connection = _RecordingConnection(lock._connection)

    # Act
    lock.release()
    again = AccountLock(database).acquire()
    again.release()

    # Assert: PostgreSQL frees a closed session's lock only once its backend has exited, after the close
    # returned: the lock is given back first, so a lock taken at once is never refused
    if recording is not None:
        assert recording.done == ["SELECT pg_advisory_unlock(%s)", "close"]


def test_an_account_lock_on_a_server_out_of_reach_says_so_without_the_password() -> None:
    # Arrange: nothing listens on port 1
    database = Database("postgresql+psycopg://keel:s3cret@127.0.0.1:1/keel")

    # Act / Assert: it raised psycopg's OperationalError, as a traceback at the start of a run
    with pytest.raises(
        RetryLaterError, match=r"cannot reach the database postgresql\+psycopg://keel:\*\*\*@"
    ) as raised:
        AccountLock(database).acquire()
    assert "s3cret" not in str(raised.value)


def test_restore_is_refused_while_a_run_holds_the_account(database: Database, tmp_path: Path) -> None:
    # Arrange
    config = _config(database, tmp_path / "runs")
    manager = _manager(config, tmp_path)
    _trade(config, tmp_path / "runs" / "first", bars=20)
    info = manager.create()
    holder = PaperSession(config, tmp_path / "runs" / "holder")

    # Act
    with pytest.raises(AccountInUseError):
        manager.restore(info.name)
    with pytest.raises(AccountInUseError):
        PaperSession(config, tmp_path / "runs" / "second-writer")
    holder.database.dispose()
    holder.account_lock.release()
    restored = manager.restore(info.name)

    # Assert
    assert restored.name == info.name


def test_the_account_lock_has_one_holder_at_a_time(database: Database) -> None:
    # Arrange
    first = AccountLock(Database(_url(database))).acquire()

    # Act
    with pytest.raises(AccountInUseError):
        AccountLock(Database(_url(database))).acquire()
    first.release()
    second = AccountLock(Database(_url(database))).acquire()

    # Assert
    assert second.held and not first.held
    second.release()


def test_retention_keeps_the_newest_by_count_and_age(database: Database, tmp_path: Path) -> None:
    # Arrange
    manager = BackupManager(_url(database), tmp_path / "backups", config={"run": {"mode": "paper"}})
    start = datetime(2026, 1, 1, tzinfo=UTC)
    names = [manager.create(now=start + timedelta(days=day)).name for day in range(5)]

    # Act
    by_count = manager.prune(keep=3)
    by_age = manager.prune(max_age=timedelta(days=2.5), now=start + timedelta(days=5))
    only_newest = manager.prune(keep=1, max_age=timedelta(0), now=start + timedelta(days=30))

    # Assert
    assert by_count == [names[1], names[0]]
    assert by_age == [names[2]]
    assert only_newest == [names[3]]
    assert [info.name for info in manager.list()] == [names[4]]


def test_the_stored_configuration_holds_no_secrets(database: Database, tmp_path: Path) -> None:
    # Arrange
    config = load_config("paper", environ={"KEEL_API_TOKEN": "backup-secret-token-93b1"})
    manager = BackupManager(
        _url(database), tmp_path / "backups", config=config.model_dump(mode="json", exclude={"secrets"})
    )

    # Act
    info = manager.create()

    # Assert
    stored = "".join(path.read_text(errors="replace") for path in info.path.iterdir())
    assert "backup-secret-token-93b1" not in stored
    assert json.loads((info.path / "config.json").read_text())["run"]["mode"] == "paper"


def test_a_run_takes_scheduled_backups_and_keeps_the_newest(database: Database, tmp_path: Path) -> None:
    # Arrange
    config = _config(database, tmp_path / "runs")
    persistence = config.persistence.model_copy(update={"backup_interval_hours": 0.3 / 3600, "backup_keep": 2})
    config = config.model_copy(update={"persistence": persistence})

    async def scenario() -> list[str]:
        session = PaperSession(config, tmp_path / "runs" / "scheduled")
        task = asyncio.create_task(session.run())
        while len(session.backups) < 3 and not task.done():
            await asyncio.sleep(0.05)
        session.request_stop("test")
        await task
        return session.backups

    # Act
    taken = asyncio.run(scenario())
    manager = backup_manager(config)
    kept = [info.name for info in manager.list()]

    # Assert
    assert len(taken) >= 3
    assert kept == taken[-2:]
    assert [manager.verify(name).name for name in kept] == kept
