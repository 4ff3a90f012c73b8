"""Feed health: a stream that falls silent is reported stale, and reported again when it recovers.

:class:`FeedHealthMonitor` watches the market-data events on the bus, per
symbol and stream, on the component clock (simulated in backtests, wall
clock live). Every ``check_interval_ns`` it publishes
``FeedHealthChanged(stale=True)`` for each stream silent for longer than
``stale_after_ns``; the next event of that stream publishes
``FeedHealthChanged(stale=False)``. Streams named in ``expected`` are
watched from the start, so one that never delivers is reported too.
A check skips the firings before the first time any stream could be found
stale (its oldest last message plus ``stale_after_ns``): a stream's silence
only ever starts later, so the skipped checks would have found nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from mypy_extensions import mypyc_attr

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_SECOND, Clock
from keel.core.component import Component
from keel.core.messages import (
    BarClosed,
    BookTickerUpdated,
    BookUpdated,
    FeedHealthChanged,
    LiquidationReported,
    MarketDataEvent,
    MarkPriceUpdated,
    TradeTick,
)
from keel.core.time_events import TimeEvent

STREAMS: dict[type[MarketDataEvent], str] = {
    BookUpdated: "depth",
    BookTickerUpdated: "bookTicker",
    TradeTick: "trade",
    BarClosed: "kline",
    MarkPriceUpdated: "markPrice",
    LiquidationReported: "forceOrder",
}
"""The stream name each watched event type counts for."""


@mypyc_attr(allow_interpreted_subclasses=True)
class FeedHealthMonitor(Component):
    """Publish ``FeedHealthChanged`` when a stream goes stale or recovers (see module doc).

    Parameters
    ----------
    name, bus, clock
        As for every component.
    stale_after_ns
        Silence after which a stream is stale.
    check_interval_ns
        How often silence is checked.
    expected
        (symbol, stream) pairs to watch from the start.
    """

    def __init__(
        self,
        name: str,
        bus: EventBus,
        clock: Clock,
        stale_after_ns: int = 5 * NANOS_PER_SECOND,
        check_interval_ns: int = NANOS_PER_SECOND,
        expected: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(name, bus, clock)
        if stale_after_ns <= 0 or check_interval_ns <= 0:
            raise ValueError("stale_after_ns and check_interval_ns must be positive")
        self.stale_after_ns = stale_after_ns
        self.check_interval_ns = check_interval_ns
        self._expected = tuple(expected)
        self.last_seen: dict[tuple[str, str], int] = {}
        self.stale: set[tuple[str, str]] = set()
        self.stale_reports = 0

    def on_start(self) -> None:
        """Watch the market-data events and start the periodic check."""
        now = self.clock.timestamp_ns()
        for key in self._expected:
            self.last_seen.setdefault(key, now)
        for event_type, stream in STREAMS.items():
            self.bus.subscribe(event_type, self._seen_handler(stream), name=f"{self.name}.{stream}")
        self.clock.set_timer(
            f"{self.name}.check", self.check_interval_ns, self.check, start_ns=now + self.check_interval_ns
        )

    def on_stop(self) -> None:
        """Stop the periodic check."""
        self.clock.cancel_timer(f"{self.name}.check")

    def _seen_handler(self, stream: str):  # type: ignore[no-untyped-def]
        keys: dict[str, tuple[str, str]] = {}  # one key per symbol, made once: this runs for every message

        def seen(event: MarketDataEvent) -> None:
            symbol = event.symbol
            key = keys.get(symbol)
            if key is None:
                key = keys[symbol] = (symbol, stream)
            now = self.clock.timestamp_ns()
            if self.stale and key in self.stale:
                self.stale.discard(key)
                silent = now - self.last_seen.get(key, now)
                self._publish(key, False, silent, f"{stream} resumed after {silent / NANOS_PER_SECOND:.1f} s")
            self.last_seen[key] = now

        return seen

    def check(self, event: TimeEvent | None = None) -> None:
        """Report every stream silent for longer than ``stale_after_ns`` (once per silence)."""
        now = self.clock.timestamp_ns() if event is None else event.ts
        stale = self.stale
        oldest: int | None = None
        for key, last in self.last_seen.items():
            if key in stale:
                continue
            silent = now - last
            if silent > self.stale_after_ns:
                stale.add(key)
                self.stale_reports += 1
                self._publish(key, True, silent, f"no {key[1]} message for {silent / NANOS_PER_SECOND:.1f} s")
            elif oldest is None or last < oldest:
                oldest = last
        if event is not None and oldest is not None:
            # Last-seen times only grow and a new stream starts at its first message, so no stream
            # is silent for longer than stale_after_ns before this.
            self.clock.skip_timer_until(event.name, oldest + self.stale_after_ns + 1)

    def _publish(self, key: tuple[str, str], stale: bool, silent_ns: int, reason: str) -> None:
        now = self.clock.timestamp_ns()
        self.bus.publish(
            FeedHealthChanged(
                symbol=key[0],
                stream=key[1],
                stale=stale,
                silent_ns=silent_ns,
                reason=reason,
                ts_event=now,
                ts_init=now,
            )
        )
