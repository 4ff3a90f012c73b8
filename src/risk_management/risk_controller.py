"""Pre-trade risk: turn target weights into sized orders, or deny them with a reason; watch the portfolio.

The :class:`RiskController` approves and sizes every order. On each
allocation it projects every symbol's position as the booked position plus
the orders already approved and not yet filled, moves the projection towards
``weight x equity / price`` clipped to the per-symbol limits (the
:class:`~keel.risk_management.sizing.PositionSizer`'s Kelly, ATR, VaR-budget
and liquidation-safety sizes and the per-position notional), rounds the order
down to the instrument's step, clips it to the per-order notional, and checks,
in this order: the trading state, the minimum notional, the order rate, the
gross and net leverage and the daily VaR (parametric, on a cached covariance)
of the account after the order. Orders approved earlier in the same
allocation count towards the limits of the next. Orders that reduce the
projected position skip the leverage and VaR checks.

An order is reduce-only only when the venue will take it as one: it points
against the *booked* position and fits in what the orders already on their
way on that side leave of it (an order that only offsets an unfilled one is
an ordinary order). Only reduce-only orders are exempt from the minimum
notional; an ordinary order below it that has a small opposite position to
work against closes that position reduce-only instead, and a position below
the lot size, which no order can close, is written off (both reported once).
Every ordinary order must fit the venue's initial margin at the account's
leverage, and the order the venue last rejected is not approved again while
the position it was rejected against has not moved. An approval counts as
pending until its child orders reach the venue or its parent order ends
(``ExecutionCompleted``), so what a parent never sent is not counted for ever;
what a child leaves unfilled (an IOC's leftover, a canceled resting order) is
pending again while its parent may still send it.
Every refusal is an ``OrderDenied`` event with a :class:`DenialReason` code.

Some strategies trade fixed amounts instead of views: a strategy's own
position (``TargetQuantityProposed``, a scheduled buy's quantity) is ordered
as it changes, through the same checks, and a ladder's level orders (a grid)
are approved by :class:`~keel.risk_management.ladder_risk.LadderRisk`. What
they hold (the approved part of the targets, the ladders' fills and working
orders) is added to the weight-driven target, so a rebalance never trades
against it.

It also watches the portfolio once per bar time: equity and its drawdown
from the peak, daily VaR and CVaR (historical, parametric or EWMA) and
leverage. A breach publishes ``RiskBreached`` and moves the trading state
(ACTIVE -> REDUCING on the drawdown, VaR or leverage limit, -> HALTED on the
halt drawdown); a VaR or leverage breach clears by itself once back under the
limit, a drawdown never does (an operator resumes with ``SetTradingState``).
Limits change at run time with :meth:`RiskController.update_limits`, and
every change (and every 5 % move of equity, which moves the per-symbol weight
caps) is published as ``RiskLimitsUpdated`` for the optimizer.

Orders are priced at the marks of the last completed bar time (see
``PositionManager.reference_marks``), so approvals do not depend on the order
in which the bars of one time arrive. The arithmetic of a check is in
floats; quantities become exact Decimals on the step grid, rounded down with
a margin so float error never rounds up.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, Final, SupportsFloat, cast

import numpy as np
from mypy_extensions import mypyc_attr

from keel.core.accounting import ZERO
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_SECOND, Clock, SimulatedClock
from keel.core.component import Component
from keel.core.costs import CostModel
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import RiskRefusedError
from keel.core.floats import finite
from keel.core.fsm import TRADING_STATE_TRANSITIONS, ComponentState, StateMachine, TradingState
from keel.core.instruments import Instrument, bundled_instruments
from keel.core.intervals import INTERVAL_MS, bars_per_day
from keel.core.messages import (
    AllocationProposed,
    BarClosed,
    ExecutionCompleted,
    LadderProposed,
    LevelOrderProposed,
    MarketRegime,
    OrderApproved,
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    RegimeChanged,
    RiskBreached,
    RiskLimitsUpdated,
    SetTradingState,
    SignalAction,
    SignalGenerated,
    TargetQuantityProposed,
    TradingStateChanged,
)
from keel.core.orders import OrderSide, OrderType
from keel.portfolio.returns import ReturnWindow
from keel.risk_management.ladder_risk import LadderRisk
from keel.risk_management.limits import RiskLimits
from keel.risk_management.measures import PortfolioState, RiskViolation, VaREstimate
from keel.risk_management.position_manager import PositionManager
from keel.risk_management.sizing import PositionSizer, SizeLimits, StepGrid, kelly_fraction
from keel.risk_management.var import (
    VAR_METHODS,
    EwmaCovariance,
    historical_var,
    normal_quantile,
    normal_tail_density,
    parametric_var,
    sample_covariance,
)

_isfinite = math.isfinite


def _is_finite_number(value: object) -> bool:
    """Return whether ``value`` is a finite real number (False for a string or None instead of a TypeError)."""
    try:
        return _isfinite(value)  # type: ignore[arg-type]
    except TypeError:
        return False


_SIGN = {SignalAction.BUY: 1.0, SignalAction.SELL: -1.0, SignalAction.HOLD: 0.0}
_BARS_PER_DAY: Final = {"1s": 86_400.0} | {name: bars_per_day(name) for name in INTERVAL_MS}
_CAP_REPUBLISH: Final = 0.05
_AUTOMATIC = "risk"
_POST_ONLY_REJECTED = int(BinanceErrorCode.GTX_ORDER_REJECT)
# Share of equity the initial margin of positions and orders may take: the rest covers fees and the
# limit child's protection band, priced a little beyond the mark the check uses.
_MARGIN_HEADROOM = 0.95


class DenialReason(Enum):
    """Why the risk layer refused an order."""

    TRADING_HALTED = "TRADING_HALTED"
    REDUCE_ONLY_STATE = "REDUCE_ONLY_STATE"
    NO_PRICE = "NO_PRICE"
    NO_EQUITY = "NO_EQUITY"
    BELOW_MIN_NOTIONAL = "BELOW_MIN_NOTIONAL"
    MAX_LEVERAGE = "MAX_LEVERAGE"
    MAX_NET_LEVERAGE = "MAX_NET_LEVERAGE"
    VAR_LIMIT = "VAR_LIMIT"
    ORDER_RATE_LIMIT = "ORDER_RATE_LIMIT"
    UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
    INVALID_TARGET = "INVALID_TARGET"
    INSUFFICIENT_MARGIN = "INSUFFICIENT_MARGIN"
    VENUE_REJECTED = "VENUE_REJECTED"
    DUST_WRITTEN_OFF = "DUST_WRITTEN_OFF"
    INVENTORY_CAP = "INVENTORY_CAP"
    POSITION_LIMIT = "POSITION_LIMIT"
    ORDER_NOTIONAL = "ORDER_NOTIONAL"


@dataclass(slots=True)
class _Intent:
    """An approved order while its parent works: what the parent may still send (its router sends child orders).

    ``live`` is the unfilled remainder of its children at the venue and
    ``filled`` what they filled; the rest of ``quantity`` is unsent.
    """

    symbol: str
    sign: int
    quantity: Decimal
    live: Decimal = ZERO
    filled: Decimal = ZERO

    @property
    def unsent(self) -> Decimal:
        """Return the approved quantity neither filled nor on the venue (never below zero)."""
        return max(self.quantity - self.filled - self.live, ZERO)


@dataclass(frozen=True, slots=True)
class _Rejection:
    """The order the venue last rejected for a symbol, and the position it was rejected against."""

    side: OrderSide
    quantity: Decimal
    reduce_only: bool
    code: int
    reason: str
    booked: Decimal


@mypyc_attr(allow_interpreted_subclasses=True)
class RiskController(Component):
    """Approve and size orders from target weights; watch drawdown, VaR and leverage; hold the trading state.

    Every argument has a default, so the controller can be built with keywords
    alone, as in the user's UC-1.2 (``RiskController(initial_capital_usdt=100000.0,
    var_daily_pct=0.02, max_drawdown_pct=0.12, max_leverage=10.0)``): then it has
    the bundled instruments, a fresh position book and a private bus and clock.

    Parameters
    ----------
    instruments
        Filters of every tradable symbol; the bundled specifications when None.
    positions
        keel's position book (equity, exposure, marks); a fresh one holding
        ``initial_capital_usdt`` (10,000 when None) when None.
    initial_capital_usdt
        Starting equity of the fresh position book.
    max_order_notional, max_position_notional, max_leverage, var_daily_pct, max_drawdown_pct
        Limits laid over ``limits`` (see :class:`~keel.risk_management.limits.RiskLimits`).
    rebalance_threshold
        No order when the change is below this fraction of the target position.
    costs
        The shared cost model; with it, exposure is added only when the view's
        expected return over ``holding_bars`` covers the round trip (else a
        flip goes flat and an addition is skipped), and no order but a close is
        smaller than ``min_order_weight`` of equity. None: no cost rule.
    min_order_weight, holding_bars
        The cost rule's smallest order (a fraction of equity) and horizon (bars).
    hold_band
        With ``costs``, the exit side of the band: while ACTIVE a position the
        targets would close (or flip without paying for the new side) is kept
        until the view turns against it by enough that closing pays its one-way
        cost over ``holding_bars`` (:meth:`~keel.core.costs.CostModel.worth_closing`);
        never beyond ``max_position_notional``.
    limits
        Every limit (see :class:`~keel.risk_management.limits.RiskLimits`).
    sizer
        The position sizer; a default one when None.
    symbols
        Symbols whose returns feed VaR and volatility; every instrument when None.
    var_method
        ``historical``, ``parametric`` or ``ewma`` for the portfolio monitor.
    var_window
        Bars of returns kept for VaR, volatility and expected returns.
    min_var_observations
        Bars needed before VaR is enforced.
    covariance_refresh_bars
        Bars between refreshes of the cached covariance.
    ewma_decay
        RiskMetrics lambda of the EWMA covariance.
    signal_weight, information_coefficient
        How the strategies' views enter the Kelly edge (as in the optimizer).
    atr_period
        Bars in the Wilder average true range.
    bus, clock
        The event bus and the clock; private ones when None.
    """

    def __init__(
        self,
        instruments: Mapping[str, Instrument] | None = None,
        positions: PositionManager | None = None,
        *,
        initial_capital_usdt: float | None = None,
        max_order_notional: Decimal | float | None = None,
        max_position_notional: Decimal | float | None = None,
        max_leverage: float | None = None,
        var_daily_pct: float | None = None,
        max_drawdown_pct: float | None = None,
        rebalance_threshold: float = 0.0,
        costs: CostModel | None = None,
        min_order_weight: float = 0.0,
        holding_bars: float = 30.0,
        hold_band: bool = False,
        limits: RiskLimits | None = None,
        sizer: PositionSizer | None = None,
        symbols: Sequence[str] | None = None,
        var_method: str = "parametric",
        var_window: int = 1440,
        min_var_observations: int = 60,
        covariance_refresh_bars: int = 60,
        ewma_decay: float = 0.97,
        signal_weight: float = 0.8,
        information_coefficient: float = 0.05,
        atr_period: int = 14,
        bus: EventBus | None = None,
        clock: Clock | None = None,
    ) -> None:
        bus = bus if bus is not None else EventBus()
        clock = clock if clock is not None else SimulatedClock(0)
        super().__init__("risk.controller", bus, clock)
        if positions is None:
            capital = Decimal(str(10_000.0 if initial_capital_usdt is None else initial_capital_usdt))
            if not capital.is_finite() or capital <= 0:
                raise ValueError(f"initial_capital_usdt must be a positive finite number, got {initial_capital_usdt}")
            positions = PositionManager(capital, bus, clock)
        elif initial_capital_usdt is not None and Decimal(str(initial_capital_usdt)) != positions.initial_capital:
            raise ValueError(
                f"initial_capital_usdt {initial_capital_usdt} differs from the position book's "
                f"{positions.initial_capital}: give one of them"
            )
        standalone = instruments is None
        instruments = bundled_instruments() if instruments is None else instruments
        if var_method not in VAR_METHODS:
            raise ValueError(f"unknown VaR method {var_method!r}; expected one of {', '.join(VAR_METHODS)}")
        skeleton = {
            "max_order_notional": max_order_notional,
            "max_position_notional": max_position_notional,
            "max_leverage": max_leverage,
            "var_daily_pct": var_daily_pct,
            "max_drawdown_pct": max_drawdown_pct,
        }
        base = limits if limits is not None else RiskLimits()
        self.limits = base.updated({k: float(v) for k, v in skeleton.items() if v is not None})
        self.rebalance_threshold = float(rebalance_threshold)
        self.costs = costs
        self.min_order_weight = min_order_weight
        self.holding_bars = holding_bars
        self.hold_band = hold_band
        self.sizer = sizer if sizer is not None else PositionSizer()
        self.var_method = var_method
        self._keeps_ewma = var_method == "ewma"
        self.min_var_observations = min_var_observations
        self.covariance_refresh_bars = covariance_refresh_bars
        self.signal_weight = signal_weight
        self.information_coefficient = information_coefficient
        self.atr_period = atr_period
        self._instruments = dict(instruments)
        self._positions = positions
        self._trading_state = StateMachine(TRADING_STATE_TRANSITIONS, TradingState.ACTIVE, "trading state")
        self._state_owner = ""
        # What approved orders have not sent yet, by approval id, and the
        # signed unfilled remainder of every working order, by client id.
        self._intents: dict[int, _Intent] = {}
        self._working: dict[str, tuple[str, Decimal]] = {}
        self._approval_of: dict[str, int] = {}
        self._last_approval: dict[str, tuple[OrderSide, Decimal, bool]] = {}
        self._rejections: dict[str, _Rejection] = {}
        self._written_off: dict[str, Decimal] = {}
        # Built standalone, the controller learns its universe from the first bars it warms up on.
        self._learns_universe = symbols is None and standalone
        self._var_window = var_window
        self._ewma_decay = ewma_decay
        self._set_universe(tuple(symbols) if symbols is not None else tuple(self._instruments))
        self._marks: dict[str, float] = {}
        self._atr: dict[str, float] = {}
        # The ATRs of the last completed bar time, as those overwritten since (the others are still those).
        self._overwritten_atr: dict[str, float] = {}
        self._previous_close: dict[str, float] = {}
        self._views: dict[str, dict[str, float]] = {}
        self._leaders: dict[str, str] = {}
        self._grids: dict[str, StepGrid] = {}
        self._regimes: dict[str, MarketRegime] = {}
        self._bars_per_day = 1440.0
        self._approvals: deque[int] = deque()
        self._bar_ts: int | None = None
        self._watched_inputs: _WatchInputs | None = None
        self._normal_factors: dict[float, tuple[float, float]] = {}
        self._peak_equity = float(positions.initial_capital)
        self.drawdown = 0.0
        self.max_drawdown = 0.0
        self._published_equity: float | None = None
        self.last_var: VaREstimate | None = None
        self.approved = 0
        self.denied = 0
        self.breaches = 0
        # Exposure a target asked for and the cost model did not pay for (the no-trade band, the smallest order).
        self.views_not_worth_costs = 0
        self.approval_seconds = 0.0
        # Positions strategies hold by themselves (target quantities, ladders), set aside from the weights.
        self.ladders = LadderRisk(self)
        self._own_targets: dict[str, dict[str, float]] = {}
        self._held_targets: dict[str, float] = {}

    # --- read-only views ----------------------------------------------------------------

    @property
    def trading_state(self) -> TradingState:
        """Return ACTIVE, REDUCING or HALTED."""
        return self._trading_state.state

    @property
    def max_order_notional(self) -> Decimal:
        """Return the per-order notional limit (setting it is ``update_limits``)."""
        return Decimal(repr(self.limits.max_order_notional))

    @max_order_notional.setter
    def max_order_notional(self, value: Decimal | float) -> None:
        self.update_limits({"max_order_notional": value})

    @property
    def max_position_notional(self) -> Decimal:
        """Return the per-position notional limit (setting it is ``update_limits``)."""
        return Decimal(repr(self.limits.max_position_notional))

    @max_position_notional.setter
    def max_position_notional(self, value: Decimal | float) -> None:
        self.update_limits({"max_position_notional": value})

    @property
    def max_leverage(self) -> Decimal:
        """Return the gross leverage limit (setting it is ``update_limits``)."""
        return Decimal(repr(self.limits.max_leverage))

    @max_leverage.setter
    def max_leverage(self, value: Decimal | float) -> None:
        self.update_limits({"max_leverage": value})

    def pending(self, symbol: str) -> Decimal:
        """Return the signed quantity approved for ``symbol`` and not yet filled."""
        working = sum((q for s, q in self._working.values() if s == symbol), ZERO)
        unsent = sum((i.unsent * i.sign for i in self._intents.values() if i.symbol == symbol), ZERO)
        return unsent + working

    def committed(self, symbol: str, side: OrderSide) -> Decimal:
        """Return the quantity of ``symbol`` on its way on ``side``: working orders' remainders and unsent approvals."""
        sign = side.sign
        working = sum((abs(q) for s, q in self._working.values() if s == symbol and (q > 0) == (sign > 0)), ZERO)
        unsent = sum((i.unsent for i in self._intents.values() if i.symbol == symbol and i.sign == sign), ZERO)
        return working + unsent

    # --- lifecycle ------------------------------------------------------------------------

    def on_start(self) -> None:
        """Subscribe to allocations, bars, views, regimes and order events; publish the limits."""
        self.bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.monitor")
        self.bus.subscribe(SignalGenerated, self.on_signal, name=f"{self.name}.views")
        self.bus.subscribe(RegimeChanged, self.on_regime, name=f"{self.name}.regimes")
        self.bus.subscribe(AllocationProposed, self.on_allocation, name=self.name)
        self.bus.subscribe(OrderSubmitted, self.on_submitted, name=f"{self.name}.pending")
        self.bus.subscribe(OrderFilled, self.on_filled, name=f"{self.name}.pending")
        self.bus.subscribe(ExecutionCompleted, self.on_execution, name=f"{self.name}.pending")
        for closed in (OrderCanceled, OrderExpired, OrderRejected):
            self.bus.subscribe(closed, self.on_closed, name=f"{self.name}.pending")
        self.bus.register(SetTradingState, self.on_set_trading_state, name=self.name)
        self.bus.subscribe(TargetQuantityProposed, self.on_target_quantity, name=f"{self.name}.targets")
        self.bus.subscribe(LadderProposed, self.on_ladder, name=f"{self.name}.ladders")
        self.bus.subscribe(LevelOrderProposed, self.ladders.on_proposal, name=f"{self.name}.ladders")
        self.bus.subscribe(OrderSubmitted, self.ladders.on_submitted, name=f"{self.name}.ladders")
        self.bus.subscribe(OrderFilled, self.ladders.on_filled, name=f"{self.name}.ladders")
        for closed in (OrderCanceled, OrderExpired, OrderRejected):
            self.bus.subscribe(closed, self.ladders.on_closed, name=f"{self.name}.ladders")
        self._publish_limits("start", self.clock.timestamp_ns())

    # --- pending orders ----------------------------------------------------------------------

    def on_submitted(self, submitted: OrderSubmitted) -> None:
        """Move an approved quantity from unsent to a working order.

        The approval stays known until its parent ends, so what a child leaves
        unfilled counts as unsent again (the parent may send it again), and a
        child sent for that takes nothing more from the approval.
        """
        signed = submitted.quantity * submitted.side.sign
        self._working[submitted.client_order_id] = (submitted.symbol, signed)
        intent = self._intents.get(submitted.approval_id) if submitted.approval_id is not None else None
        if intent is not None:
            self._approval_of[submitted.client_order_id] = submitted.approval_id  # type: ignore[assignment]
            intent.live += submitted.quantity

    def on_execution(self, completed: ExecutionCompleted) -> None:
        """A parent order finished: what it did not send of its approval is no longer on its way."""
        if completed.approval_id is not None:
            self._intents.pop(completed.approval_id, None)

    def on_filled(self, fill: OrderFilled) -> None:
        """Reduce the working order's remainder by the fill."""
        working = self._working.get(fill.client_order_id)
        if working is None:
            return
        symbol, remaining = working
        remaining -= fill.last_quantity * fill.side.sign
        intent = self._intents.get(self._approval_of.get(fill.client_order_id, -1))
        if intent is not None:
            intent.live -= fill.last_quantity
            intent.filled += fill.last_quantity
        if remaining == 0:
            del self._working[fill.client_order_id]
            self._approval_of.pop(fill.client_order_id, None)
        else:
            self._working[fill.client_order_id] = (symbol, remaining)

    def on_closed(self, event: OrderCanceled | OrderExpired | OrderRejected) -> None:
        """Release what a canceled, expired or rejected order will no longer fill; remember a venue rejection.

        While the order's parent works, what the order left unfilled is
        unsent again: the parent may send it again.
        """
        working = self._working.pop(event.client_order_id, None)
        intent = self._intents.get(self._approval_of.pop(event.client_order_id, -1))
        if intent is not None and working is not None:
            intent.live -= abs(working[1])
        if isinstance(event, OrderRejected) and working is not None and event.code != _POST_ONLY_REJECTED:
            self._remember_rejection(event, *working)

    def _remember_rejection(self, rejected: OrderRejected, symbol: str, signed: Decimal) -> None:
        """Keep the rejected order's terms: the same order is not approved again against the same position."""
        side = OrderSide.BUY if signed > 0 else OrderSide.SELL
        terms = self._last_approval.get(symbol)
        if terms is None or terms[0] is not side:
            terms = (side, abs(signed), False)
        self._rejections[symbol] = _Rejection(
            *terms, code=rejected.code, reason=rejected.reason, booked=self._positions.quantity(symbol)
        )

    # --- market data, views, regimes ------------------------------------------------------------

    def _set_universe(self, universe: tuple[str, ...]) -> None:
        self._window = ReturnWindow(universe, self._var_window)
        self._column = self._window.index
        self._ewma = EwmaCovariance(len(universe), self._ewma_decay)
        self._covariance = np.zeros((len(universe), len(universe)))
        self._covariance_rows = -1
        self._means = np.zeros(len(universe))
        self._volatility = np.zeros(len(universe))
        # Python-list copies for the per-order arithmetic (numpy scalar indexing costs microseconds).
        self._mean_list = [0.0] * len(universe)
        self._volatility_list = [0.0] * len(universe)
        self._covariance_list: list[list[float]] = [[0.0] * len(universe) for _ in universe]

    def warm_up(self, bars: Iterable[BarClosed]) -> int:
        """Take recorded bars from before the run into ATR and the return window; return how many.

        Nothing is watched or published: the VaR, covariance and ATR estimates
        start the run ready instead of after ``min_var_observations`` bars. A
        controller built without instruments or symbols takes the symbols of
        these bars as the universe its VaR covers.
        """
        if self._learns_universe:
            bars = list(bars)
            self._set_universe(tuple(sorted({bar.symbol for bar in bars})))
            self._learns_universe = False
        count = 0
        for bar in bars:
            if self._bar_ts is not None and bar.ts_event != self._bar_ts:
                self._overwritten_atr.clear()
            self._bar_ts = bar.ts_event
            self._observe(bar, bar.ts_event)
            count += 1
        self._bar_ts = None
        self._overwritten_atr.clear()
        return count

    def on_bar(self, bar: BarClosed) -> None:
        """Update ATR and the return window; once per bar time, watch equity, drawdown, VaR and leverage."""
        ts = bar.ts_event
        watched = self._bar_ts
        if watched is not None and ts != watched:
            self._watch(watched)
            self._overwritten_atr.clear()
        self._bar_ts = ts
        self._observe(bar, ts)

    def _observe(self, bar: BarClosed, ts: int) -> None:
        self._bars_per_day = _BARS_PER_DAY.get(bar.interval, self._bars_per_day)
        close, high, low = bar.close, bar.high, bar.low
        if not (finite(high) and finite(low) and finite(close)) or close <= 0:
            return
        symbol = bar.symbol
        self._marks[symbol] = close
        # The ATR update, inlined (once per bar): the true range's exponential average over atr_period bars.
        previous = self._previous_close.get(symbol)
        true_range = high - low if previous is None else max(high, previous) - min(low, previous)
        atr = self._atr.get(symbol)
        if atr is not None and symbol not in self._overwritten_atr:
            self._overwritten_atr[symbol] = atr
        self._atr[symbol] = true_range if atr is None else atr + (true_range - atr) / self.atr_period
        self._previous_close[symbol] = close
        # The EWMA covariance is kept bar by bar only for the monitor that uses it (see _ewma_covariance).
        if self._keeps_ewma:
            row = self._window.add_close(symbol, ts, close)
            if row is not None:
                self._ewma.update(row)
        else:
            self._window.record_close(symbol, ts, close)

    def on_signal(self, signal: SignalGenerated) -> None:
        """Keep the strategy's view on the symbol (signed strength x confidence)."""
        view = _SIGN[signal.action] * signal.strength * signal.confidence
        if math.isfinite(view):
            views = self._views.setdefault(signal.symbol, {})
            views[signal.strategy] = view
            self._leaders[signal.symbol] = max(sorted(views), key=lambda strategy: abs(views[strategy]))

    def on_regime(self, change: RegimeChanged) -> None:
        """Keep the symbol's regime for the Kelly multiplier."""
        self._regimes[change.symbol] = change.regime

    # --- portfolio monitor ----------------------------------------------------------------------

    def _watch(self, ts: int) -> None:
        self._refresh_estimates()  # first, on its own schedule: a skipped watch must not move a refresh
        watched = self._watched_inputs
        # The book's revision first: it moves on every bar of a held position, and then nothing else is compared.
        if (
            watched is not None
            and watched.revision == self._positions.revision
            and watched.matches(self._watch_inputs())
        ):
            return  # the watch of the same inputs changes nothing (see _watch_inputs)
        self._watch_anew(ts)
        self._watched_inputs = self._watch_inputs()

    def _watch_inputs(self) -> _WatchInputs:
        """Return everything the watch reads; the watch is idempotent, so it may skip a bar that changed none of it.

        The book's revision covers the equity and every held exposure (a flat
        symbol's mark moves neither), the window's length and its cached
        covariance (every row, for the other VaR methods) the VaR inputs, and
        the rest the limits, the drawdown, the trading state and what the watch
        itself last set. Once the window is full, most bars of a flat book
        change nothing here.
        """
        window = self._window
        return _WatchInputs(
            self._positions.revision,
            len(window),
            # The parametric VaR reads the window through the cached covariance only.
            self._covariance_rows if self.var_method == "parametric" else window.rows_added,
            self.limits,
            self.var_method,
            self.min_var_observations,
            self._bars_per_day,
            self.drawdown,
            self._peak_equity,
            self._trading_state.state,
            self._state_owner,
            self._published_equity,
            self.last_var,
        )

    def _watch_anew(self, ts: int) -> None:
        """Watch equity, drawdown, VaR and leverage at the current marks; enforce and publish what they call for."""
        equity = float(self._positions.equity())
        self._update_drawdown(equity)
        state = self.portfolio_state(equity)
        within = self._within_limits(state)
        # _enforcement_due, inlined: with every limit kept, only a REDUCING state may move.
        if (self._trading_state.state is TradingState.REDUCING or not within) and self._enforcement_due(within):
            self._enforce(self._state_violations(state), ts)
        published = self._published_equity
        if published is None or abs(equity / published - 1.0) > _CAP_REPUBLISH:
            self._publish_limits("equity moved", ts)

    def update_drawdown(self, current_equity: object) -> float:
        """Track the equity peak; return the drawdown from it as a fraction (0 at a new peak).

        This is the system's one drawdown: the status, the risk view and the
        run reports read :attr:`drawdown` and :attr:`max_drawdown` (the deepest so far).

        Raises
        ------
        ValueError
            If ``current_equity`` is not a finite number (an infinite one would become the peak
            for good; ``True`` would count as an equity of 1, a string or None is no equity).
        """
        # Typed object, not float: compiled, a float parameter would take True as 1.0 before this check.
        if current_equity.__class__ is bool or not _is_finite_number(current_equity):
            raise ValueError(f"equity must be a finite number, got {current_equity!r}: the drawdown is left as it was")
        return self._update_drawdown(float(cast(SupportsFloat, current_equity)))

    def _update_drawdown(self, current_equity: float) -> float:
        """:meth:`update_drawdown` of an equity known to be a finite float (the watch's own)."""
        peak = self._peak_equity
        if current_equity > peak:
            peak = self._peak_equity = current_equity
        drawdown = self.drawdown = 1.0 - current_equity / peak if peak > 0 else 0.0
        if drawdown > self.max_drawdown:
            self.max_drawdown = drawdown
        return drawdown

    def _refresh_estimates(self) -> None:
        rows = self._window.rows_added
        if rows - self._covariance_rows < self.covariance_refresh_bars or len(self._window) < 2:
            return
        returns = self._window.returns()
        self._means = returns.mean(axis=0)
        self._covariance = sample_covariance(returns)
        self._volatility = np.sqrt(np.maximum(np.diag(self._covariance), 0.0))
        self._mean_list = self._means.tolist()
        self._volatility_list = self._volatility.tolist()
        self._covariance_list = self._covariance.tolist()
        self._covariance_rows = rows

    def portfolio_state(self, equity: float | None = None) -> PortfolioState:
        """Return equity and signed exposure per symbol at the last marks."""
        book = self._positions
        marks = book.marks
        exposures = {s: float(p.quantity * marks[s]) for s, p in book.positions.items() if p.quantity and s in marks}
        return PortfolioState(float(book.equity()) if equity is None else equity, exposures)

    def estimate_var(
        self, state: PortfolioState | Mapping[str, Any] | None = None, method: str | None = None
    ) -> VaREstimate:
        """Return the daily VaR and CVaR of a portfolio state (the current one when None).

        Raises
        ------
        ValueError
            For an unknown method, or a state holding a symbol the controller has
            no returns for (its risk would count as none).
        """
        current = self.portfolio_state() if state is None else PortfolioState.coerce(state)
        self._require_known_symbols(current)
        return self._estimate_var(current, method)

    def _estimate_var(self, current: PortfolioState, method: str | None = None) -> VaREstimate:
        """:meth:`estimate_var` of a coerced state whose symbols are the controller's."""
        chosen = method or self.var_method
        if chosen not in VAR_METHODS:
            raise ValueError(f"unknown VaR method {chosen!r}; expected one of {', '.join(VAR_METHODS)}")
        observations = len(self._window)
        scale = math.sqrt(self._bars_per_day)
        confidence = self.limits.var_confidence
        if chosen == "parametric":
            self._refresh_estimates()
            var, cvar = self._parametric_var(current.exposures, confidence)
            return VaREstimate(chosen, var * scale, cvar * scale, observations)
        exposures = np.zeros(len(self._column))
        for symbol, value in current.exposures.items():
            column = self._column.get(symbol)
            if column is not None:
                exposures[column] = value
        if chosen == "historical":
            var, cvar = historical_var(self._window.returns() @ exposures, confidence) if observations else (0.0, 0.0)
        else:
            var, cvar = parametric_var(exposures, self._ewma_covariance(), confidence)
        return VaREstimate(chosen, var * scale, cvar * scale, observations)

    def _parametric_var(self, exposures: Mapping[str, float], confidence: float) -> tuple[float, float]:
        """:func:`parametric_var` on the cached covariance, without numpy when at most one symbol is held.

        With one non-zero exposure ``x`` in column ``k``, ``x @ C @ x`` is
        ``x * C[k][k] * x`` to the bit (every other term is an exact zero), so
        the watch of a one-symbol book costs no array.
        """
        columns = self._column
        variance = 0.0
        if len(exposures) == 1:
            ((symbol, value),) = exposures.items()
            column = columns.get(symbol)
            if column is not None:
                variance = value * self._covariance_list[column][column] * value
        elif exposures:
            held = [(columns[symbol], value) for symbol, value in exposures.items() if symbol in columns]
            if len(held) > 1:
                vector = np.zeros(len(self._column))
                for column, value in held:
                    vector[column] = value
                return parametric_var(vector, self._covariance, confidence)
            if held:
                column, value = held[0]
                variance = value * self._covariance_list[column][column] * value
        # normal_var's arithmetic, with its two constants looked up once per confidence.
        factors = self._normal_factors.get(confidence)
        if factors is None:
            factors = self._normal_factors[confidence] = (normal_quantile(confidence), normal_tail_density(confidence))
        sigma = math.sqrt(max(0.0, variance))
        return factors[0] * sigma, sigma * factors[1] / (1.0 - confidence)

    def _ewma_covariance(self) -> np.ndarray:
        """The EWMA covariance: kept bar by bar for an ``ewma`` monitor, else folded over the return window.

        Rows older than the window weigh less than ``decay ** var_window`` (1e-19 at the defaults).
        """
        if self._keeps_ewma:
            return self._ewma.covariance
        ewma = EwmaCovariance(len(self._column), self._ewma_decay)
        for row in self._window.returns():
            ewma.update(row)
        return ewma.covariance

    def check_var_limit(self, portfolio_state: PortfolioState | Mapping[str, Any] | None = None) -> list[RiskViolation]:
        """Return the VaR limit breach of a portfolio state (empty when within it), as in the user's UC-3.2.

        Parameters
        ----------
        portfolio_state
            ``{'equity': ..., 'positions': {symbol: signed notional}}`` or a
            :class:`PortfolioState`; the controller's own book when None.

        Returns
        -------
        list of RiskViolation
            The ``var_daily_pct`` breach, or nothing when VaR is within the limit.

        Raises
        ------
        ValueError
            When the VaR cannot be estimated, rather than report no breach: the
            controller holds fewer than ``min_var_observations`` bars of returns
            (give it recorded bars with :meth:`warm_up`), or the state holds a
            symbol the controller has no returns for.
        """
        state = self.portfolio_state() if portfolio_state is None else PortfolioState.coerce(portfolio_state)
        self._require_var_inputs(state)
        return self._var_violations(state)

    def _require_var_inputs(self, state: PortfolioState) -> None:
        """Raise saying what is missing when the VaR of ``state`` cannot be estimated."""
        held = len(self._window)
        if held < self.min_var_observations:
            raise ValueError(
                f"the VaR needs {self.min_var_observations} bars of returns and the controller has {held}: "
                "give it recorded bars first with warm_up(bars), or check once it has run that long"
            )
        self._require_known_symbols(state)

    def _require_known_symbols(self, state: PortfolioState) -> None:
        """Raise naming the symbols ``state`` holds that the controller has no returns for."""
        unknown = sorted(symbol for symbol, value in state.exposures.items() if value and symbol not in self._column)
        if unknown:
            raise ValueError(
                f"the controller has no returns for {', '.join(unknown)} (it follows {', '.join(self._column)}): "
                "warm it up with bars of those symbols, or leave them out of the portfolio state"
            )

    def _var_violations(self, state: PortfolioState) -> list[RiskViolation]:
        """:meth:`check_var_limit` for the monitor: nothing to report while the VaR cannot be estimated yet."""
        if len(self._window) < self.min_var_observations or state.equity <= 0:
            return []
        estimate = self._estimate_var(state)
        self.last_var = estimate
        share = estimate.var / state.equity
        limit = self.limits.var_daily_pct
        if share <= limit:
            return []
        message = (
            f"daily {self.limits.var_confidence:.0%} {estimate.method} VaR {share:.2%} of equity "
            f"(CVaR {estimate.cvar / state.equity:.2%}) above the {limit:.2%} limit"
        )
        return [RiskViolation("var_daily_pct", share, limit, message)]

    def check_leverage_limit(
        self, portfolio_state: PortfolioState | Mapping[str, Any] | None = None
    ) -> list[RiskViolation]:
        """Return the gross and net leverage breaches of a portfolio state (empty when within them)."""
        state = self.portfolio_state() if portfolio_state is None else PortfolioState.coerce(portfolio_state)
        if state.equity <= 0:
            return [RiskViolation("max_leverage", math.inf, self.limits.max_leverage, "equity is not positive")]
        found = []
        gross, net = state.gross / state.equity, abs(state.net) / state.equity
        if gross > self.limits.max_leverage:
            message = f"gross leverage {gross:.2f}x above the {self.limits.max_leverage:.2f}x limit"
            found.append(RiskViolation("max_leverage", gross, self.limits.max_leverage, message))
        if net > self.limits.max_net_leverage:
            message = f"net leverage {net:.2f}x above the {self.limits.max_net_leverage:.2f}x limit"
            found.append(RiskViolation("max_net_leverage", net, self.limits.max_net_leverage, message))
        return found

    def check_drawdown_limit(self) -> list[RiskViolation]:
        """Return the drawdown breaches (halt first) of the tracked equity."""
        limits = self.limits
        for name, threshold in (
            ("halt_drawdown_pct", limits.halt_drawdown_pct),
            ("max_drawdown_pct", limits.max_drawdown_pct),
        ):
            if self.drawdown >= threshold:
                message = f"drawdown {self.drawdown:.2%} from the equity peak reached the {threshold:.2%} limit"
                return [RiskViolation(name, self.drawdown, threshold, message)]
        return []

    def _within_limits(self, state: PortfolioState) -> bool:
        """Whether ``state`` breaks no limit: :meth:`_state_violations` is empty, without building a violation.

        The bar-by-bar watch asks this first; only a breach builds the violations and their messages.
        """
        limits = self.limits
        equity = state.equity
        drawdown = self.drawdown
        within = drawdown < limits.halt_drawdown_pct and drawdown < limits.max_drawdown_pct
        observations = len(self._window)
        if equity > 0 and observations >= self.min_var_observations:
            # As check_var_limit: the estimate is kept whether or not another limit is broken.
            estimate = self._watched_var(state, observations)
            self.last_var = estimate
            within = within and estimate.var / equity <= limits.var_daily_pct
        if not within or equity <= 0:
            return False
        exposures = state.exposures
        if len(exposures) == 1:
            # One exposure: the sums below are that exposure itself, to the bit.
            (single,) = exposures.values()
            gross = abs(single) / equity
            return gross <= limits.max_leverage and gross <= limits.max_net_leverage
        values = exposures.values()
        gross = sum(abs(v) for v in values) / equity
        return gross <= limits.max_leverage and abs(sum(values)) / equity <= limits.max_net_leverage

    def _watched_var(self, state: PortfolioState, observations: int) -> VaREstimate:
        """:meth:`estimate_var` of the watch (``observations`` rows in the window): its parametric branch, unchecked.

        The watch refreshed the cached estimates just before (its only caller,
        :meth:`_within_limits`, runs after that refresh), so the result is the
        one :meth:`estimate_var` returns.
        """
        if self.var_method != "parametric":
            return self._estimate_var(state)
        var, cvar = self._parametric_var(state.exposures, self.limits.var_confidence)
        scale = math.sqrt(self._bars_per_day)
        return VaREstimate("parametric", var * scale, cvar * scale, observations)

    def _enforcement_due(self, within_limits: bool) -> bool:
        """Whether :meth:`_enforce` could move the trading state: an escalation, or a REDUCING that may clear."""
        state = self.trading_state
        if within_limits:
            return state is TradingState.REDUCING
        if state is TradingState.ACTIVE:
            return True
        return state is TradingState.REDUCING and self.drawdown >= self.limits.halt_drawdown_pct

    def _state_violations(self, state: PortfolioState) -> list[RiskViolation]:
        return [*self.check_drawdown_limit(), *self._var_violations(state), *self.check_leverage_limit(state)]

    def _enforce(self, violations: list[RiskViolation], ts: int) -> None:
        """Move the trading state for breaches; clear an automatic REDUCING once nothing is breached."""
        for violation in violations:
            target = TradingState.HALTED if violation.limit == "halt_drawdown_pct" else TradingState.REDUCING
            if self._escalates(target):
                self.breaches += 1
                self.bus.publish(
                    RiskBreached(
                        limit=violation.limit,
                        value=violation.value,
                        threshold=violation.threshold,
                        state=target,
                        reason=violation.message,
                        ts_event=ts,
                        ts_init=self.clock.timestamp_ns(),
                    )
                )
                self._set_trading_state(target, violation.message, ts, owner=f"{_AUTOMATIC}:{violation.limit}")
        if violations or self.trading_state is not TradingState.REDUCING or not self._state_owner:
            return
        clears = self._state_owner in (f"{_AUTOMATIC}:var_daily_pct", f"{_AUTOMATIC}:max_leverage")
        if clears and self._recovered():
            self._set_trading_state(TradingState.ACTIVE, "risk back within limits", ts, owner="")

    def _escalates(self, target: TradingState) -> bool:
        state = self.trading_state
        if state is TradingState.HALTED:
            return False
        return not (state is TradingState.REDUCING and target is TradingState.REDUCING)

    def _recovered(self) -> bool:
        if self._state_owner.endswith("var_daily_pct") and self.last_var is not None:
            equity = float(self._positions.equity())
            recovered = self.limits.var_daily_pct * self.limits.var_recovery_fraction
            return equity > 0 and self.last_var.var / equity <= recovered
        return True

    # --- limits ----------------------------------------------------------------------------------

    @property
    def peak_equity(self) -> float:
        """Return the highest equity seen (the drawdown's reference)."""
        return self._peak_equity

    def restore_drawdown(self, peak: float, max_drawdown: float = 0.0) -> None:
        """Put back the drawdown's reference and its deepest value after a restart (neither goes down)."""
        self._peak_equity = max(self._peak_equity, peak)
        self.max_drawdown = max(self.max_drawdown, max_drawdown)

    def rebase_capital(self, capital: float) -> None:
        """Measure the drawdown from ``capital``: a live account's opening balance, set before anything trades."""
        self._peak_equity = capital

    def update_limits(self, changes: Mapping[str, Any]) -> RiskLimits:
        """Replace limits by name at run time, as in the user's UC-1.2; publish and apply them now.

        Raises
        ------
        ValueError
            For an unknown limit name or a value that is not a finite number in
            range, such as the string ``"3"``, a boolean or None, naming the limit
            and the value (no limit changes then, nor is anything published).
        """
        self.limits = self.limits.updated(changes)
        self._sizer_refresh()
        now = self.clock.timestamp_ns()
        self._publish_limits(f"updated {', '.join(sorted(changes))}", now)
        if self.state in (ComponentState.RUNNING, ComponentState.DEGRADED):
            self._enforce(self._state_violations(self.portfolio_state()), now)
        return self.limits

    def _sizer_refresh(self) -> None:
        if self.sizer.var_confidence != self.limits.var_confidence:
            self.sizer = PositionSizer(
                kelly_fraction=self.sizer.kelly_fraction,
                atr_risk_pct=self.sizer.atr_risk_pct,
                atr_multiple=self.sizer.atr_multiple,
                var_budget_pct=self.sizer.var_budget_pct,
                var_confidence=self.limits.var_confidence,
                leverage=self.sizer.leverage,
                liquidation_sigmas=self.sizer.liquidation_sigmas,
                regime_multipliers=self.sizer.regime_multipliers,
            )

    def position_weight_caps(self, equity: float) -> dict[str, float]:
        """Return each symbol's largest absolute weight: the sizer's and the per-position limit over equity."""
        if not equity > 0:
            return {}
        caps = {}
        for symbol in self._column:
            price = self._marks.get(symbol)
            notional = self.limits.max_position_notional
            if price is not None:
                expected = max(self._edge(symbol, 1.0), self._edge(symbol, -1.0))
                notional = min(notional, self._size_limits(symbol, equity, expected, price).notional)
            caps[symbol] = notional / equity
        return caps

    def _publish_limits(self, reason: str, ts: int) -> None:
        equity = float(self._positions.equity())
        self._published_equity = equity
        self.bus.publish(
            RiskLimitsUpdated(
                limits=self.limits.as_dict(),
                position_weight_caps=self.position_weight_caps(equity),
                equity=equity,
                reason=reason,
                ts_event=ts,
                ts_init=self.clock.timestamp_ns(),
            )
        )

    # --- Kelly and sizing ------------------------------------------------------------------------

    def calculate_optimal_position_fraction(
        self,
        returns: Sequence[float] | np.ndarray,
        regime: MarketRegime | str | None = None,
        fractional: float | None = None,
    ) -> float:
        """Return the fractional Kelly leverage of a return series, shrunk by the regime's multiplier.

        ``mean / variance`` of the returns times ``fractional`` (the sizer's
        Kelly fraction when None) times the regime multiplier; 0 without an
        edge or with fewer than 2 returns.
        """
        values = np.asarray(returns, dtype=np.float64)
        if values.size < 2 or not np.isfinite(values).all():
            return 0.0
        label = regime if isinstance(regime, MarketRegime) else _regime(regime)
        multiplier = self.sizer.regime_multipliers.get(label, 1.0)
        fraction = self.sizer.kelly_fraction if fractional is None else fractional
        return kelly_fraction(float(values.mean()), float(values.var(ddof=1)), fraction=fraction, multiplier=multiplier)

    def _edge(self, symbol: str, direction: float) -> float:
        """Return the per-bar expected return of ``symbol`` in ``direction``.

        History blended with the views as the optimizer does
        (:func:`keel.portfolio.estimators.blend_expected_returns`), with the
        strategies' views averaged.
        """
        column = self._column.get(symbol)
        if column is None:
            return 0.0
        mean = self._mean_list[column]
        views = self._views.get(symbol)
        if views:
            score = max(-1.0, min(1.0, sum(views.values()) / len(views)))
            implied = self.information_coefficient * self._volatility_list[column] * score
            mean = (1.0 - self.signal_weight) * mean + self.signal_weight * implied
        return direction * mean

    def _size_limits(self, symbol: str, equity: float, expected: float, price: float) -> SizeLimits:
        column = self._column.get(symbol)
        volatility = self._volatility_list[column] if column is not None else 0.0
        return self.sizer.limits(
            equity=equity,
            expected_return=expected,
            volatility=volatility,
            atr=self._overwritten_atr.get(symbol, self._atr.get(symbol, 0.0)),
            price=price,
            bars_per_day=self._bars_per_day,
            regime=self._regimes.get(symbol, MarketRegime.UNKNOWN),
        )

    # --- trading state -----------------------------------------------------------------------------

    def on_set_trading_state(self, command: SetTradingState) -> None:
        """Move the trading state on an operator's command; a move to the current state changes nothing."""
        self._set_trading_state(command.state, command.reason, command.ts_event, owner="")

    def _set_trading_state(self, state: TradingState, reason: str, ts: int, *, owner: str) -> None:
        if state is self.trading_state:
            self._state_owner = owner
            return
        previous = self._trading_state.move(state)
        self._state_owner = owner
        self.ladders.on_trading_state(state)
        self.bus.publish(
            TradingStateChanged(
                previous=previous, state=state, reason=reason, ts_event=ts, ts_init=self.clock.timestamp_ns()
            )
        )

    # --- pre-trade approval ---------------------------------------------------------------------

    def on_allocation(self, allocation: AllocationProposed) -> None:
        """Size an order towards every symbol's target weight, in the allocation's order."""
        started = time.perf_counter()
        context = _Allocation.of(self)
        for symbol, weight in allocation.weights.items():
            self._rebalance(symbol, weight, context, allocation.ts_event)
        self.approval_seconds += time.perf_counter() - started

    def on_target_quantity(self, proposal: TargetQuantityProposed) -> None:
        """Order the change of a strategy's own position at once (the weights' part stays where it is).

        The strategies' own positions in a symbol add up to at most the
        per-position notional at the proposal's price; what is cut is
        reported as an ``OrderDenied`` (``POSITION_LIMIT``), as is an order
        the other checks refuse. What the strategies hold by themselves is
        what was approved of their changes (on the step grid), so the next
        change makes up the rounding of the last.
        """
        symbol = proposal.symbol
        if not math.isfinite(proposal.quantity):
            return
        self._own_targets.setdefault(symbol, {})[proposal.strategy] = proposal.quantity
        wanted = sum(self._own_targets[symbol].values())
        price = proposal.reference_price
        limit = self.limits.max_position_notional / price if price > 0 else math.inf
        allowed = max(-limit, min(limit, wanted))
        if allowed != wanted:
            side = OrderSide.BUY if wanted > 0 else OrderSide.SELL
            cut = Decimal(repr(abs(wanted - allowed)))
            detail = f"strategies' own position {wanted:g} cut to {allowed:g}: the per-position notional limit"
            self._deny(symbol, side, cut, DenialReason.POSITION_LIMIT, detail, proposal.ts_event, proposal.strategy)
        change = allowed - self._held_targets.get(symbol, 0.0)
        if change != 0.0:
            approved = self.approved
            self._rebalance(
                symbol, 0.0, _Allocation.of(self), proposal.ts_event, shift=change, strategy=proposal.strategy
            )
            if self.approved > approved:
                # What the strategy holds by itself is what was approved of it: a refused buy is not sold later.
                side, quantity, _ = self._last_approval[symbol]
                self._held_targets[symbol] = self._held_targets.get(symbol, 0.0) + side.sign * float(quantity)

    def on_ladder(self, ladder: LadderProposed) -> None:
        """Start or end a strategy's ladder; what an ended ladder filled is released (closed unless a view holds it)."""
        before = self.ladders.reserved(ladder.symbol)
        self.ladders.on_ladder(ladder)
        change = self.ladders.reserved(ladder.symbol) - before
        if change != 0.0:
            context = _Allocation.of(self)
            self._rebalance(ladder.symbol, 0.0, context, ladder.ts_event, shift=change, strategy=ladder.strategy)

    def _own_position(self, symbol: str) -> float:
        """Return the signed quantity strategies hold by themselves in ``symbol`` (target quantities and ladders)."""
        return self._held_targets.get(symbol, 0.0) + self.ladders.reserved(symbol)

    def _rebalance(
        self,
        symbol: str,
        weight: float,
        context: _Allocation,
        ts: int,
        shift: float | None = None,
        strategy: str | None = None,
    ) -> None:
        """Order ``symbol`` towards its weight plus the strategies' own positions, or by ``shift`` alone.

        ``strategy`` names the strategy a shift's order is booked to (None: the leading view's).
        """
        instrument = self._instruments.get(symbol)
        if instrument is None:
            self._deny(
                symbol,
                OrderSide.BUY,
                ZERO,
                DenialReason.UNKNOWN_INSTRUMENT,
                f"{symbol} has no instrument",
                ts,
                strategy,
            )
            return
        if not math.isfinite(weight):
            self._deny(
                symbol, OrderSide.BUY, ZERO, DenialReason.INVALID_TARGET, f"target weight is {weight}", ts, strategy
            )
            return
        price = context.prices.get(symbol)
        if price is None:
            self._deny(symbol, OrderSide.BUY, ZERO, DenialReason.NO_PRICE, f"no price for {symbol} yet", ts, strategy)
            return
        equity = context.equity
        if equity <= 0:
            self._deny(symbol, OrderSide.BUY, ZERO, DenialReason.NO_EQUITY, f"equity is {equity}", ts, strategy)
            return
        booked = self._booked(symbol, instrument, context, ts)
        held = context.held.get(symbol, 0.0)
        if shift is None:
            target = self._weight_target(symbol, weight, equity, price, held)
            delta = target - held
            if delta == 0 or abs(delta) < self.rebalance_threshold * abs(target):
                return
        else:
            delta = shift
        side = OrderSide.BUY if delta > 0 else OrderSide.SELL
        wanted = min(abs(delta), self.limits.max_order_notional / price)
        grid = self._grids.get(symbol)
        if grid is None:
            grid = self._grids[symbol] = StepGrid.of(instrument)
        quantity, size = grid.floor_pair(wanted)
        if wanted == abs(held):
            # A close: the exact projected quantity, which the float rounding's margin would cut by a step
            # on a position of thousands of steps, leaving dust behind.
            quantity = abs(booked + self.pending(symbol))
            size = float(quantity)
        if size <= 0:
            return
        room = self._reducible(symbol, side, booked)
        reduce_only = quantity <= room
        if not reduce_only and size * price < grid.min_notional_float and room >= instrument.min_quantity:
            detail = (
                f"notional {size * price:.2f} below the minimum {grid.min_notional}: the {booked} left of the "
                f"position is closed reduce-only instead"
            )
            self._deny(symbol, side, quantity, DenialReason.BELOW_MIN_NOTIONAL, detail, ts, strategy)
            quantity, size, reduce_only = room, float(room), True
        after = held + size if delta > 0 else held - size
        reduces = abs(after) < abs(held) and (after == 0 or (after > 0) == (held > 0))
        refusal = self._repeated_rejection(symbol, side, quantity, reduce_only, booked) or self._refusal(
            grid, symbol, size * price, reduces, reduce_only, context, held, after, price, ts
        )
        if refusal is not None:
            self._deny(symbol, side, quantity, *refusal, ts, strategy)
            return
        context.apply(self, symbol, held, after, price, 0.0 if reduce_only else self._opening(side, size, booked))
        self._approve(symbol, side, quantity, reduce_only, ts, strategy)

    def _weight_target(self, symbol: str, weight: float, equity: float, price: float, held: float) -> float:
        """Return the target position: the weight's (clipped, worth its cost) plus the strategies' own."""
        own = self._own_position(symbol)
        target = self._target_quantity(symbol, weight, equity, price)
        if self.costs is not None:
            target = self._worth_its_cost(self.costs, symbol, target, held - own if own else held, price, equity)
        return target + own if own else target

    def _worth_its_cost(
        self, costs: CostModel, symbol: str, target: float, held: float, price: float, equity: float
    ) -> float:
        """Return the target the cost model pays for (the no-trade band and the smallest order).

        Added exposure must earn its round trip over the horizon at the view's
        edge, else a flip stops at flat and an addition is not made; a change
        smaller than the smallest order is not made unless it closes. With the
        hold band, a close (or the closing half of such a flip) must pay its
        one-way cost too, else the position is kept.
        """
        smallest = costs.min_order_notional(symbol, equity, self.min_order_weight)
        same_side = held != 0 and (held > 0) == (target > 0)
        adds = target != 0 and (not same_side or abs(target) > abs(held))
        if not adds:
            if target == 0:
                return self._closed_or_kept(costs, symbol, held, price)
            return held if abs(target - held) * price < smallest else target
        added = (abs(target) - abs(held) if same_side else abs(target)) * price
        edge = self._edge(symbol, 1.0 if target > 0 else -1.0)
        if added < smallest or not costs.worth_trading(symbol, added, edge, self.holding_bars):
            self.views_not_worth_costs += 1
            return held if same_side else self._closed_or_kept(costs, symbol, held, price)
        return target

    def _closed_or_kept(self, costs: CostModel, symbol: str, held: float, price: float) -> float:
        """Return 0 (close ``held``), or ``held`` when the hold band says closing does not pay yet."""
        if held == 0 or not self.hold_band or self.trading_state is not TradingState.ACTIVE:
            return 0.0
        notional = abs(held) * price
        if notional > self.limits.max_position_notional:
            return 0.0
        edge = self._edge(symbol, 1.0 if held > 0 else -1.0)
        return 0.0 if costs.worth_closing(symbol, notional, edge, self.holding_bars) else held

    def _booked(self, symbol: str, instrument: Instrument, context: _Allocation, ts: int) -> Decimal:
        """Return the position booked in ``symbol``; dust below the lot size is written off (reported once).

        No order can close a position smaller than the instrument's minimum
        quantity, so it is left out of the projection instead of being
        ordered against for ever.
        """
        booked = context.booked.get(symbol, ZERO)
        if booked == 0 or abs(booked) >= instrument.min_quantity:
            return booked
        if self._written_off.get(symbol) != booked:
            self._written_off[symbol] = booked
            detail = f"position {booked} is below the lot size {instrument.min_quantity}: no order can close it"
            side = OrderSide.SELL if booked > 0 else OrderSide.BUY
            self._deny(symbol, side, abs(booked), DenialReason.DUST_WRITTEN_OFF, detail, ts)
        context.held[symbol] = context.held.get(symbol, 0.0) - float(booked)
        return ZERO

    def _reducible(self, symbol: str, side: OrderSide, booked: Decimal) -> Decimal:
        """Return how much a reduce-only order on ``side`` may take.

        That is the booked position it points against, less what the orders on
        the same side already on their way will take of it.
        """
        if booked == 0 or (booked > 0) == (side is OrderSide.BUY):
            return ZERO
        return max(ZERO, abs(booked) - self.committed(symbol, side))

    def _opening(self, side: OrderSide, size: float, booked: Decimal) -> float:
        """Return the part of an order that opens exposure at the venue (the venue holds margin for it)."""
        held = float(booked)
        if held == 0 or (held > 0) == (side is OrderSide.BUY):
            return size
        return max(0.0, size - abs(held))

    def _repeated_rejection(
        self, symbol: str, side: OrderSide, quantity: Decimal, reduce_only: bool, booked: Decimal
    ) -> tuple[DenialReason, str] | None:
        """Refuse the very order the venue rejected while the position it was rejected against has not moved."""
        rejection = self._rejections.get(symbol)
        if rejection is None:
            return None
        if rejection.booked != booked:
            del self._rejections[symbol]
            return None
        if (rejection.side, rejection.quantity, rejection.reduce_only) != (side, quantity, reduce_only):
            return None
        return (
            DenialReason.VENUE_REJECTED,
            f"the venue rejected this order against the same position ({rejection.code}: {rejection.reason})",
        )

    def _target_quantity(self, symbol: str, weight: float, equity: float, price: float) -> float:
        """Return the target position (base units) clipped to the per-position and sizer limits."""
        target = weight * equity / price
        notional = self.limits.max_position_notional
        if target != 0:
            column = self._column.get(symbol)
            sizer_limit = self.sizer.max_notional(
                equity,
                self._edge(symbol, 1.0 if target > 0 else -1.0),
                self._volatility_list[column] if column is not None else 0.0,
                self._overwritten_atr.get(symbol, self._atr.get(symbol, 0.0)),
                price,
                math.sqrt(self._bars_per_day),
                self.sizer.multiplier(self._regimes.get(symbol, MarketRegime.UNKNOWN)),
            )
            if sizer_limit < notional:
                notional = sizer_limit
        limit = notional / price
        return max(-limit, min(limit, target))

    def _refusal(
        self,
        grid: StepGrid,
        symbol: str,
        notional: float,
        reduces: bool,
        reduce_only: bool,
        context: _Allocation,
        held: float,
        after: float,
        price: float,
        ts: int,
    ) -> tuple[DenialReason, str] | None:
        """Return why an order may not go out, or None when it may."""
        state = self.trading_state
        if state is TradingState.HALTED:
            return DenialReason.TRADING_HALTED, "trading is halted"
        if not reduces and state is TradingState.REDUCING:
            return DenialReason.REDUCE_ONLY_STATE, "only reducing orders while REDUCING"
        if not reduce_only and notional < grid.min_notional_float:
            return (
                DenialReason.BELOW_MIN_NOTIONAL,
                f"notional {notional:.2f} below the minimum {grid.min_notional}",
            )
        if self._rate_limited(ts):
            limits = self.limits
            return (
                DenialReason.ORDER_RATE_LIMIT,
                f"{limits.max_orders_per_window} orders approved in the last {limits.rate_window_seconds:g} s",
            )
        if not reduce_only:
            margin = context.margin_refusal(self, symbol, self._opening_of(symbol, held, after, context))
            if margin is not None:
                return margin
        if reduces:
            return None
        return context.exposure_refusal(self, symbol, held, after, price)

    def check_manual_order(
        self, symbol: str, side: OrderSide, quantity: Decimal, reduce_only: bool, strategy: str = "manual"
    ) -> None:
        """Refuse an order placed by hand that the trading state or a risk limit forbids.

        Orders placed by hand (the router's ``execute_*``) are not sized as
        the strategies' are, but they meet the same rules: while HALTED only a
        ``reduce_only`` order goes out, while REDUCING only one that shrinks a
        position; an order that does not shrink one keeps within
        ``max_order_notional`` and ``max_position_notional`` and, after it, the
        margin, gross and net leverage and VaR limits; each order passed counts
        toward the orders-per-window limit, as an approval does. A refusal is
        reported as an ``OrderDenied`` under ``strategy``.

        Raises
        ------
        RiskRefusedError
            Naming the rule and the numbers; nothing is sent.
        """
        ts = self.clock.timestamp_ns()
        refusal = self._manual_refusal(symbol, side, quantity, reduce_only)
        if refusal is None and self._rate_limited(ts):
            limits = self.limits
            refusal = (
                DenialReason.ORDER_RATE_LIMIT,
                f"{limits.max_orders_per_window} orders approved in the last {limits.rate_window_seconds:g} s",
            )
        if refusal is None:
            self._approvals.append(ts)
            return
        reason, detail = refusal
        self._deny(symbol, side, quantity, reason, detail, ts, strategy)
        raise RiskRefusedError(
            f"{side.value} {quantity} {symbol} refused by the risk layer ({reason.value}): {detail}; change the "
            "order, or the limit or trading state it names, and send it again"
        )

    def _manual_refusal(
        self, symbol: str, side: OrderSide, quantity: Decimal, reduce_only: bool
    ) -> tuple[DenialReason, str] | None:
        context = _Allocation.of(self)
        held = context.held.get(symbol, 0.0)
        after = held + side.sign * float(quantity)
        reduces = abs(after) < abs(held) and (after == 0 or (after > 0) == (held > 0))
        state = self.trading_state
        if state is TradingState.HALTED and not reduce_only:
            return DenialReason.TRADING_HALTED, "trading is halted: only a reduce_only order goes out until it resumes"
        if state is TradingState.REDUCING and not (reduce_only or reduces):
            return DenialReason.REDUCE_ONLY_STATE, "only orders that shrink a position go out while REDUCING"
        if reduce_only or reduces:
            return None
        price = context.prices.get(symbol)
        if price is None:
            return DenialReason.NO_PRICE, f"no price for {symbol} yet"
        if context.equity <= 0:
            return DenialReason.NO_EQUITY, f"equity is {context.equity}"
        limits = self.limits
        notional = float(quantity) * price
        if notional > limits.max_order_notional:
            return (
                DenialReason.ORDER_NOTIONAL,
                f"order notional {notional:.2f} above the per-order limit {limits.max_order_notional:g}",
            )
        if abs(after) * price > limits.max_position_notional:
            return (
                DenialReason.POSITION_LIMIT,
                f"position notional {abs(after) * price:.2f} would exceed the limit {limits.max_position_notional:g}",
            )
        margin = context.margin_refusal(self, symbol, self._opening_of(symbol, held, after, context))
        return margin or context.exposure_refusal(self, symbol, held, after, price)

    def _opening_of(self, symbol: str, held: float, after: float, context: _Allocation) -> float:
        side = OrderSide.BUY if after > held else OrderSide.SELL
        return self._opening(side, abs(after - held), context.booked.get(symbol, ZERO))

    def _rate_limited(self, ts: int) -> bool:
        window = int(self.limits.rate_window_seconds * NANOS_PER_SECOND)
        approvals = self._approvals
        while approvals and approvals[0] <= ts - window:
            approvals.popleft()
        return len(approvals) >= self.limits.max_orders_per_window

    def _approve(
        self, symbol: str, side: OrderSide, quantity: Decimal, reduce_only: bool, ts: int, strategy: str | None = None
    ) -> None:
        self.approved += 1
        self._approvals.append(ts)
        approved = OrderApproved(
            symbol=symbol,
            side=side,
            quantity=quantity,
            order_type=OrderType.MARKET,
            price=None,
            reduce_only=reduce_only,
            strategy=self._strategy_of(symbol) if strategy is None else strategy,
            ts_event=ts,
            ts_init=self.clock.timestamp_ns(),
        )
        self._intents[approved.id] = _Intent(symbol, side.sign, quantity)
        self._last_approval[symbol] = (side, quantity, reduce_only)
        self.bus.publish(approved)

    def _strategy_of(self, symbol: str) -> str:
        """Return the strategy with the strongest view on the symbol (``portfolio`` when none has one)."""
        return self._leaders.get(symbol, "portfolio")

    def _deny(
        self,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        reason: DenialReason,
        detail: str,
        ts: int,
        strategy: str | None = None,
    ) -> None:
        self.denied += 1
        self.bus.publish(
            OrderDenied(
                symbol=symbol,
                side=side,
                quantity=quantity,
                reason_code=reason.value,
                reason=detail,
                strategy=self._strategy_of(symbol) if strategy is None else strategy,
                ts_event=ts,
                ts_init=self.clock.timestamp_ns(),
            )
        )


