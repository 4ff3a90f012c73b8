"""Hand-written fakes of the trading side, for the web layer's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from keel.integration.responses import EmergencyStopOutcome, ResumeOutcome, StrategySwitch


class FakeTradingSystem:
    """Operator commands of a running system that answer at once and are recorded in ``commands``."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, Any]] = []

    async def emergency_stop(self, reason: str, flatten: bool = False) -> EmergencyStopOutcome:
        self.commands.append(("emergency_stop", reason))
        return EmergencyStopOutcome(trading_state="HALTED", canceled_orders=0, flatten_orders=[], reason=reason)

    async def resume(self, reason: str) -> ResumeOutcome:
        self.commands.append(("resume", reason))
        return ResumeOutcome(trading_state="ACTIVE", reason=reason)

    async def update_risk_limits(self, limits: Mapping[str, float]) -> dict[str, float | int]:
        self.commands.append(("update_risk_limits", dict(limits)))
        return dict(limits)

    async def start_strategy(self, name: str) -> StrategySwitch:
        self.commands.append(("start_strategy", name))
        return StrategySwitch(name=name, enabled=True)

    async def stop_strategy(self, name: str) -> StrategySwitch:
        self.commands.append(("stop_strategy", name))
        return StrategySwitch(name=name, enabled=False)


class FakePublisher:
    """What :class:`~keel.web.snapshots.SnapshotService` needs of its publisher: the system and ``publish``."""

    def __init__(self, service: FakeTradingSystem) -> None:
        self.service = service
        self.published = 0

    def publish(self) -> None:
        self.published += 1


class AuditRecord:
    """An audit callback that keeps every (actor, action, details, request id) it is given."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, Any], str]] = []

    def __call__(self, actor: str, action: str, details: Mapping[str, Any], request_id: str) -> None:
        self.entries.append((actor, action, dict(details), request_id))


def run_what_was_handed_to(loop: asyncio.AbstractEventLoop) -> None:
    """Let a trading loop that was stuck (not running) run the commands handed to it, then close it."""

    async def drain() -> None:
        current = asyncio.current_task()
        await asyncio.gather(*(task for task in asyncio.all_tasks() if task is not current))

    loop.run_until_complete(drain())
    loop.close()


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeStagedChange:
    """A staged configuration change as the optimizer returns it."""

    def __init__(self, change_id: int, values: Mapping[str, Any]) -> None:
        self.change_id = change_id
        self.values = dict(values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "change_id": self.change_id,
            "action": "apply_tuned_config",
            "values": self.values,
            "previous": {},
            "split": None,
            "applied_at_ns": None,
        }


class FakeConfigChanges:
    """The optimizer's :class:`~keel.web.service.ConfigChanges`, recording what is staged in ``staged``."""

    def __init__(self) -> None:
        self.staged: list[dict[str, Any]] = []

    def stage(
        self, values: Mapping[str, Any], action: str = "apply_tuned_config", *, split: float | None = None
    ) -> FakeStagedChange:
        self.staged.append(dict(values))
        return FakeStagedChange(len(self.staged), values)

    def rollback(self) -> FakeStagedChange:
        return self.stage({})

    def conclude_split(self, keep: str) -> FakeStagedChange:
        return self.stage({})


class AwaitedConfigChanges:
    """:class:`~keel.web.service.ConfigChanges` called right away, as the awaited commands the app takes (one loop)."""

    def __init__(self, changes: Any) -> None:
        self.changes = changes

    async def stage(
        self, values: Mapping[str, Any], action: str = "apply_tuned_config", *, split: float | None = None
    ) -> Any:
        return self.changes.stage(values, action, split=split)

    async def rollback(self) -> Any:
        return self.changes.rollback()

    async def conclude_split(self, keep: str) -> Any:
        return self.changes.conclude_split(keep)
