"""Backtesting: the full pipeline over recorded data on a simulated clock.

Holds :class:`BacktestEngine` (``run`` and the async ``run_backtest`` of the
user's UC-2.2), :class:`BacktestResult` and the report helpers that compute
metrics and write ``metrics.json``, ``equity.csv``, ``trades.csv`` and
``orders.csv``.
"""

from keel.backtest.engine import BacktestEngine, BacktestResult
from keel.backtest.report import performance_metrics

__all__ = ["BacktestEngine", "BacktestResult", "performance_metrics"]
