"""ConfigOptimizer: apply tuned parameters to a running paper (or live) system, safely.

A change is validated in full before anything moves (the whole configuration
with the new values, each strategy's parameters, the risk limits), applied
only at a bar boundary (right after the strategies handled a closed bar, so
the next bar is the first to see it), written to the audit log with the
values it replaced, and can be rolled back the same way. Keys that can change
at run time are risk limits (``risk.<limit>``) and the parameters of a
running strategy (``strategy.parameters.<strategy>.<name>``); any other key
is refused with the reason that it needs a restart.

A change to strategy parameters can instead start an A/B split of capital:
each changed strategy runs as a :class:`CapitalSplit` of its current instance
(the old arm) and one with the new parameters (the new arm), its vote the
capital-weighted blend of the two (the new arm's share ``split``), so each
parameter set trades with its share of the strategy's capital. The split is
journaled (``start_ab_split``) and ends with :meth:`ConfigOptimizer.conclude_split`
(keep the new or the old parameters) or a rollback.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from keel.config import KeelConfig
from keel.core.messages import BarClosed
from keel.integration.orchestrator import TradingOrchestrator
from keel.optimization.space import apply_values, get_key
from keel.strategy_engine.base import BaseStrategy, StrategySignal, clip01, hold
from keel.strategy_engine.factory import StrategyFactory

_STRATEGY_PREFIX = "strategy.parameters."
_RISK_PREFIX = "risk."
_APPLY = "apply_tuned_config"
_SPLIT = "start_ab_split"
_ROLLBACK = "rollback_tuned_config"


class CapitalSplit(BaseStrategy):
    """Two parameter sets of one strategy, each voting with its share of the strategy's capital.

    Both arms see every bar; the view is ``(1 - share) * old + share * new``
    of their scores (direction times strength times confidence), so the
    position the strategy asks for is the sum of what each arm would ask for
    with its share of the capital. Confidence is the share-weighted
    confidence of the arms agreeing with the blend; stop-loss and take-profit
    come from the arm contributing most.

    Parameters
    ----------
    old, new
        The running instance and the one with the new parameters (same name).
    share
        The new arm's share of the capital, strictly between 0 and 1.
    """

    hold_means_flat: ClassVar[bool] = True  # the blend keeps each arm's last view: a flat blend is flat

    def __init__(self, old: BaseStrategy, new: BaseStrategy, share: float) -> None:
        if old.name != new.name:
            raise ValueError(f"an A/B split pairs two instances of one strategy, got {old.name} and {new.name}")
        if not 0.0 < share < 1.0:
            raise ValueError(f"the new configuration's capital share must lie strictly between 0 and 1, got {share}")
        super().__init__(old.name)
        self.parameters = {"old": dict(old.parameters), "new": dict(new.parameters), "new_share": share}
        self.old, self.new, self.share = old, new, share
        self.warmup_bars = max(old.warmup_bars, new.warmup_bars)
        self._views: dict[str, tuple[StrategySignal | None, StrategySignal | None, StrategySignal | None]] = {}

    def generate_signal(self, market_data: Mapping[str, Any], current_index: int) -> StrategySignal | None:
        """Run both arms on the bar and return their capital-weighted blend (the same object while unchanged)."""
        symbol = market_data["symbol"]
        old_view, new_view, blended = self._views.get(symbol, (None, None, None))
        old_signal = _new_view(self.old, self.old.generate_signal(market_data, current_index))
        new_signal = _new_view(self.new, self.new.generate_signal(market_data, current_index))
        if old_signal is not None:
            old_view = old_signal
        if new_signal is not None:
            new_view = new_signal
        if blended is None or old_signal is not None or new_signal is not None:
            blended = self._blend(symbol, old_view, new_view)
        self._views[symbol] = (old_view, new_view, blended)
        return blended

    def _blend(self, symbol: str, old: StrategySignal | None, new: StrategySignal | None) -> StrategySignal:
        arms = ((1.0 - self.share, old), (self.share, new))
        contributions = [0.0 if view is None else weight * view.score for weight, view in arms]
        score = sum(contributions)
        metadata = {"new_share": self.share, "old_score": contributions[0], "new_score": contributions[1]}
        if score == 0.0:
            return hold(symbol, **metadata)
        sign = 1 if score > 0.0 else -1
        agreeing = [(w, v) for w, v in arms if v is not None and v.direction == sign]
        confidence = sum(w * v.confidence for w, v in agreeing) / sum(w for w, _ in agreeing)
        leader = max(agreeing, key=lambda arm: arm[0] * arm[1].score * sign)[1]
        return StrategySignal(
            symbol,
            "BUY" if sign > 0 else "SELL",
            clip01(abs(score) / confidence),
            clip01(confidence),
            stop_loss=leader.stop_loss,
            take_profit=leader.take_profit,
            metadata=metadata,
        )


def _new_view(strategy: BaseStrategy, signal: StrategySignal | None) -> StrategySignal | None:
    """``signal``, or None when it is a bare HOLD of a strategy whose HOLD means "no new view"."""
    if signal is None or strategy.hold_means_flat:
        return signal
    bare = signal.action == "HOLD" and signal.strength == 0.0 and signal.confidence == 0.0
    return None if bare else signal


@dataclass(slots=True)
class ConfigChange:
    """One staged or applied change: the new values and the ones they replaced."""

    change_id: int
    values: dict[str, Any]
    previous: dict[str, Any]
    action: str
    split: float | None = None
    applied_at_ns: int | None = None
    done: asyncio.Future[ConfigChange] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Return the change as JSON-able data (for the control API)."""
        return {
            "change_id": self.change_id,
            "action": self.action,
            "values": self.values,
            "previous": self.previous,
            "split": self.split,
            "applied_at_ns": self.applied_at_ns,
        }


