"""Telegram against a fake Bot API on 127.0.0.1: commands from allowed and foreign chats, 429, timeouts, batching."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from keel.config import Secret, TelegramConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.errors import ConfigurationError
from keel.core.fsm import TradingState
from keel.core.messages import (
    HealthChanged,
    LiquiditySide,
    OrderFilled,
    ReconciliationCompleted,
    SystemHealth,
    TradingStateChanged,
)
from keel.core.orders import OrderSide
from keel.notifications import Outbox, TelegramBot, TelegramNotifier, start_telegram
from kit.fake_bot_api import ALLOWED, FOREIGN, TOKEN, callback, fake_api, message

SECOND = 1002
"""Another allowed chat, for the notifications to several chats."""


@dataclass
class Status:
    health: str = "HEALTHY"
    trading_state: str = "ACTIVE"
    equity: float = 10_250.5
    pnl: float = 250.5
    current_roi: float = 0.02505
    drawdown: float = 0.001


@dataclass
class Position:
    symbol: str
    quantity: str
    notional: str


@dataclass
class Outcome:
    trading_state: str


@dataclass
class Desk:
    """The operations the bot commands, recording what it was asked."""

    stops: list[str] = field(default_factory=list)
    resumes: list[str] = field(default_factory=list)
    status_fails: bool = False
    unconfirmed: bool = False

    def status(self) -> Status:
        if self.status_fails:
            raise RuntimeError("no snapshot yet")
        return Status()

    def positions(self) -> list[Position]:
        return [Position("BTCUSDT", "0.010", "1030.00")]

    def orders(self, open_only: bool = False) -> list[Any]:
        return []

    async def emergency_stop(self, reason: str, flatten: bool = False) -> Outcome:
        self.stops.append(reason)
        if self.unconfirmed:
            # As the web service's CommandNotConfirmed: handed to a trading loop that did not answer in time.
            raise TimeoutError("emergency_stop was sent to the trading loop but not confirmed within 10 s")
        return Outcome("HALTED")

    async def resume(self, reason: str) -> Outcome:
        self.resumes.append(reason)
        return Outcome("ACTIVE")


class Sleeper:
    """Records the waits the bot asks for instead of waiting; sets ``stop`` (when given) at the first."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.stop: asyncio.Event | None = None

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.stop is not None:
            self.stop.set()


class HeldSleeper(Sleeper):
    """Records the waits the bot asks for and holds each until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await self.release.wait()


class FakeTime:
    """The bot's clock: seconds the test sets."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


def make_bot(
    base_url: str,
    outbox: Outbox,
    desk: Desk,
    audit: list,
    timeout: float = 5.0,
    chats: tuple[int, ...] = (ALLOWED,),
    sleeper: Sleeper | None = None,
    **options: Any,
) -> tuple[TelegramBot, Sleeper]:
    sleeper = Sleeper() if sleeper is None else sleeper
    bot = TelegramBot(
        Secret(TOKEN),
        chats,
        outbox,
        desk,
        lambda actor, action, details, request_id: audit.append((actor, action, dict(details), request_id)),
        base_url=base_url,
        min_interval=1.0,
        timeout=timeout,
        sleep=sleeper,
        **options,
    )
    return bot, sleeper


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


