"""kill -9 the paper run at random points of the order lifecycle, restart it, and check nothing was lost.

Each case forks a child process that runs a paper session over real bundled
BTCUSDT and ETHUSDT 1m bars and kills itself with SIGKILL at one chosen
point: right after an order was written ahead to the journal (before the
venue call), right after the venue committed a change (before keel heard of
it), right after keel applied a venue report, right after a journal write,
or right after a state snapshot (the stress run also kills the restarted
runs early, during or just after their reconciliation), or between two bar
times (``bar_time``). The ``restart_parity`` tests stop or kill a session
between two bar times (with nothing working, or while PASSIVE children rest
at the venue and TWAP schedules are half done), restart it, and compare everything it did from there on
and its final reports with an uninterrupted run's. The venue's state lives in its own file, as
a real venue's would. The test then restarts the session in this process; it
recovers (snapshot, journal, reconciliation) and runs to the end of the data.
After that, keel and the venue must agree exactly: every venue order is
keel's with the same status and fills (0 lost), no client order id was sent
twice (0 duplicated orders), every venue trade was applied once (0 duplicated
fills), and keel's positions and wallet equal the venue's.
"""

from __future__ import annotations

import asyncio
import csv
import json
import multiprocessing
import os
import random
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import create_engine, text

from keel.api import MarketCursor
from keel.api.venue_state import ExchangeState
from keel.config import KeelConfig, load_config
from keel.core.clock import SimulatedClock
from keel.core.error_codes import BinanceErrorCode
from keel.core.messages import (
    BarClosed,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    ReconciliationCompleted,
    SessionEnded,
    SubmitOrder,
)
from keel.core.orders import OrderStatus
from keel.integration import paper
from keel.integration.paper import PaperSession
from keel.integration.pipeline import build_feed
from keel.integration.recovery import balance_mismatches
from keel.integration.venues import SimulatedVenue
from keel.persistence import Database, Journal

KILL_POINTS = (
    "before_write_ahead",
    "after_write_ahead",
    "venue_commit",
    "venue_order_commit",
    "report",
    "journal_write",
    "snapshot",
)
"""Where the child kills itself, each counted by occurrence."""

BAR_TIME = "bar_time"
"""Kill point between two bar times: everything of the earlier one done, nothing of the next one begun."""

REPORTS = (OrderAccepted, OrderFilled, OrderCanceled, OrderExpired, OrderRejected)

CRASH_CASES = 54
STRESS_CASES = 300


def crash_config(output_dir: Path, *, latency_ms: float, database_url: str | None = None) -> KeelConfig:
    """Six hours of real 1m bars of two symbols, a fast moving-average cross (about 150 orders), fast replay."""
    config = load_config("paper", environ={})
    data = config.data.model_validate(
        {
            **config.data.model_dump(),
            "symbols": ("BTCUSDT", "ETHUSDT"),
            "start": "2025-05-05T00:00:00Z",
            "end": "2025-05-05T06:00:00Z",
        }
    )
    return config.model_copy(
        update={
            "data": data,
            "strategy": config.strategy.model_validate(
                {**config.strategy.model_dump(), "name": "moving_average_cross", "fast_period": 3, "slow_period": 8}
            ),
            "exchange": config.exchange.model_copy(update={"latency_ms": latency_ms}),
            "paper": config.paper.model_copy(update={"speed": 1.0e9, "status_interval_seconds": 3600.0}),
            "persistence": config.persistence.model_copy(
                update={"snapshot_every": 40, "journal_flush_every": 25, "url": database_url}
            ),
            "portfolio": config.portfolio.model_copy(
                update={"rebalance_interval_minutes": 15, "rebalance_threshold": 0.02}
            ),
            "run": config.run.model_copy(update={"output_dir": output_dir}),
            # The knob tuning reads the wall clock (loop lag every 30 s): on a loaded machine it would stretch the
            # snapshots of one run and not of another, and the kill points are counted on a reference run.
            "performance": config.performance.model_copy(update={"auto_tune": False}),
        }
    )


