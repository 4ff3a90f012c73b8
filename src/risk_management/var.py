"""Value at Risk and Conditional VaR of a portfolio of signed notional exposures.

Losses are positive numbers in quote currency (USDT) over one bar; a daily
figure is the one-bar figure times ``sqrt(bars per day)`` (square-root-of-time,
returns assumed independent across bars).

- Historical: the empirical loss quantile (and the mean loss beyond it) of the
  portfolio's P&L had it held today's exposures over the window's bars.
- Parametric: normal losses with the window's covariance, cached and
  refreshed every ``refresh_bars`` bars, so a pre-trade check is one
  quadratic form.
- EWMA: normal losses with the RiskMetrics covariance
  ``S_t = lambda S_{t-1} + (1 - lambda) r_t r_t'``, updated once per bar.

:class:`~keel.portfolio.returns.ReturnWindow` keeps the aligned per-bar
returns; everything is computed from rows up to the last complete one.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist
from typing import Literal

import numpy as np

VaRMethod = Literal["historical", "parametric", "ewma"]
VAR_METHODS: tuple[str, ...] = ("historical", "parametric", "ewma")


@functools.lru_cache(maxsize=64)
def normal_quantile(confidence: float) -> float:
    """Return the standard normal quantile of ``confidence`` (2.326 at 0.99)."""
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"VaR confidence must lie in (0.5, 1), got {confidence}")
    return NormalDist().inv_cdf(confidence)


@functools.lru_cache(maxsize=64)
def normal_tail_density(confidence: float) -> float:
    """Return the standard normal density at the quantile of ``confidence`` (CVaR is ``sigma x it / (1 - c)``)."""
    z = normal_quantile(confidence)
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def normal_var(sigma: float, confidence: float) -> tuple[float, float]:
    """Return normal (VaR, CVaR) of a zero-mean loss with standard deviation ``sigma``."""
    return normal_quantile(confidence) * sigma, sigma * normal_tail_density(confidence) / (1.0 - confidence)


def historical_var(pnl: np.ndarray, confidence: float) -> tuple[float, float]:
    """Return (VaR, CVaR) of a P&L sample: the loss quantile and the mean loss at or beyond it.

    The quantile is the ``ceil(n x (1 - confidence))``-th worst outcome.
    """
    values = np.asarray(pnl, dtype=np.float64)
    if values.size == 0:
        return 0.0, 0.0
    normal_quantile(confidence)
    # round first: 2000 x (1 - 0.99) is 20.000000000000018 in floats, and must give 20, not 21
    tail = max(1, math.ceil(round(values.size * (1.0 - confidence), 9)))
    worst = np.partition(values, tail - 1)[:tail]
    var = max(0.0, -float(worst.max()))
    cvar = max(0.0, -float(worst.mean()))
    return var, cvar


def sample_covariance(returns: np.ndarray) -> np.ndarray:
    """Return ``np.atleast_2d(np.cov(returns, rowvar=False))`` to the bit, without np.cov's argument handling.

    ``returns`` (rows of observations, at least two) is overwritten: the
    caller passes a copy it no longer needs. The arithmetic is np.cov's for
    unweighted observations: the column means, the centred columns' product,
    times ``1 / (n - 1)``.
    """
    centred = returns.T
    centred -= centred.mean(axis=1)[:, None]
    covariance: np.ndarray = np.dot(centred, centred.T.conj())
    covariance *= np.true_divide(1, centred.shape[1] - 1)
    return covariance


def parametric_var(exposures: np.ndarray, covariance: np.ndarray, confidence: float) -> tuple[float, float]:
    """Return normal (VaR, CVaR) of exposures with a covariance of returns (zero mean)."""
    x = np.asarray(exposures, dtype=np.float64)
    return normal_var(math.sqrt(max(0.0, float(x @ covariance @ x))), confidence)


class EwmaCovariance:
    """RiskMetrics covariance, updated with one row of returns at a time.

    Parameters
    ----------
    n_assets
        Number of columns.
    decay
        ``lambda`` in (0, 1); 0.94 is RiskMetrics' daily value.
    """

    def __init__(self, n_assets: int, decay: float = 0.94) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EWMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.covariance = np.zeros((n_assets, n_assets))
        self.updates = 0

    def update(self, row: np.ndarray) -> None:
        """Fold one row of returns in."""
        if self.updates == 0:
            self.covariance = np.outer(row, row)
        else:
            self.covariance = self.decay * self.covariance + (1.0 - self.decay) * np.outer(row, row)
        self.updates += 1
