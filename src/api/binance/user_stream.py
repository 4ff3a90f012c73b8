"""The user-data stream: its listenKey's life, and its events mapped to keel's.

Binance closes a listenKey 60 minutes after its last keepalive, so
:class:`ListenKeyKeeper` extends it every 30-50 minutes (jittered, seeded,
so many processes do not keep alive in lock step) and makes a new one when
Binance answers -1125 (the key expired or is unknown). :class:`UserEventMapper`
turns ``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE`` and ``MARGIN_CALL`` payloads
into keel events, each fill exactly once however often or out of order Binance (or a
reconnect's catch-up) delivers it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import websockets

from keel.api.binance.constants import LISTEN_KEY_PATH
from keel.api.binance.rest import BinanceRestClient
from keel.core.clock import NANOS_PER_MILLI
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import (
    AmbiguousOutcomeError,
    MalformedDataError,
    OperatorActionRequiredError,
    RequestRejectedError,
    RetryLaterError,
)
from keel.core.messages import (
    Event,
    FundingPaid,
    MarginCalled,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    PositionChanged,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderStatus
from keel.core.ports import OrderStatusReport

Sleep = Callable[[float], Awaitable[None]]
KEEPALIVE_MIN_SECONDS = 30 * 60
KEEPALIVE_MAX_SECONDS = 50 * 60
KEEPALIVE_RETRY_SECONDS = 60.0
"""Wait before trying again a listenKey call Binance did not take and gave no Retry-After for."""


class ListenKeyKeeper:
    """Creates the user-data stream's listenKey and keeps it alive.

    Parameters
    ----------
    client
        The REST client (listenKey calls need the API key, not a signature).
    sleep
        Waits between keepalives (simulated in tests).
    seed
        Seeds the keepalive jitter.
    on_new_key
        Called with every new listenKey, so the stream reconnects to it.
    """

    def __init__(
        self,
        client: BinanceRestClient,
        sleep: Sleep,
        seed: int = 0,
        on_new_key: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._sleep = sleep
        self._random = random.Random(seed)
        self._on_new_key = on_new_key
        self.listen_key: str | None = None
        self.keepalives = 0
        self.recreations = 0
        self.failures = 0

    def __repr__(self) -> str:
        # The listenKey grants read access to the account's events: never shown.
        return f"ListenKeyKeeper(keepalives={self.keepalives}, recreations={self.recreations})"

    async def create(self) -> str:
        """Create (or fetch Binance's current) listenKey and announce it."""
        payload = await self._client.request("POST", LISTEN_KEY_PATH)
        key = str(payload["listenKey"])
        if key != self.listen_key and self._on_new_key is not None:
            self._on_new_key(key)
        self.listen_key = key
        return key

    async def keep_alive(self) -> None:
        """Extend the listenKey; make a new one if Binance says it expired (-1125)."""
        if self.listen_key is None:
            await self.create()
            return
        try:
            await self._client.request("PUT", LISTEN_KEY_PATH)
        except RequestRejectedError as error:
            if error.code != BinanceErrorCode.INVALID_LISTEN_KEY:
                raise
            self.recreations += 1
            self.listen_key = None
            await self.create()
            return
        self.keepalives += 1

    def next_interval_seconds(self) -> float:
        """Return the wait before the next keepalive, uniform in 30-50 minutes."""
        return self._random.uniform(KEEPALIVE_MIN_SECONDS, KEEPALIVE_MAX_SECONDS)

    async def maintain(self, running: Callable[[], bool]) -> None:
        """Create the key, then keep it alive while ``running()`` is true.

        A call Binance did not take (a 429 or 418, a 5xx, no answer, keys it refuses) is tried again
        after its ``Retry-After`` (or :data:`KEEPALIVE_RETRY_SECONDS`), so no failure ends the upkeep.
        """
        await self._until_taken(self.create, running)
        while running():
            await self._sleep(self.next_interval_seconds())
            await self._until_taken(self.keep_alive, running)

    async def _until_taken(self, call: Callable[[], Awaitable[object]], running: Callable[[], bool]) -> None:
        while running():
            try:
                await call()
                return
            # Keys Binance refuses (revoked, IP whitelist) may pass again: health shows the refusal meanwhile.
            except (RetryLaterError, AmbiguousOutcomeError, OperatorActionRequiredError) as error:
                self.failures += 1
                retry_after = error.retry_after_seconds if isinstance(error, RetryLaterError) else None
                await self._sleep(retry_after or KEEPALIVE_RETRY_SECONDS)

    def on_expired_event(self) -> None:
        """Forget the key after a ``listenKeyExpired`` event; the next keepalive makes a new one."""
        self.listen_key = None


def _decimal(payload: dict[str, Any], key: str) -> Decimal:
    try:
        return Decimal(str(payload[key]))
    except KeyError:
        raise MalformedDataError(f"user-data event lacks {key!r}") from None


class UserEventMapper:
    """Maps user-data stream payloads to keel events, each fill and state change once.

    A fill is identified by (symbol, trade id); an order's state change by
    (client id, execution type). Repeats are dropped, and an acceptance that
    arrives after the order already ended is dropped too.
    """

    def __init__(self) -> None:
        self._fills: set[tuple[str, int]] = set()
        self._states: set[tuple[str, str]] = set()
        self._ended: set[str] = set()
        self.duplicates = 0

    def seen_fill(self, symbol: str, trade_id: int) -> bool:
        """Whether the fill was already mapped (from the stream or a REST catch-up)."""
        return (symbol, trade_id) in self._fills

    def first_state(self, client_order_id: str, execution: str) -> bool:
        """Record an order's state change; False when it was already reported (by REST or the stream)."""
        key = (client_order_id, execution)
        if key in self._states:
            return False
        self._states.add(key)
        return True

    def mark_fill(self, symbol: str, trade_id: int) -> None:
        """Record a fill learned outside the stream, so the stream's copy is dropped."""
        self._fills.add((symbol, trade_id))

    def status_events(self, report: OrderStatusReport, now_ns: int) -> list[Event]:
        """Return the end of an order Binance lists as canceled or expired (polled over REST), once.

        Fills are not derived from a status: they come from the trade list.
        """
        execution = {OrderStatus.CANCELED: "CANCELED", OrderStatus.EXPIRED: "EXPIRED"}.get(report.status)
        if execution is None or not self.first_state(report.client_order_id, execution):
            return []
        self._ended.add(report.client_order_id)
        kind = OrderCanceled if execution == "CANCELED" else OrderExpired
        symbol, ts = report.symbol, report.ts_last
        return [kind(client_order_id=report.client_order_id, symbol=symbol, ts_event=ts, ts_init=now_ns)]

    def map(self, payload: dict[str, Any], now_ns: int) -> list[Event]:
        """Return the keel events of one user-data payload (none for kinds keel does not use)."""
        kind = payload.get("e")
        if kind == "ORDER_TRADE_UPDATE":
            return self._order_update(payload, now_ns)
        if kind == "ACCOUNT_UPDATE":
            return self._account_update(payload, now_ns)
        if kind == "MARGIN_CALL":
            return [_margin_call(payload, now_ns)]
        return []

    def _order_update(self, payload: dict[str, Any], now_ns: int) -> list[Event]:
        order = payload["o"]
        client_id, symbol = str(order["c"]), str(order["s"])
        execution = str(order["x"])
        ts = int(payload.get("T", payload["E"])) * NANOS_PER_MILLI
        if execution == "TRADE":
            key = (symbol, int(order["t"]))
            if key in self._fills:
                self.duplicates += 1
                return []
            self._fills.add(key)
            if order["X"] == "FILLED":
                self._ended.add(client_id)
            return [
                OrderFilled(
                    client_order_id=client_id,
                    venue_order_id=str(order["i"]),
                    symbol=symbol,
                    trade_id=str(order["t"]),
                    side=OrderSide(order["S"]),
                    last_quantity=_decimal(order, "l"),
                    last_price=_decimal(order, "L"),
                    commission=Decimal(str(order.get("n", "0"))),
                    liquidity_side=LiquiditySide.MAKER if order.get("m") else LiquiditySide.TAKER,
                    ts_event=ts,
                    ts_init=now_ns,
                )
            ]
        if (client_id, execution) in self._states or (execution == "NEW" and client_id in self._ended):
            self.duplicates += 1
            return []
        self._states.add((client_id, execution))
        if execution == "NEW":
            return [
                OrderAccepted(
                    client_order_id=client_id,
                    venue_order_id=str(order["i"]),
                    symbol=symbol,
                    ts_event=ts,
                    ts_init=now_ns,
                )
            ]
        if execution == "CANCELED":
            self._ended.add(client_id)
            return [OrderCanceled(client_order_id=client_id, symbol=symbol, ts_event=ts, ts_init=now_ns)]
        if execution == "EXPIRED":
            self._ended.add(client_id)
            return [OrderExpired(client_order_id=client_id, symbol=symbol, ts_event=ts, ts_init=now_ns)]
        return []

    def _account_update(self, payload: dict[str, Any], now_ns: int) -> list[Event]:
        ts = int(payload.get("T", payload["E"])) * NANOS_PER_MILLI
        return [
            PositionChanged(
                symbol=str(position["s"]),
                quantity=_decimal(position, "pa"),
                entry_price=_decimal(position, "ep"),
                realized_pnl=_decimal(position, "cr"),
                ts_event=ts,
                ts_init=now_ns,
            )
            for position in payload["a"].get("P", [])
        ]


def _margin_call(payload: dict[str, Any], now_ns: int) -> MarginCalled:
    """Map a ``MARGIN_CALL`` payload: the cross wallet and each position at risk."""
    wallet = payload.get("cw")
    positions = tuple(
        (str(p["s"]), str(p.get("ps", "BOTH")), _decimal(p, "pa"), _decimal(p, "mp"), _decimal(p, "mm"))
        for p in payload.get("p", [])
    )
    return MarginCalled(
        cross_wallet_balance=None if wallet is None else Decimal(str(wallet)),
        positions=positions,
        ts_event=int(payload["E"]) * NANOS_PER_MILLI,
        ts_init=now_ns,
    )


class UserStream:
    """Receives the user-data stream, reconnecting and catching up on fills it missed.

    Parameters
    ----------
    ws_url
        The stream base URL; the connection goes to ``{ws_url}/ws/{listenKey}``.
    keeper
        Holds the current listenKey.
    mapper
        Maps payloads to events, each fill once.
    handler
        Receives the keel events.
    catch_up
        Returns the account's fills since a time (``ExchangePort.account_trades``);
        called after every reconnect so fills sent while disconnected still arrive.
    now_ns
        The clock stamping events.
    sleep
        Waits between reconnect attempts (simulated in tests).
    seed
        Seeds the reconnect jitter.
    funding
        Returns the account's funding payments since a time
        (``ExchangePort.funding_payments``). Binance's stream announces a
        funding settlement only as a balance change (``ACCOUNT_UPDATE`` with
        reason ``FUNDING_FEE``), without its rate and mark: the payments are
        read over REST then, and after every reconnect. None: not followed.

    Notes
    -----
    The ``websockets`` library does the protocol (framing, ping/pong, close);
    keel only adds the reconnect policy and the REST catch-up.
    """

    def __init__(
        self,
        ws_url: str,
        keeper: ListenKeyKeeper,
        mapper: UserEventMapper,
        handler: Callable[[Event], None],
        catch_up: Callable[[int], Awaitable[list[OrderFilled]]],
        now_ns: Callable[[], int],
        sleep: Sleep,
        seed: int = 0,
        funding: Callable[[int], Awaitable[list[FundingPaid]]] | None = None,
    ) -> None:
        self._ws_url = ws_url.rstrip("/")
        self._funding = funding
        self._funding_seen: set[tuple[str, int]] = set()
        self.last_funding_ns = 0
        self._keeper = keeper
        self._mapper = mapper
        self._handler = handler
        self._catch_up = catch_up
        self._now_ns = now_ns
        self._sleep = sleep
        self._random = random.Random(seed)
        # Catch-ups read from here until a fill is seen: fills before the stream existed are reconciliation's.
        self.last_fill_ns = now_ns()
        self.connections = 0
        self.caught_up_fills = 0
        self.messages = 0
        self.failed_catch_ups = 0
        self.last_error = ""
        self.connected = False

    def __repr__(self) -> str:
        return f"UserStream(connections={self.connections})"

    def _emit(self, event: Event) -> None:
        if isinstance(event, OrderFilled):
            self.last_fill_ns = max(self.last_fill_ns, event.ts_event)
        self._handler(event)

    def backoff_seconds(self, attempt: int) -> float:
        """Return the jittered wait before reconnect ``attempt`` (full jitter, capped at 60 s)."""
        return self._random.uniform(0, min(60.0, 0.5 * 2**attempt))

    async def catch_up(self) -> None:
        """Map the fills Binance lists since the last one seen; ones already mapped are dropped."""
        for fill in await self._catch_up(self.last_fill_ns):
            if not self._mapper.seen_fill(fill.symbol, int(fill.trade_id)):
                self._mapper.mark_fill(fill.symbol, int(fill.trade_id))
                self.caught_up_fills += 1
                self._emit(fill)

    async def catch_up_funding(self) -> None:
        """Report the funding payments Binance lists since the last one seen, each once."""
        if self._funding is None:
            return
        for payment in await self._funding(self.last_funding_ns):
            key = (payment.symbol, payment.funding_time)
            if key in self._funding_seen:
                continue
            self._funding_seen.add(key)
            self.last_funding_ns = max(self.last_funding_ns, payment.funding_time)
            self._handler(payment)

    async def _receive(self, message: str | bytes) -> bool:
        """Handle one stream message; return False when the listenKey expired (the session ends)."""
        payload = json.loads(message)
        kind = payload.get("e")
        if kind == "listenKeyExpired":
            self._keeper.on_expired_event()
            return False
        for event in self._mapper.map(payload, self._now_ns()):
            self._emit(event)
        if kind == "ACCOUNT_UPDATE" and payload.get("a", {}).get("m") == "FUNDING_FEE":
            await self.catch_up_funding()
        return True

    async def run_session(self) -> None:
        """Connect once, catch up, and receive until the connection ends."""
        key = self._keeper.listen_key or await self._keeper.create()
        async with websockets.connect(f"{self._ws_url}/ws/{key}") as connection:
            self.connections += 1
            await self.catch_up()
            await self.catch_up_funding()
            self.connected = True
            try:
                async for message in connection:
                    going_on = await self._receive(message)
                    # Counted once handled (a funding settlement's REST read included).
                    self.messages += 1
                    if not going_on:
                        return
            except websockets.ConnectionClosed:
                return
            finally:
                self.connected = False

    async def run(self, running: Callable[[], bool]) -> None:
        """Keep a session open while ``running()``, backing off after failed connects."""
        attempt = 0
        while running():
            try:
                await self.run_session()
                attempt = 0
            except websockets.InvalidStatus:
                # Binance refuses the upgrade for an expired listenKey: make a new one.
                self._keeper.on_expired_event()
                attempt += 1
                await self._sleep(self.backoff_seconds(attempt))
            except (OSError, websockets.InvalidHandshake):
                # Unreachable, or the connection dropped in the handshake (no answer to the upgrade).
                attempt += 1
                await self._sleep(self.backoff_seconds(attempt))
            except (RetryLaterError, OperatorActionRequiredError, RequestRejectedError) as error:
                # The REST catch-up after a connect failed (a -1021 re-measures the clock first):
                # reconnect and catch up again; nothing is lost, the catch-up starts at the last fill seen.
                self.failed_catch_ups += 1
                self.last_error = repr(error)
                attempt += 1
                await self._sleep(self.backoff_seconds(attempt))
