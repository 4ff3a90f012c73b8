"""keel: an event-driven trading system for Binance USD-M perpetual futures.

Layers (one package each, imports point left): ``core`` <- ``market_data`` <-
``strategy_engine`` <- ``portfolio`` <- ``risk_management`` <- ``execution`` <-
``integration``; adapters live in ``api``; ``backtest`` and ``cli`` sit on top.
"""

__version__ = "0.1.0"

from keel.compiled_modules import choose_copies

COMPILED: bool = choose_copies()
"""Whether the per-bar modules run compiled (see :mod:`keel.compiled_modules`)."""
