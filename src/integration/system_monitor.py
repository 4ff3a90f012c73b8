"""The system monitor: one verdict on the system's health, with reasons, and safety trips.

:class:`SystemMonitor` listens to component lifecycles, feed health, risk
breaches, reconciliations, the bus and the venue's unanswered calls, and
keeps every open problem with its severity. Its verdict is HEALTHY (no
problem), DEGRADED (something works less well: a degraded component, a stale
feed, a risk breach, handler errors, an overloaded bus, venue calls without
an answer) or UNHEALTHY (a component faulted, or stopped while the system
runs, or a reconciliation mismatch); every change is published as
``HealthChanged``. By configuration it trips the trading state: a stale feed
moves trading to ``stale_data_state`` (REDUCING by default), and back to
ACTIVE when every feed has recovered, unless something else moved the state
meanwhile; a reconciliation mismatch with the venue after a restart moves
trading to ``mismatch_state`` (HALTED by default) until an operator resumes.
A database outage (the journal's component, ``database_component``,
DEGRADED) moves trading to ``database_outage_state`` (REDUCING by default),
and back to the state it left once the database is back and the journal
caught up (the component RUNNING again), unless something else moved the
state meanwhile. ``rejection_limit`` venue rejections within
``rejection_window_ns`` (post-only orders that would have taken liquidity do
not count: the router reprices them) degrade health and move trading to
``rejection_state`` (REDUCING by default) until an operator resumes: keel
sends orders the venue should never reject, so repeated rejections mean its
view of the account is wrong.
A gap in the bars is a stale feed: logged and handled the same way in
backtests and paper runs (:func:`keel.integration.pipeline.build_monitors` builds both the same way).
A live venue's conditions (``VenueConditionChanged``: an IP ban, an unsafe
clock offset, the user-data stream down and polled instead) degrade health
while they last; a ban moves trading to ``venue_ban_state`` (HALTED by
default) and back to the state it left when the ban ends, unless something
else moved the state meanwhile. A venue's margin call (``MarginCalled``) is
unhealthy until an operator resumes.
The bus check runs every ``check_interval_ns`` while it can find something:
when nothing is watched but the bus and the bus has no open problem, its
firings are skipped until a handler raises or the bus overloads (then it
resumes on its schedule), so a backtest pays nothing for it per bar while
every outcome stays the same.
An event loop running late by more than ``loop_lag_threshold_seconds``
(measured by :class:`LoopLagProbe`) or a bus that overflowed its execution
lane degrades health. So does an optional service the system works without
(a Redis cache) while it is unreachable: :meth:`SystemMonitor.watch_dependency`
names it and how to ask it for its problem.

On request (UC-4.1), :meth:`SystemMonitor.check_system_health` runs every
check at once and returns the verdict, and
:meth:`SystemMonitor.trigger_auto_recovery` clears what is past: it returns
the components a handler's exception left DEGRADED to RUNNING and takes the
handler errors, conflation and overflow seen so far as seen. It never changes
the trading state and clears nothing that is still going on (a stale feed, a
database or venue outage) or that only an operator's resume clears (risk
breaches, reconciliation mismatches, repeated rejections, margin calls): it
lists those.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence

import structlog

from keel.core.bus import EventBus
from keel.core.clock import Clock
from keel.core.component import Component
from keel.core.error_codes import BinanceErrorCode
from keel.core.fsm import ComponentState, TradingState
from keel.core.messages import (
    ComponentStateChanged,
    FeedHealthChanged,
    HealthChanged,
    MarginCalled,
    OrderRejected,
    ReconciliationCompleted,
    RiskBreached,
    SetTradingState,
    SystemHealth,
    TradingStateChanged,
    VenueConditionChanged,
)
from keel.core.time_events import TimeEvent
from keel.integration.reports import iso_time
from keel.integration.responses import HealthCheck, RecoveryOutcome

_log = structlog.get_logger("keel.monitor")

_SEVERITY = {SystemHealth.HEALTHY: 0, SystemHealth.DEGRADED: 1, SystemHealth.UNHEALTHY: 2}
_ROUTINE_REJECTIONS = frozenset({int(BinanceErrorCode.GTX_ORDER_REJECT)})
_REJECTIONS = "venue rejections"
_OPERATOR_CLEARS = ("reconciliation", _REJECTIONS, "margin call")
"""Problems an operator's resume to ACTIVE closes (with every ``risk ...`` breach)."""
_NEVER = sys.maxsize


