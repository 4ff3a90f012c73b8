"""SnapshotService: operator commands handed to the trading loop from the web server's thread."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fakes import FakeConfigChanges, FakePublisher, FakeTradingSystem, run_what_was_handed_to

from keel.web import ConfigChangesOnLoop, SnapshotService
from keel.web.service import CommandNotConfirmed

COMMANDS: list[tuple[Callable[[SnapshotService], Awaitable[Any]], tuple[str, Any]]] = [
    (lambda s: s.emergency_stop("stuck loop"), ("emergency_stop", "stuck loop")),
    (lambda s: s.resume("checked"), ("resume", "checked")),
    (lambda s: s.update_risk_limits({"max_leverage": 2.0}), ("update_risk_limits", {"max_leverage": 2.0})),
    (lambda s: s.start_strategy("ma_cross"), ("start_strategy", "ma_cross")),
    (lambda s: s.stop_strategy("ma_cross"), ("stop_strategy", "ma_cross")),
]


@pytest.mark.parametrize(("command", "recorded"), COMMANDS)
def test_a_command_the_trading_loop_does_not_confirm_in_time_leaves_the_web_loop_free_and_still_runs(
    command: Callable[[SnapshotService], Awaitable[Any]], recorded: tuple[str, Any]
) -> None:
    # Arrange: a trading loop that does not run while the command waits (a stuck loop)
    system = FakeTradingSystem()
    publisher = FakePublisher(system)
    stuck = asyncio.new_event_loop()
    service = SnapshotService(publisher, stuck, command_timeout_seconds=0.05)  # type: ignore[arg-type]
    served: list[str] = []

    async def send_command() -> None:
        with pytest.raises(CommandNotConfirmed):
            await command(service)
        served.append("command answered")

    async def another_request() -> None:
        served.append("another request")

    async def web_loop() -> None:
        await asyncio.gather(send_command(), another_request())

    # Act
    asyncio.run(web_loop())
    run_what_was_handed_to(stuck)

    # Assert: the web loop served another request while the command waited; the command ran once the loop did
    assert served == ["another request", "command answered"]
    assert system.commands == [recorded]
    assert publisher.published == 1


def test_a_confirmed_command_returns_the_trading_loops_outcome() -> None:
    # Arrange
    system = FakeTradingSystem()
    publisher = FakePublisher(system)

    async def scenario() -> dict[str, float | int]:
        service = SnapshotService(publisher, asyncio.get_running_loop())  # type: ignore[arg-type]
        return await service.update_risk_limits({"max_leverage": 2.0})

    # Act
    outcome = asyncio.run(scenario())

    # Assert
    assert outcome == {"max_leverage": 2.0}
    assert publisher.published == 1


def test_a_config_change_the_trading_loop_does_not_confirm_in_time_leaves_the_web_loop_free_and_still_runs() -> None:
    # Arrange: a trading loop that does not run while the change waits (a stuck loop)
    changes = FakeConfigChanges()
    stuck = asyncio.new_event_loop()
    on_loop = ConfigChangesOnLoop(changes, stuck, timeout_seconds=0.05)
    served: list[str] = []

    async def stage() -> None:
        with pytest.raises(CommandNotConfirmed):
            await on_loop.stage({"risk.max_leverage": 2.0})
        served.append("change answered")

    async def another_request() -> None:
        served.append("another request")

    async def web_loop() -> None:
        await asyncio.gather(stage(), another_request())

    # Act
    asyncio.run(web_loop())
    run_what_was_handed_to(stuck)

    # Assert
    assert served == ["another request", "change answered"]
    assert changes.staged == [{"risk.max_leverage": 2.0}]
