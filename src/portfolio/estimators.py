"""Covariance and expected-return estimators for the optimizer and the risk layer.

Every estimator takes a ``(T, N)`` array of per-bar returns (rows in time
order, one column per asset) and uses those rows only, so anything computed at
time t from the rows up to t never sees later data.

Covariance: the sample estimator, Ledoit-Wolf shrinkage towards a scaled
identity (Ledoit and Wolf's estimate, computed as scikit-learn does), and an
exponentially weighted one (RiskMetrics-style, with a half-life in bars). Expected returns: the sample mean, or an
exponentially weighted mean, blended with the strategies' views. A view of
strength x confidence ``s`` in [-1, 1] on an asset of volatility ``sigma``
becomes ``information_coefficient x sigma x s`` (Grinold's alpha = IC x
volatility x score), in the same per-bar units as the history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

CovarianceMethod = Literal["sample", "ledoit_wolf", "ewma"]
COVARIANCE_METHODS: tuple[str, ...] = ("sample", "ledoit_wolf", "ewma")


_LARGEST_TYPICAL_RETURN = 0.5
"""A median absolute return above this (50 % a bar) is a table of prices, not of returns."""


def validate_returns(returns: np.ndarray, *, minimum_rows: int = 2, names: Sequence[str] | None = None) -> np.ndarray:
    """Return ``returns`` as a finite float64 ``(T, N)`` array, or raise naming the problem.

    ``names`` (the columns' assets) lets a NaN or infinity be named by its
    column; without them the columns are numbered.

    Raises
    ------
    ValueError
        If the array is not two-dimensional, has fewer than ``minimum_rows``
        rows or no column, or holds NaN or infinity.
    """
    array = np.asarray(returns, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"returns must be a 2-D array (bars x assets), got shape {array.shape}")
    rows, columns = array.shape
    if columns == 0:
        raise ValueError("returns have no asset column")
    if rows < minimum_rows:
        raise ValueError(f"returns need at least {minimum_rows} rows, got {rows}")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(np.count_nonzero(~finite))
        labels = list(names) if names is not None else [f"column {k}" for k in range(columns)]
        where = ", ".join(
            f"{labels[k]}: {int(np.count_nonzero(~finite[:, k]))} from row {int(np.argmin(finite[:, k]))}"
            for k in range(columns)
            if not finite[:, k].all()
        )
        raise ValueError(f"returns hold {bad} NaN or infinite values ({where}); drop or fill those bars first")
    return array


def refuse_prices(returns: np.ndarray) -> None:
    """Raise if a user's table of returns is one of prices (its median absolute value is above 0.5).

    Asked where returns come in from outside (a user's ``fit``), not on the
    bus's path, whose returns it makes itself.

    Raises
    ------
    ValueError
        Saying how to turn prices into returns.
    """
    typical = float(np.median(np.abs(returns)))
    if typical > _LARGEST_TYPICAL_RETURN:
        raise ValueError(
            f"returns look like prices (their median size is {typical:g}): pass returns, "
            "e.g. prices.pct_change().dropna()"
        )


def ewma_weights(rows: int, halflife: float) -> np.ndarray:
    """Return weights summing to one that halve every ``halflife`` rows back from the last."""
    if not halflife > 0:
        raise ValueError(f"half-life must be positive, got {halflife}")
    decay = 0.5 ** (1.0 / halflife)
    weights = decay ** np.arange(rows - 1, -1, -1, dtype=np.float64)
    return weights / weights.sum()


def sample_covariance(returns: np.ndarray) -> np.ndarray:
    """Return the unbiased sample covariance (``ddof=1``)."""
    array = validate_returns(returns)
    return np.atleast_2d(np.cov(array, rowvar=False, ddof=1))


def ledoit_wolf_covariance(returns: np.ndarray) -> np.ndarray:
    """Return the Ledoit-Wolf covariance: the sample one (``ddof=0``) shrunk towards its mean variance x identity.

    The shrinkage is Ledoit and Wolf's (2004) estimate, computed in the same
    order of operations as scikit-learn's ``LedoitWolf`` (so its results to
    the bit below 1,000 assets, which the tests check) but without its input
    validation and the precision matrix it also computes on every fit (an
    eigendecomposition), which made it the optimizer's largest cost per
    re-solve.
    """
    array = validate_returns(returns)
    rows, columns = array.shape
    centered = array - array.mean(0)
    if columns == 1:
        return np.atleast_2d((centered**2).mean())
    squares = centered**2
    variances = np.sum(squares, axis=0) / rows
    mean_variance = np.sum(variances) / columns
    cross = np.dot(centered.T, centered)
    spread = np.sum(cross**2) / rows**2
    noise = 1.0 / (columns * rows) * (np.sum(np.dot(squares.T, squares)) / rows - spread)
    distance = (spread - 2.0 * mean_variance * variances.sum() + columns * mean_variance**2) / columns
    noise = min(noise, distance)
    shrinkage = 0 if noise == 0 else noise / distance
    sample = cross / rows
    shrunk = (1.0 - shrinkage) * sample
    shrunk.flat[:: columns + 1] += shrinkage * (np.sum(np.trace(sample)) / columns)
    return shrunk


def ewma_covariance(returns: np.ndarray, halflife: float) -> np.ndarray:
    """Return the exponentially weighted covariance around the weighted mean."""
    array = validate_returns(returns)
    weights = ewma_weights(len(array), halflife)
    centered = array - weights @ array
    return (centered * weights[:, None]).T @ centered


def estimate_covariance(returns: np.ndarray, method: str = "ledoit_wolf", *, halflife: float = 240.0) -> np.ndarray:
    """Return the covariance of ``returns`` by ``method`` (sample, ledoit_wolf or ewma)."""
    if method == "sample":
        return sample_covariance(returns)
    if method == "ledoit_wolf":
        return ledoit_wolf_covariance(returns)
    if method == "ewma":
        return ewma_covariance(returns, halflife)
    raise ValueError(f"unknown covariance method {method!r}; expected one of {', '.join(COVARIANCE_METHODS)}")


def mean_returns(returns: np.ndarray, *, halflife: float | None = None) -> np.ndarray:
    """Return the sample mean per column, or the exponentially weighted mean when ``halflife`` is set."""
    array = validate_returns(returns, minimum_rows=1)
    if halflife is None:
        return array.mean(axis=0)
    return ewma_weights(len(array), halflife) @ array


def signal_scores(
    views: Mapping[str, Mapping[str, float]], budgets: Mapping[str, float], assets: Sequence[str]
) -> np.ndarray:
    """Combine the strategies' signed views into one score per asset.

    Parameters
    ----------
    views
        ``views[strategy][asset]``: signed strength x confidence in [-1, 1].
    budgets
        Each strategy's share of the signal (the adaptive allocator's weights);
        a strategy without a budget gets an equal share of what is left.
    assets
        The column order of the result.

    Returns
    -------
    numpy.ndarray
        ``sum over strategies of budget x view`` per asset, clipped to [-1, 1].
    """
    scores = np.zeros(len(assets))
    if not views:
        return scores
    index = {asset: i for i, asset in enumerate(assets)}
    unbudgeted = [s for s in views if s not in budgets]
    rest = max(0.0, 1.0 - sum(budgets.get(s, 0.0) for s in views))
    default = rest / len(unbudgeted) if unbudgeted else 0.0
    for strategy in sorted(views):
        budget = budgets.get(strategy, default)
        for asset, view in views[strategy].items():
            column = index.get(asset)
            if column is not None:
                scores[column] += budget * view
    return np.clip(scores, -1.0, 1.0)


def blend_expected_returns(
    historical: np.ndarray,
    scores: np.ndarray,
    volatilities: np.ndarray,
    *,
    signal_weight: float,
    information_coefficient: float,
) -> np.ndarray:
    """Blend historical means with signal-implied returns ``IC x volatility x score``.

    Parameters
    ----------
    historical
        Per-bar mean returns.
    scores
        Signed signal scores in [-1, 1] (0 where no strategy has a view).
    volatilities
        Per-bar return standard deviations.
    signal_weight
        Weight of the signal-implied returns in [0, 1]; 0 keeps history only.
    information_coefficient
        Correlation between scores and the next bar's standardized returns.
    """
    if not 0.0 <= signal_weight <= 1.0:
        raise ValueError(f"signal weight must lie in [0, 1], got {signal_weight}")
    implied = information_coefficient * volatilities * scores
    return (1.0 - signal_weight) * historical + signal_weight * implied


def _converts_to_floats(column: pd.Series) -> bool:
    try:
        np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


def require_numeric_columns(returns: pd.DataFrame) -> None:
    """Raise naming the columns of ``returns`` that do not hold numbers.

    Raises
    ------
    ValueError
        Naming every column that neither has a numeric dtype nor converts to floats.
    """
    others = [
        str(name)
        for name, column in returns.items()
        if not pd.api.types.is_numeric_dtype(column.dtype) and not _converts_to_floats(column)
    ]
    if others:
        raise ValueError(
            f"returns columns {', '.join(others)} do not hold numbers: pass one column of returns per asset "
            "(drop the others, e.g. returns.drop(columns=[...]))"
        )