class Killer:
    """Counts occurrences of one kill point and sends SIGKILL to its own process at the chosen one.

    Points stop counting once the session ends: a kill after that leaves nothing to recover.
    """

    def __init__(self, point: str, occurrence: int) -> None:
        self.point = point
        self.occurrence = occurrence
        self.seen: Counter[str] = Counter()
        self.armed = True

    def disarm(self, _ended: SessionEnded) -> None:
        self.armed = False

    def reached(self, point: str) -> None:
        if not self.armed:
            return
        self.seen[point] += 1
        if point == self.point and self.seen[point] == self.occurrence:
            os.kill(os.getpid(), signal.SIGKILL)


class _ObservedClock(SimulatedClock):
    """A simulated clock that first tells ``before_advance`` of every time it is moved to.

    The compiled clock's methods cannot be replaced on an instance: a Python subclass observes it instead.
    """

    def __init__(self, start_ns: int = 0) -> None:
        super().__init__(start_ns)
        self.before_advance: Callable[[int], None] | None = None

    def advance_to(self, ts: int) -> int:
        if self.before_advance is not None:
            self.before_advance(ts)
        return super().advance_to(ts)


def observed_session(config: KeelConfig, run_dir: Path) -> PaperSession:
    """Build a paper session whose clock is an :class:`_ObservedClock`."""
    built = paper.SimulatedClock
    paper.SimulatedClock = _ObservedClock  # type: ignore[misc]
    try:
        return PaperSession(config, run_dir)
    finally:
        paper.SimulatedClock = built  # type: ignore[misc]


def instrument(session: PaperSession, killer: Killer) -> None:
    """Put the killer's points into a built session (test-side wrappers; keel's code is unchanged)."""
    state, orders, journal = session.state, session.pipeline.orders, session.state.journal
    assert isinstance(session.venue, SimulatedVenue)
    exchange, store = session.pipeline.exchange, session.venue.store

    def write_ahead(command: SubmitOrder) -> None:
        killer.reached("before_write_ahead")
        state.write_ahead(command)
        killer.reached("after_write_ahead")

    orders.set_write_ahead(write_ahead)
    write = journal.write

    def journal_write(entries: Any) -> None:
        write(entries)
        killer.reached("journal_write")

    journal.write = journal_write  # type: ignore[method-assign]
    save = session.state._snapshots.save  # type: ignore[union-attr]

    def snapshot(*args: Any) -> None:
        save(*args)
        killer.reached("snapshot")

    session.state._snapshots.save = snapshot  # type: ignore[union-attr,method-assign]
    commit = store.commit

    def venue_commit(change: Any) -> None:
        commit(change)
        if change.baseline:
            return  # the whole venue, written once as the wrapper is installed
        killer.reached("venue_commit")
        if change.trades or change.orders:
            killer.reached("venue_order_commit")

    exchange.set_commit_handler(venue_commit)
    clock = session.clock
    assert isinstance(clock, _ObservedClock)

    def next_bar_time(ts: int) -> None:
        if ts > clock.timestamp_ns():
            killer.reached(BAR_TIME)

    clock.before_advance = next_bar_time
    bus = session.pipeline.bus
    for kind in REPORTS:
        bus.subscribe(kind, lambda _report: killer.reached("report"), name="test.killer")
    bus.subscribe(SessionEnded, killer.disarm, name="test.killer")


def run_session(config: KeelConfig, run_dir: Path, killer: Killer | None = None) -> PaperSession:
    session = observed_session(config, run_dir)
    if killer is not None:
        instrument(session, killer)
    asyncio.run(session.run())
    return session


def _child(config: KeelConfig, run_dir: Path, point: str, occurrence: int) -> None:
    run_session(config, run_dir, Killer(point, occurrence))
    os._exit(0)


def crash(config: KeelConfig, run_dir: Path, point: str, occurrence: int) -> int:
    """Run a session in a forked child that kills itself at the chosen point; return its exit code."""
    child = multiprocessing.get_context("fork").Process(target=_child, args=(config, run_dir, point, occurrence))
    child.start()
    child.join(timeout=300)
    assert child.exitcode is not None, "the crashing session hung"
    return child.exitcode


_COUNTS: dict[float, dict[str, int]] = {}


def reference_counts(tmp_path_factory: pytest.TempPathFactory, latency_ms: float) -> dict[str, int]:
    """Count the kill points of an uninterrupted run (once per latency)."""
    if latency_ms not in _COUNTS:
        folder = tmp_path_factory.mktemp(f"reference-{latency_ms:g}")
        killer = Killer("none", 0)
        run_session(crash_config(folder, latency_ms=latency_ms), folder / "run", killer)
        _COUNTS[latency_ms] = dict(killer.seen)
    return _COUNTS[latency_ms]


