"""Positions, P&L, fees, funding and equity, kept from fills and funding events, per symbol and per strategy.

The :class:`PositionManager` is keel's own book: it changes only through
``OrderFilled`` and ``FundingPaid`` events (already de-duplicated by the order
manager) and marks positions to the venue's mark price (``MarkPriceUpdated``)
or, without one, the last bar close. The simulated venue keeps its own book
with the same accounting (:class:`~keel.core.accounting.Position`); tests
check the two agree.

Each fill is also booked to its strategy's sub-book of the symbol (the fill's
``strategy``). Sub-books of one symbol add up to its net position, and their
realized plus unrealized P&L add up to the net position's (P&L is linear in
the fills); realized P&L alone differs, since each sub-book averages its own
entries. Funding is split across sub-books by their signed quantities, which
is exact (a payment is ``-quantity x mark x rate``).

Every fill is classified as a lifecycle step of the net position: OPEN (from
flat), INCREASE, REDUCE, CLOSE (back to flat) or FLIP (through zero).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from mypy_extensions import mypyc_attr

from keel.core.accounting import ZERO, Position
from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.floats import decimal_of
from keel.core.messages import BarClosed, FundingPaid, MarkPriceUpdated, OrderFilled, PositionChanged

EVENTS_KEPT = 10_000
"""Position lifecycle events :attr:`PositionManager.events` keeps (the latest ones)."""


class PositionLifecycle(Enum):
    """What a fill did to a net position."""

    OPEN = "OPEN"
    INCREASE = "INCREASE"
    REDUCE = "REDUCE"
    CLOSE = "CLOSE"
    FLIP = "FLIP"


def classify(before: Decimal, after: Decimal) -> PositionLifecycle:
    """Return the lifecycle step of a position moving from ``before`` to ``after`` (signed quantities)."""
    if before == 0:
        return PositionLifecycle.OPEN
    if after == 0:
        return PositionLifecycle.CLOSE
    if (before > 0) != (after > 0):
        return PositionLifecycle.FLIP
    return PositionLifecycle.INCREASE if abs(after) > abs(before) else PositionLifecycle.REDUCE


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class PositionEvent:
    """One fill's effect on a net position."""

    ts: int
    symbol: str
    strategy: str
    step: PositionLifecycle
    quantity_before: Decimal
    quantity_after: Decimal
    price: Decimal
    realized_pnl: Decimal


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class PnL:
    """P&L of a symbol or a strategy: realized, unrealized at the marks, fees paid, funding received."""

    realized: Decimal
    unrealized: Decimal
    fees: Decimal
    funding: Decimal

    @property
    def total(self) -> Decimal:
        """Return realized + unrealized - fees + funding."""
        return self.realized + self.unrealized - self.fees + self.funding


