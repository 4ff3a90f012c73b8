"""The backtest gate on a paper pipeline: the full backtest of the window, judged before trading, held out of the
vote, re-judged on the clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from keel.backtest import BacktestEngine
from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, SimulatedClock
from keel.core.instruments import load_instruments
from keel.core.messages import SignalGenerated, StrategyGateEvaluated
from keel.integration.orchestrator import TradingOrchestrator
from keel.integration.pipeline import Pipeline, build_pipeline, funding_file
from keel.integration.state_manager import JOURNALED
from keel.integration.strategy_gate import PENDING, StrategyGatekeeper, backtest_gate, gate_config
from keel.market_data.feeds import RecordedBarFeed
from keel.strategy_engine import ScheduledDcaStrategy, StrategyManager, VolatilityBreakoutStrategy
from keel.strategy_engine.gate import GateRule

BTC = "BTCUSDT"
# 2025-05-08 00:00 UTC: three recorded days before it seed the gate's backtest.
START_NS = 1_746_662_400_000 * NANOS_PER_MILLI
DAY_NS = 1440 * NANOS_PER_MINUTE
REPO = Path(__file__).resolve().parents[2]
DATA_BARS = load_config("paper", environ={}).data.root / "ohlcv/binance_usdm_1m_2025-05"


def paper_config(gates: dict) -> KeelConfig:
    """BTC only, no warm-up, no regime detection; the no-trade band off (three days are short to pay a round trip)."""
    base = load_config("paper", environ={})
    return base.model_copy(
        update={
            "data": base.data.model_copy(update={"symbols": (BTC,), "start": None, "end": None}),
            "portfolio": base.portfolio.model_copy(update={"no_trade_band": False}),
            "strategy": base.strategy.model_copy(
                update={
                    "strategies": ("volatility_breakout", "mean_reversion"),
                    "warmup_bars": 0,
                    "gates": base.strategy.model_validate({"gates": gates}).gates,
                    "gate_recheck_minutes": 720.0,
                    "regime": base.strategy.regime.model_copy(update={"enabled": False}),
                }
            ),
        }
    )


def gated_pipeline(gates: dict) -> tuple[Pipeline, SimulatedClock, list[StrategyGateEvaluated], list[SignalGenerated]]:
    config = paper_config(gates)
    clock = SimulatedClock(START_NS)
    bus = EventBus()
    verdicts: list[StrategyGateEvaluated] = []
    signals: list[SignalGenerated] = []
    bus.subscribe(StrategyGateEvaluated, verdicts.append)
    bus.subscribe(SignalGenerated, signals.append)
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), bus, clock)
    pipeline.start()
    bus.drain()
    return pipeline, clock, verdicts, signals, config


def replay(pipeline: Pipeline, clock: SimulatedClock, config, days: float) -> None:
    data = config.data
    end = START_NS + int(days * DAY_NS)
    for event in RecordedBarFeed(data.root / data.bars, (BTC,), "1m", funding_file(config), START_NS, end):
        clock.advance_to(event.ts_event)
        pipeline.bus.publish(event)
        pipeline.bus.drain()


def test_a_failing_strategy_is_held_with_its_reason_in_the_status_and_journal_before_any_bar() -> None:
    # Arrange / Act
    pipeline, _clock, verdicts, _signals, config = gated_pipeline(
        {"volatility_breakout": {"min_sharpe": 100.0, "min_trades": 1, "window_days": 3}}
    )
    rows = {row.name: row for row in TradingOrchestrator(pipeline, config).strategies()}

    # Assert
    assert [v.strategy for v in verdicts] == ["volatility_breakout"]
    verdict = verdicts[0]
    assert not verdict.passed and verdict.trades > 0
    assert verdict.reason.startswith("backtest gate over the last 3 days failed: Sharpe ")
    assert rows["volatility_breakout"].gate == verdict.reason
    assert rows["mean_reversion"].gate is None
    assert StrategyGateEvaluated in JOURNALED


def test_a_held_strategy_has_no_say_in_the_signals() -> None:
    # Arrange
    pipeline, clock, verdicts, signals, config = gated_pipeline({"volatility_breakout": {"min_sharpe": 100.0}})

    # Act
    replay(pipeline, clock, config, 1.0)
    pipeline.stop()

    # Assert: held by the first verdict and by every recheck that landed during the day
    manager = pipeline.strategy.manager
    assert verdicts and not any(v.passed for v in verdicts)
    assert manager.strategy_gate("volatility_breakout") == verdicts[-1].reason
    assert manager.performance["volatility_breakout"].exposure_changes > 0  # it kept following the market
    assert signals
    for signal in signals:
        assert signal.contributions.get("volatility_breakout", 0.0) == 0.0
    assert any(s.contributions.get("mean_reversion", 0.0) != 0 for s in signals)


def test_a_paper_run_judges_the_gate_again_off_the_trading_loop_and_applies_the_verdict_at_the_next_bar() -> None:
    # Arrange: a rule the three seeded days pass
    pipeline, clock, verdicts, _signals, config = gated_pipeline(
        {"volatility_breakout": {"min_trades": 1, "window_days": 3}}
    )
    first = verdicts[0]
    recheck = START_NS + DAY_NS // 2
    bars = list(RecordedBarFeed(config.data.root / config.data.bars, (BTC,), "1m", None, START_NS, START_NS + DAY_NS))

    # Act: half a day of bars; the recheck timer fires; the loop goes on while the backtest runs elsewhere
    for bar in [b for b in bars if b.ts_event < recheck]:
        clock.advance_to(bar.ts_event)
        pipeline.bus.publish(bar)
        pipeline.bus.drain()
    clock.advance_to(recheck)
    pipeline.bus.drain()
    at_recheck = len(verdicts)
    pending = pipeline.gatekeeper.pending
    workers = {thread.name for thread in threading.enumerate()}
    judged = pending.result(timeout=120)
    following = [b for b in bars if b.ts_event >= recheck][:2]
    for bar in following:
        clock.advance_to(bar.ts_event)
        pipeline.bus.publish(bar)
        pipeline.bus.drain()
    pipeline.stop()

    # Assert: nothing was judged on the loop at the timer; the verdict landed with the next bar
    assert first.passed and pipeline.strategy.manager.strategy_gate("volatility_breakout") is None
    assert at_recheck == 1 and pending is not None
    assert any(name.startswith("strategy-gate") for name in workers)
    assert len(verdicts) == 2
    assert verdicts[1].ts_event == following[0].ts_event
    assert (verdicts[1].passed, verdicts[1].reason) == (judged[0][1].passed, judged[0][1].reason)
    assert verdicts[1] != first


def test_a_backtest_run_has_no_gate_and_pending_is_the_state_before_a_verdict() -> None:
    # Arrange
    base = load_config("backtest", environ={})
    config = base.model_copy(
        update={
            "data": base.data.model_copy(update={"symbols": (BTC,), "start": None, "end": None}),
            "strategy": base.strategy.model_copy(
                update={
                    "warmup_bars": 0,
                    "gates": base.strategy.model_validate({"gates": {"mean_reversion": {}}}).gates,
                }
            ),
        }
    )

    # Act
    pipeline = build_pipeline(
        config, load_instruments(config.exchange.instruments), EventBus(), SimulatedClock(START_NS)
    )

    # Assert
    assert pipeline.gatekeeper is None
    assert pipeline.strategy.manager.strategy_gate("mean_reversion") is None
    assert PENDING == "backtest gate not evaluated yet"


def test_a_background_recheck_applies_its_verdict_at_the_first_bar_after_it_finished() -> None:
    # Arrange: a live-style gatekeeper over a manager of one gated strategy
    config = paper_config({})
    later = list(RecordedBarFeed(DATA_BARS, (BTC,), "1m", None, START_NS, START_NS + DAY_NS))
    bus, clock = EventBus(), SimulatedClock(START_NS)
    manager = StrategyManager([VolatilityBreakoutStrategy(), ScheduledDcaStrategy()], detector_factory=False)
    verdicts: list[StrategyGateEvaluated] = []
    bus.subscribe(StrategyGateEvaluated, verdicts.append)
    rule = GateRule(min_sharpe=100.0, window_days=2.0)
    gatekeeper = StrategyGatekeeper(
        manager, {"volatility_breakout": rule}, config, bus, clock, recheck_ns=DAY_NS // 4, background=True
    )
    gatekeeper.start()
    bus.drain()

    # Act: up to the first recheck, wait for its backtest, then one more bar
    recheck = START_NS + DAY_NS // 4
    for bar in [b for b in later if b.ts_event <= recheck]:
        clock.advance_to(bar.ts_event)
        gatekeeper.on_bar(bar)
    bus.drain()
    before = len(verdicts)
    finished = gatekeeper.pending.result(timeout=60)
    following = next(b for b in later if b.ts_event > recheck)
    clock.advance_to(following.ts_event)
    gatekeeper.on_bar(following)
    bus.drain()
    gatekeeper.stop()

    # Assert
    assert before == 1 and len(verdicts) == 2
    assert verdicts[1].ts_event == following.ts_event
    assert finished[0][1].reason == manager.strategy_gate("volatility_breakout")
    assert finished[0][1].window_end == recheck
    assert not verdicts[1].passed


def test_the_verdict_has_the_figures_of_keel_backtest_of_the_strategy_alone_over_the_window() -> None:
    # Arrange
    config = paper_config({})
    rule = GateRule(min_trades=1, window_days=3.0)
    now = START_NS + 7 * NANOS_PER_MINUTE + 1

    # Act
    verdict = backtest_gate(config, "volatility_breakout", rule, now)
    backtest = BacktestEngine(gate_config(config, "volatility_breakout", rule, now)).run()

    # Assert: the same run, the last closed bar at or before now, nothing after it
    assert backtest["symbols"] == [BTC]
    assert [s.name for s in backtest.pipeline.strategy.manager.strategies] == ["volatility_breakout"]
    assert verdict.passed and verdict.trades == backtest["n_trades"] > 0
    assert verdict.sharpe == backtest["sharpe_ratio"] != 0.0
    assert verdict.max_drawdown == backtest["max_drawdown"] > 0.0
    assert verdict.bars == backtest["bars_processed"] == 3 * 1440
    assert verdict.window_end == START_NS + 7 * NANOS_PER_MINUTE
    assert backtest["funding_data"] != "none" and backtest["fees_paid"] > 0.0


def test_a_strategy_the_data_cannot_serve_fails_its_gate_with_the_reason() -> None:
    # Arrange: a window wholly before the recording
    config = paper_config({})

    # Act
    verdict = backtest_gate(config, "volatility_breakout", GateRule(window_days=1.0), START_NS - 30 * DAY_NS)

    # Assert
    assert not verdict.passed
    assert verdict.reason.startswith("backtest gate over the last 1 days failed: backtest could not run: ")


def test_a_recheck_of_the_same_window_on_the_same_files_comes_from_the_cache() -> None:
    # Arrange
    config = paper_config({})
    bus, clock = EventBus(), SimulatedClock(START_NS)
    manager = StrategyManager([VolatilityBreakoutStrategy()], detector_factory=False)
    gatekeeper = StrategyGatekeeper(manager, {"volatility_breakout": GateRule(window_days=1.0)}, config, bus, clock)

    # Act: again within the same bar, then an hour later
    first = gatekeeper.evaluate_all()
    clock.advance_to(START_NS + 30 * 1_000_000_000)
    again = gatekeeper.evaluate_all()
    clock.advance_to(START_NS + 60 * NANOS_PER_MINUTE)
    later = gatekeeper.evaluate_all()

    # Assert
    assert gatekeeper.backtests_run == 2
    assert again == first and later != first
    assert later[0].window_end == START_NS + 60 * NANOS_PER_MINUTE


def test_the_gate_of_a_paper_run_prints_what_keel_backtest_prints_for_the_strategy_over_the_window(
    tmp_path: Path,
) -> None:
    # Arrange: one configuration layer for the paper run and the command line
    layer = tmp_path / "layer.yaml"
    layer.write_text(
        "data:\n  symbols: [BTCUSDT]\n"
        "portfolio:\n  no_trade_band: false\n"
        "strategy:\n  strategies: [volatility_breakout, scheduled_dca]\n  warmup_bars: 0\n"
        "  regime:\n    enabled: false\n"
    )
    paper = load_config("paper", layer, environ={})
    rule = GateRule(window_days=3.0)
    command = [sys.executable, "-m", "keel.cli", "backtest", "--config", str(layer), "--output", str(tmp_path / "out"),
               "--start", "2025-05-05", "--end", "2025-05-08"]  # fmt: skip
    environment = {**os.environ, "KEEL_STRATEGY__STRATEGIES": "volatility_breakout"}

    # Act
    verdict = backtest_gate(paper, "volatility_breakout", rule, START_NS)
    completed = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)

    # Assert
    assert completed.returncode == 0, completed.stderr
    printed = json.loads(completed.stdout.splitlines()[0])
    assert (verdict.sharpe, verdict.max_drawdown, verdict.trades, verdict.bars) == (
        printed["sharpe_ratio"],
        printed["max_drawdown"],
        printed["n_trades"],
        printed["bars_processed"],
    )
    assert verdict.trades > 0