def assert_keel_agrees_with_the_venue(session: PaperSession, database_url: str) -> None:
    """0 lost orders, 0 duplicated orders, 0 duplicated fills, positions and wallet equal to the venue's."""
    pipeline = session.pipeline
    venue_state = msgspec.json.decode(pipeline.exchange.snapshot(), type=ExchangeState)
    keel_orders = pipeline.orders.orders
    for venue_order in venue_state.orders:
        client_order_id = venue_order.command.client_order_id
        assert client_order_id in keel_orders, f"lost order {client_order_id}"
        mine = keel_orders[client_order_id]
        assert mine.status is venue_order.status, f"{client_order_id}: keel {mine.status}, venue {venue_order.status}"
        assert mine.filled_quantity == venue_order.filled_quantity
    venue_ids = {o.command.client_order_id for o in venue_state.orders}
    for client_order_id, order in keel_orders.items():
        if client_order_id not in venue_ids:
            assert order.status in (OrderStatus.REJECTED, OrderStatus.DENIED), f"{order} is unknown to the venue"
            assert order.filled_quantity == 0
    database = Database(database_url)
    session_journal = [m for _, m in Journal(database).read(session.plan.first_sequence)]
    database.dispose()
    submitted = [m.client_order_id for m in session_journal if isinstance(m, SubmitOrder)]
    assert len(submitted) == len(set(submitted)), "an order was submitted twice"
    duplicate_ids = [
        o for o in keel_orders.values() if str(int(BinanceErrorCode.DUPLICATED_CLIENT_ORDER_ID)) in o.reason
    ]
    assert duplicate_ids == []
    venue_trades = asyncio.run(pipeline.exchange.account_trades())
    applied = [e.trade_id for e in pipeline.orders.account_events() if isinstance(e, OrderFilled)]
    assert len(applied) == len(set(applied)), "a fill was applied twice"
    assert sorted(applied) == sorted(t.trade_id for t in venue_trades), "keel's fills differ from the venue's"
    venue_positions = {p.symbol: p.quantity for p in asyncio.run(pipeline.exchange.positions())}
    for symbol in {*venue_positions, *pipeline.positions.positions}:
        assert pipeline.positions.quantity(symbol) == venue_positions.get(symbol, 0), symbol
    assert balance_mismatches(pipeline.positions, asyncio.run(pipeline.exchange.balances())) == []
    reconciliations = [m for m in session_journal if isinstance(m, ReconciliationCompleted)]
    assert reconciliations and all(r.mismatches == () for r in reconciliations)
    assert pipeline.risk.trading_state.value != "HALTED", "a crash must not leave trading halted"


def crash_and_recover(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    crashes: int = 1,
    database_url: str | None = None,
) -> PaperSession:
    """Crash a session ``crashes`` times at random points, then recover it to the end; return the last session.

    keel's database is SQLite in ``tmp_path`` unless ``database_url`` names another.
    """
    rng = random.Random(seed)
    latency_ms = rng.choice((0.0, 250.0))
    database_url = database_url or f"sqlite:///{tmp_path / 'keel.db'}"
    config = crash_config(tmp_path, latency_ms=latency_ms, database_url=database_url)
    counts = reference_counts(tmp_path_factory, latency_ms)
    for attempt in range(crashes):
        if attempt == 0:
            point = rng.choice([p for p in KILL_POINTS if counts.get(p, 0) > 0])
            # Leave a later crash some of the run to happen in.
            last = counts[point] * (4 if crashes == 1 else 3) // 4
            if point == "snapshot":
                # The journal's writer thread saves the snapshots and may still be saving the last ones when the
                # session ends and the counting stops: how many a run counts depends on that thread's lag.
                last = counts[point] // 2
            occurrence = rng.randint(1, max(1, last))
        else:
            # A recovered run starts with its reconciliation: crash it there, or a little later.
            point, occurrence = "venue_commit", rng.randint(1, 30)
        exit_code = crash(config, tmp_path / "run", point, occurrence)
        assert exit_code == -signal.SIGKILL, f"run {attempt + 1} did not reach {point} #{occurrence}"
    session = run_session(config, tmp_path / "run")
    assert session.plan.recover, "the restart did not recover the crashed session"
    assert session.handler_errors == 0
    assert_keel_agrees_with_the_venue(session, database_url)
    return session


