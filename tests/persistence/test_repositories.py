"""Repositories on SQLite and PostgreSQL: exact round trips, idempotent fills, the journal."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.core.errors import ConfigurationError
from keel.core.fsm import TradingState
from keel.core.messages import (
    FundingPaid,
    OrderFilled,
    SubmitOrder,
    TradingStateChanged,
)
from keel.core.orders import LiquiditySide, Order, OrderSide, OrderType
from keel.persistence import AuditLog, Database, Journal, Orders, Positions, Settings, Snapshots
from keel.persistence.models import Base

TABLES = [
    "alembic_version",
    "audit_log",
    "equity_snapshots",
    "fills",
    "journal",
    "orders",
    "positions",
    "risk_limits",
    "state_snapshots",
    "strategy_configs",
]


def an_order(client_order_id: str = "keel-1") -> Order:
    return Order(
        client_order_id=client_order_id,
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal("0.052"),
        price=Decimal("95457.6"),
        strategy="portfolio",
        ts_init=1_746_376_380_000_000_000,
    )


def a_fill(trade_id: str = "1", client_order_id: str = "keel-1") -> OrderFilled:
    return OrderFilled(
        client_order_id=client_order_id,
        venue_order_id="7",
        symbol="BTCUSDT",
        trade_id=trade_id,
        side=OrderSide.BUY,
        last_quantity=Decimal("0.052"),
        last_price=Decimal("95457.6"),
        commission=Decimal("0.99275904"),
        liquidity_side=LiquiditySide.MAKER,
        strategy="portfolio",
        ts_event=1_746_376_440_000_000_000,
        ts_init=1_746_376_440_000_000_000,
    )


def test_migrations_create_every_table_and_match_the_models(database: Database) -> None:
    # Act
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)

    # Assert
    assert database.table_names() == TABLES
    assert differences == []


def test_migrating_twice_changes_nothing(database: Database) -> None:
    # Act
    database.migrate()

    # Assert
    assert database.table_names() == TABLES


def test_the_journal_returns_messages_in_order_and_exactly(database: Database) -> None:
    # Arrange
    journal = Journal(database)
    messages = [
        SubmitOrder(
            client_order_id="keel-1",
            symbol="BTCUSDT",
            side=OrderSide.SELL,
            order_type=OrderType.MARKET,
            quantity=Decimal("0.052"),
            ts_event=1,
            ts_init=1,
        ),
        a_fill(),
        FundingPaid(
            symbol="BTCUSDT",
            funding_time=3,
            rate=Decimal("0.00003745"),
            mark_price=Decimal("95421.1"),
            position_quantity=Decimal("-0.052"),
            amount=Decimal("0.18581997"),
            ts_event=3,
            ts_init=3,
        ),
        TradingStateChanged(
            previous=TradingState.ACTIVE, state=TradingState.HALTED, reason="stop", ts_event=4, ts_init=4
        ),
    ]

    # Act
    first = journal.append(messages[:2])
    last = journal.append(messages[2:])
    replayed = list(journal.read())
    tail = list(journal.read(after_sequence=first))

    # Assert
    assert [m for _, m in replayed] == messages
    assert [s for s, _ in replayed] == sorted(s for s, _ in replayed)
    assert journal.last_sequence() == last == replayed[-1][0]
    assert [m for _, m in tail] == messages[2:]


def test_an_empty_journal(database: Database) -> None:
    journal = Journal(database)
    assert journal.last_sequence() == 0
    assert list(journal.read()) == []
    assert journal.append([]) == 0


def test_orders_round_trip_with_exact_decimals_and_status(database: Database) -> None:
    # Arrange
    orders = Orders(database)
    order = an_order()
    order.submit(1)
    order.accept("7", 2)

    # Act
    orders.save(order)
    order.apply_fill(
        trade_id="1", quantity=Decimal("0.02"), price=Decimal("95457.6"), commission=Decimal("0.38183"), ts=3
    )
    orders.save(order)
    record = orders.get("keel-1")

    # Assert
    assert record is not None
    assert record.status == "PARTIALLY_FILLED"
    assert record.quantity == Decimal("0.052") and record.price == Decimal("95457.6")
    assert record.filled_quantity == Decimal("0.02") and record.commission == Decimal("0.38183")
    assert [o.client_order_id for o in orders.open_orders()] == ["keel-1"]


def test_a_fill_is_stored_once(database: Database) -> None:
    # Arrange
    orders = Orders(database)
    orders.save(an_order())

    # Act
    first = orders.add_fill(a_fill())
    second = orders.add_fill(a_fill())

    # Assert
    assert (first, second) == (True, False)
    (stored,) = orders.fills()
    assert stored.price == Decimal("95457.6") and stored.commission == Decimal("0.99275904")


def test_nan_never_reaches_the_database(database: Database) -> None:
    # Arrange
    positions = Positions(database)

    # Act / Assert
    with pytest.raises(Exception, match="finite Decimal"):
        positions.save("BTCUSDT", Decimal("NaN"), Decimal(1), Decimal(0), 1)


def test_positions_equity_snapshots_settings_and_audit(database: Database) -> None:
    # Arrange
    positions, snapshots, settings_, audit = (
        Positions(database),
        Snapshots(database),
        Settings(database),
        AuditLog(database),
    )

    # Act
    positions.save("BTCUSDT", Decimal("-0.052"), Decimal("95399.8"), Decimal("-1.2"), 10)
    positions.save("BTCUSDT", Decimal("0"), Decimal("0"), Decimal("3.4"), 11)
    positions.record_equity(10, Decimal("9998.1"), Decimal("4960.79"))
    positions.record_equity(10, Decimal("9998.2"), Decimal("4960.79"))
    snapshots.save(12, 5, {"trading_state": "HALTED", "positions": {"BTCUSDT": "0"}})
    settings_.save_strategy("ma_cross", "moving_average_cross", {"fast_period": 20}, True, 13)
    settings_.save_risk_limits({"max_leverage": Decimal("8.0"), "max_drawdown_pct": 0.1}, "operator", 14)
    audit.record(15, "operator", "emergency_stop", {"reason": "Risk limit exceeded"}, "req-1")

    # Assert
    assert positions.all()["BTCUSDT"].realized_pnl == Decimal("3.4")
    assert [(e.ts, e.equity) for e in positions.equity_curve()] == [(10, Decimal("9998.2"))]
    assert snapshots.latest() == (5, {"trading_state": "HALTED", "positions": {"BTCUSDT": "0"}})
    assert settings_.strategies()["ma_cross"].enabled is True
    assert settings_.risk_limits() == {"max_leverage": Decimal("8.0"), "max_drawdown_pct": Decimal("0.1")}
    (entry,) = audit.entries()
    assert (entry.actor, entry.action, entry.request_id) == ("operator", "emergency_stop", "req-1")


def test_clearing_the_risk_limits_forgets_them_and_returns_what_was_forgotten(database: Database) -> None:
    # Arrange
    settings_ = Settings(database)
    settings_.save_risk_limits({"max_leverage": Decimal("1.5")}, "operator", 14)

    # Act
    forgotten = settings_.clear_risk_limits()

    # Assert
    assert forgotten == {"max_leverage": Decimal("1.5")}
    assert settings_.risk_limits() == {}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(
        st.decimals(allow_nan=False, allow_infinity=False, places=12, min_value=-(10**9), max_value=10**9),
        min_size=1,
        max_size=5,
    )
)
def test_decimals_survive_storage_exactly(database: Database, values: list[Decimal]) -> None:
    # Arrange
    positions = Positions(database)

    # Act
    for i, value in enumerate(values):
        positions.save(f"S{i}", value, abs(value), -value, i)
    stored = positions.all()

    # Assert
    for i, value in enumerate(values):
        assert stored[f"S{i}"].quantity == value
        assert str(stored[f"S{i}"].quantity) == str(value)


def test_a_bad_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"persistence\.url"):
        Database("mysql://somewhere/keel")
    with pytest.raises(ConfigurationError, match="not a database URL"):
        Database("::::")


def test_the_repr_hides_the_password() -> None:
    database = Database("postgresql+psycopg://keel:hunter2@127.0.0.1:1/keel")
    assert "hunter2" not in repr(database)


def test_the_journal_finds_the_newest_message_of_a_type(database: Database) -> None:
    # Arrange
    journal = Journal(database)
    halted = TradingStateChanged(
        previous=TradingState.ACTIVE, state=TradingState.HALTED, reason="stop", ts_event=1, ts_init=1
    )
    resumed = TradingStateChanged(
        previous=TradingState.HALTED, state=TradingState.ACTIVE, reason="go", ts_event=2, ts_init=2
    )

    # Act
    journal.append([halted, a_fill(), resumed, a_fill("2")])

    # Assert
    assert journal.latest(TradingStateChanged) == resumed
    assert journal.latest(FundingPaid) is None
