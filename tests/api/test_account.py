"""The venue account: isolated and cross wallets, funding, liquidation, snapshot; prices from real BTCUSDT bars."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from venue_harness import money, real_bars, real_schedule

from keel.api.account import Account, Liquidation
from keel.core.ports import MarginType, PositionMode, PositionSide

BTC = "BTCUSDT"
BOTH = (BTC, PositionSide.BOTH)
BARS = real_bars(BTC)


def account(margin_type: MarginType = MarginType.CROSSED, leverage: int = 10) -> Account:
    return Account([BTC], real_schedule(), Decimal("10000"), leverage, margin_type, PositionMode.ONE_WAY)


def test_opening_an_isolated_position_moves_its_initial_margin_and_fee_into_its_wallet() -> None:
    # Arrange: 0.2 BTC at the real open 95502.8 at 10x, taker fee 0.05%
    book = account(MarginType.ISOLATED)
    price = money(BARS[1].open)
    fee = Decimal("0.2") * price * Decimal("0.0005")

    # Act
    book.apply_fill(BOTH, Decimal("0.2"), price, fee)

    # Assert
    margin = Decimal("0.2") * price / 10
    assert book.positions[BOTH].isolated_wallet == margin - fee
    assert book.cross_wallet == Decimal("10000") - margin
    assert book.wallet_balance() == Decimal("10000") - fee


def test_reducing_an_isolated_position_releases_its_share_with_the_realized_pnl() -> None:
    # Arrange
    book = account(MarginType.ISOLATED)
    entry, exit_price = money(BARS[1].open), money(BARS[300].close)
    book.apply_fill(BOTH, Decimal("0.2"), entry, Decimal("0"))
    wallet_before = book.positions[BOTH].isolated_wallet

    # Act: sell half at a later real close
    realized = book.apply_fill(BOTH, Decimal("-0.1"), exit_price, Decimal("0"))

    # Assert
    assert realized == Decimal("0.1") * (exit_price - entry)
    assert book.positions[BOTH].isolated_wallet == (wallet_before + realized) / 2
    assert book.wallet_balance() == Decimal("10000") + realized


def test_funding_of_an_isolated_position_is_booked_in_its_wallet() -> None:
    # Arrange: the real 2025-05-04 16:00 BTCUSDT settlement: rate 0.00003745, mark 95421.1
    book = account(MarginType.ISOLATED)
    book.apply_fill(BOTH, Decimal("0.2"), money(BARS[1].open), Decimal("0"))
    isolated_before, cross_before = book.positions[BOTH].isolated_wallet, book.cross_wallet

    # Act
    ((_, amount),) = book.settle_funding(BTC, Decimal("0.00003745"), Decimal("95421.1"))

    # Assert: a long pays 0.2 * 95421.1 * 0.00003745
    assert amount == -Decimal("0.2") * Decimal("95421.1") * Decimal("0.00003745")
    assert book.positions[BOTH].isolated_wallet == isolated_before + amount
    assert book.cross_wallet == cross_before
    assert book.funding_received == amount


def test_isolated_liquidation_keeps_the_fee_within_the_margin_left() -> None:
    # Arrange: 0.2 BTC long at 95502.8, 100x isolated: wallet 191.0056; liquidated at the real close
    # 94253.0 (bar 500), far through its liquidation price.
    book = account(MarginType.ISOLATED, leverage=100)
    entry, mark = money(BARS[1].open), money(BARS[500].close)
    book.apply_fill(BOTH, Decimal("0.2"), entry, Decimal("0"))
    book.marks[BTC] = mark
    (due,) = book.due_liquidations()

    # Act
    ((realized, fee, covered),) = book.liquidate([due], [mark])

    # Assert: loss 0.2 * (94253.0 - 95502.8) = -249.96 exceeds the 191.0056 margin: no fee can be
    # charged, the insurance fund covers 58.9544 and the cross wallet keeps what it had.
    assert realized == Decimal("0.2") * (mark - entry)
    assert fee == 0
    assert covered == Decimal("249.96") - Decimal("191.0056")
    assert book.cross_wallet == Decimal("10000") - Decimal("191.0056")
    assert book.quantity(BOTH) == 0 and book.positions[BOTH].isolated_wallet == 0


def test_cross_liquidation_takes_the_margin_left_as_clearance_fee() -> None:
    # Arrange: 7.0 BTC long at 95502.8 on 10000 of cross wallet at 50x; the real close 94253.0
    # (bar 500) leaves 10000 - 7 * 1249.8 = 1251.4 of margin against a maintenance margin of
    # 659771 * 1% - 1300 = 5297.71 (bracket 3).
    book = account(MarginType.CROSSED, leverage=50)
    entry, mark = money(BARS[1].open), money(BARS[500].close)
    book.apply_fill(BOTH, Decimal("7.0"), entry, Decimal("0"))
    book.marks[BTC] = mark
    (due,) = book.due_liquidations()

    # Act
    ((realized, fee, covered),) = book.liquidate([due], [mark])

    # Assert: the 2% clearance fee (13195.42) is capped at the 1251.4 left; nothing for the insurance fund.
    assert realized == Decimal("-8748.6")
    assert Decimal("7.0") * mark * Decimal("0.020000") > Decimal("1251.4")
    assert fee == Decimal("1251.4")
    assert covered == 0
    assert book.cross_wallet == 0
    assert book.liquidation_fees == fee == book.fees_paid


def test_a_cross_position_above_maintenance_is_not_liquidated() -> None:
    # Arrange
    book = account(MarginType.CROSSED, leverage=5)
    book.apply_fill(BOTH, Decimal("0.2"), money(BARS[1].open), Decimal("0"))

    # Act
    book.marks[BTC] = money(BARS[500].close)

    # Assert
    assert book.due_liquidations() == []


def test_state_round_trips_through_restore() -> None:
    # Arrange
    book = account(MarginType.ISOLATED)
    book.apply_fill(BOTH, Decimal("0.2"), money(BARS[1].open), Decimal("0.1"))
    book.marks[BTC] = money(BARS[2].close)
    copy = account()

    # Act
    copy.restore(book.state())

    # Assert
    assert copy.state() == book.state()
    assert copy.liquidation_price(copy.positions[BOTH]) == book.liquidation_price(book.positions[BOTH])


@settings(max_examples=60, deadline=None)
@given(
    fills=st.lists(
        st.tuples(
            st.sampled_from(["BTCUSDT", "ETHUSDT"]),
            st.sampled_from([PositionSide.LONG, PositionSide.SHORT]),
            st.integers(min_value=-3, max_value=3).filter(bool),
        ),
        max_size=20,
    )
)
def test_holds_tells_a_symbol_with_an_open_position_in_hedge_mode_and_after_restore(
    fills: list[tuple[str, PositionSide, int]],
) -> None:
    # Arrange: hedge-mode fills that open, close and flip either side of two symbols
    symbols = ["BTCUSDT", "ETHUSDT"]
    book = Account(symbols, real_schedule(), Decimal("1000000"), 10, MarginType.CROSSED, PositionMode.HEDGE)
    price = money(BARS[1].open)
    for symbol, side, lots in fills:
        book.apply_fill((symbol, side), Decimal(lots) / 100, price, Decimal("0"))
    restored = Account(symbols, real_schedule(), Decimal("1000000"), 10, MarginType.CROSSED, PositionMode.HEDGE)

    # Act
    restored.restore(book.state())

    # Assert
    for symbol in symbols:
        expected = any(p.quantity != 0 for key, p in book.positions.items() if key[0] == symbol)
        assert book.holds(symbol) is expected
        assert restored.holds(symbol) is expected


@settings(max_examples=80, deadline=None)
@given(
    fills=st.lists(
        st.tuples(st.integers(min_value=-40, max_value=40).filter(bool), st.integers(min_value=0, max_value=599)),
        min_size=1,
        max_size=30,
    ),
    margin_type=st.sampled_from([MarginType.CROSSED, MarginType.ISOLATED]),
)
def test_wallet_is_initial_minus_fees_plus_realized_pnl_whatever_the_margin_type(
    fills: list[tuple[int, int]], margin_type: MarginType
) -> None:
    # Arrange: fills of random size at real closes, with the taker fee
    book = account(margin_type)
    realized_total = fees = Decimal(0)

    # Act
    for steps, bar in fills:
        price = money(BARS[bar].close)
        quantity = Decimal(steps) / 1000
        fee = abs(quantity) * price * Decimal("0.0005")
        realized_total += book.apply_fill(BOTH, quantity, price, fee)
        fees += fee

    # Assert: the wallets only move money between them
    assert abs(book.wallet_balance() - (Decimal("10000") - fees + realized_total)) < Decimal("1e-18")
    assert book.fees_paid == fees
    if book.quantity(BOTH) == 0:
        assert book.positions[BOTH].isolated_wallet == 0


def test_liquidation_record_keeps_the_mark() -> None:
    # Arrange
    book = account(MarginType.ISOLATED, leverage=100)
    book.apply_fill(BOTH, Decimal("0.2"), money(BARS[1].open), Decimal("0"))

    # Act
    book.marks[BTC] = money(BARS[500].close)

    # Assert
    assert book.due_liquidations() == [
        Liquidation(key=BOTH, margin_type=MarginType.ISOLATED, quantity=Decimal("0.2"), mark_price=Decimal("94253.0"))
    ]


@settings(max_examples=300, deadline=None)
@given(
    margin_type=st.sampled_from([MarginType.CROSSED, MarginType.ISOLATED]),
    leverage=st.integers(1, 125),
    quantity=st.decimals(Decimal("-3"), Decimal("3"), places=3).filter(lambda q: q != 0),
    # The mark as a multiple of the liquidation price: around it, or anywhere between.
    offset=st.one_of(
        st.decimals(Decimal("0.999999"), Decimal("1.000001"), places=8),
        st.decimals(Decimal("0.2"), Decimal("3"), places=4),
    ),
)
def test_float_pre_check_never_clears_an_account_the_exact_check_would_liquidate(
    margin_type: MarginType, leverage: int, quantity: Decimal, offset: Decimal
) -> None:
    # Arrange: a real entry, the mark near the position's own liquidation price
    book = Account([BTC], real_schedule(), Decimal("10000"), 125, margin_type, PositionMode.ONE_WAY)
    book.leverage[BTC] = leverage
    book.apply_fill(BOTH, quantity, money(BARS[1].open), Decimal("0.05"))
    book.marks[BTC] = money(BARS[1].open)
    liquidation = book.liquidation_price(book.positions[BOTH])
    book.marks[BTC] = (money(BARS[1].open) if liquidation is None or liquidation <= 0 else liquidation) * offset

    # Act
    cleared = book.clearly_solvent()
    exact = book.due_liquidations_exactly()
    book.note_mark_float(BTC, book.marks[BTC], float(book.marks[BTC]))  # as the venue does for a bar's close
    cleared_with_noted_mark = book.clearly_solvent()

    # Assert
    assert not (cleared and exact)
    assert cleared_with_noted_mark == cleared
    assert book.due_liquidations() == exact


def test_float_pre_check_clears_a_healthy_account() -> None:
    # Arrange: 0.2 BTC at 5x, marked to a later real close far from its liquidation price
    book = account(MarginType.CROSSED, leverage=5)
    book.apply_fill(BOTH, Decimal("0.2"), money(BARS[1].open), Decimal("0"))
    book.marks[BTC] = money(BARS[500].close)

    # Act
    cleared = book.clearly_solvent()

    # Assert
    assert cleared
    assert book.due_liquidations_exactly() == []


ETH = "ETHUSDT"
ETH_BOTH = (ETH, PositionSide.BOTH)
ETH_BARS = real_bars(ETH)


@settings(max_examples=400, deadline=None)
@given(
    margin_types=st.tuples(*[st.sampled_from([MarginType.CROSSED, MarginType.ISOLATED])] * 2),
    leverage=st.integers(1, 50),
    btc=st.decimals(Decimal("-3"), Decimal("3"), places=3),
    eth=st.decimals(Decimal("-40"), Decimal("40"), places=2),
    start=st.integers(0, 299),
    # Each mark's move from the one the bound was found at: tiny, small, or anywhere up to the liquidation.
    moves=st.tuples(
        *[st.one_of(st.floats(-1e-6, 1e-6), st.floats(-0.01, 0.01), st.floats(-0.9, 2.0), st.sampled_from([0.0]))] * 2
    ),
)
def test_solvency_bound_clears_only_what_the_float_pre_check_and_the_exact_check_clear(
    margin_types: tuple[MarginType, MarginType],
    leverage: int,
    btc: Decimal,
    eth: Decimal,
    start: int,
    moves: tuple[float, float],
) -> None:
    # Arrange: up to two real-priced positions, solvent at the marks the bound is found at
    book = Account([BTC, ETH], real_schedule(), Decimal("10000"), 50, MarginType.CROSSED, PositionMode.ONE_WAY)
    for (symbol, key, bars, quantity), margin_type in zip(
        ((BTC, BOTH, BARS, btc), (ETH, ETH_BOTH, ETH_BARS, eth)), margin_types, strict=True
    ):
        book.margin_types[symbol] = margin_type
        book.leverage[symbol] = leverage
        if quantity != 0:
            book.apply_fill(key, quantity, money(bars[start].open), Decimal("0.05"))
        book.marks[symbol] = money(bars[start].close)
    found = book.clearly_solvent_from_marks()

    # Act: the marks move (a bar's close, noted as the venue notes it)
    for symbol, bars, move in ((BTC, BARS, moves[0]), (ETH, ETH_BARS, moves[1])):
        close = bars[start].close * (1.0 + move)
        book.marks[symbol] = money(close)
        book.note_mark_float(symbol, book.marks[symbol], close)
    bound = book._solvency_bound
    by_bound = bound is not None and bound.holds(book)
    cleared = book.clearly_solvent()

    # Assert: the bound never clears what the full pre-check or the exact Decimal check would not
    if by_bound:
        assert found and cleared
    if cleared:
        assert book.clearly_solvent_from_marks()
        assert book.due_liquidations_exactly() == []
    assert book.due_liquidations() == book.due_liquidations_exactly()


def test_solvency_bound_clears_a_healthy_account_after_a_bar_sized_move_without_recomputing() -> None:
    # Arrange: 0.2 BTC at 5x, found solvent at a real close
    book = account(MarginType.CROSSED, leverage=5)
    book.apply_fill(BOTH, Decimal("0.2"), money(BARS[1].open), Decimal("0"))
    book.marks[BTC] = money(BARS[1].close)
    assert book.clearly_solvent_from_marks()
    bound = book._solvency_bound

    # Act: the next real close
    book.marks[BTC] = money(BARS[2].close)
    book.note_mark_float(BTC, book.marks[BTC], BARS[2].close)
    cleared = book.clearly_solvent()

    # Assert: cleared by the bound kept at the first close (not found again)
    assert cleared
    assert bound is not None and book._solvency_bound is bound
    assert book.due_liquidations_exactly() == []


def test_solvency_bound_no_longer_holds_once_the_position_changes() -> None:
    # Arrange
    book = account(MarginType.CROSSED, leverage=5)
    book.apply_fill(BOTH, Decimal("0.2"), money(BARS[1].open), Decimal("0"))
    book.marks[BTC] = money(BARS[1].close)
    assert book.clearly_solvent_from_marks()
    bound = book._solvency_bound

    # Act: the position grows at the same mark
    book.apply_fill(BOTH, Decimal("0.1"), money(BARS[1].close), Decimal("0"))

    # Assert
    assert bound is not None and not bound.holds(book)
