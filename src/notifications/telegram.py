"""Telegram: notifications out of a bounded outbox, operator commands in, every command audited.

Two halves that never block the trading loop:

- :class:`TelegramNotifier` turns bus events (fills, trading-state changes,
  health changes, reconciliation findings) and a daily P&L summary into
  lines in an :class:`Outbox`. Putting a line is O(1) and never waits: past
  the outbox's capacity a line is dropped and counted;
- :class:`TelegramBot` runs on its own asyncio loop (its own thread in a
  run): it sends each chat its own backlog of the outbox, one batched message
  at most every ``min_interval`` seconds (a burst of fills is one message),
  waits out each 429's ``retry_after`` (up to a bound; the wait holds only
  the chat answered 429, the others are sent to meanwhile), keeps a message for
  the next try to a chat it did not reach after a timeout, an error or a 429
  past that bound (the other chats go on), tries a chat that refuses the bot
  (403, 400 chat not found) only every ``unreachable_retry`` seconds, and long-polls for
  commands (a 429 there waits its ``retry_after`` too):
  ``/status``, ``/positions``, ``/pnl``, ``/orders``, ``/stop`` (asks for
  confirmation with an inline button), ``/resume``, ``/help``. Only the
  configured chat ids are obeyed; every command, obeyed or refused, goes to
  the same audit callback as the HTTP control API (actor
  ``telegram:<chat id>``). A command that fails is counted, logged and
  answered ``command failed``, and the polling goes on: the failed update is
  not fetched again. A reply that does not go through is counted and queued
  for its chat like a notification (``late reply: ...``); one to a chat that
  refuses the bot is lost, counted (``undeliverable_replies``) and logged.

The bot token is a secret: it is held in a :class:`~keel.config.Secret`,
never in a repr, and the HTTP client's request log (which prints URLs, and
the Bot API puts the token in the URL) is silenced.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from functools import partial
from typing import Any, Protocol

import structlog
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError, TimedOut
from telegram.request import HTTPXRequest

from keel.config import Secret, TelegramConfig
from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.messages import (
    HealthChanged,
    OrderFilled,
    ReconciliationCompleted,
    TradingStateChanged,
)
from keel.core.time_events import TimeEvent

_log = structlog.get_logger("keel.telegram")

# The Bot API carries the token in every URL; httpx logs each URL at INFO.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

AuditCallback = Callable[[str, str, Mapping[str, Any], str], None]
"""Called with (actor, action, details, request id), like the HTTP control API's audit."""

MAX_MESSAGE_CHARS = 4096
"""Telegram's limit on one message's text."""

HELP = (
    "/status - health, trading state, equity, P&L\n"
    "/positions - open positions\n"
    "/pnl - P&L, ROI and drawdown\n"
    "/orders - open orders\n"
    "/stop - emergency stop (asks for confirmation)\n"
    "/resume - resume trading after a stop\n"
    "/help - this list"
)


_COMMANDS = frozenset(("/status", "/positions", "/pnl", "/orders", "/stop", "/resume", "/help"))


class Operations(Protocol):
    """What the bot reads and commands: the web layer's ``TradingService`` has all of it."""

    def status(self) -> Any:
        """Return the system status."""

    def positions(self) -> list[Any]:
        """Return the open positions."""

    def orders(self, open_only: bool = False) -> list[Any]:
        """Return the orders."""

    def emergency_stop(self, reason: str, flatten: bool = False) -> Awaitable[Any]:
        """Stop trading."""

    def resume(self, reason: str) -> Awaitable[Any]:
        """Resume trading."""


class Outbox:
    """A bounded, thread-safe queue of notification lines; beyond ``capacity`` lines are dropped and counted.

    Parameters
    ----------
    capacity
        Lines held at most.
    """

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError(f"outbox capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.dropped = 0
        self._lines: deque[str] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lines)

    def put(self, line: str) -> bool:
        """Queue a line; return False (and count it) when the outbox is full."""
        with self._lock:
            if len(self._lines) >= self.capacity:
                self.dropped += 1
                return False
            self._lines.append(line)
            return True

    def take_all(self) -> list[str]:
        """Remove and return every queued line, oldest first."""
        with self._lock:
            lines = list(self._lines)
            self._lines.clear()
            return lines