def test_commands_from_the_allowed_chat_are_obeyed_and_audited_a_foreign_chats_refused() -> None:
    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            desk, audit = Desk(), []
            bot, _ = make_bot(url, Outbox(), desk, audit)
            api.updates = [
                message(1, ALLOWED, "/status"),
                message(2, FOREIGN, "/stop"),
                message(3, FOREIGN, "/resume"),
                message(4, ALLOWED, "/positions"),
                message(5, ALLOWED, "/resume after the fix"),
            ]
            handled = await bot.poll()
            again = await bot.poll()
            await bot.close()
            return api, desk, audit, bot, handled, again

    # Act
    api, desk, audit, bot, handled, again = run(scenario)

    # Assert
    assert (handled, again) == (5, 0)
    assert [s["chat"] for s in api.sent] == [ALLOWED, ALLOWED, ALLOWED]
    assert api.sent[0]["text"] == "health HEALTHY, trading ACTIVE, equity 10250.50, P&L 250.50"
    assert api.sent[1]["text"] == "BTCUSDT 0.010 notional 1030.00"
    assert desk.resumes == ["after the fix"] and desk.stops == []
    assert [(a[0], a[1]) for a in audit] == [
        ("telegram:1001", "telegram_status"),
        ("telegram:6666", "telegram_refused"),
        ("telegram:6666", "telegram_refused"),
        ("telegram:1001", "telegram_positions"),
        ("telegram:1001", "telegram_resume"),
    ]
    assert (bot.statistics.obeyed, bot.statistics.refused) == (3, 2)
    assert TOKEN not in repr(bot) and TOKEN not in json.dumps(audit)


def test_stop_asks_for_confirmation_and_only_the_button_of_that_chat_stops() -> None:
    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            desk, audit = Desk(), []
            bot, _ = make_bot(url, Outbox(), desk, audit)
            api.updates = [message(1, ALLOWED, "/stop")]
            await bot.poll()
            asked = list(desk.stops)
            data = json.loads(api.sent[0]["markup"])["inline_keyboard"][0][0]["callback_data"]
            api.updates = [callback(2, FOREIGN, data), callback(3, ALLOWED, "stop:forged"), callback(4, ALLOWED, data)]
            await bot.poll()
            await bot.close()
            return api, desk, audit, asked

    # Act
    api, desk, audit, asked = run(scenario)

    # Assert
    assert asked == []
    assert desk.stops == ["telegram emergency stop"]
    assert [a[1] for a in audit] == ["telegram_stop", "telegram_refused", "telegram_refused", "emergency_stop"]
    assert api.sent[-1]["text"] == "stopped: trading HALTED"
    assert api.answered == ["cb2", "cb3", "cb4"]


def test_a_stop_the_trading_loop_does_not_confirm_in_time_says_so_and_what_to_check() -> None:
    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            desk = Desk(unconfirmed=True)
            bot, _ = make_bot(url, Outbox(), desk, [])
            api.updates = [message(1, ALLOWED, "/stop")]
            await bot.poll()
            data = json.loads(api.sent[0]["markup"])["inline_keyboard"][0][0]["callback_data"]
            api.updates = [callback(2, ALLOWED, data)]
            await bot.poll()
            await bot.close()
            return api, desk

    # Act
    api, desk = run(scenario)

    # Assert
    assert desk.stops == ["telegram emergency stop"]
    assert api.sent[-1]["text"] == (
        "emergency_stop was sent to the trading loop but not confirmed within 10 s: "
        "check /status before sending it again"
    )


def test_a_rate_limited_reply_waits_its_retry_after_and_polling_goes_on() -> None:
    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, sleeper = make_bot(url, Outbox(), Desk(), [])
            api.send_mode = "429"
            api.updates = [message(1, ALLOWED, "/status")]
            handled = await bot.poll()
            again = await bot.poll()
            await bot.close()
            return api, bot, sleeper, handled, again

    # Act
    api, bot, sleeper, handled, again = run(scenario)

    # Assert
    assert (handled, again) == (1, 0)
    assert [s["text"] for s in api.sent] == ["health HEALTHY, trading ACTIVE, equity 10250.50, P&L 250.50"]
    assert sleeper.waits == [7.0] and bot.statistics.rate_limited == 1


def test_a_rate_limited_poll_waits_its_retry_after_not_the_batching_window() -> None:
    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, sleeper = make_bot(url, Outbox(), Desk(), [])
            api.poll_rate_limits = 1
            sleeper.stop = asyncio.Event()
            await bot.run(sleeper.stop)
            await bot.close()
            return bot, sleeper

    # Act
    bot, sleeper = run(scenario)

    # Assert
    assert sleeper.waits == [7.0]
    assert (bot.statistics.rate_limited, bot.statistics.errors) == (1, 0)


