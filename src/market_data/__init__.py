"""Market data: everything between a data source and the strategies.

``keel.market_data`` holds the feeds (recorded files and Binance streams),
their normalization into keel's messages, the local order book (REST snapshot
plus diff sync), bars, and the microstructure analyzers (order-book imbalance,
VPIN, market impact, liquidity profile). For now it has the loaders of the
recorded files (:mod:`keel.market_data.loaders`), their inspection
(:mod:`keel.market_data.inspection`) and the recorded bar-and-funding feed
(:mod:`keel.market_data.feeds`).
"""

from keel.market_data.feeds import FeedSummary, RecordedBarFeed
from keel.market_data.inspection import inspect_paths, render_report
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

__all__ = [
    "KINDS",
    "BadRow",
    "FeedSummary",
    "Gap",
    "LoadReport",
    "LoadedData",
    "RecordedBarFeed",
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
    "load_trades",
    "render_report",
]