class _WatchInputs:
    """What one risk watch read (see ``RiskController._watch_inputs``).

    Typed fields rather than a tuple: compiled, a tuple would box each number
    on every bar. :meth:`matches` is the tuple's ``==``: identity, then equality.
    """

    def __init__(
        self,
        revision: int,
        observations: int,
        var_rows: int,
        limits: RiskLimits,
        var_method: str,
        min_var_observations: int,
        bars_per_day: float,
        drawdown: float,
        peak_equity: float,
        trading_state: TradingState,
        state_owner: str,
        published_equity: float | None,
        last_var: VaREstimate | None,
    ) -> None:
        self.revision = revision
        self.observations = observations
        self.var_rows = var_rows
        self.limits = limits
        self.var_method = var_method
        self.min_var_observations = min_var_observations
        self.bars_per_day = bars_per_day
        self.drawdown = drawdown
        self.peak_equity = peak_equity
        self.trading_state = trading_state
        self.state_owner = state_owner
        self.published_equity = published_equity
        self.last_var = last_var

    def matches(self, other: _WatchInputs) -> bool:
        """Return whether ``other`` read the same inputs."""
        return (
            self.revision == other.revision
            and self.observations == other.observations
            and self.var_rows == other.var_rows
            and (self.limits is other.limits or self.limits == other.limits)
            and self.var_method == other.var_method
            and self.min_var_observations == other.min_var_observations
            and self.bars_per_day == other.bars_per_day
            and self.drawdown == other.drawdown
            and self.peak_equity == other.peak_equity
            and self.trading_state is other.trading_state
            and self.state_owner == other.state_owner
            and self.published_equity == other.published_equity
            and (self.last_var is other.last_var or self.last_var == other.last_var)
        )


