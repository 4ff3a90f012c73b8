"""Integration: the layer that builds and runs the whole system.

Holds :func:`build_pipeline` (every component wired on one bus, the same way
for backtest, paper and live), :class:`PaperSession` (the pipeline in
wall-clock time over the replayed feed), :class:`TradingOrchestrator` (status
and operator commands), :class:`StateManager` (the journal of state-changing
events; the trading state survives a restart), the
:class:`SystemMonitor` (health with reasons, stale-data trips) and the run
reports. Recovery by journal replay with reconciliation comes next.
"""

from keel.integration.orchestrator import TradingOrchestrator
from keel.integration.paper import PaperSession
from keel.integration.pipeline import Pipeline, RunRecorder, build_feed, build_pipeline, build_strategy
from keel.integration.reports import performance_metrics, run_metrics, write_run_records
from keel.integration.state_manager import StateManager
from keel.integration.system_monitor import SystemMonitor

__all__ = [
    "PaperSession",
    "Pipeline",
    "RunRecorder",
    "StateManager",
    "SystemMonitor",
    "TradingOrchestrator",
    "build_feed",
    "build_pipeline",
    "build_strategy",
    "performance_metrics",
    "run_metrics",
    "write_run_records",
]
