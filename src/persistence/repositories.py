"""Repositories: the only code that reads and writes keel's tables.

Each takes a :class:`~keel.persistence.database.Database` and speaks in keel's
domain types (messages, orders, decimals), never in rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from keel.core.messages import Message, OrderFilled, decode_message, encode_message
from keel.core.orders import Order
from keel.persistence.database import Database
from keel.persistence.models import (
    AuditEntry,
    EquitySnapshot,
    FillRecord,
    JournalEntry,
    OrderRecord,
    PositionRecord,
    RiskLimitRecord,
    StateSnapshot,
    StrategyConfigRecord,
)

_ROWS_PER_INSERT = 500
"""Journal rows per INSERT statement (within SQLite's and PostgreSQL's bound-parameter limits)."""


class Journal:
    """The append-only log of events that changed the trading state."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def append(self, messages: Iterable[Message]) -> int:
        """Append messages in order after the newest entry; return the sequence of the last one (0 when none)."""
        batch = list(messages)
        with self._database.session() as session:
            last = session.scalar(select(func.max(JournalEntry.sequence))) or 0
            numbered = [(last + 1 + i, m) for i, m in enumerate(batch)]
            for start in range(0, len(numbered), _ROWS_PER_INSERT):
                session.execute(self._insert(numbered[start : start + _ROWS_PER_INSERT]))
        return last + len(batch)

    def write(self, entries: Sequence[tuple[int, Message]]) -> None:
        """Store (sequence, message) entries numbered by the caller in one transaction.

        An entry whose sequence is already stored is skipped, so writing the
        same entries again (a retry after a lost commit acknowledgement, a
        spill file replayed twice) stores each of them once.
        """
        if entries:
            with self._database.session() as session:
                for start in range(0, len(entries), _ROWS_PER_INSERT):
                    session.execute(self._insert(entries[start : start + _ROWS_PER_INSERT]))

    def _insert(self, entries: Sequence[tuple[int, Message]]) -> Any:
        insert = postgresql_insert if self._database.backend == "postgresql" else sqlite_insert
        rows = [
            {
                "sequence": sequence,
                "ts_event": m.ts_event,
                "message_id": m.id,
                "message_type": type(m).__name__,
                "payload": encode_message(m).decode(),
            }
            for sequence, m in entries
        ]
        return insert(JournalEntry).values(rows).on_conflict_do_nothing(index_elements=["sequence"])

    def read(self, after_sequence: int = 0) -> Iterator[tuple[int, Message]]:
        """Yield (sequence, message) for every entry after ``after_sequence``, in order."""
        with self._database.session() as session:
            rows = session.execute(
                select(JournalEntry.sequence, JournalEntry.payload)
                .where(JournalEntry.sequence > after_sequence)
                .order_by(JournalEntry.sequence)
            ).all()
        for sequence, payload in rows:
            yield sequence, decode_message(payload)

    def latest(self, message_type: type[Message]) -> Message | None:
        """Return the newest journaled message of one type, or None."""
        found = self.latest_entry(message_type)
        return None if found is None else found[1]

    def latest_entry(self, message_type: type[Message]) -> tuple[int, Message] | None:
        """Return (sequence, message) of the newest journaled message of one type, or None."""
        with self._database.session() as session:
            row = session.execute(
                select(JournalEntry.sequence, JournalEntry.payload)
                .where(JournalEntry.message_type == message_type.__name__)
                .order_by(JournalEntry.sequence.desc())
                .limit(1)
            ).first()
        return None if row is None else (row[0], decode_message(row[1]))

    def entries_of(self, message_type: type[Message]) -> list[tuple[int, Message]]:
        """Return (sequence, message) of every journaled message of one type, oldest first."""
        with self._database.session() as session:
            rows = session.execute(
                select(JournalEntry.sequence, JournalEntry.payload)
                .where(JournalEntry.message_type == message_type.__name__)
                .order_by(JournalEntry.sequence)
            ).all()
        return [(sequence, decode_message(payload)) for sequence, payload in rows]

    def last_sequence(self) -> int:
        """Return the newest sequence, 0 for an empty journal."""
        with self._database.session() as session:
            return session.scalar(select(func.max(JournalEntry.sequence))) or 0


