"""Walk-forward folds, the deflated Sharpe ratio and the probability of backtest overfitting.

Folds are cut from the tuning range (the held-out window at its end is never
part of a fold). Between a fold's train and test windows an embargo gap is
left out, so nothing of the train window's last positions leaks into the test.

References
----------
Bailey, D. H. and López de Prado, M. (2014), "The Deflated Sharpe Ratio".
Bailey, D. H., Borwein, J., López de Prado, M. and Zhu, Q. J. (2017),
"The Probability of Backtest Overfitting" (combinatorially symmetric cross-validation).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist

import numpy as np

_EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class Fold:
    """One walk-forward fold: a train window, an embargo gap, a test window (ends exclusive)."""

    index: int
    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime


@dataclass(frozen=True, slots=True)
class WalkForwardPlan:
    """The folds of a study and the held-out window after them."""

    folds: tuple[Fold, ...]
    holdout_start: datetime
    holdout_end: datetime


def walk_forward(
    start: datetime,
    end: datetime,
    *,
    train: timedelta,
    test: timedelta,
    embargo: timedelta,
    holdout: timedelta,
    anchored: bool,
) -> WalkForwardPlan:
    """Cut ``[start, end)`` into walk-forward folds followed by a held-out window.

    Parameters
    ----------
    start, end
        The whole range (end exclusive).
    train, test
        Length of each train and test window; with ``anchored`` every train
        window starts at ``start`` and grows, otherwise it rolls.
    embargo
        Gap left out between a train window and its test window, and before the held-out window.
    holdout
        Length of the final window that tuning never sees.

    Raises
    ------
    ValueError
        If the range cannot hold one fold and the held-out window.
    """
    if min(train, test, holdout) <= timedelta(0) or embargo < timedelta(0):
        raise ValueError("train, test and holdout must be positive and embargo not negative")
    holdout_start = end - holdout
    folds: list[Fold] = []
    train_start, train_end = start, start + train
    while train_end + embargo + test + embargo <= holdout_start:
        test_start = train_end + embargo
        folds.append(Fold(len(folds), train_start, train_end, test_start, test_start + test))
        train_end = train_end + test
        if not anchored:
            train_start = train_start + test
    if not folds:
        raise ValueError(
            f"the range {start.isoformat()} to {end.isoformat()} cannot hold a {train} train window, "
            f"a {test} test window, {embargo} embargoes and a {holdout} held-out window"
        )
    return WalkForwardPlan(tuple(folds), holdout_start, end)


def returns_of(equity: np.ndarray) -> np.ndarray:
    """Return the simple returns of an equity curve."""
    values = np.asarray(equity, dtype=np.float64)
    return values[1:] / values[:-1] - 1.0 if len(values) > 1 else np.zeros(0)


def sharpe_per_period(returns: np.ndarray) -> float:
    """Return the non-annualized Sharpe ratio of per-period returns (0 when flat)."""
    if len(returns) < 2:
        return 0.0
    deviation = float(returns.std(ddof=1))
    return float(returns.mean()) / deviation if deviation > 0 else 0.0


def expected_max_sharpe(trial_sharpes: np.ndarray, trials: int | None = None) -> float:
    """Return the Sharpe the best of ``trials`` unskilled trials is expected to reach (the DSR's benchmark).

    The spread comes from ``trial_sharpes``; ``trials`` (default: their number)
    counts every trial run, pruned and failed ones included.
    """
    n = len(trial_sharpes) if trials is None else max(trials, len(trial_sharpes))
    if len(trial_sharpes) < 2:
        return 0.0
    spread = float(np.std(trial_sharpes, ddof=1))
    first = _NORMAL.inv_cdf(1.0 - 1.0 / n)
    second = _NORMAL.inv_cdf(1.0 - 1.0 / (n * math.e))
    return spread * ((1.0 - _EULER_GAMMA) * first + _EULER_GAMMA * second)


def deflated_sharpe_ratio(returns: np.ndarray, trial_sharpes: np.ndarray, trials: int | None = None) -> float:
    """Return the probability that the selected strategy's true Sharpe exceeds the best of N unskilled trials.

    Parameters
    ----------
    returns
        Per-period returns of the selected trial.
    trial_sharpes
        Per-period Sharpe ratios of the trials that completed (their spread).
    trials
        Number of trials actually run (N); the number of ``trial_sharpes`` when None.
    """
    count = len(returns)
    if count < 3:
        return 0.0
    sharpe = sharpe_per_period(returns)
    deviation = float(returns.std())
    if deviation == 0:
        return 0.0
    centered = (returns - returns.mean()) / deviation
    skew = float(np.mean(centered**3))
    kurtosis = float(np.mean(centered**4))
    denominator = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if denominator <= 0:
        return 0.0
    statistic = (sharpe - expected_max_sharpe(trial_sharpes, trials)) * math.sqrt(count - 1) / math.sqrt(denominator)
    return _NORMAL.cdf(statistic)


def probability_of_backtest_overfitting(performance: np.ndarray, blocks: int = 8) -> float | None:
    """Return the PBO of a (periods x trials) return matrix by combinatorially symmetric cross-validation.

    The periods are split into ``blocks`` equal groups; for every half of them
    taken as in-sample, the best in-sample trial's out-of-sample rank is
    recorded. PBO is the share of splits where that rank falls at or below the
    median. None when there are fewer than two trials, too few periods, or all
    trials earned the same returns (nothing to select between).
    """
    periods, trials = performance.shape
    blocks -= blocks % 2
    if trials < 2 or blocks < 2 or periods < blocks or np.all(performance == performance[:, :1]):
        return None
    groups = np.array_split(np.arange(periods), blocks)
    below = total = 0
    for chosen in itertools.combinations(range(blocks), blocks // 2):
        inside = np.concatenate([groups[i] for i in chosen])
        outside = np.concatenate([groups[i] for i in range(blocks) if i not in chosen])
        in_score = _block_sharpes(performance[inside])
        out_score = _block_sharpes(performance[outside])
        best = int(np.argmax(in_score))
        rank = float(np.sum(out_score < out_score[best]) + 0.5 * (np.sum(out_score == out_score[best]) - 1) + 1)
        relative = rank / (trials + 1)
        logit = math.log(relative / (1.0 - relative))
        below += logit <= 0
        total += 1
    return below / total


def _block_sharpes(returns: np.ndarray) -> np.ndarray:
    mean = returns.mean(axis=0)
    deviation = returns.std(axis=0, ddof=1)
    return np.divide(mean, deviation, out=np.zeros_like(mean), where=deviation > 0)