class SystemMonitor(Component):
    """Keep the system's open problems and publish its health.

    Parameters
    ----------
    bus, clock
        The event bus and the clock.
    stale_data_state
        Trading state a stale feed moves to (None: report only).
    mismatch_state
        Trading state a reconciliation mismatch with the venue moves to (None:
        report only). It stays until an operator resumes.
    check_interval_ns
        How often the bus's handler errors and the venue's failures are checked.
    venue_failures
        Returns how many venue calls so far got no answer (timeouts, lost
        connections); None: the venue is not watched.
    database_outage_state
        Trading state a database outage moves to (None: report only).
    database_component
        The component whose DEGRADED state is a database outage (the journal's state manager).
    rejection_limit, rejection_window_ns
        This many venue rejections within the window raise the alert.
    rejection_state
        Trading state repeated venue rejections move to (None: report only).
        It stays until an operator resumes.
    loop_lag
        Returns how late, in seconds, the event loop has recently run
        (:attr:`LoopLagProbe.lag_seconds`); None: the loop is not watched.
    loop_lag_threshold_seconds
        Lag above which health is DEGRADED.
    venue_ban_state
        Trading state while the venue bans this IP (None: report only);
        the state it left returns when the ban ends.
    components
        The components :meth:`trigger_auto_recovery` may return from
        DEGRADED to RUNNING (the ``database_component`` never: it recovers
        by itself when the database answers again).
    """

    def __init__(
        self,
        bus: EventBus,
        clock: Clock,
        *,
        stale_data_state: TradingState | None = TradingState.REDUCING,
        mismatch_state: TradingState | None = TradingState.HALTED,
        check_interval_ns: int = 60_000_000_000,
        venue_failures: Callable[[], int] | None = None,
        database_outage_state: TradingState | None = TradingState.REDUCING,
        database_component: str = "integration.state",
        rejection_limit: int = 3,
        rejection_window_ns: int = 3_600_000_000_000,
        rejection_state: TradingState | None = TradingState.REDUCING,
        loop_lag: Callable[[], float] | None = None,
        loop_lag_threshold_seconds: float = 0.25,
        venue_ban_state: TradingState | None = TradingState.HALTED,
        components: Sequence[Component] = (),
    ) -> None:
        super().__init__("integration.monitor", bus, clock)
        self.components = tuple(components)
        self.stale_data_state = stale_data_state
        self.mismatch_state = mismatch_state
        self.check_interval_ns = check_interval_ns
        self.health = SystemHealth.HEALTHY
        self._problems: dict[str, tuple[SystemHealth, str]] = {}
        self._stale: set[str] = set()
        self._tripped = False
        self._trading_state = TradingState.ACTIVE
        self._handler_errors = 0
        self._conflated = 0
        self._venue_failures = venue_failures
        self._venue_failures_seen = 0
        self.database_outage_state = database_outage_state
        self.database_component = database_component
        self._database_out = False
        self._database_return: TradingState | None = None
        if rejection_limit < 1 or rejection_window_ns <= 0:
            raise ValueError("the rejection limit must be at least 1 and its window positive")
        self.rejection_limit = rejection_limit
        self.rejection_window_ns = rejection_window_ns
        self.rejection_state = rejection_state
        self._rejections: deque[int] = deque()
        self._overflow = 0
        self.loop_lag = loop_lag
        self.loop_lag_threshold_seconds = loop_lag_threshold_seconds
        self.venue_ban_state = venue_ban_state
        self._ban_return: TradingState | None = None
        self._dependencies: dict[str, Callable[[], str | None]] = {}
        self._check_timer = f"{self.name}.bus"
        self._check_idle = False
        bus.add_handler_error_listener(lambda _name, _message, _error: self._resume_check())
        bus.add_overload_listener(self._resume_check)

    def on_start(self) -> None:
        """Listen to lifecycles, feeds, breaches and trading states; check the bus on a timer."""
        self.bus.subscribe(ComponentStateChanged, self.on_component, name=self.name)
        self.bus.subscribe(FeedHealthChanged, self.on_feed, name=self.name)
        self.bus.subscribe(RiskBreached, self.on_breach, name=self.name)
        self.bus.subscribe(TradingStateChanged, self.on_trading_state, name=self.name)
        self.bus.subscribe(ReconciliationCompleted, self.on_reconciliation, name=self.name)
        self.bus.subscribe(OrderRejected, self.on_rejection, name=self.name)
        self.bus.subscribe(VenueConditionChanged, self.on_venue_condition, name=self.name)
        self.bus.subscribe(MarginCalled, self.on_margin_call, name=self.name)
        self.clock.set_timer(self._check_timer, self.check_interval_ns, self.check_bus)

    def on_stop(self) -> None:
        """Stop the bus check."""
        self.clock.cancel_timer(self._check_timer)
        self._check_idle = False

    async def check_system_health(self) -> HealthCheck:
        """Run every check now and return the verdict, its reasons and the degraded components (UC-4.1).

        Returns
        -------
        HealthCheck
            ``status`` (HEALTHY, DEGRADED or UNHEALTHY), ``reasons`` (worst
            first), ``degraded_components``, ``trading_state`` and ``time``.
        """
        self.check_bus()
        await self.bus.join()
        return HealthCheck(
            status=self.health.value,
            reasons=self.reasons(),
            degraded_components=[c.name for c in self.components if c.state is ComponentState.DEGRADED],
            trading_state=self._trading_state.value,
            time=iso_time(self.clock.timestamp_ns()),
        )

    async def get_system_health(self) -> HealthCheck:
        """Return :meth:`check_system_health` (the review's section 4.6 calls it by this name)."""
        return await self.check_system_health()

    async def trigger_auto_recovery(self, reason: str = "automatic recovery") -> RecoveryOutcome:
        """Clear what is past and report what is left (UC-4.1); the trading state never changes.

        The components a handler's or a strategy's exception left DEGRADED go
        back to RUNNING (a new exception degrades them again), and the bus's
        handler errors, conflation and overflow seen so far count as seen.
        Ongoing conditions (a stale feed, a database or venue outage, a
        lagging event loop) stay open until they end, and the problems only an
        operator's resume clears stay open and are listed in
        ``operator_required``.

        Parameters
        ----------
        reason
            Why, kept with each recovered component's state change.

        Returns
        -------
        RecoveryOutcome
            The health before and after, the recovered components, the
            problems cleared, those remaining and those for an operator.
        """
        self.check_bus()
        await self.bus.join()
        previous, before = self.health, self.reasons()
        recovered = []
        for component in self.components:
            if component.state is ComponentState.DEGRADED and component.name != self.database_component:
                component.recover(f"{reason}: the fault is past")
                recovered.append(component.name)
        await self.bus.join()
        self.check_bus()  # what the first check counted is seen: only what happened since stays open
        await self.bus.join()
        remaining = self.reasons()
        operator = [
            reason for key, (_, reason) in self._problems.items() if key.startswith("risk ") or key in _OPERATOR_CLEARS
        ]
        _log.info("automatic recovery", reason=reason, recovered=recovered, remaining=remaining)
        return RecoveryOutcome(
            previous_status=previous.value,
            status=self.health.value,
            recovered_components=recovered,
            cleared=[reason for reason in before if reason not in remaining],
            remaining=remaining,
            operator_required=[reason for reason in remaining if reason in operator],
            trading_state=self._trading_state.value,
        )

    def reasons(self) -> list[str]:
        """Return every open problem, worst first."""
        ranked = sorted(self._problems.items(), key=lambda item: (-_SEVERITY[item[1][0]], item[0]))
        return [reason for _, (_, reason) in ranked]

    def on_component(self, change: ComponentStateChanged) -> None:
        """FAULTED is unhealthy and DEGRADED degraded; a component back to RUNNING clears its problem."""
        key = f"component {change.component}"
        if change.state is ComponentState.FAULTED:
            self._open(key, SystemHealth.UNHEALTHY, f"{change.component} faulted: {change.reason}")
        elif change.state is ComponentState.DEGRADED:
            self._open(key, SystemHealth.DEGRADED, f"{change.component} degraded: {change.reason}")
        elif change.state in (ComponentState.RUNNING, ComponentState.STOPPED):
            self._close(key)
        if change.component == self.database_component:
            self._on_database(change)

    def _on_database(self, change: ComponentStateChanged) -> None:
        """The journal's component DEGRADED is a database outage; back to RUNNING, the outage is over."""
        if change.state is ComponentState.DEGRADED and not self._database_out:
            self._database_out = True
            self._database_trip(change.reason)
        elif change.state is ComponentState.RUNNING and self._database_out:
            self._database_out = False
            back, self._database_return = self._database_return, None
            if back is not None:
                self._set_state(back, "monitor: database reachable again and the journal caught up")

    def _database_trip(self, reason: str) -> None:
        target = self.database_outage_state
        current = self._trading_state
        if target is None or current is target or current is TradingState.HALTED:
            return
        self._database_return = current
        self._set_state(target, f"monitor: database: {reason}")

    def on_feed(self, change: FeedHealthChanged) -> None:
        """A stale feed degrades health and trips the trading state; its recovery undoes both."""
        key = f"feed {change.symbol}/{change.stream}"
        if change.stale:
            _log.warning("market data gap: feed stale", feed=key, reason=change.reason)
            self._stale.add(key)
            self._open(key, SystemHealth.DEGRADED, f"{key} stale: {change.reason}")
            self._trip(f"{key} stale")
        else:
            _log.info("market data resumed", feed=key, reason=change.reason)
            self._stale.discard(key)
            self._close(key)
            if not self._stale:
                self._untrip("every feed recovered")

    def on_breach(self, breach: RiskBreached) -> None:
        """Record a risk breach (the risk controller already moved the trading state)."""
        self._open(
            f"risk {breach.limit}",
            SystemHealth.DEGRADED,
            f"risk limit {breach.limit} breached: {breach.value:.6g} against {breach.threshold:.6g} ({breach.reason})",
        )

    def on_reconciliation(self, completed: ReconciliationCompleted) -> None:
        """A mismatch with the venue is unhealthy and moves the trading state (until an operator resumes)."""
        if not completed.mismatches:
            return
        summary = "; ".join(completed.mismatches)
        self._open("reconciliation", SystemHealth.UNHEALTHY, f"reconciliation mismatch: {summary}")
        target = self.mismatch_state
        if target is not None and self._trading_state is not TradingState.HALTED:
            self._set_state(target, f"reconciliation mismatch with the venue: {summary}")

    def on_rejection(self, rejected: OrderRejected) -> None:
        """Count a venue rejection; too many within the window degrade health and move the trading state."""
        if rejected.code in _ROUTINE_REJECTIONS:
            return
        now = self.clock.timestamp_ns()
        window = self._rejections
        window.append(now)
        while window[0] <= now - self.rejection_window_ns:
            window.popleft()
        if len(window) < self.rejection_limit:
            return
        minutes = self.rejection_window_ns / 60_000_000_000
        reason = (
            f"the venue rejected {len(window)} orders within {minutes:g} min, the last {rejected.client_order_id} "
            f"({rejected.symbol}): {rejected.code} {rejected.reason}"
        )
        self._open(_REJECTIONS, SystemHealth.DEGRADED, reason)
        target = self.rejection_state
        if target is not None and self._trading_state not in (target, TradingState.HALTED):
            self._tripped = False  # a feed's recovery must not undo this move: only an operator does
            self._set_state(target, f"monitor: {reason}")

    def on_venue_condition(self, change: VenueConditionChanged) -> None:
        """A venue condition degrades health while it lasts; a ban also moves the trading state until it ends."""
        key = f"venue {change.condition}"
        if change.active:
            self._open(key, SystemHealth.DEGRADED, f"{change.venue}: {change.reason}")
        else:
            self._close(key)
        if change.condition != "banned":
            return
        if change.active:
            target, current = self.venue_ban_state, self._trading_state
            if target is None or current is target or current is TradingState.HALTED or self._ban_return is not None:
                return
            self._ban_return = current
            self._set_state(target, f"monitor: venue ban: {change.reason}")
        elif self._ban_return is not None:
            back, self._ban_return = self._ban_return, None
            self._set_state(back, f"monitor: venue ban ended: {change.reason}")

    def on_margin_call(self, call: MarginCalled) -> None:
        """A margin call is unhealthy until an operator resumes (positions are close to liquidation)."""
        symbols = ", ".join(f"{symbol} {side} {quantity}" for symbol, side, quantity, _, _ in call.positions)
        _log.error("margin call from the venue", positions=symbols, wallet=str(call.cross_wallet_balance))
        self._open("margin call", SystemHealth.UNHEALTHY, f"margin call: {symbols or 'no position listed'}")

    def on_trading_state(self, change: TradingStateChanged) -> None:
        """Follow the trading state; a move the monitor did not make ends its trip; ACTIVE clears acknowledged problems.

        An operator's resume to ACTIVE closes risk breaches, reconciliation mismatches, repeated rejections
        and margin calls.
        """
        self._trading_state = change.state
        if self._tripped and not change.reason.startswith("monitor:"):
            self._tripped = False
        if self._database_return is not None and not change.reason.startswith("monitor: database"):
            self._database_return = None
        if self._ban_return is not None and not change.reason.startswith("monitor: venue ban"):
            self._ban_return = None
        if change.state is TradingState.ACTIVE:
            for key in [k for k in self._problems if k.startswith("risk ") or k in _OPERATOR_CLEARS]:
                self._close(key)
            self._rejections.clear()

    def check_bus(self, _event: TimeEvent | None = None) -> None:
        """Degrade while handlers raise, market data is conflated, venue calls go unanswered or a dependency is out.

        Each problem clears after an interval without it.
        """
        errors = self.bus.handler_errors
        if errors > self._handler_errors:
            self._open("bus", SystemHealth.DEGRADED, f"{errors - self._handler_errors} bus handler errors")
        else:
            self._close("bus")
        self._handler_errors = errors
        conflated = self.bus.conflated
        if conflated > self._conflated:
            self._open(
                "bus backlog",
                SystemHealth.DEGRADED,
                f"bus overloaded: {conflated - self._conflated} market-data messages conflated",
            )
        else:
            self._close("bus backlog")
        self._conflated = conflated
        self._check_overflow(self.bus.overflow)
        if self.loop_lag is not None:
            self.check_loop_lag(self.loop_lag())
        if self._venue_failures is not None:
            self._check_venue(self._venue_failures())
        self.check_dependencies()
        if _event is not None and self._nothing_to_check():
            # Until a handler raises or the bus overloads, every check would find what this one found.
            self._check_idle = True
            self.clock.skip_timer_until(self._check_timer, _NEVER)

    def _nothing_to_check(self) -> bool:
        if self.loop_lag is not None or self._venue_failures is not None or self._dependencies:
            return False
        problems = self._problems
        return "bus" not in problems and "bus backlog" not in problems and "bus overflow" not in problems

    def _resume_check(self) -> None:
        """Bring the bus check back on its schedule (its next firing the clock has not passed)."""
        if self._check_idle:
            self._check_idle = False
            self.clock.skip_timer_until(self._check_timer, self.clock.timestamp_ns())

    def watch_dependency(self, name: str, problem: Callable[[], str | None]) -> None:
        """Degrade health while ``problem()`` returns a reason (checked with the bus); clear when it returns None.

        ``problem`` must be cheap and safe to call from the trading loop: it
        reads what another thread recorded, it does not probe the service.
        """
        self._dependencies[name] = problem
        self._resume_check()

    def check_dependencies(self) -> None:
        """Open or close the problem of every watched dependency."""
        for name, problem in self._dependencies.items():
            reason = problem()
            if reason is None:
                self._close(f"dependency {name}")
            else:
                self._open(f"dependency {name}", SystemHealth.DEGRADED, reason)

    def check_loop_lag(self, lag_seconds: float) -> None:
        """Degrade while the event loop runs later than the threshold; clear when it catches up."""
        if lag_seconds > self.loop_lag_threshold_seconds:
            self._open(
                "event loop",
                SystemHealth.DEGRADED,
                f"event loop lagging: {lag_seconds:.3f} s late (threshold {self.loop_lag_threshold_seconds:g} s)",
            )
        else:
            self._close("event loop")

    def _check_overflow(self, overflow: int) -> None:
        if overflow > self._overflow:
            self._open(
                "bus overflow",
                SystemHealth.DEGRADED,
                f"bus overflowed: {overflow - self._overflow} messages over capacity",
            )
        else:
            self._close("bus overflow")
        self._overflow = overflow

    def _check_venue(self, failures: int) -> None:
        if failures > self._venue_failures_seen:
            unanswered = failures - self._venue_failures_seen
            self._open("venue", SystemHealth.DEGRADED, f"venue unreachable: {unanswered} calls got no answer")
        else:
            self._close("venue")
        self._venue_failures_seen = failures

    def _trip(self, reason: str) -> None:
        target = self.stale_data_state
        if target is None or self._trading_state is TradingState.HALTED or self._trading_state is target:
            return
        self._tripped = True
        self._set_state(target, f"monitor: {reason}")

    def _untrip(self, reason: str) -> None:
        if not self._tripped:
            return
        self._tripped = False
        if self._database_out and self.database_outage_state is not None:
            # The database is still out: its recovery returns to ACTIVE, not the feed's.
            self._database_return = TradingState.ACTIVE
            if self._trading_state is not self.database_outage_state:
                self._set_state(self.database_outage_state, f"monitor: database: still unreachable ({reason})")
            return
        self._set_state(TradingState.ACTIVE, f"monitor: {reason}")

    def _set_state(self, state: TradingState, reason: str) -> None:
        now = self.clock.timestamp_ns()
        self.bus.publish(SetTradingState(state=state, reason=reason, ts_event=now, ts_init=now))

    def _open(self, key: str, severity: SystemHealth, reason: str) -> None:
        self._problems[key] = (severity, reason)
        self._publish_if_changed()

    def _close(self, key: str) -> None:
        if self._problems.pop(key, None) is not None:
            self._publish_if_changed()

    def _publish_if_changed(self) -> None:
        worst = worst_health([severity for severity, _ in self._problems.values()])
        if worst is self.health:
            return
        previous, self.health = self.health, worst
        now = self.clock.timestamp_ns()
        self.bus.publish(
            HealthChanged(previous=previous, health=worst, reasons=tuple(self.reasons()), ts_event=now, ts_init=now)
        )


class LoopLagProbe:
    """Measure how late the asyncio loop runs: a task sleeps ``interval_seconds`` and times its wake-up.

    :attr:`lag_seconds` is the worst lateness seen in the last ``window``
    wake-ups, so one slow moment stays visible to a monitor checking less often.
    """

    def __init__(self, interval_seconds: float = 0.05, window: int = 20) -> None:
        self.interval_seconds = interval_seconds
        self._recent: list[float] = []
        self._window = window

    @property
    def lag_seconds(self) -> float:
        """Return the worst recent lateness of the loop, seconds (0 before the first measurement)."""
        return max(self._recent, default=0.0)

    def record(self, lateness_seconds: float) -> None:
        """Add one measured lateness (negative values count as 0)."""
        self._recent.append(max(0.0, lateness_seconds))
        del self._recent[: -self._window]

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            expected = time.monotonic() + self.interval_seconds
            await asyncio.sleep(self.interval_seconds)
            self.record(time.monotonic() - expected)


def worst_health(healths: Sequence[SystemHealth]) -> SystemHealth:
    """Return the worst of several verdicts (HEALTHY for none)."""
    return max(healths, key=_SEVERITY.__getitem__, default=SystemHealth.HEALTHY)
