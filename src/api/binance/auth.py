"""Request signing and the venue's clock, for Binance's SIGNED endpoints.

A SIGNED request carries ``timestamp`` (the venue's time, in ms),
``recvWindow`` and ``signature``: the hex HMAC-SHA256 of the whole query
string under the API secret. Binance refuses it with -1021 when
``timestamp`` is ahead of its clock by more than 1 s or older than
``recvWindow``, so keel stamps requests with its local clock corrected by
the offset measured against ``GET /fapi/v1/time``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Protocol
from urllib.parse import urlencode

from keel.api.binance.constants import DEFAULT_RECV_WINDOW_MS, MAX_RECV_WINDOW_MS
from keel.core.errors import RetryLaterError

Param = tuple[str, str]


class RevealsSecret(Protocol):
    """A redacted secret (``keel.config.Secret``) that hands out its text on request."""

    def reveal(self) -> str:
        """Return the secret text."""
        ...


def sign(query: str, secret: str) -> str:
    """Return Binance's signature of ``query``: hex HMAC-SHA256 keyed by ``secret``.

    Parameters
    ----------
    query
        The exact query string (or form body) as sent, without ``signature``.
    secret
        The API secret.

    Returns
    -------
    str
        64 lower-case hex digits.
    """
    return hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()


def encode_query(params: Iterable[Param]) -> str:
    """URL-encode ``params`` in the order given, as Binance reads them."""
    return urlencode(list(params))


def signed_query(params: Iterable[Param], secret: RevealsSecret, timestamp_ms: int, recv_window_ms: int) -> str:
    """Return ``params`` plus ``recvWindow``, ``timestamp`` and ``signature`` as a query string.

    Parameters
    ----------
    params
        The endpoint's parameters, already rendered as text (Decimal via ``str``).
    secret
        The API secret.
    timestamp_ms
        The venue's time in ms at which the request is sent.
    recv_window_ms
        How long after ``timestamp_ms`` Binance may still accept the request.
    """
    body = encode_query([*params, ("recvWindow", str(recv_window_ms)), ("timestamp", str(timestamp_ms))])
    return f"{body}&signature={sign(body, secret.reveal())}"


class ServerClock:
    """The local clock corrected by the measured offset to Binance's clock.

    Parameters
    ----------
    local_ms
        The local wall clock in ms (a simulated clock in tests).
    recv_window_ms
        The ``recvWindow`` sent with every SIGNED request.
    max_age_ms
        After this long without a fresh measurement the offset is stale and
        SIGNED requests are refused locally.

    Notes
    -----
    A measurement brackets ``GET /fapi/v1/time`` between two local readings
    and takes the server time as the midpoint; half the round trip bounds
    its error. Drift is unsafe when that bound would let a request leave the
    window: more than half of ``recvWindow``.
    """

    def __init__(
        self,
        local_ms: Callable[[], int],
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
        max_age_ms: int = 5 * 60_000,
    ) -> None:
        if not 0 < recv_window_ms <= MAX_RECV_WINDOW_MS:
            raise ValueError(f"recv_window_ms must be in (0, {MAX_RECV_WINDOW_MS}], got {recv_window_ms}")
        self._local_ms = local_ms
        self.recv_window_ms = recv_window_ms
        self._max_age_ms = max_age_ms
        self.offset_ms = 0
        self.uncertainty_ms: int | None = None
        self._measured_at_ms: int | None = None

    def record(self, sent_local_ms: int, server_ms: int, received_local_ms: int) -> None:
        """Record one ``/fapi/v1/time`` exchange and update the offset.

        Parameters
        ----------
        sent_local_ms, received_local_ms
            Local clock readings just before sending and just after receiving.
        server_ms
            The ``serverTime`` Binance answered.
        """
        if received_local_ms < sent_local_ms:
            raise ValueError("received_local_ms is before sent_local_ms")
        midpoint = (sent_local_ms + received_local_ms) // 2
        self.offset_ms = server_ms - midpoint
        self.uncertainty_ms = (received_local_ms - sent_local_ms + 1) // 2
        self._measured_at_ms = received_local_ms

    def local_ms(self) -> int:
        """Return the uncorrected local clock in ms."""
        return self._local_ms()

    def invalidate(self) -> None:
        """Forget the offset (after Binance answered -1021) so the next request measures again."""
        self._measured_at_ms = None

    def needs_measurement(self) -> bool:
        """Whether the offset was never measured or is older than ``max_age_ms``."""
        if self._measured_at_ms is None:
            return True
        return self._local_ms() - self._measured_at_ms >= self._max_age_ms

    def is_safe(self) -> bool:
        """Whether a request stamped now lands inside Binance's window."""
        if self.uncertainty_ms is None or self.needs_measurement():
            return False
        return self.uncertainty_ms * 2 < self.recv_window_ms

    def timestamp_ms(self) -> int:
        """Return the venue time to stamp a SIGNED request with.

        Raises
        ------
        RetryLaterError
            When the offset is unmeasured, stale, or too uncertain; the
            caller measures again before sending.
        """
        if not self.is_safe():
            raise RetryLaterError("the offset to Binance's clock is unmeasured, stale or too uncertain to sign")
        # Stamping slightly early keeps the request off Binance's 1 s "ahead" limit.
        return self._local_ms() + self.offset_ms - (self.uncertainty_ms or 0)
