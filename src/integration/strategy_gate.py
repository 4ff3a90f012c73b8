"""The backtest gate on a running system: strategies prove themselves on recent data before they may trade.

:class:`StrategyGatekeeper` holds every strategy that has a gate rule out of
the strategy manager's vote until its backtest over the last
``window_days`` of data passes (:func:`~keel.strategy_engine.gate.evaluate_gate`),
checks again every ``recheck_ns`` of the clock's time, and publishes each
verdict as a ``StrategyGateEvaluated`` event, which the state manager
journals. The reason a strategy is held is in the manager's status, so the
status API and the dashboard show it.

The data it backtests on are the recorded bars before the start (the seed)
followed by the bars the run has seen, never a bar after the clock's now.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import structlog

from keel.config import KeelConfig
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, Clock, TimeEvent
from keel.core.component import Component
from keel.core.errors import MalformedDataError
from keel.core.messages import BarClosed, StrategyGateEvaluated
from keel.market_data.feeds import INTERVAL_MS, RecordedBarFeed
from keel.strategy_engine.factory import StrategyFactory
from keel.strategy_engine.gate import DAY_NS, GateRule, GateVerdict, evaluate_gate
from keel.strategy_engine.manager import StrategyManager

_log = structlog.get_logger("keel.gate")

PENDING = "backtest gate not evaluated yet"
"""The reason a gated strategy is held before its first verdict."""


class StrategyGatekeeper(Component):
    """Hold gated strategies out of the vote until their backtest on recent data passes the rule.

    Parameters
    ----------
    manager
        The running strategy manager.
    rules
        Strategy name -> its gate rule (strategies the manager does not run are ignored).
    parameters
        Strategy name -> the parameters its backtest is built with.
    bus, clock
        The event bus and the clock.
    seed
        Recorded bars from before the start (any order; bars after the
        clock's now are ignored).
    recheck_ns
        Clock time between re-evaluations.
    fee_rate
        Fee per unit of exposure change in the backtests.
    bar_interval_ns
        Length of a bar; with the longest window it bounds the bars kept.
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
        parameters: Mapping[str, Mapping[str, Any]],
        bus: EventBus,
        clock: Clock,
        *,
        seed: Iterable[BarClosed] = (),
        recheck_ns: int = 1440 * NANOS_PER_MINUTE,
        fee_rate: float = 0.0005,
        bar_interval_ns: int = NANOS_PER_MINUTE,
        background: bool = False,
    ) -> None:
        super().__init__("strategy_gate", bus, clock)
        running = {s.name for s in manager.strategies}
        self.manager = manager
        self.rules = {name: rule for name, rule in sorted(rules.items()) if name in running}
        self.parameters = {name: dict(parameters.get(name, {})) for name in self.rules}
        self.recheck_ns = recheck_ns
        self.fee_rate = fee_rate
        longest = max((rule.window_days for rule in self.rules.values()), default=0.0)
        warmup = max((StrategyFactory.create_strategy(n, p).warmup_bars for n, p in self.parameters.items()), default=0)
        self._capacity = int(longest * DAY_NS / bar_interval_ns) + warmup + 2
        self._bars: dict[str, deque[BarClosed]] = {}
        self.verdicts: dict[str, GateVerdict] = {}
        self.background = background
        self.pending: Future[list[tuple[str, GateVerdict]]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        for name in self.rules:
            manager.set_strategy_gate(name, PENDING)
        now = clock.timestamp_ns()
        for bar in sorted(seed, key=lambda b: (b.symbol, b.ts_event)):
            if bar.ts_event <= now:
                self.on_bar(bar)

    def on_start(self) -> None:
        """Judge every gated strategy before the first bar trades; re-judge on the timer."""
        if not self.rules:
            return
        self.bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.bars")
        self.evaluate_all()
        self.clock.set_timer(f"{self.name}.recheck", self.recheck_ns, self.on_recheck)

    def on_bar(self, bar: BarClosed) -> None:
        """Keep a closed bar for the next backtest (out-of-order bars are skipped); apply finished verdicts."""
        if self.pending is not None:
            self.apply_finished()
        bars = self._bars.get(bar.symbol)
        if bars is None:
            bars = self._bars[bar.symbol] = deque(maxlen=self._capacity)
        if not bars or bar.ts_event > bars[-1].ts_event:
            bars.append(bar)

    def on_recheck(self, _event: TimeEvent) -> None:
        """Re-evaluate every gate on the timer (on a worker thread with ``background``)."""
        if not self.background:
            self.evaluate_all()
            return
        if self.pending is not None and not self.pending.done():
            return  # the last re-evaluation is still running
        data = self._market_data()
        self.pending = self._executor().submit(self._judge_all, data)

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
        """Backtest every gated strategy on the bars kept; let it vote or hold it; publish each verdict."""
        verdicts = []
        for name, verdict in self._judge_all(self._market_data()):
            self._apply(name, self.rules[name], verdict)
            verdicts.append(verdict)
        return verdicts

    def on_stop(self) -> None:
        """Stop the worker thread (a re-evaluation still running is abandoned)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="strategy-gate")
        return self._pool

    def _judge_all(self, data: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, GateVerdict]]:
        judged = []
        for name, rule in self.rules.items():
            make = functools.partial(StrategyFactory.create_strategy, name, self.parameters[name])
            try:
                verdict = evaluate_gate(make, data, rule, fee_rate=self.fee_rate)
            except Exception as error:  # a strategy that cannot be backtested here does not trade
                reason = f"backtest gate could not run: {type(error).__name__}: {error}"
                verdict = GateVerdict(name, False, reason, None, 0.0, 0, 0, None, None)
            judged.append((name, verdict))
        return judged

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

    def _market_data(self) -> dict[str, dict[str, Any]]:
        data = {}
        for symbol, bars in sorted(self._bars.items()):
            if not bars:
                continue
            data[symbol] = {
                "symbol": symbol,
                "timestamp": np.array([b.ts_event for b in bars], dtype=np.int64),
                "open": np.array([b.open for b in bars], dtype=float),
                "high": np.array([b.high for b in bars], dtype=float),
                "low": np.array([b.low for b in bars], dtype=float),
                "close": np.array([b.close for b in bars], dtype=float),
                "volume": np.array([b.volume for b in bars], dtype=float),
            }
        return data


def build_gatekeeper(config: KeelConfig, manager: StrategyManager, bus: EventBus, clock: Clock) -> StrategyGatekeeper:
    """Build the gatekeeper of ``strategy.gates``, seeded with the recorded bars of the window before now.

    The seed is what the configured bar data holds of the longest window
    (plus warm-up) before the clock's now; a recording that does not reach
    back so far gives a shorter backtest.
    """
    settings = config.strategy
    rules: dict[str, GateRule] = {
        name: GateRule(gate.min_sharpe, gate.max_drawdown, gate.min_trades, gate.window_days)
        for name, gate in settings.gates.items()
    }
    parameters: dict[str, dict[str, Any]] = {name: getattr(settings.parameters, name).model_dump() for name in rules}
    data = config.data
    interval_ns = INTERVAL_MS[data.bar_interval] * NANOS_PER_MILLI
    now = clock.timestamp_ns()
    longest = max((rule.window_days for rule in rules.values()), default=0.0)
    start = now - int(longest * DAY_NS) - (settings.warmup_bars + 1) * interval_ns
    seed: list[BarClosed] = []
    if rules:
        try:
            feed = RecordedBarFeed(
                data.root / data.bars, data.symbols, data.bar_interval, None, start, now,
                resample_from=data.resample_from,
            )  # fmt: skip
            seed = [event for event in feed if isinstance(event, BarClosed)]
        except MalformedDataError:
            seed = []  # nothing recorded before now: the gate judges on the bars the run sees
    fee = config.exchange.taker_fee
    return StrategyGatekeeper(
        manager,
        rules,
        parameters,
        bus,
        clock,
        seed=seed,
        recheck_ns=int(settings.gate_recheck_minutes * NANOS_PER_MINUTE),
        fee_rate=0.0005 if fee is None else float(fee),
        bar_interval_ns=interval_ns,
        background=config.run.mode in ("paper", "live"),
    )