def test_a_failing_command_or_reply_is_counted_and_the_next_updates_are_still_handled() -> None:
    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, _ = make_bot(url, Outbox(), Desk(status_fails=True), [])
            api.failing_chats = {ALLOWED: 1}
            api.updates = [
                message(1, ALLOWED, "/help"),
                message(2, ALLOWED, "/status"),
                message(3, ALLOWED, "/positions"),
            ]
            handled = await bot.poll()
            again = await bot.poll()
            await bot.close()
            return api, bot, handled, again

    # Act
    api, bot, handled, again = run(scenario)

    # Assert
    assert (handled, again) == (3, 0)  # the failed updates are not fetched again
    assert [s["text"] for s in api.sent] == ["command failed: RuntimeError", "BTCUSDT 0.010 notional 1030.00"]
    assert (bot.statistics.failed_replies, bot.statistics.failed_commands) == (1, 1)


def test_a_reply_that_does_not_go_through_is_queued_for_its_chat_and_sent_with_the_next_flush() -> None:
    # Arrange: the chat's next send fails (502), the one after goes through
    outbox = Outbox()

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, _ = make_bot(url, outbox, Desk(), [])
            api.failing_chats = {ALLOWED: 1}
            api.updates = [message(1, ALLOWED, "/positions")]
            await bot.poll()
            sent_at_once = list(api.sent)
            outbox.put("fill BTCUSDT BUY 0.001 @ 95000.0")
            flushed = await bot.flush()
            await bot.close()
            return api, bot, sent_at_once, flushed

    # Act
    api, bot, sent_at_once, flushed = run(scenario)

    # Assert: nothing lost; the reply comes first, marked late, then the notification
    assert sent_at_once == [] and flushed
    assert [s["text"] for s in api.sent] == [
        "late reply: BTCUSDT 0.010 notional 1030.00\nfill BTCUSDT BUY 0.001 @ 95000.0"
    ]
    assert (bot.statistics.failed_replies, bot.statistics.undeliverable_replies) == (1, 0)


def test_a_stop_prompt_that_does_not_go_through_is_queued_asking_to_send_stop_again() -> None:
    # Arrange: the confirmation prompt's send fails (502); its button cannot follow it in a batched message
    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            desk = Desk()
            bot, _ = make_bot(url, Outbox(), desk, [])
            api.failing_chats = {ALLOWED: 1}
            api.updates = [message(1, ALLOWED, "/stop")]
            await bot.poll()
            await bot.flush()
            await bot.close()
            return api, desk

    # Act
    api, desk = run(scenario)

    # Assert
    (late,) = api.sent
    assert late["text"].startswith("late reply: Emergency stop:") and "send the command again" in late["text"]
    assert late["markup"] is None and desk.stops == []


@pytest.mark.parametrize("refusing", ["blocked_chats", "missing_chats"], ids=["403-blocked", "400-chat-not-found"])
def test_a_reply_to_a_chat_that_refuses_the_bot_is_counted_as_undeliverable_and_the_chat_set_aside(
    refusing: str,
) -> None:
    # Arrange
    outbox, time = Outbox(), FakeTime()

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, _ = make_bot(url, outbox, Desk(), [], now=time, unreachable_retry=300.0)
            setattr(api, refusing, {ALLOWED})
            api.updates = [message(1, ALLOWED, "/status")]
            await bot.poll()
            outbox.put("fill BTCUSDT BUY 0.001 @ 95000.0")
            flushed = await bot.flush()
            await bot.close()
            return api, bot, flushed

    # Act
    api, bot, flushed = run(scenario)

    # Assert: the bot's statistics say a reply could not be delivered; the chat is tried again slowly, not hammered
    assert bot.statistics.undeliverable_replies == 1 and bot.statistics.failed_replies == 1
    assert bot.statistics.unreachable == 1
    assert api.refused == [ALLOWED] and not flushed


