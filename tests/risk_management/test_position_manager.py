"""keel's position book, driven by events on the bus, on real BTCUSDT / ETHUSDT prices.

The book changes only through ``OrderFilled``, ``FundingPaid`` and
``BarClosed`` events; the last tests wire it behind the simulated exchange and
check that both books agree exactly after the same real fills.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.api.simulated_exchange import SimulatedExchange
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_SECOND, SimulatedClock
from keel.core.messages import (
    BarClosed,
    FundingPaid,
    FundingRateUpdated,
    MarkPriceUpdated,
    OrderFilled,
    PositionChanged,
    SubmitOrder,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderType
from keel.market_data.loaders import load_funding
from keel.risk_management.position_manager import PositionLifecycle, PositionManager

ROOT = Path(__file__).resolve().parents[2]
FUNDING_FILE = ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz"

CAPITAL = Decimal("10000")
TAKER_FEE = Decimal("0.0005")
MINUTE_NS = 60_000 * NANOS_PER_MILLI
BAR_COUNT = 120
BTC = "BTCUSDT"
ETH = "ETHUSDT"


@functools.cache
def first_btc_funding(bars: tuple[BarClosed, ...]) -> FundingRateUpdated:
    """The real BTCUSDT settlement of 2025-05-04 16:00 UTC, inside the span of the real BTCUSDT ``bars``."""
    frame = load_funding(FUNDING_FILE).frame
    rows = frame[(frame["symbol"] == BTC) & (frame["time_ms"] * NANOS_PER_MILLI > bars[0].open_time)]
    row = next(rows.itertuples(index=False))
    ts = int(row.time_ms) * NANOS_PER_MILLI
    assert ts <= bars[-1].ts_event
    return FundingRateUpdated(
        symbol=BTC,
        funding_time=ts,
        rate=Decimal(repr(float(row.funding_rate))),
        mark_price=Decimal(repr(float(row.mark_price))),
        ts_event=ts,
        ts_init=ts,
    )


def money(value: float) -> Decimal:
    return Decimal(repr(value))


_trade_ids = iter(range(1, 1_000_000))


def fill_at_open(bar: BarClosed, side: OrderSide, quantity: str) -> OrderFilled:
    """A taker fill at a real bar's open, with the taker commission on it."""
    price = money(bar.open)
    qty = Decimal(quantity)
    return OrderFilled(
        client_order_id=f"t-{next(_trade_ids)}",
        venue_order_id="1",
        symbol=bar.symbol,
        trade_id=str(next(_trade_ids)),
        side=side,
        last_quantity=qty,
        last_price=price,
        commission=qty * price * TAKER_FEE,
        liquidity_side=LiquiditySide.TAKER,
        ts_event=bar.open_time,
        ts_init=bar.open_time,
    )


def funding_paid(funding: FundingRateUpdated, quantity: Decimal) -> FundingPaid:
    assert funding.mark_price is not None
    return FundingPaid(
        symbol=funding.symbol,
        funding_time=funding.funding_time,
        rate=funding.rate,
        mark_price=funding.mark_price,
        position_quantity=quantity,
        amount=-quantity * funding.mark_price * funding.rate,
        ts_event=funding.funding_time,
        ts_init=funding.funding_time,
    )


class Book:
    """A started PositionManager on its own bus, with PositionChanged collected."""

    def __init__(self, real_data) -> None:
        self.clock = SimulatedClock(real_data.bars(BTC, 1)[0].open_time)
        self.bus = EventBus()
        self.manager = PositionManager(CAPITAL, self.bus, self.clock)
        self.manager.start()
        self.changes: list[PositionChanged] = []
        self.bus.subscribe(PositionChanged, self.changes.append)
        self.bus.drain()

    def publish(self, *events: BarClosed | OrderFilled | FundingPaid) -> None:
        for event in events:
            self.bus.publish(event)
        self.bus.drain()


# --- booking from events -------------------------------------------------------------------------


