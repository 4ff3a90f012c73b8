"""arch's zero-mean GARCH(1,1) fit, without the starting-value search a warm-started refit does not use.

``arch_model(returns, mean="Zero", vol="GARCH", p=1, q=1, dist="normal")``
always runs its volatility process's starting-value search (a grid of
candidate parameters, each costing a pass of the variance recursion) before
it looks at the ``starting_values`` it was given. With given starting values
the search's result only shapes the standardized residuals the normal
distribution's (empty) bounds and starting values are read from; the
optimizer starts from the given values. A regime refit always gives the
previous fit's parameters, and the search was a fifth of its GARCH time.

:func:`fit_zero_mean_garch` builds the same model as ``arch_model`` with a
volatility process whose search returns the given values at once. The test
suite checks its fits against ``arch_model``'s, bit for bit, on real refits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from arch.univariate import GARCH, Normal, ZeroMean
from arch.univariate.base import ARCHModelResult


class _WarmStartedGarch(GARCH):  # type: ignore[misc]
    """arch's GARCH(1,1) whose starting-value search returns the refit's starting values."""

    def __init__(self, starting: np.ndarray) -> None:
        super().__init__(p=1, o=0, q=1, power=2.0)
        self._starting = starting

    def starting_values(self, resids: Any) -> np.ndarray:
        return self._starting.copy()


def fit_zero_mean_garch(returns: np.ndarray, starting: np.ndarray | None) -> ARCHModelResult:
    """Fit ``arch_model(returns, mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False)``.

    Parameters
    ----------
    returns
        The returns (1-D float64).
    starting
        The starting values (omega, alpha, beta), or None for arch's own search.

    Returns
    -------
    arch.univariate.base.ARCHModelResult
        What ``.fit(disp="off", show_warning=False, starting_values=starting)`` returns.
    """
    volatility = GARCH(p=1, o=0, q=1, power=2.0) if starting is None else _WarmStartedGarch(starting)
    model = ZeroMean(returns, hold_back=None, rescale=False)
    model.volatility = volatility
    model.distribution = Normal()
    return model.fit(disp="off", show_warning=False, starting_values=starting)
