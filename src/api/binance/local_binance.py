"""A local Binance USD-M venue on 127.0.0.1 (REST and user-data WebSocket), matching with keel's SimulatedExchange.

For tests and demos: nothing here talks to the real Binance.

It speaks the documented protocol where keel depends on it: ``X-MBX-APIKEY``
and HMAC-SHA256 signature checks (-2015, -1022), ``timestamp``/``recvWindow``
(-1021), the ``X-MBX-USED-WEIGHT-1M`` and ``X-MBX-ORDER-COUNT-*`` headers,
429 with ``Retry-After`` past the weight limit and 418 for an IP that keeps
sending while told to wait. Matching, margin and account state are the
simulated exchange's, so the answers are the ones the simulated venue gives.

With a :class:`~keel.api.binance.local_market.LocalMarket` it also serves the
market streams (``/stream?streams=...``), ``GET /fapi/v1/depth`` and ``GET /fapi/v1/klines``
(weighing by its ``limit``, as Binance does).

Fault injection: ``fail_after_accept`` submits are placed and then answered
with HTTP 503; ``drop_after_accept`` submits are placed and the connection
is closed without an answer; ``fail_before_accept`` submits answer 503
without being placed; ``refuse_submits`` (``(code, msg)`` pairs, in turn) answers
submits HTTP 400 with that error without placing them; ``fail_cancels`` cancels answer
503 without canceling; ``drop_handshakes`` user-data connections are closed in the
handshake, before any answer; ``refuse_streams`` refuses user-data connections
(the stream is down); ``symbol_status`` lists a symbol in exchangeInfo with
another status than ``TRADING`` (``SETTLING``, ``BREAK``); ``answer_errors``
(``(HTTP status, code, msg)`` triples by path, in turn) answers requests to
that path with that error without handling them; :meth:`push_event` sends any
user-data payload (a ``MARGIN_CALL``); ``banned_until_ms`` bans the IP (HTTP 418).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from keel.api.binance.auth import sign
from keel.api.binance.constants import (
    ACCOUNT_PATH,
    ALL_OPEN_ORDERS_PATH,
    API_KEY_HEADER,
    BALANCE_PATH,
    DEPTH_PATH,
    EXCHANGE_INFO_PATH,
    FUNDING_RATE_PATH,
    INCOME_PATH,
    KLINES_PATH,
    LEVERAGE_BRACKET_PATH,
    LEVERAGE_PATH,
    LISTEN_KEY_PATH,
    MARGIN_TYPE_PATH,
    MAX_FUNDING_RATES_PER_REQUEST,
    MAX_INCOME_PER_REQUEST,
    MAX_KLINES_PER_REQUEST,
    MAX_TRADES_PER_REQUEST,
    OPEN_ORDERS_PATH,
    ORDER_COUNT_1M_HEADER,
    ORDER_COUNT_10S_HEADER,
    ORDER_PATH,
    ORDERS_PER_10_SECONDS,
    POSITION_MODE_PATH,
    POSITION_RISK_PATH,
    REQUEST_WEIGHT_PER_MINUTE,
    RETRY_AFTER_HEADER,
    SYMBOL_CONFIG_PATH,
    TIME_PATH,
    USED_WEIGHT_HEADER,
    USER_TRADES_PATH,
    endpoint_weight,
    klines_weight,
)
from keel.api.binance.local_market import LocalMarket
from keel.api.binance.schemas import (
    balance_json,
    brackets_json,
    configuration_json,
    order_json,
    position_json,
    submit_order_from,
    symbol_json,
    trade_json,
)
from keel.api.simulated_exchange import SimulatedExchange
from keel.core.clock import NANOS_PER_MILLI, Clock
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import RequestRejectedError
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    Event,
    FundingPaid,
    FundingRateUpdated,
    MarginType,
    MarketDataEvent,
    MarkPriceUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    TradeTick,
)
from keel.core.ports import PositionMode

Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.Response]]
_MINUTE_MS = 60_000
_BAN_SECONDS = 120
_LISTEN_KEY_LIFE_MS = 60 * _MINUTE_MS
_WEEK_MS = 7 * 24 * 60 * _MINUTE_MS


def _integer(params: dict[str, str], name: str, default: int) -> int:
    """Return an integer parameter (``default`` when absent or not an integer: Binance would refuse it)."""
    value = params.get(name)
    return int(value) if value is not None and value.lstrip("-").isdigit() else default


def _error(code: BinanceErrorCode | int, message: str, status: int = 400) -> web.Response:
    return web.json_response({"code": int(code), "msg": message}, status=status)


_EXECUTION_TYPES: dict[type[Event], str] = {OrderAccepted: "NEW", OrderCanceled: "CANCELED", OrderExpired: "EXPIRED"}


class LocalBinance:
    """The REST side of a local Binance in front of a :class:`SimulatedExchange`.

    Parameters
    ----------
    exchange
        The venue that matches orders and keeps the account.
    clock
        The venue's clock (Binance's ``serverTime``, the signature windows
        and the rate-limit windows); the exchange matches on its own.
    api_key, secret
        The only credentials it accepts.
    weight_limit
        Request weight per minute before 429.
    market
        The market streams and depth snapshots to serve (None: none).
    """

    def __init__(
        self,
        exchange: SimulatedExchange,
        clock: Clock,
        api_key: str,
        secret: str,
        weight_limit: int = REQUEST_WEIGHT_PER_MINUTE,
        market: LocalMarket | None = None,
    ) -> None:
        self.market = market
        self.exchange = exchange
        self.clock = clock
        self._api_key = api_key
        self._secret = secret
        self.weight_limit = weight_limit
        self.order_limit_10s = ORDERS_PER_10_SECONDS
        self.reports: list[Event] = []
        exchange.set_report_handler(self.reports.append)
        self.used_weight = 0
        self.orders_10s = 0
        self.orders_1m = 0
        self._window = -1
        self._window_10s = -1
        self._blocked_until_ms = 0
        self.banned_until_ms = 0
        self.responses: dict[int, int] = {}
        self.placed_client_ids: list[str] = []
        self.fail_before_accept = 0
        self.refuse_submits: list[tuple[int, str]] = []
        self.fail_cancels = 0
        self.drop_handshakes = 0
        self.fail_after_accept = 0
        self.drop_after_accept = 0
        self.listen_key: str | None = None
        self.listen_key_expires_ms = 0
        self.listen_keys_made = 0
        self.listen_key_expiries = 0
        self.sockets: list[web.WebSocketResponse] = []
        self.refuse_streams = False
        self.symbol_status: dict[str, str] = {}
        self.answer_errors: dict[str, list[tuple[int, int, str]]] = {}
        self._published = 0
        self.events_sent = 0
        self._publishing = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def now_ms(self) -> int:
        """Return the venue's time in ms."""
        return self.clock.timestamp_ns() // NANOS_PER_MILLI

    async def start(self) -> str:
        """Listen on 127.0.0.1 (a free port) and return the base URL."""
        app = web.Application(middlewares=[self._middleware])
        routes: list[tuple[str, str, Handler]] = [
            ("GET", TIME_PATH, self._time),
            ("GET", EXCHANGE_INFO_PATH, self._exchange_info),
            ("POST", ORDER_PATH, self._new_order),
            ("GET", ORDER_PATH, self._query_order),
            ("DELETE", ORDER_PATH, self._cancel_order),
            ("DELETE", ALL_OPEN_ORDERS_PATH, self._cancel_all),
            ("GET", OPEN_ORDERS_PATH, self._open_orders),
            ("GET", POSITION_RISK_PATH, self._positions),
            ("GET", BALANCE_PATH, self._balance),
            ("GET", ACCOUNT_PATH, self._account),
            ("GET", LEVERAGE_BRACKET_PATH, self._brackets),
            ("POST", LEVERAGE_PATH, self._set_leverage),
            ("POST", MARGIN_TYPE_PATH, self._set_margin_type),
            ("POST", POSITION_MODE_PATH, self._set_position_mode),
            ("GET", POSITION_MODE_PATH, self._position_mode),
            ("GET", SYMBOL_CONFIG_PATH, self._symbol_configuration),
            ("GET", USER_TRADES_PATH, self._user_trades),
            ("GET", INCOME_PATH, self._income),
            ("GET", FUNDING_RATE_PATH, self._funding_rates),
            ("POST", LISTEN_KEY_PATH, self._new_listen_key),
            ("PUT", LISTEN_KEY_PATH, self._keep_listen_key),
            ("DELETE", LISTEN_KEY_PATH, self._close_listen_key),
        ]
        app.router.add_get("/ws/{listen_key}", self._user_stream)
        public: tuple[str, ...] = (TIME_PATH, EXCHANGE_INFO_PATH, FUNDING_RATE_PATH)
        if self.market is not None:
            app.router.add_get("/stream", self.market.stream)
            routes.append(("GET", DEPTH_PATH, self._depth))
            routes.append(("GET", KLINES_PATH, self._klines))
            public = (*public, DEPTH_PATH, KLINES_PATH)
        for method, path, handler in routes:
            app.router.add_route(
                method,
                path,
                self._wrap(handler, signed=path not in (*public, LISTEN_KEY_PATH), keyed=path not in public),
            )
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if isinstance(response, web.WebSocketResponse):
            return response
        await self.publish()
        self.responses[response.status] = self.responses.get(response.status, 0) + 1
        response.headers[USED_WEIGHT_HEADER] = str(self.used_weight)
        if request.method == "POST" and request.path == ORDER_PATH:
            response.headers[ORDER_COUNT_10S_HEADER] = str(self.orders_10s)
            response.headers[ORDER_COUNT_1M_HEADER] = str(self.orders_1m)
        return response

    def _limit(self, method: str, path: str, params: dict[str, str]) -> web.Response | None:
        now = self.now_ms()
        if now < self.banned_until_ms or now < self._blocked_until_ms:
            # Sending while told to wait gets the IP banned, as Binance does.
            self.banned_until_ms = max(self.banned_until_ms, now + _BAN_SECONDS * 1000)
            seconds = (self.banned_until_ms - now + 999) // 1000
            return web.json_response(
                {"code": -1003, "msg": "Way too many requests; IP banned."},
                status=418,
                headers={RETRY_AFTER_HEADER: str(seconds)},
            )
        if now // _MINUTE_MS != self._window:
            self._window, self.used_weight, self.orders_1m = now // _MINUTE_MS, 0, 0
        if now // 10_000 != self._window_10s:
            self._window_10s, self.orders_10s = now // 10_000, 0
        weight = endpoint_weight(method, path)
        if path == KLINES_PATH:
            weight = klines_weight(_integer(params, "limit", 500))
        if method == "POST" and path == ORDER_PATH and self.orders_10s + 1 > self.order_limit_10s:
            seconds = (10_000 - now % 10_000 + 999) // 1000
            self._blocked_until_ms = now + seconds * 1000
            return web.json_response(
                {"code": -1015, "msg": BinanceErrorCode.TOO_MANY_ORDERS.message},
                status=429,
                headers={RETRY_AFTER_HEADER: str(seconds)},
            )
        if self.used_weight + weight > self.weight_limit:
            seconds = (_MINUTE_MS - now % _MINUTE_MS + 999) // 1000
            self._blocked_until_ms = now + seconds * 1000
            return web.json_response(
                {"code": -1003, "msg": BinanceErrorCode.TOO_MANY_REQUESTS.message.format(self.weight_limit)},
                status=429,
                headers={RETRY_AFTER_HEADER: str(seconds)},
            )
        self.used_weight += weight
        return None

    def _check_key(self, request: web.Request) -> web.Response | None:
        if request.headers.get(API_KEY_HEADER) != self._api_key:
            return _error(BinanceErrorCode.REJECTED_MBX_KEY, BinanceErrorCode.REJECTED_MBX_KEY.message, 401)
        return None

    def _authenticate(self, request: web.Request, params: dict[str, str]) -> web.Response | None:
        if (refusal := self._check_key(request)) is not None:
            return refusal
        query = request.query_string
        body, _, signature = query.rpartition("&signature=")
        if not body or not hmac.compare_digest(sign(body, self._secret), signature):
            return _error(BinanceErrorCode.INVALID_SIGNATURE, BinanceErrorCode.INVALID_SIGNATURE.message)
        timestamp = int(params.get("timestamp", "0"))
        window = int(params.get("recvWindow", "5000"))
        now = self.now_ms()
        if timestamp >= now + 1000 or now - timestamp > window:
            return _error(BinanceErrorCode.INVALID_TIMESTAMP, BinanceErrorCode.INVALID_TIMESTAMP.message)
        return None

    def _wrap(self, handler: Handler, signed: bool, keyed: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            params = dict(parse_qsl(request.query_string, keep_blank_values=True))
            if (refusal := self._limit(request.method, request.path, params)) is not None:
                return refusal
            if signed and (refusal := self._authenticate(request, params)) is not None:
                return refusal
            if keyed and not signed and (refusal := self._check_key(request)) is not None:
                return refusal
            if self.answer_errors.get(request.path):
                status, code, message = self.answer_errors[request.path].pop(0)
                return _error(code, message, status)
            return await handler(request, params)

        return handle

    async def _time(self, request: web.Request, params: dict[str, str]) -> web.Response:
        return web.json_response({"serverTime": self.now_ms()})

    async def _depth(self, request: web.Request, params: dict[str, str]) -> web.Response:
        assert self.market is not None  # the route exists only with a market
        answer = self.market.depth_snapshot(params.get("symbol", ""), int(params.get("limit", "500")))
        if answer is None:
            return _error(BinanceErrorCode.BAD_SYMBOL, BinanceErrorCode.BAD_SYMBOL.message)
        return web.json_response(answer)

    async def _klines(self, request: web.Request, params: dict[str, str]) -> web.Response:
        assert self.market is not None  # the route exists only with a market
        limit = _integer(params, "limit", 500)
        if not 1 <= limit <= MAX_KLINES_PER_REQUEST:
            return _error(-1130, f"Data sent for parameter 'limit' is not valid: {limit}.")
        start, end = params.get("startTime"), params.get("endTime")
        rows = self.market.klines(
            params.get("symbol", ""),
            params.get("interval", ""),
            limit,
            None if start is None else _integer(params, "startTime", 0),
            None if end is None else _integer(params, "endTime", 0),
        )
        if rows is None:
            return _error(BinanceErrorCode.BAD_SYMBOL, BinanceErrorCode.BAD_SYMBOL.message)
        return web.json_response(rows)

    async def _exchange_info(self, request: web.Request, params: dict[str, str]) -> web.Response:
        instruments = await self.exchange.exchange_info()
        symbols = [symbol_json(i, self.symbol_status.get(i.symbol, "TRADING")) for i in instruments.values()]
        return web.json_response({"timezone": "UTC", "serverTime": self.now_ms(), "symbols": symbols})

    async def _new_order(self, request: web.Request, params: dict[str, str]) -> web.Response:
        if self.fail_before_accept > 0:
            self.fail_before_accept -= 1
            return _error(BinanceErrorCode.UNKNOWN, "Internal error", 503)
        if self.refuse_submits:
            return _error(*self.refuse_submits.pop(0))
        self.orders_10s += 1
        self.orders_1m += 1
        command = submit_order_from(params, self.clock.timestamp_ns())
        seen = len(self.reports)
        self.placed_client_ids.append(command.client_order_id)
        await self.exchange.submit_order(command)
        for report in self.reports[seen:]:
            if isinstance(report, OrderRejected) and report.client_order_id == command.client_order_id:
                return _error(report.code, report.reason)
        if self.fail_after_accept > 0:
            self.fail_after_accept -= 1
            return _error(BinanceErrorCode.UNKNOWN, "Internal error", 503)
        if self.drop_after_accept > 0 and request.transport is not None:
            self.drop_after_accept -= 1
            request.transport.close()
        return await self._order_answer(command.symbol, command.client_order_id)

    async def _order_answer(self, symbol: str, client_order_id: str) -> web.Response:
        report = await self.exchange.query_order(symbol, client_order_id)
        if report is None:
            return _error(BinanceErrorCode.NO_SUCH_ORDER, BinanceErrorCode.NO_SUCH_ORDER.message)
        return web.json_response(order_json(report))

    async def _query_order(self, request: web.Request, params: dict[str, str]) -> web.Response:
        client_order_id = params.get("origClientOrderId")
        if client_order_id is None:
            by_venue_id = {r.venue_order_id: r.client_order_id for r in self.reports if isinstance(r, OrderAccepted)}
            client_order_id = by_venue_id.get(params.get("orderId", ""), "")
        return await self._order_answer(params.get("symbol", ""), client_order_id)

    async def _cancel_order(self, request: web.Request, params: dict[str, str]) -> web.Response:
        if self.fail_cancels > 0:
            self.fail_cancels -= 1
            return _error(BinanceErrorCode.UNKNOWN, "Internal error", 503)
        symbol, client_order_id = params.get("symbol", ""), params.get("origClientOrderId", "")
        try:
            await self.exchange.cancel_order(symbol, client_order_id)
        except RequestRejectedError as error:
            return _error(error.code or BinanceErrorCode.UNKNOWN, str(error))
        return await self._order_answer(symbol, client_order_id)

    async def _cancel_all(self, request: web.Request, params: dict[str, str]) -> web.Response:
        await self.exchange.cancel_all_orders(params.get("symbol"))
        return web.json_response({"code": 200, "msg": "The operation of cancel all open order is done."})

    async def _open_orders(self, request: web.Request, params: dict[str, str]) -> web.Response:
        orders = await self.exchange.open_orders(params.get("symbol"))
        return web.json_response([order_json(o) for o in orders])

    async def _positions(self, request: web.Request, params: dict[str, str]) -> web.Response:
        return web.json_response([position_json(p) for p in await self.exchange.positions()])

    async def _balance(self, request: web.Request, params: dict[str, str]) -> web.Response:
        report = await self.exchange.balances()
        entry = {
            "asset": report.asset,
            "balance": str(report.wallet_balance),
            "crossWalletBalance": str(report.cross_wallet_balance),
            "crossUnPnl": str(report.unrealized_pnl),
            "availableBalance": str(report.available_balance),
        }
        return web.json_response([entry])

    async def _account(self, request: web.Request, params: dict[str, str]) -> web.Response:
        balance = balance_json(await self.exchange.balances())
        return web.json_response({"assets": [balance], "positions": []})

    def _listen_key_alive(self) -> bool:
        if self.listen_key is not None and self.now_ms() > self.listen_key_expires_ms:
            self.listen_key_expiries += 1
            self.listen_key = None
        return self.listen_key is not None

    async def _new_listen_key(self, request: web.Request, params: dict[str, str]) -> web.Response:
        if not self._listen_key_alive():
            self.listen_keys_made += 1
            self.listen_key = sign(str(self.listen_keys_made), self._secret)
        self.listen_key_expires_ms = self.now_ms() + _LISTEN_KEY_LIFE_MS
        return web.json_response({"listenKey": self.listen_key})

    async def _keep_listen_key(self, request: web.Request, params: dict[str, str]) -> web.Response:
        if not self._listen_key_alive():
            return _error(BinanceErrorCode.INVALID_LISTEN_KEY, BinanceErrorCode.INVALID_LISTEN_KEY.message)
        self.listen_key_expires_ms = self.now_ms() + _LISTEN_KEY_LIFE_MS
        return web.json_response({"listenKey": self.listen_key})

    async def _close_listen_key(self, request: web.Request, params: dict[str, str]) -> web.Response:
        self.listen_key = None
        return web.json_response({})

    async def _brackets(self, request: web.Request, params: dict[str, str]) -> web.Response:
        brackets = await self.exchange.leverage_brackets(params.get("symbol"))
        return web.json_response([brackets_json(symbol, tiers) for symbol, tiers in brackets.items()])

    async def _rejecting(self, action: Awaitable[Any]) -> web.Response | None:
        try:
            await action
        except RequestRejectedError as error:
            return _error(error.code or BinanceErrorCode.UNKNOWN, str(error))
        return None

    async def _set_leverage(self, request: web.Request, params: dict[str, str]) -> web.Response:
        symbol = params.get("symbol", "")
        if (refusal := await self._rejecting(self.exchange.set_leverage(symbol, int(params["leverage"])))) is not None:
            return refusal
        configuration = await self.exchange.symbol_configuration(symbol)
        answer = configuration_json(configuration)
        return web.json_response({k: answer[k] for k in ("symbol", "leverage", "maxNotionalValue")})

    async def _set_margin_type(self, request: web.Request, params: dict[str, str]) -> web.Response:
        margin = MarginType(params.get("marginType", ""))
        refusal = await self._rejecting(self.exchange.set_margin_type(params.get("symbol", ""), margin))
        return refusal or web.json_response({"code": 200, "msg": "success"})

    async def _set_position_mode(self, request: web.Request, params: dict[str, str]) -> web.Response:
        mode = PositionMode.HEDGE if params.get("dualSidePosition") == "true" else PositionMode.ONE_WAY
        refusal = await self._rejecting(self.exchange.set_position_mode(mode))
        return refusal or web.json_response({"code": 200, "msg": "success"})

    async def _position_mode(self, request: web.Request, params: dict[str, str]) -> web.Response:
        mode = await self.exchange.position_mode()
        return web.json_response({"dualSidePosition": mode is PositionMode.HEDGE})

    async def _symbol_configuration(self, request: web.Request, params: dict[str, str]) -> web.Response:
        configuration = await self.exchange.symbol_configuration(params.get("symbol", ""))
        return web.json_response([configuration_json(configuration)])

    async def _user_trades(self, request: web.Request, params: dict[str, str]) -> web.Response:
        # Binance's page: ``limit`` trades at most (default 500, at most 1000) of 7 days at most: from
        # ``startTime`` (to ``endTime``, or 7 days on), or the 7 days to ``endTime`` (or now).
        limit = min(_integer(params, "limit", 500), MAX_TRADES_PER_REQUEST)
        start = _integer(params, "startTime", _integer(params, "endTime", self.now_ms()) - _WEEK_MS)
        end = _integer(params, "endTime", start + _WEEK_MS)
        if end - start > _WEEK_MS:
            return _error(-1127, "More than 7 days between startTime and endTime.")
        history = await self.exchange.account_trades(params.get("symbol"), start * NANOS_PER_MILLI)
        fills = [f for f in history if f.ts_event // NANOS_PER_MILLI <= end]
        page = sorted(fills, key=lambda f: int(f.trade_id))[:limit]
        return web.json_response([trade_json(f) for f in page])

    async def _income(self, request: web.Request, params: dict[str, str]) -> web.Response:
        # Binance's page: ``limit`` rows at most (default 100, at most 1000), oldest first, from ``startTime`` to
        # ``endTime``; without either, the last 7 days. Binance documents nothing for one end alone: here the
        # other is 7 days from it, as for userTrades.
        start_ms = _integer(params, "startTime", _integer(params, "endTime", self.now_ms()) - _WEEK_MS)
        end_ms = _integer(params, "endTime", start_ms + _WEEK_MS)
        limit = min(_integer(params, "limit", 100), MAX_INCOME_PER_REQUEST)
        rows = [
            {
                "symbol": p.symbol,
                "incomeType": "FUNDING_FEE",
                "income": str(p.amount),
                "asset": "USDT",
                "time": p.funding_time // NANOS_PER_MILLI,
                "tranId": n,  # numbered over the whole history: a row keeps its id in every window
            }
            for n, p in enumerate(await self.exchange.funding_payments(), 1)
            if start_ms <= p.funding_time // NANOS_PER_MILLI <= end_ms
        ]
        return web.json_response(rows[:limit])

    async def _funding_rates(self, request: web.Request, params: dict[str, str]) -> web.Response:
        start_ms = int(params.get("startTime", "0"))
        end_ms = int(params.get("endTime", str(2**62)))
        symbol = params.get("symbol", "")
        # The market's published history (with a market), and the settlements this venue applied.
        settled: dict[int, dict[str, Any]] = {}
        if self.market is not None:
            settled.update((row["fundingTime"], row) for row in self.market.funding_rates(symbol, start_ms, end_ms))
        for p in await self.exchange.funding_payments(start_ms * NANOS_PER_MILLI):
            if p.symbol == symbol and p.funding_time // NANOS_PER_MILLI <= end_ms:
                settled[p.funding_time // NANOS_PER_MILLI] = {
                    "symbol": p.symbol,
                    "fundingTime": p.funding_time // NANOS_PER_MILLI,
                    "fundingRate": str(p.rate),
                    "markPrice": str(p.mark_price),
                }
        rows = [settled[time_ms] for time_ms in sorted(settled)]
        limit = min(_integer(params, "limit", 100), MAX_FUNDING_RATES_PER_REQUEST)  # Binance's default and most
        return web.json_response(rows[:limit])

    async def _user_stream(self, request: web.Request) -> web.StreamResponse:
        if self.drop_handshakes > 0 and request.transport is not None:
            self.drop_handshakes -= 1
            request.transport.close()
            return web.Response()
        if self.refuse_streams:
            return _error(BinanceErrorCode.UNKNOWN, "Service unavailable", 503)
        if request.match_info["listen_key"] != self.listen_key or not self._listen_key_alive():
            return _error(BinanceErrorCode.INVALID_LISTEN_KEY, BinanceErrorCode.INVALID_LISTEN_KEY.message)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.sockets.append(socket)
        async for _ in socket:
            pass
        return socket

    async def drop_streams(self) -> None:
        """Close every user-data connection; events until the client reconnects are lost."""
        sockets, self.sockets = self.sockets, []
        for socket in sockets:
            await socket.close()

    async def push_event(self, payload: dict[str, Any]) -> None:
        """Send one user-data payload as it is to every connected client."""
        for socket in list(self.sockets):
            if not socket.closed:
                await socket.send_json(payload)
                self.events_sent += 1

    def on_market_event(self, event: MarketDataEvent) -> None:
        """Let the venue see a market event (as Binance sees the market), then publish what it caused."""
        exchange = self.exchange
        if isinstance(event, BarClosed):
            exchange.on_bar(event)
        elif isinstance(event, BookUpdated):
            exchange.on_book(event)
        elif isinstance(event, TradeTick):
            exchange.on_trade(event)
        elif isinstance(event, MarkPriceUpdated):
            exchange.on_mark_price(event)
        elif isinstance(event, FundingRateUpdated):
            exchange.on_funding(event)
        if len(self.reports) > self._published:
            task = asyncio.get_running_loop().create_task(self.publish())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def publish(self) -> None:
        """Send the venue's new reports as user-data events to the connected clients, in the venue's order."""
        async with self._publishing:
            reports, self._published = self.reports[self._published :], len(self.reports)
            for report in reports:
                payload = await self._user_event(report)
                for socket in list(self.sockets):
                    if not socket.closed:
                        await socket.send_json(payload)
                        self.events_sent += 1

    async def _user_event(self, report: Event) -> dict[str, Any] | None:
        ts = report.ts_event // NANOS_PER_MILLI
        if isinstance(report, OrderFilled):
            status = await self.exchange.query_order(report.symbol, report.client_order_id)
            done = status is not None and status.filled_quantity == status.quantity
            order: dict[str, Any] = {
                "s": report.symbol,
                "c": report.client_order_id,
                "S": report.side.value,
                "x": "TRADE",
                "X": "FILLED" if done else "PARTIALLY_FILLED",
                "i": report.venue_order_id,
                "l": str(report.last_quantity),
                "L": str(report.last_price),
                "n": str(report.commission),
                "t": report.trade_id,
                "m": report.liquidity_side.value == "MAKER",
            }
        elif isinstance(report, OrderAccepted | OrderCanceled | OrderExpired):
            execution = _EXECUTION_TYPES[type(report)]
            order = {"s": report.symbol, "c": report.client_order_id, "x": execution, "X": execution, "i": 0}
        elif isinstance(report, FundingPaid):
            # Binance announces a settlement as a balance change only; the rate and mark are on REST.
            wallet = (await self.exchange.balances()).wallet_balance
            balance = {"a": "USDT", "wb": str(wallet), "cw": str(wallet), "bc": str(report.amount)}
            return {"e": "ACCOUNT_UPDATE", "E": ts, "T": ts, "a": {"m": "FUNDING_FEE", "B": [balance], "P": []}}
        else:
            return {"e": "IGNORED", "E": ts}
        return {"e": "ORDER_TRADE_UPDATE", "E": ts, "T": ts, "o": order}