@pytest.mark.parametrize("seed", range(CRASH_CASES))
def test_crash_at_a_random_point_loses_and_duplicates_nothing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, seed: int
) -> None:
    # Arrange, Act: one kill -9, then a restart that recovers and runs to the end
    session = crash_and_recover(tmp_path, tmp_path_factory, seed)

    # Assert (the agreement itself is asserted inside): the recovered run finished its data
    assert session.status()["feed_finished"] is True


@pytest.mark.parametrize("seed", range(3))
def test_crash_recovery_on_postgresql_loses_and_duplicates_nothing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, postgres_url: str, seed: int
) -> None:
    # Arrange: keel's journal on the real PostgreSQL server, in a database of its own
    name = f"keel_crash_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()

    # Act
    session = crash_and_recover(
        tmp_path, tmp_path_factory, 500 + seed, database_url=postgres_url.rsplit("/", 1)[0] + f"/{name}"
    )

    # Assert
    assert session.status()["feed_finished"] is True


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 1000 + STRESS_CASES))
def test_crash_stress_repeated_kills_lose_and_duplicate_nothing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, seed: int
) -> None:
    # Arrange, Act: up to four kill -9s in a row, each restart recovering the last
    session = crash_and_recover(tmp_path, tmp_path_factory, seed, crashes=1 + seed % 4)

    # Assert
    assert session.status()["feed_finished"] is True