class ConfigOptimizer:
    """Stage validated configuration changes and apply them at the next bar boundary.

    Parameters
    ----------
    orchestrator
        The running system (its pipeline, risk controller and audit log).
    actor
        Who the audit log names as the author of the changes.
    """

    def __init__(self, orchestrator: TradingOrchestrator, actor: str = "config_optimizer") -> None:
        self.orchestrator = orchestrator
        self.actor = actor
        self.config: KeelConfig = orchestrator.config
        self.pending: list[ConfigChange] = []
        self.history: list[ConfigChange] = []
        self.split: ConfigChange | None = None
        self._next_id = 1
        orchestrator.pipeline.bus.subscribe(BarClosed, self._on_bar, name="optimization.config_optimizer")

    def stage(self, values: Mapping[str, Any], action: str = _APPLY, *, split: float | None = None) -> ConfigChange:
        """Validate ``values`` (dotted keys) and queue them for the next bar boundary.

        Parameters
        ----------
        values
            Dotted keys (``strategy.parameters.<strategy>.<name>``, ``risk.<limit>``) and their new values.
        action
            What the journal calls the change.
        split
            Start an A/B split instead of replacing: the new parameters get this
            share of each changed strategy's capital, the old ones the rest
            (strategy parameters only).

        Raises
        ------
        ValueError
            If a key cannot change at run time, the values fail validation, or
            a split is asked for risk limits, with a share outside (0, 1) or
            while one runs; nothing is queued then.
        """
        values = dict(values)
        self._check_keys(values)
        if split is not None:
            self._check_split(values, split)
            action = _SPLIT
        try:
            candidate = apply_values(self.config, values)
            self._strategies_for(candidate, values)
        except (TypeError, KeyError) as error:
            raise ValueError(f"invalid tuned values: {error}") from error
        risk = self._risk_changes(values)
        self.orchestrator.pipeline.risk.limits.updated(risk)
        change = ConfigChange(self._next_id, values, self._current(values), action, split)
        self._next_id += 1
        self.pending.append(change)
        return change

    async def apply(self, values: Mapping[str, Any], *, split: float | None = None) -> ConfigChange:
        """Stage ``values`` (or an A/B split) and wait until a bar boundary applied them."""
        change = self.stage(values, split=split)
        change.done = asyncio.get_running_loop().create_future()
        return await change.done

    def rollback(self) -> ConfigChange:
        """Stage the values the last applied change (or the running split) replaced, journaled as a rollback.

        Raises
        ------
        ValueError
            If no change was applied.
        """
        applied = [c for c in self.history if c.action in (_APPLY, _SPLIT)]
        if not applied:
            raise ValueError("no applied change to roll back")
        last = applied[-1]
        self.history.remove(last)
        return self.stage(last.previous, action=_ROLLBACK)

    def conclude_split(self, keep: Literal["new", "old"]) -> ConfigChange:
        """End the running A/B split at the next bar boundary, keeping the ``new`` or the ``old`` parameters.

        Raises
        ------
        ValueError
            If no split runs, or ``keep`` is neither ``new`` nor ``old``.
        """
        if self.split is None:
            raise ValueError("no A/B split is running")
        if keep not in ("new", "old"):
            raise ValueError(f"keep must be new or old, got {keep!r}")
        running = self.split
        return self.stage(running.values if keep == "new" else running.previous, action=f"conclude_ab_split_{keep}")

    def _check_split(self, values: Mapping[str, Any], share: float) -> None:
        if self.split is not None or any(c.split is not None for c in self.pending):
            raise ValueError("an A/B split is already running: conclude it or roll it back first")
        if not 0.0 < share < 1.0:
            raise ValueError(f"the new configuration's capital share must lie strictly between 0 and 1, got {share}")
        risk = sorted(key for key in values if not key.startswith(_STRATEGY_PREFIX))
        if risk:
            raise ValueError(f"{risk[0]}: an A/B split covers strategy parameters only (risk limits are account-wide)")

    def _check_keys(self, values: Mapping[str, Any]) -> None:
        limits = {f.name for f in dataclasses.fields(self.orchestrator.pipeline.risk.limits)}
        limits &= set(self.config.risk.model_dump())
        running = {s.name for s in self._manager().strategies}
        configuration = self.config.model_dump()
        for key in values:
            get_key(configuration, key)
            if key.startswith(_RISK_PREFIX) and key.removeprefix(_RISK_PREFIX) in limits:
                continue
            if key.startswith(_STRATEGY_PREFIX) and key.split(".")[2] in running:
                continue
            raise ValueError(f"{key} cannot change while the system runs (it needs a restart)")

    def _manager(self) -> Any:
        return self.orchestrator.pipeline.strategy.manager

    def _risk_changes(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {k.removeprefix(_RISK_PREFIX): v for k, v in values.items() if k.startswith(_RISK_PREFIX)}

    def _strategies_for(self, candidate: KeelConfig, values: Mapping[str, Any]) -> list[Any]:
        names = sorted({key.split(".")[2] for key in values if key.startswith(_STRATEGY_PREFIX)})
        parameters = candidate.strategy.parameters.model_dump()
        return [StrategyFactory.create_strategy(name, parameters[name]) for name in names]

    def _current(self, values: Mapping[str, Any]) -> dict[str, Any]:
        current = self.config.model_dump()
        limits = self.orchestrator.pipeline.risk.limits
        previous = {}
        for key in values:
            if key.startswith(_RISK_PREFIX):
                previous[key] = getattr(limits, key.removeprefix(_RISK_PREFIX))
                continue
            node: Any = current
            for part in key.split("."):
                node = node[part]
            previous[key] = node
        return previous

    def _on_bar(self, bar: BarClosed) -> None:
        while self.pending:
            self._apply(self.pending.pop(0), bar.ts_event)

    def _apply(self, change: ConfigChange, ts: int) -> None:
        candidate = apply_values(self.config, change.values)
        for strategy in self._strategies_for(candidate, change.values):
            self._manager().replace_strategy(self._arranged(strategy, change.split))
        risk = self._risk_changes(change.values)
        if risk:
            self.orchestrator.set_risk_limits(risk)
        if change.split is None:
            self.config = candidate
        self.split = change if change.split is not None else None
        change.applied_at_ns = ts
        self.history.append(change)
        details = {"change_id": change.change_id, "values": change.values, "previous": change.previous, "bar_ts": ts}
        if change.split is not None:
            details["new_share"] = change.split
        self.orchestrator.record_operator_action(self.actor, change.action, details)
        if change.done is not None and not change.done.done():
            change.done.set_result(change)

    def _arranged(self, strategy: BaseStrategy, split: float | None) -> BaseStrategy:
        """The instance to run: ``strategy`` itself, or a split of the running one and ``strategy``."""
        if split is None:
            return strategy
        running = next(s for s in self._manager().strategies if s.name == strategy.name)
        return CapitalSplit(running, strategy, split)
