"""The smart order router: approved (parent) orders become child orders worked in one of five styles.

AGGRESSIVE sends marketable IOC limits at a protection price (never a fill
beyond it). PASSIVE posts GTX at or inside the touch, reprices as the book
moves and falls back to AGGRESSIVE after its time limit. TWAP and VWAP follow a
schedule of cumulative targets (seeded, randomized TWAP slices; VWAP from the
liquidity profile's volume curve). ADAPTIVE chooses and keeps adjusting from
urgency, spread, book imbalance, VPIN and the impact estimate. A parent has at
most one live child; every child respects the instrument filters, the minimum
notional and a rate limit, and is reduce-only when its parent is: then it is
clipped, when it is sent, to the venue's position less the open reduce-only
orders on its side, and a parent with nothing left to reduce ends. The
:class:`~keel.execution.slippage.SlippageController` slows, restrains or pauses
a parent whose fills stray from its arrival price; a finished parent publishes
its transaction-cost analysis as ``ExecutionCompleted``, which awaiting the
:class:`ParentOrder` returns (``result = await router.execute_aggressive(order)``).

A symbol without recorded books (a bar-driven backtest or paper run) is priced
from its last bar close, used as both bid and ask, and its parents are worked
at every bar. An AGGRESSIVE child (an IOC limit at the protection price) fills
at the next bar's open when that open lies within the band. A PASSIVE child
posts post-only at the estimated touch (the close less the cost model's
half-spread for a buy, at least a tick away) and rests unrepriced, for the
venue's bar fill model to fill when a later bar trades through it, until the
passive time limit or an adverse move of ``passive_adverse_bps`` from arrival
turns the parent into a taker. With a cost model, a PASSIVE parent whose fee
and spread saving does not pay for the risk of waiting takes at once.
TWAP/VWAP slices are worked at bar frequency only.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from numbers import Real
from typing import Any

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.costs import CostModel
from keel.core.error_codes import BinanceErrorCode
from keel.core.fsm import TradingState
from keel.core.instruments import Instrument, Rounding
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    CancelOrder,
    ExecutionCompleted,
    MicrostructureSnapshot,
    OrderApproved,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionSide,
    SlippageLimitBreached,
    SubmitOrder,
    TradeTick,
    TradingStateChanged,
    WorkingType,
)
from keel.core.orders import OrderSide, OrderType, TimeInForce
from keel.execution.algorithms import ExecutionStyle, MarketState, Slice, choose_style, twap_schedule, vwap_schedule
from keel.execution.order_manager import OrderManager
from keel.execution.slippage import SlippageAction, SlippageController
from keel.execution.tca import BPS, Execution, implementation_shortfall, spread_paid_bps
from keel.market_data.impact import MarketImpactModel
from keel.market_data.liquidity import LiquidityProfiler

NANOS_PER_SECOND = 1_000_000_000
_NOTHING = Decimal(0)
_MINUTES_PER_DAY = 1440


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """How the router works parents (the ``execution`` section of the configuration)."""

    default_style: ExecutionStyle = ExecutionStyle.AGGRESSIVE
    twap_horizon_seconds: float = 300.0
    twap_slices: int = 10
    size_jitter: float = 0.2
    time_jitter: float = 0.2
    passive_time_limit_seconds: float = 30.0
    protection_bps: float = 10.0
    max_orders_per_10s: int = 300
    urgency: float = 0.5
    pause_seconds: float = 10.0
    slow_down_factor: float = 2.0
    passive_adverse_bps: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.twap_horizon_seconds <= 0 or self.twap_slices < 1 or self.passive_time_limit_seconds <= 0:
            raise ValueError("execution: twap_horizon_seconds, twap_slices and passive_time_limit_seconds must be > 0")
        if self.protection_bps <= 0 or self.max_orders_per_10s < 1 or self.slow_down_factor < 1:
            raise ValueError("execution: protection_bps > 0, max_orders_per_10s >= 1 and slow_down_factor >= 1 needed")
        if not 0 <= self.urgency <= 1:
            raise ValueError(f"execution: urgency must lie in [0, 1], got {self.urgency}")
        if not self.passive_adverse_bps > 0:
            raise ValueError(f"execution: passive_adverse_bps must be > 0, got {self.passive_adverse_bps}")


@dataclass(slots=True)
class ParentOrder:
    """One parent order and how far it got."""

    parent_order_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    reduce_only: bool
    strategy: str
    style: ExecutionStyle
    passive: bool
    schedule: list[Slice]
    start_ns: int
    arrival_price: Decimal
    protection_price: Decimal
    passive_deadline: int
    end_ns: int
    urgency: float
    estimated_impact_bps: float | None
    approval_id: int | None = None
    filled: Decimal = Decimal(0)
    live_child: str | None = None
    cancel_sent: bool = False
    paused_until: int = 0
    stretch: float = 1.0
    children: list[str] = field(default_factory=list)
    fills: list[Execution] = field(default_factory=list)
    trade_ids: set[str] = field(default_factory=set)
    print_notional: float = 0.0
    print_volume: float = 0.0
    completion: ExecutionCompleted | None = None
    # Each step's cumulative quantity, converted once when the parent is made,
    # and where target() left off: the number of steps due by _due_ns under
    # _due_stretch. Time only moves forward, so each call resumes the scan
    # instead of walking the whole schedule on every book update.
    _step_targets: list[Decimal] = field(default_factory=list, init=False, repr=False, compare=False)
    _steps_due: int = field(default=0, init=False, repr=False, compare=False)
    _due_ns: int | None = field(default=None, init=False, repr=False, compare=False)
    _due_stretch: float = field(default=1.0, init=False, repr=False, compare=False)
    # The future an ``await parent`` waits on: made by the first awaiter, on its loop (none for a parent nobody awaits).
    _waiter: asyncio.Future[ExecutionCompleted] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        quantity = self.quantity
        self._step_targets = [
            quantity if step.fraction >= 1.0 else quantity * Decimal(repr(step.fraction)) for step in self.schedule
        ]

    @property
    def remaining(self) -> Decimal:
        """Return the quantity still to trade."""
        return self.quantity - self.filled

    def target(self, now: int) -> Decimal:
        """Return the cumulative quantity the schedule wants traded by ``now`` (schedule times stretched).

        That is the fraction of the last step of the schedule's leading run of
        steps due by ``now``, zero before the first.
        """
        if self._due_ns is None or now < self._due_ns or self.stretch != self._due_stretch:
            self._steps_due, self._due_stretch = 0, self.stretch
        self._due_ns = now
        schedule, start, stretch = self.schedule, self.start_ns, self.stretch
        due = self._steps_due
        while due < len(schedule) and start + (schedule[due].ts - start) * stretch <= now:
            due += 1
        self._steps_due = due
        return self._step_targets[due - 1] if due else _NOTHING

    def __await__(self) -> Generator[Any, None, ExecutionCompleted]:
        """Wait until the parent finishes (at once if it has) and return its ``ExecutionCompleted``.

        Raises
        ------
        RuntimeError
            If the router stopped (its run ended or was stopped) while the parent still worked.
        """
        if self.completion is not None:
            return self.completion
        loop = asyncio.get_running_loop()
        if self._waiter is None or self._waiter.get_loop() is not loop:
            self._waiter = loop.create_future()
        # Finished meanwhile on a thread of its own (settle sets the completion, then looks for a waiter).
        if self.completion is not None:
            return self.completion
        return (yield from self._waiter.__await__())

    def settle(self, outcome: ExecutionCompleted | RuntimeError) -> None:
        """Hand the parent's analysis (or why it will not come) to whoever awaits it, from any thread."""
        if isinstance(outcome, ExecutionCompleted):
            self.completion = outcome
        waiter = self._waiter
        if waiter is None or waiter.done() or waiter.get_loop().is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is waiter.get_loop():
            _resolve(waiter, outcome)
        else:
            waiter.get_loop().call_soon_threadsafe(_resolve, waiter, outcome)


