"""The live venue's watch against a local Binance, on one simulated clock: a 418 ban, REST polling, margin calls.

keel's pipeline trades through the Binance adapter; the local Binance's
simulated exchange is fed the recorded bars keel's bus carries. Nothing
sleeps: the clock is simulated and each check of the venue is called
directly, as its watch loop calls it every second.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from keel.api.binance.constants import ACCOUNT_PATH, EXCHANGE_INFO_PATH
from keel.api.binance.local_binance import LocalBinance
from keel.api.binance.polling import BreakerState
from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_SECOND, SimulatedClock
from keel.core.errors import OperatorActionRequiredError, RequestRejectedError, RetryLaterError
from keel.core.fsm import TradingState
from keel.core.instruments import Instrument, load_instruments
from keel.core.messages import (
    BarClosed,
    CancelOrder,
    MarginCalled,
    OrderFilled,
    SubmitOrder,
    SystemHealth,
    VenueConditionChanged,
)
from keel.core.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from keel.core.ports import MarginType, PositionMode
from keel.integration.live import BinanceVenue
from keel.integration.pipeline import Pipeline, build_exchange, build_monitors, build_pipeline
from keel.integration.recovery import SessionPlan
from keel.integration.system_monitor import SystemMonitor
from kit import real_bars

KEY, SECRET = "venue-test-key", "venue-test-secret"


def venue_config(rest_url: str, **binance: Any) -> KeelConfig:
    sections: dict[str, dict[str, Any]] = {
        "live": {"confirm": True},
        "binance": {"rest_url": rest_url, "ws_url": rest_url.replace("http://", "ws://"), **binance},
        "data": {"symbols": ["BTCUSDT"]},
        "strategy": {"warmup_bars": 0},
    }
    environ = {"KEEL_BINANCE_API_KEY": KEY, "KEEL_BINANCE_API_SECRET": SECRET}
    return load_config("live", environ=environ, overrides=sections)


@dataclass
class Live:
    """keel's pipeline on a BinanceVenue, a local Binance, one simulated clock and the bus's events."""

    venue: BinanceVenue
    server: LocalBinance
    pipeline: Pipeline
    monitor: SystemMonitor
    clock: SimulatedClock
    bars: list[BarClosed]
    fills: list[OrderFilled]
    conditions: list[VenueConditionChanged]
    skew_ms: list[int]

    def advance(self, seconds: float) -> None:
        self.clock.advance_to(self.clock.timestamp_ns() + int(seconds * NANOS_PER_SECOND))

    async def bar(self, bar: BarClosed) -> None:
        """Both keel and the local venue see the bar; the bus and the venue's calls settle."""
        self.clock.advance_to(max(self.clock.timestamp_ns(), bar.ts_event))
        self.pipeline.bus.publish(bar)
        self.server.on_market_event(bar)
        await self.settle()

    async def settle(self) -> None:
        for _ in range(50):
            self.pipeline.bus.drain()
            await asyncio.sleep(0)
        await self.server.publish()
        for _ in range(50):
            self.pipeline.bus.drain()
            await asyncio.sleep(0.001)


