"""Pre-trade risk: turn target weights into sized orders, or deny them with a reason.

The walking skeleton's :class:`RiskController` approves and sizes every
order. On each allocation it projects every symbol's position as the booked
position plus the orders already approved and not yet filled, computes the
order that moves the projection to ``weight x equity / price``, rounds it down
to the instrument's step, clips it to the per-order and per-position notional
limits, and refuses it when the account's projected gross exposure would
exceed its leverage limit or the trading state forbids it. Orders approved
earlier in the same allocation count towards the limit of the next. Every
refusal is an ``OrderDenied`` event with a :class:`DenialReason` code. It also
owns the trading state (ACTIVE / REDUCING / HALTED), moved by
``SetTradingState`` commands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum

from keel.core.accounting import ZERO
from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.fsm import TRADING_STATE_TRANSITIONS, StateMachine, TradingState
from keel.core.instruments import Instrument
from keel.core.messages import (
    AllocationProposed,
    OrderApproved,
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    SetTradingState,
    TradingStateChanged,
)
from keel.core.orders import OrderSide, OrderType
from keel.risk_management.position_manager import PositionManager


class DenialReason(Enum):
    """Why the risk layer refused an order."""

    TRADING_HALTED = "TRADING_HALTED"
    REDUCE_ONLY_STATE = "REDUCE_ONLY_STATE"
    NO_PRICE = "NO_PRICE"
    NO_EQUITY = "NO_EQUITY"
    BELOW_MIN_NOTIONAL = "BELOW_MIN_NOTIONAL"
    MAX_LEVERAGE = "MAX_LEVERAGE"
    UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
    INVALID_TARGET = "INVALID_TARGET"


class RiskController(Component):
    """Approve and size orders from target weights; hold the trading state.

    Parameters
    ----------
    instruments
        Filters of every tradable symbol.
    positions
        keel's position book (equity, exposure, marks).
    max_order_notional
        Largest notional of one order (orders are clipped to it).
    max_position_notional
        Largest absolute position value per symbol (orders are clipped to it).
    max_leverage
        Largest gross exposure / equity after an order that adds exposure.
    rebalance_threshold
        No order when the change is below this fraction of the target position.
    bus, clock
        The event bus and the clock.
    """

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        positions: PositionManager,
        *,
        max_order_notional: Decimal,
        max_position_notional: Decimal,
        max_leverage: float,
        rebalance_threshold: float = 0.0,
        bus: EventBus,
        clock: Clock,
    ) -> None:
        super().__init__("risk.controller", bus, clock)
        self._instruments = dict(instruments)
        self._positions = positions
        self.max_order_notional = max_order_notional
        self.max_position_notional = max_position_notional
        self.max_leverage = Decimal(repr(max_leverage))
        self.rebalance_threshold = Decimal(repr(rebalance_threshold))
        self._trading_state = StateMachine(TRADING_STATE_TRANSITIONS, TradingState.ACTIVE, "trading state")
        # Signed quantities approved but not yet sent, per symbol, and the
        # signed unfilled remainder of every working order, by client id.
        self._unsent: dict[str, Decimal] = {}
        self._working: dict[str, tuple[str, Decimal]] = {}
        self.approved = 0
        self.denied = 0

    @property
    def trading_state(self) -> TradingState:
        """Return ACTIVE, REDUCING or HALTED."""
        return self._trading_state.state

    def on_start(self) -> None:
        """Subscribe to allocations and order events; handle trading-state commands."""
        self.bus.subscribe(AllocationProposed, self.on_allocation, name=self.name)
        self.bus.subscribe(OrderSubmitted, self.on_submitted, name=f"{self.name}.pending")
        self.bus.subscribe(OrderFilled, self.on_filled, name=f"{self.name}.pending")
        for closed in (OrderCanceled, OrderExpired, OrderRejected):
            self.bus.subscribe(closed, self.on_closed, name=f"{self.name}.pending")
        self.bus.register(SetTradingState, self.on_set_trading_state, name=self.name)

    def pending(self, symbol: str) -> Decimal:
        """Return the signed quantity approved for ``symbol`` and not yet filled."""
        working = sum((q for s, q in self._working.values() if s == symbol), ZERO)
        return self._unsent.get(symbol, ZERO) + working

    def on_submitted(self, submitted: OrderSubmitted) -> None:
        """Move an approved quantity from unsent to a working order."""
        signed = submitted.quantity * submitted.side.sign
        self._unsent[submitted.symbol] = self._unsent.get(submitted.symbol, ZERO) - signed
        self._working[submitted.client_order_id] = (submitted.symbol, signed)

    def on_filled(self, fill: OrderFilled) -> None:
        """Reduce the working order's remainder by the fill."""
        working = self._working.get(fill.client_order_id)
        if working is None:
            return
        symbol, remaining = working
        remaining -= fill.last_quantity * fill.side.sign
        if remaining == 0:
            del self._working[fill.client_order_id]
        else:
            self._working[fill.client_order_id] = (symbol, remaining)

    def on_closed(self, event: OrderCanceled | OrderExpired | OrderRejected) -> None:
        """Release what a canceled, expired or rejected order will no longer fill."""
        self._working.pop(event.client_order_id, None)

    def on_set_trading_state(self, command: SetTradingState) -> None:
        """Move the trading state; a move to the current state changes nothing."""
        if command.state is self.trading_state:
            return
        previous = self._trading_state.move(command.state)
        self.bus.publish(
            TradingStateChanged(
                previous=previous,
                state=command.state,
                reason=command.reason,
                ts_event=command.ts_event,
                ts_init=self.clock.timestamp_ns(),
            )
        )

    def on_allocation(self, allocation: AllocationProposed) -> None:
        """Size an order towards every symbol's target weight, in the allocation's order."""
        projected = {s: self._positions.quantity(s) + self.pending(s) for s in self._positions.marks}
        for symbol, weight in allocation.weights.items():
            self._rebalance(symbol, weight, projected, allocation.ts_event)

    def _gross(self, projected: Mapping[str, Decimal]) -> Decimal:
        marks = self._positions.marks
        return sum((abs(q) * marks[s] for s, q in projected.items()), ZERO)

    def _rebalance(self, symbol: str, weight: float, projected: dict[str, Decimal], ts: int) -> None:
        instrument = self._instruments.get(symbol)
        price = self._positions.marks.get(symbol)
        equity = self._positions.equity()
        held = projected.get(symbol, ZERO)
        if instrument is None:
            self._deny(symbol, OrderSide.BUY, ZERO, DenialReason.UNKNOWN_INSTRUMENT, f"{symbol} has no instrument", ts)
            return
        if not math.isfinite(weight):
            self._deny(symbol, OrderSide.BUY, ZERO, DenialReason.INVALID_TARGET, f"target weight is {weight}", ts)
            return
        if price is None:
            self._deny(symbol, OrderSide.BUY, ZERO, DenialReason.NO_PRICE, f"no price for {symbol} yet", ts)
            return
        if equity <= 0:
            self._deny(symbol, OrderSide.BUY, ZERO, DenialReason.NO_EQUITY, f"equity is {equity}", ts)
            return
        target = self._clip_position(Decimal(repr(weight)) * equity / price, price)
        delta = target - held
        if delta == 0 or abs(delta) < self.rebalance_threshold * abs(target):
            return
        side = OrderSide.BUY if delta > 0 else OrderSide.SELL
        quantity = instrument.round_quantity(min(abs(delta), self.max_order_notional / price), market=True)
        if quantity <= 0:
            return
        after = held + quantity * side.sign
        reduces = abs(after) < abs(held) and (after == 0 or (after > 0) == (held > 0))
        gross_after = self._gross(projected) + (abs(after) - abs(held)) * price
        refusal = self._refusal(instrument, quantity * price, reduces, gross_after, equity)
        if refusal is not None:
            self._deny(symbol, side, quantity, *refusal, ts)
            return
        projected[symbol] = after
        self._unsent[symbol] = self._unsent.get(symbol, ZERO) + quantity * side.sign
        self._approve(symbol, side, quantity, reduces, ts)

    def _clip_position(self, target: Decimal, price: Decimal) -> Decimal:
        limit = self.max_position_notional / price
        return max(-limit, min(limit, target))

    def _refusal(
        self, instrument: Instrument, notional: Decimal, reduces: bool, gross_after: Decimal, equity: Decimal
    ) -> tuple[DenialReason, str] | None:
        """Return why an order may not go out, or None when it may."""
        state = self.trading_state
        if state is TradingState.HALTED:
            return DenialReason.TRADING_HALTED, "trading is halted"
        if reduces:
            return None
        if state is TradingState.REDUCING:
            return DenialReason.REDUCE_ONLY_STATE, "only reducing orders while REDUCING"
        if notional < instrument.min_notional:
            return (
                DenialReason.BELOW_MIN_NOTIONAL,
                f"notional {notional:.2f} below the minimum {instrument.min_notional}",
            )
        if gross_after > self.max_leverage * equity:
            return (
                DenialReason.MAX_LEVERAGE,
                f"gross exposure {gross_after:.2f} would exceed {self.max_leverage}x equity {equity:.2f}",
            )
        return None

    def _approve(self, symbol: str, side: OrderSide, quantity: Decimal, reduces: bool, ts: int) -> None:
        self.approved += 1
        self.bus.publish(
            OrderApproved(
                symbol=symbol,
                side=side,
                quantity=quantity,
                order_type=OrderType.MARKET,
                price=None,
                reduce_only=reduces,
                strategy="portfolio",
                ts_event=ts,
                ts_init=self.clock.timestamp_ns(),
            )
        )

    def _deny(
        self, symbol: str, side: OrderSide, quantity: Decimal, reason: DenialReason, detail: str, ts: int
    ) -> None:
        self.denied += 1
        self.bus.publish(
            OrderDenied(
                symbol=symbol,
                side=side,
                quantity=quantity,
                reason_code=reason.value,
                reason=detail,
                strategy="portfolio",
                ts_event=ts,
                ts_init=self.clock.timestamp_ns(),
            )
        )
