"""The operator web app: REST control API, real-time dashboard, Prometheus metrics.

:func:`create_app` builds the FastAPI app over a running system
(:class:`TradingService`, implemented by the integration layer's
:class:`~keel.integration.orchestrator.TradingOrchestrator`);
:func:`start_server` serves it inside the trading process's event loop. The
dashboard page and its chart library (uPlot, MIT, vendored under
``static/vendor``) are served by keel itself, so it works offline.
"""

from keel.web.app import create_app, dashboard_snapshot
from keel.web.metrics import render_metrics
from keel.web.server import EmbeddedServer, start_server, stop_server
from keel.web.service import TradingService

__all__ = [
    "EmbeddedServer",
    "TradingService",
    "create_app",
    "dashboard_snapshot",
    "render_metrics",
    "start_server",
    "stop_server",
]