class _Allocation:
    """The projected account during one allocation, updated by each approval (floats)."""

    __slots__ = ("booked", "equity", "gross", "held", "margin", "net", "prices", "sigma", "variance", "z")

    def __init__(
        self, equity: float, prices: dict[str, float], held: dict[str, float], booked: dict[str, Decimal]
    ) -> None:
        self.equity = equity
        self.prices = prices
        self.held = held
        self.booked = booked
        self.margin = 0.0
        self.gross = sum(abs(q) * prices[s] for s, q in held.items() if s in prices)
        self.net = sum(q * prices[s] for s, q in held.items() if s in prices)
        self.sigma: list[float] = []
        self.variance = 0.0
        self.z = 0.0

    @classmethod
    def of(cls, risk: RiskController) -> _Allocation:
        book = risk._positions
        marks = book.reference_marks()
        prices = {s: float(p) for s, p in marks.items()}
        booked = {s: book.quantity(s) for s in prices}
        held = {s: float(booked[s] + risk.pending(s)) for s in prices}
        exposure = np.zeros(len(risk._column))
        for symbol, quantity in held.items():
            column = risk._column.get(symbol)
            if column is not None:
                exposure[column] = quantity * prices[symbol]
        context = cls(float(book.equity(marks)), prices, held, booked)
        context.margin = context.initial_margin(risk)
        if len(risk._window) >= risk.min_var_observations:
            risk._refresh_estimates()
            sigma = risk._covariance @ exposure
            context.sigma = sigma.tolist()
            context.variance = float(exposure @ sigma)
            context.z = normal_quantile(risk.limits.var_confidence)
        return context

    def exposure_refusal(
        self, risk: RiskController, symbol: str, held: float, after: float, price: float
    ) -> tuple[DenialReason, str] | None:
        limits = risk.limits
        change = (after - held) * price
        gross = self.gross + (abs(after) - abs(held)) * price
        if gross > limits.max_leverage * self.equity:
            return (
                DenialReason.MAX_LEVERAGE,
                f"gross exposure {gross:.2f} would exceed {limits.max_leverage:g}x equity {self.equity:.2f}",
            )
        net = self.net + change
        if abs(net) > limits.max_net_leverage * self.equity and abs(net) > abs(self.net):
            return (
                DenialReason.MAX_NET_LEVERAGE,
                f"net exposure {net:.2f} would exceed {limits.max_net_leverage:g}x equity {self.equity:.2f}",
            )
        column = risk._column.get(symbol)
        if column is None or not self.sigma:
            return None
        own = risk._covariance_list[column][column]
        variance = self.variance + 2.0 * change * self.sigma[column] + change * change * own
        daily = math.sqrt(max(0.0, variance) * risk._bars_per_day) * self.z
        if daily > limits.var_daily_pct * self.equity and variance > self.variance:
            return (
                DenialReason.VAR_LIMIT,
                f"daily VaR {daily:.2f} would exceed {limits.var_daily_pct:.2%} of equity {self.equity:.2f}",
            )
        return None

    def initial_margin(self, risk: RiskController) -> float:
        """Return the venue's initial margin, at most: every position and every order on its way, at the leverage."""
        total = 0.0
        for symbol, price in self.prices.items():
            on_the_way = risk.committed(symbol, OrderSide.BUY) + risk.committed(symbol, OrderSide.SELL)
            total += float(abs(self.booked[symbol]) + on_the_way) * price
        return total / risk.sizer.leverage

    def margin_refusal(self, risk: RiskController, symbol: str, opening: float) -> tuple[DenialReason, str] | None:
        required = opening * self.prices[symbol] / risk.sizer.leverage
        if required <= 0 or self.margin + required <= _MARGIN_HEADROOM * self.equity:
            return None
        return (
            DenialReason.INSUFFICIENT_MARGIN,
            f"initial margin {self.margin + required:.2f} at {risk.sizer.leverage:g}x would exceed "
            f"{_MARGIN_HEADROOM:.0%} of equity {self.equity:.2f}",
        )

    def apply(self, risk: RiskController, symbol: str, held: float, after: float, price: float, opening: float) -> None:
        self.margin += opening * price / risk.sizer.leverage
        change = (after - held) * price
        self.gross += (abs(after) - abs(held)) * price
        self.net += change
        self.held[symbol] = after
        column = risk._column.get(symbol)
        if column is not None and self.sigma:
            row = risk._covariance_list[column]
            self.variance += 2.0 * change * self.sigma[column] + change * change * row[column]
            self.sigma = [value + change * covariance for value, covariance in zip(self.sigma, row, strict=True)]


def _regime(label: str | None) -> MarketRegime:
    if label is None:
        return MarketRegime.UNKNOWN
    normalized = label.strip().lower()
    for regime in MarketRegime:
        if normalized in (regime.value, regime.name.lower()):
            return regime
    return MarketRegime.UNKNOWN
