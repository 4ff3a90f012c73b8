"""Tests of keel.core.bus: ordering, commands, isolation, overload lanes, metrics, determinism.

Handlers are hand-written recorders. Overload is exercised at ten times the
capacity both synchronously (publish without run(): the producer drains when
the execution lane is full) and under asyncio (run() as a task, producers
awaiting put()). Waiting in the asyncio tests is on events set by handlers,
bounded by a timeout, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.bus import BusFullError, EventBus
from keel.core.errors import RetryLaterError
from keel.core.fsm import TradingState
from keel.core.messages import (
    BarClosed,
    CancelAllOrders,
    Message,
    OrderAccepted,
    OrderFilled,
    OrderSubmitted,
    SetTradingState,
    SubmitOrder,
    TradeTick,
    reset_message_ids,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderType

CAPACITY = 100
OVERLOAD = 10 * CAPACITY
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")
MINUTE = 60_000_000_000
TIMEOUT_SECONDS = 10.0


# --- messages ---------------------------------------------------------------------------


def bar(symbol: str, sequence: int) -> BarClosed:
    """A 1m bar whose close carries the publish sequence."""
    return BarClosed(
        symbol=symbol,
        interval="1m",
        open_time=sequence * MINUTE,
        open=100.0,
        high=101.0,
        low=99.0,
        close=float(sequence),
        volume=1.5,
        ts_event=(sequence + 1) * MINUTE,
        ts_init=(sequence + 1) * MINUTE,
    )


def submitted(sequence: int) -> OrderSubmitted:
    """An execution-lane event whose client order id carries the publish sequence."""
    return OrderSubmitted(
        client_order_id=f"bt-{sequence}",
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        quantity=Decimal("0.001"),
        ts_event=sequence,
        ts_init=sequence,
    )


def filled(sequence: int) -> OrderFilled:
    return OrderFilled(
        client_order_id=f"bt-{sequence}",
        venue_order_id=str(1000 + sequence),
        symbol="BTCUSDT",
        trade_id=f"T{sequence}",
        side=OrderSide.BUY,
        last_quantity=Decimal("0.001"),
        last_price=Decimal("84000.10"),
        commission=Decimal("0.0336"),
        liquidity_side=LiquiditySide.TAKER,
        ts_event=sequence,
        ts_init=sequence,
    )


def halt(reason: str) -> SetTradingState:
    return SetTradingState(state=TradingState.HALTED, reason=reason, ts_event=0, ts_init=0)


def submit_order(sequence: int) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=f"bt-{sequence}",
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal("0.010"),
        ts_event=sequence,
        ts_init=sequence,
    )


def sequence_of(message: Message) -> int:
    """The publish sequence a test message carries."""
    if isinstance(message, BarClosed):
        return int(message.close)
    return int(message.client_order_id.split("-")[1])  # type: ignore[attr-defined]


# --- fakes -----------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Records (handler name, message) for every call of the handlers it makes."""

    calls: list[tuple[str, Message]] = field(default_factory=list)

    def handler(self, name: str) -> Callable[[Message], None]:
        def handle(message: Message) -> None:
            self.calls.append((name, message))

        return handle

    def messages(self, name: str | None = None) -> list[Message]:
        return [m for n, m in self.calls if name is None or n == name]


def recording_bus(capacity: int = CAPACITY, **kwargs: object) -> tuple[EventBus, Recorder]:
    """A bus with one recorder subscribed to the execution, market-data and control types used here."""
    bus = EventBus(capacity, **kwargs)  # type: ignore[arg-type]
    recorder = Recorder()
    bus.subscribe(OrderSubmitted, recorder.handler("execution"), name="execution")
    bus.subscribe(OrderFilled, recorder.handler("execution"), name="fills")
    bus.subscribe(BarClosed, recorder.handler("market_data"), name="market_data")
    bus.register(SetTradingState, recorder.handler("control"), name="control")
    return bus, recorder


# --- order ---------------------------------------------------------------------------------------


