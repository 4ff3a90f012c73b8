"""Pre-trade risk of ladders: one post-only limit order per price level, sized and capped by the risk layer.

A strategy's ``LadderProposed`` (a grid) states the levels; the execution
layer proposes each level's order (``LevelOrderProposed``) when it places or
re-arms it, and :class:`LadderRisk` answers with ``LevelOrderApproved`` (the
price on the tick grid, the quantity ``level_notional / price`` on the step
grid) or ``OrderDenied``. It refuses, in this order: anything while HALTED,
an order that does not reduce the booked position while REDUCING, an order
below the instrument's minimum, one that would take the ladder's inventory
beyond its cap (counting its working orders as if they filled), one beyond
the per-position notional, the order rate, the initial margin and the
gross / net leverage and VaR of the account as if it filled.

:class:`LadderLedger` is the level accounting of one ladder: filled levels
(a partial fill counts its share of a level), working orders and approvals
not yet sent. What a ladder holds (its fills and working orders) is set aside
from the symbol's weight-driven target, so the allocator's rebalancing never
trades against a grid; when the ladder ends, its fills are released and the
risk layer closes them (unless a view holds them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from keel.core.accounting import ZERO
from keel.core.fsm import TradingState
from keel.core.instruments import Rounding
from keel.core.messages import (
    LadderProposed,
    LevelOrderApproved,
    LevelOrderProposed,
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from keel.core.orders import OrderSide
from keel.risk_management.sizing import StepGrid

if TYPE_CHECKING:
    from keel.risk_management.risk_controller import DenialReason, RiskController

LadderKey = tuple[str, str]
"""(strategy, symbol): a strategy has at most one ladder per symbol."""


@dataclass(slots=True)
class _LevelOrder:
    """One level's order: its side (+1 buy, -1 sell), quantity and what of it filled."""

    level: int
    sign: int
    quantity: Decimal
    filled: Decimal = ZERO

    @property
    def open_share(self) -> float:
        """Return the share of a level still to fill."""
        return float((self.quantity - self.filled) / self.quantity)


@dataclass(slots=True)
class LadderLedger:
    """The level accounting of one ladder.

    Parameters
    ----------
    ladder_id
        The id of the ``LadderProposed`` it keeps.
    symbol
        Its instrument.
    max_inventory_levels
        Filled levels it may hold either way.
    """

    ladder_id: int
    symbol: str
    max_inventory_levels: int
    inventory_levels: float = 0.0
    inventory: Decimal = ZERO
    ended: bool = False
    unsent: dict[int, _LevelOrder] = field(default_factory=dict)
    working: dict[str, _LevelOrder] = field(default_factory=dict)

    def room(self, sign: int) -> float:
        """Return how many more levels may be ordered on side ``sign`` (+1 buy, -1 sell) within the cap."""
        on_the_way = sum(o.open_share for o in (*self.unsent.values(), *self.working.values()) if o.sign == sign)
        return self.max_inventory_levels - sign * self.inventory_levels - on_the_way

    def approve(self, approval_id: int, level: int, sign: int, quantity: Decimal) -> None:
        """Count an approved level order as on its way, in place of an earlier approval of the level never sent."""
        for earlier in [i for i, order in self.unsent.items() if order.level == level]:
            del self.unsent[earlier]
        self.unsent[approval_id] = _LevelOrder(level, sign, quantity)

    def submit(self, approval_id: int, client_order_id: str) -> bool:
        """Move an approved order to the working ones; return whether it was this ladder's."""
        order = self.unsent.pop(approval_id, None)
        if order is None:
            return False
        self.working[client_order_id] = order
        return True

    def fill(self, client_order_id: str, quantity: Decimal) -> bool:
        """Apply a fill of a working order; return whether it was this ladder's."""
        order = self.working.get(client_order_id)
        if order is None:
            return False
        quantity = min(quantity, order.quantity - order.filled)
        order.filled += quantity
        self.inventory += quantity * order.sign
        self.inventory_levels += order.sign * float(quantity / order.quantity)
        if order.filled >= order.quantity:
            del self.working[client_order_id]
        return True

    def close(self, client_order_id: str) -> bool:
        """Forget a canceled, expired or rejected order; return whether it was this ladder's."""
        return self.working.pop(client_order_id, None) is not None

    def reserved(self) -> Decimal:
        """Return the signed position the ladder holds: its fills (until it ends) and its working remainders."""
        working = sum(((o.quantity - o.filled) * o.sign for o in self.working.values()), ZERO)
        return working if self.ended else self.inventory + working


