"""The simulated venue's state as data: its market cursor, requests in flight, snapshots and commits.

These are msgspec structs (a durable store writes them) kept apart from
:mod:`keel.api.simulated_exchange` and :mod:`keel.api.account`, which are
compiled (see :mod:`keel.compiled_modules`); they re-export them.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Literal

import msgspec

from keel.api.venue_orders import OrderState
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    FundingPaid,
    FundingRateUpdated,
    MarketDataEvent,
    MarkPriceUpdated,
    OrderFilled,
    SubmitOrder,
    TradeTick,
)
from keel.core.orders import OrderSide
from keel.core.ports import MarginType, PositionMode, PositionSide

MarketEventKind = Literal["bar", "book", "trade", "mark_price", "funding"]


class PositionState(msgspec.Struct, frozen=True, kw_only=True):
    """A position in an account snapshot."""

    symbol: str
    position_side: PositionSide
    quantity: Decimal
    entry_price: Decimal
    realized_pnl: Decimal
    isolated_wallet: Decimal
    cost: Decimal


class AccountState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything an :class:`Account` holds, for snapshot and restore."""

    cross_wallet: Decimal
    position_mode: PositionMode
    leverage: dict[str, int]
    margin_types: dict[str, MarginType]
    marks: dict[str, Decimal]
    positions: list[PositionState]
    fees_paid: Decimal
    funding_received: Decimal
    liquidation_fees: Decimal
    insurance_fund_covered: Decimal


class InFlightRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request on its way to the venue."""

    arrival: int
    sent: int
    kind: Literal["submit", "cancel", "cancel_all"]
    command: SubmitOrder | None = None
    symbol: str | None = None
    client_order_id: str | None = None


class MarketCursor(msgspec.Struct, frozen=True):
    """The last market event a venue processed; a restarted paper run resumes its recorded feed after it.

    ``kind`` is ``"bar"``, ``"book"``, ``"trade"``, ``"mark_price"`` or ``"funding"``.
    """

    ts_event: int
    kind: MarketEventKind
    symbol: str

    @classmethod
    def of(cls, event: MarketDataEvent) -> MarketCursor:
        """Return the cursor a venue records when it processes ``event``.

        Raises
        ------
        ValueError
            For an event the venue does not take (not a bar, book, print, mark price or funding rate).
        """
        kind = _CURSOR_KINDS.get(type(event))
        if kind is None:
            raise ValueError(f"the simulated exchange takes no {type(event).__name__} events")
        return cls(event.ts_event, kind, event.symbol)


_CURSOR_KINDS: dict[type[MarketDataEvent], MarketEventKind] = {
    BarClosed: "bar",
    BookUpdated: "book",
    TradeTick: "trade",
    MarkPriceUpdated: "mark_price",
    FundingRateUpdated: "funding",
}


class VenueState(msgspec.Struct, frozen=True, kw_only=True):
    """The venue's state apart from its order records and account history (every commit carries it whole)."""

    account: AccountState
    working: list[str]
    in_flight: list[InFlightRequest]
    last_prices: dict[str, Decimal]
    marked_by_stream: list[str]
    books: dict[str, BookUpdated]
    consumed: list[tuple[str, OrderSide, Decimal, Decimal]]
    next_funding: dict[str, int]
    last_arrival: int
    next_ids: dict[str, int]
    random_state: list[object]
    cursor: MarketCursor | None = None


class ExchangeState(VenueState, frozen=True, kw_only=True):
    """Everything a :class:`SimulatedExchange` holds, as written by :meth:`SimulatedExchange.snapshot`.

    ``trades`` and ``funding`` are the account history (empty in snapshots
    written before the venue kept it).
    """

    orders: list[OrderState]
    trades: list[OrderFilled] = []
    funding: list[FundingPaid] = []


class VenueCommit(msgspec.Struct, frozen=True, kw_only=True):
    """What one venue transaction changed, for a durable store.

    Attributes
    ----------
    state
        The venue's whole state apart from its orders and history.
    orders
        The orders the transaction closed and every working order, oldest
        first. A closed order never changes again, so a store that upserts
        these holds every order.
    trades, funding
        The account fills and funding payments the transaction added.
    baseline
        True when the commit holds the whole venue (every order, the whole
        history): the store replaces what it held with it.
    """

    state: VenueState
    orders: list[OrderState]
    trades: list[OrderFilled]
    funding: list[FundingPaid]
    baseline: bool = False


CommitHandler = Callable[[VenueCommit], None]