def test_messages_are_dispatched_in_publish_order() -> None:
    bus, recorder = recording_bus()
    published = [submitted(0), bar("BTCUSDT", 1), filled(2), bar("ETHUSDT", 3), submitted(4)]

    for message in published:
        bus.publish(message)
    dispatched = bus.drain()

    assert dispatched == len(published)
    assert recorder.messages() == published


def test_handlers_run_in_subscription_order_and_subscribe_all_last() -> None:
    bus = EventBus(CAPACITY)
    recorder = Recorder()
    bus.subscribe_all(recorder.handler("journal"), name="journal")
    bus.subscribe(OrderSubmitted, recorder.handler("first"), name="first")
    bus.subscribe(OrderSubmitted, recorder.handler("second"), name="second")
    bus.subscribe(OrderSubmitted, recorder.handler("third"), name="third")
    bus.subscribe_all(recorder.handler("monitor"), name="monitor")
    message = submitted(1)

    bus.publish(message)
    bus.drain()

    assert [name for name, _ in recorder.calls] == ["first", "second", "third", "journal", "monitor"]
    assert all(m is message for _, m in recorder.calls)


def test_subscribe_is_per_exact_type() -> None:
    bus = EventBus(CAPACITY)
    recorder = Recorder()
    bus.subscribe(BarClosed, recorder.handler("bars"), name="bars")

    bus.publish(
        TradeTick(
            symbol="BTCUSDT", trade_id="1", price=1.0, quantity=1.0, aggressor_side=OrderSide.BUY, ts_event=1, ts_init=1
        )
    )
    bus.publish(bar("BTCUSDT", 7))
    bus.drain()

    assert [sequence_of(m) for m in recorder.messages()] == [7]


def test_control_messages_jump_the_queue() -> None:
    bus, recorder = recording_bus()
    bus.publish(submitted(0))
    bus.publish(bar("BTCUSDT", 1))
    bus.publish(filled(2))
    stop = halt("emergency stop")

    bus.publish(stop)
    bus.drain()

    assert [n for n, _ in recorder.calls] == ["control", "execution", "market_data", "execution"]
    assert recorder.calls[0][1] is stop


def test_a_control_message_published_by_a_handler_is_dispatched_next() -> None:
    bus, recorder = recording_bus()
    stop = halt("kill switch")
    messages = [submitted(sequence) for sequence in range(4)]

    def escalate(message: Message) -> None:
        if message is messages[0]:
            bus.publish(stop)

    bus.subscribe(OrderSubmitted, escalate, name="escalate")
    for message in messages:
        bus.publish(message)
    bus.drain()

    assert recorder.messages() == [messages[0], stop, *messages[1:]]


def test_drain_with_a_limit_dispatches_at_most_that_many() -> None:
    bus, recorder = recording_bus()
    for sequence in range(5):
        bus.publish(submitted(sequence))

    first = bus.drain(limit=2)

    assert first == 2
    assert bus.depth == 3
    assert bus.drain() == 3
    assert [sequence_of(m) for m in recorder.messages()] == [0, 1, 2, 3, 4]


# --- commands ----------------------------------------------------------------------------------


def test_a_command_goes_to_its_one_registered_handler() -> None:
    bus = EventBus(CAPACITY)
    recorder = Recorder()
    bus.register(SubmitOrder, recorder.handler("order_manager"), name="order_manager")
    command = submit_order(1)

    bus.publish(command)
    bus.drain()

    assert recorder.calls == [("order_manager", command)]
    assert bus.unhandled_commands == 0


def test_a_second_register_of_a_command_raises() -> None:
    bus = EventBus(CAPACITY)
    recorder = Recorder()
    bus.register(SubmitOrder, recorder.handler("first"), name="first")

    with pytest.raises(ValueError):
        bus.register(SubmitOrder, recorder.handler("second"), name="second")

    bus.publish(submit_order(1))
    bus.drain()
    assert [name for name, _ in recorder.calls] == ["first"]


@pytest.mark.parametrize("command_type", [SubmitOrder, SetTradingState, CancelAllOrders])
def test_subscribe_to_a_command_raises_type_error(command_type: type[Message]) -> None:
    bus = EventBus(CAPACITY)

    with pytest.raises(TypeError):
        bus.subscribe(command_type, Recorder().handler("x"))


