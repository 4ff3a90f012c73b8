"""The signed REST client for Binance USD-M futures, paced by the venue's own counters.

Pacing follows the ``X-MBX-USED-WEIGHT-1M`` and ``X-MBX-ORDER-COUNT-*``
headers of every response (Binance's count, not a local guess), so a
request that would cross the budget waits for the next window instead of
drawing a 429. A 429 blocks sending for its ``Retry-After``; a 418 (IP ban)
blocks until the ban ends and marks the client banned so the caller can
reduce risk. Error payloads are parsed into :class:`BinanceErrorCode` and
raised as the keel error matching the code's :class:`ErrorAction`.

aiohttp (a python-binance dependency, now listed in keel's own) does the HTTP.
python-binance's ``AsyncClient`` is not used for REST: it stamps requests with
the wall clock (so it cannot run on keel's simulated clock in tests), keeps
only the last response's headers on the client (racy when requests overlap,
and pacing needs each response's counters), and raises its own exception
types instead of keel's error enum. The client here is thin own code around
one ``aiohttp.ClientSession``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp

from keel.api.binance.auth import Param, RevealsSecret, ServerClock, encode_query, signed_query
from keel.api.binance.constants import (
    API_KEY_HEADER,
    ORDER_COUNT_1M_HEADER,
    ORDER_COUNT_10S_HEADER,
    ORDER_PLACING,
    ORDERS_PER_10_SECONDS,
    ORDERS_PER_MINUTE,
    REQUEST_WEIGHT_PER_MINUTE,
    RETRY_AFTER_HEADER,
    TIME_PATH,
    USED_WEIGHT_HEADER,
    endpoint_weight,
)
from keel.core.error_codes import BinanceErrorCode, ErrorAction, parse_error_code
from keel.core.errors import (
    AmbiguousOutcomeError,
    KeelError,
    OperatorActionRequiredError,
    RequestRejectedError,
    RetryLaterError,
)

Sleep = Callable[[float], Awaitable[None]]
_MINUTE_MS = 60_000
_TEN_SECONDS_MS = 10_000
_DEFAULT_BAN_SECONDS = 120.0


class BinanceRequestError(KeelError):
    """Raised alongside the keel error class for a Binance error payload.

    Only used as the ``__cause__`` of the raised keel error, so callers can
    read the parsed code without matching text.
    """

    def __init__(self, code: BinanceErrorCode, raw_code: int, message: str, status: int) -> None:
        super().__init__(f"HTTP {status}, Binance {raw_code} {code.name}: {message}")
        self.code = code
        self.raw_code = raw_code
        self.status = status


class RateLimiter:
    """Paces requests on the counters Binance reports, before the limits, never after.

    Parameters
    ----------
    now_ms
        The venue's time in ms (the corrected clock; a simulated one in tests).
    sleep
        Waits that many seconds (``asyncio.sleep``, or a simulated sleep).
    weight_budget, orders_10s_budget, orders_1m_budget
        The limits keel stays under: a fraction of Binance's, so other
        clients on the same IP and clock jitter leave headroom.
    """

    def __init__(
        self,
        now_ms: Callable[[], int],
        sleep: Sleep,
        weight_budget: int = REQUEST_WEIGHT_PER_MINUTE * 8 // 10,
        orders_10s_budget: int = ORDERS_PER_10_SECONDS * 8 // 10,
        orders_1m_budget: int = ORDERS_PER_MINUTE * 8 // 10,
    ) -> None:
        self._now_ms = now_ms
        self._sleep = sleep
        self.weight_budget = weight_budget
        self.orders_10s_budget = orders_10s_budget
        self.orders_1m_budget = orders_1m_budget
        self.used_weight = 0
        self.orders_10s = 0
        self.orders_1m = 0
        self._weight_window = -1
        self._orders_10s_window = -1
        self._orders_1m_window = -1
        self.blocked_until_ms = 0
        self.banned_until_ms = 0
        self.waits = 0

    @property
    def banned(self) -> bool:
        """Whether Binance banned this IP (418) and the ban has not ended."""
        return self._now_ms() < self.banned_until_ms

    def _roll_windows(self, now: int) -> None:
        if now // _MINUTE_MS != self._weight_window:
            self._weight_window, self.used_weight = now // _MINUTE_MS, 0
        if now // _TEN_SECONDS_MS != self._orders_10s_window:
            self._orders_10s_window, self.orders_10s = now // _TEN_SECONDS_MS, 0
        if now // _MINUTE_MS != self._orders_1m_window:
            self._orders_1m_window, self.orders_1m = now // _MINUTE_MS, 0

    def _wait_ms(self, weight: int, places_order: bool) -> int:
        now = self._now_ms()
        if now < self.banned_until_ms:
            return -1
        if now < self.blocked_until_ms:
            return self.blocked_until_ms - now
        self._roll_windows(now)
        if self.used_weight + weight > self.weight_budget:
            return _MINUTE_MS - now % _MINUTE_MS
        if places_order and self.orders_10s + 1 > self.orders_10s_budget:
            return _TEN_SECONDS_MS - now % _TEN_SECONDS_MS
        if places_order and self.orders_1m + 1 > self.orders_1m_budget:
            return _MINUTE_MS - now % _MINUTE_MS
        return 0

    async def acquire(self, weight: int, places_order: bool) -> None:
        """Wait until a request of ``weight`` fits the budget, then count it.

        Raises
        ------
        RetryLaterError
            While an IP ban (418) lasts: nothing is sent until it ends.
        """
        while (wait := self._wait_ms(weight, places_order)) != 0:
            if wait < 0:
                seconds = (self.banned_until_ms - self._now_ms()) / 1000
                raise RetryLaterError("Binance banned this IP (HTTP 418); sending stopped", seconds)
            self.waits += 1
            await self._sleep(wait / 1000)
        self.used_weight += weight
        if places_order:
            self.orders_10s += 1
            self.orders_1m += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adopt Binance's counters from a response's headers (they win over local counts)."""
        self._roll_windows(self._now_ms())
        if (used := headers.get(USED_WEIGHT_HEADER)) is not None:
            self.used_weight = int(used)
        if (count := headers.get(ORDER_COUNT_10S_HEADER)) is not None:
            self.orders_10s = int(count)
        if (count := headers.get(ORDER_COUNT_1M_HEADER)) is not None:
            self.orders_1m = int(count)

    def usage(self) -> dict[str, float]:
        """Return the share of each of Binance's limits in use in the current windows, 0 to 1."""
        self._roll_windows(self._now_ms())
        return {
            "request_weight_1m": self.used_weight / REQUEST_WEIGHT_PER_MINUTE,
            "orders_10s": self.orders_10s / ORDERS_PER_10_SECONDS,
            "orders_1m": self.orders_1m / ORDERS_PER_MINUTE,
        }

    def block(self, seconds: float, banned: bool) -> None:
        """Stop sending for ``seconds``: after a 429, or a 418 ban when ``banned``."""
        until = self._now_ms() + int(seconds * 1000)
        self.blocked_until_ms = max(self.blocked_until_ms, until)
        if banned:
            self.banned_until_ms = max(self.banned_until_ms, until)


