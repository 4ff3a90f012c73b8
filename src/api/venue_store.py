"""The paper venue's own durable store: a SQLite file apart from keel's database.

A real venue keeps its orders, positions and balances when a client crashes;
the simulated one does the same through a :class:`VenueStore`. Attached to a
:class:`~keel.api.simulated_exchange.SimulatedExchange`, the store writes every
venue transaction (a :class:`~keel.api.venue_state.VenueCommit`) in one
SQLite transaction before the venue delivers the transaction's reports, so
after a crash the store holds everything a client was told, and possibly a
transaction more whose reports the client never saw, exactly as a client of a
real venue finds on reconnecting.

Durability: WAL journal with ``synchronous=NORMAL``. A committed transaction
is in the operating system's hands, so it survives the process being killed
(``kill -9``) at any point; a half-written transaction is rolled back when the
file is next opened. Power loss or an operating-system crash may lose the last
transactions (the WAL is not synced on every commit): that is out of scope for
a paper account.

Layout: table ``venue`` holds one row, the venue's state apart from its orders
and history (:class:`~keel.api.venue_state.VenueState` as JSON) but
without its random generator state: ``random_state`` holds that in a row of
its own, rewritten only when it changed (it is most of the venue's state and
changes only with latency jitter). ``orders`` holds one row per order keyed by
its venue order id (acceptance order); ``trades`` and ``funding`` hold the
account history, appended in order. The file is marked with its own SQLite
``application_id`` and a layout version (``user_version``), so a foreign or
damaged file is refused with a clear error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from keel.api.simulated_exchange import SimulatedExchange
from keel.api.venue_orders import OrderState
from keel.api.venue_state import ExchangeState, VenueCommit, VenueState
from keel.core.errors import OperatorActionRequiredError
from keel.core.messages import FundingPaid, OrderFilled

APPLICATION_ID = 0x6B65656C
"""SQLite ``application_id`` of a keel venue store ("keel" in ASCII)."""

LAYOUT_VERSION = 1
"""SQLite ``user_version`` of the current table layout."""

_SCHEMA = (
    "CREATE TABLE venue (id INTEGER PRIMARY KEY CHECK (id = 1), state BLOB NOT NULL)",
    "CREATE TABLE random_state (id INTEGER PRIMARY KEY CHECK (id = 1), state BLOB NOT NULL)",
    "CREATE TABLE orders (sequence INTEGER PRIMARY KEY, state BLOB NOT NULL)",
    "CREATE TABLE trades (sequence INTEGER PRIMARY KEY, state BLOB NOT NULL)",
    "CREATE TABLE funding (sequence INTEGER PRIMARY KEY, state BLOB NOT NULL)",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {LAYOUT_VERSION}",
)
_TABLES = ("venue", "random_state", "orders", "trades", "funding")
_UPSERT_VENUE = "INSERT INTO venue (id, state) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state"
_UPSERT_RANDOM_STATE = (
    "INSERT INTO random_state (id, state) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state"
)
_UPSERT_ORDER = (
    "INSERT INTO orders (sequence, state) VALUES (?, ?) ON CONFLICT (sequence) DO UPDATE SET state = excluded.state"
)
_FRESH_ACCOUNT = (
    "delete it (with its -wal and -shm files) to start a fresh paper account (its orders, positions and balance "
    "are lost)"
)


class VenueStore:
    """The durable state of one simulated venue, in a SQLite file.

    Parameters
    ----------
    path
        The store's file; created (empty) when it does not exist.

    Raises
    ------
    OperatorActionRequiredError
        If the file is not a SQLite database, is damaged, belongs to something
        else, or was written with another table layout; the message names the
        file and what to do.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._encoder = msgspec.json.Encoder()
        self._connection = self._open()
        self._attached: SimulatedExchange | None = None
        self._random_state: list[object] | None = None

    # --- public API -----------------------------------------------------------------------------

    def attach(self, exchange: SimulatedExchange) -> None:
        """Make the store follow ``exchange``: write it whole now, then every transaction it commits.

        Raises
        ------
        ValueError
            If the store already follows a venue.
        """
        if self._attached is not None:
            raise ValueError(f"the venue store {self.path} already follows a venue: close it first")
        exchange.set_commit_handler(self.commit)
        self._attached = exchange

    def commit(self, change: VenueCommit) -> None:
        """Write one venue transaction in one SQLite transaction (the commit handler :meth:`attach` installs).

        A baseline commit replaces everything the store held. When it raises, nothing of ``change`` was written.
        """
        encode = self._encoder.encode
        random_state = change.state.random_state
        # The venue hands out the same list until its generator draws again: identity settles most commits.
        changed = change.baseline or (random_state is not self._random_state and random_state != self._random_state)
        state = encode(msgspec.structs.replace(change.state, random_state=[]))
        orders = [(int(o.venue_order_id), encode(o)) for o in change.orders]
        trades = [(encode(t),) for t in change.trades]
        funding = [(encode(f),) for f in change.funding]
        connection = self._connection
        with self._transaction():
            if change.baseline:
                self._empty()
            connection.execute(_UPSERT_VENUE, (state,))
            if changed:
                connection.execute(_UPSERT_RANDOM_STATE, (encode(random_state),))
            connection.executemany(_UPSERT_ORDER, orders)
            connection.executemany("INSERT INTO trades (state) VALUES (?)", trades)
            connection.executemany("INSERT INTO funding (state) VALUES (?)", funding)
        self._random_state = random_state

    def load_into(self, exchange: SimulatedExchange) -> bool:
        """Restore the stored venue into ``exchange`` (built with the same instruments and settings).

        Returns
        -------
        bool
            False when the store is empty (``exchange`` is left as it is).

        Raises
        ------
        OperatorActionRequiredError
            If the stored venue cannot be read or trades other symbols.
        """
        state = self._read()
        if state is None:
            return False
        try:
            exchange.restore(msgspec.json.encode(state))
        except ValueError as error:
            raise self._misfit(str(error)) from error
        return True

    def check_symbols(self, state: VenueState, symbols: Iterable[str]) -> None:
        """Refuse, before anything is restored, a stored venue trading other symbols than ``symbols``.

        Raises
        ------
        OperatorActionRequiredError
            Naming both symbol sets and the two ways on.
        """
        theirs, ours = sorted(state.account.leverage), sorted(symbols)
        if theirs != ours:
            raise self._misfit(f"the snapshot is of a venue trading {theirs}, this one trades {ours}")

    def _misfit(self, detail: str) -> OperatorActionRequiredError:
        return OperatorActionRequiredError(
            f"the paper venue stored in {self.path} does not fit this venue ({detail}): configure the same "
            "instruments, or open a new paper account with `keel run --fresh` (its orders, positions and "
            "balance are lost)"
        )

    def saved_state(self) -> VenueState | None:
        """Return the stored venue's global state (its cursor, account...) without its orders; None when empty.

        Raises
        ------
        OperatorActionRequiredError
            If the stored state cannot be read.
        """
        try:
            row = self._connection.execute("SELECT state FROM venue WHERE id = 1").fetchone()
        except sqlite3.DatabaseError as error:
            raise self._damaged(error) from error
        if row is None:
            return None
        try:
            return msgspec.json.decode(row[0], type=VenueState)
        except msgspec.MsgspecError as error:
            raise self._damaged(error) from error

    def reset(self) -> None:
        """Empty the store (a fresh paper account).

        Raises
        ------
        ValueError
            If the store follows a venue (it would no longer hold that venue's closed orders): close it first.
        """
        if self._attached is not None:
            raise ValueError(f"the venue store {self.path} follows a venue: close it before resetting it")
        with self._transaction():
            self._empty()
        self._random_state = None

    def close(self) -> None:
        """Stop following the attached venue and close the file."""
        if self._attached is not None:
            self._attached.set_commit_handler(None)
            self._attached = None
        self._connection.close()

    # --- file -----------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if not self.path.parent.is_dir():
            raise OperatorActionRequiredError(
                f"cannot create the paper venue store {self.path}: its directory does not exist; create it"
            )
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._check_owner(connection)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            if connection.execute("PRAGMA application_id").fetchone()[0] == 0:
                connection.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            connection.close()
            raise self._damaged(error) from error
        except OperatorActionRequiredError:
            connection.close()
            raise
        return connection

    def _check_owner(self, connection: sqlite3.Connection) -> None:
        """Refuse a SQLite file that is not an empty one or a venue store of this layout (before changing it)."""
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        if application_id == 0:
            if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise OperatorActionRequiredError(
                    f"{self.path} is another SQLite database, not a paper venue store: give the venue store a "
                    "file of its own (this one was left untouched)"
                )
            return
        if application_id != APPLICATION_ID:
            raise OperatorActionRequiredError(
                f"{self.path} is another application's SQLite database (application_id {application_id}), not a "
                "paper venue store: give the venue store a file of its own (this one was left untouched)"
            )
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version != LAYOUT_VERSION:
            raise OperatorActionRequiredError(
                f"the paper venue store {self.path} has table layout {version}, this keel reads layout "
                f"{LAYOUT_VERSION}: run the keel version that wrote it, or {_FRESH_ACCOUNT}"
            )

    def _damaged(self, error: Exception) -> OperatorActionRequiredError:
        return OperatorActionRequiredError(
            f"the paper venue store {self.path} cannot be read ({error}): if it is damaged or not a venue store, "
            f"{_FRESH_ACCOUNT}"
        )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _empty(self) -> None:
        for table in _TABLES:
            self._connection.execute(f"DELETE FROM {table}")

    def _read(self) -> ExchangeState | None:
        """Return the stored venue as one snapshot, None when the store is empty."""
        try:
            row = self._connection.execute("SELECT state FROM venue WHERE id = 1").fetchone()
            if row is None:
                return None
            random_row = self._connection.execute("SELECT state FROM random_state WHERE id = 1").fetchone()
            if random_row is None:
                raise self._damaged(ValueError("the random generator state is missing"))
            orders = self._rows("orders")
            trades = self._rows("trades")
            funding = self._rows("funding")
        except sqlite3.DatabaseError as error:
            raise self._damaged(error) from error
        try:
            state = msgspec.json.decode(row[0], type=VenueState)
            fields = msgspec.structs.asdict(state) | {"random_state": msgspec.json.decode(random_row[0])}
            return ExchangeState(
                **fields,
                orders=[msgspec.json.decode(o, type=OrderState) for o in orders],
                trades=[msgspec.json.decode(t, type=OrderFilled) for t in trades],
                funding=[msgspec.json.decode(f, type=FundingPaid) for f in funding],
            )
        except msgspec.MsgspecError as error:
            raise self._damaged(error) from error

    def _rows(self, table: str) -> list[bytes]:
        return [row[0] for row in self._connection.execute(f"SELECT state FROM {table} ORDER BY sequence")]