@pytest.mark.parametrize("event_type", [OrderSubmitted, BarClosed, OrderFilled])
def test_register_on_an_event_raises_type_error(event_type: type[Message]) -> None:
    bus = EventBus(CAPACITY)

    with pytest.raises(TypeError):
        bus.register(event_type, Recorder().handler("x"))


def test_a_command_without_a_handler_is_counted_and_still_journaled() -> None:
    bus = EventBus(CAPACITY)
    recorder = Recorder()
    bus.subscribe_all(recorder.handler("journal"), name="journal")
    first, second = submit_order(1), submit_order(2)

    bus.publish(first)
    bus.publish(second)
    bus.drain()

    assert bus.unhandled_commands == 2
    assert bus.metrics().unhandled_commands == 2
    assert recorder.calls == [("journal", first), ("journal", second)]


# --- isolation ------------------------------------------------------------------------------------


class Boom(Exception):
    """The failure a test handler raises."""


def test_a_raising_handler_does_not_stop_later_handlers_or_messages() -> None:
    errors: list[tuple[str, Message, BaseException]] = []
    bus = EventBus(CAPACITY, on_handler_error=lambda *args: errors.append(args))
    recorder = Recorder()
    raised: list[Boom] = []

    def explode(message: Message) -> None:
        error = Boom(f"bad message {message.id}")
        raised.append(error)
        raise error

    bus.subscribe(OrderSubmitted, recorder.handler("before"), name="before")
    bus.subscribe(OrderSubmitted, explode, name="exploding_strategy")
    bus.subscribe(OrderSubmitted, recorder.handler("after"), name="after")
    bus.subscribe_all(recorder.handler("journal"), name="journal")
    messages = [submitted(0), submitted(1), submitted(2)]

    for message in messages:
        bus.publish(message)
    dispatched = bus.drain()

    assert dispatched == 3
    assert recorder.calls == [(name, message) for message in messages for name in ("before", "after", "journal")]
    assert bus.handler_errors == 3
    assert bus.metrics().handler_errors == 3
    assert bus.metrics().handler_latency_ns["exploding_strategy"]["errors"] == 3
    assert bus.metrics().handler_latency_ns["after"]["errors"] == 0
    assert len(errors) == 3
    for (name, message, error), expected_message, expected_error in zip(errors, messages, raised, strict=True):
        assert name == "exploding_strategy"
        assert message is expected_message
        assert error is expected_error


def test_a_raising_handler_without_a_callback_is_still_isolated() -> None:
    bus, recorder = recording_bus()

    def explode(message: Message) -> None:
        raise RuntimeError("no")

    bus.subscribe(BarClosed, explode, name="explode")
    bus.publish(bar("BTCUSDT", 0))
    bus.publish(submitted(1))

    assert bus.drain() == 2
    assert [sequence_of(m) for m in recorder.messages()] == [0, 1]
    assert bus.handler_errors == 1


# --- overload, synchronous ------------------------------------------------------------------------


def _alternating(bus: EventBus) -> list[Message]:
    published: list[Message] = []
    for sequence in range(OVERLOAD):
        for message in (submitted(sequence), bar(SYMBOLS[sequence % len(SYMBOLS)], sequence)):
            bus.publish(message)
            published.append(message)
    return published


def _bursts(bus: EventBus) -> list[Message]:
    published: list[Message] = []
    for block in range(0, OVERLOAD, CAPACITY):
        burst = [bar(SYMBOLS[s % len(SYMBOLS)], s) for s in range(block, block + CAPACITY)]
        burst += [submitted(s) for s in range(block, block + CAPACITY)]
        for message in burst:
            bus.publish(message)
            published.append(message)
    return published


