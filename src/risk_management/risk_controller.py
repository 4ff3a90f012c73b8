"""Pre-trade risk: turn target weights into sized orders, or deny them with a reason.

The walking skeleton's :class:`RiskController` approves and sizes every
order: for each symbol whose target weight changed it computes the order that
moves the position to ``weight x equity / price``, rounds it down to the
instrument's step, clips it to the per-order and per-position notional limits,
and refuses it when the account would exceed its leverage limit or the trading
state forbids it. Every refusal is an ``OrderDenied`` event with a
:class:`DenialReason` code. It also owns the trading state
(ACTIVE / REDUCING / HALTED), moved by ``SetTradingState`` commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import Enum

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.fsm import TRADING_STATE_TRANSITIONS, StateMachine, TradingState
from keel.core.instruments import Instrument
from keel.core.messages import (
    AllocationProposed,
    OrderApproved,
    OrderDenied,
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
        self._targets: dict[str, float] = {}
        self.approved = 0
        self.denied = 0

    @property
    def trading_state(self) -> TradingState:
        """Return ACTIVE, REDUCING or HALTED."""
        return self._trading_state.state

    def on_start(self) -> None:
        """Subscribe to allocations; handle trading-state commands."""
        self.bus.subscribe(AllocationProposed, self.on_allocation, name=self.name)
        self.bus.register(SetTradingState, self.on_set_trading_state, name=self.name)

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
        """Size an order for every symbol whose target weight changed."""
        for symbol, weight in allocation.weights.items():
            if self._targets.get(symbol) == weight:
                continue
            self._targets[symbol] = weight
            self._rebalance(symbol, weight, allocation.ts_event)

    def _rebalance(self, symbol: str, weight: float, ts: int) -> None:
        instrument = self._instruments.get(symbol)
        price = self._positions.marks.get(symbol)
        equity = self._positions.equity()
        held = self._positions.quantity(symbol)
        if instrument is None:
            self._deny(
                symbol, OrderSide.BUY, Decimal(0), DenialReason.UNKNOWN_INSTRUMENT, f"{symbol} has no instrument", ts
            )
            return
        if price is None:
            self._deny(symbol, OrderSide.BUY, Decimal(0), DenialReason.NO_PRICE, f"no price for {symbol} yet", ts)
            return
        if equity <= 0:
            self._deny(symbol, OrderSide.BUY, Decimal(0), DenialReason.NO_EQUITY, f"equity is {equity}", ts)
            return
        target = self._clip_position(Decimal(repr(weight)) * equity / price, price)
        delta = target - held
        if delta == 0 or abs(delta) < self.rebalance_threshold * abs(target):
            return
        side = OrderSide.BUY if delta > 0 else OrderSide.SELL
        quantity = instrument.round_quantity(min(abs(delta), self.max_order_notional / price), market=True)
        if quantity <= 0:
            return
        self._check_and_approve(instrument, symbol, side, quantity, held, price, equity, ts)

    def _clip_position(self, target: Decimal, price: Decimal) -> Decimal:
        limit = self.max_position_notional / price
        return max(-limit, min(limit, target))

    def _check_and_approve(
        self,
        instrument: Instrument,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        held: Decimal,
        price: Decimal,
        equity: Decimal,
        ts: int,
    ) -> None:
        after = held + quantity * side.sign
        reduces = abs(after) < abs(held) and (after == 0 or (after > 0) == (held > 0))
        state = self.trading_state
        if state is TradingState.HALTED:
            self._deny(symbol, side, quantity, DenialReason.TRADING_HALTED, "trading is halted", ts)
            return
        if state is TradingState.REDUCING and not reduces:
            self._deny(
                symbol, side, quantity, DenialReason.REDUCE_ONLY_STATE, "only reducing orders while REDUCING", ts
            )
            return
        if not reduces and quantity * price < instrument.min_notional:
            self._deny(
                symbol,
                side,
                quantity,
                DenialReason.BELOW_MIN_NOTIONAL,
                f"notional {quantity * price:.2f} below the minimum {instrument.min_notional}",
                ts,
            )
            return
        gross_after = self._positions.gross_exposure() - abs(held) * price + abs(after) * price
        if not reduces and gross_after > self.max_leverage * equity:
            self._deny(
                symbol,
                side,
                quantity,
                DenialReason.MAX_LEVERAGE,
                f"gross exposure {gross_after:.2f} would exceed {self.max_leverage}x equity {equity:.2f}",
                ts,
            )
            return
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
