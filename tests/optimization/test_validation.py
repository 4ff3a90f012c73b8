"""Walk-forward folds, deflated Sharpe ratio and PBO."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from keel.optimization.validation import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probability_of_backtest_overfitting,
    walk_forward,
)

START = datetime(2025, 5, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def test_rolling_folds_keep_the_embargo_and_never_touch_the_held_out_window() -> None:
    # Act
    plan = walk_forward(
        START, START + 10 * DAY, train=3 * DAY, test=DAY, embargo=timedelta(hours=2), holdout=2 * DAY, anchored=False
    )

    # Assert
    assert plan.holdout_start == START + 8 * DAY
    assert len(plan.folds) == 4
    for fold in plan.folds:
        assert fold.test_start - fold.train_end == timedelta(hours=2)
        assert fold.train_end - fold.train_start == 3 * DAY
        assert fold.test_end + timedelta(hours=2) <= plan.holdout_start
    assert plan.folds[1].train_start == START + DAY


def test_anchored_folds_all_start_at_the_beginning() -> None:
    # Act
    plan = walk_forward(
        START, START + 10 * DAY, train=3 * DAY, test=DAY, embargo=timedelta(0), holdout=DAY, anchored=True
    )

    # Assert
    assert {f.train_start for f in plan.folds} == {START}
    assert [f.train_end - START for f in plan.folds] == [(3 + i) * DAY for i in range(len(plan.folds))]


def test_a_range_too_short_for_one_fold_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        walk_forward(START, START + 3 * DAY, train=3 * DAY, test=DAY, embargo=timedelta(0), holdout=DAY, anchored=False)


def test_the_deflated_sharpe_falls_as_more_trials_were_run() -> None:
    # Arrange
    rng = np.random.default_rng(1)
    returns = rng.normal(0.002, 0.01, 500)
    few = rng.normal(0.0, 0.05, 5)
    many = rng.normal(0.0, 0.05, 500)

    # Act
    with_few, with_many = deflated_sharpe_ratio(returns, few), deflated_sharpe_ratio(returns, many)

    # Assert
    assert expected_max_sharpe(many) > expected_max_sharpe(few)
    assert 0.0 <= with_many < with_few <= 1.0


def test_pbo_is_near_one_half_for_pure_noise_and_low_for_a_real_edge() -> None:
    # Arrange
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 0.01, (800, 20))
    skilled = noise.copy()
    skilled[:, 7] += 0.004

    # Act
    noise_pbo = probability_of_backtest_overfitting(noise, blocks=8)
    skilled_pbo = probability_of_backtest_overfitting(skilled, blocks=8)

    # Assert
    assert noise_pbo is not None and 0.2 < noise_pbo < 0.8
    assert skilled_pbo == 0.0


def test_pbo_needs_two_trials() -> None:
    assert probability_of_backtest_overfitting(np.zeros((100, 1))) is None


def test_pbo_is_undefined_when_every_trial_earned_the_same() -> None:
    assert probability_of_backtest_overfitting(np.full((100, 4), 0.001)) is None