def test_a_burst_of_fills_is_one_message_and_a_429_waits_its_retry_after() -> None:
    # Arrange
    bus, clock, outbox = EventBus(), SimulatedClock(1_746_403_200_000_000_000), Outbox(capacity=100)
    TelegramNotifier(outbox, bus, clock, lambda: "daily P&L").start()
    for i in range(5):
        bus.publish(fill(i))
    bus.publish(TradingStateChanged(previous=TradingState.ACTIVE, state=TradingState.HALTED, reason="drawdown",
                                    ts_event=1, ts_init=1))  # fmt: skip
    bus.drain()

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, sleeper = make_bot(url, outbox, Desk(), [])
            api.send_mode = "429"
            sent = await bot.flush()
            await bot.close()
            return api, bot, sleeper, sent

    # Act
    api, bot, sleeper, sent = run(scenario)

    # Assert
    assert sent and len(api.sent) == 1
    assert api.sent[0]["text"].split("\n") == [  # the control lane is delivered first
        "trading ACTIVE -> HALTED: drawdown",
        *(f"fill BTCUSDT BUY 0.00{i + 1} @ 95000.{i}" for i in range(5)),
    ]
    assert sleeper.waits == [7.0] and bot.statistics.rate_limited == 1
    assert len(outbox) == 0


def test_a_flush_waits_out_every_429_in_a_row() -> None:
    # Arrange
    outbox = Outbox()
    outbox.put("fill BTCUSDT BUY 0.001 @ 95000.0")

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, sleeper = make_bot(url, outbox, Desk(), [])
            api.rate_limits = 3
            sent = await bot.flush()
            await bot.close()
            return api, bot, sleeper, sent

    # Act
    api, bot, sleeper, sent = run(scenario)

    # Assert
    assert sent and [s["text"] for s in api.sent] == ["fill BTCUSDT BUY 0.001 @ 95000.0"]
    assert sleeper.waits == [7.0, 7.0, 7.0] and bot.statistics.rate_limited == 3
    assert len(outbox) == 0


@pytest.mark.parametrize(
    ("max_attempts", "max_wait", "waits"),
    [(3, 60.0, [7.0, 7.0]), (5, 10.0, [7.0])],
    ids=["attempts", "total-wait"],
)
def test_a_flush_still_rate_limited_past_its_bound_keeps_the_batch_for_the_next(
    max_attempts: int, max_wait: float, waits: list[float]
) -> None:
    # Arrange
    outbox = Outbox()
    outbox.put("fill BTCUSDT BUY 0.001 @ 95000.0")

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, sleeper = make_bot(url, outbox, Desk(), [], max_attempts=max_attempts, max_wait=max_wait)
            api.rate_limits = 100
            first = await bot.flush()
            sent_first = list(api.sent)
            api.rate_limits = 0
            second = await bot.flush()
            await bot.close()
            return api, bot, sleeper, first, sent_first, second

    # Act
    api, bot, sleeper, first, sent_first, second = run(scenario)

    # Assert
    assert not first and sent_first == []
    assert sleeper.waits == waits and bot.statistics.rate_limit_give_ups == 1
    assert second and [s["text"] for s in api.sent] == ["fill BTCUSDT BUY 0.001 @ 95000.0"]