def test_fills_bars_and_funding_book_quantity_entry_pnl_fees_funding_and_equity(real_data) -> None:
    # Arrange
    book = Book(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)
    funding = first_btc_funding(bars)
    fills = [
        fill_at_open(bars[1], OrderSide.BUY, "0.010"),  # 95502.8
        fill_at_open(bars[2], OrderSide.BUY, "0.006"),  # 95478.0
        fill_at_open(bars[3], OrderSide.SELL, "0.004"),  # 95457.7
    ]

    # Act
    book.publish(*fills, bars[26], funding_paid(funding, Decimal("0.012")))

    # Assert
    manager = book.manager
    assert money(bars[26].close) == funding.mark_price == Decimal("95421.1")
    assert manager.quantity(BTC) == Decimal("0.012")
    assert manager.positions[BTC].entry_price == Decimal("95493.5")  # (955.028 + 572.868) / 0.016
    assert manager.realized_pnl() == Decimal("-0.1432")  # 0.004 x (95457.7 - 95493.5)
    assert manager.closing_pnls == [Decimal("-0.1432")]
    assert manager.unrealized_pnl() == Decimal("-0.8688")  # 0.012 x (95421.1 - 95493.5)
    assert manager.fees_paid == Decimal("0.95486340") == sum((f.commission for f in fills), Decimal(0))
    assert manager.fees_by_symbol == {BTC: Decimal("0.95486340")}
    assert manager.funding_received == Decimal("-0.042882242340")  # -0.012 x 95421.1 x 0.00003745
    assert manager.funding_by_symbol == {BTC: manager.funding_received}
    assert manager.fills == 3
    assert manager.equity() == (
        CAPITAL + manager.realized_pnl() + manager.unrealized_pnl() - manager.fees_paid + manager.funding_received
    )
    assert manager.equity() == Decimal("9997.990254357660")
    assert manager.exposure(BTC) == manager.gross_exposure() == Decimal("0.012") * Decimal("95421.1")


def test_clearing_the_books_and_replaying_the_same_events_books_the_same_account(real_data) -> None:
    # Arrange: a booked account (fills, a mark, funding), as recovery finds the books after the history replay
    book = Book(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)
    funding = funding_paid(first_btc_funding(bars), Decimal("0.006"))
    fills = [fill_at_open(bars[1], OrderSide.BUY, "0.010"), fill_at_open(bars[3], OrderSide.SELL, "0.004")]
    book.publish(*fills, bars[26], funding)
    manager = book.manager
    before = (
        manager.quantity(BTC),
        manager.realized_pnl(),
        manager.fees_paid,
        manager.funding_received,
        manager.equity(),
    )

    # Act
    manager.clear_books()
    cleared = (dict(manager.positions), manager.fills, manager.fees_paid, manager.equity(), manager.marks[BTC])
    for event in (*fills, funding):
        manager.replay(event)

    # Assert: nothing booked but the marks kept; the same account after the replay
    assert cleared == ({}, 0, 0, CAPITAL, money(bars[26].close))
    assert (
        manager.quantity(BTC),
        manager.realized_pnl(),
        manager.fees_paid,
        manager.funding_received,
        manager.equity(),
    ) == before
    assert manager.fills == 2


def test_every_fill_publishes_the_position_change(real_data) -> None:
    # Arrange
    book = Book(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)

    # Act
    book.publish(
        fill_at_open(bars[1], OrderSide.BUY, "0.010"),
        fill_at_open(bars[2], OrderSide.BUY, "0.006"),
        fill_at_open(bars[3], OrderSide.SELL, "0.004"),
    )

    # Assert
    assert [(c.symbol, c.quantity, c.entry_price, c.realized_pnl) for c in book.changes] == [
        (BTC, Decimal("0.010"), Decimal("95502.8"), Decimal(0)),
        (BTC, Decimal("0.016"), Decimal("95493.5"), Decimal(0)),
        (BTC, Decimal("0.012"), Decimal("95493.5"), Decimal("-0.1432")),
    ]
    assert [c.ts_event for c in book.changes] == [bars[1].open_time, bars[2].open_time, bars[3].open_time]