def _check_market_data(published: list[Message], delivered: list[Message], conflated: int) -> None:
    published_bars = [m for m in published if isinstance(m, BarClosed)]
    assert {m.id for m in delivered} <= {m.id for m in published_bars}
    assert conflated == len(published_bars) - len(delivered)
    for symbol in SYMBOLS:
        sent = [sequence_of(m) for m in published_bars if m.symbol == symbol]
        got = [sequence_of(m) for m in delivered if m.symbol == symbol]  # type: ignore[attr-defined]
        assert got, symbol
        assert got[-1] == sent[-1], f"{symbol}: newest value not delivered"
        assert got == sorted(set(got)), f"{symbol}: delivered out of publish order"


@pytest.mark.parametrize("interleave", [_alternating, _bursts], ids=["alternating", "bursts"])
def test_sync_overload_keeps_execution_conflates_market_data_and_puts_control_first(
    interleave: Callable[[EventBus], list[Message]],
) -> None:
    bus, recorder = recording_bus()

    published = interleave(bus)
    assert bus.metrics().depth_by_lane["execution"] <= CAPACITY
    mark = len(recorder.calls)
    queued_before_control = bus.depth
    controls = [halt(f"stop {i}") for i in range(3)]
    for control in controls:
        bus.publish(control)
    bus.drain()

    assert queued_before_control > 0
    assert [m for _, m in recorder.calls[mark : mark + 3]] == controls
    execution = [sequence_of(m) for m in recorder.messages("execution")]
    assert execution == list(range(OVERLOAD)), "execution messages lost or reordered"
    _check_market_data(published, recorder.messages("market_data"), bus.conflated)
    assert bus.conflated > 0
    assert bus.depth == 0
    metrics = bus.metrics()
    assert metrics.published == 2 * OVERLOAD + len(controls)
    assert metrics.dispatched == len(recorder.calls)
    assert metrics.published == metrics.dispatched + metrics.conflated


def test_a_full_market_data_lane_never_drops_a_symbols_only_value() -> None:
    bus, recorder = recording_bus(capacity=3)
    for sequence in range(3):
        bus.publish(bar("BTCUSDT", sequence))

    bus.publish(bar("ETHUSDT", 3))  # no pending ETHUSDT bar to replace
    bus.publish(bar("BTCUSDT", 4))  # replaces the newest pending BTCUSDT bar
    bus.drain()

    delivered = [(m.symbol, sequence_of(m)) for m in recorder.messages()]  # type: ignore[attr-defined]
    assert delivered == [("BTCUSDT", 0), ("BTCUSDT", 1), ("BTCUSDT", 4), ("ETHUSDT", 3)]
    assert bus.conflated == 1
    assert bus.overflow == 1


_kinds = st.sampled_from(["execution", "market_data", "control"])


@settings(max_examples=100, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=8),
    plan=st.lists(st.tuples(_kinds, st.sampled_from(SYMBOLS[:3])), max_size=120),
    drain_every=st.integers(min_value=0, max_value=40),
)
def test_overload_invariants_hold_for_random_publish_sequences(
    capacity: int, plan: list[tuple[str, str]], drain_every: int
) -> None:
    bus, recorder = recording_bus(capacity=capacity)
    published: list[Message] = []

    for sequence, (kind, symbol) in enumerate(plan):
        if kind == "execution":
            message: Message = submitted(sequence)
        elif kind == "market_data":
            message = bar(symbol, sequence)
        else:
            message = halt(f"stop-{sequence}")
        bus.publish(message)
        published.append(message)
        if drain_every and sequence % drain_every == drain_every - 1:
            bus.drain()
    bus.drain()

    sent_execution = [m for m in published if isinstance(m, OrderSubmitted)]
    assert recorder.messages("execution") == sent_execution
    assert recorder.messages("control") == [m for m in published if isinstance(m, SetTradingState)]
    delivered_bars = recorder.messages("market_data")
    published_bars = [m for m in published if isinstance(m, BarClosed)]
    assert bus.conflated == len(published_bars) - len(delivered_bars)
    for symbol in {m.symbol for m in published_bars}:
        sent = [sequence_of(m) for m in published_bars if m.symbol == symbol]
        got = [sequence_of(m) for m in delivered_bars if m.symbol == symbol]  # type: ignore[attr-defined]
        assert got and got[-1] == sent[-1]
        assert got == sorted(set(got))
    assert bus.published == bus.dispatched + bus.conflated