_ERRORS_BY_ACTION: dict[ErrorAction, type[KeelError]] = {
    ErrorAction.RETRY_LATER: RetryLaterError,
    ErrorAction.REJECTED: RequestRejectedError,
    ErrorAction.AMBIGUOUS: AmbiguousOutcomeError,
    ErrorAction.OPERATOR_ACTION: OperatorActionRequiredError,
}


def _action(code: BinanceErrorCode, raw_code: int, status: int) -> ErrorAction:
    """Return how to react: the code's action; a 4xx refusal with a code keel does not model is definitive.

    Binance answers 4xx for a request it refused (the sender's issue) and 5xx when the outcome is
    unknown, so only a 4xx with Binance's own -1000, or no code at all, stays ambiguous.
    """
    if code is BinanceErrorCode.UNKNOWN and raw_code != BinanceErrorCode.UNKNOWN and status < 500:
        return ErrorAction.REJECTED
    return code.action


def error_for(status: int, payload: Any) -> KeelError:
    """Return the keel error for Binance's error response ``payload`` with HTTP ``status``.

    Parameters
    ----------
    status
        The HTTP status code.
    payload
        The decoded JSON body, normally ``{"code": -2019, "msg": "..."}``.
    """
    raw_code = int(payload.get("code", BinanceErrorCode.UNKNOWN)) if isinstance(payload, dict) else -1000
    message = str(payload.get("msg", "")) if isinstance(payload, dict) else str(payload)
    code = parse_error_code(raw_code)
    cause = BinanceRequestError(code, raw_code, message, status)
    kind = _ERRORS_BY_ACTION[_action(code, raw_code, status)]
    error: KeelError
    error = RequestRejectedError(str(cause), raw_code) if kind is RequestRejectedError else kind(str(cause))
    error.__cause__ = cause
    return error


_KEY_REFUSALS = frozenset(
    {
        BinanceErrorCode.UNAUTHORIZED,
        BinanceErrorCode.INVALID_SIGNATURE,
        BinanceErrorCode.BAD_API_KEY_FMT,
        BinanceErrorCode.REJECTED_MBX_KEY,
    }
)


def refuses_keys(error: KeelError) -> bool:
    """Whether ``error`` is Binance refusing the API key or its signature (not the clock: -1021 is measured again).

    Parameters
    ----------
    error
        An error :meth:`BinanceRestClient.request` raised.
    """
    cause = error.__cause__
    return isinstance(cause, BinanceRequestError) and cause.code in _KEY_REFUSALS