def test_a_fill_through_zero_realizes_the_closed_part_and_opens_the_rest_at_the_fill_price(real_data) -> None:
    # Arrange
    book = Book(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)
    book.publish(fill_at_open(bars[1], OrderSide.BUY, "0.005"))

    # Act
    book.publish(fill_at_open(bars[7], OrderSide.SELL, "0.008"), bars[7])

    # Assert
    manager = book.manager
    assert money(bars[7].open) == Decimal("95486.5")
    assert manager.quantity(BTC) == Decimal("-0.003")
    assert manager.positions[BTC].entry_price == Decimal("95486.5")
    assert manager.realized_pnl() == Decimal("0.005") * (Decimal("95486.5") - Decimal("95502.8"))
    assert manager.unrealized_pnl() == Decimal("-0.003") * (money(bars[7].close) - Decimal("95486.5"))


def test_a_closed_position_has_no_unrealized_pnl_and_keeps_its_realized_pnl(real_data) -> None:
    # Arrange
    book = Book(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)

    # Act
    book.publish(
        fill_at_open(bars[1], OrderSide.BUY, "0.004"),
        fill_at_open(bars[30], OrderSide.SELL, "0.004"),
        bars[30],
    )

    # Assert
    manager = book.manager
    expected_realized = Decimal("0.004") * (money(bars[30].open) - money(bars[1].open))
    assert manager.quantity(BTC) == 0
    assert manager.unrealized_pnl() == 0 and manager.exposure(BTC) == 0
    assert manager.realized_pnl() == expected_realized
    assert manager.equity() == CAPITAL + expected_realized - manager.fees_paid


def test_unmarked_fill_is_marked_at_its_own_price_until_a_bar_arrives(real_data) -> None:
    # Arrange
    book = Book(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)

    # Act
    book.publish(fill_at_open(bars[1], OrderSide.BUY, "0.010"))
    before_bar = book.manager.unrealized_pnl()
    book.publish(bars[1])

    # Assert
    assert before_bar == 0
    assert book.manager.marks[BTC] == money(bars[1].close)
    assert book.manager.unrealized_pnl() == Decimal("0.010") * (money(bars[1].close) - money(bars[1].open))


def test_gross_exposure_sums_both_sides_of_several_symbols(real_data) -> None:
    # Arrange
    book = Book(real_data)
    btc, eth = real_data.bars(BTC, BAR_COUNT), real_data.bars(ETH, BAR_COUNT)

    # Act
    book.publish(
        fill_at_open(btc[1], OrderSide.BUY, "0.010"),
        fill_at_open(eth[1], OrderSide.SELL, "0.500"),
        btc[2],
        eth[2],
    )

    # Assert
    manager = book.manager
    assert manager.exposure(BTC) == Decimal("0.010") * money(btc[2].close)
    assert manager.exposure(ETH) == Decimal("0.500") * money(eth[2].close)
    assert manager.gross_exposure() == manager.exposure(BTC) + manager.exposure(ETH)
    assert manager.exposure("SOLUSDT") == 0


# --- agreement with the simulated exchange ------------------------------------------------------------


