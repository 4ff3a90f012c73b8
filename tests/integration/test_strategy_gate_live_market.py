"""The backtest gate on the live market: Binance's last days fetched over REST (a local Binance), cached, backtested."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from keel.api.binance.local_market import Tape, bar_tape
from keel.api.binance.market_history import MarketHistory
from keel.backtest import BacktestEngine
from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, SimulatedClock
from keel.core.instruments import load_instruments
from keel.core.messages import SignalGenerated, StrategyGateEvaluated, TargetQuantityProposed
from keel.integration.paper import PaperSession
from keel.integration.pipeline import build_pipeline, funding_file
from keel.integration.strategy_gate import (
    PENDING,
    StrategyGatekeeper,
    backtest_gate,
    gate_config,
    history_config,
)
from keel.market_data.feeds import RecordedBarFeed
from keel.persistence import Database, Journal
from keel.strategy_engine import StrategyManager, VolatilityBreakoutStrategy
from keel.strategy_engine.gate import GateRule
from kit.local_binance import start_local_binance

BTC = "BTCUSDT"
START_NS = 1_746_662_400_000 * NANOS_PER_MILLI  # 2025-05-08 00:00 UTC
DAY_NS = 1440 * NANOS_PER_MINUTE


def paper_config(output: Path, gates: dict | None = None) -> KeelConfig:
    """BTC only, no warm-up, no regime detection (as the recorded gate's tests)."""
    base = load_config("paper", environ={})
    return base.model_copy(
        update={
            "run": base.run.model_copy(update={"output_dir": output}),
            "data": base.data.model_copy(update={"symbols": (BTC,), "start": None, "end": None}),
            "portfolio": base.portfolio.model_copy(update={"no_trade_band": False}),
            "strategy": base.strategy.model_copy(
                update={
                    "strategies": ("volatility_breakout", "scheduled_dca"),
                    "warmup_bars": 0,
                    "gates": base.strategy.model_validate({"gates": gates or {}}).gates,
                    "regime": base.strategy.regime.model_copy(update={"enabled": False}),
                }
            ),
        }
    )


def market_tape(config: KeelConfig, days_before: float) -> tuple[Tape, int]:
    """The bundled BTC bars and funding as a Binance market whose past ends at START_NS; the position of now."""
    data = config.data
    tape = bar_tape(
        data.root / data.bars, [BTC], funding_file(config), START_NS - int(days_before * DAY_NS), START_NS + DAY_NS
    )
    position = next(i for i, m in enumerate(tape.messages) if m.ts_ms * NANOS_PER_MILLI > START_NS)
    return tape, position


@pytest.mark.asyncio
async def test_the_gate_on_binances_market_has_the_figures_of_keel_backtest_over_the_same_bars(tmp_path: Path) -> None:
    # Arrange: a local Binance whose market past is the three recorded days before START_NS
    config = paper_config(tmp_path)
    tape, position = market_tape(config, 3.5)
    server, _market = await start_local_binance(tape, [BTC], position=position)
    history = MarketHistory(server.base_url, tmp_path / "cache", (BTC,), "1m")
    manager = StrategyManager([VolatilityBreakoutStrategy()], detector_factory=False)
    rule = GateRule(min_trades=1, window_days=3.0)
    gatekeeper = StrategyGatekeeper(
        manager, {"volatility_breakout": rule}, config, EventBus(), SimulatedClock(START_NS)
    )
    gatekeeper.history = history
    try:
        # Act: judged on the fetched bars (on a thread: the fetch runs its own event loop)
        verdicts = await asyncio.to_thread(gatekeeper.evaluate_all)
        requests = server.used_weight
    finally:
        await server.stop()
    fetched = BacktestEngine(gate_config(history_config(config, history), "volatility_breakout", rule, START_NS)).run()
    recorded = backtest_gate(config, "volatility_breakout", rule, START_NS)

    # Assert: the figures of keel backtest over the cached files, and of the gate over the recording
    verdict = verdicts[0]
    assert verdict.passed and verdict.trades > 0 and requests > 0
    assert (verdict.sharpe, verdict.max_drawdown, verdict.trades, verdict.bars) == (
        fetched["sharpe_ratio"],
        fetched["max_drawdown"],
        fetched["n_trades"],
        fetched["bars_processed"],
    )
    assert (verdict.sharpe, verdict.max_drawdown, verdict.trades, verdict.bars, verdict.window_start) == (
        recorded.sharpe,
        recorded.max_drawdown,
        recorded.trades,
        recorded.bars,
        recorded.window_start,
    )
    assert verdict.bars == 3 * 1440 and verdict.window_end == START_NS
    assert fetched["funding_data"] != "none"


@pytest.mark.asyncio
async def test_a_recheck_fetches_only_the_bars_after_the_cached_ones(tmp_path: Path) -> None:
    # Arrange: a cache of the day before START_NS
    config = paper_config(tmp_path)
    tape, position = market_tape(config, 1.0)
    server, market = await start_local_binance(tape, [BTC], position=position)
    history = MarketHistory(server.base_url, tmp_path / "cache", (BTC,), "1m")
    try:
        first = await history.update(START_NS - DAY_NS, START_NS)

        # Act: an hour of the market later, the window moved by an hour
        await market.play(120)
        now = START_NS + 60 * NANOS_PER_MINUTE
        second = await history.update(now - DAY_NS, now)
    finally:
        await server.stop()
    cached = RecordedBarFeed(history.folder / "ohlcv", (BTC,), "1m", history.funding_path)
    recorded = RecordedBarFeed(
        config.data.root / config.data.bars, (BTC,), "1m", funding_file(config), now - DAY_NS, now
    )

    # Assert
    assert (first.bars, second.bars) == (1440, 60)
    assert second.requests == 2  # one page of klines, one of funding
    assert [(e.ts_event, getattr(e, "close", None)) for e in cached] == [
        (e.ts_event, getattr(e, "close", None)) for e in recorded
    ]
    assert cached.summary.funding_events == recorded.summary.funding_events > 0


@pytest.mark.asyncio
async def test_a_failed_fetch_fails_the_gate_with_the_reason(tmp_path: Path) -> None:
    # Arrange: a Binance that is no longer there
    config = paper_config(tmp_path)
    tape, position = market_tape(config, 0.1)
    server, _market = await start_local_binance(tape, [BTC], position=position)
    url = server.base_url
    await server.stop()
    manager = StrategyManager([VolatilityBreakoutStrategy()], detector_factory=False)
    gatekeeper = StrategyGatekeeper(
        manager, {"volatility_breakout": GateRule(window_days=1.0)}, config, EventBus(), SimulatedClock(START_NS)
    )
    gatekeeper.history = MarketHistory(url, tmp_path / "cache", (BTC,), "1m")

    # Act
    verdicts = await asyncio.to_thread(gatekeeper.evaluate_all)

    # Assert
    assert not verdicts[0].passed
    assert verdicts[0].reason.startswith(
        "backtest gate over the last 1 days failed: market data from Binance could not be fetched: "
    )
    assert manager.strategy_gate("volatility_breakout") == verdicts[0].reason


@pytest.mark.asyncio
async def test_an_evaluation_that_finishes_after_the_stop_is_never_applied(tmp_path: Path) -> None:
    # Arrange: a live-market gatekeeper whose fetch waits until the test lets it go (then finds no Binance)
    config = paper_config(tmp_path)
    released = threading.Event()

    def session() -> aiohttp.ClientSession:
        released.wait(timeout=120)
        return aiohttp.ClientSession()

    bus = EventBus()
    verdicts: list[StrategyGateEvaluated] = []
    bus.subscribe(StrategyGateEvaluated, verdicts.append)
    manager = StrategyManager([VolatilityBreakoutStrategy()], detector_factory=False)
    gatekeeper = StrategyGatekeeper(
        manager, {"volatility_breakout": GateRule(window_days=1.0)}, config, bus, SimulatedClock(START_NS)
    )
    gatekeeper.use_market_history(
        MarketHistory("http://127.0.0.1:9", tmp_path / "cache", (BTC,), "1m", session_factory=session)
    )
    gatekeeper.start()
    pending = gatekeeper.pending
    assert pending is not None

    # Act: stopped while judging; the evaluation then finishes and the loop runs its callbacks
    gatekeeper.stop()
    released.set()
    await asyncio.wrap_future(pending)
    await asyncio.sleep(0)
    bus.drain()

    # Assert: the abandoned verdict reached neither the strategy nor the bus
    assert pending.result()[0][1].reason is not None
    assert gatekeeper.verdicts == {} and verdicts == []
    assert manager.strategy_gate("volatility_breakout") == PENDING


@pytest.mark.asyncio
async def test_the_other_strategies_trade_while_the_first_live_evaluation_runs(tmp_path: Path) -> None:
    # Arrange: a paper pipeline on the live market; the gate's fetch waits until the test lets it go
    config = paper_config(tmp_path, {"volatility_breakout": {"min_sharpe": 100.0, "window_days": 1}})
    tape, position = market_tape(config, 1.0)
    server, _market = await start_local_binance(tape, [BTC], position=position)
    released = threading.Event()

    def session() -> aiohttp.ClientSession:
        released.wait(timeout=120)
        return aiohttp.ClientSession()

    bus, clock = EventBus(), SimulatedClock(START_NS)
    verdicts: list[StrategyGateEvaluated] = []
    signals: list[SignalGenerated] = []
    targets: list[TargetQuantityProposed] = []
    bus.subscribe(StrategyGateEvaluated, verdicts.append)
    bus.subscribe(SignalGenerated, signals.append)
    bus.subscribe(TargetQuantityProposed, targets.append)
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), bus, clock)
    gatekeeper = pipeline.gatekeeper
    assert isinstance(gatekeeper, StrategyGatekeeper)
    gatekeeper.use_market_history(
        MarketHistory(server.base_url, tmp_path / "cache", (BTC,), "1m", session_factory=session)
    )
    bars = list(RecordedBarFeed(config.data.root / config.data.bars, (BTC,), "1m", None, START_NS, START_NS + DAY_NS))
    try:
        # Act: start (the evaluation waits on the worker), trade five hours (a DCA fire at 04:00), let it go
        pipeline.start()
        bus.drain()
        for bar in bars[:300]:
            clock.advance_to(bar.ts_event)
            bus.publish(bar)
            bus.drain()
        held = pipeline.strategy.manager.strategy_gate("volatility_breakout")
        during = list(signals)
        bought_during = [t for t in targets if t.strategy == "scheduled_dca" and t.quantity > 0]
        released.set()
        pending = gatekeeper.pending
        assert pending is not None
        await asyncio.wrap_future(pending)
        bus.drain()
        pipeline.stop()
    finally:
        released.set()
        await server.stop()

    # Assert: held until the verdict, which landed without waiting for a bar
    assert held == PENDING
    assert bought_during
    assert all(s.contributions.get("volatility_breakout", 0.0) == 0.0 for s in during)
    assert len(verdicts) == 1 and not verdicts[0].passed
    assert verdicts[0].reason.startswith("backtest gate over the last 1 days failed: Sharpe ")
    assert pipeline.strategy.manager.strategy_gate("volatility_breakout") == verdicts[0].reason