def _resolve(waiter: asyncio.Future[ExecutionCompleted], outcome: ExecutionCompleted | RuntimeError) -> None:
    if waiter.done():
        return
    if isinstance(outcome, ExecutionCompleted):
        waiter.set_result(outcome)
    else:
        waiter.set_exception(outcome)


@dataclass(frozen=True, slots=True)
class OrderTerms:
    """What a user's order asks the router for (see :func:`order_terms`)."""

    symbol: str
    side: OrderSide
    quantity: Decimal
    reduce_only: bool = False
    strategy: str = "manual"
    urgency: float | None = None


_ORDER_FIELDS = ("symbol", "side", "quantity", "reduce_only", "strategy", "urgency")
# What the router decides for itself: a SubmitOrder given to it keeps each as its default.
_ROUTER_DECIDES: dict[str, object] = {
    "price": None,
    "time_in_force": TimeInForce.GTC,
    "stop_price": None,
    "position_side": PositionSide.BOTH,
    "close_position": False,
    "working_type": WorkingType.CONTRACT_PRICE,
    "approval_id": None,
}


def order_terms(order: SubmitOrder | Mapping[str, object]) -> OrderTerms:
    """Return what a user's order asks for: its symbol, side, exact quantity, reduce-only flag, strategy, urgency.

    Parameters
    ----------
    order
        A MARKET :class:`~keel.core.messages.SubmitOrder` (its ``client_order_id``
        is not used: the router numbers its own child orders), or a mapping with
        ``symbol``, ``side`` (BUY/SELL), ``quantity`` (Decimal, int or decimal
        string) and optionally ``reduce_only`` (bool), ``strategy`` (str,
        ``"manual"`` by default) and ``urgency`` (in [0, 1]).

    Raises
    ------
    TypeError
        For an order of another type, a float quantity (pass ``Decimal("0.01")``) or a field of the wrong type.
    ValueError
        For unknown or missing mapping keys (named), an unknown side, an urgency
        outside [0, 1], or a SubmitOrder with a price, time in force or other
        field the router sets itself (named).
    """
    if isinstance(order, SubmitOrder):
        return _submit_terms(order)
    if not isinstance(order, Mapping):
        raise TypeError(
            f"an order is a SubmitOrder or a mapping with symbol, side and quantity, got {type(order).__name__}"
        )
    unknown = sorted(str(key) for key in order if key not in _ORDER_FIELDS)
    missing = [name for name in _ORDER_FIELDS[:3] if order.get(name) is None]
    if unknown or missing:
        raise ValueError(
            f"an order for the router has symbol, side, quantity and optionally reduce_only, strategy, urgency; "
            f"unknown keys {unknown}, missing {missing}"
        )
    symbol, side = order["symbol"], order["side"]
    reduce_only, strategy = order.get("reduce_only", False), order.get("strategy", "manual")
    if not isinstance(symbol, str) or not isinstance(side, str | OrderSide):
        raise TypeError(f"an order's symbol and side are strings, got {symbol!r} and {side!r}")
    if not isinstance(reduce_only, bool) or not isinstance(strategy, str):
        raise TypeError(
            f"an order's reduce_only is True or False and its strategy a string, got {reduce_only!r}, {strategy!r}"
        )
    urgency = order.get("urgency")
    return OrderTerms(
        symbol=symbol.upper(),
        side=_order_side(side.upper() if isinstance(side, str) else side),
        quantity=_order_quantity(order["quantity"]),  # type: ignore[arg-type]
        reduce_only=reduce_only,
        strategy=strategy,
        urgency=None if urgency is None else checked_urgency(urgency),
    )


def _submit_terms(order: SubmitOrder) -> OrderTerms:
    """Return the terms of a SubmitOrder, refusing one with a field the router would have to ignore."""
    ignored = [name for name, default in _ROUTER_DECIDES.items() if getattr(order, name) != default]
    if order.order_type is not OrderType.MARKET:
        ignored.insert(0, "order_type")
    if ignored:
        raise ValueError(
            f"the router sets {', '.join(ignored)} of its child orders itself: give it a MARKET SubmitOrder "
            f"without them (or a mapping with symbol, side and quantity)"
        )
    return OrderTerms(order.symbol, order.side, _order_quantity(order.quantity), order.reduce_only, order.strategy)


