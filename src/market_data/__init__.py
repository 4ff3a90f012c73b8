"""Market data: everything between a data source and the strategies.

``keel.market_data`` holds

- the loaders and inspection of the recorded files (:mod:`~keel.market_data.loaders`,
  :mod:`~keel.market_data.inspection`) and recorded order-book sessions
  (:mod:`~keel.market_data.sessions`);
- the feeds (:mod:`~keel.market_data.feeds`): recorded bars and funding,
  recorded order-book sessions with trades and mark prices, merged by exchange
  time, paced for paper mode;
- normalization of Binance USD-M stream payloads
  (:mod:`~keel.market_data.normalization`), the stream handler that keeps one
  synced book per symbol (:mod:`~keel.market_data.stream_handler`) and feed
  health (:mod:`~keel.market_data.feed_health`);
- the local order book (:mod:`~keel.market_data.order_book`) and its check
  against the venue's ``bookTicker`` (:mod:`~keel.market_data.book_replay`);
- bars from trades (:mod:`~keel.market_data.bars`);
- the microstructure analyzers: :class:`OrderBookAnalyzer`,
  :class:`TickDataAnalyzer` (VPIN), :class:`MarketImpactModel`,
  :class:`LiquidityProfiler`, and the :class:`MicrostructureEngine` that
  publishes their ``MicrostructureSnapshot``.
"""

import importlib
from typing import TYPE_CHECKING, Any

from keel.market_data.bars import DollarBarAggregator, TimeBarAggregator, VolumeBarAggregator
from keel.market_data.feed_health import FeedHealthMonitor
from keel.market_data.feeds import (
    FeedSummary,
    MergedFeed,
    RecordedBarFeed,
    RecordedSessionFeed,
    SessionFeedStatistics,
    paced,
)
from keel.market_data.impact import (
    ImpactCollector,
    ImpactEstimate,
    ImpactModelNotFittedError,
    MarketConditions,
    MarketImpactModel,
)
from keel.market_data.inspection import inspect_paths, render_report
from keel.market_data.liquidity import ExecutionWindow, LiquidityProfiler
from keel.market_data.loaders import (
    KINDS,
    BadRow,
    Gap,
    LoadedData,
    LoadReport,
    detect_kind,
    find_gaps,
    load_any,
    load_book_snapshot,
    load_book_ticker,
    load_depth_diffs,
    load_funding,
    load_mark_price_klines,
    load_mark_price_stream,
    load_ohlcv,
    load_trades,
)
from keel.market_data.normalization import BinanceUsdmNormalizer, DepthDiff, DepthSnapshot
from keel.market_data.sessions import RecordedSession, load_session

if TYPE_CHECKING:
    from keel.market_data.book_analyzer import BookMetrics, OrderBookAnalyzer
    from keel.market_data.book_replay import BookReplayReport, replay_book
    from keel.market_data.microstructure import MicrostructureEngine, SymbolAnalyzers
    from keel.market_data.order_book import BookSyncState, BookUnavailableError, DiffResult, OrderBook, TopOfBook
    from keel.market_data.stream_handler import MarketStreamHandler
    from keel.market_data.tick_analyzer import TickDataAnalyzer, TradeFlowMetrics

# The order book and the analyzers load numba for their compiled kernels: they are imported on first
# use, so a bar-only process (a backtest, a paper replay, a tuning worker) never loads it.
_LAZY: dict[str, str] = {
    "BookMetrics": "book_analyzer",
    "OrderBookAnalyzer": "book_analyzer",
    "BookReplayReport": "book_replay",
    "replay_book": "book_replay",
    "MicrostructureEngine": "microstructure",
    "SymbolAnalyzers": "microstructure",
    "BookSyncState": "order_book",
    "BookUnavailableError": "order_book",
    "DiffResult": "order_book",
    "OrderBook": "order_book",
    "TopOfBook": "order_book",
    "MarketStreamHandler": "stream_handler",
    "TickDataAnalyzer": "tick_analyzer",
    "TradeFlowMetrics": "tick_analyzer",
}


def __getattr__(name: str) -> Any:
    """Import a lazily loaded name's module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "KINDS",
    "BadRow",
    "BinanceUsdmNormalizer",
    "BookMetrics",
    "BookReplayReport",
    "BookSyncState",
    "BookUnavailableError",
    "DepthDiff",
    "DepthSnapshot",
    "DiffResult",
    "DollarBarAggregator",
    "ExecutionWindow",
    "FeedHealthMonitor",
    "FeedSummary",
    "Gap",
    "ImpactCollector",
    "ImpactEstimate",
    "ImpactModelNotFittedError",
    "LiquidityProfiler",
    "LoadReport",
    "LoadedData",
    "MarketConditions",
    "MarketImpactModel",
    "MarketStreamHandler",
    "MergedFeed",
    "MicrostructureEngine",
    "OrderBook",
    "OrderBookAnalyzer",
    "RecordedBarFeed",
    "RecordedSession",
    "RecordedSessionFeed",
    "SessionFeedStatistics",
    "SymbolAnalyzers",
    "TickDataAnalyzer",
    "TimeBarAggregator",
    "TopOfBook",
    "TradeFlowMetrics",
    "VolumeBarAggregator",
    "detect_kind",
    "find_gaps",
    "inspect_paths",
    "load_any",
    "load_book_snapshot",
    "load_book_ticker",
    "load_depth_diffs",
    "load_funding",
    "load_mark_price_klines",
    "load_mark_price_stream",
    "load_ohlcv",
    "load_session",
    "load_trades",
    "paced",
    "render_report",
    "replay_book",
]
