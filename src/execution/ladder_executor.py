"""Ladders on the venue: one resting post-only (GTX) limit order per price level, re-armed when it fills.

:class:`LadderExecutor` works the ladders strategies propose (``LadderProposed``,
a grid): for every level with a side it proposes the level's order to the
risk layer (``LevelOrderProposed``), and sends each approved one
(``LevelOrderApproved``) as a ``SubmitOrder`` command: a LIMIT order, time in
force GTX, at the approved price and quantity, so it only ever rests. It
keeps at most one order per level. When a level's order fills, the level is
empty and the opposite side is armed one level away (a filled buy arms a
sell one level up, a filled sell a buy one level down), and every side
refills nearest-first up to the ladder's inventory cap (its filled levels
plus its working orders). A post-only order the venue refused because it
would have taken (rejected with -5022, or expired on arrival) is proposed
again on the next bar whose close lies on its passive side.

A ladder with no prices ends the one before it: its orders are canceled
(the risk layer closes what it filled). HALTED cancels every ladder order
and proposes nothing until trading is ACTIVE again; REDUCING cancels them
and proposes them again, so that only those that reduce the position are
approved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from mypy_extensions import mypyc_attr

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.error_codes import BinanceErrorCode
from keel.core.fsm import TradingState
from keel.core.messages import (
    BarClosed,
    CancelOrder,
    LadderProposed,
    LevelOrderApproved,
    LevelOrderProposed,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    SubmitOrder,
    TradingStateChanged,
)
from keel.core.orders import OrderSide, OrderType, TimeInForce
from keel.execution.order_manager import OrderManager

_WOULD_TAKE = int(BinanceErrorCode.GTX_ORDER_REJECT)
_OPPOSITE = {OrderSide.BUY: OrderSide.SELL, OrderSide.SELL: OrderSide.BUY}


@dataclass(slots=True)
class _Resting:
    """A level's order on its way or at the venue."""

    level: int
    side: OrderSide
    quantity: Decimal
    filled: Decimal = Decimal(0)


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(slots=True)
class LadderState:
    """One ladder as the executor works it: the side wanted at each level and the orders resting there."""

    ladder_id: int
    strategy: str
    symbol: str
    prices: tuple[float, ...]
    sides: list[OrderSide | None]
    level_notional: float
    max_inventory_levels: int
    anchor: int
    inventory_levels: float = 0.0
    orders: dict[str, _Resting] = field(default_factory=dict)
    canceling: dict[str, _Resting] = field(default_factory=dict)
    proposed: dict[int, int] = field(default_factory=dict)
    waiting: set[int] = field(default_factory=set)

    def level_orders(self) -> dict[int, str]:
        """Return the client order id resting at each level."""
        return {resting.level: client_order_id for client_order_id, resting in self.orders.items()}

    def room(self, side: OrderSide) -> float:
        """Return how many more levels may be ordered on ``side`` within the inventory cap."""
        sign = side.sign
        on_the_way = sum(
            float((r.quantity - r.filled) / r.quantity) for r in self.orders.values() if r.side is side
        ) + sum(1.0 for level in self.proposed if self.sides[level] is side)
        return self.max_inventory_levels - sign * self.inventory_levels - on_the_way