def _take_message(lines: deque[str], max_chars: int = MAX_MESSAGE_CHARS) -> str | None:
    """Remove and return as many whole lines as fit one message (None when there are none)."""
    if not lines:
        return None
    taken: list[str] = []
    size = 0
    while lines and (not taken or size + 1 + len(lines[0]) <= max_chars):
        line = lines.popleft()[:max_chars]
        taken.append(line)
        size += len(line) + 1
    return "\n".join(taken)


class TelegramNotifier:
    """Turn bus events into outbox lines, and post a P&L summary every day.

    Parameters
    ----------
    outbox
        Where the lines go.
    bus, clock
        The event bus and the clock.
    pnl
        Returns the day's summary line (e.g. from the status: equity, P&L, ROI).
    daily_at_ns
        Time of day (ns after midnight UTC) of the summary.
    """

    def __init__(
        self,
        outbox: Outbox,
        bus: EventBus,
        clock: Clock,
        pnl: Callable[[], str],
        *,
        daily_at_ns: int = 0,
    ) -> None:
        self.outbox = outbox
        self.bus = bus
        self.clock = clock
        self.pnl = pnl
        self.daily_at_ns = daily_at_ns

    def start(self) -> None:
        """Subscribe to the events and set the daily timer."""
        self.bus.subscribe(OrderFilled, self.on_fill, name="telegram.fills")
        self.bus.subscribe(TradingStateChanged, self.on_trading_state, name="telegram.trading_state")
        self.bus.subscribe(HealthChanged, self.on_health, name="telegram.health")
        self.bus.subscribe(ReconciliationCompleted, self.on_reconciliation, name="telegram.reconciliation")
        day = 86_400_000_000_000
        now = self.clock.timestamp_ns()
        first = now - now % day + self.daily_at_ns
        self.clock.set_timer("telegram.daily_pnl", day, self.on_daily, start_ns=first if first > now else first + day)

    def on_fill(self, fill: OrderFilled) -> None:
        """Queue a fill."""
        self.outbox.put(f"fill {fill.symbol} {fill.side.value} {fill.last_quantity} @ {fill.last_price}")

    def on_trading_state(self, change: TradingStateChanged) -> None:
        """Queue a trading-state change."""
        self.outbox.put(f"trading {change.previous.value} -> {change.state.value}: {change.reason}")

    def on_health(self, change: HealthChanged) -> None:
        """Queue a health change."""
        reasons = "; ".join(change.reasons)
        self.outbox.put(f"health {change.previous.value} -> {change.health.value} {reasons}".rstrip())

    def on_reconciliation(self, report: ReconciliationCompleted) -> None:
        """Queue what a reconciliation found (nothing when the venue agreed)."""
        found = [
            *(f"mismatch: {m}" for m in report.mismatches),
            *([f"{report.missed_fills} missed fills"] if report.missed_fills else []),
            *([f"{len(report.adopted_orders)} orders adopted"] if report.adopted_orders else []),
        ]
        if found:
            self.outbox.put("reconciliation: " + "; ".join(found))

    def on_daily(self, _event: TimeEvent) -> None:
        """Queue the daily P&L summary."""
        self.outbox.put(self.pnl())


@dataclass
class BotStatistics:
    """What the bot did: messages sent, 429s and the waits for them, timeouts, commands obeyed and refused.

    ``sent`` counts notification messages delivered (one per chat),
    ``rate_limit_give_ups`` calls given up on while Telegram still answered 429,
    ``unreachable`` the times a chat was found refusing the bot (403, or 400 chat not found),
    ``dropped`` the lines a chat lost because its backlog outgrew the outbox's capacity,
    ``failed_commands`` commands that raised, ``failed_replies`` replies that did not go through at once
    (a reply is then queued for its chat like a notification, marked ``late reply:``), and
    ``undeliverable_replies`` the replies lost because their chat refuses the bot.
    """

    sent: int = 0
    unreachable: int = 0
    dropped: int = 0
    rate_limited: int = 0
    rate_limit_give_ups: int = 0
    timeouts: int = 0
    errors: int = 0
    obeyed: int = 0
    refused: int = 0
    failed_commands: int = 0
    failed_replies: int = 0
    undeliverable_replies: int = 0
    waits: list[float] = field(default_factory=list)


