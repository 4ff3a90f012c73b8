"""Commands and events: immutable msgspec structs that travel on the event bus.

Commands are imperative and go to exactly one handler (``SubmitOrder``);
events are past tense and go to every subscriber (``OrderFilled``). Every
message carries an integer ``id`` and integer-nanosecond ``ts_event`` (when it
happened) and ``ts_init`` (when keel created the message), and round-trips
through JSON for the journal and the dashboard.

Each message type names the bus lane it travels on (see :mod:`keel.core.bus`).
Market data carries floats (it feeds numpy analytics); anything that reaches
the exchange or the books (quantities, prices of orders and fills, money)
carries :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from enum import Enum
from typing import ClassVar, Union

import msgspec

from keel.core.fsm import ComponentState, TradingState
from keel.core.orders import LiquiditySide, OrderSide, OrderType, TimeInForce


class Lane(Enum):
    """Bus lanes, each with its own overload policy."""

    CONTROL = "control"
    EXECUTION = "execution"
    MARKET_DATA = "market_data"


_message_ids = itertools.count(1)


def next_message_id() -> int:
    """Return the next message id of this process."""
    return next(_message_ids)


def reset_message_ids(start: int = 1) -> None:
    """Restart message ids at ``start`` (a backtest does this for reproducible ids)."""
    global _message_ids
    _message_ids = itertools.count(start)


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    """Base of every command and event."""

    lane: ClassVar[Lane] = Lane.EXECUTION
    is_command: ClassVar[bool] = False

    ts_event: int
    ts_init: int
    id: int = msgspec.field(default_factory=next_message_id)


class Command(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """A request to one handler, named in the imperative."""

    is_command: ClassVar[bool] = True


class Event(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """A fact for every subscriber, named in the past tense."""


class MarketDataEvent(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """Market data for one symbol; the bus may conflate these per (type, symbol)."""

    lane: ClassVar[Lane] = Lane.MARKET_DATA
    symbol: str


# --- market data ----------------------------------------------------------------


class BarClosed(MarketDataEvent, frozen=True, kw_only=True, tag=True, gc=False):
    """A time bar closed; ``ts_event`` is its close time, ``open_time`` its open time (ns)."""

    interval: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class TradeTick(MarketDataEvent, frozen=True, kw_only=True, tag=True, gc=False):
    """One trade printed on the venue."""

    trade_id: str
    price: float
    quantity: float
    aggressor_side: OrderSide


class BookUpdated(MarketDataEvent, frozen=True, kw_only=True, tag=True, gc=False):
    """The local order book changed; top levels as (price, quantity) pairs, best first."""

    update_id: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


class FundingRateUpdated(MarketDataEvent, frozen=True, kw_only=True, tag=True, gc=False):
    """A funding rate settles at ``funding_time`` (ns) at ``mark_price``."""

    funding_time: int
    rate: Decimal
    mark_price: Decimal | None


class BookTickerUpdated(MarketDataEvent, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue's best bid and offer changed (Binance ``bookTicker``).

    ``update_id`` is in the same sequence as the depth stream's update ids.
    """

    update_id: int
    bid_price: float
    bid_quantity: float
    ask_price: float
    ask_quantity: float