@mypyc_attr(allow_interpreted_subclasses=True)
class LadderExecutor(Component):
    """Rest one post-only limit order per ladder level through the risk layer and the order manager.

    Parameters
    ----------
    orders
        The order manager (client order ids come from it).
    bus, clock
        The event bus and the clock.
    """

    def __init__(self, orders: OrderManager, bus: EventBus, clock: Clock) -> None:
        super().__init__("execution.ladders", bus, clock)
        self.orders = orders
        self.ladders: dict[tuple[str, str], LadderState] = {}
        self._by_order: dict[str, LadderState] = {}
        self._trading_state = TradingState.ACTIVE
        self.rearmed = 0
        self.would_take = 0

    def on_start(self) -> None:
        """Subscribe to ladders, approvals, the venue's reports on ladder orders, bars and the trading state."""
        bus = self.bus
        bus.subscribe(LadderProposed, self.on_ladder, name=self.name)
        bus.subscribe(LevelOrderApproved, self.on_approved, name=f"{self.name}.approved")
        bus.subscribe(OrderFilled, self.on_filled, name=f"{self.name}.fills")
        for closed in (OrderCanceled, OrderExpired, OrderRejected):
            bus.subscribe(closed, self.on_closed, name=f"{self.name}.closed")
        bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.bars")
        bus.subscribe(TradingStateChanged, self.on_trading_state, name=f"{self.name}.trading_state")

    # --- ladders ---------------------------------------------------------------------------------

    def on_ladder(self, proposal: LadderProposed) -> None:
        """Replace the strategy's ladder on the symbol: cancel the old one's orders, place the new one's."""
        key = (proposal.strategy, proposal.symbol)
        old = self.ladders.pop(key, None)
        if old is not None:
            self._cancel_all(old)
        if not proposal.prices:
            return
        sides = list(proposal.sides)
        empty = [i for i, side in enumerate(sides) if side is None]
        ladder = LadderState(
            ladder_id=proposal.id,
            strategy=proposal.strategy,
            symbol=proposal.symbol,
            prices=proposal.prices,
            sides=sides,
            level_notional=proposal.level_notional,
            max_inventory_levels=proposal.max_inventory_levels,
            anchor=empty[0] if empty else len(sides) // 2,
        )
        self.ladders[key] = ladder
        self._top_up(ladder, proposal.ts_event)

    def on_approved(self, approved: LevelOrderApproved) -> None:
        """Send an approved level order as a post-only limit order (unless the level no longer wants it)."""
        ladder = self.ladders.get((approved.strategy, approved.symbol))
        if ladder is None or ladder.ladder_id != approved.ladder_id:
            return
        if ladder.proposed.get(approved.level) != approved.proposal_id:
            return
        del ladder.proposed[approved.level]
        if ladder.sides[approved.level] is not approved.side or approved.level in ladder.level_orders():
            return
        client_order_id = self.orders.next_client_order_id()
        ladder.orders[client_order_id] = _Resting(approved.level, approved.side, approved.quantity)
        self._by_order[client_order_id] = ladder
        self.bus.publish(
            SubmitOrder(
                client_order_id=client_order_id,
                symbol=approved.symbol,
                side=approved.side,
                order_type=OrderType.LIMIT,
                quantity=approved.quantity,
                price=approved.price,
                time_in_force=TimeInForce.GTX,
                strategy=approved.strategy,
                approval_id=approved.id,
                ts_event=approved.ts_event,
                ts_init=self.clock.timestamp_ns(),
            )
        )

    # --- venue reports ---------------------------------------------------------------------------

    def on_filled(self, fill: OrderFilled) -> None:
        """Count a level order's fill; a level filled in full is re-armed on the opposite side one level away."""
        ladder = self._by_order.get(fill.client_order_id)
        if ladder is None:
            return
        resting = ladder.orders.get(fill.client_order_id) or ladder.canceling[fill.client_order_id]
        quantity = min(fill.last_quantity, resting.quantity - resting.filled)
        resting.filled += quantity
        ladder.inventory_levels += resting.side.sign * float(quantity / resting.quantity)
        if resting.filled < resting.quantity:
            return
        given_up = fill.client_order_id in ladder.canceling
        self._forget(ladder, fill.client_order_id)
        if given_up:
            self._after_cancels(ladder, fill.ts_event)  # a fill that beat its cancel: the level was given up
            return
        if self.ladders.get((ladder.strategy, ladder.symbol)) is not ladder:
            return
        level = resting.level
        ladder.sides[level] = None
        ladder.anchor = level
        neighbour = level + 1 if resting.side is OrderSide.BUY else level - 1
        if 0 <= neighbour < len(ladder.sides) and neighbour not in ladder.level_orders():
            ladder.sides[neighbour] = _OPPOSITE[resting.side]
        self.rearmed += 1
        self._top_up(ladder, fill.ts_event)

    def on_closed(self, event: OrderCanceled | OrderExpired | OrderRejected) -> None:
        """Free a level whose order ended unfilled; a post-only order that would have taken waits for the next bar."""
        ladder = self._by_order.get(event.client_order_id)
        if ladder is None:
            return
        resting = ladder.orders.get(event.client_order_id)
        given_up = event.client_order_id in ladder.canceling
        self._forget(ladder, event.client_order_id)
        # A post-only order that would take is rejected (-5022) or, on some venues, expired on arrival.
        would_take = isinstance(event, OrderExpired) or (isinstance(event, OrderRejected) and event.code == _WOULD_TAKE)
        if resting is not None and would_take:
            self.would_take += 1
            ladder.waiting.add(resting.level)
        elif given_up:
            self._after_cancels(ladder, event.ts_event)

    def on_bar(self, bar: BarClosed) -> None:
        """Propose again the levels whose post-only order would have taken, once the close is on their passive side."""
        for ladder in self.ladders.values():
            if ladder.symbol != bar.symbol or not ladder.waiting:
                continue
            ready = sorted(level for level in ladder.waiting if self._passive(ladder, level, bar.close))
            ladder.waiting.difference_update(ready)
            self._top_up(ladder, bar.ts_event)

    def on_trading_state(self, change: TradingStateChanged) -> None:
        """HALTED cancels every ladder order; REDUCING cancels and proposes again; ACTIVE places the levels again."""
        self._trading_state = change.state
        for ladder in self.ladders.values():
            ladder.proposed.clear()
            if change.state is not TradingState.ACTIVE:
                self._cancel_all(ladder)
            if change.state is not TradingState.HALTED:
                self._top_up(ladder, change.ts_event)

    def resume(self) -> set[str]:
        """Settle the ladders the history replay left with the order manager's records after a restart.

        Returns the client order ids of the level orders still open (they go
        on working); a level whose order the records hold closed is placed
        again.
        """
        now = self.clock.timestamp_ns()
        working: set[str] = set()
        for ladder in self.ladders.values():
            for client_order_id in [*ladder.orders, *ladder.canceling]:
                order = self.orders.orders.get(client_order_id)
                if order is None or order.is_closed:
                    self._forget(ladder, client_order_id)
                elif client_order_id in ladder.orders:
                    working.add(client_order_id)
            ladder.proposed.clear()
            self._top_up(ladder, now)
        return working

    # --- helpers ---------------------------------------------------------------------------------

    def _after_cancels(self, ladder: LadderState, ts: int) -> None:
        """Place the levels again once the last of the ladder's canceled orders is gone."""
        if not ladder.canceling and self.ladders.get((ladder.strategy, ladder.symbol)) is ladder:
            self._top_up(ladder, ts)

    def _top_up(self, ladder: LadderState, ts: int) -> None:
        """Propose, nearest the anchor first, every level that wants an order and has none, within the cap.

        Nothing is proposed while HALTED or while orders the ladder gave up are
        still being canceled (the risk layer still counts them).
        """
        if self._trading_state is TradingState.HALTED or ladder.canceling:
            return
        taken = set(ladder.level_orders()) | set(ladder.proposed) | ladder.waiting
        for side in (OrderSide.BUY, OrderSide.SELL):
            room = ladder.room(side)
            free = sorted(
                (i for i, wanted in enumerate(ladder.sides) if wanted is side and i not in taken),
                key=lambda i: abs(i - ladder.anchor),
            )
            for level in free:
                if room < 1.0 - 1e-9:
                    break
                room -= 1.0
                self._propose(ladder, level, side, ts)

    def _propose(self, ladder: LadderState, level: int, side: OrderSide, ts: int) -> None:
        proposal = LevelOrderProposed(
            strategy=ladder.strategy,
            symbol=ladder.symbol,
            ladder_id=ladder.ladder_id,
            level=level,
            side=side,
            price=ladder.prices[level],
            notional=ladder.level_notional,
            ts_event=ts,
            ts_init=self.clock.timestamp_ns(),
        )
        ladder.proposed[level] = proposal.id
        self.bus.publish(proposal)

    def _cancel_all(self, ladder: LadderState) -> None:
        now = self.clock.timestamp_ns()
        ladder.proposed.clear()
        ladder.waiting.clear()
        for client_order_id, resting in list(ladder.orders.items()):
            # Given up at once: its level may take a new order while the cancel is on its way.
            del ladder.orders[client_order_id]
            ladder.canceling[client_order_id] = resting
            order = self.orders.orders.get(client_order_id)
            if order is not None and not order.is_closed:
                cancel = CancelOrder(client_order_id=client_order_id, symbol=ladder.symbol, ts_event=now, ts_init=now)
                self.bus.publish(cancel)

    def _forget(self, ladder: LadderState, client_order_id: str) -> None:
        ladder.orders.pop(client_order_id, None)
        ladder.canceling.pop(client_order_id, None)
        self._by_order.pop(client_order_id, None)

    @staticmethod
    def _passive(ladder: LadderState, level: int, close: float) -> bool:
        price = ladder.prices[level]
        return price < close if ladder.sides[level] is OrderSide.BUY else price > close
