"""The journal's write-behind: the database kept out of the trading loop's critical path.

:class:`JournalWriter` takes journal entries numbered by the caller (their
journal sequence) and writes them to the database from a thread of its own,
in batches: when ``flush_every`` entries wait, when the oldest has waited
``flush_interval`` seconds, or at once when asked (control events). Writes
are idempotent by sequence (:meth:`~keel.persistence.Journal.write`), so an
entry is stored once however often it is retried.

When the database cannot take a batch, the batch goes to the spill file
(:class:`SpillFile`, local JSON lines synced to disk) and the writer reports
the outage. It then asks the database every ``retry_interval`` seconds; once
the database answers, it copies the spill file into the journal, empties it
and reports the database available again. While the database is available
and idle the writer asks it every ``retry_interval`` seconds too, so an
outage is noticed without waiting for a write.

:meth:`JournalWriter.add_durably` is an order's write-ahead: it returns only
once the entries (and everything numbered before them) are in the database
or in the spill file, waiting at most ``durable_timeout`` seconds for the
database before it writes the spill file itself (and not at all again until
the database took a write). A database that hangs instead of failing is an
outage too: :meth:`JournalWriter.watch` reports it once a call has gone
unanswered for ``stall_timeout`` seconds. The pending buffer is bounded:
past ``capacity`` entries it goes to the spill file at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from keel.core.messages import Message, decode_message, encode_message
from keel.persistence.repositories import Journal, Snapshots

_log = structlog.get_logger("keel.persistence")

Entry = tuple[int, Message]
"""One journal entry: its sequence and its message."""

AvailabilityCallback = Callable[[str | None], None]
"""Told (from the writer's thread) the reason the database became unreachable, or None when it is back."""


class SpillFile:
    """Journal entries the database could not take, in a local file synced on every write.

    One entry per line: the sequence, a tab, the message's JSON. A line cut
    short by a crash is dropped when the file is opened (its write never
    returned, so nothing relied on it).

    Parameters
    ----------
    path
        The file; its folder is created when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()

    def __repr__(self) -> str:
        return f"SpillFile({str(self.path)!r})"

    def append(self, entries: Sequence[Entry]) -> None:
        """Add entries and sync them to disk."""
        if not entries:
            return
        lines = b"".join(b"%d\t%s\n" % (sequence, encode_message(message)) for sequence, message in entries)
        with self._lock, self.path.open("ab") as file:
            file.write(lines)
            file.flush()
            os.fsync(file.fileno())

    def read(self) -> tuple[list[Entry], int]:
        """Return the stored entries and how many bytes of the file they take."""
        with self._lock:
            data = self.path.read_bytes() if self.path.exists() else b""
        end = data.rfind(b"\n") + 1
        entries = []
        for line in data[:end].splitlines():
            sequence, _, payload = line.partition(b"\t")
            entries.append((int(sequence), decode_message(payload)))
        return entries, end

    def discard(self, size: int) -> None:
        """Drop the first ``size`` bytes (entries copied to the database), keeping what was added since."""
        with self._lock:
            rest = self.path.read_bytes()[size:] if self.path.exists() else b""
            replacement = self.path.with_name(self.path.name + ".tmp")
            with replacement.open("wb") as file:
                file.write(rest)
                file.flush()
                os.fsync(file.fileno())
            os.replace(replacement, self.path)

    def is_empty(self) -> bool:
        """Return whether no entry waits in the file."""
        with self._lock:
            return not self.path.exists() or self.path.stat().st_size == 0

    def last_sequence(self) -> int:
        """Return the newest sequence in the file, 0 when it is empty."""
        entries, _ = self.read()
        return max((sequence for sequence, _ in entries), default=0)

    def _drop_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            _log.warning("spill file ended in a partial entry: dropped", path=str(self.path), bytes=len(data) - end)
            with self.path.open("r+b") as file:
                file.truncate(end)
                os.fsync(file.fileno())


def copy_spill(journal: Journal, spill: SpillFile) -> int:
    """Copy the spill file's entries into the journal and empty it; return how many there were.

    Raises whatever the database raises (the file is then left as it was).
    """
    entries, size = spill.read()
    if size:
        journal.write(entries)
        spill.discard(size)
    return len(entries)


class JournalWriter:
    """Write journal entries to the database off the trading loop, with a spill file for outages.

    Parameters
    ----------
    journal
        Where entries are written.
    spill
        Where entries go while the database cannot take them.
    first_sequence
        The sequence of the first entry added.
    snapshots
        Where :meth:`add_snapshot` snapshots go (None: none are taken).
    flush_every, flush_interval
        A batch is written when this many entries wait, or when the oldest has
        waited this many seconds.
    capacity
        Entries kept in memory; past it they go to the spill file at once.
    retry_interval
        Seconds between two questions to the database (outage or idle).
    durable_timeout
        Seconds :meth:`add_durably` waits for the database before it writes the spill file itself.
    stall_timeout
        Seconds a database call may go unanswered before :meth:`watch` reports an outage.
    on_availability
        Called from the writer's thread with the reason of an outage, and with None when it ends.
    monotonic
        The time source (seconds) of every interval above.
    """

    def __init__(
        self,
        journal: Journal,
        spill: SpillFile,
        *,
        first_sequence: int,
        snapshots: Snapshots | None = None,
        flush_every: int = 100,
        flush_interval: float = 1.0,
        capacity: int = 10_000,
        retry_interval: float = 0.5,
        durable_timeout: float = 0.5,
        stall_timeout: float = 1.0,
        on_availability: AvailabilityCallback | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush_every < 1 or capacity < flush_every:
            raise ValueError(f"need 1 <= flush_every <= capacity, got {flush_every} and {capacity}")
        if min(flush_interval, retry_interval, durable_timeout, stall_timeout) <= 0:
            raise ValueError("flush_interval, retry_interval, durable_timeout and stall_timeout must be positive")
        self.journal = journal
        self.spill = spill
        self.snapshots = snapshots
        self.flush_every = flush_every
        self.flush_interval = flush_interval
        self.capacity = capacity
        self.retry_interval = retry_interval
        self.durable_timeout = durable_timeout
        self.stall_timeout = stall_timeout
        self.available = True
        self.outage: str | None = None
        self.written = 0
        self.spilled = 0
        self.copied = 0
        self.snapshots_written = 0
        self.snapshots_skipped = 0
        self._on_availability = on_availability
        self._monotonic = monotonic
        self._wake = threading.Condition()
        self._next_sequence = first_sequence
        self._pending: list[Entry] = []
        self._in_flight: list[Entry] = []
        self._snapshot_jobs: list[tuple[int, int, Mapping[str, Any]]] = []
        self._oldest_at: float | None = None
        self._urgent = False
        self._durable_through = first_sequence - 1
        self._next_check = monotonic() + retry_interval
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._busy_since: float | None = None
        self._stalled = False

    @property
    def last_sequence(self) -> int:
        """Return the sequence of the newest entry added (first_sequence - 1 before any)."""
        return self._next_sequence - 1

    @property
    def backlog(self) -> int:
        """Return how many entries wait for a write (in memory)."""
        with self._wake:
            return len(self._pending) + len(self._in_flight)

    # --- producers (the trading loop) ---------------------------------------------------------------

    def add(self, messages: Sequence[Message], *, urgent: bool = False) -> int:
        """Number and queue messages; return the last one's sequence.

        ``urgent`` writes them without waiting for the batch to fill.
        """
        overflow: list[Entry] = []
        with self._wake:
            last = self._number(messages)
            if len(self._pending) >= self.capacity:
                overflow, self._pending, self._oldest_at = self._pending, [], None
            elif urgent or len(self._pending) >= self.flush_every:
                self._urgent = True
                self._wake.notify_all()
        if overflow:
            self._spill_here(overflow)
        return last

    def add_durably(self, messages: Sequence[Message]) -> int:
        """Number messages and return once they and everything before them are in the database or the spill file.

        Raises
        ------
        OSError
            If neither the database nor the spill file could take them.
        """
        with self._wake:
            last = self._number(messages)
            threaded = self._thread is not None
            self._urgent = True
            if threaded and self.available and not self._stalled:
                self._wake.notify_all()
                answered = self._wake.wait_for(lambda: self._durable_through >= last, timeout=self.durable_timeout)
                self._stalled = not answered
        if not threaded:
            self.pump()
        with self._wake:
            if self._durable_through >= last:
                return last
            unsafe = [*self._in_flight, *self._pending]
            self._pending, self._oldest_at = [], None
        self._spill_here(unsafe)
        return last

    def watch(self) -> None:
        """Report an outage when a database call has gone unanswered for ``stall_timeout`` seconds."""
        since = self._busy_since
        if since is not None and self.available and self._monotonic() - since >= self.stall_timeout:
            self._lost(TimeoutError(f"the database has not answered for {self.stall_timeout:g} s"))

    def add_snapshot(self, ts: int, journal_sequence: int, state: Mapping[str, Any]) -> None:
        """Store a snapshot after the entries up to ``journal_sequence`` (skipped while the database is out)."""
        with self._wake:
            self._snapshot_jobs.append((ts, journal_sequence, state))
            self._urgent = True
            self._wake.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every entry added so far is durable and queued snapshots are done; return whether they are."""
        if self._thread is None:
            self.pump(force=True)
            return self._durable_through >= self.last_sequence
        with self._wake:
            self._urgent = True
            self._wake.notify_all()
            last = self.last_sequence
            return self._wake.wait_for(
                lambda: self._durable_through >= last and not self._snapshot_jobs and not self._in_flight,
                timeout=timeout,
            )

    def _number(self, messages: Sequence[Message]) -> int:
        if not self._pending:
            self._oldest_at = self._monotonic()
        for message in messages:
            self._pending.append((self._next_sequence, message))
            self._next_sequence += 1
        return self._next_sequence - 1

    def _spill_here(self, entries: list[Entry]) -> None:
        """Make entries durable in the spill file from the caller's thread."""
        self.spill.append(entries)
        with self._wake:
            self.spilled += len(entries)
            if entries:
                self._durable_through = max(self._durable_through, entries[-1][0])
            self._wake.notify_all()

    # --- the writer's thread --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer's thread."""
        if self._thread is not None:
            raise RuntimeError("the journal writer is already running")
        self._thread = threading.Thread(target=self._run, name="keel-journal-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is left (to the database, or the spill file), then stop the thread."""
        thread = self._thread
        if thread is None:
            self.pump(force=True)
            return
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        thread.join(timeout)
        if not thread.is_alive():
            return
        with self._wake:
            left = [*self._in_flight, *self._pending]
            self._pending, self._oldest_at = [], None
        _log.error("journal writer did not finish in time: the rest goes to the spill file", entries=len(left))
        self._spill_here(left)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._due(), timeout=self._seconds_to_due())
                stopping = self._stopping
            self.pump(force=stopping)
            if stopping:
                return

    def _due(self) -> bool:
        now = self._monotonic()
        return bool(self._snapshot_jobs) or now >= self._next_check or self._batch_due(now)

    def _batch_due(self, now: float) -> bool:
        if not self._pending or self._oldest_at is None:
            return False
        return self._urgent or len(self._pending) >= self.flush_every or now - self._oldest_at >= self.flush_interval

    def _seconds_to_due(self) -> float:
        now = self._monotonic()
        due = self._next_check
        if self._pending and self._oldest_at is not None:
            due = min(due, self._oldest_at + self.flush_interval)
        return max(0.0, due - now)

    def pump(self, *, force: bool = False) -> None:
        """Do the work that is due: copy the spill file or ask the database, write the batch, take snapshots.

        The waiting entries are written when their batch is due (full, old or
        urgent) or ``force`` is set. The writer's thread calls this; without a
        thread (tests) call it directly.
        """
        now = self._monotonic()
        with self._wake:
            batch: list[Entry] = []
            if force or self._batch_due(now):
                batch, self._pending, self._oldest_at, self._urgent = self._pending, [], None, False
            self._in_flight = batch
            jobs, self._snapshot_jobs = self._snapshot_jobs, []
            check = now >= self._next_check
            if check:
                self._next_check = now + self.retry_interval
            self._busy_since = now
        if self.available or check:
            self._reach(check and not batch)
        if batch:
            self._write(batch)
        for job in jobs:
            self._save_snapshot(job)
        with self._wake:
            self._in_flight = []
            self._busy_since = None
            self._wake.notify_all()

    def _reach(self, idle_probe: bool) -> None:
        """Copy the spill file into the journal when it holds entries; else ask the database when it is due."""
        try:
            if not self.spill.is_empty():
                self.copied += copy_spill(self.journal, self.spill)
            elif idle_probe or not self.available:
                self.journal.last_sequence()
        except Exception as error:
            self._lost(error)
            return
        self._back()

    def _write(self, batch: list[Entry]) -> None:
        if self.available:
            try:
                self.journal.write(batch)
            except Exception as error:
                self._lost(error)
            else:
                self.written += len(batch)
                self._stalled = False
                self._durable(batch)
                return
        try:
            self.spill.append(batch)
        except OSError as error:
            _log.error("spill file not writable: entries kept in memory", error=repr(error), spill=repr(self.spill))
            with self._wake:
                self._pending[:0] = batch
                self._oldest_at = self._monotonic()
            return
        self._durable(batch, spilled=True)

    def _durable(self, batch: list[Entry], *, spilled: bool = False) -> None:
        with self._wake:
            if spilled:
                self.spilled += len(batch)
            self._durable_through = max(self._durable_through, batch[-1][0])
            self._wake.notify_all()

    def _save_snapshot(self, job: tuple[int, int, Mapping[str, Any]]) -> None:
        ts, journal_sequence, state = job
        if self.snapshots is None or not self.available or journal_sequence > self._durable_through:
            self.snapshots_skipped += 1
            return
        try:
            self.snapshots.save(ts, journal_sequence, state)
        except Exception as error:
            self.snapshots_skipped += 1
            self._lost(error)
            return
        self.snapshots_written += 1

    def _lost(self, error: BaseException) -> None:
        self._next_check = self._monotonic() + self.retry_interval
        if not self.available:
            return
        reason = f"database unreachable: {type(error).__name__}: {_first_line(error)}"
        self.available, self.outage = False, reason
        _log.error("journal database unreachable: writing the spill file", error=repr(error), spill=repr(self.spill))
        if self._on_availability is not None:
            self._on_availability(reason)

    def _back(self) -> None:
        if self.available:
            return
        self.available, self.outage, self._stalled = True, None, False
        _log.warning("journal database reachable again: the spill file was copied", copied=self.copied)
        if self._on_availability is not None:
            self._on_availability(None)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
