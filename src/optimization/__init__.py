"""Hyperparameter tuning that does not overfit, and the cache that makes repeated trials free.

:class:`~keel.optimization.tuner.HyperparameterTuner` searches strategy
parameters and any configuration key with Optuna; every trial is a real
backtest through :class:`~keel.backtest.engine.BacktestEngine`, scored
out of sample on walk-forward folds, and the winner is re-run on a held-out
window. :class:`~keel.optimization.cache.CacheManager` keeps backtest
results keyed by data fingerprint and configuration hash.
"""