class _Delivery(Enum):
    SENT = "sent"
    FAILED = "failed"
    UNREACHABLE = "unreachable"


@dataclass
class _ChatLane:
    """One chat's notifications: its backlog, the message it has yet to get, when a refusing chat is tried again."""

    backlog: deque[str]
    message: str | None = None
    retry_at: float | None = None
    """None while the chat takes messages."""


class TelegramBot:
    """Send the outbox to the configured chats and obey their commands.

    Parameters
    ----------
    token
        The bot token (a :class:`~keel.config.Secret`: its repr never shows it).
    chat_ids
        The chats notifications go to and whose commands are obeyed.
    outbox
        The notifications to send.
    operations
        What the commands read and do.
    audit
        The control API's audit callback.
    base_url
        The Bot API's URL up to the token (``https://api.telegram.org/bot``).
    min_interval
        Seconds between two sends (the batching window).
    timeout
        Seconds a Bot API call may take.
    max_attempts
        Tries of one Bot API call that Telegram answers with 429.
    max_wait
        Seconds one Bot API call may wait out 429s in all (no command is read meanwhile).
    unreachable_retry
        Seconds between two tries of a chat that refuses the bot (403, or 400 chat not found);
        ``telegram.unreachable_retry_seconds`` in a run.
    sleep
        How to wait (``asyncio.sleep``; tests pass a recorder).
    now
        The bot's clock in seconds (``time.monotonic``; tests pass their own).

    Raises
    ------
    ValueError
        If ``max_attempts`` is below 1 or ``unreachable_retry`` is not a positive
        number of seconds: pass values the configuration would accept.
    """

    def __init__(
        self,
        token: Secret,
        chat_ids: Iterable[int],
        outbox: Outbox,
        operations: Operations,
        audit: AuditCallback,
        *,
        base_url: str = "https://api.telegram.org/bot",
        min_interval: float = 3.0,
        timeout: float = 10.0,
        max_attempts: int = 5,
        max_wait: float = 30.0,
        unreachable_retry: float = 300.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if unreachable_retry <= 0:
            raise ValueError(f"unreachable_retry must be > 0 seconds, got {unreachable_retry}")
        self._token = token
        self.chat_ids = frozenset(chat_ids)
        self.outbox = outbox
        self.operations = operations
        self.audit = audit
        self.base_url = base_url
        self.min_interval = min_interval
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.unreachable_retry = unreachable_retry
        self.sleep = sleep
        self.now = now
        self.statistics = BotStatistics()
        self._offset: int | None = None
        self._lanes = {chat: _ChatLane(deque(maxlen=outbox.capacity)) for chat in sorted(self.chat_ids)}
        self._pending_stops: dict[str, int] = {}
        self._bot: Bot | None = None

    def __repr__(self) -> str:
        return f"TelegramBot(chats={sorted(self.chat_ids)}, base_url={self.base_url!r}, token=**********)"

    def _client(self) -> Bot:
        if self._bot is None:
            request = HTTPXRequest(read_timeout=self.timeout, write_timeout=self.timeout, connect_timeout=self.timeout)
            self._bot = Bot(self._token.reveal(), base_url=self.base_url, request=request,
                            get_updates_request=HTTPXRequest(read_timeout=self.timeout + 1.0))  # fmt: skip
        return self._bot

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._bot is not None:
            await self._bot.shutdown()
            self._bot = None

    async def run(self, stop: asyncio.Event) -> None:
        """Send and poll until ``stop`` is set (the long poll is the batching window; a failure waits one)."""
        loop = asyncio.get_running_loop()
        next_send = loop.time()
        while not stop.is_set():
            failures = self.statistics.timeouts + self.statistics.errors
            if loop.time() >= next_send:
                await self.flush()
                next_send = loop.time() + self.min_interval
            await self.poll(timeout=max(1, int(self.min_interval)))
            if self.statistics.timeouts + self.statistics.errors > failures:
                await self.sleep(self.min_interval)

    async def flush(self) -> bool:
        """Move the outbox to every chat's backlog and send each chat its next message; return whether all went.

        Each chat is delivered on its own, in order, and all at once: a chat waiting
        out a 429 holds only itself (the other chats get this flush's message
        meanwhile), and a message a chat did not get (a timeout, another error, a 429
        past ``max_attempts`` or ``max_wait``) is its next one. A chat that refuses the
        bot (403, or 400 chat not found) is tried again every ``unreachable_retry``
        seconds only. A backlog holds at most the outbox's capacity: beyond it a
        chat's oldest lines are dropped and counted.
        """
        lines = self.outbox.take_all()
        for lane in self._lanes.values():
            self._queue(lane, lines)
        sent = await asyncio.gather(*(self._send_next(chat, lane) for chat, lane in self._lanes.items()))
        return all(sent)

    def _queue(self, lane: _ChatLane, lines: list[str]) -> None:
        self.statistics.dropped += max(0, len(lane.backlog) + len(lines) - self.outbox.capacity)
        lane.backlog.extend(lines)  # the backlog's maxlen drops the oldest

    async def _send_next(self, chat: int, lane: _ChatLane) -> bool:
        """Send a chat its next message; return whether it went (or there was none)."""
        if lane.message is None:
            lane.message = _take_message(lane.backlog)
        if lane.message is None:
            return True
        if lane.retry_at is not None and self.now() < lane.retry_at:
            return False
        delivery = await self._deliver(partial(self._client().send_message, chat, lane.message))
        if delivery is _Delivery.UNREACHABLE:
            self._set_aside(chat, lane)
        if delivery is not _Delivery.SENT:
            return False
        if lane.retry_at is not None:
            _log.info("telegram chat reachable again", chat_id=chat)
            lane.retry_at = None
        lane.message = None
        self.statistics.sent += 1
        return True

    def _set_aside(self, chat: int, lane: _ChatLane) -> None:
        if lane.retry_at is None:
            self.statistics.unreachable += 1
            _log.warning("telegram chat refuses the bot, tried again slowly", chat_id=chat,
                         retry_seconds=self.unreachable_retry)  # fmt: skip
        lane.retry_at = self.now() + self.unreachable_retry

    async def poll(self, timeout: int = 0) -> int:
        """Fetch and handle the pending updates; return how many there were (0 after a failure).

        A 429 waits its ``retry_after`` before returning.
        """
        try:
            updates = await self._client().get_updates(offset=self._offset, timeout=timeout)
        except RetryAfter as error:
            self.statistics.rate_limited += 1
            await self._wait(_retry_seconds(error))
            return 0
        except TimedOut:
            self.statistics.timeouts += 1
            return 0
        except TelegramError as error:
            self.statistics.errors += 1
            _log.warning("telegram poll failed", error=type(error).__name__)
            return 0
        for update in updates:
            self._offset = update.update_id + 1  # before handling: an update that fails is not fetched again
            await self._handle_safely(update)
        return len(updates)

    async def _handle_safely(self, update: Update) -> None:
        """Handle an update; a failure is counted, logged and told to an allowed chat, never raised."""
        try:
            await self.handle(update)
        except Exception as error:  # one failing command must not end the polling thread
            self.statistics.failed_commands += 1
            _log.warning("telegram command failed", update_id=update.update_id, exc_info=True)
            chat = update.effective_chat
            if chat is not None and chat.id in self.chat_ids:
                await self._send_reply(chat.id, _failure_reply(error))

    async def handle(self, update: Update) -> None:
        """Obey a command or a confirmation from an allowed chat; refuse (and audit) any other.

        A reply that does not go through is counted in ``statistics.failed_replies`` and
        queued for its chat like a notification; one to a chat that refuses the bot is
        lost and counted in ``statistics.undeliverable_replies`` too. A failing command raises.
        """
        if update.callback_query is not None:
            query = update.callback_query
            chat = query.message.chat.id if query.message is not None else query.from_user.id
            await self._answer_query(query.answer)
            await self._confirm(chat, query.data or "", str(update.update_id))
            return
        message = update.message
        if message is None or not message.text:
            return
        chat = message.chat.id
        command = message.text.split()[0].split("@")[0].lower()
        request_id = f"telegram-{update.update_id}"
        if chat not in self.chat_ids:
            self.statistics.refused += 1
            self.audit(f"telegram:{chat}", "telegram_refused", {"command": command[:32]}, request_id)
            return
        self.statistics.obeyed += 1
        action = command.lstrip("/")[:32] if command in _COMMANDS else "help"
        self.audit(f"telegram:{chat}", f"telegram_{action}", {}, request_id)
        reply, markup = await self._answer(chat, command, message.text)
        await self._send_reply(chat, reply, markup)

    async def _send_reply(self, chat: int, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        """Send a reply; one that does not go through is queued for the chat, or counted lost if the chat refuses."""
        delivery = await self._deliver(partial(self._client().send_message, chat, text, reply_markup=markup))
        if delivery is _Delivery.SENT:
            return
        self.statistics.failed_replies += 1
        lane = self._lanes[chat]
        if delivery is _Delivery.UNREACHABLE:
            self.statistics.undeliverable_replies += 1
            _log.warning("telegram reply lost: the chat refuses the bot", chat_id=chat)
            self._set_aside(chat, lane)
            return
        self._queue(lane, [_late_reply(text, markup)])

    async def _answer_query(self, call: Callable[[], Awaitable[object]]) -> None:
        """Answer a button press; an answer that does not go through is counted (Telegram lets it expire)."""
        if await self._deliver(call) is not _Delivery.SENT:
            self.statistics.failed_replies += 1

    async def _deliver(self, call: Callable[[], Awaitable[object]]) -> _Delivery:
        """Make a Bot API call, waiting out each 429's ``retry_after``; return how it went.

        After ``max_attempts`` 429s, or when the next wait would take the waits past
        ``max_wait``, it gives up (counted); a timeout or another error gives up at once.
        A chat that refuses the bot is left to the caller to count.
        """
        waited = 0.0
        for attempt in range(1, self.max_attempts + 1):
            try:
                await call()
                return _Delivery.SENT
            except RetryAfter as error:
                self.statistics.rate_limited += 1
                wait = _retry_seconds(error)
            except TimedOut:
                self.statistics.timeouts += 1
                return _Delivery.FAILED
            except TelegramError as error:
                return self._failure(error)
            if attempt == self.max_attempts or waited + wait > self.max_wait:
                break
            waited += wait
            await self._wait(wait)
        self.statistics.rate_limit_give_ups += 1
        _log.warning("telegram still rate limited, given up for now", attempts=attempt, waited=waited)
        return _Delivery.FAILED

    def _failure(self, error: TelegramError) -> _Delivery:
        if isinstance(error, Forbidden) or (
            isinstance(error, BadRequest) and "chat not found" in error.message.lower()
        ):
            return _Delivery.UNREACHABLE
        self.statistics.errors += 1
        _log.warning("telegram call failed", error=type(error).__name__)
        return _Delivery.FAILED

    async def _wait(self, seconds: float) -> None:
        self.statistics.waits.append(seconds)
        await self.sleep(seconds)

    async def _answer(self, chat: int, command: str, text: str) -> tuple[str, InlineKeyboardMarkup | None]:
        ops = self.operations
        if command == "/status":
            s = ops.status()
            return (f"health {s.health}, trading {s.trading_state}, equity {s.equity:.2f}, P&L {s.pnl:.2f}"), None
        if command == "/pnl":
            s = ops.status()
            return f"P&L {s.pnl:.2f}, ROI {s.current_roi:.4%}, drawdown {s.drawdown:.4%}", None
        if command == "/positions":
            rows = ops.positions()
            return ("\n".join(f"{p.symbol} {p.quantity} notional {p.notional}" for p in rows) or "no positions"), None
        if command == "/orders":
            rows = ops.orders(open_only=True)
            lines = (f"{o.client_order_id} {o.symbol} {o.side} {o.quantity} @ {o.price or 'market'}" for o in rows)
            return ("\n".join(lines) or "no open orders"), None
        if command == "/stop":
            nonce = secrets.token_hex(8)
            self._pending_stops[nonce] = chat
            button = InlineKeyboardButton("Confirm emergency stop", callback_data=f"stop:{nonce}")
            return "Emergency stop: cancel every open order and halt trading?", InlineKeyboardMarkup([[button]])
        if command == "/resume":
            reason = text.partition(" ")[2].strip() or "telegram resume"
            outcome = await ops.resume(reason)
            return f"resumed: trading {getattr(outcome, 'trading_state', outcome)}", None
        return HELP, None

    async def _confirm(self, chat: int, data: str, update_id: str) -> None:
        request_id = f"telegram-{update_id}"
        nonce = data.removeprefix("stop:")
        if chat not in self.chat_ids or self._pending_stops.pop(nonce, None) != chat:
            self.statistics.refused += 1
            self.audit(f"telegram:{chat}", "telegram_refused", {"command": "stop_confirm"}, request_id)
            return
        self.statistics.obeyed += 1
        reason = "telegram emergency stop"
        self.audit(f"telegram:{chat}", "emergency_stop", {"reason": reason, "flatten": False}, request_id)
        outcome = await self.operations.emergency_stop(reason)
        await self._send_reply(chat, f"stopped: trading {getattr(outcome, 'trading_state', outcome)}")


def _late_reply(text: str, markup: InlineKeyboardMarkup | None) -> str:
    """The line a reply that did not go through is queued as (a button cannot follow it into a batch)."""
    if markup is None:
        return f"late reply: {text}"
    return f"late reply: {text} (its button could not be sent: send the command again)"


def _failure_reply(error: Exception) -> str:
    """What an allowed chat is told of a failed command."""
    if isinstance(error, TimeoutError):
        # The web service's CommandNotConfirmed: the command was handed to the trading loop and still runs.
        return f"{error}: check /status before sending it again"
    return f"command failed: {type(error).__name__}"


def _retry_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():
        # python-telegram-bot warns that the attribute will become a timedelta; both are handled.
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramThread:
    """Run a :class:`TelegramBot` on an event loop of its own thread, so Telegram never waits on trading or back.

    Parameters
    ----------
    bot
        The bot to run.
    """

    def __init__(self, bot: TelegramBot) -> None:
        self.bot = bot
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="telegram", daemon=True)

    def start(self) -> None:
        """Start the thread and wait until its loop runs."""
        self._thread.start()
        self._ready.wait()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the bot to finish its current call and end; wait for the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout if timeout is not None else self.bot.timeout + self.bot.min_interval + 5.0)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self.bot.run(self._stop)
        finally:
            await self.bot.flush()
            await self.bot.close()


