"""REST polling of the account while the user-data stream is down, behind a circuit breaker.

While the WebSocket is down, :class:`AccountPoller` asks Binance over REST
for what the stream would have said: the fills since the last one seen
(through the stream's own catch-up, so each fill is reported once however
it arrives), the funding payments, the ends of keel's open orders
(canceled, expired) and the positions. Every poll costs request weight, so a venue that keeps failing
is not hammered: :class:`CircuitBreaker` opens after a number of failed
polls in a row and lets one trial poll through after a pause.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum

from keel.api.binance.adapter import BinanceAdapter
from keel.api.binance.user_stream import UserStream
from keel.core.errors import KeelError
from keel.core.messages import Event
from keel.core.ports import PositionReport


class BreakerState(Enum):
    """CLOSED lets calls through; OPEN refuses them; HALF_OPEN lets one trial call through."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreaker:
    """Stops calling a failing service for a while, then tries once.

    Parameters
    ----------
    now_ms
        The clock, in ms.
    failures_before_open
        Failures in a row that open the breaker.
    pause_ms
        How long the breaker stays open before a trial call.
    """

    def __init__(self, now_ms: Callable[[], int], failures_before_open: int = 3, pause_ms: int = 30_000) -> None:
        if failures_before_open < 1 or pause_ms <= 0:
            raise ValueError("failures_before_open must be at least 1 and pause_ms positive")
        self._now_ms = now_ms
        self.failures_before_open = failures_before_open
        self.pause_ms = pause_ms
        self.failures = 0
        self.opened_at_ms: int | None = None
        self.openings = 0

    @property
    def state(self) -> BreakerState:
        """Return the breaker's state now."""
        if self.opened_at_ms is None:
            return BreakerState.CLOSED
        if self._now_ms() - self.opened_at_ms >= self.pause_ms:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allows(self) -> bool:
        """Whether a call may go now (closed, or a trial after the pause)."""
        return self.state is not BreakerState.OPEN

    def succeeded(self) -> None:
        """Close the breaker: the service answers."""
        self.failures = 0
        self.opened_at_ms = None

    def failed(self) -> None:
        """Count a failure; open (again) at the threshold, or at once when a trial call failed."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.failures_before_open:
            if self.opened_at_ms is None:
                self.openings += 1
            self.opened_at_ms = self._now_ms()


class AccountPoller:
    """Polls fills, order ends and positions over REST in place of the user-data stream.

    Parameters
    ----------
    adapter
        The REST adapter.
    stream
        The user-data stream: its catch-up lists the fills since the last
        one seen and drops those already reported.
    open_orders
        Returns (symbol, client order id) of the orders open in keel.
    handler
        Receives the order ends found (the same handler the stream feeds).
    breaker
        Pauses polling while it keeps failing.
    now_ns
        The clock stamping events.
    """

    def __init__(
        self,
        adapter: BinanceAdapter,
        stream: UserStream,
        open_orders: Callable[[], Iterable[tuple[str, str]]],
        handler: Callable[[Event], None],
        breaker: CircuitBreaker,
        now_ns: Callable[[], int],
    ) -> None:
        self._adapter = adapter
        self._stream = stream
        self._open_orders = open_orders
        self._handler = handler
        self.breaker = breaker
        self._now_ns = now_ns
        self.polls = 0
        self.failed_polls = 0
        self.positions: list[PositionReport] = []
        self.last_error = ""

    async def poll(self) -> bool:
        """Poll once unless the breaker is open; return whether the poll ran and succeeded."""
        if not self.breaker.allows():
            return False
        try:
            await self._poll()
        except (KeelError, OSError) as error:
            self.failed_polls += 1
            self.last_error = repr(error)
            self.breaker.failed()
            return False
        self.breaker.succeeded()
        self.polls += 1
        return True

    async def _poll(self) -> None:
        await self._stream.catch_up()
        await self._stream.catch_up_funding()
        working = {report.client_order_id for report in await self._adapter.open_orders()}
        for symbol, client_order_id in list(self._open_orders()):
            if client_order_id in working:
                continue
            report = await self._adapter.query_order(symbol, client_order_id)
            if report is not None:
                for event in self._adapter.events.status_events(report, self._now_ns()):
                    self._handler(event)
        self.positions = await self._adapter.positions()
