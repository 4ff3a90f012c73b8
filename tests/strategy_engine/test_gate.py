"""The backtest gate's verdict on real bars: figures checked against a plain backtest, rules, no look-ahead."""

from __future__ import annotations

import numpy as np
import pytest
from strategy_data import MAY_5, index_at, market_data, signals

from keel.strategy_engine import ScheduledDcaStrategy, VolatilityBreakoutStrategy
from keel.strategy_engine.gate import DAY_NS, GateRule, evaluate_gate


@pytest.fixture(scope="module")
def week() -> dict:
    return market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=7 * 1440)


def plain_backtest(views: list, close: np.ndarray, first: int, fee: float) -> tuple[np.ndarray, int]:
    exposure = np.zeros(len(close))
    held = 0.0
    for i, view in enumerate(views):
        if view is not None:
            held = view.score
        exposure[i] = held if i >= first else 0.0
    pnl = exposure[first - 1 : -1] * (close[first:] / close[first - 1 : -1] - 1) - fee * np.abs(
        np.diff(exposure[first - 1 :])
    )
    opened = sum(
        1 for a, b in zip(exposure[first - 1 :], exposure[first:], strict=False) if b != 0 and np.sign(a) != np.sign(b)
    )
    return pnl, opened


def test_the_verdict_reports_the_backtest_of_the_window_only(week: dict) -> None:
    # Arrange: the last two days are the window; the days before warm the strategy up
    rule = GateRule(window_days=2.0)
    first = int(np.searchsorted(week["timestamp"], week["timestamp"][-1] - 2 * DAY_NS, side="right"))
    views = signals(VolatilityBreakoutStrategy(), week)
    pnl, opened = plain_backtest(views, week["close"], first, 0.0005)

    # Act
    verdict = evaluate_gate(VolatilityBreakoutStrategy, {"SOLUSDT": week}, rule)

    # Assert
    equity = np.cumsum(pnl)
    assert verdict.passed and verdict.reason is None
    assert verdict.bars == len(week["close"]) - first
    assert verdict.trades == opened > 0
    assert verdict.max_drawdown == pytest.approx(np.max(np.maximum.accumulate(np.maximum(equity, 0)) - equity))
    assert verdict.sharpe == pytest.approx(pnl.mean() / pnl.std() * np.sqrt(365 * 1440))


def test_a_strategy_short_of_the_rule_fails_with_every_reason(week: dict) -> None:
    # Arrange
    rule = GateRule(min_sharpe=50.0, max_drawdown=0.0, min_trades=10_000, window_days=3.0)

    # Act
    verdict = evaluate_gate(VolatilityBreakoutStrategy, {"SOLUSDT": week}, rule)

    # Assert
    assert not verdict.passed
    assert verdict.reason.startswith("backtest gate over the last 3 days failed: Sharpe ")
    assert "< 50" in verdict.reason and "max drawdown" in verdict.reason
    assert f"{verdict.trades} trades < 10000" in verdict.reason


def test_no_data_fails_the_gate() -> None:
    # Act
    verdict = evaluate_gate(ScheduledDcaStrategy, {}, GateRule())

    # Assert
    assert not verdict.passed
    assert verdict.reason == "backtest gate over the last 30 days failed: no data to backtest on"


def test_lookahead_the_verdict_up_to_t_ignores_later_bars(week: dict) -> None:
    # Arrange: bars up to t, and the same bars followed by two more days
    cut = 5 * 1440
    upto = {
        k: (v[:cut] if k in ("timestamp", "open", "high", "low", "close", "volume") else v) for k, v in week.items()
    }
    rule = GateRule(window_days=2.0)

    # Act
    verdict = evaluate_gate(VolatilityBreakoutStrategy, {"SOLUSDT": upto}, rule)
    later = evaluate_gate(VolatilityBreakoutStrategy, {"SOLUSDT": week}, rule)

    # Assert
    assert verdict.window_end == week["timestamp"][cut - 1]
    assert verdict.window_end < later.window_end
    assert verdict == evaluate_gate(VolatilityBreakoutStrategy, {"SOLUSDT": upto}, rule)


def test_rules_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="window_days"):
        GateRule(window_days=0.0)
    with pytest.raises(ValueError, match="min_trades"):
        GateRule(min_trades=-1)
