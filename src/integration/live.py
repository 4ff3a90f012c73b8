"""Live trading on Binance USD-M: the venue of a live session.

:class:`BinanceVenue` puts the :class:`~keel.api.binance.adapter.BinanceAdapter`
under a session's pipeline and runs beside the feed what a real venue
needs: the user-data stream (its listenKey kept alive) feeding fills and
order ends to the order manager, the offset to Binance's clock measured at
the start and every ``binance.time_sync_interval_seconds``, funding
payments read when the stream announces a settlement, and while the
stream is down, REST polling of orders and positions behind a circuit
breaker. Each condition (an IP ban, an unsafe clock, the stream down) is
published as ``VenueConditionChanged`` when it begins and ends, so the
system monitor shows it in health and a ban moves the trading state
(``monitor.venue_ban_state``). A ``MARGIN_CALL`` is published as
``MarginCalled``.

The account's keys come from the configuration's secrets (the environment
or ``KEEL_SECRET_FILE``), which hold them in a redacted type: nothing here
logs, journals or shows them. A live session's opening capital is the
account's wallet balance at its first start (journaled with
``SessionStarted``); every start reconciles with the account before trading.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import structlog

from keel.api import MarketCursor
from keel.api.binance.adapter import BinanceAdapter
from keel.api.binance.auth import ServerClock
from keel.api.binance.polling import AccountPoller, BreakerState, CircuitBreaker
from keel.api.binance.rest import BinanceRequestError, BinanceRestClient, RateLimiter, refuses_keys
from keel.api.binance.user_stream import ListenKeyKeeper, UserStream
from keel.config import KeelConfig
from keel.core.clock import NANOS_PER_MILLI, Clock
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import (
    ConfigurationError,
    InvalidTransitionError,
    KeelError,
    OperatorActionRequiredError,
    RequestRejectedError,
)
from keel.core.instruments import Instrument
from keel.core.messages import (
    Event,
    MarginCalled,
    MarkPriceUpdated,
    OrderFilled,
    PositionChanged,
    ReconciliationCompleted,
    SessionStarted,
    VenueConditionChanged,
)
from keel.core.ports import ExchangePort, MarginType, PositionMode
from keel.integration.pipeline import Pipeline
from keel.integration.recovery import ReplayedHistory, SessionPlan, plan_session, reconcile, restore_state
from keel.integration.venues import closed_session
from keel.persistence import Journal, Snapshots

_log = structlog.get_logger("keel.live")

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
WATCH_INTERVAL_SECONDS = 1.0
"""How often the venue's conditions (ban, clock, stream) are checked."""
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
RECONCILE_RETRY_SECONDS = 5.0
"""Wait between attempts to reconcile with a venue that does not answer."""


def live_endpoints(config: KeelConfig) -> tuple[str, str]:
    """Return the REST and WebSocket base URLs of a live run (testnet with ``live.testnet`` or ``binance.testnet``)."""
    binance = config.binance
    if config.live.testnet and not binance.testnet:
        binance = binance.model_copy(update={"testnet": True})
    return binance.endpoints()