def test_a_chat_waiting_out_a_429_holds_only_itself_the_other_chats_get_the_same_flush() -> None:
    # Arrange: the first chat is answered 429 (retry after 7 s); its wait is held until the test releases it
    outbox = Outbox()
    outbox.put("fill BTCUSDT BUY 0.001 @ 95000.0")

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            sleeper = HeldSleeper()
            bot, _ = make_bot(url, outbox, Desk(), [], chats=(ALLOWED, SECOND), sleeper=sleeper)
            api.rate_limited_chats = {ALLOWED: 1}
            flushing = asyncio.create_task(bot.flush())
            await asyncio.wait_for(api.received.wait(), timeout=10)
            during_the_wait = [(s["chat"], s["text"]) for s in api.sent]
            sleeper.release.set()
            flushed = await flushing
            await bot.close()
            return api, sleeper, during_the_wait, flushed

    # Act
    api, sleeper, during_the_wait, flushed = run(scenario)

    # Assert: the second chat got the line while the first waited; the first got it once its wait ended
    assert during_the_wait == [(SECOND, "fill BTCUSDT BUY 0.001 @ 95000.0")]
    assert sleeper.waits == [7.0]
    assert flushed and [s["chat"] for s in api.sent] == [SECOND, ALLOWED]


def test_a_batch_a_chat_missed_is_sent_again_to_that_chat_only() -> None:
    # Arrange
    outbox = Outbox()
    outbox.put("fill BTCUSDT BUY 0.001 @ 95000.0")

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, _ = make_bot(url, outbox, Desk(), [], chats=(ALLOWED, SECOND))
            api.failing_chats = {SECOND: 1}
            first = await bot.flush()
            outbox.put("fill BTCUSDT BUY 0.002 @ 95000.1")
            second = await bot.flush()
            third = await bot.flush()
            await bot.close()
            return api, bot, (first, second, third)

    # Act
    api, bot, flushed = run(scenario)

    # Assert
    assert flushed == (False, True, True)
    for chat in (ALLOWED, SECOND):
        assert [s["text"] for s in api.sent if s["chat"] == chat] == [
            "fill BTCUSDT BUY 0.001 @ 95000.0",
            "fill BTCUSDT BUY 0.002 @ 95000.1",
        ]
    assert bot.statistics.sent == 4 and len(outbox) == 0


@pytest.mark.parametrize("refusing", ["blocked_chats", "missing_chats"], ids=["403-blocked", "400-chat-not-found"])
def test_a_chat_that_refuses_the_bot_is_retried_slowly_and_the_other_chats_get_every_line(refusing: str) -> None:
    # Arrange
    outbox, time = Outbox(capacity=2), FakeTime()

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, _ = make_bot(url, outbox, Desk(), [], chats=(ALLOWED, SECOND), now=time, unreachable_retry=300.0)
            setattr(api, refusing, {SECOND})
            flushed = []
            for i in range(5):
                outbox.put(f"line {i}")
                flushed.append(await bot.flush())
                time.seconds += 60.0
            refused = list(api.refused)
            setattr(api, refusing, set())  # the chat takes the bot back; its slow retry is due at 300 s
            flushed += [await bot.flush(), await bot.flush()]
            await bot.close()
            return api, bot, flushed, refused

    # Act
    api, bot, flushed, refused = run(scenario)

    # Assert
    assert flushed == [False] * 5 + [True, True]
    assert [s["text"] for s in api.sent if s["chat"] == ALLOWED] == [f"line {i}" for i in range(5)]
    assert refused == [SECOND]  # tried once, not at every flush
    assert [s["text"] for s in api.sent if s["chat"] == SECOND] == ["line 0", "line 3\nline 4"]
    assert (bot.statistics.unreachable, bot.statistics.dropped, outbox.dropped) == (1, 2, 0)


def test_a_hung_api_times_out_keeps_the_batch_and_never_blocks_the_bus() -> None:
    # Arrange
    bus, clock, outbox = EventBus(), SimulatedClock(1_746_403_200_000_000_000), Outbox(capacity=3)
    TelegramNotifier(outbox, bus, clock, lambda: "daily P&L").start()

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            bot, _ = make_bot(url, outbox, Desk(), [], timeout=0.2)
            api.send_mode = "hang"
            api.poll_hangs = True
            for i in range(2):
                bus.publish(fill(i))
            bus.drain()
            sent = await bot.flush()
            polled = await bot.poll(timeout=0)
            for i in range(2, 6):  # the trading loop goes on while Telegram hangs
                bus.publish(fill(i))
            bus.drain()
            held = len(outbox)
            api.send_mode = "ok"
            resent = await bot.flush()
            await bot.close()
            return api, bot, sent, polled, held, resent

    # Act
    api, bot, sent, polled, held, resent = run(scenario)

    # Assert
    assert not sent and polled == 0
    assert bot.statistics.timeouts == 2
    assert held == 3 and outbox.dropped == 1  # the kept batch is held by the bot, not in the outbox
    assert resent and api.sent[0]["text"].split("\n") == [
        "fill BTCUSDT BUY 0.001 @ 95000.0",
        "fill BTCUSDT BUY 0.002 @ 95000.1",
    ]