def checked_urgency(urgency: object) -> float:
    """Return ``urgency`` as a float after checking it is a finite number in [0, 1].

    Raises
    ------
    ValueError
        For anything else (a boolean, a string, NaN, a number outside [0, 1]).
    """
    if isinstance(urgency, bool) or not isinstance(urgency, Real | Decimal) or not 0 <= float(urgency) <= 1:
        raise ValueError(f"urgency must be a number in [0, 1] (0 patient, 1 immediate), got {urgency!r}")
    return float(urgency)


def checked_horizon(horizon_seconds: object) -> float:
    """Return a schedule horizon as a float after checking it is a finite number of seconds > 0.

    Raises
    ------
    ValueError
        For anything else (a boolean, a string, NaN, infinity, zero or less).
    """
    valid = not isinstance(horizon_seconds, bool) and isinstance(horizon_seconds, Real | Decimal)
    if not valid or not math.isfinite(float(horizon_seconds)) or float(horizon_seconds) <= 0:  # type: ignore[arg-type]
        raise ValueError(f"horizon_seconds must be a finite number of seconds > 0, got {horizon_seconds!r}")
    return float(horizon_seconds)  # type: ignore[arg-type]


class SmartOrderRouter(Component):
    """Turn approved orders into child orders and work them until done.

    Parameters
    ----------
    orders
        The order manager the children go through (build it with ``route_approvals=False``).
    instruments
        Filters of every tradable symbol.
    settings
        Styles, horizons, limits.
    bus, clock
        The event bus and the clock.
    slippage
        The slippage controller (default limits when None).
    profilers
        Each symbol's liquidity profile, which its VWAP schedules follow (fed
        its bars here); VWAP of a symbol without one raises ValueError.
    impact_model
        A fitted impact model for the ADAPTIVE decision and the TCA's estimate; the
        microstructure snapshot's estimate is used when None.
    styles
        The style of each strategy's approvals (``settings.default_style`` for the others).
    history
        How many finished parents' analyses (:attr:`completed`) and child ids
        (for :meth:`parent_of`) are kept, newest first out last: a router
        working for months holds a bounded history, and a finished parent
        itself is let go.
    costs
        The shared cost model: the half-spread of bar-priced posts and whether posting pays.
    """

    def __init__(
        self,
        orders: OrderManager,
        instruments: Mapping[str, Instrument],
        settings: RouterSettings,
        bus: EventBus,
        clock: Clock,
        *,
        slippage: SlippageController | None = None,
        profilers: Mapping[str, LiquidityProfiler] | None = None,
        impact_model: MarketImpactModel | None = None,
        styles: Mapping[str, ExecutionStyle] | None = None,
        history: int = 100_000,
        costs: CostModel | None = None,
    ) -> None:
        super().__init__("execution.router", bus, clock)
        if history < 1:
            raise ValueError(f"execution: the router's history must keep at least 1 parent, got {history}")
        self.costs = costs
        self.orders = orders
        self.instruments = dict(instruments)
        self.settings = settings
        self.slippage = slippage or SlippageController()
        self.manual_order_check: Callable[[str, OrderSide, Decimal, bool, str], None] | None = None
        """The risk layer's check of a parent placed by hand (no ``approval_id``); it raises to refuse one."""
        self.profilers = dict(profilers or {})
        self.impact_model = impact_model
        self.styles = dict(styles or {})
        self.parents: dict[str, ParentOrder] = {}
        self.completed: deque[ExecutionCompleted] = deque(maxlen=history)
        self.throttled = 0
        self._books: dict[str, BookUpdated] = {}
        self._touches: dict[str, tuple[BookUpdated, tuple[Decimal, Decimal]]] = {}
        self._inside_prices: dict[tuple[str, bool], tuple[Decimal, Decimal, Decimal]] = {}
        # The last bar close of each symbol without a book, as the float the bar carried (made a Decimal when read).
        self._closes: dict[str, float] = {}
        self._bar_ns: dict[str, int] = {}
        self._snapshots: dict[str, MicrostructureSnapshot] = {}
        self._parent_of: dict[str, ParentOrder] = {}
        self._finished_children: OrderedDict[str, str] = OrderedDict()
        self._history = history
        self._sent: deque[int] = deque()
        self._parent_ids = itertools.count(1)

    def on_start(self) -> None:
        """Take approvals, market data and the children's reports."""
        self.bus.subscribe(OrderApproved, self.on_approved, name=f"{self.name}.approved")
        self.bus.subscribe(BookUpdated, self.on_book, name=f"{self.name}.books")
        self.bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.bars")
        self.bus.subscribe(TradeTick, self.on_trade, name=f"{self.name}.trades")
        self.bus.subscribe(MicrostructureSnapshot, self.on_snapshot, name=f"{self.name}.snapshots")
        self.bus.subscribe(OrderFilled, self.on_fill, name=f"{self.name}.fills")
        for closed in (OrderCanceled, OrderExpired, OrderRejected):
            self.bus.subscribe(closed, self.on_child_closed, name=f"{self.name}.{closed.__name__}")
        self.bus.subscribe(TradingStateChanged, self.on_trading_state, name=f"{self.name}.trading_state")
        if self.profilers:
            self.bus.subscribe(BarClosed, self._profile, name=f"{self.name}.profile")

    def on_stop(self) -> None:
        """Tell whoever awaits a parent still working that its analysis will not come from this router."""
        for parent in self.parents.values():
            parent.settle(
                RuntimeError(
                    f"the router stopped while parent {parent.parent_order_id} still worked ({parent.filled} of "
                    f"{parent.quantity} {parent.symbol} filled): its ExecutionCompleted will not come from this run"
                )
            )

    # --- the user's API ------------------------------------------------------------------------

    def execute(
        self,
        symbol: str,
        side: OrderSide | str,
        quantity: Decimal | int | str,
        style: ExecutionStyle,
        *,
        reduce_only: bool = False,
        strategy: str = "manual",
        urgency: float | None = None,
        approval_id: int | None = None,
        horizon_seconds: float | None = None,
    ) -> ParentOrder:
        """Start working a parent order in ``style`` and return it (``await`` it for its ``ExecutionCompleted``).

        ``approval_id`` is the id of the ``OrderApproved`` it works (its child
        orders and its ``ExecutionCompleted`` carry it). ``urgency`` (in [0, 1],
        ``settings.urgency`` when None) is what ADAPTIVE decides with;
        ``horizon_seconds`` replaces ``settings.twap_horizon_seconds`` as the
        span of this parent's TWAP or VWAP schedule.

        ``side`` may be given by its name (``"BUY"``), ``quantity`` as a
        Decimal, an int or a decimal string.

        Raises
        ------
        TypeError
            For a float quantity (binary floats are not exact amounts: pass ``Decimal("0.01")``).
        ValueError
            For an unknown symbol or side, a non-positive quantity, an urgency
            outside [0, 1], a horizon that is not a positive number of seconds,
            neither a book nor a bar yet for the symbol, or VWAP without a
            liquidity profile.
        RiskRefusedError
            For a parent placed by hand (no ``approval_id``) that the risk
            layer's :attr:`manual_order_check` refuses: the trading state or a
            limit forbids it. Nothing is sent.
        """
        if symbol not in self.instruments:
            raise ValueError(f"no instrument specification for {symbol}")
        side, quantity = _order_side(side), _order_quantity(quantity)
        if not quantity.is_finite() or quantity <= 0:
            raise ValueError(f"parent quantity must be positive, got {quantity}")
        urgency = None if urgency is None else checked_urgency(urgency)
        horizon = self.settings.twap_horizon_seconds if horizon_seconds is None else checked_horizon(horizon_seconds)
        if symbol not in self._books and symbol not in self._closes:
            raise ValueError(f"no order book of {symbol} yet, nor a bar: the router needs one to price child orders")
        if approval_id is None and self.manual_order_check is not None:
            self.manual_order_check(symbol, side, quantity, reduce_only, strategy)
        parent = self._new_parent(symbol, side, quantity, style, reduce_only, strategy, urgency, horizon)
        parent.approval_id = approval_id
        self.parents[parent.parent_order_id] = parent
        self.slippage.start(parent.parent_order_id, side.sign, parent.arrival_price)
        self._work(parent, self.clock.timestamp_ns())
        return parent

    def execute_aggressive(
        self,
        symbol: str | SubmitOrder | Mapping[str, object],
        side: OrderSide | str | None = None,
        quantity: Decimal | int | str | None = None,
        **options: Any,
    ) -> ParentOrder:
        """Take liquidity now with marketable limits at the protection price.

        Called with ``symbol, side, quantity`` and :meth:`execute`'s options, or
        with one order (a SubmitOrder or a mapping, see :func:`order_terms`):
        ``result = await router.execute_aggressive(order)``.
        """
        return self._execute_in(ExecutionStyle.AGGRESSIVE, symbol, side, quantity, options)

    def execute_passive(
        self,
        symbol: str | SubmitOrder | Mapping[str, object],
        side: OrderSide | str | None = None,
        quantity: Decimal | int | str | None = None,
        **options: Any,
    ) -> ParentOrder:
        """Post at or inside the touch; take the rest after the passive time limit (one order, or as the others)."""
        return self._execute_in(ExecutionStyle.PASSIVE, symbol, side, quantity, options)

    def execute_twap(
        self,
        symbol: str | SubmitOrder | Mapping[str, object],
        side: OrderSide | str | None = None,
        quantity: Decimal | int | str | None = None,
        **options: Any,
    ) -> ParentOrder:
        """Trade in randomized equal slices over the TWAP horizon (one order, or as the others)."""
        return self._execute_in(ExecutionStyle.TWAP, symbol, side, quantity, options)

    def execute_vwap(
        self,
        symbol: str | SubmitOrder | Mapping[str, object],
        side: OrderSide | str | None = None,
        quantity: Decimal | int | str | None = None,
        **options: Any,
    ) -> ParentOrder:
        """Trade along the liquidity profile's volume curve over the horizon (one order, or as the others)."""
        return self._execute_in(ExecutionStyle.VWAP, symbol, side, quantity, options)

    def execute_adaptive(
        self,
        symbol: str | SubmitOrder | Mapping[str, object],
        side: OrderSide | str | None = None,
        quantity: Decimal | int | str | None = None,
        **options: Any,
    ) -> ParentOrder:
        """Let the market state choose the style, and keep adjusting it (one order, or as the others)."""
        return self._execute_in(ExecutionStyle.ADAPTIVE, symbol, side, quantity, options)

    def _execute_in(
        self,
        style: ExecutionStyle,
        symbol: str | SubmitOrder | Mapping[str, object],
        side: OrderSide | str | None,
        quantity: Decimal | int | str | None,
        options: dict[str, Any],
    ) -> ParentOrder:
        """Start a parent from ``symbol, side, quantity, **options`` or from one order alone."""
        if isinstance(symbol, str):
            if side is None or quantity is None:
                raise TypeError(f"give symbol, side and quantity, or one order; got only the symbol {symbol!r}")
            return self.execute(symbol, side, quantity, style, **options)
        if side is not None or quantity is not None or options:
            raise TypeError("an order comes alone: put its side, quantity, reduce_only, strategy and urgency in it")
        terms = order_terms(symbol)
        return self.execute(
            terms.symbol, terms.side, terms.quantity, style, reduce_only=terms.reduce_only, strategy=terms.strategy,
            urgency=terms.urgency,
        )  # fmt: skip

    def cancel_parents(self, reason: str, symbol: str | None = None) -> int:
        """Stop working every parent (of ``symbol``): no more children, live ones canceled; return how many."""
        stopped = [p for p in self.parents.values() if symbol is None or p.symbol == symbol]
        for parent in stopped:
            self._finish(parent, reason)
        return len(stopped)

    def resume(self) -> set[str]:
        """Settle every parent with the order manager's records after a restart; return the children still working.

        The parents are those the history replay left working, the records the
        journal's and the venue's (reconciled). A parent goes on where it was
        when its booked fills are its children's fills in the records (a fill
        both the replay and the reconciliation reported counts once, by trade
        id); its live child stays working when the records hold it open, and
        is released (the parent sends the next one as it would have) when they
        hold it closed or never recorded it, and canceled again when the
        parent had asked for its cancel. A parent whose fills disagree with
        the records stopped being the session's: it is finished, its live child
        canceled.
        """
        now = self.clock.timestamp_ns()
        for parent in list(self.parents.values()):
            recorded = {fill.trade_id for child in parent.children for fill in self.orders.fills(child)}
            if recorded != parent.trade_ids:
                self._finish(parent, "restart: the replayed fills differ from the venue's")
                continue
            live = parent.live_child
            if live is not None and (live not in self.orders.orders or self.orders.orders[live].is_closed):
                parent.live_child = None
                parent.cancel_sent = False
            elif live is not None and parent.cancel_sent:
                # Its cancel never landed (the restart outlasted every request in flight): ask again.
                self.bus.publish(CancelOrder(client_order_id=live, symbol=parent.symbol, ts_event=now, ts_init=now))
            self._work(parent, now)
        return {p.live_child for p in self.parents.values() if p.live_child is not None}

    def parent_of(self, client_order_id: str) -> str | None:
        """Return the id of the parent a child order belongs to.

        None for an order the router did not send, or one of a parent that
        finished more than ``history`` children ago.
        """
        parent = self._parent_of.get(client_order_id)
        return self._finished_children.get(client_order_id) if parent is None else parent.parent_order_id

    # --- bus handlers --------------------------------------------------------------------------

    def on_approved(self, approved: OrderApproved) -> None:
        """Work an approved order in its strategy's style."""
        style = self.styles.get(approved.strategy, self.settings.default_style)
        self.execute(
            approved.symbol,
            approved.side,
            approved.quantity,
            style,
            reduce_only=approved.reduce_only,
            strategy=approved.strategy,
            approval_id=approved.id,
        )

    def on_book(self, book: BookUpdated) -> None:
        """Take the new book and work every parent of its symbol."""
        if not book.bids or not book.asks:
            return
        self._books[book.symbol] = book
        now = self.clock.timestamp_ns()
        for parent in list(self.parents.values()):
            if parent.symbol == book.symbol:
                self._work(parent, now)

    def warm_up(self, bars: Iterable[BarClosed]) -> int:
        """Take recorded bars from before the run: the last closes as prices, the liquidity profile; return how many."""
        count = 0
        for bar in bars:
            if bar.symbol not in self._books:
                self._closes[bar.symbol] = bar.close
            self._profile(bar)
            count += 1
        return count

    def _profile(self, bar: BarClosed) -> None:
        """Add a bar to its symbol's liquidity profile (VWAP schedules follow it)."""
        profiler = self.profilers.get(bar.symbol)
        if profiler is not None:
            profiler.on_bar(bar)

    def on_bar(self, bar: BarClosed) -> None:
        """Take the close of a symbol without recorded books as its price and work its parents."""
        symbol = bar.symbol
        if symbol in self._books:
            return
        self._closes[symbol] = bar.close
        self._bar_ns[symbol] = max(1, bar.ts_event - bar.open_time)
        if not self.parents:
            return
        now = self.clock.timestamp_ns()
        for parent in list(self.parents.values()):
            if parent.symbol == symbol:
                self._work(parent, now)

    def on_trade(self, trade: TradeTick) -> None:
        """Add a print to the interval VWAP of every working parent of its symbol."""
        for parent in self.parents.values():
            if parent.symbol == trade.symbol:
                parent.print_notional += trade.price * trade.quantity
                parent.print_volume += trade.quantity

    def on_snapshot(self, snapshot: MicrostructureSnapshot) -> None:
        """Keep the latest microstructure and re-decide the mode of ADAPTIVE parents."""
        self._snapshots[snapshot.symbol] = snapshot
        for parent in self.parents.values():
            if parent.symbol == snapshot.symbol and parent.style is ExecutionStyle.ADAPTIVE:
                choice = choose_style(parent.urgency, parent.side.sign, self._market_state(parent.symbol))
                self._set_passive(parent, choice is not ExecutionStyle.AGGRESSIVE)

    def on_fill(self, fill: OrderFilled) -> None:
        """Book a child fill on its parent, then check the slippage limits."""
        parent = self._parent_of.get(fill.client_order_id)
        if parent is None or parent.parent_order_id not in self.parents or fill.trade_id in parent.trade_ids:
            return
        parent.trade_ids.add(fill.trade_id)
        bid, ask = self._touch(parent.symbol)
        mid = (bid + ask) / 2
        parent.filled += fill.last_quantity
        parent.fills.append(Execution(fill.last_quantity, fill.last_price, fill.commission, mid))
        self.slippage.record_fill(parent.parent_order_id, fill.last_quantity, fill.last_price)
        self._release_if_closed(parent, fill.client_order_id)
        self._restrain(parent, fill.ts_event)
        self._work(parent, self.clock.timestamp_ns())

    def on_trading_state(self, change: TradingStateChanged) -> None:
        """HALTED stops every parent: a halt must not be followed by the remainder of an old decision."""
        if change.state is TradingState.HALTED:
            self.cancel_parents(f"trading halted: {change.reason}")

    def on_child_closed(self, report: OrderCanceled | OrderExpired | OrderRejected) -> None:
        """A child stopped working: free its parent for the next child."""
        parent = self._parent_of.get(report.client_order_id)
        if parent is None or parent.parent_order_id not in self.parents:
            return
        self._release_if_closed(parent, report.client_order_id)
        if isinstance(report, OrderRejected) and report.code != BinanceErrorCode.GTX_ORDER_REJECT:
            self._finish(parent, f"child rejected: {report.code} {report.reason}")
            return
        if isinstance(report, OrderRejected) and parent.symbol not in self._books:
            # On bars the touch does not move until the next bar: posting again would be rejected again.
            self._set_passive(parent, False)
        self._work(parent, self.clock.timestamp_ns())

    # --- working a parent ----------------------------------------------------------------------

    def _work(self, parent: ParentOrder, now: int) -> None:
        if parent.parent_order_id not in self.parents:
            return
        instrument = self.instruments[parent.symbol]
        if parent.remaining < instrument.min_quantity:
            self._finish(parent, "filled")
            return
        if now >= parent.end_ns and parent.live_child is None:
            self._finish(parent, "horizon ended")
            return
        if parent.passive and (now >= parent.passive_deadline or self._moved_away(parent)):
            self._set_passive(parent, False)
        if parent.live_child is not None:
            self._maybe_reprice(parent)
            return
        if now < parent.paused_until or not self._live(parent.symbol):
            return
        child = self._child_quantity(parent, instrument, now)
        if child is None:
            return
        self._send_child(parent, *child, now)

    def _live(self, symbol: str) -> bool:
        """Return whether children of the symbol may go out.

        Once bars of the run arrive, a symbol priced only from warm-up closes
        waits for its own first bar: the venue has no price for it before.
        """
        return symbol in self._books or symbol in self._bar_ns or not self._bar_ns

    def _moved_away(self, parent: ParentOrder) -> bool:
        """Return whether the touch left the arrival price against the parent by more than the adverse band."""
        bid, ask = self._touch(parent.symbol)
        touch = ask if parent.side is OrderSide.BUY else bid
        move = (touch - parent.arrival_price) / parent.arrival_price * parent.side.sign * BPS
        return move > Decimal(repr(self.settings.passive_adverse_bps))

    def _child_quantity(self, parent: ParentOrder, instrument: Instrument, now: int) -> tuple[Decimal, Decimal] | None:
        """Return the next child's quantity and price, None when none is due or possible."""
        target = parent.target(now)
        deficit = min(target, parent.quantity) - parent.filled
        if deficit <= 0:
            return None
        price = self._child_price(parent, instrument)
        if price is None:
            return None
        quantity = instrument.round_quantity(deficit)
        if quantity * price < instrument.min_notional:
            minimum = instrument.round_quantity(instrument.min_notional / price) + instrument.step_size
            quantity = min(minimum, instrument.round_quantity(parent.remaining))
        if quantity <= 0 or (quantity * price < instrument.min_notional and not parent.reduce_only):
            if target >= parent.quantity:
                self._finish(parent, "remainder below the minimum notional")
            return None
        if parent.reduce_only:
            reducible = self._reducible(parent, instrument, quantity)
            return None if reducible is None else (reducible, price)
        return quantity, price

    def _reducible(self, parent: ParentOrder, instrument: Instrument, quantity: Decimal) -> Decimal | None:
        """Clip a reduce-only child to what the venue's position still leaves to reduce; finish the parent at none.

        The position is the order manager's (every fill applied as the venue
        reported it), less what the open reduce-only orders on the same side
        will already take: a reduce-only order beyond it, or pointing the way
        the position already goes, is one the venue rejects.
        """
        held = self.orders.position(parent.symbol)
        opposite = held != 0 and (held > 0) != (parent.side is OrderSide.BUY)
        working = self.orders.open_reduce_only(parent.symbol, parent.side)
        room = abs(held) - working if opposite else Decimal(0)
        clipped = instrument.round_quantity(min(quantity, room)) if room > 0 else Decimal(0)
        if clipped < instrument.min_quantity:
            self._finish(
                parent,
                f"nothing left to reduce: position {held}, reduce-only orders on the same side {working}",
            )
            return None
        return clipped

    def _child_price(self, parent: ParentOrder, instrument: Instrument) -> Decimal | None:
        """Return the child's limit price, None while the touch is beyond the protection price."""
        buy = parent.side is OrderSide.BUY
        bid, ask = self._touch(parent.symbol)
        if not parent.passive:
            touch = ask if buy else bid
            beyond = touch > parent.protection_price if buy else touch < parent.protection_price
            return None if beyond else parent.protection_price
        if parent.symbol not in self._books:
            return self._bar_post_price(parent.symbol, buy, bid, instrument)
        key = (parent.symbol, buy)
        cached = self._inside_prices.get(key)
        if cached is not None and cached[0] == bid and cached[1] == ask:
            return cached[2]
        inside = bid + instrument.tick_size if buy else ask - instrument.tick_size
        if not bid < inside < ask:
            inside = bid if buy else ask
        price = instrument.round_price(inside, Rounding.DOWN if buy else Rounding.UP)
        # Most book updates leave the touch where it was: every passive parent of the side reuses the price.
        self._inside_prices[key] = (bid, ask, price)
        return price

    def _bar_post_price(self, symbol: str, buy: bool, close: Decimal, instrument: Instrument) -> Decimal:
        """Return the estimated touch of a bar-priced symbol: the close less the half-spread, at least a tick off."""
        half = Decimal(repr(self.costs.half_spread(symbol))) if self.costs is not None else Decimal(0)
        tick = instrument.tick_size
        if buy:
            return min(instrument.round_price(close * (1 - half), Rounding.DOWN), close - tick)
        return max(instrument.round_price(close * (1 + half), Rounding.UP), close + tick)

    def _send_child(self, parent: ParentOrder, quantity: Decimal, price: Decimal, now: int) -> None:
        window_start = now - 10 * NANOS_PER_SECOND
        while self._sent and self._sent[0] <= window_start:
            self._sent.popleft()
        if len(self._sent) >= self.settings.max_orders_per_10s:
            self.throttled += 1
            return
        client_order_id = self.orders.next_client_order_id()
        parent.live_child = client_order_id
        parent.cancel_sent = False
        parent.children.append(client_order_id)
        self._parent_of[client_order_id] = parent
        self._sent.append(now)
        self.bus.publish(
            SubmitOrder(
                client_order_id=client_order_id,
                symbol=parent.symbol,
                side=parent.side,
                order_type=OrderType.LIMIT,
                quantity=quantity,
                price=price,
                time_in_force=TimeInForce.GTX if parent.passive else TimeInForce.IOC,
                reduce_only=parent.reduce_only,
                strategy=parent.strategy,
                approval_id=parent.approval_id,
                ts_event=now,
                ts_init=now,
            )
        )

    def _maybe_reprice(self, parent: ParentOrder) -> None:
        """Cancel a resting child whose price is no longer the one the book calls for (or after fallback)."""
        child = self.orders.orders.get(parent.live_child or "")
        if child is None or parent.cancel_sent or child.time_in_force is not TimeInForce.GTX:
            return
        if parent.passive and parent.symbol not in self._books:
            return  # a post on bars rests where it is until the time limit or an adverse move
        wanted = self._child_price(parent, self.instruments[parent.symbol]) if parent.passive else None
        if wanted != child.price:
            parent.cancel_sent = True
            now = self.clock.timestamp_ns()
            self.bus.publish(
                CancelOrder(client_order_id=child.client_order_id, symbol=parent.symbol, ts_event=now, ts_init=now)
            )

    def _set_passive(self, parent: ParentOrder, passive: bool) -> None:
        if parent.passive != passive:
            parent.passive = passive
            if parent.live_child is not None:
                self._maybe_reprice(parent)

    def _release_if_closed(self, parent: ParentOrder, client_order_id: str) -> None:
        child = self.orders.orders.get(client_order_id)
        if parent.live_child == client_order_id and (child is None or child.is_closed):
            parent.live_child = None
            parent.cancel_sent = False

    def _restrain(self, parent: ParentOrder, ts: int) -> None:
        """Apply the slippage limits: stretch the schedule, post instead of take, or pause."""
        action, limit = self.slippage.action(parent.parent_order_id)
        if action is SlippageAction.NONE:
            return
        if action is SlippageAction.SLOW_DOWN and parent.stretch == 1.0:
            parent.stretch = self.settings.slow_down_factor
        elif action is SlippageAction.GO_PASSIVE and not parent.passive and ts < parent.passive_deadline:
            self._set_passive(parent, True)
        elif action is SlippageAction.PAUSE and parent.paused_until <= ts:
            parent.paused_until = ts + round(self.settings.pause_seconds * NANOS_PER_SECOND)
        else:
            return
        now = self.clock.timestamp_ns()
        self.bus.publish(
            SlippageLimitBreached(
                parent_order_id=parent.parent_order_id,
                symbol=parent.symbol,
                slippage_bps=self.slippage.parent_slippage_bps(parent.parent_order_id),
                limit_bps=limit,
                action=action.value,
                ts_event=ts,
                ts_init=now,
            )
        )

    # --- parents -------------------------------------------------------------------------------

    def _new_parent(
        self,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        style: ExecutionStyle,
        reduce_only: bool,
        strategy: str,
        urgency: float | None,
        horizon_seconds: float,
    ) -> ParentOrder:
        settings, now = self.settings, self.clock.timestamp_ns()
        urgency = settings.urgency if urgency is None else urgency
        instrument = self.instruments[symbol]
        bid, ask = self._touch(symbol)
        band = Decimal(repr(settings.protection_bps)) / BPS
        buy = side is OrderSide.BUY
        protection = instrument.round_price(
            ask * (1 + band) if buy else bid * (1 - band), Rounding.DOWN if buy else Rounding.UP
        )
        impact = self._impact_bps(symbol, float(quantity), side)
        chosen = style
        if style is ExecutionStyle.ADAPTIVE:
            chosen = choose_style(urgency, side.sign, self._market_state(symbol, impact))
        if chosen is ExecutionStyle.PASSIVE and not self._maker_pays(symbol, quantity * (bid + ask) / 2):
            chosen = ExecutionStyle.AGGRESSIVE
        horizon = round(horizon_seconds * NANOS_PER_SECOND)
        passive_limit = round(settings.passive_time_limit_seconds * NANOS_PER_SECOND)
        parent_order_id = f"P-{next(self._parent_ids)}"
        schedule = self._schedule(chosen, symbol, now, horizon, parent_order_id)
        timed = chosen in (ExecutionStyle.TWAP, ExecutionStyle.VWAP)
        # On bars a taker fallback fills at the next bar's open: the parent lives at least two bars past its limit.
        bar_ns = self._bar_ns.get(symbol, 0)
        return ParentOrder(
            parent_order_id=parent_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            reduce_only=reduce_only,
            strategy=strategy,
            style=style,
            passive=chosen is ExecutionStyle.PASSIVE,
            schedule=schedule,
            start_ns=now,
            arrival_price=(bid + ask) / 2,
            protection_price=protection,
            passive_deadline=now + passive_limit,
            end_ns=schedule[-1].ts + passive_limit + (horizon if timed else max(passive_limit, 2 * bar_ns)),
            urgency=urgency,
            estimated_impact_bps=impact,
        )

    def _maker_pays(self, symbol: str, notional: Decimal) -> bool:
        """Return whether the cost model says posting beats taking over the passive time limit (True without one)."""
        if self.costs is None:
            return True
        bar_ns = self._bar_ns.get(symbol)
        wait = self.settings.passive_time_limit_seconds * NANOS_PER_SECOND
        # On bars a post waits at least the next bar.
        wait_bars = 1.0 if bar_ns is None else max(1.0, wait / bar_ns)
        return self.costs.maker_pays(symbol, float(notional), wait_bars)

    def _schedule(
        self, style: ExecutionStyle, symbol: str, now: int, horizon: int, parent_order_id: str
    ) -> list[Slice]:
        settings = self.settings
        if style is ExecutionStyle.TWAP:
            seed = settings.seed * 1_000_003 + int(parent_order_id[2:])
            return twap_schedule(
                now, horizon, settings.twap_slices, seed=seed, size_jitter=settings.size_jitter,
                time_jitter=settings.time_jitter,
            )  # fmt: skip
        if style is ExecutionStyle.VWAP:
            profiler = self.profilers.get(symbol)
            if profiler is None:
                raise ValueError(
                    f"VWAP needs a liquidity profile of {symbol}: a run gives its router one per symbol when a "
                    "strategy's style is VWAP (execution.default_style or execution.styles)"
                )
            minutes = max(1, round(horizon / (60 * NANOS_PER_SECOND)))
            start_minute = (now // (60 * NANOS_PER_SECOND)) % _MINUTES_PER_DAY
            return vwap_schedule(now, profiler.volume_schedule(int(start_minute), minutes))
        return [Slice(now, 1.0)]

    def _impact_bps(self, symbol: str, quantity: float, side: OrderSide) -> float | None:
        book = self._books.get(symbol)
        if book is not None and self.impact_model is not None and hasattr(self.impact_model, "n_observations_"):
            levels = book.asks if side is OrderSide.BUY else book.bids
            depth = sum(q for _, q in levels)
            mid = (book.bids[0][0] + book.asks[0][0]) / 2
            spread = (book.asks[0][0] - book.bids[0][0]) / mid * 10_000
            return self.impact_model.estimate_market_impact(
                quantity, {"spread_bps": spread, "depth": depth}
            ).expected_bps
        snapshot = self._snapshots.get(symbol)
        return None if snapshot is None else snapshot.impact_bps

    def _market_state(self, symbol: str, impact_bps: float | None = None) -> MarketState:
        snapshot = self._snapshots.get(symbol)
        if snapshot is not None:
            impact = snapshot.impact_bps if impact_bps is None else impact_bps
            return MarketState(snapshot.spread_bps, snapshot.imbalance_5, snapshot.vpin, impact)
        book = self._books.get(symbol)
        if book is None:
            return MarketState(0.0, 0.0, None, impact_bps)  # a bar's close: no spread, no imbalance known
        (bid, bid_quantity), (ask, ask_quantity) = book.bids[0], book.asks[0]
        mid = (bid + ask) / 2
        imbalance = (bid_quantity - ask_quantity) / (bid_quantity + ask_quantity)
        return MarketState((ask - bid) / mid * 10_000, imbalance, None, impact_bps)

    def _finish(self, parent: ParentOrder, reason: str) -> None:
        """Close a parent (cancelling its live child) and publish its transaction-cost analysis."""
        if parent.live_child is not None and not parent.cancel_sent:
            parent.cancel_sent = True
            now = self.clock.timestamp_ns()
            self.bus.publish(
                CancelOrder(client_order_id=parent.live_child, symbol=parent.symbol, ts_event=now, ts_init=now)
            )
        del self.parents[parent.parent_order_id]
        self._forget_children(parent)
        self.slippage.finish(parent.parent_order_id)
        completed = self._analysis(parent, reason)
        self.completed.append(completed)
        parent.settle(completed)
        self.bus.publish(completed)

    def _forget_children(self, parent: ParentOrder) -> None:
        """Keep only the ids of a finished parent's children (the oldest beyond ``history`` dropped)."""
        finished = self._finished_children
        for child in parent.children:
            self._parent_of.pop(child, None)
            finished[child] = parent.parent_order_id
        while len(finished) > self._history:
            finished.popitem(last=False)

    def _analysis(self, parent: ParentOrder, reason: str) -> ExecutionCompleted:
        bid, ask = self._touch(parent.symbol)
        final = (bid + ask) / 2
        sign, arrival, fills = parent.side.sign, parent.arrival_price, parent.fills
        shortfall = implementation_shortfall(sign, parent.quantity, arrival, final, fills)
        filled = parent.filled
        average = None if filled == 0 else sum((f.price * f.quantity for f in fills), Decimal(0)) / filled
        half_spread = (ask - bid) / 2 / final * BPS
        realized = 0.0 if average is None else float(sign * (average - arrival) / arrival * BPS - half_spread)
        vwap = None if parent.print_volume <= 0 else _decimal(parent.print_notional / parent.print_volume)
        now = self.clock.timestamp_ns()
        return ExecutionCompleted(
            parent_order_id=parent.parent_order_id,
            symbol=parent.symbol,
            side=parent.side,
            strategy=parent.strategy,
            style=parent.style.value,
            quantity=parent.quantity,
            filled_quantity=filled,
            arrival_price=arrival,
            average_price=average,
            final_price=final,
            interval_vwap=vwap,
            fees=sum((f.fee for f in fills), Decimal(0)),
            implementation_shortfall=shortfall,
            implementation_shortfall_bps=float(shortfall / (arrival * parent.quantity) * BPS),
            spread_paid_bps=spread_paid_bps(sign, fills),
            estimated_impact_bps=parent.estimated_impact_bps,
            realized_impact_bps=realized,
            child_orders=len(parent.children),
            reason=reason,
            approval_id=parent.approval_id,
            ts_event=now,
            ts_init=now,
        )

    def _touch(self, symbol: str) -> tuple[Decimal, Decimal]:
        """Return the best bid and ask: the recorded book's, else the last bar close as both."""
        book = self._books.get(symbol)
        if book is None:
            close = _decimal(self._closes[symbol])
            return close, close
        # Every parent of the symbol asks for the same touch on each book update: convert it once.
        cached = self._touches.get(symbol)
        if cached is not None and cached[0] is book:
            return cached[1]
        touch = _decimal(book.bids[0][0]), _decimal(book.asks[0][0])
        self._touches[symbol] = (book, touch)
        return touch


def _decimal(value: float) -> Decimal:
    return Decimal(repr(value))


def _order_side(side: OrderSide | str) -> OrderSide:
    """Return ``side`` as an OrderSide, from itself or its name."""
    if isinstance(side, OrderSide):
        return side
    try:
        return OrderSide(side)
    except ValueError:
        raise ValueError(f"order side must be BUY or SELL, got {side!r}") from None


def _order_quantity(quantity: Decimal | int | str) -> Decimal:
    """Return ``quantity`` as an exact Decimal (a float is refused: its binary value is not the amount meant)."""
    if isinstance(quantity, Decimal):
        return quantity
    if isinstance(quantity, float):
        raise TypeError(f"order quantity must be exact: pass Decimal({str(quantity)!r}), not the float {quantity!r}")
    if isinstance(quantity, bool) or not isinstance(quantity, int | str):
        raise TypeError(f"order quantity must be a Decimal, an int or a decimal string, got {type(quantity).__name__}")
    try:
        return Decimal(quantity)
    except ArithmeticError:
        raise ValueError(f"order quantity {quantity!r} is not a number") from None