class Wired:
    """Simulated exchange -> bus -> PositionManager, fed real bars and funding through the bus."""

    def __init__(self, real_data) -> None:
        self.clock = SimulatedClock(real_data.bars(BTC, 1)[0].open_time)
        self.bus = EventBus()
        self.exchange = SimulatedExchange(real_data.instruments(), self.clock, initial_balance=CAPITAL, leverage=5)
        self.exchange.set_report_handler(self.bus.publish)
        self.bus.subscribe(BarClosed, self.exchange.on_bar, name="exchange.bars")
        self.bus.subscribe(FundingRateUpdated, self.exchange.on_funding, name="exchange.funding")
        self.manager = PositionManager(CAPITAL, self.bus, self.clock)
        self.manager.start()
        self.fills: list[OrderFilled] = []
        self.bus.subscribe(OrderFilled, self.fills.append)
        self.bus.drain()
        self._ids = iter(range(1, 1_000_000))

    def publish(self, event: BarClosed | FundingRateUpdated) -> None:
        self.clock.advance_to(max(self.clock.timestamp_ns(), event.ts_event))
        self.bus.publish(event)
        self.bus.drain()

    def market(self, side: OrderSide, quantity: Decimal) -> None:
        now = self.clock.timestamp_ns()
        self.exchange.submit(
            SubmitOrder(
                client_order_id=f"w-{next(self._ids)}",
                symbol=BTC,
                side=side,
                order_type=OrderType.MARKET,
                quantity=quantity,
                ts_event=now,
                ts_init=now,
            )
        )
        self.bus.drain()

    def assert_books_agree(self) -> None:
        balance = self.exchange.balance()
        assert self.manager.fees_paid == self.exchange.fees_paid
        assert self.manager.funding_received == self.exchange.funding_received
        assert self.manager.unrealized_pnl() == balance.unrealized_pnl
        assert self.manager.equity() == balance.margin_balance


def venue_position(exchange: SimulatedExchange) -> tuple[Decimal, Decimal]:
    """(quantity, entry) of the venue's BTCUSDT position, driving its never-suspending coroutine."""
    coroutine = exchange.positions()
    try:
        coroutine.send(None)
    except StopIteration as stop:
        reports = stop.value
    else:  # pragma: no cover - the simulated venue never suspends
        coroutine.close()
        raise AssertionError("the simulated exchange suspended")
    for report in reports:
        if report.symbol == BTC:
            return report.quantity, report.entry_price
    return Decimal(0), Decimal(0)


def test_books_agree_exactly_with_the_exchange_after_real_fills_and_funding(real_data) -> None:
    # Arrange: a long built in two fills, partly sold, through the real 16:00 funding,
    # flipped short, then closed.
    wired = Wired(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)
    funding = first_btc_funding(bars)
    orders = {
        0: (OrderSide.BUY, Decimal("0.010")),
        1: (OrderSide.BUY, Decimal("0.006")),
        2: (OrderSide.SELL, Decimal("0.004")),
        40: (OrderSide.SELL, Decimal("0.020")),
        70: (OrderSide.BUY, Decimal("0.008")),
    }
    funding_fed = False

    # Act / Assert (at every bar)
    for index, bar in enumerate(bars[:90]):
        if not funding_fed and bar.ts_event > funding.funding_time:
            wired.publish(funding)
            funding_fed = True
            wired.assert_books_agree()
        wired.publish(bar)
        if index in orders:
            wired.market(*orders[index])
        wired.assert_books_agree()
        quantity, entry = venue_position(wired.exchange)
        assert wired.manager.quantity(BTC) == quantity
        if quantity != 0:
            assert wired.manager.positions[BTC].entry_price == entry

    # Assert
    assert funding_fed and wired.manager.funding_received != 0
    assert len(wired.fills) == 5
    assert wired.manager.quantity(BTC) == 0
    assert wired.manager.equity() == wired.exchange.wallet_balance
    assert wired.manager.equity() == (
        CAPITAL + wired.manager.realized_pnl() - wired.manager.fees_paid + wired.manager.funding_received
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    orders=st.lists(
        st.tuples(st.sampled_from([OrderSide.BUY, OrderSide.SELL]), st.integers(min_value=2, max_value=50)),
        min_size=1,
        max_size=40,
    )
)
def test_position_and_fees_agree_with_the_exchange_for_random_real_fills(
    orders: list[tuple[OrderSide, int]], real_data
) -> None:
    # Arrange
    wired = Wired(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)
    step = real_data.instruments()[BTC].market_step_size

    # Act
    for index, (side, steps) in enumerate(orders):
        wired.publish(bars[index])
        wired.market(side, steps * step)
    wired.publish(bars[len(orders)])

    # Assert
    quantity, entry = venue_position(wired.exchange)
    assert len(wired.fills) == len(orders)
    assert wired.manager.quantity(BTC) == quantity
    assert quantity == sum((Decimal(s) * step * side.sign for side, s in orders), Decimal(0))
    if quantity != 0:
        assert wired.manager.positions[BTC].entry_price == entry
    assert wired.manager.fees_paid == wired.exchange.fees_paid
    assert wired.manager.unrealized_pnl() == wired.exchange.balance().unrealized_pnl
    # Summation order differs between the books (per fill vs per total); an average entry price
    # can be a repeating decimal, so the two may differ in the 28th significant digit only.
    assert abs(wired.manager.equity() - wired.exchange.balance().margin_balance) < Decimal("1e-18")


