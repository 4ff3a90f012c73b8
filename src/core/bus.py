"""The event bus: bounded, in-process, one dispatch loop, three lanes.

=============  ===========================================  =========================================
lane           carries                                      when the lane is full
=============  ===========================================  =========================================
control        emergency stop, trading-state commands       jumps the queue; never dropped
execution      orders, fills, positions                     the producer waits; never dropped
market data    bars, trades, books, funding                 conflated per (type, symbol): newest wins
=============  ===========================================  =========================================

Messages are dispatched one at a time, in publish order (control first), to
their handlers in subscription order, so a replay of the same messages calls
the same handlers in the same order. A handler that raises is isolated: the
error is counted and logged with the message id, the ``on_handler_error``
callback is told (the orchestrator marks the owning component degraded), and
the bus goes on.

The same bus runs two ways: :meth:`EventBus.drain` dispatches synchronously
until the queues are empty (backtests), and :meth:`EventBus.run` is an asyncio
task that drains in batches and sleeps when idle (paper and live).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Final

import structlog
from mypy_extensions import mypyc_attr

from keel.core.errors import RetryLaterError
from keel.core.messages import Lane, Message

Handler = Callable[[Any], None]
HandlerErrorCallback = Callable[[str, Message, BaseException], None]

_log = structlog.get_logger("keel.bus")

LATENCY_BUCKETS = 64
"""Handler latency histogram: bucket ``b`` counts calls that took < 2**b ns."""

_CONTROL: Final = Lane.CONTROL
_EXECUTION: Final = Lane.EXECUTION
_MARKET_DATA: Final = Lane.MARKET_DATA


@mypyc_attr(allow_interpreted_subclasses=True)
class HandlerStats:
    """One subscription and its counters."""

    __slots__ = ("errors", "handler", "histogram", "max_ns", "name", "total_ns", "unmeasured_calls")

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self.handler = handler
        self.unmeasured_calls = 0
        self.errors = 0
        self.total_ns = 0
        self.max_ns = 0
        self.histogram = [0] * LATENCY_BUCKETS

    @property
    def calls(self) -> int:
        """Return how many times the handler was called."""
        return self.unmeasured_calls + sum(self.histogram)

    @property
    def measured_calls(self) -> int:
        """Return how many calls were timed."""
        return sum(self.histogram)

    def quantile_ns(self, q: float) -> int:
        """Return an upper bound (a power of two) of the ``q`` latency quantile of timed calls."""
        target = q * self.measured_calls
        seen = 0
        for bucket, n in enumerate(self.histogram):
            seen += n
            if n and seen >= target:
                return 1 << bucket
        return 0


class _Route:
    """The handlers of one message type, and how many messages went through them uncounted per handler."""

    __slots__ = ("calls", "handlers")

    def __init__(self, handlers: tuple[HandlerStats, ...]) -> None:
        self.handlers = handlers
        self.calls = 0

    def flush(self) -> None:
        """Add the messages routed since the last flush to each handler's unmeasured calls."""
        calls, self.calls = self.calls, 0
        if calls:
            for stats in self.handlers:
                stats.unmeasured_calls += calls


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class BusMetrics:
    """A snapshot of the bus counters."""

    depth: int
    depth_by_lane: dict[str, int]
    high_water_mark: int
    capacity: int
    published: int
    dispatched: int
    conflated: int
    overflow: int
    handler_errors: int
    unhandled_commands: int
    handler_latency_ns: dict[str, dict[str, float]]


@mypyc_attr(allow_interpreted_subclasses=True)
class BusFullError(RetryLaterError):
    """The execution lane is full: await :meth:`EventBus.put`, which waits for room."""