class LadderRisk:
    """Approve and size ladders' level orders for a :class:`~keel.risk_management.risk_controller.RiskController`.

    Parameters
    ----------
    risk
        The controller whose limits, trading state, position book and account projection apply.
    """

    def __init__(self, risk: RiskController) -> None:
        self.risk = risk
        self.ledgers: dict[LadderKey, LadderLedger] = {}
        self._retired: list[LadderLedger] = []
        self._grids: dict[str, StepGrid] = {}

    def reserved(self, symbol: str) -> float:
        """Return the signed quantity of ``symbol`` the ladders hold (set aside from the weight-driven target)."""
        total = ZERO
        for (_, key_symbol), ledger in self.ledgers.items():
            if key_symbol == symbol:
                total += ledger.reserved()
        for ledger in self._retired:
            if ledger.symbol == symbol:
                total += ledger.reserved()
        return float(total)

    def unsent(self, symbol: str, side: OrderSide) -> Decimal:
        """Return the quantity of ``symbol`` approved on ``side`` for ladders and not sent yet."""
        sign = side.sign
        return sum(
            (
                o.quantity
                for ledger in self._all()
                if ledger.symbol == symbol
                for o in ledger.unsent.values()
                if o.sign == sign
            ),
            ZERO,
        )

    def on_ladder(self, ladder: LadderProposed) -> None:
        """Start a ladder, or end the one it replaces (its fills are released, its working orders still count)."""
        key = (ladder.strategy, ladder.symbol)
        previous = self.ledgers.pop(key, None)
        if previous is not None:
            previous.ended = True
            previous.unsent.clear()
            if previous.working:
                self._retired.append(previous)
        if ladder.prices:
            self.ledgers[key] = LadderLedger(ladder.id, ladder.symbol, ladder.max_inventory_levels)

    def on_submitted(self, submitted: OrderSubmitted) -> None:
        """Track a level order the execution layer sent."""
        if submitted.approval_id is None:
            return
        for ledger in self._all():
            if ledger.submit(submitted.approval_id, submitted.client_order_id):
                return

    def on_filled(self, fill: OrderFilled) -> None:
        """Count a level order's fill in its ladder's inventory."""
        for ledger in self._all():
            if ledger.fill(fill.client_order_id, fill.last_quantity):
                break
        self._retire_closed()

    def on_closed(self, event: OrderCanceled | OrderExpired | OrderRejected) -> None:
        """Forget a level order the venue will no longer fill."""
        for ledger in self._all():
            if ledger.close(event.client_order_id):
                break
        self._retire_closed()

    def on_trading_state(self, state: TradingState) -> None:
        """Drop approvals not yet sent when trading stops or reduces (the execution layer proposes again)."""
        if state is not TradingState.ACTIVE:
            for ledger in self.ledgers.values():
                ledger.unsent.clear()

    def on_proposal(self, proposal: LevelOrderProposed) -> None:
        """Approve and size a level order, or deny it with the reason."""
        from keel.risk_management.risk_controller import DenialReason

        ledger = self.ledgers.get((proposal.strategy, proposal.symbol))
        if ledger is None or ledger.ladder_id != proposal.ladder_id:
            return  # the ladder it belongs to has ended: the execution layer drops it too
        risk = self.risk
        instrument = risk._instruments.get(proposal.symbol)
        ts = proposal.ts_event
        if instrument is None or not (math.isfinite(proposal.price) and proposal.price > 0.0):
            self._deny(proposal, ZERO, DenialReason.UNKNOWN_INSTRUMENT, "no instrument or no valid level price")
            return
        rounding = Rounding.DOWN if proposal.side is OrderSide.BUY else Rounding.UP
        price = instrument.round_price(Decimal(repr(proposal.price)), rounding)
        grid = self._grids.get(proposal.symbol)
        if grid is None:
            grid = self._grids[proposal.symbol] = StepGrid.of(instrument, market=False)
        quantity, size = grid.floor_pair(proposal.notional / float(price))
        refusal = self._refusal(proposal, ledger, grid, price, quantity, size, ts)
        if refusal is not None:
            self._deny(proposal, quantity, *refusal)
            return
        risk.approved += 1
        risk._approvals.append(ts)
        approved = LevelOrderApproved(
            strategy=proposal.strategy,
            symbol=proposal.symbol,
            ladder_id=proposal.ladder_id,
            level=proposal.level,
            side=proposal.side,
            price=price,
            quantity=quantity,
            proposal_id=proposal.id,
            ts_event=ts,
            ts_init=risk.clock.timestamp_ns(),
        )
        ledger.approve(approved.id, proposal.level, proposal.side.sign, quantity)
        risk.bus.publish(approved)

    def _refusal(
        self,
        proposal: LevelOrderProposed,
        ledger: LadderLedger,
        grid: StepGrid,
        price: Decimal,
        quantity: Decimal,
        size: float,
        ts: int,
    ) -> tuple[DenialReason, str] | None:
        from keel.risk_management.risk_controller import DenialReason, _Allocation

        risk = self.risk
        symbol, side = proposal.symbol, proposal.side
        booked = risk._positions.quantity(symbol)
        state = risk.trading_state
        if state is TradingState.HALTED:
            return DenialReason.TRADING_HALTED, "trading is halted"
        if state is TradingState.REDUCING and quantity > risk._reducible(symbol, side, booked) - self.unsent(
            symbol, side
        ):
            return DenialReason.REDUCE_ONLY_STATE, "only orders that reduce the position while REDUCING"
        notional = size * float(price)
        if size <= 0.0 or notional < grid.min_notional_float:
            return (
                DenialReason.BELOW_MIN_NOTIONAL,
                f"level order {quantity} at {price} ({notional:.2f}) below the minimum {grid.min_notional}",
            )
        if ledger.room(side.sign) < 1.0 - 1e-9:
            return (
                DenialReason.INVENTORY_CAP,
                f"the ladder's filled and working levels would exceed its cap of {ledger.max_inventory_levels}",
            )
        context = _Allocation.of(risk)
        mark = context.prices.get(symbol, float(price))
        # The worst case: every order on its way fills, this one's and the approvals not sent yet included.
        held = context.held.get(symbol, float(booked)) + float(self.unsent(symbol, side)) * side.sign
        after = held + size * side.sign
        if abs(after) * mark > risk.limits.max_position_notional and abs(after) > abs(held):
            return (
                DenialReason.POSITION_LIMIT,
                f"position notional {abs(after) * mark:.2f} would exceed {risk.limits.max_position_notional:g}",
            )
        if risk._rate_limited(ts):
            return DenialReason.ORDER_RATE_LIMIT, f"{risk.limits.max_orders_per_window} orders in the rate window"
        if symbol in context.prices:
            margin = context.margin_refusal(risk, symbol, risk._opening(side, size, booked))
            if margin is not None:
                return margin
            if abs(after) > abs(held):
                return context.exposure_refusal(risk, symbol, held, after, mark)
        return None

    def _deny(self, proposal: LevelOrderProposed, quantity: Decimal, reason: DenialReason, detail: str) -> None:
        risk = self.risk
        risk.denied += 1
        risk.bus.publish(
            OrderDenied(
                symbol=proposal.symbol,
                side=proposal.side,
                quantity=quantity,
                reason_code=reason.value,
                reason=f"level {proposal.level} at {proposal.price:g}: {detail}",
                strategy=proposal.strategy,
                ts_event=proposal.ts_event,
                ts_init=risk.clock.timestamp_ns(),
            )
        )

    def _all(self) -> list[LadderLedger]:
        return [*self.ledgers.values(), *self._retired]

    def _retire_closed(self) -> None:
        if self._retired:
            self._retired = [ledger for ledger in self._retired if ledger.working]
