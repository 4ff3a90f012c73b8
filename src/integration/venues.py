"""The venue a session trades on: the durable simulated exchange (paper) or Binance (live).

A :class:`~keel.integration.paper.PaperSession` runs the same pipeline,
journal, recovery, dashboard and control API whatever its venue; what
differs is behind :class:`SessionVenue`: how a start decides between a
fresh session and recovering the last one, which exchange the pipeline
trades on, how the venue's own state comes back after a restart, what runs
beside the feed while the session trades (streams, clock, polling), and
when the session reconciles with the venue.

:class:`SimulatedVenue` is the paper venue: a :class:`~keel.api.SimulatedExchange`
whose state outlives the process in ``paper.venue_state_file``, recovered
with the session's market history. The live venue is
:class:`keel.integration.live.BinanceVenue`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import structlog

from keel.api import MarketCursor, VenueStore
from keel.api.binance.auth import ServerClock
from keel.api.binance.constants import EXCHANGE_INFO_PATH
from keel.api.binance.instrument_check import check_instruments
from keel.api.binance.rest import BinanceRestClient, RateLimiter
from keel.config import KeelConfig
from keel.core.clock import NANOS_PER_MILLI, Clock
from keel.core.errors import RetryLaterError
from keel.core.instruments import Instrument
from keel.core.messages import ReconciliationCompleted, SessionEnded
from keel.core.ports import ExchangePort
from keel.integration.pipeline import Pipeline
from keel.integration.recovery import ReplayedHistory, SessionPlan, plan_session, reconcile, restore_state
from keel.persistence import Journal, Snapshots

_log = structlog.get_logger("keel.venue")


async def check_binance_instruments(config: KeelConfig, instruments: Mapping[str, Instrument]) -> str | None:
    """Compare ``instruments`` with Binance's exchangeInfo at ``binance.rest_url``.

    A Binance out of reach is logged and the paper run goes on unchecked:
    its market streams are out of reach too, and the paper venue sends
    nothing to Binance.

    Returns
    -------
    str | None
        Why the instruments were not checked (exchangeInfo did not answer);
        None when they were.

    Raises
    ------
    InstrumentsDifferError
        When Binance does not trade one of them, or publishes a filter of it otherwise.
    """
    rest_url = config.binance.endpoints()[0]
    clock = ServerClock(_wall_ms, config.binance.recv_window_ms)
    async with aiohttp.ClientSession() as session:
        client = BinanceRestClient(rest_url, None, None, clock, RateLimiter(_wall_ms, asyncio.sleep), session)
        try:
            answer = await client.request("GET", EXCHANGE_INFO_PATH)
        except RetryLaterError as error:
            reason = f"Binance's exchangeInfo at {client.base_url}{EXCHANGE_INFO_PATH} did not answer ({error})"
            _log.warning("paper trading on instruments not checked against Binance's filters", reason=reason)
            return reason
    check_instruments(instruments, answer, client.base_url, str(Path(config.exchange.instruments).resolve()))
    return None


def _wall_ms() -> int:
    return time.time_ns() // NANOS_PER_MILLI


class SessionVenue(Protocol):
    """What a session needs of its venue."""

    mode: str
    """The run mode the session's ``SessionStarted`` names: ``paper`` or ``live``."""

    replays_history: bool
    """Whether a recovery replays the session's market history through the pipeline first."""

    def plan(self, journal: Journal, resume: bool) -> tuple[SessionPlan, MarketCursor | None]:
        """Decide between recovering the unfinished session (and where its feed resumes) and a fresh one."""
        ...

    def exchange(self, instruments: Mapping[str, Instrument], clock: Clock) -> ExchangePort | None:
        """Return the exchange the pipeline trades on; None for the simulated one the pipeline builds."""
        ...

    def restore(
        self,
        pipeline: Pipeline,
        journal: Journal,
        snapshots: Snapshots,
        plan: SessionPlan,
        history: ReplayedHistory | None,
    ) -> None:
        """Put the venue's and keel's books back after a restart (before the bus runs)."""
        ...

    def attach(self, pipeline: Pipeline) -> None:
        """Follow the pipeline's venue from now on (the paper venue commits its state to its file)."""
        ...

    async def connect(self, pipeline: Pipeline) -> None:
        """Open what runs beside the feed (streams, clock, polling); the bus runs."""
        ...

    async def opening_capital(self, pipeline: Pipeline, plan: SessionPlan, journal: Journal) -> Decimal | None:
        """Return the account's capital at the session's start when the venue sets it (None: the configured one)."""
        ...

    async def reconcile(self, pipeline: Pipeline, plan: SessionPlan) -> ReconciliationCompleted | None:
        """Reconcile keel's books with the venue when the session needs it; None when it does not."""
        ...

    async def disconnect(self) -> None:
        """Close what :meth:`connect` opened."""
        ...

    def close(self) -> None:
        """Release the venue's files (after the final state is written)."""
        ...

    def venue_status(self) -> dict[str, Any] | None:
        """Return the connection's state for status, health and ``/metrics`` (None: nothing to show)."""
        ...