# --- lifecycle and per-strategy books -------------------------------------------------------------


def strategy_fill(bar: BarClosed, side: OrderSide, quantity: str, strategy: str) -> OrderFilled:
    return msgspec.structs.replace(fill_at_open(bar, side, quantity), strategy=strategy)


def test_each_fill_is_classified_as_a_lifecycle_step(real_data) -> None:
    # Arrange
    book = Book(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)

    # Act: open, increase, reduce, flip, close
    book.publish(
        fill_at_open(bars[1], OrderSide.BUY, "0.010"),
        fill_at_open(bars[2], OrderSide.BUY, "0.005"),
        fill_at_open(bars[3], OrderSide.SELL, "0.004"),
        fill_at_open(bars[4], OrderSide.SELL, "0.020"),
        fill_at_open(bars[5], OrderSide.BUY, "0.009"),
    )

    # Assert
    assert [e.step for e in book.manager.events] == [
        PositionLifecycle.OPEN,
        PositionLifecycle.INCREASE,
        PositionLifecycle.REDUCE,
        PositionLifecycle.FLIP,
        PositionLifecycle.CLOSE,
    ]
    assert [e.quantity_after for e in book.manager.events] == [
        Decimal("0.010"),
        Decimal("0.015"),
        Decimal("0.011"),
        Decimal("-0.009"),
        Decimal("0.000"),
    ]
    assert book.manager.lifecycle_counts[PositionLifecycle.FLIP] == 1


