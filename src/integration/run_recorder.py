"""What a run's reports are written from: its fills, denials, liquidations and equity curve.

Compiled (see :mod:`keel.compiled_modules`): a backtest records a point of the
equity curve at every bar time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from mypy_extensions import mypyc_attr

from keel.core.bus import EventBus
from keel.core.messages import (
    ExecutionCompleted,
    OrderDenied,
    OrderFilled,
    OrderRejected,
    PositionLiquidated,
    RegimeChanged,
    TradingStateChanged,
)
from keel.risk_management.position_manager import PositionManager


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass
class EquityPoint:
    """Equity and exposure at one bar close."""

    ts: int
    equity: Decimal
    gross_exposure: Decimal


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass
class RunRecorder:
    """Keep what a run report needs: fills, rejections, denials, liquidations, executions, equity."""

    fills: list[OrderFilled] = field(default_factory=list)
    rejections: list[OrderRejected] = field(default_factory=list)
    denials: list[OrderDenied] = field(default_factory=list)
    trading_states: list[TradingStateChanged] = field(default_factory=list)
    liquidations: list[PositionLiquidated] = field(default_factory=list)
    executions: list[ExecutionCompleted] = field(default_factory=list)
    regimes: list[RegimeChanged] = field(default_factory=list)
    equity: list[EquityPoint] = field(default_factory=list)
    equity_spill: Path | None = None
    equity_kept: int = 10_000
    equity_spilled: int = 0

    def record_equity(self, point: EquityPoint) -> None:
        """Append a point to the curve; with :attr:`equity_spill` the older points move to that file."""
        self.equity.append(point)
        if self.equity_spill is not None and len(self.equity) >= 2 * self.equity_kept:
            moved = self.equity[: -self.equity_kept]
            with self.equity_spill.open("a", encoding="utf-8") as spill:
                spill.writelines(f"{p.ts},{p.equity},{p.gross_exposure}\n" for p in moved)
            del self.equity[: -self.equity_kept]
            self.equity_spilled += len(moved)

    def record_equity_of(self, positions: PositionManager, ts: int) -> None:
        """Append the book's equity and gross exposure at ``ts``, the close of a bar time."""
        self.record_equity(EquityPoint(ts, positions.equity(), positions.gross_exposure()))

    def spill_equity(self, path: Path, kept: int = 10_000) -> None:
        """Keep the last ``kept`` or more points of the curve in memory, the older ones in ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")
        self.equity_spill = path
        self.equity_kept = max(kept, 1)
        self.equity_spilled = 0

    def equity_curve(self) -> Iterator[EquityPoint]:
        """Yield the whole curve, the spilled points first."""
        if self.equity_spill is not None and self.equity_spilled:
            with self.equity_spill.open(encoding="utf-8") as spill:
                for line in spill:
                    ts, equity, gross = line.rstrip("\n").split(",")
                    yield EquityPoint(int(ts), Decimal(equity), Decimal(gross))
        yield from self.equity

    def attach(self, bus: EventBus) -> None:
        """Subscribe to the events it records."""
        bus.subscribe(OrderFilled, self.fills.append, name="recorder.fills")
        bus.subscribe(OrderRejected, self.rejections.append, name="recorder.rejections")
        bus.subscribe(OrderDenied, self.denials.append, name="recorder.denials")
        bus.subscribe(TradingStateChanged, self.trading_states.append, name="recorder.trading_state")
        bus.subscribe(PositionLiquidated, self.liquidations.append, name="recorder.liquidations")
        bus.subscribe(ExecutionCompleted, self.executions.append, name="recorder.executions")
        bus.subscribe(RegimeChanged, self.regimes.append, name="recorder.regimes")