class Snapshots:
    """Periodic snapshots of the whole state, each tied to a journal sequence."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def save(self, ts: int, journal_sequence: int, state: Mapping[str, Any]) -> None:
        """Store a snapshot (``state`` must be JSON-serializable)."""
        with self._database.session() as session:
            session.add(
                StateSnapshot(ts=ts, journal_sequence=journal_sequence, payload=json.dumps(state, sort_keys=True))
            )

    def latest(self, after_sequence: int = 0) -> tuple[int, dict[str, Any]] | None:
        """Return (journal sequence, state) of the newest snapshot taken after ``after_sequence``, or None."""
        with self._database.session() as session:
            row = session.execute(
                select(StateSnapshot)
                .where(StateSnapshot.journal_sequence > after_sequence)
                .order_by(StateSnapshot.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        return None if row is None else (row.journal_sequence, json.loads(row.payload))


class Orders:
    """Orders and their fills."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def save(self, order: Order) -> None:
        """Insert or update an order's record."""
        with self._database.session() as session:
            session.merge(_order_record(order))

    def get(self, client_order_id: str) -> OrderRecord | None:
        """Return one order's record."""
        with self._database.session() as session:
            return session.get(OrderRecord, client_order_id)

    def open_orders(self) -> list[OrderRecord]:
        """Return the records of orders that can still trade."""
        working = ("SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED", "PENDING_CANCEL")
        with self._database.session() as session:
            return list(
                session.scalars(
                    select(OrderRecord).where(OrderRecord.status.in_(working)).order_by(OrderRecord.ts_init)
                )
            )

    def add_fill(self, fill: OrderFilled) -> bool:
        """Store a fill; return False when its (symbol, trade id) is already stored."""
        insert = postgresql_insert if self._database.backend == "postgresql" else sqlite_insert
        statement = (
            insert(FillRecord)
            .values(
                trade_id=fill.trade_id,
                client_order_id=fill.client_order_id,
                symbol=fill.symbol,
                side=fill.side.value,
                quantity=fill.last_quantity,
                price=fill.last_price,
                commission=fill.commission,
                liquidity_side=fill.liquidity_side.value,
                strategy=fill.strategy,
                ts_event=fill.ts_event,
            )
            .on_conflict_do_nothing(index_elements=["symbol", "trade_id"])
            .returning(FillRecord.id)
        )
        with self._database.session() as session:
            return session.execute(statement).first() is not None

    def fills(self, client_order_id: str | None = None) -> list[FillRecord]:
        """Return fills in time order (of one order, or all)."""
        query = select(FillRecord).order_by(FillRecord.ts_event, FillRecord.id)
        if client_order_id is not None:
            query = query.where(FillRecord.client_order_id == client_order_id)
        with self._database.session() as session:
            return list(session.scalars(query))


class Positions:
    """Net positions and the equity curve."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def save(self, symbol: str, quantity: Decimal, entry_price: Decimal, realized_pnl: Decimal, ts: int) -> None:
        """Insert or update one symbol's position."""
        with self._database.session() as session:
            session.merge(
                PositionRecord(
                    symbol=symbol, quantity=quantity, entry_price=entry_price, realized_pnl=realized_pnl, ts_last=ts
                )
            )

    def all(self) -> dict[str, PositionRecord]:
        """Return every stored position by symbol."""
        with self._database.session() as session:
            return {p.symbol: p for p in session.scalars(select(PositionRecord))}

    def record_equity(self, ts: int, equity: Decimal, gross_exposure: Decimal) -> None:
        """Store one point of the equity curve (a second write at the same time replaces it)."""
        with self._database.session() as session:
            session.merge(EquitySnapshot(ts=ts, equity=equity, gross_exposure=gross_exposure))

    def equity_curve(self) -> list[EquitySnapshot]:
        """Return the equity curve in time order."""
        with self._database.session() as session:
            return list(session.scalars(select(EquitySnapshot).order_by(EquitySnapshot.ts)))


class Settings:
    """Strategy configurations and risk limits as operators last set them."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def save_strategy(self, name: str, kind: str, parameters: Mapping[str, Any], enabled: bool, ts: int) -> None:
        """Insert or update a strategy's configuration."""
        with self._database.session() as session:
            session.merge(
                StrategyConfigRecord(
                    name=name,
                    kind=kind,
                    parameters=json.dumps(parameters, sort_keys=True),
                    enabled=enabled,
                    ts_updated=ts,
                )
            )

    def strategies(self) -> dict[str, StrategyConfigRecord]:
        """Return every stored strategy configuration by name."""
        with self._database.session() as session:
            return {s.name: s for s in session.scalars(select(StrategyConfigRecord))}

    def save_risk_limits(self, limits: Mapping[str, Decimal | float | int], actor: str, ts: int) -> None:
        """Insert or update risk limits, recording who set them."""
        with self._database.session() as session:
            for name, value in limits.items():
                session.merge(RiskLimitRecord(name=name, value=str(value), ts_updated=ts, updated_by=actor))

    def risk_limits(self) -> dict[str, Decimal]:
        """Return every stored risk limit by name."""
        with self._database.session() as session:
            return {r.name: Decimal(r.value) for r in session.scalars(select(RiskLimitRecord))}

    def clear_risk_limits(self) -> dict[str, Decimal]:
        """Forget every stored risk limit (the configured ones apply again); return those forgotten by name."""
        with self._database.session() as session:
            records = list(session.scalars(select(RiskLimitRecord)))
            for record in records:
                session.delete(record)
            return {r.name: Decimal(r.value) for r in records}


class AuditLog:
    """Who did what, when: every operator action."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def record(self, ts: int, actor: str, action: str, details: Mapping[str, Any], request_id: str = "") -> None:
        """Append one operator action (``details`` must not hold secrets)."""
        with self._database.session() as session:
            session.add(
                AuditEntry(
                    ts=ts,
                    actor=actor,
                    action=action,
                    details=json.dumps(details, sort_keys=True),
                    request_id=request_id,
                )
            )

    def entries(self) -> list[AuditEntry]:
        """Return every action in time order."""
        with self._database.session() as session:
            return list(session.scalars(select(AuditEntry).order_by(AuditEntry.ts, AuditEntry.id)))


def _order_record(order: Order) -> OrderRecord:
    return OrderRecord(
        client_order_id=order.client_order_id,
        venue_order_id=order.venue_order_id,
        symbol=order.symbol,
        side=order.side.value,
        order_type=order.order_type.value,
        time_in_force=order.time_in_force.value,
        quantity=order.quantity,
        price=order.price,
        stop_price=order.stop_price,
        reduce_only=order.reduce_only,
        status=order.status.value,
        filled_quantity=order.filled_quantity,
        average_price=order.average_price,
        commission=order.commission,
        strategy=order.strategy,
        ts_init=order.ts_init,
        ts_last=order.ts_last,
        reason=order.reason,
    )
