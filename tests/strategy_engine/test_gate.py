"""The backtest gate's rule and verdict: every reason a backtest falls short of the rule, nonsense rules refused."""

from __future__ import annotations

import pytest

from keel.strategy_engine.gate import GateRule, judge


def test_figures_that_meet_the_rule_pass() -> None:
    # Arrange
    rule = GateRule(min_sharpe=1.0, max_drawdown=0.05, min_trades=10, window_days=30.0)

    # Act
    verdict = judge("hyper_rsi", rule, 1.5, 0.05, 10, bars=43_200, window_start=1, window_end=2)

    # Assert
    assert verdict.passed and verdict.reason is None
    assert verdict.as_dict() == {
        "strategy": "hyper_rsi",
        "passed": True,
        "reason": None,
        "sharpe": 1.5,
        "max_drawdown": 0.05,
        "trades": 10,
        "bars": 43_200,
        "window_start": 1,
        "window_end": 2,
    }


def test_a_strategy_short_of_the_rule_fails_with_every_reason() -> None:
    # Arrange
    rule = GateRule(min_sharpe=2.0, max_drawdown=0.01, min_trades=5, window_days=3.0)

    # Act
    verdict = judge("grid_trading", rule, 0.5, 0.02, 4)

    # Assert
    assert not verdict.passed
    assert verdict.reason == (
        "backtest gate over the last 3 days failed: Sharpe 0.50 < 2; max drawdown 2.00% > 1.00%; 4 trades < 5"
    )


def test_an_undefined_sharpe_fails_a_sharpe_rule_and_a_backtest_failure_is_a_reason() -> None:
    # Act
    undefined = judge("scheduled_dca", GateRule(min_sharpe=0.0), None, 0.0, 3)
    failed = judge("scheduled_dca", GateRule(), None, 0.0, 0, failure="backtest could not run: no bars")

    # Assert
    assert undefined.reason == "backtest gate over the last 30 days failed: Sharpe undefined < 0"
    assert failed.reason == "backtest gate over the last 30 days failed: backtest could not run: no bars"
    assert judge("scheduled_dca", GateRule(), None, 0.0, 0).passed


def test_rules_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="window_days"):
        GateRule(window_days=0.0)
    with pytest.raises(ValueError, match="min_trades"):
        GateRule(min_trades=-1)
    with pytest.raises(ValueError, match="max_drawdown"):
        GateRule(max_drawdown=-0.1)