@mypyc_attr(allow_interpreted_subclasses=True)
class PositionManager(Component):
    """Track positions, realized and unrealized P&L, fees, funding and equity.

    Parameters
    ----------
    initial_capital
        Starting equity in USDT.
    bus, clock
        The event bus and the clock.
    """

    def __init__(self, initial_capital: Decimal, bus: EventBus, clock: Clock) -> None:
        super().__init__("risk.positions", bus, clock)
        self._initial_capital = _checked_capital(initial_capital)
        self.positions: dict[str, Position] = {}
        self.strategy_positions: dict[tuple[str, str], Position] = {}
        # Written only here (bars, mark prices, fills); a write that can move the equity revises the book.
        self.marks: dict[str, Decimal] = {}
        # The marks of the last completed bar time, as the marks overwritten since (the others are still those).
        self._overwritten_marks: dict[str, Decimal] = {}
        self._mark_ts: int | None = None
        # Grows whenever the equity or a held symbol's exposure may have changed (a fill, funding, a held mark).
        self.revision = 0
        self._equity_cache: tuple[int, Decimal] | None = None
        self._gross_cache: tuple[int, Decimal] | None = None
        self.clear_books()

    def clear_books(self) -> None:
        """Forget every position, fee, funding payment and fill, keeping the marks.

        Recovery calls it before it replays the account's events from the snapshot and the journal.
        """
        self.positions = {}
        self.strategy_positions = {}
        self.fees_paid = ZERO
        self.funding_received = ZERO
        self.fees_by_symbol: dict[str, Decimal] = {}
        self.funding_by_symbol: dict[str, Decimal] = {}
        self.fees_by_strategy: dict[tuple[str, str], Decimal] = {}
        self.funding_by_strategy: dict[tuple[str, str], Decimal] = {}
        self.closing_pnls: list[Decimal] = []
        # The latest lifecycle steps only: a long paper run must not grow without bound (the counts stay whole).
        self.events: deque[PositionEvent] = deque(maxlen=EVENTS_KEPT)
        self.lifecycle_counts: Counter[PositionLifecycle] = Counter()
        self.fills = 0
        self._revise()

    @property
    def initial_capital(self) -> Decimal:
        """Return the starting equity in USDT."""
        return self._initial_capital

    @initial_capital.setter
    def initial_capital(self, capital: Decimal) -> None:
        """Book ``capital`` as the start (a live account's opening balance); the equity follows at once."""
        self._initial_capital = _checked_capital(capital)
        self._revise()

    def _revise(self) -> None:
        """Note a change of the book or its marks (the cached equity no longer holds)."""
        self.revision += 1

    def on_start(self) -> None:
        """Subscribe to fills, funding, bars and mark prices."""
        self.bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.mark")
        self.bus.subscribe(MarkPriceUpdated, self.on_mark_price, name=f"{self.name}.mark_price")
        self.bus.subscribe(OrderFilled, self.on_fill, name=self.name)
        self.bus.subscribe(FundingPaid, self.on_funding, name=self.name)

    def on_bar(self, bar: BarClosed) -> None:
        """Mark the symbol to the bar's close; the first bar of a new time settles the previous marks."""
        ts = bar.ts_event
        if ts != self._mark_ts:
            self._overwritten_marks.clear()
            self._mark_ts = ts
        symbol = bar.symbol
        self._set_mark(symbol, decimal_of(bar.close))
        position = self.positions.get(symbol)
        if position is not None and position.quantity:
            # A flat symbol's mark moves neither the equity nor any exposure.
            self._revise()

    def reference_marks(self) -> dict[str, Decimal]:
        """Return the marks of the last completed bar time (the current mark for a symbol without one).

        Bars of one time arrive one symbol after another, and in a paper run
        the bars of one time may all arrive before anything reacts to the
        first; decisions priced at these marks do not depend on that order.
        """
        overwritten = self._overwritten_marks
        return {symbol: overwritten.get(symbol, mark) for symbol, mark in self.marks.items()}

    def _set_mark(self, symbol: str, mark: Decimal) -> None:
        marks = self.marks
        previous = marks.get(symbol)
        if previous is not None and symbol not in self._overwritten_marks:
            self._overwritten_marks[symbol] = previous
        marks[symbol] = mark

    def on_mark_price(self, update: MarkPriceUpdated) -> None:
        """Mark the symbol to the venue's mark price."""
        if update.mark_price.is_finite() and update.mark_price > 0:
            self._set_mark(update.symbol, update.mark_price)
            self._revise()

    def on_fill(self, fill: OrderFilled) -> None:
        """Apply a fill to its position and its strategy's sub-book; publish the change."""
        position = self._apply_fill(fill)
        self.bus.publish(
            PositionChanged(
                symbol=fill.symbol,
                quantity=position.quantity,
                entry_price=position.entry_price,
                realized_pnl=position.realized_pnl,
                ts_event=fill.ts_event,
                ts_init=self.clock.timestamp_ns(),
            )
        )

    def replay(self, event: OrderFilled | FundingPaid) -> None:
        """Apply a recovered fill or funding payment without publishing (recovery rebuilds the books)."""
        if isinstance(event, OrderFilled):
            self._apply_fill(event)
        else:
            self.on_funding(event)

    def _apply_fill(self, fill: OrderFilled) -> Position:
        position = self.positions.setdefault(fill.symbol, Position(fill.symbol))
        signed = fill.last_quantity * fill.side.sign
        before = position.quantity
        realized = position.apply_fill(signed, fill.last_price)
        key = (fill.strategy, fill.symbol)
        self.strategy_positions.setdefault(key, Position(fill.symbol)).apply_fill(signed, fill.last_price)
        if realized != 0:
            self.closing_pnls.append(realized)
        step = classify(before, position.quantity)
        self.lifecycle_counts[step] += 1
        self.events.append(
            PositionEvent(
                fill.ts_event, fill.symbol, fill.strategy, step, before, position.quantity, fill.last_price, realized
            )
        )
        self.fees_paid += fill.commission
        self.fees_by_symbol[fill.symbol] = self.fees_by_symbol.get(fill.symbol, ZERO) + fill.commission
        self.fees_by_strategy[key] = self.fees_by_strategy.get(key, ZERO) + fill.commission
        self.fills += 1
        self.marks.setdefault(fill.symbol, fill.last_price)
        self._revise()
        return position

    def on_funding(self, payment: FundingPaid) -> None:
        """Book a funding payment, split across the symbol's strategy sub-books by their quantities."""
        self.funding_received += payment.amount
        self._revise()
        self.funding_by_symbol[payment.symbol] = self.funding_by_symbol.get(payment.symbol, ZERO) + payment.amount
        books = [(key, p) for key, p in self.strategy_positions.items() if key[1] == payment.symbol and p.quantity != 0]
        total = sum((p.quantity for _, p in books), ZERO)
        if total == 0:
            return
        for key, book in books:
            share = payment.amount * book.quantity / total
            self.funding_by_strategy[key] = self.funding_by_strategy.get(key, ZERO) + share

    def quantity(self, symbol: str) -> Decimal:
        """Return the signed position in ``symbol`` (zero when flat)."""
        position = self.positions.get(symbol)
        return position.quantity if position is not None else ZERO

    def realized_pnl(self) -> Decimal:
        """Return the P&L realized by closing trades, before fees and funding."""
        return sum((p.realized_pnl for p in self.positions.values()), ZERO)

    def unrealized_pnl(self, marks: Mapping[str, Decimal] | None = None) -> Decimal:
        """Return the open positions' P&L at the last marks (or at ``marks``)."""
        prices = self.marks if marks is None else marks
        return sum((p.unrealized_pnl(prices[s]) for s, p in self.positions.items() if p.quantity != 0), ZERO)

    def equity(self, marks: Mapping[str, Decimal] | None = None) -> Decimal:
        """Return capital + realized + unrealized - fees + funding, at the last marks (or at ``marks``)."""
        if marks is not None:
            return self._equity(marks)
        cached = self._equity_cache
        if cached is not None and cached[0] == self.revision:
            return cached[1]
        value = self._equity(None)
        self._equity_cache = (self.revision, value)
        return value

    def _equity(self, marks: Mapping[str, Decimal] | None) -> Decimal:
        # realized_pnl() and unrealized_pnl() in one pass, each summed in the same order from ZERO (the same Decimals).
        prices = self.marks if marks is None else marks
        realized = unrealized = ZERO
        for symbol, position in self.positions.items():
            realized += position.realized_pnl
            if position.quantity != 0:
                unrealized += position.quantity * (prices[symbol] - position.entry_price)
        return self._initial_capital + realized + unrealized - self.fees_paid + self.funding_received

    def gross_exposure(self) -> Decimal:
        """Return the sum of absolute position values at the last marks."""
        cached = self._gross_cache
        if cached is not None and cached[0] == self.revision:
            return cached[1]
        # Position.notional inlined (per bar in a backtest): the same Decimals, summed in the same order from ZERO.
        marks = self.marks
        total = ZERO
        for symbol, position in self.positions.items():
            quantity = position.quantity
            if quantity:
                total += abs(quantity) * marks[symbol]
        self._gross_cache = (self.revision, total)
        return total

    def exposure(self, symbol: str) -> Decimal:
        """Return the absolute value of the position in ``symbol``."""
        position = self.positions.get(symbol)
        if position is None or position.quantity == 0:
            return ZERO
        return position.notional(self.marks[symbol])

    def pnl_by_symbol(self) -> dict[str, PnL]:
        """Return each symbol's P&L."""
        return {
            symbol: PnL(
                position.realized_pnl,
                position.unrealized_pnl(self.marks[symbol]) if position.quantity != 0 else ZERO,
                self.fees_by_symbol.get(symbol, ZERO),
                self.funding_by_symbol.get(symbol, ZERO),
            )
            for symbol, position in sorted(self.positions.items())
        }

    def pnl_by_strategy(self) -> dict[str, PnL]:
        """Return each strategy's P&L summed over its sub-books.

        The sub-books' realized plus unrealized P&L sum to the whole book's;
        their realized parts alone need not.
        """
        totals: dict[str, list[Decimal]] = {}
        for (strategy, symbol), book in sorted(self.strategy_positions.items()):
            key = (strategy, symbol)
            unrealized = book.unrealized_pnl(self.marks[symbol]) if book.quantity != 0 else ZERO
            parts = totals.setdefault(strategy, [ZERO, ZERO, ZERO, ZERO])
            parts[0] += book.realized_pnl
            parts[1] += unrealized
            parts[2] += self.fees_by_strategy.get(key, ZERO)
            parts[3] += self.funding_by_strategy.get(key, ZERO)
        return {strategy: PnL(*parts) for strategy, parts in totals.items()}


def _checked_capital(capital: Decimal) -> Decimal:
    """Return ``capital`` if it is a finite Decimal (a NaN would make every equity NaN, a float inexact).

    Not necessarily positive: it is also a live account's opening balance, whatever the venue reports.
    """
    if not isinstance(capital, Decimal) or not capital.is_finite():
        raise ValueError(f"initial capital must be a finite Decimal, got {capital!r}")
    return capital
