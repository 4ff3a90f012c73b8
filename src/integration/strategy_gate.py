"""The backtest gate on a running system: strategies prove themselves on recent data before they may trade.

:class:`StrategyGatekeeper` holds every strategy that has a gate rule out of
the strategy manager's vote until its backtest over the last
``window_days`` of data passes, checks again every ``recheck_ns`` of the
clock's time, and publishes each verdict as a ``StrategyGateEvaluated``
event, which the state manager journals. The reason a strategy is held is in
the manager's status, so the status API and the dashboard show it.

The backtest is the full one, the same :class:`~keel.integration.replay.RecordedRun`
``keel backtest`` runs (simulated venue with its fees, slippage and funding,
risk, allocator, router): the run's configuration with that strategy alone
(:func:`gate_config`), over the recorded bars of the window that ends at the
clock's now (and no later than the funding data reaches), so a verdict never
reads a bar after now. Its ``sharpe_ratio``, ``max_drawdown`` and
``n_trades`` are judged by the rule. Results are cached by the data files'
fingerprint and the configuration's hash, so a recheck that would backtest the
same window on the same files again costs nothing.

On the live market (``paper.feed: binance``, and so live) the last days of
data are Binance's, not the recording's: with :meth:`StrategyGatekeeper.use_market_history`
each evaluation first brings a :class:`~keel.api.binance.market_history.MarketHistory`
cache up to date (the window's klines of the run's interval and the funding
settlements, fetched over REST, only what the cache lacks) and backtests on
those files (:func:`history_config`). A fetch that fails fails every gate
with the reason; it never lets a strategy through. There the first
evaluation runs on the worker thread too, so the other strategies trade
while it runs (a gated strategy stays held, :data:`PENDING`, until its
verdict, which is applied on the trading loop as soon as it is ready). The
replayed paper feed keeps the first evaluation inline, before the first
bar, so a replay stays deterministic: the same verdict before the same bars.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from keel.api.binance.constants import REQUEST_WEIGHT_PER_MINUTE
from keel.api.binance.market_history import BARS_FOLDER, FUNDING_FILE, MarketHistory
from keel.api.binance.rest import RateLimiter
from keel.config import KeelConfig
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, Clock, datetime_to_ns
from keel.core.component import Component
from keel.core.messages import BarClosed, StrategyGateEvaluated
from keel.core.time_events import TimeEvent
from keel.integration.reports import BARS_PER_YEAR, run_metrics
from keel.market_data.feeds import INTERVAL_MS
from keel.strategy_engine.gate import DAY_NS, GateRule, GateVerdict, judge
from keel.strategy_engine.manager import StrategyManager

_log = structlog.get_logger("keel.gate")

PENDING = "backtest gate not evaluated yet"
"""The reason a gated strategy is held before its first verdict."""

CACHE_ENTRIES = 64
"""Verdicts a gatekeeper remembers (the oldest is forgotten first)."""


def gate_config(config: KeelConfig, strategy: str, rule: GateRule, now_ns: int) -> KeelConfig:
    """Return the configuration of a strategy's gate backtest: the run's, with that strategy alone, over the window.

    The window is the last ``rule.window_days`` up to the last bar close at
    or before ``now_ns``, ending earlier where the funding data stops (the simulated venue needs a rate at
    every funding time a position is held through). ``keel backtest`` of this
    configuration gives the gate's figures.
    """
    from keel.integration.replay import funding_coverage_end  # replay wires the pipeline, which builds gatekeepers

    interval_ns = INTERVAL_MS[config.data.bar_interval] * NANOS_PER_MILLI
    end_ns = now_ns // interval_ns * interval_ns  # the last bar closed by now closes on the grid
    covered = funding_coverage_end(config, config.data.symbols)
    if covered is not None:
        end_ns = min(end_ns, datetime_to_ns(covered))
    start_ns = end_ns - int(rule.window_days * DAY_NS)
    data = config.data.model_copy(update={"start": _datetime(start_ns), "end": _datetime(end_ns)})
    settings = config.strategy.model_copy(update={"name": "strategy_manager", "strategies": (strategy,), "gates": {}})
    run = config.run.model_copy(update={"mode": "backtest"})
    return config.model_copy(update={"data": data, "strategy": settings, "run": run})


def history_config(config: KeelConfig, history: MarketHistory) -> KeelConfig:
    """Return ``config`` reading its bars and funding from the ``history`` cache instead of the recording."""
    data = config.data.model_copy(
        update={"root": history.folder, "bars": BARS_FOLDER, "funding": FUNDING_FILE, "resample_from": None}
    )
    return config.model_copy(update={"data": data})


def data_fingerprint(config: KeelConfig) -> str:
    """Return a fingerprint of the bar and funding files a backtest of ``config`` may read (name, size, mtime)."""
    data = config.data
    paths = [path for symbol in data.symbols for path in sorted((data.root / data.bars).glob(f"{symbol}_*"))]
    if data.funding is not None:
        paths.append(data.root / data.funding)
    digest = hashlib.sha256()
    for path in paths:
        status = path.stat() if path.is_file() else None
        marker = "missing" if status is None else f"{status.st_size}:{status.st_mtime_ns}"
        digest.update(f"{path}:{marker};".encode())
    return digest.hexdigest()


def config_hash(config: KeelConfig) -> str:
    """Return a hash of ``config`` (secrets excluded)."""
    dumped = config.model_dump(mode="json", exclude={"secrets"})
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()


def backtest_gate(config: KeelConfig, strategy: str, rule: GateRule, now_ns: int) -> GateVerdict:
    """Backtest ``strategy`` alone over the window before ``now_ns`` (:func:`gate_config`); judge it by ``rule``.

    A backtest that cannot run (no bars in the window, a strategy the data
    cannot serve) fails the gate with the error as its reason.
    """
    from keel.integration.replay import RecordedRun  # replay wires the pipeline, which builds gatekeepers

    backtest = gate_config(config, strategy, rule, now_ns)
    try:
        # Inside a trading process: the process's message ids go on (the journal's ids stay unique).
        run = RecordedRun(backtest, measure_latency=False, reset_ids=False)
        run.replay()
    except Exception as error:  # a strategy that cannot be backtested here does not trade
        reason = f"backtest could not run: {type(error).__name__}: {error}"
        return judge(strategy, rule, None, 0.0, 0, failure=reason)
    metrics = run_metrics(run.pipeline, BARS_PER_YEAR[backtest.data.bar_interval])
    if run.handler_failures:
        failure = f"backtest had {len(run.handler_failures)} handler errors, the first: {run.handler_failures[0]}"
    else:
        failure = None
    summary = run.feed.summary
    return judge(
        strategy,
        rule,
        float(metrics["sharpe_ratio"]),
        float(metrics["max_drawdown"]),
        int(metrics["n_trades"]),
        bars=run.bars,
        window_start=summary.first_ns,
        window_end=summary.last_ns,
        failure=failure,
    )


class StrategyGatekeeper(Component):
    """Hold gated strategies out of the vote until their backtest on recent data passes the rule.

    Parameters
    ----------
    manager
        The running strategy manager.
    rules
        Strategy name -> its gate rule (strategies the manager does not run are ignored).
    config
        The run's configuration (what each gate backtest starts from).
    bus, clock
        The event bus and the clock.
    recheck_ns
        Clock time between re-evaluations.
    background
        Run the re-evaluations on a worker thread (their verdicts apply at the
        first bar after they finish) so a long backtest does not hold up the
        trading loop; the first evaluation, before trading, always runs inline.
        Paper and live runs use it (a backtest builds no gatekeeper).
    """

    def __init__(
        self,
        manager: StrategyManager,
        rules: Mapping[str, GateRule],
        config: KeelConfig,
        bus: EventBus,
        clock: Clock,
        *,
        recheck_ns: int = 1440 * NANOS_PER_MINUTE,
        background: bool = False,
    ) -> None:
        super().__init__("strategy_gate", bus, clock)
        running = {s.name for s in manager.strategies}
        self.manager = manager
        self.rules = {name: rule for name, rule in sorted(rules.items()) if name in running}
        self.config = config
        self.recheck_ns = recheck_ns
        self.verdicts: dict[str, GateVerdict] = {}
        self.background = background
        self.pending: Future[list[tuple[str, GateVerdict]]] | None = None
        self.cache: dict[str, GateVerdict] = {}
        self.backtests_run = 0
        self.history: MarketHistory | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        for name in self.rules:
            manager.set_strategy_gate(name, PENDING)

    def use_market_history(self, history: MarketHistory) -> None:
        """Backtest on Binance's recent market (cached by ``history``); judge the first time off the trading loop.

        Call before :meth:`start`. Every evaluation runs on the worker thread
        and its verdicts apply on the trading loop as soon as they are ready
        (the loop running at start; else at the first bar after).
        """
        self.history = history
        self.background = True

    def on_start(self) -> None:
        """Judge every gated strategy before trading (live market: while the others trade); re-judge on the timer."""
        if not self.rules:
            return
        self.bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.bars")
        if self.history is None:
            self.evaluate_all()
        else:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None
            self._submit()
        self.clock.set_timer(f"{self.name}.recheck", self.recheck_ns, self.on_recheck)

    def on_bar(self, _bar: BarClosed) -> None:
        """Apply a finished background re-evaluation's verdicts at the first bar after it finished."""
        if self.pending is not None:
            self.apply_finished()

    def on_recheck(self, _event: TimeEvent) -> None:
        """Re-evaluate every gate on the timer (on a worker thread with ``background``)."""
        if not self.background:
            self.evaluate_all()
            return
        if self.pending is not None and not self.pending.done():
            return  # the last re-evaluation is still running
        self._submit()

    def _submit(self) -> None:
        """Start judging every gate on the worker thread (verdicts at the next bar, or at once with a loop)."""
        self.pending = self._executor().submit(self._judge_all, self.clock.timestamp_ns())
        if self._loop is not None:
            self.pending.add_done_callback(self._wake_loop)

    def _wake_loop(self, _done: Future[list[tuple[str, GateVerdict]]]) -> None:
        # On the worker thread: the verdicts are applied on the trading loop (unless it has closed since).
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # RuntimeError: it closed between the check and the call (the session is over).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.apply_finished)

    def apply_finished(self) -> bool:
        """Apply a finished background re-evaluation's verdicts (on the trading loop); return whether there was one."""
        pending = self.pending
        if pending is None or not pending.done():
            return False
        self.pending = None
        for name, verdict in pending.result():
            self._apply(name, self.rules[name], verdict)
        return True

    def evaluate_all(self) -> list[GateVerdict]:
        """Backtest every gated strategy up to now; let it vote or hold it; publish each verdict."""
        verdicts = []
        for name, verdict in self._judge_all(self.clock.timestamp_ns()):
            self._apply(name, self.rules[name], verdict)
            verdicts.append(verdict)
        return verdicts

    def on_stop(self) -> None:
        """Stop the worker thread; a re-evaluation still running is abandoned (its verdicts are never applied)."""
        self.clock.cancel_timer(f"{self.name}.recheck")
        self.pending = None
        self._loop = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="strategy-gate")
        return self._pool

    def _judge_all(self, now_ns: int) -> list[tuple[str, GateVerdict]]:
        config = self.config
        if self.history is not None:
            failure = self._refresh_history(now_ns)
            if failure is not None:
                return [(name, judge(name, rule, None, 0.0, 0, failure=failure)) for name, rule in self.rules.items()]
            config = history_config(config, self.history)
        return [(name, self._judge(config, name, rule, now_ns)) for name, rule in self.rules.items()]

    def _refresh_history(self, now_ns: int) -> str | None:
        """Fetch what the cache lacks of the longest window up to now; return why that failed (None: it did not)."""
        history = self.history
        assert history is not None
        interval_ns = INTERVAL_MS[self.config.data.bar_interval] * NANOS_PER_MILLI
        end_ns = now_ns // interval_ns * interval_ns
        start_ns = end_ns - int(max(rule.window_days for rule in self.rules.values()) * DAY_NS)
        try:
            history.refresh(start_ns, end_ns)
        except Exception as error:  # unreachable, refused, banned (418), bad rows: no strategy passes on it
            failure = f"market data from Binance could not be fetched: {type(error).__name__}: {error}"
            _log.warning("strategy gate: no market history", rest_url=history.rest_url, error=failure)
            return failure
        return None

    def _judge(self, config: KeelConfig, name: str, rule: GateRule, now_ns: int) -> GateVerdict:
        backtest = gate_config(config, name, rule, now_ns)
        key = f"{data_fingerprint(backtest)}:{config_hash(backtest)}:{rule}"
        verdict = self.cache.get(key)
        if verdict is None:
            verdict = backtest_gate(config, name, rule, now_ns)
            self.backtests_run += 1
            if len(self.cache) >= CACHE_ENTRIES:
                del self.cache[next(iter(self.cache))]
            self.cache[key] = verdict
        return verdict

    def _apply(self, name: str, rule: GateRule, verdict: GateVerdict) -> None:
        previous = self.verdicts.get(name)
        self.verdicts[name] = verdict
        self.manager.set_strategy_gate(name, verdict.reason)
        if previous is None or previous.passed != verdict.passed:
            _log.info("strategy gate", strategy=name, passed=verdict.passed, reason=verdict.reason)
        self.bus.publish(
            StrategyGateEvaluated(
                strategy=name,
                passed=verdict.passed,
                reason=verdict.reason,
                sharpe=verdict.sharpe,
                max_drawdown=verdict.max_drawdown,
                trades=verdict.trades,
                window_days=rule.window_days,
                ts_event=self.clock.timestamp_ns(),
                ts_init=self.clock.timestamp_ns(),
            )
        )