def test_a_mark_price_update_marks_positions_at_the_venue_mark(real_data) -> None:
    # Arrange
    book = Book(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)
    book.publish(fill_at_open(bars[1], OrderSide.BUY, "0.010"))
    funding = first_btc_funding(bars)
    assert funding.mark_price is not None

    # Act
    book.publish(
        MarkPriceUpdated(
            symbol=BTC,
            mark_price=funding.mark_price,
            index_price=funding.mark_price,
            estimated_settle_price=funding.mark_price,
            funding_rate=funding.rate,
            next_funding_time=funding.funding_time,
            ts_event=funding.funding_time,
            ts_init=funding.funding_time,
        )
    )

    # Assert
    assert book.manager.unrealized_pnl() == Decimal("0.010") * (funding.mark_price - money(bars[1].open))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fills=st.lists(
        st.tuples(
            st.sampled_from(["trend", "mean_reversion", "funding"]),
            st.sampled_from([OrderSide.BUY, OrderSide.SELL]),
            st.integers(min_value=1, max_value=30),
        ),
        min_size=1,
        max_size=30,
    ),
    funded=st.booleans(),
)
def test_strategy_books_add_up_to_the_net_book(
    fills: list[tuple[str, OrderSide, int]], funded: bool, real_data
) -> None:
    # Arrange
    book = Book(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)
    step = real_data.instruments()[BTC].market_step_size

    # Act
    for index, (strategy, side, steps) in enumerate(fills):
        book.publish(strategy_fill(bars[index + 1], side, str(steps * step), strategy))
    if funded:
        book.publish(funding_paid(first_btc_funding(bars), book.manager.quantity(BTC)))
    book.publish(bars[len(fills) + 1])

    # Assert
    manager = book.manager
    net = manager.pnl_by_symbol()[BTC]
    by_strategy = manager.pnl_by_strategy()
    # Average entries can be repeating decimals: the books may differ in the 28th significant digit.
    total = sum((p.realized + p.unrealized for p in by_strategy.values()), Decimal(0))
    assert abs(total - (net.realized + net.unrealized)) < Decimal("1e-18")
    assert sum((p.fees for p in by_strategy.values()), Decimal(0)) == manager.fees_paid
    assert abs(sum((p.funding for p in by_strategy.values()), Decimal(0)) - manager.funding_received) < Decimal("1e-20")
    assert sum((q.quantity for q in manager.strategy_positions.values()), Decimal(0)) == manager.quantity(BTC)
    by_symbol = sum((p.total for p in manager.pnl_by_symbol().values()), Decimal(0))
    assert abs(manager.equity() - manager.initial_capital - by_symbol) < Decimal("1e-18")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["fill", "bar", "funding", "capital", "ask"]), st.integers(-9, 9)), max_size=30
    )
)
def test_equity_and_exposure_asked_between_events_are_always_those_of_the_book_then(real_data, steps) -> None:
    # Arrange: real BTCUSDT bars; fills, marks, funding and a rebased capital (a live account's opening balance)
    # in a random order, equity asked between them
    book = Book(real_data)
    bars = real_data.bars(BTC, BAR_COUNT)
    funding = first_btc_funding(bars)
    observed, expected = [], []

    # Act
    for index, (kind, size) in enumerate(steps):
        bar = bars[index + 1]
        if kind == "fill" and size != 0:
            book.publish(fill_at_open(bar, OrderSide.BUY if size > 0 else OrderSide.SELL, f"0.00{abs(size)}"))
        elif kind == "bar":
            book.publish(bar)
        elif kind == "funding":
            book.publish(funding_paid(funding, book.manager.quantity(BTC)))
        elif kind == "capital":
            book.manager.initial_capital = CAPITAL + size
        manager = book.manager
        gross = sum(
            (abs(p.quantity) * manager.marks[s] for s, p in manager.positions.items() if p.quantity), Decimal(0)
        )
        observed.append((manager.equity(), manager.gross_exposure()))
        expected.append((manager.equity(dict(manager.marks)), gross))

    # Assert: the cached equity and gross exposure at the last marks are those computed afresh at the same marks
    assert observed == expected


def mark_price(symbol: str, price: Decimal, ts: int) -> MarkPriceUpdated:
    return MarkPriceUpdated(
        symbol=symbol,
        mark_price=price,
        index_price=price,
        estimated_settle_price=price,
        funding_rate=Decimal("0.0001"),
        next_funding_time=ts,
        ts_event=ts,
        ts_init=ts,
    )


def test_reference_marks_are_the_last_completed_bar_times_and_a_new_symbols_own(real_data) -> None:
    # Arrange: BTC and ETH marked at the first bar time
    book = Book(real_data)
    btc, eth, sol = (real_data.bars(symbol, 2) for symbol in (BTC, "ETHUSDT", "SOLUSDT"))
    book.publish(btc[0], eth[0])

    # Act: the next time's BTC bar, a mark price of ETH, then a first SOL bar
    book.publish(btc[1], mark_price("ETHUSDT", Decimal("1234.5"), btc[1].ts_event), sol[1])

    # Assert
    assert book.manager.marks == {
        BTC: money(btc[1].close),
        "ETHUSDT": Decimal("1234.5"),
        "SOLUSDT": money(sol[1].close),
    }
    assert book.manager.reference_marks() == {
        BTC: money(btc[0].close),
        "ETHUSDT": money(eth[0].close),
        "SOLUSDT": money(sol[1].close),
    }

    # Act: the time after settles every mark
    later = btc[1].ts_event + 60 * NANOS_PER_SECOND
    book.publish(msgspec.structs.replace(btc[1], ts_event=later, ts_init=later))

    # Assert
    assert book.manager.reference_marks() == {
        BTC: money(btc[1].close),
        "ETHUSDT": Decimal("1234.5"),
        "SOLUSDT": money(sol[1].close),
    }
