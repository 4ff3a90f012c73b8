"""Positions, P&L, fees, funding and equity, kept from fills and funding events.

The :class:`PositionManager` is keel's own book: it changes only through
``OrderFilled`` and ``FundingPaid`` events (already de-duplicated by the order
manager) and marks positions to the last bar close. The simulated venue keeps
its own book with the same accounting (:class:`~keel.core.accounting.Position`);
tests check the two agree.
"""

from __future__ import annotations

from decimal import Decimal

from keel.core.accounting import ZERO, Position
from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.messages import BarClosed, FundingPaid, OrderFilled, PositionChanged


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
        self.initial_capital = initial_capital
        self.positions: dict[str, Position] = {}
        self.marks: dict[str, Decimal] = {}
        self.fees_paid = ZERO
        self.funding_received = ZERO
        self.fees_by_symbol: dict[str, Decimal] = {}
        self.funding_by_symbol: dict[str, Decimal] = {}
        self.closing_pnls: list[Decimal] = []
        self.fills = 0

    def on_start(self) -> None:
        """Subscribe to fills, funding and bars."""
        self.bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.mark")
        self.bus.subscribe(OrderFilled, self.on_fill, name=self.name)
        self.bus.subscribe(FundingPaid, self.on_funding, name=self.name)

    def on_bar(self, bar: BarClosed) -> None:
        """Mark the symbol to the bar's close."""
        self.marks[bar.symbol] = Decimal(repr(bar.close))

    def on_fill(self, fill: OrderFilled) -> None:
        """Apply a fill to its position and publish the change."""
        position = self.positions.setdefault(fill.symbol, Position(fill.symbol))
        realized = position.apply_fill(fill.last_quantity * fill.side.sign, fill.last_price)
        if realized != 0:
            self.closing_pnls.append(realized)
        self.fees_paid += fill.commission
        self.fees_by_symbol[fill.symbol] = self.fees_by_symbol.get(fill.symbol, ZERO) + fill.commission
        self.fills += 1
        self.marks.setdefault(fill.symbol, fill.last_price)
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

    def on_funding(self, payment: FundingPaid) -> None:
        """Book a funding payment."""
        self.funding_received += payment.amount
        self.funding_by_symbol[payment.symbol] = self.funding_by_symbol.get(payment.symbol, ZERO) + payment.amount

    def quantity(self, symbol: str) -> Decimal:
        """Return the signed position in ``symbol`` (zero when flat)."""
        position = self.positions.get(symbol)
        return position.quantity if position is not None else ZERO

    def realized_pnl(self) -> Decimal:
        """Return the P&L realized by closing trades, before fees and funding."""
        return sum((p.realized_pnl for p in self.positions.values()), ZERO)

    def unrealized_pnl(self) -> Decimal:
        """Return the open positions' P&L at the last marks."""
        return sum((p.unrealized_pnl(self.marks[s]) for s, p in self.positions.items() if p.quantity != 0), ZERO)

    def equity(self) -> Decimal:
        """Return capital + realized + unrealized - fees + funding."""
        return (
            self.initial_capital + self.realized_pnl() + self.unrealized_pnl() - self.fees_paid + self.funding_received
        )

    def gross_exposure(self) -> Decimal:
        """Return the sum of absolute position values at the last marks."""
        return sum((p.notional(self.marks[s]) for s, p in self.positions.items() if p.quantity != 0), ZERO)

    def exposure(self, symbol: str) -> Decimal:
        """Return the absolute value of the position in ``symbol``."""
        position = self.positions.get(symbol)
        if position is None or position.quantity == 0:
            return ZERO
        return position.notional(self.marks[symbol])