def test_an_uninterrupted_run_reaches_every_kill_point(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Arrange, Act
    counts = reference_counts(tmp_path_factory, 250.0)

    # Assert: the crash cases above can hit every point of the lifecycle
    assert {point for point, count in counts.items() if count > 0} == {*KILL_POINTS, BAR_TIME}


# --- restart parity ---------------------------------------------------------------------------------


PARITY_SYMBOLS = ("BTCUSDT", "ETHUSDT")
HEAVY_PARITY_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


PASSIVE_LIMIT_SECONDS = 600.0
"""How long a PASSIVE parent posts before it takes: ten 1m bars, so its children rest across bar times."""


def parity_config(
    output_dir: Path, symbols: tuple[str, ...] = PARITY_SYMBOLS, end: str = "06:00", style: str = "AGGRESSIVE"
) -> KeelConfig:
    """Hours of real 1m bars (six of BTCUSDT and ETHUSDT by default) after a day of warm-up: the regime-weighted
    strategy manager (quickened to trade) and the Markowitz optimizer on a 15-minute schedule, as fast as possible,
    its orders worked in ``style`` (PASSIVE posts for ten bars)."""
    config = load_config("paper", environ={})
    data = config.data.model_validate(
        {
            **config.data.model_dump(),
            "symbols": symbols,
            "start": "2025-05-06T00:00:00Z",
            "end": f"2025-05-06T{end}:00Z",
        }
    )
    strategy = config.strategy.model_dump()
    strategy["min_signal"] = 0.01
    strategy["parameters"]["mean_reversion"].update(
        {"lookback": 30, "entry_z": 1.5, "exit_z": 0.2, "trend_window": 30, "max_trend_strength": 1.0}
    )
    strategy["parameters"]["trend_following"].update(
        {"fast_period": 5, "slow_period": 20, "channel_period": 20, "atr_period": 10, "min_trend_strength": 0.1}
    )
    return config.model_copy(
        update={
            "data": data,
            "strategy": config.strategy.model_validate(strategy),
            "portfolio": config.portfolio.model_copy(
                update={
                    "rebalance_interval_minutes": 15,
                    "rebalance_threshold": 0.02,
                    "risk_aversion": 1.0,
                    "information_coefficient": 0.5,
                }
            ),
            "execution": config.execution.model_copy(
                update={"default_style": style, "passive_time_limit_seconds": PASSIVE_LIMIT_SECONDS}
            ),
            "paper": config.paper.model_copy(update={"speed": 1.0e9, "status_interval_seconds": 3600.0}),
            "persistence": config.persistence.model_copy(update={"snapshot_every": 40, "journal_flush_every": 25}),
            "run": config.run.model_copy(update={"output_dir": output_dir}),
            # The knob tuning reads the wall clock (loop lag every 30 s): on a loaded machine it would stretch the
            # snapshots of one run and not of another, and the kill points are counted on a reference run.
            "performance": config.performance.model_copy(update={"auto_tune": False}),
        }
    )


PROCESS_METRICS = ("bus_messages_dispatched", "bus_high_water_mark")
"""Metrics of the process, not of the trading: a restarted process counts its own bus."""


def report_files(run_dir: Path) -> dict[str, Any]:
    """Return what a run reports: its orders, trades and equity curve, and its metrics without the process's."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with (run_dir / "orders.csv").open() as handle:
        # A venue reports that it closed an order, not why: one closed while the journal's write was lost is
        # found at the restart without the reason.
        orders = [{k: v for k, v in row.items() if k != "reason"} for row in csv.DictReader(handle)]
    return {
        **{name: (run_dir / name).read_text() for name in ("trades.csv", "equity.csv")},
        "orders.csv": orders,
        "metrics.json": {k: v for k, v in metrics.items() if k not in PROCESS_METRICS},
    }


def orders_sent_after(output_dir: Path, after_ns: int) -> list[tuple[object, ...]]:
    """Return the orders the journal in ``output_dir`` wrote ahead after ``after_ns``."""
    database = Database(f"sqlite:///{output_dir / 'keel.db'}")
    journal = Journal(database)
    sent = [
        (m.client_order_id, m.symbol, m.side, m.order_type, m.quantity, m.price, m.reduce_only, m.ts_init)
        for _, m in journal.read()
        if isinstance(m, SubmitOrder) and m.ts_init > after_ns
    ]
    database.dispose()
    return sent


def quiet_bar_times(run_dir: Path, config: KeelConfig) -> list[tuple[int, BarClosed]]:
    """Return the bar times after the run's first quarter with positions open and no order open across or sent at it.

    Each comes with the last event of it. A restart there is invisible to the
    venue as well: the clean slate of a restart has nothing to cancel.
    """
    with (run_dir / "orders.csv").open() as handle:
        orders = [(int(row["ts_init"]), int(row["ts_last"])) for row in csv.DictReader(handle)]
    with (run_dir / "trades.csv").open() as handle:
        fills = [
            (int(row["ts_event"]), row["symbol"], row["side"], Decimal(row["quantity"]))
            for row in csv.DictReader(handle)
        ]
    last_event: dict[int, Any] = {}
    for event in build_feed(config):
        last_event[event.ts_event] = event
    times = sorted(last_event)
    quiet_times = []
    for ts in times[len(times) // 4 :]:
        held: dict[str, Decimal] = {}
        for fill_ts, symbol, side, quantity in fills:
            if fill_ts <= ts:
                held[symbol] = held.get(symbol, Decimal(0)) + (quantity if side == "BUY" else -quantity)
        quiet = all(last <= ts and first != ts for first, last in orders if first <= ts)
        if quiet and any(held.values()) and isinstance(last_event[ts], BarClosed):
            quiet_times.append((ts, last_event[ts]))
    assert quiet_times, "the reference run has no quiet bar time with positions open"
    return quiet_times


def run_recording_working_times(config: KeelConfig, run_dir: Path) -> list[tuple[int, BarClosed]]:
    """Run a session uninterrupted; return the bar times after its first quarter it left with parents working.

    Each comes with the last event of it. A parent working as the clock leaves
    a bar time (a PASSIVE child resting at the venue, a TWAP schedule half
    done) is what a restart there must go on with.
    """
    session = observed_session(config, run_dir)
    clock, router = session.clock, session.pipeline.router
    assert isinstance(clock, _ObservedClock)
    working: set[int] = set()

    def leave(ts: int) -> None:
        if ts > clock.timestamp_ns() and router.parents:
            working.add(clock.timestamp_ns())

    clock.before_advance = leave
    asyncio.run(session.run())
    last_event: dict[int, Any] = {}
    for event in build_feed(config):
        last_event[event.ts_event] = event
    times = sorted(last_event)
    found = [
        (ts, last_event[ts])
        for ts in times[len(times) // 4 :]
        if ts in working and isinstance(last_event[ts], BarClosed)
    ]
    assert found, "the reference run has no bar time it left with a parent working"
    return found


_PARITY: dict[tuple[object, ...], Any] = {}


def parity_reference(
    tmp_path_factory: pytest.TempPathFactory,
    symbols: tuple[str, ...] = PARITY_SYMBOLS,
    end: str = "06:00",
    style: str = "AGGRESSIVE",
) -> tuple[Path, list[tuple[int, BarClosed]]]:
    """Run a parity configuration once uninterrupted; return its output folder and its restart bar times.

    Those are its quiet bar times (nothing open across them) for AGGRESSIVE, the
    bar times it left with parents working for the other styles.
    """
    key = (symbols, end, style)
    if key not in _PARITY:
        folder = tmp_path_factory.mktemp("parity-reference")
        config = parity_config(folder, symbols, end, style)
        if style == "AGGRESSIVE":
            run_session(config, folder / "run")
            _PARITY[key] = (folder, quiet_bar_times(folder / "run", config))
        else:
            _PARITY[key] = (folder, run_recording_working_times(config, folder / "run"))
    return _PARITY[key]


def kill_between_bar_times(config: KeelConfig, run_dir: Path, restart_ns: int) -> int:
    """Run a session in a forked child killed as its clock leaves ``restart_ns``; return its exit code."""
    feed = build_feed(config)
    # The clock starts at the feed's first time; each later time is one occurrence, the one after restart_ns kills.
    times = {event.ts_event for event in feed if event.ts_event > feed.summary.first_ns}
    return crash(config, run_dir, BAR_TIME, sum(1 for ts in times if ts <= restart_ns) + 1)


def assert_restart_parity(reference: Path, restarted: Path, session: PaperSession, restart_ns: int) -> None:
    """The restarted session sent the same orders after the restart and wrote the same reports."""
    sent = orders_sent_after(restarted, restart_ns)
    assert sent, "no order was sent after the restart: nothing was compared"
    assert sent == orders_sent_after(reference, restart_ns)
    mine, theirs = report_files(restarted / "second"), report_files(reference / "run")
    for name in theirs:
        assert mine[name] == theirs[name], f"{name} differs from the uninterrupted run's"
    status, risk = session.orchestrator.get_system_status(), session.orchestrator.risk()
    assert status["drawdown"] == risk["drawdown"] == mine["metrics.json"]["drawdown"]
    assert len(session.orchestrator.trades(limit=10**6)) == mine["trades.csv"].count("\n") - 1


def test_restart_parity_after_a_stop(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Arrange: the session stops right after the chosen bar time, with positions open
    reference, quiet_times = parity_reference(tmp_path_factory)
    restart_ns, last = quiet_times[0]
    config = parity_config(tmp_path)
    first = PaperSession(config, tmp_path / "first")

    def stop_after(bar: BarClosed) -> None:
        if bar.ts_event == restart_ns and bar.symbol == last.symbol:
            first.request_stop("operator")

    first.pipeline.bus.subscribe(BarClosed, stop_after, name="test.stop")
    asyncio.run(first.run())
    assert first.pipeline.exchange.cursor == MarketCursor.of(last)

    # Act
    second = PaperSession(config, tmp_path / "second")
    held = {s: p.quantity for s, p in second.pipeline.positions.positions.items() if p.quantity != 0}
    final = asyncio.run(second.run())

    # Assert
    assert second.plan.recover and held, "the restart must recover a session holding positions"
    assert final["reconciliation"]["mismatches"] == []
    assert_restart_parity(reference, tmp_path, second, restart_ns)


def test_restart_parity_after_kill_9(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Arrange: the session is killed as it moves on from the chosen bar time (journal writes still buffered lost)
    reference, quiet_times = parity_reference(tmp_path_factory)
    restart_ns, _last = quiet_times[0]
    config = parity_config(tmp_path)
    assert kill_between_bar_times(config, tmp_path / "first", restart_ns) == -signal.SIGKILL

    # Act
    second = run_session(config, tmp_path / "second")

    # Assert
    assert second.plan.recover and second.history is not None
    assert second.history.pending_bar_ts == restart_ns
    assert second.reconciliation is not None and second.reconciliation["mismatches"] == []
    assert_restart_parity(reference, tmp_path, second, restart_ns)


@pytest.mark.slow
@pytest.mark.parametrize("pick", range(5))
def test_restart_parity_after_kill_9_on_a_day_of_four_symbols(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, pick: int
) -> None:
    # Arrange: a day of four symbols, killed at one of five quiet bar times spread over it
    reference, quiet_times = parity_reference(tmp_path_factory, HEAVY_PARITY_SYMBOLS, "23:59")
    restart_ns, _last = quiet_times[pick * (len(quiet_times) - 1) // 4]
    config = parity_config(tmp_path, HEAVY_PARITY_SYMBOLS, "23:59")
    assert kill_between_bar_times(config, tmp_path / "first", restart_ns) == -signal.SIGKILL

    # Act
    second = run_session(config, tmp_path / "second")

    # Assert
    assert second.plan.recover and second.reconciliation is not None
    assert second.reconciliation["mismatches"] == []
    assert_restart_parity(reference, tmp_path, second, restart_ns)


WORKING_STYLES = ("PASSIVE", "TWAP")


@pytest.mark.parametrize("style", WORKING_STYLES)
def test_restart_parity_with_orders_open_after_a_stop(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, style: str
) -> None:
    # Arrange: the session stops right after a bar time the reference run left with parents working
    reference, working_times = parity_reference(tmp_path_factory, style=style)
    restart_ns, last = working_times[len(working_times) // 2]
    config = parity_config(tmp_path, style=style)
    first = PaperSession(config, tmp_path / "first")

    def stop_after(bar: BarClosed) -> None:
        if bar.ts_event == restart_ns and bar.symbol == last.symbol:
            first.request_stop("operator")

    first.pipeline.bus.subscribe(BarClosed, stop_after, name="test.stop")
    stopped = asyncio.run(first.run())
    assert stopped["open_orders"] == len(first.pipeline.orders.open_orders())

    # Act
    second = PaperSession(config, tmp_path / "second")
    open_at_restart = {o.client_order_id for o in second.pipeline.orders.open_orders()}
    working_parents = len(second.pipeline.router.parents)
    final = asyncio.run(second.run())

    # Assert: the parents (and the children open at the restart) went on, and everything after is the same
    assert second.plan.recover and working_parents > 0
    assert open_at_restart or style != "PASSIVE", "a resting PASSIVE child must be open at the restart"
    assert final["reconciliation"]["mismatches"] == []
    assert_restart_parity(reference, tmp_path, second, restart_ns)


@pytest.mark.parametrize("style", WORKING_STYLES)
def test_restart_parity_with_orders_open_after_kill_9(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, style: str
) -> None:
    # Arrange: killed as the session moves on from a bar time the reference run left with parents working
    reference, working_times = parity_reference(tmp_path_factory, style=style)
    restart_ns, _last = working_times[len(working_times) // 3]
    config = parity_config(tmp_path, style=style)
    assert kill_between_bar_times(config, tmp_path / "first", restart_ns) == -signal.SIGKILL

    # Act
    second = PaperSession(config, tmp_path / "second")
    open_at_restart = {o.client_order_id for o in second.pipeline.orders.open_orders()}
    working_parents = len(second.pipeline.router.parents)
    asyncio.run(second.run())

    # Assert
    assert second.plan.recover and working_parents > 0
    assert open_at_restart or style != "PASSIVE", "a resting PASSIVE child must be open at the restart"
    assert second.reconciliation is not None and second.reconciliation["mismatches"] == []
    assert_restart_parity(reference, tmp_path, second, restart_ns)


@pytest.mark.slow
@pytest.mark.parametrize("pick", range(6))
@pytest.mark.parametrize("style", WORKING_STYLES)
def test_restart_parity_with_orders_open_after_kill_9_at_bar_times_spread_over_the_run(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, style: str, pick: int
) -> None:
    # Arrange: killed at one of six bar times the reference run left with parents working, spread over its first
    # three quarters (later ones may leave no order to send after the restart)
    reference, working_times = parity_reference(tmp_path_factory, style=style)
    restart_ns, _last = working_times[pick * (len(working_times) - 1) * 3 // 20]
    config = parity_config(tmp_path, style=style)
    assert kill_between_bar_times(config, tmp_path / "first", restart_ns) == -signal.SIGKILL

    # Act
    second = run_session(config, tmp_path / "second")

    # Assert
    assert second.plan.recover and second.reconciliation is not None
    assert second.reconciliation["mismatches"] == []
    assert_restart_parity(reference, tmp_path, second, restart_ns)