class SimulatedVenue:
    """The paper venue: the simulated exchange, its state kept in ``paper.venue_state_file``.

    Parameters
    ----------
    config
        The configuration (``run.output_dir``, ``paper.venue_state_file``).
    """

    mode = "paper"
    replays_history = True

    def __init__(self, config: KeelConfig) -> None:
        path = Path(config.run.output_dir) / config.paper.venue_state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        self.store = VenueStore(path)
        self._config = config
        self._instruments: dict[str, Instrument] = {}
        self._unchecked: str | None = None

    def plan(self, journal: Journal, resume: bool) -> tuple[SessionPlan, MarketCursor | None]:
        """Recover the unfinished session with its venue's cursor, or open a fresh paper account."""
        plan = plan_session(journal)
        if plan.recover and not resume:
            _log.warning("a fresh paper account was asked for: the unfinished session is closed", session=plan.session)
            journal.append([closed_session(plan.session, "closed unfinished: a fresh paper account was asked for")])
            plan = SessionPlan(session=plan.session + 1, recover=False)
        if plan.recover:
            saved = self.store.saved_state()
            if saved is not None:
                self.store.check_symbols(saved, self._config.data.symbols)
                _log.warning("recovering an unfinished paper session", session=plan.session)
                return plan, saved.cursor
            _log.warning(
                "the unfinished session's paper venue state is gone: opening a fresh paper account",
                session=plan.session,
                venue_state=str(self.store.path),
            )
            journal.append([closed_session(plan.session, "closed unfinished: its paper venue state is gone")])
            plan = SessionPlan(session=plan.session + 1, recover=False)
        self.store.reset()
        return plan, None

    def exchange(self, instruments: Mapping[str, Instrument], clock: Clock) -> ExchangePort | None:
        """Let the pipeline build the simulated exchange (on ``instruments``, checked by :meth:`connect`)."""
        self._instruments = dict(instruments)
        return None

    def restore(
        self,
        pipeline: Pipeline,
        journal: Journal,
        snapshots: Snapshots,
        plan: SessionPlan,
        history: ReplayedHistory | None,
    ) -> None:
        """Load the stored venue into the pipeline's exchange, then keel's books from snapshot and journal."""
        self.store.load_into(pipeline.simulated_exchange())
        restore_state(pipeline, journal, snapshots, plan, history)

    def attach(self, pipeline: Pipeline) -> None:
        """Commit every venue transaction to the state file from now on."""
        self.store.attach(pipeline.simulated_exchange())

    async def connect(self, pipeline: Pipeline) -> None:
        """On Binance's live market, check the instruments against Binance's filters; nothing runs beside the feed.

        When exchangeInfo does not answer the session goes on; :meth:`venue_status` says why they are unchecked.

        Raises
        ------
        InstrumentsDifferError
            When Binance does not trade a symbol of ``data.symbols``, or
            publishes a filter of it otherwise than ``exchange.instruments``.
        """
        if self._config.paper.feed == "binance":
            self._unchecked = await check_binance_instruments(self._config, self._instruments)

    async def opening_capital(self, pipeline: Pipeline, plan: SessionPlan, journal: Journal) -> Decimal | None:
        """The configured ``exchange.initial_balance``."""
        return None

    async def reconcile(self, pipeline: Pipeline, plan: SessionPlan) -> ReconciliationCompleted | None:
        """Reconcile a recovered session (a fresh paper account has nothing to reconcile)."""
        return await reconcile(pipeline, plan.start_ts) if plan.recover else None

    async def disconnect(self) -> None:
        """Nothing to close before the final state is written."""

    def close(self) -> None:
        """Close the state file."""
        self.store.close()

    def venue_status(self) -> dict[str, Any] | None:
        """Return why the instruments are not checked against Binance's filters; None when there is nothing to show.

        The simulated venue has no connection, clock offset or rate limits to show.
        """
        if self._unchecked is None:
            return None
        return {"venue": "paper", "instruments_checked": False, "instruments_unchecked_reason": self._unchecked}


def closed_session(session: int, reason: str) -> SessionEnded:
    """The end of a session that will not be recovered (stamped with the wall clock: no data time yet)."""
    now = time.time_ns()
    return SessionEnded(session=session, reason=reason, finished=True, ts_event=now, ts_init=now)