def _datetime(ts: int) -> datetime:
    return datetime.fromtimestamp(ts // 1_000_000_000, tz=UTC).replace(microsecond=(ts // 1000) % 1_000_000)


def market_history(config: KeelConfig, rest_url: str) -> MarketHistory:
    """Return the gate's cache of Binance's market at ``rest_url``: under ``run.output_dir``, one folder per host.

    Its requests take at most half of Binance's request weight per minute
    (paced on the used-weight Binance reports for the IP, which the trading
    client's requests count in).
    """
    host = re.sub(r"[^A-Za-z0-9.-]", "_", urlsplit(rest_url).netloc) or "binance"
    limiter = RateLimiter(
        lambda: time.time_ns() // NANOS_PER_MILLI, asyncio.sleep, weight_budget=REQUEST_WEIGHT_PER_MINUTE // 2
    )
    folder = Path(config.run.output_dir) / "market_history" / host
    return MarketHistory(rest_url, folder, config.data.symbols, config.data.bar_interval, limiter=limiter)


def build_gatekeeper(config: KeelConfig, manager: StrategyManager, bus: EventBus, clock: Clock) -> StrategyGatekeeper:
    """Build the gatekeeper of ``strategy.gates`` (background re-evaluations in paper and live runs)."""
    settings = config.strategy
    rules: dict[str, GateRule] = {
        name: GateRule(gate.min_sharpe, gate.max_drawdown, gate.min_trades, gate.window_days)
        for name, gate in settings.gates.items()
    }
    return StrategyGatekeeper(
        manager,
        rules,
        config,
        bus,
        clock,
        recheck_ns=int(settings.gate_recheck_minutes * NANOS_PER_MINUTE),
        background=config.run.mode in ("paper", "live"),
    )
