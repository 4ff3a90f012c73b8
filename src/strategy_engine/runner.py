"""The strategy engine on the bus: bars and funding in, signals, strategy errors and regime changes out.

:class:`StrategyRunner` is the component that feeds a
:class:`~keel.strategy_engine.manager.StrategyManager` (or a single strategy,
which it wraps in a manager of one with no regime detection) from
``BarClosed`` and ``FundingRateUpdated`` events and publishes what each bar
produced: ``SignalGenerated`` when the combined view is news,
``TargetQuantityProposed`` and ``LadderProposed`` when a strategy's standing
intent (a position it holds by itself, resting orders per price level)
changes, ``StrategyError`` for every strategy exception (the runner is marked
degraded, the engine goes on) and ``RegimeChanged`` when a symbol's most
likely regime changes. A ``ScheduleFired`` of a wall-clock scheduler reaches
the scheduled strategy it names, which buys at its next bar.
"""

from __future__ import annotations

from collections.abc import Iterable

from mypy_extensions import mypyc_attr

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.messages import (
    BarClosed,
    FundingRateUpdated,
    LadderProposed,
    Message,
    RegimeChanged,
    ScheduleFired,
    SignalAction,
    SignalGenerated,
    StrategyError,
    TargetQuantityProposed,
)
from keel.core.orders import OrderSide
from keel.strategy_engine.base import BaseStrategy
from keel.strategy_engine.manager import ManagerUpdate, StrategyManager
from keel.strategy_engine.scheduled_dca import ScheduledDcaStrategy


@mypyc_attr(allow_interpreted_subclasses=True)
class StrategyRunner(Component):
    """Run a strategy manager (or one strategy) on the bus.

    Parameters
    ----------
    strategy
        A :class:`StrategyManager`, or a strategy to run alone (its own
        signals are published under its name, without regime weighting).
    bus, clock
        The event bus and the clock.

    Attributes
    ----------
    enabled : bool
        False pauses trading: the strategies keep following the market (so
        they resume without a new warm-up) but no ``SignalGenerated`` is
        published; errors and regime changes still are. Setting it back to
        True publishes each symbol's current view at its next bar.
    errors : int
        Strategy exceptions so far.
    """

    def __init__(self, strategy: BaseStrategy | StrategyManager, bus: EventBus, clock: Clock) -> None:
        if isinstance(strategy, StrategyManager):
            manager = strategy
        else:
            manager = StrategyManager(
                [strategy],
                detector_factory=False,
                min_signal=0.0,
                publish_step=0.0,
                volatility_scaling=False,
                name=strategy.name,
            )
        super().__init__(f"strategy.{manager.name}", bus, clock)
        self.strategy = strategy
        self.manager = manager
        self.errors = 0
        self._enabled = True

    @property
    def enabled(self) -> bool:
        """Return whether signals are published."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        """Pause or resume publishing; on resume every symbol's current view is published at its next bar."""
        if value and not self._enabled:
            self.manager.republish()
        self._enabled = bool(value)

    def warm_up(self, events: Iterable[Message]) -> int:
        """Feed recorded history from before the run to the strategies without publishing; return its bars.

        The strategies and regime detectors come out of it ready, the
        performance records start afresh and every symbol's current view is
        published at its next bar. Strategy errors during the warm-up are
        counted in :attr:`errors` (and logged) but not published, and never
        keep a strategy off for the run.
        """
        bars = 0
        for event in events:
            if isinstance(event, BarClosed):
                self.errors += len(self.manager.on_bar(event).failures)
                bars += 1
            elif isinstance(event, FundingRateUpdated):
                self.manager.on_funding(event)
        self.manager.reset_performance()
        self.manager.enable_all()
        self.manager.republish()
        return bars

    def on_start(self) -> None:
        """Subscribe to closed bars, settled funding rates and fired schedules."""
        self.bus.subscribe(BarClosed, self.on_bar, name=self.name)
        self.bus.subscribe(FundingRateUpdated, self.manager.on_funding, name=f"{self.name}.funding")
        self.bus.subscribe(ScheduleFired, self.on_schedule_fired, name=f"{self.name}.schedules")

    def on_schedule_fired(self, event: ScheduleFired) -> None:
        """Hand a wall-clock fire to the scheduled strategy it names (its buy comes with the next bar)."""
        for strategy in self.manager.strategies:
            if strategy.name == event.strategy and isinstance(strategy, ScheduledDcaStrategy):
                strategy.record_fire(event.fire_time)

    def on_bar(self, bar: BarClosed) -> None:
        """Run the strategies on one bar and publish what it produced (no signals while disabled)."""
        update = self.manager.on_bar(bar)
        if update.failures:
            self._publish_failures(update)
        if update.regime_change is not None:
            self._publish_regime_change(bar, update)
        if update.intents and self.enabled:
            self._publish_intents(bar, update)
        signal = update.signal
        if signal is None or not self.enabled:
            return
        self.bus.publish(
            SignalGenerated(
                strategy=self.manager.name,
                symbol=signal.symbol,
                action=SignalAction(signal.action),
                strength=signal.strength,
                confidence=signal.confidence,
                stop_loss=signal.stop_loss,
                take_profit=signal.take_profit,
                contributions={name: float(c) for name, c in signal.metadata.get("contributions", {}).items()},
                ts_event=bar.ts_event,
                ts_init=self.clock.timestamp_ns(),
            )
        )

    def _publish_intents(self, bar: BarClosed, update: ManagerUpdate) -> None:
        """Publish each strategy's new target quantity (``TargetQuantityProposed``) and ladder (``LadderProposed``)."""
        now = self.clock.timestamp_ns()
        for name, signal in update.intents:
            reason = str(signal.metadata.get("reason", "strategy"))
            if signal.target_quantity is not None:
                self.bus.publish(
                    TargetQuantityProposed(
                        strategy=name,
                        symbol=signal.symbol,
                        quantity=signal.target_quantity,
                        reference_price=bar.close,
                        reason=reason,
                        ts_event=bar.ts_event,
                        ts_init=now,
                    )
                )
            ladder = signal.ladder
            if ladder is not None:
                self.bus.publish(
                    LadderProposed(
                        strategy=name,
                        symbol=signal.symbol,
                        prices=ladder.prices,
                        sides=tuple(None if side is None else OrderSide(side) for side in ladder.sides),
                        level_notional=ladder.level_notional,
                        max_inventory_levels=ladder.max_inventory_levels,
                        reason=reason,
                        ts_event=bar.ts_event,
                        ts_init=now,
                    )
                )

    def _publish_failures(self, update: ManagerUpdate) -> None:
        now = self.clock.timestamp_ns()
        for failure in update.failures:
            self.errors += 1
            self.bus.publish(
                StrategyError(
                    strategy=failure.strategy,
                    symbol=failure.symbol,
                    error_type=failure.error_type,
                    message=failure.message,
                    disabled=failure.disabled,
                    ts_event=failure.ts,
                    ts_init=now,
                )
            )
        first = update.failures[0]
        self.degrade(f"strategy {first.strategy} raised on {first.symbol}: {first.error_type}: {first.message}")

    def _publish_regime_change(self, bar: BarClosed, update: ManagerUpdate) -> None:
        assert update.regime_change is not None
        previous, state = update.regime_change
        self.bus.publish(
            RegimeChanged(
                symbol=bar.symbol,
                previous=previous,
                regime=state.regime,
                probabilities=state.as_dict(),
                volatility=state.volatility,
                ts_event=bar.ts_event,
                ts_init=self.clock.timestamp_ns(),
            )
        )
