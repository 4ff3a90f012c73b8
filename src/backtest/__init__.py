"""Backtesting: the full pipeline over recorded data on a simulated clock.

Holds :class:`BacktestEngine` (``run`` and the async ``run_backtest`` of the
user's UC-2.2) and :class:`BacktestResult`, which writes ``metrics.json``,
``equity.csv``, ``trades.csv`` and ``orders.csv``.
"""

from keel.backtest.engine import BacktestEngine, BacktestResult

__all__ = ["BacktestEngine", "BacktestResult"]