# --- overload, asyncio -----------------------------------------------------------------------------


def _count_to(recorder_calls: list[object], target: int, event: asyncio.Event) -> Callable[[Message], None]:
    def check(message: Message) -> None:
        if len(recorder_calls) >= target:
            event.set()

    return check


def test_async_producer_with_put_loses_nothing_at_ten_times_capacity() -> None:
    async def scenario() -> tuple[EventBus, Recorder]:
        bus = EventBus(CAPACITY, batch_size=37)
        recorder = Recorder()
        done = asyncio.Event()
        bus.subscribe(OrderFilled, recorder.handler("fills"), name="fills")
        bus.subscribe(OrderFilled, _count_to(recorder.calls, OVERLOAD, done), name="done")

        async def produce() -> None:
            for sequence in range(OVERLOAD):
                await bus.put(filled(sequence))

        runner = asyncio.create_task(bus.run())
        producer = asyncio.create_task(produce())
        try:
            await asyncio.wait_for(done.wait(), TIMEOUT_SECONDS)
            await asyncio.wait_for(producer, TIMEOUT_SECONDS)
        finally:
            bus.stop()
            await asyncio.wait_for(runner, TIMEOUT_SECONDS)
        return bus, recorder

    bus, recorder = asyncio.run(scenario())

    assert [sequence_of(m) for m in recorder.messages("fills")] == list(range(OVERLOAD))
    assert bus.overflow == 0
    assert bus.high_water_mark <= CAPACITY
    assert bus.published == bus.dispatched == OVERLOAD
    assert bus.depth == 0


async def _started(bus: EventBus) -> asyncio.Task[None]:
    """Start run() and return once it has dispatched a warm-up message."""
    running = asyncio.Event()
    bus.subscribe(OrderAccepted, lambda message: running.set(), name="warm_up")
    runner = asyncio.create_task(bus.run())
    bus.publish(OrderAccepted(client_order_id="w-0", venue_order_id="0", symbol="BTCUSDT", ts_event=0, ts_init=0))
    await asyncio.wait_for(running.wait(), TIMEOUT_SECONDS)
    return runner


def test_async_publish_to_a_full_execution_lane_outside_a_handler_raises_bus_full() -> None:
    async def scenario() -> tuple[EventBus, Recorder, BaseException | None]:
        bus = EventBus(CAPACITY)
        recorder = Recorder()
        drained = asyncio.Event()
        bus.subscribe(OrderSubmitted, recorder.handler("execution"), name="execution")
        bus.subscribe(OrderSubmitted, _count_to(recorder.calls, CAPACITY + 1, drained), name="done")
        runner = await _started(bus)
        error: BaseException | None = None
        try:
            for sequence in range(CAPACITY):  # no await: run() cannot drain in between
                bus.publish(submitted(sequence))
            try:
                bus.publish(submitted(CAPACITY))
            except BusFullError as raised:
                error = raised
            assert bus.metrics().depth_by_lane["execution"] == CAPACITY
            await bus.put(submitted(CAPACITY))  # the retry the error asks for
            await asyncio.wait_for(drained.wait(), TIMEOUT_SECONDS)
        finally:
            bus.stop()
            await asyncio.wait_for(runner, TIMEOUT_SECONDS)
        return bus, recorder, error

    _, recorder, error = asyncio.run(scenario())

    assert isinstance(error, BusFullError)
    assert isinstance(error, RetryLaterError)
    assert [sequence_of(m) for m in recorder.messages("execution")] == list(range(CAPACITY + 1))


def test_a_refused_publish_is_not_counted_as_published() -> None:
    async def scenario() -> EventBus:
        bus = EventBus(CAPACITY)
        runner = await _started(bus)
        try:
            for sequence in range(CAPACITY):
                bus.publish(submitted(sequence))
            with pytest.raises(BusFullError):
                bus.publish(submitted(CAPACITY))
            metrics = bus.metrics()
        finally:
            bus.stop()
            await asyncio.wait_for(runner, TIMEOUT_SECONDS)
        # Every counted publish is dispatched, queued or conflated: nothing looks lost.
        assert metrics.published == metrics.dispatched + metrics.depth + metrics.conflated
        return bus

    asyncio.run(scenario())