class BinanceRestClient:
    """Sends public and SIGNED requests to a Binance USD-M REST base URL.

    Parameters
    ----------
    base_url
        ``https://fapi.binance.com``, the testnet, a proxy, or the local Binance.
    api_key, secret
        Credentials; ``None`` for a client that only reads public endpoints.
    clock
        The corrected venue clock that stamps SIGNED requests.
    limiter
        The pacing state shared by every request on this IP.
    session
        The aiohttp session (the caller owns and closes it); None until
        :meth:`use_session` gives one (a session needs a running event loop).
    timeout_seconds
        The per-request timeout; a timed-out order request is ambiguous.
    """

    def __init__(
        self,
        base_url: str,
        api_key: RevealsSecret | None,
        secret: RevealsSecret | None,
        clock: ServerClock,
        limiter: RateLimiter,
        session: aiohttp.ClientSession | None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._secret = secret
        self.clock = clock
        self.limiter = limiter
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.requests_sent = 0
        # Binance's refusal of the keys on the last signed request (-2015, -2014, -1022, -1002); empty once one passes.
        self.key_refusal = ""

    def __repr__(self) -> str:
        return f"BinanceRestClient(base_url={self.base_url!r})"

    def use_session(self, session: aiohttp.ClientSession | None) -> None:
        """Send requests through ``session`` from now on (None: no requests until another is given)."""
        self._session = session

    async def sync_time(self) -> None:
        """Measure the offset to Binance's clock with ``GET /fapi/v1/time``."""
        self._open_session("GET", TIME_PATH)
        await self.limiter.acquire(endpoint_weight("GET", TIME_PATH), False)
        # Read after the pacing wait: only the round trip bounds the measurement's error.
        sent = self.clock.local_ms()
        payload = await self._send("GET", TIME_PATH, (), signed=False)
        self.clock.record(sent, int(payload["serverTime"]), self.clock.local_ms())

    def _open_session(self, method: str, path: str) -> aiohttp.ClientSession:
        """Return the session requests go through; RetryLaterError without one (none given yet, or closed)."""
        if self._session is None:
            raise RetryLaterError(f"{method} {path}: the REST client has no open session")
        return self._session

    async def request(self, method: str, path: str, params: Iterable[Param] = (), *, signed: bool = False) -> Any:
        """Send one request and return its decoded JSON body.

        Parameters
        ----------
        method
            ``GET``, ``POST``, ``PUT`` or ``DELETE``.
        path
            The endpoint path.
        params
            The parameters, already rendered as text.
        signed
            Whether the endpoint is SIGNED (adds timestamp, recvWindow, signature).

        Raises
        ------
        RetryLaterError
            429, 418 (and while banned), 5xx on reads, and transient codes.
        AmbiguousOutcomeError
            5xx, timeout or a dropped connection on a write: the caller
            queries the outcome before acting again.
        RequestRejectedError, OperatorActionRequiredError
            Binance refused the request definitively or needs a human.
        """
        self._open_session(method, path)
        await self.limiter.acquire(endpoint_weight(method, path), (method, path) in ORDER_PLACING)
        return await self._send(method, path, params, signed=signed)

    async def _send(self, method: str, path: str, params: Iterable[Param], *, signed: bool) -> Any:
        """Sign (measuring the clock first unless it is safe to sign with), send one admitted request, decode it."""
        if signed:
            if self._secret is None:
                raise OperatorActionRequiredError(f"{method} {path} needs API keys and none are configured")
            if not self.clock.is_safe():  # unmeasured, stale, or its round trip was too slow: measure again
                await self.sync_time()
            query = signed_query(params, self._secret, self.clock.timestamp_ms(), self.clock.recv_window_ms)
        else:
            query = encode_query(params)
        headers = {API_KEY_HEADER: self._api_key.reveal()} if self._api_key is not None else {}
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        writes = method != "GET"
        self.requests_sent += 1
        session = self._open_session(method, path)
        try:
            async with session.request(method, url, headers=headers, timeout=self._timeout) as response:
                self.limiter.observe(response.headers)
                payload = await self._decode(response, writes)
        except KeelError as error:
            if signed and refuses_keys(error):
                self.key_refusal = str(error)
            raise
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            if writes:
                raise AmbiguousOutcomeError(f"{method} {path}: no answer ({type(exc).__name__})") from exc
            raise RetryLaterError(f"{method} {path}: no answer ({type(exc).__name__})") from exc
        if signed:
            self.key_refusal = ""
        return payload

    async def _decode(self, response: aiohttp.ClientResponse, writes: bool) -> Any:
        status = response.status
        if status in (418, 429):
            retry_after = float(response.headers.get(RETRY_AFTER_HEADER, _DEFAULT_BAN_SECONDS))
            self.limiter.block(retry_after, banned=status == 418)
            raise RetryLaterError(f"Binance answered HTTP {status}; waiting {retry_after:g} s", retry_after)
        if status >= 500:
            if writes:
                raise AmbiguousOutcomeError(f"Binance answered HTTP {status}; the outcome is unknown")
            raise RetryLaterError(f"Binance answered HTTP {status}")
        payload = await response.json(content_type=None)
        if status >= 400:
            error = error_for(status, payload)
            if isinstance(error.__cause__, BinanceRequestError) and (
                error.__cause__.code is BinanceErrorCode.INVALID_TIMESTAMP
            ):
                self.clock.invalidate()
            raise error
        return payload
