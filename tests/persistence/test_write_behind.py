"""The journal's write-behind: time and count bounds, the spill file, idempotent writes, a database outage.

The writer runs without its thread (driven by ``pump`` on a simulated time
source) where the timing is under test, and with its thread against a real
PostgreSQL server that is stopped and started under it.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, text

from keel.core.messages import Message, OrderSubmitted, SubmitOrder
from keel.core.orders import OrderSide, OrderType
from keel.persistence import Database, Journal, Snapshots
from keel.persistence.write_behind import JournalWriter, SpillFile, copy_spill


class FakeTime:
    """A monotonic time source that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@functools.cache
def submitted(n: int) -> OrderSubmitted:
    return OrderSubmitted(
        client_order_id=f"keel-{n}",
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        quantity=Decimal("0.002"),
        ts_event=n,
        ts_init=n,
    )


@functools.cache
def order(n: int) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=f"keel-{n}", symbol="BTCUSDT", side=OrderSide.BUY, order_type=OrderType.MARKET,
        quantity=Decimal("0.002"), ts_event=n, ts_init=n,
    )  # fmt: skip


def journaled(journal: Journal) -> list[tuple[int, Message]]:
    return list(journal.read())


def poll_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll a condition of a real server and thread (no simulated time there) until it holds or time is up."""
    deadline = time.monotonic() + seconds
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.02)
    return True


def watched(writer: JournalWriter, changes: list[str | None]) -> bool:
    """Let the writer look for a hanging call (the state manager does so every quarter second); any report?"""
    writer.watch()
    return bool(changes)


def fresh_database(server_url: str) -> Database:
    name = f"keel_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    database = Database(server_url.rsplit("/", 1)[0] + f"/{name}")
    database.migrate()
    return database


def test_a_lone_event_is_written_once_the_flush_interval_has_passed(database: Database, tmp_path: Path) -> None:
    # Arrange
    clock = FakeTime()
    journal = Journal(database)
    writer = JournalWriter(
        journal, SpillFile(tmp_path / "spill.jsonl"), first_sequence=1, flush_every=100, flush_interval=1.0,
        monotonic=clock,
    )  # fmt: skip
    writer.add([submitted(1)])

    # Act
    clock.now = 0.9
    writer.pump()
    before_interval = journal.last_sequence()
    clock.now = 1.0
    writer.pump()

    # Assert
    assert before_interval == 0
    assert journaled(journal) == [(1, submitted(1))]


def test_a_full_batch_is_written_at_once(database: Database, tmp_path: Path) -> None:
    # Arrange
    journal = Journal(database)
    writer = JournalWriter(
        journal, SpillFile(tmp_path / "spill.jsonl"), first_sequence=1, flush_every=3, monotonic=FakeTime()
    )

    # Act
    writer.add([submitted(1), submitted(2)])
    writer.pump()
    after_two = journal.last_sequence()
    writer.add([submitted(3)])
    writer.pump()

    # Assert
    assert after_two == 0
    assert [sequence for sequence, _ in journaled(journal)] == [1, 2, 3]


def test_entries_written_twice_are_stored_once(database: Database, tmp_path: Path) -> None:
    # Arrange: a batch the database took, also in the spill file (a commit whose acknowledgement was lost)
    journal = Journal(database)
    entries = [(1, submitted(1)), (2, order(2))]
    journal.write(entries)
    spill = SpillFile(tmp_path / "spill.jsonl")
    spill.append([*entries, (3, submitted(3))])

    # Act
    copied = copy_spill(journal, spill)
    journal.write(entries)

    # Assert
    assert copied == 3
    assert journaled(journal) == [*entries, (3, submitted(3))]
    assert spill.is_empty()


def test_appends_after_numbered_entries_continue_their_sequence(database: Database) -> None:
    # Arrange
    journal = Journal(database)
    journal.write([(1, submitted(1)), (2, submitted(2))])

    # Act
    last = journal.append([submitted(3)])

    # Assert
    assert last == 3
    assert [sequence for sequence, _ in journaled(journal)] == [1, 2, 3]


def test_a_spill_entry_cut_short_by_a_crash_is_dropped_and_later_entries_are_kept(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "spill" / "journal.jsonl"
    SpillFile(path).append([(1, submitted(1))])
    with path.open("ab") as file:
        file.write(b'2\t{"type":"OrderSub')

    # Act
    spill = SpillFile(path)
    entries, size = spill.read()
    spill.append([(3, submitted(3))])
    spill.discard(size)

    # Assert
    assert entries == [(1, submitted(1))]
    assert spill.read()[0] == [(3, submitted(3))]


def test_past_its_capacity_the_buffer_goes_to_the_spill_file_and_nothing_is_lost(
    database: Database, tmp_path: Path
) -> None:
    # Arrange
    journal = Journal(database)
    spill = SpillFile(tmp_path / "spill.jsonl")
    writer = JournalWriter(journal, spill, first_sequence=1, flush_every=2, capacity=2, monotonic=FakeTime())

    # Act
    writer.add([submitted(1)])
    writer.add([submitted(2)])
    in_memory = writer.backlog
    spilled = [sequence for sequence, _ in spill.read()[0]]
    writer.pump()

    # Assert
    assert (in_memory, spilled) == (0, [1, 2])
    assert [sequence for sequence, _ in journaled(journal)] == [1, 2]
    assert spill.is_empty()


def test_database_down_spills_the_journal_and_copies_it_back_once_and_in_order(postgres_server, tmp_path: Path) -> None:
    # Arrange: the writer's thread on a PostgreSQL server that is stopped (as if it crashed) under it
    database = fresh_database(postgres_server.url)
    journal, snapshots = Journal(database), Snapshots(database)
    spill = SpillFile(tmp_path / "spill.jsonl")
    changes: list[str | None] = []
    changed = threading.Event()

    def on_availability(reason: str | None) -> None:
        changes.append(reason)
        changed.set()

    writer = JournalWriter(
        journal, spill, first_sequence=1, snapshots=snapshots, flush_every=5, flush_interval=0.2, retry_interval=0.1,
        on_availability=on_availability,
    )  # fmt: skip
    writer.start()
    writer.add([submitted(n) for n in range(1, 4)])
    assert writer.flush(timeout=10)
    postgres_server.stop("immediate")

    # Act: the outage is noticed without any write; an order written ahead during it goes to the spill file
    stopped_at = time.monotonic()
    assert changed.wait(timeout=10)
    noticed_after = time.monotonic() - stopped_at
    changed.clear()
    writer.add([submitted(4)])
    started = time.monotonic()
    writer.add_durably([order(5)])
    write_ahead_seconds = time.monotonic() - started
    in_spill = [sequence for sequence, _ in spill.read()[0]]
    writer.add_snapshot(5, 5, {"during": "outage"})
    writer.add([submitted(6)])
    postgres_server.start()
    assert changed.wait(timeout=20)
    assert writer.flush(timeout=10)
    writer.close()

    # Assert
    assert noticed_after < 1.0
    assert write_ahead_seconds < 0.5
    assert in_spill == [4, 5]
    assert changes[0] is not None and changes[0].startswith("database unreachable")
    assert changes[1:] == [None]
    entries = journaled(journal)
    assert [sequence for sequence, _ in entries] == [1, 2, 3, 4, 5, 6]
    assert [m for _, m in entries] == [submitted(1), submitted(2), submitted(3), submitted(4), order(5), submitted(6)]
    assert spill.is_empty()
    assert writer.snapshots_skipped == 1 and snapshots.latest() is None
    database.dispose()


def test_database_down_by_hanging_is_noticed_and_write_aheads_stop_waiting_for_it(
    postgres_server, tmp_path: Path
) -> None:
    # Arrange: the server's processes are frozen, so its connections hang instead of failing
    database = fresh_database(postgres_server.url)
    journal = Journal(database)
    changes: list[str | None] = []
    writer = JournalWriter(
        journal, SpillFile(tmp_path / "spill.jsonl"), first_sequence=1, flush_interval=0.2, retry_interval=0.1,
        durable_timeout=0.3, stall_timeout=1.0, on_availability=changes.append,
    )  # fmt: skip
    writer.start()
    writer.add_durably([order(1)])
    postgres_server.pause()
    try:
        # Act
        paused_at = time.monotonic()
        writer.add_durably([order(2)])
        first_wait = time.monotonic() - paused_at
        started = time.monotonic()
        writer.add_durably([order(3)])
        second_wait = time.monotonic() - started
        assert poll_until(lambda: watched(writer, changes), 10)
        noticed_after = time.monotonic() - paused_at
    finally:
        postgres_server.resume()
    assert poll_until(lambda: None in changes, 20)
    assert writer.flush(timeout=10)
    writer.close()

    # Assert: one bounded wait, none after it; the outage reported after the stall timeout; nothing lost or doubled
    assert first_wait < 0.6 and second_wait < 0.1
    assert 1.0 <= noticed_after < 2.0
    assert changes[0] is not None and "has not answered" in changes[0] and changes[1:] == [None]
    assert journaled(journal) == [(1, order(1)), (2, order(2)), (3, order(3))]
    database.dispose()