@pytest_asyncio.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    bars = real_bars("BTCUSDT", 60)
    clock = SimulatedClock(bars[0].open_time)
    probe = venue_config("http://127.0.0.1:1", poll_interval_seconds=5.0, poll_failures_before_pause=2)
    instruments = load_instruments(probe.exchange.instruments)
    exchange = build_exchange(probe, {"BTCUSDT": instruments["BTCUSDT"]}, clock, Decimal("100000"))
    server = LocalBinance(exchange, clock, KEY, SECRET)
    url = await server.start()
    config = venue_config(url, poll_interval_seconds=5.0, poll_failures_before_pause=2, poll_pause_seconds=30.0)

    async def no_wait(seconds: float) -> None:
        clock.advance_to(clock.timestamp_ns() + int(seconds * NANOS_PER_SECOND))

    skew_ms = [0]
    venue = BinanceVenue(config, local_ms=lambda: clock.timestamp_ns() // NANOS_PER_MILLI + skew_ms[0], sleep=no_wait)
    bus = EventBus()
    adapter = venue.exchange({"BTCUSDT": instruments["BTCUSDT"]}, clock)
    pipeline = build_pipeline(config, instruments, bus, clock, exchange=adapter)
    monitor, _feeds = build_monitors(config, bus, clock)
    fills: list[OrderFilled] = []
    conditions: list[VenueConditionChanged] = []
    bus.subscribe(OrderFilled, fills.append, name="test.fills")
    bus.subscribe(VenueConditionChanged, conditions.append, name="test.conditions")
    venue.attach(pipeline)
    pipeline.start()
    monitor.start()
    bus.drain()
    await venue.open()
    venue.prepare_streams(pipeline)
    made = Live(venue, server, pipeline, monitor, clock, bars, fills, conditions, skew_ms)
    await made.bar(bars[0])
    yield made
    await venue.disconnect()
    await server.drop_streams()
    await server.stop()


def market_order(live: Live, side: OrderSide, quantity: str, number: int) -> SubmitOrder:
    now = live.clock.timestamp_ns()
    return SubmitOrder(
        client_order_id=f"keel-live-{number}",
        symbol="BTCUSDT",
        side=side,
        order_type=OrderType.MARKET,
        quantity=Decimal(quantity),
        ts_event=now,
        ts_init=now,
    )


async def until(live: Live, condition: Callable[[], bool], attempts: int = 400) -> None:
    for _ in range(attempts):
        if condition():
            return
        await live.settle()
    raise AssertionError("the condition never held")


@pytest.mark.asyncio
async def test_a_418_ban_halts_trading_with_the_reason_in_health_and_trading_returns_when_it_ends(live: Live) -> None:
    # Arrange: Binance bans the IP for 120 s; keel learns it from the next answer (HTTP 418)
    live.server.banned_until_ms = live.clock.timestamp_ns() // NANOS_PER_MILLI + 120_000
    with pytest.raises(RetryLaterError):
        await live.venue.adapter.positions()  # type: ignore[union-attr]

    # Act
    await live.venue.check()
    await live.settle()
    during = (live.pipeline.risk.trading_state, live.monitor.health, live.monitor.reasons())
    live.advance(121)
    await live.venue.check()
    await live.settle()

    # Assert
    assert during[0] is TradingState.HALTED and during[1] is SystemHealth.DEGRADED
    assert any("HTTP 418" in reason for reason in during[2])
    assert live.pipeline.risk.trading_state is TradingState.ACTIVE
    bans = [c.active for c in live.conditions if c.condition == "banned"]
    assert bans == [True, False]
    assert live.venue.limiter.banned is False


@pytest.mark.asyncio
async def test_with_the_user_stream_down_orders_and_fills_are_polled_once_each_and_the_stream_takes_over_again(
    live: Live,
) -> None:
    # Arrange: the stream never connected and Binance refuses it; keel sends orders that fill
    live.server.refuse_streams = True
    stream = live.venue.stream
    assert stream is not None
    bus = live.pipeline.bus
    for number, side in enumerate((OrderSide.BUY, OrderSide.BUY, OrderSide.SELL), 1):
        bus.publish(market_order(live, side, "0.010", number))
        await live.settle()

    # Act: bars fill the orders; every 5 s of the clock the watch polls (the stream stays down)
    for bar in live.bars[1:6]:
        await live.bar(bar)
        live.advance(5)
        await live.venue.check()
        await live.settle()
    polled = (len(live.fills), live.venue.conditions.get("user_stream", ""), live.monitor.health)
    # The stream comes back: it catches up from the last fill and takes over
    live.server.refuse_streams = False
    session = asyncio.ensure_future(stream.run_session())
    await until(live, lambda: stream.connected)
    await live.venue.check()
    bus.publish(market_order(live, OrderSide.SELL, "0.010", 4))
    await live.settle()
    for bar in live.bars[6:9]:
        await live.bar(bar)
    await until(live, lambda: len(live.fills) >= 4)
    await live.venue.check()
    await live.settle()
    await live.server.drop_streams()
    await session

    # Assert: every venue trade reached keel exactly once, by polling while down and by the stream after
    venue_trades = await live.server.exchange.account_trades("BTCUSDT")
    assert polled[0] == 3 and "polling orders and positions over REST" in polled[1]
    assert polled[2] is SystemHealth.DEGRADED
    assert Counter(f.trade_id for f in live.fills) == Counter(t.trade_id for t in venue_trades)
    assert live.pipeline.orders.duplicate_fills == 0
    assert live.venue.poller is not None and live.venue.poller.polls >= 1
    assert [(c.condition, c.active) for c in live.conditions] == [("user_stream", True), ("user_stream", False)]
    assert live.pipeline.orders.position("BTCUSDT") == Decimal("0.000")
    assert live.monitor.health is SystemHealth.HEALTHY


@pytest.mark.asyncio
async def test_the_poller_pauses_behind_its_circuit_breaker_while_binance_fails_and_tries_again_later(
    live: Live,
) -> None:
    # Arrange: the stream is down and every REST answer is a 5xx
    live.server.refuse_streams = True
    poller = live.venue.poller
    assert poller is not None
    await live.server.stop()

    # Act: two failed polls open the breaker; during its 30 s pause no poll is tried
    for _ in range(4):
        live.advance(5)
        await live.venue.check()
        await live.settle()
    paused = (poller.breaker.state, poller.failed_polls, live.venue.conditions.get("user_stream", ""))
    live.advance(30)
    trial_allowed = poller.breaker.allows()

    # Assert
    assert paused[0] is BreakerState.OPEN and paused[1] == 2
    assert "circuit breaker" in paused[2]
    assert trial_allowed


@pytest.mark.asyncio
async def test_a_margin_call_on_the_user_stream_reaches_the_bus_and_makes_health_unhealthy(live: Live) -> None:
    # Arrange
    stream = live.venue.stream
    assert stream is not None
    calls: list[MarginCalled] = []
    live.pipeline.bus.subscribe(MarginCalled, calls.append, name="test.margin_calls")
    session = asyncio.ensure_future(stream.run_session())
    await until(live, lambda: stream.connected)
    payload = {
        "e": "MARGIN_CALL",
        "E": live.clock.timestamp_ns() // NANOS_PER_MILLI,
        "cw": "3.16812045",
        "p": [
            {
                "s": "BTCUSDT",
                "ps": "LONG",
                "pa": "1.327",
                "mt": "CROSSED",
                "iw": "0",
                "mp": "187.17127",
                "up": "-1.166074",
                "mm": "1.614445",
            }
        ],
    }

    # Act
    await live.server.push_event(payload)
    await until(live, lambda: bool(calls))
    await live.server.drop_streams()
    await session

    # Assert
    (call,) = calls
    assert call.cross_wallet_balance == Decimal("3.16812045")
    assert call.positions == (("BTCUSDT", "LONG", Decimal("1.327"), Decimal("187.17127"), Decimal("1.614445")),)
    assert live.monitor.health is SystemHealth.UNHEALTHY


@pytest.mark.asyncio
async def test_the_clock_offset_is_measured_every_interval_and_an_unmeasurable_clock_shows_in_health(
    live: Live,
) -> None:
    # Arrange: the local clock drifts 40 s ahead of Binance's after the start's measurement
    live.server.refuse_streams = False
    interval = live.venue.config.binance.time_sync_interval_seconds
    at_start = live.venue.venue_status()["exchange_server_time_offset_seconds"]
    live.skew_ms[0] = 40_000

    # Act: one interval later the watch measures again; then Binance stops answering for longer than 5 min
    live.advance(interval)
    await live.venue.check()
    remeasured = live.venue.venue_status()["exchange_server_time_offset_seconds"]
    await live.server.stop()
    live.advance(interval)
    await live.venue.check()
    live.advance(interval)
    await live.venue.check()
    await live.settle()

    # Assert: the drift is followed; an offset too old to sign with is a condition in health
    assert at_start == 0 and remeasured == -40.0
    assert "clock" in live.venue.conditions
    assert any("unsafe to sign" in reason for reason in live.monitor.reasons())
    assert live.monitor.health is SystemHealth.DEGRADED


@pytest.mark.asyncio
async def test_a_symbol_binance_does_not_list_stops_the_start_naming_it(tmp_path: Path) -> None:
    # Arrange: keel is to trade BTCUSDT and ETHUSDT; this Binance lists BTCUSDT only
    bars = real_bars("BTCUSDT", 1)
    clock = SimulatedClock(bars[0].open_time)
    probe = venue_config("http://127.0.0.1:1")
    instruments = load_instruments(probe.exchange.instruments)
    exchange = build_exchange(probe, {"BTCUSDT": instruments["BTCUSDT"]}, clock, Decimal("100000"))
    server = LocalBinance(exchange, clock, KEY, SECRET)
    url = await server.start()
    config = venue_config(url).model_copy(
        update={"data": probe.data.model_copy(update={"symbols": ["BTCUSDT", "ETHUSDT"]})}
    )
    venue = BinanceVenue(config, local_ms=lambda: clock.timestamp_ns() // NANOS_PER_MILLI)
    venue.exchange({s: instruments[s] for s in ("BTCUSDT", "ETHUSDT")}, clock)

    # Act
    try:
        with pytest.raises(OperatorActionRequiredError) as raised:
            await venue.open()
    finally:
        await venue.disconnect()
        await server.stop()

    # Assert: the start stops before trading, naming the symbol Binance does not list
    assert "ETHUSDT" in str(raised.value) and "BTCUSDT" not in str(raised.value)


@pytest.mark.asyncio
async def test_a_start_waits_for_an_exchange_info_that_does_not_answer_then_checks_the_filters() -> None:
    # Arrange: this Binance answers exchangeInfo with HTTP 503 twice, then publishes another BTCUSDT tick size
    clock = SimulatedClock(real_bars("BTCUSDT", 1)[0].open_time)
    probe = venue_config("http://127.0.0.1:1")
    configured = load_instruments(probe.exchange.instruments)["BTCUSDT"]
    moved = msgspec.structs.replace(configured, tick_size=Decimal("0.5"))
    server = LocalBinance(build_exchange(probe, {"BTCUSDT": moved}, clock, Decimal("100000")), clock, KEY, SECRET)
    server.answer_errors[EXCHANGE_INFO_PATH] = [(503, -1000, "Service Unavailable")] * 2
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)
        clock.advance_to(clock.timestamp_ns() + int(seconds * NANOS_PER_SECOND))

    venue = BinanceVenue(
        venue_config(await server.start()), local_ms=lambda: clock.timestamp_ns() // NANOS_PER_MILLI, sleep=no_wait
    )
    venue.exchange({"BTCUSDT": configured}, clock)

    # Act
    try:
        with pytest.raises(OperatorActionRequiredError) as raised:
            await venue.open()
    finally:
        await venue.disconnect()
        await server.stop()

    # Assert: asked again after each 503 (not started on unchecked filters), then refused on the filter it checked
    assert server.answer_errors[EXCHANGE_INFO_PATH] == [] and len(waits) >= 2
    assert "BTCUSDT tick_size (PRICE_FILTER.tickSize): configured 0.10, Binance 0.5" in str(raised.value)


async def open_against(binance_btc: Instrument, status: str = "TRADING") -> str:
    """Open a venue trading the configured BTCUSDT on a local Binance publishing ``binance_btc``; return its refusal."""
    clock = SimulatedClock(real_bars("BTCUSDT", 1)[0].open_time)
    probe = venue_config("http://127.0.0.1:1")
    configured = load_instruments(probe.exchange.instruments)["BTCUSDT"]
    exchange = build_exchange(probe, {"BTCUSDT": binance_btc}, clock, Decimal("100000"))
    server = LocalBinance(exchange, clock, KEY, SECRET)
    server.symbol_status["BTCUSDT"] = status
    venue = BinanceVenue(venue_config(await server.start()), local_ms=lambda: clock.timestamp_ns() // NANOS_PER_MILLI)
    venue.exchange({"BTCUSDT": configured}, clock)
    try:
        with pytest.raises(OperatorActionRequiredError) as raised:
            await venue.open()
    finally:
        await venue.disconnect()
        await server.stop()
    return str(raised.value)


@pytest.mark.asyncio
async def test_a_filter_binance_publishes_otherwise_stops_the_start_naming_it_both_values_and_the_refresh() -> None:
    # Arrange: Binance moved BTCUSDT's tick size and minimum notional since the instruments file was written
    configured = load_instruments(venue_config("http://127.0.0.1:1").exchange.instruments)["BTCUSDT"]
    assert (configured.tick_size, configured.min_notional) == (Decimal("0.10"), Decimal("100"))
    binance_btc = msgspec.structs.replace(configured, tick_size=Decimal("0.5"), min_notional=Decimal("50"))

    # Act
    message = await open_against(binance_btc)

    # Assert: symbol, filter, configured and Binance's values, and the command that refreshes the file
    assert "BTCUSDT tick_size (PRICE_FILTER.tickSize): configured 0.10, Binance 0.5" in message
    assert "BTCUSDT min_notional (MIN_NOTIONAL.notional): configured 100, Binance 50" in message
    assert "keel data instruments --download --symbols BTCUSDT" in message
    assert "step_size" not in message


@pytest.mark.asyncio
async def test_filters_equal_as_decimals_but_written_otherwise_do_not_stop_the_start(live: Live) -> None:
    # Arrange: the fixture's Binance publishes the configured filters; Binance writes 0.1 where the file has 0.10
    configured = load_instruments(venue_config("http://127.0.0.1:1").exchange.instruments)["BTCUSDT"]
    rewritten = msgspec.structs.replace(configured, tick_size=Decimal("0.1"), max_quantity=Decimal("1000.000"))
    exchange = build_exchange(live.venue.config, {"BTCUSDT": rewritten}, live.clock, Decimal("100000"))
    live.server.exchange = exchange

    # Act
    await live.venue.open()

    # Assert: the venue opened on the same filters
    assert live.venue.adapter is not None


@pytest.mark.asyncio
async def test_a_symbol_binance_lists_but_does_not_trade_stops_the_start_naming_it_and_its_status() -> None:
    # Arrange: Binance lists BTCUSDT with the configured filters, settling (delisting)
    configured = load_instruments(venue_config("http://127.0.0.1:1").exchange.instruments)["BTCUSDT"]

    # Act
    message = await open_against(configured, status="SETTLING")

    # Assert
    assert "BTCUSDT" in message and "SETTLING" in message


@pytest.mark.asyncio
async def test_keys_binance_stops_accepting_mid_run_show_in_health_until_it_accepts_them_again(live: Live) -> None:
    # Arrange: the key is revoked (or the IP taken off its whitelist) while keel runs
    live.server._api_key = "revoked"
    with pytest.raises(OperatorActionRequiredError):
        await live.venue.adapter.positions()  # type: ignore[union-attr]

    # Act
    await live.venue.check()
    await live.settle()
    during = (live.monitor.health, live.monitor.reasons())
    live.server._api_key = KEY
    await live.venue.adapter.positions()  # type: ignore[union-attr]
    await live.venue.check()
    await live.settle()

    # Assert: health named the refusal and what to check while it lasted
    assert during[0] is SystemHealth.DEGRADED
    assert any("-2015" in reason and "KEEL_BINANCE_API_KEY" in reason for reason in during[1])
    assert [c.active for c in live.conditions if c.condition == "keys"] == [True, False]
    assert "keys" not in live.venue.conditions


@pytest.mark.asyncio
async def test_keys_binance_refuses_at_the_start_stop_it_saying_which_variables_to_check(live: Live) -> None:
    # Arrange: keys of another account (the testnet's keys on mainnet, the usual mix-up)
    live.server._api_key = "another-account"

    # Act
    with pytest.raises(OperatorActionRequiredError) as raised:
        await live.venue.opening_capital(live.pipeline, SessionPlan(session=1, recover=False), None)  # type: ignore[arg-type]

    # Assert: Binance's refusal, and what to check
    message = str(raised.value)
    assert "-2015" in message
    assert "KEEL_BINANCE_API_KEY" in message and "KEEL_BINANCE_API_SECRET" in message
    assert live.venue.rest_url in message


@pytest.mark.asyncio
async def test_a_start_binance_answers_with_a_5xx_a_transient_code_or_an_unknown_outcome_is_tried_again(
    live: Live,
) -> None:
    # Arrange: the account read is answered HTTP 503, then -1001 (disconnected), then -1000 (outcome unknown)
    live.server.answer_errors[ACCOUNT_PATH] = [
        (503, -1000, "Service Unavailable"),
        (400, -1001, "Internal error; unable to process your request. Please try again."),
        (400, -1000, "An unknown error occurred while processing the request."),
    ]

    # Act
    capital = await live.venue.opening_capital(live.pipeline, SessionPlan(session=1, recover=False), None)  # type: ignore[arg-type]

    # Assert: tried again past each failure until Binance answered with the account
    assert capital == Decimal("100000")
    assert live.server.answer_errors[ACCOUNT_PATH] == []


@pytest.mark.asyncio
async def test_a_start_binance_refuses_definitively_stops_without_asking_again(live: Live) -> None:
    # Arrange: the account read is refused (-1102); the same request would be refused the same way
    live.server.answer_errors[ACCOUNT_PATH] = [(400, -1102, "Mandatory parameter 'timestamp' was not sent.")]

    # Act
    with pytest.raises(OperatorActionRequiredError) as raised:
        await live.venue.opening_capital(live.pipeline, SessionPlan(session=1, recover=False), None)  # type: ignore[arg-type]

    # Assert: stopped on Binance's refusal, which it carries with its code
    refusal = raised.value.__cause__
    assert isinstance(refusal, RequestRejectedError) and refusal.code == -1102


@pytest.mark.asyncio
async def test_a_cancel_binance_did_not_answer_is_sent_again_until_the_order_is_canceled(live: Live) -> None:
    # Arrange: a BUY resting far below the market, and a cancel Binance answers with HTTP 503 without canceling
    now = live.clock.timestamp_ns()
    resting = SubmitOrder(
        client_order_id="keel-live-rest",
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal("0.010"),
        price=Decimal("50000"),
        time_in_force=TimeInForce.GTC,
        ts_event=now,
        ts_init=now,
    )
    live.pipeline.bus.publish(resting)
    await live.settle()
    live.server.fail_cancels = 1
    live.pipeline.bus.publish(
        CancelOrder(client_order_id="keel-live-rest", symbol="BTCUSDT", ts_event=now, ts_init=now)
    )
    await live.settle()

    # Act: the order manager's resolve timer fires; then the watch polls the account (the stream is not up here)
    live.advance(6)
    live.pipeline.orders.resolve_unresolved()
    await live.settle()
    await live.venue.check()
    await live.settle()

    # Assert: the cancel went again; the order is canceled at Binance and in keel
    at_venue = await live.server.exchange.query_order("BTCUSDT", "keel-live-rest")
    assert at_venue is not None and at_venue.status is OrderStatus.CANCELED
    assert live.pipeline.orders.orders["keel-live-rest"].status is OrderStatus.CANCELED


async def open_on_account(prepare: Callable[[Any], Any]) -> tuple[Any, BaseException | None]:
    """Open a venue trading BTCUSDT on a local Binance whose account ``prepare`` set up; return it and any refusal."""
    clock = SimulatedClock(real_bars("BTCUSDT", 1)[0].open_time)
    probe = venue_config("http://127.0.0.1:1")
    instruments = load_instruments(probe.exchange.instruments)
    exchange = build_exchange(probe, {"BTCUSDT": instruments["BTCUSDT"]}, clock, Decimal("100000"))
    await prepare(exchange)
    server = LocalBinance(exchange, clock, KEY, SECRET)
    venue = BinanceVenue(venue_config(await server.start()), local_ms=lambda: clock.timestamp_ns() // NANOS_PER_MILLI)
    venue.exchange({"BTCUSDT": instruments["BTCUSDT"]}, clock)
    refusal = None
    try:
        await venue.open()
    except OperatorActionRequiredError as error:
        refusal = error
    finally:
        await venue.disconnect()
        await server.stop()
    return exchange, refusal


@pytest.mark.asyncio
async def test_a_start_sets_each_symbols_margin_type_and_leverage_to_the_configured_ones() -> None:
    # Arrange: the account trades BTCUSDT isolated at 2x; keel is configured for cross margin at 5x
    async def isolated_at_2x(exchange: Any) -> None:
        await exchange.set_margin_type("BTCUSDT", MarginType.ISOLATED)
        await exchange.set_leverage("BTCUSDT", 2)

    # Act
    exchange, refusal = await open_on_account(isolated_at_2x)

    # Assert
    assert refusal is None
    configuration = await exchange.symbol_configuration("BTCUSDT")
    assert (configuration.margin_type, configuration.leverage) == (MarginType.CROSSED, 5)


@pytest.mark.asyncio
async def test_a_start_on_a_hedge_mode_account_is_refused_saying_to_switch_to_one_way() -> None:
    # Arrange
    async def hedge(exchange: Any) -> None:
        await exchange.set_position_mode(PositionMode.HEDGE)

    # Act
    exchange, refusal = await open_on_account(hedge)

    # Assert: refused, and the account's mode left as the operator set it
    assert refusal is not None and "hedge mode" in str(refusal) and "one-way" in str(refusal)
    assert await exchange.position_mode() is PositionMode.HEDGE
