"""Tests of keel.core.orders: the Order record, its fills, and client order ids.

Covers the lifecycle happy paths, the venue oddities the order table lists
(fills racing cancels, fills before the acknowledgement, late fills after a
cancel), duplicate trade ids, overfills, input validation, a hypothesis model
of fill accounting, and the deterministic client order id generator.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.errors import InvalidTransitionError
from keel.core.orders import (
    ClientOrderIdGenerator,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
)

BINANCE_CLIENT_ID = re.compile(r"\A[.A-Z:/a-z0-9_-]{1,36}\Z")


def _order(quantity: str = "1.000", price: str | None = "50000.0") -> Order:
    return Order(
        client_order_id="test-1",
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
        quantity=Decimal(quantity),
        price=None if price is None else Decimal(price),
        ts_init=1,
    )


def _fill(order: Order, trade_id: str, quantity: str, price: str, ts: int = 10) -> bool:
    return order.apply_fill(
        trade_id=trade_id,
        quantity=Decimal(quantity),
        price=Decimal(price),
        commission=Decimal("0.01"),
        ts=ts,
    )


def _snapshot(order: Order) -> tuple[object, ...]:
    return (
        order.status,
        order.filled_quantity,
        order.average_price,
        order.commission,
        order.ts_last,
        order.remaining_quantity,
    )


# --- lifecycle -----------------------------------------------------------------------


def test_a_new_order_is_initialized_and_open() -> None:
    order = _order()

    assert order.status is OrderStatus.INITIALIZED
    assert not order.is_closed
    assert order.filled_quantity == 0
    assert order.average_price is None
    assert order.remaining_quantity == Decimal("1.000")
    assert order.ts_last == 1


def test_submit_accept_fill_happy_path() -> None:
    order = _order()

    order.submit(ts=2)
    order.accept("venue-9", ts=3)
    applied = _fill(order, "t1", "1.000", "50000.0", ts=4)

    assert applied
    assert order.status is OrderStatus.FILLED
    assert order.is_closed
    assert order.venue_order_id == "venue-9"
    assert order.filled_quantity == Decimal("1.000")
    assert order.remaining_quantity == 0
    assert order.average_price == Decimal("50000.0")
    assert order.commission == Decimal("0.01")
    assert order.ts_last == 4


def test_partial_fills_then_filled_average_price_is_weighted() -> None:
    order = _order(quantity="3")
    order.submit(ts=2)
    order.accept("v", ts=3)

    _fill(order, "t1", "1", "100", ts=4)
    assert order.status is OrderStatus.PARTIALLY_FILLED
    _fill(order, "t2", "1", "103", ts=5)
    assert order.status is OrderStatus.PARTIALLY_FILLED
    _fill(order, "t3", "1", "106", ts=6)

    assert order.status is OrderStatus.FILLED
    assert order.filled_quantity == Decimal(3)
    assert order.average_price == Decimal(103)
    assert order.commission == Decimal("0.03")
    assert order.ts_last == 6


def test_deny_closes_an_order_that_was_never_sent() -> None:
    order = _order()

    order.deny("max leverage", ts=2)

    assert order.status is OrderStatus.DENIED
    assert order.is_closed
    assert order.reason == "max leverage"
    with pytest.raises(InvalidTransitionError):
        order.submit(ts=3)


def test_reject_closes_a_submitted_order() -> None:
    order = _order()
    order.submit(ts=2)

    order.reject("-2019 margin is insufficient", ts=3)

    assert order.status is OrderStatus.REJECTED
    assert order.is_closed
    assert order.reason == "-2019 margin is insufficient"


def test_expire_closes_an_accepted_order() -> None:
    order = _order()
    order.submit(ts=2)
    order.accept("v", ts=3)

    order.expire(ts=4, reason="GTX would take")

    assert order.status is OrderStatus.EXPIRED
    assert order.is_closed


def test_cancel_request_then_confirmation() -> None:
    order = _order()
    order.submit(ts=2)
    order.accept("v", ts=3)

    order.request_cancel(ts=4)
    assert order.status is OrderStatus.PENDING_CANCEL
    assert not order.is_closed
    order.cancel(ts=5, reason="user")

    assert order.status is OrderStatus.CANCELED
    assert order.is_closed
    assert order.reason == "user"


def test_accept_after_a_fill_records_the_venue_id_without_moving_back() -> None:
    order = _order(quantity="2")
    order.submit(ts=2)
    _fill(order, "t1", "1", "100", ts=3)

    order.accept("venue-late", ts=4)

    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert order.venue_order_id == "venue-late"


# --- duplicates and overfills ------------------------------------------------------------


def test_a_duplicate_trade_id_is_ignored_and_changes_nothing() -> None:
    order = _order(quantity="2")
    order.submit(ts=2)
    order.accept("v", ts=3)
    _fill(order, "t1", "1", "100", ts=4)
    before = _snapshot(order)

    applied = _fill(order, "t1", "1", "999", ts=5)

    assert applied is False
    assert _snapshot(order) == before


def test_an_overfill_raises_and_changes_nothing() -> None:
    order = _order(quantity="1")
    order.submit(ts=2)
    order.accept("v", ts=3)
    _fill(order, "t1", "0.6", "100", ts=4)
    before = _snapshot(order)

    with pytest.raises(InvalidTransitionError):
        _fill(order, "t2", "0.5", "100", ts=5)

    assert _snapshot(order) == before
    # The refused trade id was not recorded: a correct fill under it still applies.
    assert _fill(order, "t2", "0.4", "100", ts=6)
    assert order.status is OrderStatus.FILLED


@pytest.mark.parametrize(("quantity", "price"), [("0", "100"), ("-1", "100"), ("1", "0"), ("1", "-5")])
def test_a_fill_with_non_positive_quantity_or_price_raises(quantity: str, price: str) -> None:
    order = _order(quantity="2")
    order.submit(ts=2)
    before = _snapshot(order)

    with pytest.raises(ValueError):
        _fill(order, "bad", quantity, price)

    assert _snapshot(order) == before


def test_a_fill_on_an_unsent_order_raises() -> None:
    order = _order()

    with pytest.raises(InvalidTransitionError):
        _fill(order, "t1", "0.5", "100")

    assert order.status is OrderStatus.INITIALIZED
    assert order.filled_quantity == 0


def test_a_fill_on_a_rejected_order_raises() -> None:
    order = _order()
    order.submit(ts=2)
    order.reject("no", ts=3)

    with pytest.raises(InvalidTransitionError):
        _fill(order, "t1", "0.5", "100")

    assert order.status is OrderStatus.REJECTED
    assert order.filled_quantity == 0


# --- venue oddities -------------------------------------------------------------------------


def test_a_partial_fill_after_a_cancel_request_goes_to_partially_filled() -> None:
    order = _order(quantity="2")
    order.submit(ts=2)
    order.accept("v", ts=3)
    order.request_cancel(ts=4)

    _fill(order, "t1", "1", "100", ts=5)

    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert order.filled_quantity == Decimal(1)


def test_a_complete_fill_after_a_cancel_request_goes_to_filled() -> None:
    order = _order(quantity="2")
    order.submit(ts=2)
    order.accept("v", ts=3)
    order.request_cancel(ts=4)

    _fill(order, "t1", "2", "100", ts=5)

    assert order.status is OrderStatus.FILLED
    assert order.is_closed


def test_a_late_fill_after_canceled_keeps_canceled_and_counts_the_quantity() -> None:
    order = _order(quantity="2")
    order.submit(ts=2)
    order.accept("v", ts=3)
    order.request_cancel(ts=4)
    order.cancel(ts=5)

    applied = _fill(order, "t-late", "0.5", "100", ts=6)

    assert applied
    assert order.status is OrderStatus.CANCELED
    assert order.filled_quantity == Decimal("0.5")
    assert order.average_price == Decimal(100)
    assert order.ts_last == 6


def test_a_late_fill_after_expired_keeps_expired_and_counts_the_quantity() -> None:
    order = _order(quantity="2")
    order.submit(ts=2)
    order.expire(ts=3)

    _fill(order, "t-late", "2", "100", ts=4)

    assert order.status is OrderStatus.EXPIRED
    assert order.filled_quantity == Decimal(2)


def test_cancel_refused_without_fills_returns_to_accepted() -> None:
    order = _order(quantity="2")
    order.submit(ts=2)
    order.accept("v", ts=3)
    order.request_cancel(ts=4)

    order.cancel_refused("-2011 unknown order", ts=5)

    assert order.status is OrderStatus.ACCEPTED
    assert order.reason == "-2011 unknown order"


def test_cancel_refused_after_a_fill_returns_to_partially_filled() -> None:
    order = _order(quantity="2")
    order.submit(ts=2)
    order.accept("v", ts=3)
    _fill(order, "t1", "1", "100", ts=4)
    order.request_cancel(ts=5)

    order.cancel_refused("too late", ts=6)

    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert order.filled_quantity == Decimal(1)


def test_a_fill_before_acceptance_goes_from_submitted_to_filled() -> None:
    order = _order(quantity="1")
    order.submit(ts=2)

    _fill(order, "t1", "1", "100", ts=3)

    assert order.status is OrderStatus.FILLED
    order.accept("venue-after-fill", ts=4)
    assert order.status is OrderStatus.FILLED
    assert order.venue_order_id == "venue-after-fill"


def test_cancel_after_filled_raises() -> None:
    order = _order(quantity="1")
    order.submit(ts=2)
    _fill(order, "t1", "1", "100", ts=3)

    with pytest.raises(InvalidTransitionError):
        order.request_cancel(ts=4)
    with pytest.raises(InvalidTransitionError):
        order.cancel(ts=4)

    assert order.status is OrderStatus.FILLED


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("quantity", ["0", "-1", "NaN", "Infinity", "-0.001"])
def test_a_non_positive_or_non_finite_quantity_is_rejected(quantity: str) -> None:
    with pytest.raises(ValueError):
        _order(quantity=quantity, price=None)


@pytest.mark.parametrize("price", ["0", "-1", "NaN", "Infinity"])
def test_a_non_positive_or_non_finite_price_is_rejected(price: str) -> None:
    with pytest.raises(ValueError):
        _order(price=price)


def test_a_limit_order_without_a_price_is_rejected() -> None:
    with pytest.raises(ValueError):
        Order(
            client_order_id="x-1",
            symbol="BTCUSDT",
            side=OrderSide.SELL,
            order_type=OrderType.LIMIT,
            quantity=Decimal(1),
        )


def test_a_market_order_needs_no_price() -> None:
    order = _order(price=None)

    assert order.price is None
    assert order.order_type is OrderType.MARKET


def test_order_side_sign_and_opposite() -> None:
    assert OrderSide.BUY.sign == 1
    assert OrderSide.SELL.sign == -1
    assert OrderSide.BUY.opposite() is OrderSide.SELL
    assert OrderSide.SELL.opposite() is OrderSide.BUY


# --- property: fill accounting ----------------------------------------------------------------

_quantities = st.integers(min_value=1, max_value=400).map(lambda n: Decimal(n) / 1000)
_prices = st.integers(min_value=1, max_value=10_000_000).map(lambda n: Decimal(n) / 100)
_trade_ids = st.sampled_from([f"t{i}" for i in range(12)])


@settings(max_examples=200, deadline=None)
@given(
    order_quantity=st.integers(min_value=1, max_value=2000).map(lambda n: Decimal(n) / 1000),
    fills=st.lists(st.tuples(_trade_ids, _quantities, _prices), max_size=30),
)
def test_fill_accounting_matches_a_model(order_quantity: Decimal, fills: list[tuple[str, Decimal, Decimal]]) -> None:
    order = _order(quantity=str(order_quantity))
    order.submit(ts=1)
    order.accept("v", ts=2)
    applied: dict[str, tuple[Decimal, Decimal]] = {}

    for ts, (trade_id, quantity, price) in enumerate(fills, start=3):
        before = _snapshot(order)
        if trade_id in applied:
            assert (
                order.apply_fill(trade_id=trade_id, quantity=quantity, price=price, commission=Decimal(0), ts=ts)
                is False
            )
            assert _snapshot(order) == before
        elif sum(q for q, _ in applied.values()) + quantity > order_quantity:
            with pytest.raises(InvalidTransitionError):
                order.apply_fill(trade_id=trade_id, quantity=quantity, price=price, commission=Decimal(0), ts=ts)
            assert _snapshot(order) == before
        else:
            assert (
                order.apply_fill(trade_id=trade_id, quantity=quantity, price=price, commission=Decimal(0), ts=ts)
                is True
            )
            applied[trade_id] = (quantity, price)

        filled = sum((q for q, _ in applied.values()), Decimal(0))
        assert order.filled_quantity == filled
        assert order.filled_quantity <= order.quantity
        assert order.remaining_quantity == order_quantity - filled
        if applied:
            notional = sum((q * p for q, p in applied.values()), Decimal(0))
            assert order.average_price == notional / filled
            expected_status = OrderStatus.FILLED if filled == order_quantity else OrderStatus.PARTIALLY_FILLED
        else:
            assert order.average_price is None
            expected_status = OrderStatus.ACCEPTED
        assert order.status is expected_status


# --- client order ids -------------------------------------------------------------------------


def test_two_generators_with_the_same_namespace_give_the_same_sequence() -> None:
    first = ClientOrderIdGenerator("bt.20250301")
    second = ClientOrderIdGenerator("bt.20250301")

    ids_first = [first.next_id() for _ in range(50)]
    ids_second = [second.next_id() for _ in range(50)]

    assert ids_first == ids_second
    assert len(set(ids_first)) == 50
    assert ids_first[:3] == ["bt.20250301-1", "bt.20250301-2", "bt.20250301-3"]


def test_different_namespaces_never_collide() -> None:
    paper = ClientOrderIdGenerator("paper")
    live = ClientOrderIdGenerator("live")

    assert {paper.next_id() for _ in range(100)}.isdisjoint({live.next_id() for _ in range(100)})


def test_a_resumed_generator_continues_where_the_journal_stopped() -> None:
    original = ClientOrderIdGenerator("run:7")
    for _ in range(41):
        original.next_id()
    assert original.next_sequence == 42

    resumed = ClientOrderIdGenerator("run:7", next_sequence=original.next_sequence)

    assert resumed.next_id() == original.next_id() == "run:7-42"
    assert resumed.next_sequence == 43


_namespace_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/")


@settings(max_examples=200, deadline=None)
@given(
    namespace=st.text(_namespace_chars, min_size=1, max_size=20),
    next_sequence=st.integers(min_value=1, max_value=10**12),
)
def test_ids_match_binance_client_order_id_pattern(namespace: str, next_sequence: int) -> None:
    generator = ClientOrderIdGenerator(namespace, next_sequence=next_sequence)

    ids = [generator.next_id() for _ in range(3)]

    for client_order_id in ids:
        assert BINANCE_CLIENT_ID.match(client_order_id), client_order_id
    assert ids == [f"{namespace}-{next_sequence + i}" for i in range(3)]


@pytest.mark.parametrize(
    "namespace",
    [
        "",
        "has-dash",
        "x" * 21,
        "white space",
        "caf\u00e9",
        "semi;colon",
        "run\n",
        "\nrun",
    ],
    ids=[
        "empty",
        "dash",
        "too-long",
        "space",
        "non-ascii",
        "semicolon",
        "trailing-newline",
        "leading-newline",
    ],
)
def test_bad_namespaces_are_rejected(namespace: str) -> None:
    with pytest.raises(ValueError):
        ClientOrderIdGenerator(namespace)


@pytest.mark.parametrize("next_sequence", [0, -1])
def test_a_sequence_below_one_is_rejected(next_sequence: int) -> None:
    with pytest.raises(ValueError):
        ClientOrderIdGenerator("ok", next_sequence=next_sequence)