def start_telegram(
    settings: TelegramConfig,
    token: Secret,
    bus: EventBus,
    clock: Clock,
    operations: Operations,
    audit: AuditCallback,
) -> tuple[TelegramNotifier, TelegramThread]:
    """Wire the notifier on the trading bus and start the bot on its own thread.

    ``operations`` must be safe to call from another thread (the web layer's
    ``SnapshotService`` is: it reads published snapshots and runs commands on
    the trading loop).
    """
    outbox = Outbox(settings.outbox_capacity)

    def daily() -> str:
        s = operations.status()
        return f"daily P&L {s.pnl:.2f} USDT, ROI {s.current_roi:.4%}, equity {s.equity:.2f}, drawdown {s.drawdown:.4%}"

    notifier = TelegramNotifier(outbox, bus, clock, daily, daily_at_ns=settings.daily_pnl_hour_utc * 3_600_000_000_000)
    notifier.start()
    bot = TelegramBot(
        token,
        settings.chat_ids,
        outbox,
        operations,
        audit,
        base_url=settings.base_url,
        min_interval=settings.min_interval_seconds,
        timeout=settings.timeout_seconds,
        max_attempts=settings.max_attempts,
        max_wait=settings.max_wait_seconds,
        unreachable_retry=settings.unreachable_retry_seconds,
    )
    thread = TelegramThread(bot)
    thread.start()
    return notifier, thread