def test_a_handler_publishing_into_a_full_execution_lane_is_accepted_as_overflow() -> None:
    capacity = 10
    fan_out = 3 * capacity

    async def scenario() -> tuple[EventBus, Recorder]:
        bus = EventBus(capacity)
        recorder = Recorder()
        done = asyncio.Event()

        def split_parent(message: Message) -> None:
            for sequence in range(fan_out):
                bus.publish(submitted(sequence))

        bus.subscribe(OrderFilled, split_parent, name="router")
        bus.subscribe(OrderSubmitted, recorder.handler("child"), name="child")
        bus.subscribe(OrderSubmitted, _count_to(recorder.calls, fan_out, done), name="done")
        runner = await _started(bus)
        try:
            bus.publish(filled(0))
            await asyncio.wait_for(done.wait(), TIMEOUT_SECONDS)
        finally:
            bus.stop()
            await asyncio.wait_for(runner, TIMEOUT_SECONDS)
        return bus, recorder

    bus, recorder = asyncio.run(scenario())

    assert [sequence_of(m) for m in recorder.messages("child")] == list(range(fan_out))
    assert bus.overflow == fan_out - capacity
    assert bus.handler_errors == 0
    assert bus.high_water_mark == fan_out


def test_a_handler_publishing_into_a_full_lane_during_a_sync_drain_is_accepted() -> None:
    bus, recorder = recording_bus(capacity=2)

    def fan_out(message: Message) -> None:
        for sequence in range(1, 6):
            bus.publish(submitted(sequence))

    bus.subscribe(OrderFilled, fan_out, name="router")
    bus.publish(filled(0))
    bus.drain()

    assert [sequence_of(m) for m in recorder.messages("execution")] == [0, 1, 2, 3, 4, 5]
    assert bus.overflow == 3


# --- metrics -------------------------------------------------------------------------------------------


def test_metrics_report_depth_counts_and_handler_latency() -> None:
    bus, _ = recording_bus()
    for sequence in range(5):
        bus.publish(submitted(sequence))
    for sequence in range(2):
        bus.publish(bar("BTCUSDT", sequence))
    bus.publish(halt("x"))

    before = bus.metrics()
    bus.drain()
    after = bus.metrics()

    assert before.depth == 8
    assert before.depth_by_lane == {"control": 1, "execution": 5, "market_data": 2}
    assert before.published == 8
    assert before.dispatched == 0
    assert before.capacity == CAPACITY
    assert after.depth == 0
    assert after.depth_by_lane == {"control": 0, "execution": 0, "market_data": 0}
    assert after.high_water_mark == 8
    assert after.published == 8
    assert after.dispatched == 8
    assert after.conflated == 0
    latency = after.handler_latency_ns
    assert set(latency) == {"execution", "fills", "market_data", "control"}
    assert latency["execution"]["calls"] == 5
    assert latency["market_data"]["calls"] == 2
    assert latency["control"]["calls"] == 1
    assert latency["fills"]["calls"] == 0
    for name in ("execution", "market_data", "control"):
        assert latency[name]["mean_ns"] > 0
        assert latency[name]["max_ns"] >= latency[name]["mean_ns"]
        assert latency[name]["p99_ns_upper_bound"] >= latency[name]["mean_ns"] / 2
        assert latency[name]["errors"] == 0


def test_metrics_count_conflation_and_deliver_the_newest_value() -> None:
    bus, recorder = recording_bus(capacity=2)
    for sequence in range(10):
        bus.publish(bar("BTCUSDT", sequence))

    assert bus.metrics().depth == 2
    bus.drain()

    assert bus.metrics().conflated == 8
    assert [sequence_of(m) for m in recorder.messages()] == [0, 9]


def test_high_water_mark_is_never_below_the_current_depth() -> None:
    bus, _ = recording_bus()
    for sequence in range(5):
        bus.publish(submitted(sequence))

    metrics = bus.metrics()

    assert metrics.depth == 5
    assert metrics.high_water_mark >= metrics.depth


