"""Integration: the layer that builds and runs the whole system.

Holds :func:`build_pipeline` (every component wired on one bus, the same way
for backtest, paper and live), :class:`PaperSession` (the pipeline in
wall-clock time over the replayed feed) and the run reports. The
TradingOrchestrator, StateManager with journal and recovery, and SystemMonitor
come next.
"""

from keel.integration.paper import PaperSession
from keel.integration.pipeline import Pipeline, RunRecorder, build_feed, build_pipeline, build_strategy
from keel.integration.reports import performance_metrics, run_metrics, write_run_records

__all__ = [
    "PaperSession",
    "Pipeline",
    "RunRecorder",
    "build_feed",
    "build_pipeline",
    "build_strategy",
    "performance_metrics",
    "run_metrics",
    "write_run_records",
]
