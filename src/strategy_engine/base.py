"""The strategy contract: bars in, signals out, state from the past only.

A strategy is plain Python with no bus, clock or I/O: :meth:`BaseStrategy.on_bar`
receives each closed bar of its symbols in time order and may return a
:class:`StrategySignal`. :class:`StrategyRunner` is the component that feeds it
from the bus, publishes its signals as ``SignalGenerated`` events, and keeps
the engine running when strategy code raises.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.messages import BarClosed, SignalAction, SignalGenerated

_log = structlog.get_logger("keel.strategy")


@dataclass(frozen=True, slots=True)
class StrategySignal:
    """A strategy's view on one symbol.

    Parameters
    ----------
    symbol
        The instrument.
    action
        ``"BUY"``, ``"SELL"`` or ``"HOLD"``.
    strength
        How strongly to act, in [0, 1].
    confidence
        How sure the strategy is, in [0, 1].
    stop_loss, take_profit
        Optional price levels.
    metadata
        Free-form details for reports.
    """

    symbol: str
    action: str
    strength: float
    confidence: float
    stop_loss: float | None = None
    take_profit: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in SignalAction.__members__:
            raise ValueError(f"signal action must be BUY, SELL or HOLD, got {self.action!r}")
        for name in ("strength", "confidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"signal {name} must lie in [0, 1], got {value!r}")


class BaseStrategy(ABC):
    """Base class of every strategy.

    Parameters
    ----------
    name
        The strategy's name, used in signals, orders and reports.
    parameters
        Its parameters, kept for reports and tuning.
    """

    warmup_bars: int = 0
    """Bars a symbol needs before the strategy may signal on it."""

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.parameters = dict(parameters or {})

    @abstractmethod
    def on_bar(self, bar: BarClosed) -> StrategySignal | None:
        """Update state with a closed bar; return a signal or None."""


class StrategyRunner(Component):
    """Feed bars from the bus to a strategy and publish its signals.

    Parameters
    ----------
    strategy
        The strategy to run.
    bus, clock
        The event bus and the clock.
    """

    def __init__(self, strategy: BaseStrategy, bus: EventBus, clock: Clock) -> None:
        super().__init__(f"strategy.{strategy.name}", bus, clock)
        self.strategy = strategy
        self.errors = 0

    def on_start(self) -> None:
        """Subscribe to closed bars."""
        self.bus.subscribe(BarClosed, self.on_bar, name=self.name)

    def on_bar(self, bar: BarClosed) -> None:
        """Run the strategy on one bar; an exception degrades the runner, not the engine."""
        try:
            signal = self.strategy.on_bar(bar)
        except Exception as error:
            self.errors += 1
            _log.error("strategy raised", strategy=self.strategy.name, bar_id=bar.id, error=repr(error))
            self.degrade(f"strategy raised on bar {bar.id}: {error!r}")
            return
        if signal is None:
            return
        now = self.clock.timestamp_ns()
        self.bus.publish(
            SignalGenerated(
                strategy=self.strategy.name,
                symbol=signal.symbol,
                action=SignalAction(signal.action),
                strength=signal.strength,
                confidence=signal.confidence,
                stop_loss=signal.stop_loss,
                take_profit=signal.take_profit,
                ts_event=bar.ts_event,
                ts_init=now,
            )
        )