def test_the_daily_summary_fires_on_the_clock() -> None:
    # Arrange
    day = 86_400_000_000_000
    bus, clock, outbox = EventBus(), SimulatedClock(1_746_403_200_000_000_000 + 3_600_000_000_000), Outbox()
    TelegramNotifier(outbox, bus, clock, lambda: "P&L today +12.00", daily_at_ns=0).start()

    # Act
    clock.advance_to(1_746_403_200_000_000_000 + 2 * day)

    # Assert
    assert outbox.take_all() == ["P&L today +12.00", "P&L today +12.00"]


def test_a_run_wires_the_notifier_on_the_bus_and_the_bot_on_its_own_thread() -> None:
    # Arrange
    bus, clock = EventBus(), SimulatedClock(1_746_403_200_000_000_000)

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            settings = TelegramConfig(enabled=True, chat_ids=(ALLOWED,), base_url=url, min_interval_seconds=1.0)
            notifier, thread = start_telegram(settings, Secret(TOKEN), bus, clock, Desk(), lambda *args: None)
            bus.publish(fill(0))
            bus.drain()
            await asyncio.wait_for(api.received.wait(), 10)
            await asyncio.to_thread(thread.stop)
            return api, thread, notifier

    # Act
    api, thread, notifier = run(scenario)

    # Assert
    assert api.sent[0] == {"chat": ALLOWED, "text": "fill BTCUSDT BUY 0.001 @ 95000.0", "markup": None}
    assert not thread._thread.is_alive()
    assert len(notifier.outbox) == 0
    assert all(TOKEN in path for path in api.paths) and TOKEN not in repr(thread.bot)


@pytest.mark.parametrize(("max_attempts", "max_wait_seconds"), [(1, 30.0), (5, 1.0)], ids=["attempts", "total-wait"])
def test_a_run_takes_its_429_limits_from_the_configuration(max_attempts: int, max_wait_seconds: float) -> None:
    # Arrange
    bus, clock = EventBus(), SimulatedClock(1_746_403_200_000_000_000)

    async def scenario() -> tuple:
        async with fake_api() as (api, url):
            settings = TelegramConfig(enabled=True, chat_ids=(ALLOWED,), base_url=url, min_interval_seconds=0.2,
                                      max_attempts=max_attempts, max_wait_seconds=max_wait_seconds)  # fmt: skip
            api.rate_limits = 1
            _, thread = start_telegram(settings, Secret(TOKEN), bus, clock, Desk(), lambda *args: None)
            bus.publish(fill(0))
            bus.drain()
            await asyncio.wait_for(api.received.wait(), 10)
            await asyncio.to_thread(thread.stop)
            return api, thread.bot

    # Act
    api, bot = run(scenario)

    # Assert: the one 429 is given up on at once (no 7 s wait), the next send goes through
    assert bot.statistics.rate_limit_give_ups == 1 and bot.statistics.waits == []
    assert [s["text"] for s in api.sent] == ["fill BTCUSDT BUY 0.001 @ 95000.0"]