@mypyc_attr(allow_interpreted_subclasses=True)
class EventBus:
    """Route commands to one handler and events to every subscriber, over three lanes.

    Parameters
    ----------
    capacity
        Bound of the execution and the market-data lane each (default 10,000).
    on_handler_error
        Called with (handler name, message, exception) when a handler raises.
    measure_latency
        Time every handler call (two clock reads per call).
    batch_size
        How many messages the asyncio loop dispatches before it yields.
    """

    def __init__(
        self,
        capacity: int = 10_000,
        *,
        on_handler_error: HandlerErrorCallback | None = None,
        measure_latency: bool = True,
        batch_size: int = 1_000,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"bus capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._error_listeners: list[HandlerErrorCallback] = [] if on_handler_error is None else [on_handler_error]
        self._overload_listeners: list[Callable[[], None]] = []
        self._measure = measure_latency
        self._batch_size = batch_size
        # Execution and market data share one deque, so publish order between
        # them is kept without sequence numbers; per-lane counts enforce the bounds.
        self._control: deque[Message] = deque()
        self._queue: deque[Message] = deque()
        self._execution_count = 0
        self._market_count = 0
        self._subscribers: dict[type, list[HandlerStats]] = {}
        self._commands: dict[type, HandlerStats] = {}
        self._all: list[HandlerStats] = []
        self._routes: dict[type, _Route] = {}
        # Routes whose message counts are not yet in their handlers' unmeasured calls (see _flush_routes).
        self._counted_routes: list[_Route] = []
        self._dispatching = False
        self._running = False
        self._stop_requested = False
        self._idle = False
        self._wakeup: asyncio.Event | None = None
        self._space_waiters: list[asyncio.Future[None]] = []
        self._idle_waiters: list[asyncio.Future[None]] = []
        self.published = 0
        self.dispatched = 0
        self.conflated = 0
        self.overflow = 0
        self.handler_errors = 0
        self.unhandled_commands = 0
        self.high_water_mark = 0

    # --- subscriptions ------------------------------------------------------------

    def subscribe(self, message_type: type[Message], handler: Handler, name: str | None = None) -> None:
        """Call ``handler`` for every event of exactly ``message_type``, after earlier subscribers."""
        if message_type.is_command:
            raise TypeError(f"{message_type.__name__} is a command: use register()")
        stats = HandlerStats(name or _handler_name(handler), handler)
        self._subscribers.setdefault(message_type, []).append(stats)
        self._flush_routes()
        self._routes.clear()

    def subscribe_all(self, handler: Handler, name: str | None = None) -> None:
        """Call ``handler`` for every message, after the type's own handlers (journal, monitor)."""
        self._all.append(HandlerStats(name or _handler_name(handler), handler))
        self._flush_routes()
        self._routes.clear()

    def register(self, command_type: type[Message], handler: Handler, name: str | None = None) -> None:
        """Make ``handler`` the one handler of ``command_type``."""
        if not command_type.is_command:
            raise TypeError(f"{command_type.__name__} is an event: use subscribe()")
        if command_type in self._commands:
            raise ValueError(f"{command_type.__name__} already has a handler ({self._commands[command_type].name})")
        self._commands[command_type] = HandlerStats(name or _handler_name(handler), handler)
        self._flush_routes()
        self._routes.clear()

    def add_handler_error_listener(self, listener: HandlerErrorCallback) -> None:
        """Also call ``listener(handler name, message, error)`` when a handler raises."""
        self._error_listeners.append(listener)

    def add_overload_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever :attr:`conflated` or :attr:`overflow` grows (the bus is overloaded)."""
        self._overload_listeners.append(listener)

    def _overloaded(self) -> None:
        for listener in self._overload_listeners:
            listener()

    # --- publishing ----------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Return the number of queued messages."""
        return len(self._control) + len(self._queue)

    def publish(self, message: Message) -> None:
        """Queue a message without waiting.

        Market data is conflated when its lane is full. On a full execution
        lane, a handler's publish is accepted beyond capacity (waiting would
        deadlock the dispatch loop it runs in; counted as ``overflow``), a
        synchronous producer first drains the bus, and an asyncio producer
        gets :class:`BusFullError` and should ``await put()``.
        """
        lane = message.lane
        if lane is _MARKET_DATA:
            self.published += 1
            if self._market_count >= self.capacity and self._conflate(message):
                return
            self._market_count += 1
            self._queue.append(message)
        elif lane is _EXECUTION:
            if self._execution_count >= self.capacity:
                self._make_room(message)
            self.published += 1
            self._execution_count += 1
            self._queue.append(message)
        else:
            self.published += 1
            self._control.append(message)
        if self._dispatching:
            # Between drains the queue only grows, so drain() sees the peak;
            # publishes from inside a drain are checked here.
            self._note_depth()
        if self._idle:
            self._idle = False
            self._wakeup.set()  # type: ignore[union-attr]

    async def put(self, message: Message) -> None:
        """Queue a message, waiting while its lane is full (backpressure for producers)."""
        lane = message.lane
        if lane is not _CONTROL:
            while (self._market_count if lane is _MARKET_DATA else self._execution_count) >= self.capacity:
                waiter = asyncio.get_running_loop().create_future()
                self._space_waiters.append(waiter)
                await waiter
        self.publish(message)

    def _note_depth(self) -> None:
        depth = len(self._control) + len(self._queue)
        if depth > self.high_water_mark:
            self.high_water_mark = depth

    def _conflate(self, message: Message) -> bool:
        """Replace the newest queued message of the same (type, symbol) in place."""
        queue = self._queue
        kind = message.__class__
        symbol = message.symbol  # type: ignore[attr-defined]
        for index in range(len(queue) - 1, -1, -1):
            queued = queue[index]
            if queued.__class__ is kind and queued.symbol == symbol:  # type: ignore[attr-defined]
                queue[index] = message
                self.conflated += 1
                self._overloaded()
                return True
        # No pending message of this key: keep it, so no symbol ever loses its
        # latest value. The lane then exceeds capacity by at most one per key.
        self.overflow += 1
        self._overloaded()
        return False

    def _make_room(self, message: Message) -> None:
        if self._dispatching:
            self.overflow += 1
            self._overloaded()
        elif self._running:
            raise BusFullError(
                f"execution lane full ({self.capacity}) publishing {type(message).__name__} "
                f"{message.id}: await bus.put(message) to wait for room"
            )
        else:
            while self._execution_count >= self.capacity:
                self.drain(limit=1)

    # --- dispatching -------------------------------------------------------------

    def drain(self, limit: int | None = None) -> int:
        """Dispatch queued messages in order until empty (or ``limit``); return how many."""
        if self._dispatching:
            return 0
        self._note_depth()
        self._dispatching = True
        control, queue = self._control, self._queue
        routes = self._routes
        measure = self._measure
        clock = perf_counter_ns
        remaining = -1 if limit is None else limit
        dispatched = 0
        # One clock read per handler call: each call is charged the time since
        # the previous read, so the bus's own per-message work (dequeue, route
        # lookup, tens of ns) is included in the handler's latency.
        last = clock() if measure else 0
        try:
            while remaining:
                if control:
                    message = control.popleft()
                elif queue:
                    message = queue.popleft()
                    if message.lane is _MARKET_DATA:
                        self._market_count -= 1
                    else:
                        self._execution_count -= 1
                else:
                    break
                remaining -= 1
                dispatched += 1
                route = routes.get(message.__class__)
                if route is None:
                    route = self._resolve(message)
                if measure:
                    for stats in route.handlers:
                        try:
                            stats.handler(message)
                        except Exception as error:
                            self._handler_failed(stats, message, error)
                        now = clock()
                        elapsed = now - last
                        last = now
                        stats.total_ns += elapsed
                        stats.histogram[elapsed.bit_length()] += 1
                        if elapsed > stats.max_ns:
                            stats.max_ns = elapsed
                else:
                    # One count per message, spread over its handlers when read (handler_stats).
                    route.calls += 1
                    for stats in route.handlers:
                        try:
                            stats.handler(message)
                        except Exception as error:
                            self._handler_failed(stats, message, error)
        finally:
            self._dispatching = False
            self.dispatched += dispatched
        if self._space_waiters:
            self._release_waiters()
        return dispatched

    def _resolve(self, message: Message) -> _Route:
        kind = message.__class__
        if kind.is_command:
            own = self._commands.get(kind)
            if own is None:
                self.unhandled_commands += 1
                _log.error("command has no handler", command=kind.__name__, message_id=message.id)
                unhandled = _Route(tuple(self._all))
                self._counted_routes.append(unhandled)
                return unhandled
            route = _Route((own, *self._all))
        else:
            route = _Route((*self._subscribers.get(kind, ()), *self._all))
        self._routes[kind] = route
        self._counted_routes.append(route)
        return route

    def _flush_routes(self) -> None:
        for route in self._counted_routes:
            route.flush()
        self._counted_routes = list(self._routes.values())

    def _handler_failed(self, stats: HandlerStats, message: Message, error: Exception) -> None:
        stats.errors += 1
        self.handler_errors += 1
        _log.error(
            "handler raised",
            handler=stats.name,
            message_type=type(message).__name__,
            message_id=message.id,
            error=repr(error),
        )
        for listener in self._error_listeners:
            try:
                listener(stats.name, message, error)
            except Exception as callback_error:
                _log.error("handler error callback raised", handler=stats.name, error=repr(callback_error))

    def _release_waiters(self) -> None:
        waiters, self._space_waiters = self._space_waiters, []
        _release(waiters)

    # --- asyncio loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch in batches until :meth:`stop` (also one called before the loop got to run)."""
        self._wakeup = asyncio.Event()
        self._running = not self._stop_requested
        self._stop_requested = False
        try:
            while self._running:
                if not self.depth:
                    if self._idle_waiters:
                        _release(self._idle_waiters)
                        self._idle_waiters = []
                        continue
                    self._idle = True
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                self.drain(limit=self._batch_size)
                await asyncio.sleep(0)
        finally:
            self._running = False
            self._idle = False
            self._release_waiters()
            _release(self._idle_waiters)
            self._idle_waiters = []

    async def join(self) -> None:
        """Wait until every queued message has been dispatched (drains inline when run() is not active)."""
        if not self._running:
            self.drain()
            return
        while self.depth:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            if self._idle:
                self._idle = False
                self._wakeup.set()  # type: ignore[union-attr]
            await waiter

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch (or at once, if it has not started yet)."""
        self._stop_requested = not self._running
        self._running = False
        if self._wakeup is not None:
            self._wakeup.set()

    # --- metrics ------------------------------------------------------------------------

    def handler_stats(self) -> list[HandlerStats]:
        """Return every subscription's counters, in subscription order."""
        self._flush_routes()
        stats = [s for handlers in self._subscribers.values() for s in handlers]
        return [*stats, *self._commands.values(), *self._all]

    def metrics(self) -> BusMetrics:
        """Return a snapshot of the counters."""
        self._note_depth()
        latency = {
            stats.name: {
                "calls": stats.calls,
                "errors": stats.errors,
                "mean_ns": stats.total_ns / stats.measured_calls if stats.measured_calls else 0.0,
                "max_ns": stats.max_ns,
                "p99_ns_upper_bound": stats.quantile_ns(0.99),
            }
            for stats in self.handler_stats()
        }
        return BusMetrics(
            depth=self.depth,
            depth_by_lane={
                Lane.CONTROL.value: len(self._control),
                Lane.EXECUTION.value: self._execution_count,
                Lane.MARKET_DATA.value: self._market_count,
            },
            high_water_mark=self.high_water_mark,
            capacity=self.capacity,
            published=self.published,
            dispatched=self.dispatched,
            conflated=self.conflated,
            overflow=self.overflow,
            handler_errors=self.handler_errors,
            unhandled_commands=self.unhandled_commands,
            handler_latency_ns=latency,
        )


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


def _handler_name(handler: Handler) -> str:
    owner = getattr(handler, "__self__", None)
    name = getattr(handler, "__qualname__", None) or repr(handler)
    if owner is not None and hasattr(owner, "name"):
        return f"{owner.name}.{getattr(handler, '__name__', name)}"
    return name
