"""The operator web app: REST control API, real-time dashboard, Prometheus metrics.

:func:`create_app` builds the FastAPI app over a running system
(:class:`TradingService`, implemented by the integration layer's
:class:`~keel.integration.orchestrator.TradingOrchestrator`);
:class:`ThreadedServer` serves it from its own thread over
:class:`SnapshotService` (snapshots the trading loop publishes with
:class:`SnapshotPublisher`), so readers never slow trading;
:func:`start_server` serves it inside the caller's event loop. The
dashboard page and its chart library (uPlot, MIT, vendored under
``static/vendor``) are served by keel itself, so it works offline.
"""

from keel.web.app import create_app, dashboard_snapshot
from keel.web.metrics import render_metrics
from keel.web.server import EmbeddedServer, ThreadedServer, start_server, stop_server
from keel.web.service import CommandNotConfirmed, ConfigChanges, ConfigCommands, TradingService
from keel.web.snapshots import ConfigChangesOnLoop, Snapshot, SnapshotPublisher, SnapshotService

__all__ = [
    "CommandNotConfirmed",
    "ConfigChanges",
    "ConfigChangesOnLoop",
    "ConfigCommands",
    "EmbeddedServer",
    "Snapshot",
    "SnapshotPublisher",
    "SnapshotService",
    "ThreadedServer",
    "TradingService",
    "create_app",
    "dashboard_snapshot",
    "render_metrics",
    "start_server",
    "stop_server",
]
