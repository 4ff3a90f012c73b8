"""Equal-weight allocation of the strategies' directional views.

The walking skeleton's portfolio construction: each symbol of the universe
gets ``gross_exposure / N`` of equity, long when its latest signal is BUY,
short when SELL, flat before its first signal or on HOLD. A new allocation is
proposed whenever a signal changes a symbol's direction, and on the rebalance
schedule (a clock timer), so positions that drifted with prices are brought
back to their targets.

With the shared cost model a signal takes its direction only when the edge
it implies (``information_coefficient x`` the model's per-bar volatility ``x
strength x confidence``, as the optimizer reads a view) over ``holding_bars``
covers the model's round trip of the symbol; a weaker one counts as flat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.costs import CostModel
from keel.core.messages import AllocationProposed, Rebalance, SignalAction, SignalGenerated
from keel.core.time_events import TimeEvent

_DIRECTION = {SignalAction.BUY: 1, SignalAction.SELL: -1, SignalAction.HOLD: 0}


class EqualWeightAllocator(Component):
    """Turn signals into equal signed weights over a fixed universe.

    Parameters
    ----------
    symbols
        The universe; each symbol's weight is ``gross_exposure / len(symbols)``.
    gross_exposure
        Sum of absolute weights when every symbol has a direction (1.0 = 1x equity).
    rebalance_interval_ns
        Time between scheduled rebalances, aligned to the epoch; 0 for none.
    costs
        The shared cost model; None: every BUY or SELL is taken.
    information_coefficient, holding_bars
        How a view becomes an edge per bar, and the bars it is expected to last.
    bus, clock
        The event bus and the clock.

    Attributes
    ----------
    views_not_worth_costs : int
        BUY and SELL signals taken as flat because their edge did not pay the round trip.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        gross_exposure: float,
        bus: EventBus,
        clock: Clock,
        *,
        rebalance_interval_ns: int = 0,
        costs: CostModel | None = None,
        information_coefficient: float = 0.05,
        holding_bars: float = 60.0,
    ) -> None:
        super().__init__("portfolio.equal_weight", bus, clock)
        if not symbols:
            raise ValueError("the allocation universe is empty")
        if not gross_exposure > 0:
            raise ValueError(f"gross exposure must be positive, got {gross_exposure}")
        self.symbols = tuple(symbols)
        self.weight = gross_exposure / len(self.symbols)
        self.rebalance_interval_ns = rebalance_interval_ns
        self.costs = costs
        self.information_coefficient = information_coefficient
        self.holding_bars = holding_bars
        self._direction = dict.fromkeys(self.symbols, 0)
        self.views_not_worth_costs = 0

    def on_start(self) -> None:
        """Subscribe to signals and rebalance commands; start the rebalance timer."""
        self.bus.subscribe(SignalGenerated, self.on_signal, name=self.name)
        self.bus.register(Rebalance, self.on_rebalance, name=self.name)
        if self.rebalance_interval_ns:
            self.clock.set_timer(f"{self.name}.rebalance", self.rebalance_interval_ns, self._rebalance_due)

    def on_stop(self) -> None:
        """Stop the rebalance timer."""
        self.clock.cancel_timer(f"{self.name}.rebalance")

    def _rebalance_due(self, event: TimeEvent) -> None:
        self.bus.publish(Rebalance(reason="scheduled", ts_event=event.ts, ts_init=self.clock.timestamp_ns()))

    def on_rebalance(self, command: Rebalance) -> None:
        """Propose the current weights again, so drifted positions go back to target."""
        self._propose(f"rebalance ({command.reason})", command.ts_event)

    def on_signal(self, signal: SignalGenerated) -> None:
        """Record the signal's direction; propose weights if it changed."""
        if signal.symbol not in self._direction:
            return
        direction = _DIRECTION[signal.action]
        if direction != 0 and self.costs is not None and not self._pays(self.costs, signal):
            self.views_not_worth_costs += 1
            direction = 0
        if self._direction[signal.symbol] == direction:
            return
        self._direction[signal.symbol] = direction
        self._propose(f"{signal.strategy} {signal.action.value} {signal.symbol}", signal.ts_event)

    def _pays(self, costs: CostModel, signal: SignalGenerated) -> bool:
        """Return whether the view's edge over the holding period covers the round trip (impact left to risk)."""
        score = signal.strength * signal.confidence
        edge = self.information_coefficient * costs.volatility(signal.symbol) * score
        return costs.worth_trading(signal.symbol, 0.0, edge, self.holding_bars)

    def _propose(self, reason: str, ts: int) -> None:
        self.bus.publish(
            AllocationProposed(weights=self.weights(), reason=reason, ts_event=ts, ts_init=self.clock.timestamp_ns())
        )

    def weights(self) -> dict[str, float]:
        """Return the current target weights."""
        return {s: d * self.weight for s, d in self._direction.items()}

    def restore_weights(self, weights: Mapping[str, float]) -> None:
        """Put back the weights last proposed before a restart (nothing is published)."""
        self._direction = {s: (w > 0) - (w < 0) for s, w in weights.items()}
