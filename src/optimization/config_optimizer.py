"""ConfigOptimizer: apply tuned parameters to a running paper (or live) system, safely.

A change is validated in full before anything moves (the whole configuration
with the new values, each strategy's parameters, the risk limits), applied
only at a bar boundary (right after the strategies handled a closed bar, so
the next bar is the first to see it), written to the audit log with the
values it replaced, and can be rolled back the same way. Keys that can change
at run time are risk limits (``risk.<limit>``) and the parameters of a
running strategy (``strategy.parameters.<strategy>.<name>``); any other key
is refused with the reason that it needs a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.config import KeelConfig
from keel.core.messages import BarClosed
from keel.integration.orchestrator import TradingOrchestrator
from keel.optimization.space import apply_values
from keel.strategy_engine.factory import StrategyFactory

_STRATEGY_PREFIX = "strategy.parameters."
_RISK_PREFIX = "risk."


@dataclass(slots=True)
class ConfigChange:
    """One staged or applied change: the new values and the ones they replaced."""

    change_id: int
    values: dict[str, Any]
    previous: dict[str, Any]
    action: str
    applied_at_ns: int | None = None
    done: asyncio.Future[ConfigChange] | None = field(default=None, repr=False)


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
        self._next_id = 1
        orchestrator.pipeline.bus.subscribe(BarClosed, self._on_bar, name="optimization.config_optimizer")

    def stage(self, values: Mapping[str, Any], action: str = "apply_tuned_config") -> ConfigChange:
        """Validate ``values`` (dotted keys) and queue them for the next bar boundary.

        Raises
        ------
        ValueError
            If a key cannot change at run time, or the values fail validation; nothing is queued then.
        """
        values = dict(values)
        self._check_keys(values)
        candidate = apply_values(self.config, values)
        self._strategies_for(candidate, values)
        risk = self._risk_changes(values)
        self.orchestrator.pipeline.risk.limits.updated(risk)
        change = ConfigChange(self._next_id, values, self._current(values), action)
        self._next_id += 1
        self.pending.append(change)
        return change

    async def apply(self, values: Mapping[str, Any]) -> ConfigChange:
        """Stage ``values`` and wait until a bar boundary applied them."""
        change = self.stage(values)
        change.done = asyncio.get_running_loop().create_future()
        return await change.done

    def rollback(self) -> ConfigChange:
        """Stage the values the last applied change replaced (journaled as a rollback).

        Raises
        ------
        ValueError
            If no change was applied.
        """
        applied = [c for c in self.history if c.action == "apply_tuned_config"]
        if not applied:
            raise ValueError("no applied change to roll back")
        last = applied[-1]
        self.history.remove(last)
        return self.stage(last.previous, action="rollback_tuned_config")

    def _check_keys(self, values: Mapping[str, Any]) -> None:
        limits = {f.name for f in dataclasses.fields(self.orchestrator.pipeline.risk.limits)}
        limits &= set(self.config.risk.model_dump())
        running = {s.name for s in self._manager().strategies}
        for key in values:
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
            self._manager().replace_strategy(strategy)
        risk = self._risk_changes(change.values)
        if risk:
            self.orchestrator.update_risk_limits(risk)
        self.config = candidate
        change.applied_at_ns = ts
        self.history.append(change)
        self.orchestrator.record_operator_action(
            self.actor,
            change.action,
            {"change_id": change.change_id, "values": change.values, "previous": change.previous, "bar_ts": ts},
        )
        if change.done is not None and not change.done.done():
            change.done.set_result(change)
