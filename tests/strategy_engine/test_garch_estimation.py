"""The warm-started GARCH fit against arch's own ``arch_model``, bit for bit, on real refits of the bundled bars."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from arch import arch_model
from arch.univariate.base import ARCHModelResult
from strategy_data import bar_frame

from keel.strategy_engine.garch_estimation import fit_zero_mean_garch
from keel.strategy_engine.regime import NoLookAheadRegimeDetector, RegimeFit, RegimeFitRequest, fit_regime_models


def bits(values: object) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values), dtype=np.float64).view(np.uint64)


@pytest.fixture(scope="module")
def requests() -> list[RegimeFitRequest]:
    """Every refit request of a detector walked over two symbols' first 3,000 real bars (first fits and refits)."""
    made: list[RegimeFitRequest] = []

    def recorded(request: RegimeFitRequest) -> RegimeFit:
        made.append(request)
        return fit_regime_models(request)

    for symbol in ("BTCUSDT", "SOLUSDT"):
        detector = NoLookAheadRegimeDetector(min_fit_bars=600, fit_window=900, refit_interval=400)
        detector.fit_function = recorded
        detector.fit(bar_frame(symbol)["close"].to_numpy()[:3000])
    return made


def stock_fit(returns: np.ndarray, starting: np.ndarray | None) -> ARCHModelResult:
    model = arch_model(returns, mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
    return model.fit(disp="off", show_warning=False, starting_values=starting)


def starts(request: RegimeFitRequest) -> list[np.ndarray | None]:
    """The refit's own start, and starts arch refuses (outside the bounds, not stationary): it warns and goes on."""
    own = None if request.previous_garch is None else np.array(request.previous_garch)
    return [own, np.array([-1.0, 0.1, 0.8]), np.array([1e-3, 0.6, 0.6])]


def test_fits_equal_arch_model_to_the_bit(requests: list[RegimeFitRequest]) -> None:
    assert len(requests) >= 8
    assert any(r.previous_garch is None for r in requests) and any(r.previous_garch is not None for r in requests)
    for request in requests:
        for starting in starts(request):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stock = stock_fit(request.returns, starting)

                fast = fit_zero_mean_garch(request.returns, starting)

            assert fast.convergence_flag == stock.convergence_flag
            np.testing.assert_array_equal(bits(fast.params), bits(stock.params))
            np.testing.assert_array_equal(bits(fast.conditional_volatility), bits(stock.conditional_volatility))
            assert fast.loglikelihood == stock.loglikelihood