class BinanceVenue:
    """The Binance USD-M account a live session trades.

    Parameters
    ----------
    config
        The configuration: ``binance`` (endpoints, recvWindow, intervals),
        ``live`` (testnet), ``secrets`` (the keys), ``data.symbols``.
    local_ms
        The local wall clock in ms (the corrected clock stamps SIGNED requests from it).
    sleep
        Waits between checks and reconnects.
    live_feed
        Whether the session's market data is Binance's live market. On the
        recorded feed replayed in real time, keel would send real orders on
        old prices: that runs only against a local Binance (a loopback
        ``binance.rest_url``), as the tests do.

    Raises
    ------
    ConfigurationError
        Without both API keys, or on the replayed feed against a remote Binance.
    """

    mode = "live"
    replays_history = False

    def __init__(
        self,
        config: KeelConfig,
        *,
        local_ms: Callable[[], int] | None = None,
        sleep: Sleep | None = None,
        live_feed: bool = False,
    ) -> None:
        secrets, settings = config.secrets, config.binance
        if secrets.binance_api_key is None or secrets.binance_api_secret is None:
            raise ConfigurationError(
                "environment",
                "secrets.binance_api_key",
                "live mode needs KEEL_BINANCE_API_KEY and KEEL_BINANCE_API_SECRET (environment or KEEL_SECRET_FILE)",
            )
        self.config = config
        self.rest_url, self.ws_url = live_endpoints(config)
        if not live_feed and urlsplit(self.rest_url).hostname not in _LOOPBACK:
            raise ConfigurationError(
                "configuration",
                "binance.rest_url",
                f"live trading on the replayed recorded feed would send real orders to {self.rest_url} on old "
                "prices; use the live market (--feed binance, paper.feed: binance) or a local Binance on 127.0.0.1",
            )
        self._local_ms = local_ms if local_ms is not None else _wall_ms
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self.server_clock = ServerClock(self._local_ms, settings.recv_window_ms)
        self.limiter = RateLimiter(self._venue_ms, self._sleep)
        self.client = BinanceRestClient(
            self.rest_url, secrets.binance_api_key, secrets.binance_api_secret, self.server_clock, self.limiter, None
        )
        self.symbols = tuple(config.data.symbols)
        self.adapter: BinanceAdapter | None = None
        self.stream: UserStream | None = None
        self.poller: AccountPoller | None = None
        self.keeper: ListenKeyKeeper | None = None
        self.conditions: dict[str, str] = {}
        self._pipeline: Pipeline | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._last_sync_ms: int | None = None
        self._last_poll_ms: int | None = None
        self._connected_ms = 0
        self._clock: Clock | None = None
        self._capital: Decimal | None = None
        self._instruments: dict[str, Instrument] = {}

    def __repr__(self) -> str:
        return f"BinanceVenue(rest_url={self.rest_url!r}, ws_url={self.ws_url!r})"

    def _venue_ms(self) -> int:
        return self.server_clock.local_ms() + self.server_clock.offset_ms

    # --- the session's venue -------------------------------------------------------------------

    def plan(self, journal: Journal, resume: bool) -> tuple[SessionPlan, MarketCursor | None]:
        """Recover the unfinished session (the feed is live: no cursor), or begin a fresh one."""
        plan = plan_session(journal)
        if plan.recover and not resume:
            _log.warning("a fresh live session was asked for: the unfinished session is closed", session=plan.session)
            journal.append([closed_session(plan.session, "closed unfinished: a fresh session was asked for")])
            plan = SessionPlan(session=plan.session + 1, recover=False)
        elif plan.recover:
            _log.warning("recovering an unfinished live session", session=plan.session)
        return plan, None

    def exchange(self, instruments: Mapping[str, Instrument], clock: Clock) -> ExchangePort:
        """Return the Binance adapter (its reports stamped by the session's clock)."""
        self._clock = clock
        self._instruments = dict(instruments)
        self.adapter = BinanceAdapter(self.client, clock.timestamp_ns, self._sleep, symbols=self.symbols)
        return self.adapter

    def restore(
        self,
        pipeline: Pipeline,
        journal: Journal,
        snapshots: Snapshots,
        plan: SessionPlan,
        history: ReplayedHistory | None,
    ) -> None:
        """Put keel's books back from snapshot and journal on the session's opening capital; the venue keeps its own."""
        self._capital = _journaled_capital(journal, plan)
        if self._capital is not None:
            _rebase(pipeline, self._capital)
        restore_state(pipeline, journal, snapshots, plan, history)

    def attach(self, pipeline: Pipeline) -> None:
        """Keep the pipeline: the stream's events and the venue's conditions go to its bus."""
        self._pipeline = pipeline
        pipeline.bus.subscribe(MarkPriceUpdated, self._on_mark_price, name="exchange.binance.marks")

    async def connect(self, pipeline: Pipeline) -> None:
        """Open the HTTP session, measure the clock, load the filters, start the stream and the watch."""
        await self.open()
        self.prepare_streams(pipeline)
        keeper, stream = self.keeper, self.stream
        assert keeper is not None and stream is not None
        self._tasks = [
            asyncio.create_task(self._guard(keeper.maintain(self._is_running), "listenKey"), name="listen-key"),
            asyncio.create_task(self._guard(stream.run(self._is_running), "user stream"), name="user-stream"),
            asyncio.create_task(self._watch(), name="venue-watch"),
        ]

    async def open(self) -> None:
        """Open the HTTP session, measure Binance's clock, check the filters and set the symbols' account settings.

        Raises
        ------
        OperatorActionRequiredError
            When Binance refuses the keys, the account is in hedge mode, or Binance refuses to set a
            symbol's margin type (an open position or order of it: -4047, -4048).
        InstrumentsDifferError
            When Binance does not trade a symbol of ``data.symbols``, or
            publishes a filter of it otherwise than ``exchange.instruments``.
        """
        self._http = aiohttp.ClientSession()
        self.client.use_session(self._http)
        self._running = True
        await self._retrying("measure the clock offset", self.client.sync_time)
        self._last_sync_ms = self._local_ms()
        adapter, instruments_file = self._adapter(), str(Path(self.config.exchange.instruments).resolve())
        await self._retrying(
            "check the instruments against Binance's filters",
            lambda: adapter.check_instruments(self._instruments, instruments_file),
        )
        await self._retrying("set each symbol's margin type and leverage", lambda: self._apply_settings(adapter))

    async def _apply_settings(self, adapter: BinanceAdapter) -> None:
        """Refuse a hedge-mode account; set each symbol's margin type and leverage to the configured ones.

        Raises
        ------
        OperatorActionRequiredError
            When the account is in hedge mode: keel's orders carry no position
            side, which Binance rejects there (-4061).
        """
        if await adapter.position_mode() is PositionMode.HEDGE:
            raise OperatorActionRequiredError(
                f"the Binance account at {self.rest_url} is in hedge mode; keel holds one net position per symbol "
                "and its orders carry no position side, which Binance rejects in hedge mode (-4061): switch the "
                "account to one-way mode (Binance allows it with no open position or order) and start again"
            )
        settings = self.config.exchange
        margin_type = MarginType(settings.margin_type)
        for symbol in sorted(self._instruments):
            current = await adapter.symbol_configuration(symbol)
            if current.margin_type is not margin_type:
                await adapter.set_margin_type(symbol, margin_type)
            if current.leverage != settings.leverage:
                await adapter.set_leverage(symbol, settings.leverage)
            if current.margin_type is not margin_type or current.leverage != settings.leverage:
                _log.warning(
                    "symbol's account settings changed to the configured ones",
                    symbol=symbol,
                    margin_type=f"{current.margin_type.value} -> {margin_type.value}",
                    leverage=f"{current.leverage} -> {settings.leverage}",
                )

    def prepare_streams(self, pipeline: Pipeline) -> None:
        """Build the user-data stream and its REST poller (:meth:`connect` runs them)."""
        adapter, seed, settings = self._adapter(), self.config.run.seed, self.config.binance
        self.keeper = ListenKeyKeeper(self.client, self._sleep, seed=seed)
        self.stream = UserStream(
            self.ws_url,
            self.keeper,
            adapter.events,
            self._on_stream,
            self._catch_up,
            self._now_ns,
            self._sleep,
            seed=seed,
            funding=adapter.funding_payments,
        )
        breaker = CircuitBreaker(
            self._local_ms, settings.poll_failures_before_pause, round(settings.poll_pause_seconds * 1000)
        )
        self.poller = AccountPoller(
            adapter,
            self.stream,
            lambda: [(o.symbol, o.client_order_id) for o in pipeline.orders.open_orders()],
            self._on_stream,
            breaker,
            self._now_ns,
        )
        self._connected_ms = self._local_ms()

    async def opening_capital(self, pipeline: Pipeline, plan: SessionPlan, journal: Journal) -> Decimal:
        """Return (and book) the session's opening capital: the wallet at its first start, journaled since.

        A recovered session's capital was booked by :meth:`restore`; a fresh one's is the wallet now.
        """
        if plan.recover and self._capital is not None:
            return self._capital
        balance = await self._retrying("read the account balance", self._adapter().balances)
        if not plan.recover:
            _rebase(pipeline, balance.wallet_balance)
        return balance.wallet_balance

    async def reconcile(self, pipeline: Pipeline, plan: SessionPlan) -> ReconciliationCompleted:
        """Reconcile with the account (every start), retrying while Binance does not answer."""
        since = plan.start_ts if plan.recover else pipeline.clock.timestamp_ns()
        return await self._retrying("reconcile with the account", lambda: reconcile(pipeline, since))

    async def disconnect(self) -> None:
        """Stop the stream, the listenKey upkeep and the watch; close the HTTP session."""
        self._running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.client.use_session(None)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def close(self) -> None:
        """Nothing is kept in files: the account's state is Binance's."""

    def venue_status(self) -> dict[str, Any]:
        """Return the connection's state: clock offset and uncertainty, rate-limit use, stream or polling, ban."""
        status: dict[str, Any] = {"venue": "binance", "rest_url": self.rest_url}
        status.update(self._adapter().venue_metrics())
        status["clock_uncertainty_ms"] = self.server_clock.uncertainty_ms
        stream, poller = self.stream, self.poller
        if stream is None or poller is None:
            status["user_data"] = "not started"
        elif stream.connected:
            status["user_data"] = "stream"
        else:
            status["user_data"] = f"polling (circuit breaker {poller.breaker.state.value})"
        status["banned_until_ms"] = self.limiter.banned_until_ms if self.limiter.banned else None
        status["conditions"] = dict(self.conditions)
        return status

    # --- beside the feed ------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self._local_ms() * NANOS_PER_MILLI if self._clock is None else self._clock.timestamp_ns()

    def _is_running(self) -> bool:
        return self._running

    def _adapter(self) -> BinanceAdapter:
        if self.adapter is None:
            raise RuntimeError("the Binance venue has no adapter yet: the session builds it")
        return self.adapter

    async def _catch_up(self, since_ns: int) -> list[OrderFilled]:
        return await self._adapter().account_trades(None, since_ns)

    def _on_stream(self, event: Event) -> None:
        """Route the account's events: order reports to the order manager, a margin call to the bus."""
        if isinstance(event, MarginCalled):
            self._bus_publish(event)
        elif not isinstance(event, PositionChanged):
            # keel books positions from fills; the venue's position updates are compared at reconciliation.
            self._adapter().report(event)

    def _on_mark_price(self, update: MarkPriceUpdated) -> None:
        self._adapter().set_mark_price(update.symbol, Decimal(str(update.mark_price)))

    def _bus_publish(self, event: Event) -> None:
        if self._pipeline is not None:
            self._pipeline.bus.publish(event)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` until it succeeds, waiting and trying again after any failure but a definitive one.

        Tried again: no answer, HTTP 5xx, 429 or 418, a transient code
        (-1001), an unknown outcome (-1000), Binance's refusal of the
        timestamp (the clock is measured again), what Binance has not
        published yet, and keel's own errors on the way but an impossible
        state change (raised: a retry would apply half-done work twice).

        Raises
        ------
        OperatorActionRequiredError
            When Binance refuses the keys, or the request itself (a definitive
            refusal: sending it again fails the same way), or anything else
            only an operator can fix.
        """
        while True:
            try:
                return await call()
            except OperatorActionRequiredError as error:
                cause = error.__cause__
                if refuses_keys(error):
                    raise OperatorActionRequiredError(self._keys_refused(str(error))) from error
                if not (isinstance(cause, BinanceRequestError) and cause.code is BinanceErrorCode.INVALID_TIMESTAMP):
                    raise
                _log.warning("Binance refused the timestamp; measuring the clock again", call=what)
                await self._sleep(RECONCILE_RETRY_SECONDS)
            except RequestRejectedError as error:
                raise OperatorActionRequiredError(
                    f"Binance at {self.rest_url} refused to {what} ({error}); sending the same request again would "
                    "be refused the same way: fix what Binance names (the account, the configuration) and start again"
                ) from error
            except InvalidTransitionError:
                raise  # keel's own state went wrong: trying again would apply half-done work twice
            except (KeelError, OSError) as error:
                _log.warning(f"could not {what}; trying again", **_failure(error))
                await self.check()
                await self._sleep(RECONCILE_RETRY_SECONDS)

    async def _guard(self, work: Awaitable[None], what: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the watch shows the stream down and polls instead
            _log.error("Binance background task ended", task=what, error=repr(error))

    async def _watch(self) -> None:
        while self._running:
            await self.check()
            await self._sleep(WATCH_INTERVAL_SECONDS)

    async def check(self) -> None:
        """Check the venue's conditions once: clock offset, ban, user-data stream (polling while it is down)."""
        now = self._local_ms()
        interval_ms = self.config.binance.time_sync_interval_seconds * 1000
        if self._http is not None and (self._last_sync_ms is None or now - self._last_sync_ms >= interval_ms):
            try:
                await self.client.sync_time()
                self._last_sync_ms = now
            except (KeelError, OSError) as error:
                _log.warning("measuring the offset to Binance's clock failed", error=str(error))
        self._check_clock()
        self._check_ban()
        self._check_keys()
        await self._check_stream(now)

    def _check_clock(self) -> None:
        clock = self.server_clock
        reason = ""
        if not clock.is_safe():
            uncertainty = "unmeasured" if clock.uncertainty_ms is None else f"+/- {clock.uncertainty_ms} ms"
            reason = (
                f"offset to Binance's clock unsafe to sign with ({uncertainty}, recvWindow {clock.recv_window_ms} ms):"
                " signed requests refused locally"
            )
        self._condition("clock", reason)

    def _check_ban(self) -> None:
        limiter = self.limiter
        until_ns = limiter.banned_until_ms * NANOS_PER_MILLI
        reason = ""
        if limiter.banned:
            seconds = (limiter.banned_until_ms - self._venue_ms()) / 1000
            reason = f"Binance banned this IP (HTTP 418): nothing is sent for {seconds:.0f} s"
        self._condition("banned", reason, until_ns if reason else None)

    def _check_keys(self) -> None:
        refusal = self.client.key_refusal
        self._condition("keys", self._keys_refused(refusal) if refusal else "")

    def _keys_refused(self, refusal: str) -> str:
        """Say that Binance refuses the keys, and what to check."""
        return (
            f"Binance at {self.rest_url} refuses the API keys ({refusal}): check that KEEL_BINANCE_API_KEY and "
            "KEEL_BINANCE_API_SECRET are a key of that Binance's account (testnet keys are not mainnet's), with "
            "futures trading enabled and this host's IP on its whitelist if it has one"
        )

    async def _check_stream(self, now: int) -> None:
        stream, poller = self.stream, self.poller
        if stream is None or poller is None:
            return
        poll_ms = self.config.binance.poll_interval_seconds * 1000
        down = not stream.connected and (stream.connections > 0 or now - self._connected_ms >= poll_ms)
        if not down:
            self._condition("user_stream", "")
            return
        if self._last_poll_ms is None or now - self._last_poll_ms >= poll_ms:
            self._last_poll_ms = now
            await poller.poll()
        breaker = poller.breaker
        if breaker.state is BreakerState.OPEN:
            reason = (
                f"user-data stream down; REST polling paused by the circuit breaker after {breaker.failures} "
                f"failed polls ({poller.last_error})"
            )
        else:
            reason = "user-data stream down: polling orders and positions over REST"
        self._condition("user_stream", reason)

    def _condition(self, name: str, reason: str, until_ns: int | None = None) -> None:
        """Publish a condition's start (a non-empty ``reason``), a changed reason, or its end."""
        previous = self.conditions.get(name, "")
        if reason == previous:
            return
        if reason:
            self.conditions[name] = reason
        else:
            self.conditions.pop(name, None)
        log = _log.warning if reason else _log.info
        log("venue condition", condition=name, active=bool(reason), reason=reason or f"{name}: back to normal")
        now = self._now_ns()
        self._bus_publish(
            VenueConditionChanged(
                venue="binance",
                condition=name,
                active=bool(reason),
                reason=reason or f"{name}: back to normal",
                until_ns=until_ns,
                ts_event=now,
                ts_init=now,
            )
        )


def _rebase(pipeline: Pipeline, capital: Decimal) -> None:
    """Book ``capital`` as the account's start: positions' P&L, the drawdown's peak, attribution."""
    pipeline.positions.initial_capital = capital
    pipeline.risk.rebase_capital(float(capital))
    if pipeline.attribution is not None:
        pipeline.attribution.rebase_capital(float(capital))


def _journaled_capital(journal: Journal, plan: SessionPlan) -> Decimal | None:
    """Return the opening capital the recovered session journaled with its first ``SessionStarted``."""
    for _sequence, message in journal.entries_of(SessionStarted):
        if isinstance(message, SessionStarted) and message.session == plan.session:
            return message.initial_capital
    return None


def _failure(error: BaseException) -> dict[str, object]:
    """Say what happened to a call: its error's kind, with Binance's HTTP status and code when Binance answered."""
    cause = error.__cause__
    if isinstance(cause, BinanceRequestError):
        return {"kind": type(error).__name__, "status": cause.status, "code": cause.raw_code, "error": str(error)}
    return {"kind": type(error).__name__, "error": str(error)}


def _wall_ms() -> int:
    return time.time_ns() // NANOS_PER_MILLI