class MarkPriceUpdated(MarketDataEvent, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue's mark and index price and the funding rate now in force (Binance ``markPriceUpdate``).

    ``next_funding_time`` (ns) is when ``funding_rate`` settles next.
    """

    mark_price: Decimal
    index_price: Decimal
    estimated_settle_price: Decimal
    funding_rate: Decimal
    next_funding_time: int


class LiquidationReported(MarketDataEvent, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue liquidated a position (Binance ``forceOrder``): the liquidation order's latest state.

    ``quantity`` is the order's size, ``filled_quantity`` what has traded so
    far and ``last_filled_quantity`` the latest fill; ``status`` is Binance's
    order status (``NEW``, ``PARTIALLY_FILLED``, ``FILLED``, ...).
    """

    side: OrderSide
    price: float
    average_price: float
    quantity: float
    last_filled_quantity: float
    filled_quantity: float
    status: str


class FeedHealthChanged(MarketDataEvent, frozen=True, kw_only=True, tag=True, gc=False):
    """A market-data stream of a symbol went stale (silent longer than allowed) or recovered.

    ``silent_ns`` is how long the stream had been silent when this was decided.
    """

    stream: str
    stale: bool
    silent_ns: int
    reason: str


class MicrostructureSnapshot(MarketDataEvent, frozen=True, kw_only=True, tag=True, gc=False):
    """The microstructure of one symbol as the analyzers see it now (conflatable: newest wins).

    Book fields come from the last published book (``update_id``); depths
    are base-asset quantities within ``depth_bps`` of the mid; imbalances and
    ``book_pressure`` lie in [-1, 1] (positive: more bids). Trade-flow fields,
    the impact estimate for ``impact_reference_quantity`` and the liquidity
    profile fields are None until their analyzer has enough data.
    """

    update_id: int
    mid_price: float
    spread_bps: float
    microprice: float
    imbalance_1: float
    imbalance_5: float
    imbalance_10: float
    depth_bps: float
    bid_depth: float
    ask_depth: float
    book_pressure: float
    bid_wall_price: float | None
    ask_wall_price: float | None
    vpin: float | None
    order_flow_imbalance: float | None
    kyle_lambda: float | None
    realized_volatility: float | None
    trade_burst: bool
    sweep: bool
    impact_reference_quantity: float
    impact_bps: float | None
    expected_volume_share: float | None
    liquidity_score: float | None


# --- strategy and portfolio ------------------------------------------------------


class SignalAction(Enum):
    """What a strategy wants for a symbol."""

    BUY = "BUY"
    SELL = "SELL"
    HOLD = "HOLD"


class SignalGenerated(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A strategy's view on a symbol; strength and confidence lie in [0, 1].

    ``contributions`` is, for a combined view (the strategy manager's), each
    underlying strategy's signed share of the combined score: what orders the
    view causes are attributed by.
    """

    strategy: str
    symbol: str
    action: SignalAction
    strength: float
    confidence: float
    stop_loss: float | None = None
    take_profit: float | None = None
    contributions: dict[str, float] = msgspec.field(default_factory=dict)


class AllocationProposed(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """Target portfolio weights (signed fractions of equity) per symbol."""

    weights: dict[str, float]
    reason: str


class Rebalance(Command, frozen=True, kw_only=True, tag=True, gc=False):
    """Recompute the target allocation now."""

    reason: str


class TargetQuantityProposed(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A strategy's own position in ``symbol``, in base units (negative is short), held outside the weights.

    A strategy that trades a fixed amount (a scheduled buy of a fixed
    notional) proposes the position it holds instead of a view: the allocator
    leaves it as it is and the risk layer adds it to the symbol's target
    position, approving (or cutting, with an ``OrderDenied`` naming why) the
    change. ``reference_price`` is the close the quantity was computed at.
    """

    strategy: str
    symbol: str
    quantity: float
    reference_price: float
    reason: str


class LadderProposed(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A strategy wants one resting post-only limit order per price level of ``symbol`` (a grid).

    ``sides[i]`` is the side of the order at ``prices[i]`` (None: no order at
    that level, the one nearest the price when the ladder is built); every
    level's order is worth ``level_notional`` USDT; the ladder's filled
    levels may not exceed ``max_inventory_levels`` either way. Empty
    ``prices`` end the ladder: its orders are canceled and what it holds is
    released to the symbol's target position (flattened when no view holds it).
    """

    strategy: str
    symbol: str
    prices: tuple[float, ...]
    sides: tuple[OrderSide | None, ...]
    level_notional: float
    max_inventory_levels: int
    reason: str


class MarketRegime(Enum):
    """The state of a market as the regime detector labels it (UNKNOWN before its first fit)."""

    TRENDING = "trending"
    MEAN_REVERTING = "mean_reverting"
    HIGH_VOLATILITY = "high_volatility"
    LOW_VOLATILITY = "low_volatility"
    UNKNOWN = "unknown"


class RegimeChanged(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The most likely regime of a symbol changed.

    ``probabilities`` are the detector's filtered probabilities per regime
    value; ``volatility`` is its one-bar-ahead volatility forecast (a fraction,
    None before the first volatility fit).
    """

    symbol: str
    previous: MarketRegime
    regime: MarketRegime
    probabilities: dict[str, float]
    volatility: float | None = None


class StrategyError(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """Strategy code raised on a bar of ``symbol``; the engine went on without its view.

    ``disabled`` is true when the error made the strategy manager switch the
    strategy off (too many consecutive errors).
    """

    strategy: str
    symbol: str
    error_type: str
    message: str
    disabled: bool = False


class StrategyGateEvaluated(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A strategy's backtest gate was checked: ``passed`` lets its signals count, else ``reason`` says why not.

    ``sharpe`` (annualized, None when undefined), ``max_drawdown`` and
    ``trades`` are the backtest's over the last ``window_days`` of data.
    """

    lane: ClassVar[Lane] = Lane.CONTROL
    strategy: str
    passed: bool
    reason: str | None = None
    sharpe: float | None = None
    max_drawdown: float = 0.0
    trades: int = 0
    window_days: float = 30.0


class ScheduleFired(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A strategy's schedule fired on the wall clock: its buy is due at the first bar closing at or after ``fire_time``.

    ``coalesced`` counts the earlier fire times folded into this one (missed
    while the process was down or the loop stalled; the misfire policy).
    """

    strategy: str
    fire_time: int
    coalesced: int = 0


class ScheduleMisfired(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """Fire times of a strategy's schedule were missed by more than the misfire grace: skipped, nothing bought.

    ``missed`` fire times from ``first_missed`` to ``last_missed`` (ns since the epoch).
    """

    strategy: str
    first_missed: int
    last_missed: int
    missed: int
    grace_seconds: float


class CorrelationJumped(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The recent correlation of two symbols moved away from its longer-run value by more than the threshold."""

    first: str
    second: str
    previous: float
    current: float
    threshold: float


# --- risk ---------------------------------------------------------------------------


class OrderApproved(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The risk layer approved and sized an order for execution."""

    symbol: str
    side: OrderSide
    quantity: Decimal
    order_type: OrderType
    price: Decimal | None
    reduce_only: bool
    strategy: str


class OrderDenied(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The risk layer refused an order locally; ``reason_code`` is machine-readable."""

    symbol: str
    side: OrderSide
    quantity: Decimal
    reason_code: str
    reason: str
    strategy: str


class LevelOrderProposed(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The execution layer wants to rest a ladder's order at level ``level`` (placing it, or re-arming it after a fill).

    ``ladder_id`` is the id of the ``LadderProposed`` the level belongs to.
    """

    strategy: str
    symbol: str
    ladder_id: int
    level: int
    side: OrderSide
    price: float
    notional: float


class LevelOrderApproved(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The risk layer approved and sized a ladder's post-only limit order at one level.

    ``price`` is on the instrument's tick grid (a buy rounded down, a sell
    up) and ``quantity`` on its step grid; ``proposal_id`` is the id of the
    ``LevelOrderProposed`` it answers.
    """

    strategy: str
    symbol: str
    ladder_id: int
    level: int
    side: OrderSide
    price: Decimal
    quantity: Decimal
    proposal_id: int


class SetTradingState(Command, frozen=True, kw_only=True, tag=True, gc=False):
    """Move the trading state (ACTIVE / REDUCING / HALTED)."""

    lane: ClassVar[Lane] = Lane.CONTROL
    state: TradingState
    reason: str


class TradingStateChanged(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The trading state moved."""

    lane: ClassVar[Lane] = Lane.CONTROL
    previous: TradingState
    state: TradingState
    reason: str


class RiskLimitsUpdated(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The risk layer's limits, or the per-symbol weight caps they imply at the current equity, changed.

    ``limits`` maps each limit's name (``max_leverage``, ``var_daily_pct``, ...)
    to its value; ``position_weight_caps`` is the largest absolute weight
    (position notional over equity) each symbol may reach; ``equity`` is the
    equity the caps were computed at.
    """

    limits: dict[str, float]
    position_weight_caps: dict[str, float]
    equity: float
    reason: str


class RiskBreached(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A portfolio risk limit was breached; ``limit`` names it, ``state`` is the trading state it led to."""

    limit: str
    value: float
    threshold: float
    state: TradingState
    reason: str


# --- execution ----------------------------------------------------------------------


class PositionSide(Enum):
    """Which position an order works on: BOTH in one-way mode, LONG or SHORT in hedge mode."""

    BOTH = "BOTH"
    LONG = "LONG"
    SHORT = "SHORT"


class WorkingType(Enum):
    """The price a stop or take-profit order triggers on (Binance's ``workingType``)."""

    MARK_PRICE = "MARK_PRICE"
    CONTRACT_PRICE = "CONTRACT_PRICE"
    """The last traded price."""


class MarginType(Enum):
    """How a symbol's positions are margined: from the shared wallet or from their own margin."""

    CROSSED = "CROSSED"
    ISOLATED = "ISOLATED"


class SubmitOrder(Command, frozen=True, kw_only=True, tag=True, gc=False):
    """Send a new order to the venue.

    ``stop_price`` triggers STOP_MARKET and TAKE_PROFIT_MARKET orders on the
    ``working_type`` price. ``close_position`` (stop and take-profit orders
    only) closes the whole position when triggered; the venue then ignores
    ``quantity``, as Binance does. ``position_side`` is BOTH in one-way mode
    and LONG or SHORT in hedge mode. ``approval_id`` is the id of the
    ``OrderApproved`` the order works (None for an order the risk layer did
    not approve: an operator's, a flatten).
    """

    client_order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    stop_price: Decimal | None = None
    strategy: str = "manual"
    position_side: PositionSide = PositionSide.BOTH
    close_position: bool = False
    working_type: WorkingType = WorkingType.CONTRACT_PRICE
    approval_id: int | None = None


class CancelOrder(Command, frozen=True, kw_only=True, tag=True, gc=False):
    """Cancel one working order."""

    client_order_id: str
    symbol: str


class CancelAllOrders(Command, frozen=True, kw_only=True, tag=True, gc=False):
    """Cancel every working order (of one symbol, or all when ``symbol`` is None)."""

    lane: ClassVar[Lane] = Lane.CONTROL
    symbol: str | None
    reason: str


class OrderSubmitted(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """An order left keel for the venue; ``approval_id`` as in its ``SubmitOrder``."""

    client_order_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    approval_id: int | None = None


class OrderAccepted(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue acknowledged an order."""

    client_order_id: str
    venue_order_id: str
    symbol: str


class OrderRejected(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue refused an order; ``code`` is the venue's error code."""

    client_order_id: str
    symbol: str
    code: int
    reason: str


class OrderFilled(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """An order traded; ``commission`` is in the quote asset, positive means paid."""

    client_order_id: str
    venue_order_id: str
    symbol: str
    trade_id: str
    side: OrderSide
    last_quantity: Decimal
    last_price: Decimal
    commission: Decimal
    liquidity_side: LiquiditySide
    strategy: str = "manual"


class OrderCanceled(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue confirmed a cancel."""

    client_order_id: str
    symbol: str
    reason: str = ""


class OrderExpired(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue expired an order (IOC, FOK or GTX leftovers)."""

    client_order_id: str
    symbol: str
    reason: str = ""


class PositionChanged(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A position changed; ``quantity`` is signed (negative is short)."""

    symbol: str
    quantity: Decimal
    entry_price: Decimal
    realized_pnl: Decimal


class FundingPaid(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A funding payment settled; ``amount`` is credited to the wallet (negative: paid)."""

    symbol: str
    funding_time: int
    rate: Decimal
    mark_price: Decimal
    position_quantity: Decimal
    amount: Decimal


class PositionLiquidated(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue liquidated a position because its margin fell to the maintenance margin.

    The venue's liquidation order (``client_order_id`` starts with ``autoclose-``)
    closed ``quantity`` at ``price``; its fill is reported as an ``OrderFilled``
    whose commission is the ``liquidation_fee``. ``insurance_fund_covered`` is
    the loss beyond the margin that the insurance fund absorbed (the wallet
    never goes below zero).
    """

    symbol: str
    position_side: PositionSide
    margin_type: MarginType
    client_order_id: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    mark_price: Decimal
    realized_pnl: Decimal
    liquidation_fee: Decimal
    insurance_fund_covered: Decimal


class SlippageLimitBreached(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A parent order's realized slippage against its arrival price crossed a limit.

    ``slippage_bps`` is positive when the fills cost more than the arrival
    price; ``action`` is what the router did (``slow_down``, ``go_passive``,
    ``pause``).
    """

    parent_order_id: str
    symbol: str
    slippage_bps: float
    limit_bps: float
    action: str


class ExecutionCompleted(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A parent order finished; its transaction-cost analysis (bps are positive when they cost).

    ``interval_vwap`` is the market's VWAP while the parent worked (None with no
    prints); ``implementation_shortfall`` is in quote currency and includes the
    fees and the opportunity cost of the unfilled quantity at ``final_price``.
    ``approval_id`` is the id of the ``OrderApproved`` the parent worked (None
    for a parent started by hand): whatever of it was not sent is no longer
    on its way.
    """

    parent_order_id: str
    symbol: str
    side: OrderSide
    strategy: str
    style: str
    quantity: Decimal
    filled_quantity: Decimal
    arrival_price: Decimal
    average_price: Decimal | None
    final_price: Decimal
    interval_vwap: Decimal | None
    fees: Decimal
    implementation_shortfall: Decimal
    implementation_shortfall_bps: float
    spread_paid_bps: float
    estimated_impact_bps: float | None
    realized_impact_bps: float
    child_orders: int
    reason: str
    approval_id: int | None = None


class SystemHealth(Enum):
    """Overall health the system monitor reports."""

    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    UNHEALTHY = "UNHEALTHY"


class HealthChanged(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The system monitor's verdict changed; ``reasons`` lists every open problem."""

    lane: ClassVar[Lane] = Lane.CONTROL
    previous: SystemHealth
    health: SystemHealth
    reasons: tuple[str, ...]


class ComponentStateChanged(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A component moved in its lifecycle."""

    lane: ClassVar[Lane] = Lane.CONTROL
    component: str
    previous: ComponentState
    state: ComponentState
    reason: str = ""


class SessionStarted(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A trading session began: fresh, or recovering an unfinished one (``recovered``)."""

    lane: ClassVar[Lane] = Lane.CONTROL
    session: int
    mode: str
    recovered: bool
    initial_capital: Decimal | None = None


class SessionEnded(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A trading session stopped; ``finished`` when it has nothing left to do (its data ended).

    A session that stopped unfinished (an operator's stop, a crash: no event
    at all) is recovered by the next start.
    """

    lane: ClassVar[Lane] = Lane.CONTROL
    session: int
    reason: str
    finished: bool


class ReconciliationCompleted(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """keel compared its recovered state with the venue's and took the venue's where they differed.

    ``adopted_orders`` were at the venue but unknown to keel; ``resolved_orders``
    were open in keel and settled by querying the venue (``never_sent_orders``
    of them never reached it); ``missed_fills`` and ``missed_funding`` are
    venue records keel had not applied. ``mismatches`` lists what the
    reconciliation could not explain (a position or balance that still
    differs): the system monitor halts trading on any.
    """

    lane: ClassVar[Lane] = Lane.CONTROL
    adopted_orders: tuple[str, ...]
    resolved_orders: tuple[str, ...]
    never_sent_orders: tuple[str, ...]
    missed_fills: int
    missed_funding: int
    mismatches: tuple[str, ...]


class MarginCalled(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue warned that positions are close to liquidation (Binance's ``MARGIN_CALL``).

    ``positions`` holds, per position at risk, its symbol, side, quantity,
    mark price and maintenance margin as the venue reported them.
    """

    lane: ClassVar[Lane] = Lane.CONTROL
    cross_wallet_balance: Decimal | None
    positions: tuple[tuple[str, str, Decimal, Decimal, Decimal], ...]


class VenueConditionChanged(Event, frozen=True, kw_only=True, tag=True, gc=False):
    """A condition of the connection to the venue began (``active``) or ended.

    ``condition`` is ``banned`` (the venue refuses this IP until ``until_ns``),
    ``clock`` (the offset to the venue's clock is unsafe to sign with) or
    ``user_stream`` (the account's event stream is down: orders and
    positions are polled over REST instead).
    """

    lane: ClassVar[Lane] = Lane.CONTROL
    venue: str
    condition: str
    active: bool
    reason: str
    until_ns: int | None = None


_BASES = (Message, Command, Event, MarketDataEvent)


def _concrete_types(base: type[Message]) -> list[type[Message]]:
    found = []
    for subclass in base.__subclasses__():
        if subclass not in _BASES:
            found.append(subclass)
        found.extend(_concrete_types(subclass))
    return found


MESSAGE_TYPES: tuple[type[Message], ...] = tuple(dict.fromkeys(_concrete_types(Message)))
"""Every concrete message type defined in this module (the JSON decoder's union)."""

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Union[MESSAGE_TYPES])  # noqa: UP007 - a runtime union of a tuple


def encode_message(message: Message) -> bytes:
    """Serialize a message to JSON (with a ``type`` tag naming its class)."""
    return _encoder.encode(message)


def decode_message(data: bytes | str) -> Message:
    """Rebuild a message from :func:`encode_message`'s JSON.

    Raises
    ------
    msgspec.ValidationError
        If the JSON is not a known message or a field has the wrong type.
    """
    return _decoder.decode(data)
