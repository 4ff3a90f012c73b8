"""hmmlearn's Gaussian HMM fit with a faster E-step normalization, to the bit the same numbers.

A regime refit spends most of its time in hmmlearn's expectation step. Of
that, a quarter went to normalizing the state posteriors row by row through
``scipy.special.logsumexp``, whose array-API plumbing costs far more than its
arithmetic on a ``T x 4`` lattice. :func:`log_normalize_rows` does the same
arithmetic (the same numpy operations in the same order: the row maximum
taken out, ``log1p`` of the rest's sum over the count of maxima) directly, and
leaves the rare row whose maximum is not finite to scipy.
:class:`GaussianHmmEstimator` uses it in the fit, and
:func:`last_state_probabilities` returns ``predict_proba(X)[-1]`` from the
forward pass alone (the backward lattice's last row is zero).

The test suite checks both against scipy's and hmmlearn's own results, bit
for bit, so a refit gives the same model, and a backtest the same orders, as
stock hmmlearn.
"""

from __future__ import annotations

import numpy as np
from hmmlearn import _hmmc
from hmmlearn.hmm import GaussianHMM
from scipy.special import logsumexp


def log_normalize_rows(log_values: np.ndarray) -> np.ndarray:
    """Subtract each row's log-sum-exp from a 2-D array in place, as ``scipy.special.logsumexp`` computes it.

    Parameters
    ----------
    log_values
        Log weights, one row per observation (float64).

    Returns
    -------
    numpy.ndarray
        ``log_values`` itself, each row now summing to one in probability space.
    """
    row_max = log_values.max(axis=1, keepdims=True)
    if not np.isfinite(row_max).all():
        with np.errstate(under="ignore"):
            log_values -= logsumexp(log_values, 1, keepdims=True)
        return log_values
    at_max = log_values == row_max
    count = at_max.sum(axis=1, keepdims=True, dtype=log_values.dtype)
    with np.errstate(under="ignore"):
        rest = np.exp(np.where(at_max, -np.inf, log_values) - row_max).sum(axis=1, keepdims=True)
    log_values -= np.log1p(rest / count) + np.log(count) + row_max
    return log_values


class GaussianHmmEstimator(GaussianHMM):  # type: ignore[misc]
    """hmmlearn's ``GaussianHMM`` whose log-space E-step normalizes posteriors with :func:`log_normalize_rows`."""

    def _compute_posteriors_log(self, fwdlattice: np.ndarray, bwdlattice: np.ndarray) -> np.ndarray:
        log_gamma = log_normalize_rows(fwdlattice + bwdlattice)
        with np.errstate(under="ignore"):
            return np.exp(log_gamma)


def last_state_probabilities(model: GaussianHMM, features: np.ndarray) -> tuple[float, ...]:
    """Return ``model.predict_proba(features)[-1]`` (log implementation) from the forward pass alone.

    The backward lattice's last row is zero, so the posterior at the last row
    is the forward lattice's last row normalized.
    """
    log_frames = model._compute_log_likelihood(features)
    _, forward = _hmmc.forward_log(model.startprob_, model.transmat_, log_frames)
    last = forward[-1:] + np.zeros_like(forward[-1:])
    with np.errstate(under="ignore"):
        return tuple(np.exp(log_normalize_rows(last))[0].tolist())