@pytest.mark.asyncio
async def test_a_paper_run_on_the_live_market_gates_on_binances_last_bars(tmp_path: Path) -> None:
    # Arrange: an hour of real BTC bars (and the funding settlement at its end) shifted to now; 45 minutes are past
    config = paper_config(tmp_path, {"volatility_breakout": {"window_days": 0.02}})
    data = config.data
    whole = bar_tape(data.root / data.bars, [BTC], funding_file(config), START_NS - 3_600 * 10**9, START_NS)
    position = 2 * 45  # a kline and a mark price per minute
    tape = whole.shifted((time.time_ns() // NANOS_PER_MILLI - whole.messages[position - 1].ts_ms) // 60_000 * 60_000)
    server, market = await start_local_binance(tape, [BTC], position=position)
    config = config.model_copy(
        update={
            "binance": config.binance.model_copy(
                update={"rest_url": server.base_url, "ws_url": server.base_url.replace("http", "ws")}
            ),
            "paper": config.paper.model_copy(
                update={"feed": "binance", "status_interval_seconds": 0.05, "duration_seconds": 120}
            ),
            "web": config.web.model_copy(update={"enabled": False}),
        }
    )
    try:
        session = PaperSession(config, tmp_path / "run")
        verdicts: list[StrategyGateEvaluated] = []
        session.pipeline.bus.subscribe(StrategyGateEvaluated, verdicts.append)

        def stop_when_judged(_status: dict) -> None:
            if verdicts and market.finished.is_set():
                session.request_stop("judged and played")

        session._on_status = stop_when_judged
        playing = asyncio.create_task(market.run(speed=600.0))
        try:
            # Act
            await session.run()
        finally:
            playing.cancel()
            await asyncio.gather(playing, return_exceptions=True)
        journal = Journal(Database(f"sqlite:///{tmp_path / 'keel.db'}"))
        journaled = [entry for _, entry in journal.entries_of(StrategyGateEvaluated)]
    finally:
        await server.stop()

    # Assert: judged on the local Binance's last bars before the start (28 of the 45), cached under the output folder.
    # The start is the wall clock's: a minute may turn between shifting the tape and starting, so the window ends
    # at the last past bar or at the first one played after it, never after the minute the verdict came in. Started
    # shortly before midnight UTC, the played minutes reach the daily recheck: the last verdict is the one compared.
    gatekeeper = session.pipeline.gatekeeper
    assert isinstance(gatekeeper, StrategyGatekeeper) and gatekeeper.history is not None
    verdict = verdicts[-1]
    past_end = tape.messages[position - 1].ts_ms * NANOS_PER_MILLI
    minute = 60 * 10**9
    judged_by = verdict.ts_event // minute * minute
    assert verdict.passed, verdict.reason
    judged = gatekeeper.verdicts["volatility_breakout"]
    assert judged.window_end is not None
    assert judged.bars == 28 and past_end <= judged.window_end + minute and judged.window_end <= judged_by
    assert journaled[0].passed and journaled[0].strategy == "volatility_breakout"
    assert gatekeeper.history.folder.parent == tmp_path / "market_history"
    cached = RecordedBarFeed(gatekeeper.history.folder / "ohlcv", (BTC,), "1m")
    assert cached.summary.last_ns <= judged_by
    assert cached.summary.bars >= 28
