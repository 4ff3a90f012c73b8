"""Tests of keel.core.accounting: net positions in exact decimals.

Hand-computed examples cover open, increase, reduce, close and flip; the
property test checks the cash-flow identity

    realized + unrealized(mark) == sum(-q_i * p_i) + final_quantity * mark

with exact Decimal equality. Exactness needs exact arithmetic, so the property
runs in a wide decimal context that traps Inexact, and the generated
positions stay on a grid of quantities (2**a * 5**b lots) whose average entry
prices have finite decimal expansions; the fills between them are arbitrary
differences of those positions (opens, increases, reductions, closes, flips).
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.accounting import Position

D = Decimal


def _position(*fills: tuple[str, str]) -> Position:
    position = Position("BTCUSDT")
    for quantity, price in fills:
        position.apply_fill(D(quantity), D(price))
    return position


def test_a_new_position_is_flat() -> None:
    position = Position("BTCUSDT")

    assert position.symbol == "BTCUSDT"
    assert (position.quantity, position.entry_price, position.realized_pnl) == (0, 0, 0)
    assert position.unrealized_pnl(D(100)) == 0
    assert position.notional(D(100)) == 0


def test_open_a_long() -> None:
    position = Position("BTCUSDT")

    realized = position.apply_fill(D(2), D(100))

    assert realized == 0
    assert position.quantity == D(2)
    assert position.entry_price == D(100)
    assert position.realized_pnl == 0


def test_increase_averages_the_entry_price() -> None:
    position = _position(("2", "100"))

    realized = position.apply_fill(D(1), D(130))

    assert realized == 0
    assert position.quantity == D(3)
    assert position.entry_price == D(110)  # (2*100 + 1*130) / 3


def test_reduce_realizes_pnl_on_the_closed_part_and_keeps_the_entry() -> None:
    position = _position(("2", "100"), ("1", "130"))

    realized = position.apply_fill(D(-1), D(125))

    assert realized == D(15)  # 1 * (125 - 110)
    assert position.quantity == D(2)
    assert position.entry_price == D(110)
    assert position.realized_pnl == D(15)


def test_close_realizes_the_rest_and_resets_the_entry() -> None:
    position = _position(("2", "100"), ("1", "130"), ("-1", "125"))

    realized = position.apply_fill(D(-2), D(105))

    assert realized == D(-10)  # 2 * (105 - 110)
    assert position.quantity == 0
    assert position.entry_price == 0
    assert position.realized_pnl == D(5)
    assert position.unrealized_pnl(D(1_000)) == 0


def test_a_short_gains_when_the_price_falls() -> None:
    position = _position(("-1.5", "2000"))

    realized = position.apply_fill(D("0.5"), D(1900))

    assert realized == D(50)  # 0.5 * (2000 - 1900)
    assert position.quantity == D(-1)
    assert position.entry_price == D(2000)


def test_increase_a_short_averages_the_entry_price() -> None:
    position = _position(("-0.010", "84000.0"))

    position.apply_fill(D("-0.030"), D("84400.0"))

    assert position.quantity == D("-0.040")
    assert position.entry_price == D("84300.0")  # (0.010*84000 + 0.030*84400) / 0.040


def test_a_fill_larger_than_a_long_flips_it_at_the_fill_price() -> None:
    position = _position(("1", "100"))

    realized = position.apply_fill(D(-3), D(120))

    assert realized == D(20)  # the closed 1 at 120 - 100
    assert position.quantity == D(-2)
    assert position.entry_price == D(120)
    assert position.realized_pnl == D(20)


def test_a_fill_larger_than_a_short_flips_it_at_the_fill_price() -> None:
    position = _position(("-2", "50"))

    realized = position.apply_fill(D(5), D(40))

    assert realized == D(20)  # the closed 2 at 50 - 40
    assert position.quantity == D(3)
    assert position.entry_price == D(40)


def test_a_zero_fill_changes_nothing() -> None:
    position = _position(("2", "100"))

    assert position.apply_fill(D(0), D(999)) == 0
    assert (position.quantity, position.entry_price, position.realized_pnl) == (D(2), D(100), 0)


def test_unrealized_pnl_and_notional() -> None:
    long = _position(("2", "100"), ("1", "130"))
    short = _position(("-1.5", "2000"))

    assert long.unrealized_pnl(D(120)) == D(30)  # 3 * (120 - 110)
    assert short.unrealized_pnl(D(1900)) == D(150)  # -1.5 * (1900 - 2000)
    assert long.notional(D(120)) == D(360)
    assert short.notional(D(1900)) == D(2850)


@pytest.mark.parametrize(
    ("quantity", "rate", "expected"),
    [
        ("0.5", "0.0001", "-4.2"),  # a long pays a positive rate
        ("-0.5", "0.0001", "4.2"),  # a short receives it
        ("0.5", "-0.0001", "4.2"),  # a long receives a negative rate
        ("-0.5", "-0.0001", "-4.2"),
        ("0", "0.0001", "0"),
    ],
)
def test_funding_payment_sign(quantity: str, rate: str, expected: str) -> None:
    position = _position((quantity, "84000")) if quantity != "0" else Position("BTCUSDT")

    credit = position.funding_payment(D(rate), D("84000"))

    assert credit == D(expected)


# --- property: cash-flow identity ----------------------------------------------------------------

LOT = D("0.001")
_GRID = sorted({2**a * 5**b for a in range(7) for b in range(4)})
_positions = st.one_of(
    st.just(0),
    st.sampled_from(_GRID),
    st.sampled_from(_GRID).map(lambda lots: -lots),
)
_prices = st.integers(min_value=1, max_value=10_000_000).map(lambda cents: D(cents) / 100)


def _exact_context() -> Context:
    context = Context(prec=2_000)
    context.traps[Inexact] = True
    return context


@settings(max_examples=200, deadline=None)
@given(
    path=st.lists(st.tuples(_positions, _prices), min_size=1, max_size=30),
    mark=_prices,
)
def test_realized_plus_unrealized_equals_the_cash_flows(path: list[tuple[int, Decimal]], mark: Decimal) -> None:
    with localcontext(_exact_context()):
        position = Position("BTCUSDT")
        fills: list[tuple[Decimal, Decimal]] = []
        for target_lots, price in path:
            quantity = target_lots * LOT - position.quantity
            if quantity == 0:
                continue
            position.apply_fill(quantity, price)
            fills.append((quantity, price))

        cash_flows = sum((-q * p for q, p in fills), D(0))
        assert position.quantity == sum((q for q, _ in fills), D(0))
        assert position.realized_pnl + position.unrealized_pnl(mark) == (cash_flows + position.quantity * mark)
        if position.quantity == 0:
            assert position.entry_price == 0
        else:
            assert position.entry_price > 0


@settings(max_examples=200, deadline=None)
@given(
    fills=st.lists(
        st.tuples(
            st.integers(min_value=-5_000, max_value=5_000).map(lambda lots: lots * LOT),
            _prices,
        ),
        max_size=30,
    )
)
def test_quantity_is_the_sum_of_signed_fills_and_realized_is_returned(
    fills: list[tuple[Decimal, Decimal]],
) -> None:
    position = Position("ETHUSDT")
    returned = D(0)

    for quantity, price in fills:
        returned += position.apply_fill(quantity, price)

    assert position.quantity == sum((q for q, _ in fills), D(0))
    assert position.realized_pnl == returned
    assert (position.entry_price == 0) is (position.quantity == 0)