def test_the_429_limits_are_read_from_the_configuration_files_and_environment() -> None:
    # Act
    config = load_config(environ={"KEEL_TELEGRAM__MAX_ATTEMPTS": "2", "KEEL_TELEGRAM__MAX_WAIT_SECONDS": "12.5"})

    # Assert
    assert (config.telegram.max_attempts, config.telegram.max_wait_seconds) == (2, 12.5)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MAX_ATTEMPTS", "0"), ("MAX_ATTEMPTS", "1.5"), ("MAX_WAIT_SECONDS", "0"), ("MAX_WAIT_SECONDS", "-3")],
)
def test_a_bad_429_limit_stops_the_start_naming_its_key(variable: str, value: str) -> None:
    # Act
    with pytest.raises(ConfigurationError) as caught:
        load_config(environ={f"KEEL_TELEGRAM__{variable}": value})

    # Assert
    assert caught.value.key == f"telegram.{variable.lower()}"


def test_a_run_tries_a_refusing_chat_again_at_the_configured_interval() -> None:
    # Arrange
    bus, clock = EventBus(), SimulatedClock(1_746_403_200_000_000_000)
    config = load_config(environ={"KEEL_TELEGRAM__UNREACHABLE_RETRY_SECONDS": "45"})
    settings = config.telegram.model_copy(
        update={"enabled": True, "chat_ids": (ALLOWED,), "base_url": "http://127.0.0.1:1/bot"}
    )

    # Act
    _, thread = start_telegram(settings, Secret(TOKEN), bus, clock, Desk(), lambda *args: None)
    thread.stop()

    # Assert
    assert thread.bot.unreachable_retry == 45.0
    assert load_config(environ={}).telegram.unreachable_retry_seconds == 300.0


@pytest.mark.parametrize("value", ["0", "-60", "soon"])
def test_a_bad_unreachable_retry_interval_stops_the_start_naming_its_key(value: str) -> None:
    # Act
    with pytest.raises(ConfigurationError) as caught:
        load_config(environ={"KEEL_TELEGRAM__UNREACHABLE_RETRY_SECONDS": value})

    # Assert
    assert caught.value.key == "telegram.unreachable_retry_seconds"


def test_a_bot_refuses_an_unreachable_retry_interval_that_is_not_positive() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="unreachable_retry"):
        make_bot("http://127.0.0.1:1/bot", Outbox(), Desk(), [], unreachable_retry=0.0)


def fill(i: int) -> OrderFilled:
    return OrderFilled(
        client_order_id=f"keel-{i}",
        venue_order_id=str(i),
        symbol="BTCUSDT",
        trade_id=str(i),
        side=OrderSide.BUY,
        last_quantity=Decimal(f"0.00{i + 1}"),
        last_price=Decimal(f"95000.{i}"),
        commission=Decimal("0.01"),
        liquidity_side=LiquiditySide.TAKER,
        ts_event=i,
        ts_init=i,
    )


def test_health_alerts_and_reconciliation_findings_are_queued_an_agreeing_venue_is_not() -> None:
    # Arrange
    bus, clock, outbox = EventBus(), SimulatedClock(1_746_403_200_000_000_000), Outbox()
    TelegramNotifier(outbox, bus, clock, lambda: "").start()

    # Act
    bus.publish(HealthChanged(previous=SystemHealth.HEALTHY, health=SystemHealth.DEGRADED,
                              reasons=("feed BTCUSDT/kline stale", "bus 90% full"), ts_event=1, ts_init=1))  # fmt: skip
    for mismatches, missed in (((), 0), (("BTCUSDT position 0.010 vs venue 0.020",), 2)):
        bus.publish(
            ReconciliationCompleted(
                adopted_orders=(),
                resolved_orders=(),
                never_sent_orders=(),
                missed_fills=missed,
                missed_funding=0,
                mismatches=mismatches,
                ts_event=2,
                ts_init=2,
            )
        )
    bus.drain()

    # Assert
    assert outbox.take_all() == [
        "health HEALTHY -> DEGRADED feed BTCUSDT/kline stale; bus 90% full",
        "reconciliation: mismatch: BTCUSDT position 0.010 vs venue 0.020; 2 missed fills",
    ]