def test_high_water_mark_sees_messages_published_by_handlers() -> None:
    bus, _ = recording_bus()

    def fan_out(message: Message) -> None:
        for sequence in range(1, 8):
            bus.publish(submitted(sequence))

    bus.subscribe(OrderFilled, fan_out, name="router")
    bus.publish(filled(0))
    bus.drain()

    assert bus.metrics().high_water_mark == 7


def test_unmeasured_handlers_still_count_calls() -> None:
    bus, _ = recording_bus(measure_latency=False)
    for sequence in range(3):
        bus.publish(submitted(sequence))

    bus.drain()

    latency = bus.metrics().handler_latency_ns["execution"]
    assert latency["calls"] == 3
    assert latency["mean_ns"] == 0.0


@settings(max_examples=100, deadline=None)
@given(script=st.lists(st.sampled_from(["submit", "fill", "bar", "subscribe", "subscribe_all", "read"]), max_size=40))
def test_unmeasured_call_counts_equal_the_measured_ones_across_new_subscriptions(script: list[str]) -> None:
    # Arrange: the same script on a measured and an unmeasured bus (the unmeasured one counts per message type)
    buses = [recording_bus(measure_latency=True)[0], recording_bus(measure_latency=False)[0]]

    # Act
    for step, action in enumerate(script):
        for bus in buses:
            if action == "submit":
                bus.publish(submitted(step))
            elif action == "fill":
                bus.publish(filled(step))
            elif action == "bar":
                bus.publish(bar("BTCUSDT", step))
            elif action == "subscribe":
                bus.subscribe(OrderSubmitted, lambda _: None, name=f"late-{step}")
            elif action == "subscribe_all":
                bus.subscribe_all(lambda _: None, name=f"all-{step}")
            else:
                bus.metrics()
            bus.drain()

    # Assert
    measured, unmeasured = ({name: v["calls"] for name, v in b.metrics().handler_latency_ns.items()} for b in buses)
    assert unmeasured == measured


def test_capacity_below_one_is_rejected() -> None:
    with pytest.raises(ValueError):
        EventBus(0)


# --- determinism ---------------------------------------------------------------------------------------


def _replay() -> list[tuple[str, str, int, int]]:
    """Run one fixed scenario on a fresh bus and return the handler call log."""
    reset_message_ids()
    bus = EventBus(capacity=16)
    recorder = Recorder()

    def router(message: Message) -> None:
        if sequence_of(message) % 3 == 0:
            bus.publish(filled(sequence_of(message)))

    def fragile(message: Message) -> None:
        if int(message.close) % 7 == 0:  # type: ignore[attr-defined]
            raise ValueError("bad bar")

    bus.subscribe(OrderSubmitted, router, name="router")
    bus.subscribe(OrderSubmitted, recorder.handler("orders"), name="orders")
    bus.subscribe(OrderFilled, recorder.handler("fills"), name="fills")
    bus.subscribe(BarClosed, fragile, name="fragile")
    bus.subscribe(BarClosed, recorder.handler("bars"), name="bars")
    bus.register(SetTradingState, recorder.handler("control"), name="control")
    bus.subscribe_all(recorder.handler("journal"), name="journal")

    for sequence in range(200):
        bus.publish(submitted(sequence))
        bus.publish(bar(SYMBOLS[sequence % 3], sequence))
        if sequence % 50 == 49:
            bus.publish(halt(f"check {sequence}"))
    bus.drain()
    return [(name, type(message).__name__, message.id, message.ts_event) for name, message in recorder.calls]


def test_the_same_publishes_give_the_same_handler_calls() -> None:
    first = _replay()
    second = _replay()

    assert first == second
    assert len(first) > 400


def test_a_stop_before_the_loop_starts_ends_the_loop_when_it_does() -> None:
    # Arrange
    bus = EventBus()

    async def scenario() -> bool:
        runner = asyncio.create_task(bus.run())
        bus.stop()
        await asyncio.wait([runner], timeout=5)
        return runner.done()

    # Act
    finished = asyncio.run(scenario())

    # Assert
    assert finished
