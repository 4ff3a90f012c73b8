"""Hyperparameter tuning that does not overfit, and the cache that makes repeated trials free.

:class:`~keel.optimization.tuner.HyperparameterTuner` searches strategy
parameters and any configuration key with Optuna; every trial is a real
backtest through :class:`~keel.backtest.engine.BacktestEngine`, scored
out of sample on walk-forward folds, and the winner is re-run on a held-out
window. :class:`~keel.optimization.cache.CacheManager` keeps backtest
results keyed by data fingerprint and configuration hash.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CacheManager": "keel.optimization.cache",
    "CacheSettings": "keel.optimization.cache",
    "ConfigOptimizer": "keel.optimization.config_optimizer",
    "HyperparameterTuner": "keel.optimization.tuner",
    "OptimizationJob": "keel.optimization.tuner",
    "PerformanceEnhancer": "keel.optimization.performance",
    "TuningResult": "keel.optimization.tuner",
}
"""Public names, imported on first use: the tuner brings Optuna, which ``keel --help`` should not load."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
