"""Prometheus exposition of a running system's numbers.

:func:`render_metrics` turns :meth:`TradingService.metrics` into the
Prometheus text format: the bus (depth, high-water mark, conflated and
dispatched messages, overflow, handler errors and latency), the event loop's lag, orders by status, fills,
fees, funding, P&L, equity, exposure per symbol, VaR, the trading state
(one labelled gauge per state), feed staleness, exchange latency, and the
mismatches of the last reconciliation, and, while a PerformanceEnhancer runs,
the process's CPU, resident memory, garbage collections and tuned knobs
(``keel_process_*``, ``keel_gc_*``, ``keel_state_snapshot_every``). ``keel_exchange_server_time_offset_seconds``
and ``keel_exchange_rate_limit_usage_ratio`` are exported as families with no
samples until a live venue adapter reports them (snapshot keys
``exchange_server_time_offset_seconds`` and ``exchange_rate_limit_usage``,
a mapping of limit name to the share in use).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")


class _SnapshotCollector:
    """A prometheus_client collector over one metrics snapshot."""

    def __init__(self, snapshot: Mapping[str, Any]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        yield from _bus_metrics(snapshot.get("bus", {}))
        orders = GaugeMetricFamily("keel_orders", "Orders by status.", labels=["status"])
        for status, count in sorted(snapshot.get("orders_by_status", {}).items()):
            orders.add_metric([status], count)
        yield orders
        yield CounterMetricFamily("keel_fills", "Fills applied.", value=snapshot.get("fills", 0))
        yield CounterMetricFamily("keel_fees_paid_usdt", "Fees paid, USDT.", value=snapshot.get("fees", 0.0))
        yield GaugeMetricFamily(
            "keel_funding_paid_usdt", "Funding paid (negative: received), USDT.", value=snapshot.get("funding", 0.0)
        )
        for name in ("equity", "pnl", "realized_pnl", "unrealized_pnl", "gross_exposure"):
            yield GaugeMetricFamily(
                f"keel_{name}_usdt", f"{name.replace('_', ' ').capitalize()}, USDT.", value=snapshot.get(name, 0.0)
            )
        exposure = GaugeMetricFamily(
            "keel_exposure_usdt", "Absolute position value by symbol, USDT.", labels=["symbol"]
        )
        for symbol, value in sorted(snapshot.get("exposure", {}).items()):
            exposure.add_metric([symbol], value)
        yield exposure
        if snapshot.get("var") is not None:
            yield GaugeMetricFamily("keel_value_at_risk_usdt", "One-day value at risk, USDT.", value=snapshot["var"])
        state = GaugeMetricFamily("keel_trading_state", "1 for the current trading state.", labels=["state"])
        for name in TRADING_STATES:
            state.add_metric([name], 1.0 if snapshot.get("trading_state") == name else 0.0)
        yield state
        if snapshot.get("feed_staleness_seconds") is not None:
            yield GaugeMetricFamily(
                "keel_feed_staleness_seconds",
                "Seconds since the last market data event.",
                value=snapshot["feed_staleness_seconds"],
            )
        lag = snapshot.get("event_loop_lag_seconds")
        if lag is None:
            lag = (snapshot.get("process") or {}).get("event_loop_lag_seconds")
        if lag is not None:
            yield GaugeMetricFamily(
                "keel_event_loop_lag_seconds", "Worst recent lateness of the trading event loop.", value=lag
            )
        if snapshot.get("exchange_latency_seconds") is not None:
            yield GaugeMetricFamily(
                "keel_exchange_latency_seconds",
                "Last measured exchange round trip.",
                value=snapshot["exchange_latency_seconds"],
            )
        yield GaugeMetricFamily(
            "keel_reconciliation_mismatches",
            "Positions or balances the venue disagreed with at the last recovery.",
            value=snapshot.get("reconciliation_mismatches", 0),
        )
        yield from _exchange_metrics(snapshot)
        yield from _process_metrics(snapshot.get("process") or {})


_PROCESS_GAUGES = (
    ("cpu_percent", "keel_process_cpu_percent", "CPU used by the process since the last reading, percent of one core."),
    ("resident_memory_bytes", "keel_process_resident_memory_bytes", "Resident memory of the process."),
    ("max_resident_memory_bytes", "keel_process_max_resident_memory_bytes", "Peak resident memory of the process."),
    ("gc_time_share", "keel_gc_time_share", "Share of the time spent in garbage collection since the last tuning."),
    ("gc_threshold", "keel_gc_threshold", "Generation-0 threshold of the garbage collector (a tuned knob)."),
    ("snapshot_every", "keel_state_snapshot_every", "Journaled events between state snapshots (a tuned knob)."),
)


def _process_metrics(process: Mapping[str, float]) -> Iterator[Metric]:
    """The PerformanceEnhancer's figures; nothing when it does not run."""
    if not process:
        return
    for key, name, help_text in _PROCESS_GAUGES:
        if key in process:
            yield GaugeMetricFamily(name, help_text, value=process[key])
    collections = CounterMetricFamily(
        "keel_gc_collections", "Garbage collections by generation.", labels=["generation"]
    )
    for generation in range(3):
        key = f"gc_collections_{generation}"
        if key in process:
            collections.add_metric([str(generation)], process[key])
    yield collections


def _exchange_metrics(snapshot: Mapping[str, Any]) -> Iterator[Metric]:
    """Families a live venue adapter reports; without one they are exported with no samples."""
    offset = GaugeMetricFamily(
        "keel_exchange_server_time_offset_seconds", "Exchange server time minus local time, seconds."
    )
    if snapshot.get("exchange_server_time_offset_seconds") is not None:
        offset.add_metric([], snapshot["exchange_server_time_offset_seconds"])
    yield offset
    usage = GaugeMetricFamily(
        "keel_exchange_rate_limit_usage_ratio", "Share of each exchange rate limit in use, 0 to 1.", labels=["limit"]
    )
    for limit, ratio in sorted(snapshot.get("exchange_rate_limit_usage", {}).items()):
        usage.add_metric([limit], ratio)
    yield usage


def _bus_metrics(bus: Mapping[str, Any]) -> Iterator[Metric]:
    for key, help_text in (
        ("depth", "Messages queued on the event bus."),
        ("high_water_mark", "Most messages ever queued on the event bus."),
        ("capacity", "Bound of each bounded bus lane."),
    ):
        yield GaugeMetricFamily(f"keel_bus_{key}", help_text, value=bus.get(key, 0))
    for key, help_text in (
        ("published", "Messages published on the bus."),
        ("dispatched", "Messages dispatched by the bus."),
        ("conflated", "Market-data messages replaced by a newer one of the same symbol."),
        ("overflow", "Messages accepted beyond a full bus lane."),
        ("handler_errors", "Handler calls that raised."),
    ):
        yield CounterMetricFamily(f"keel_bus_{key}", help_text, value=bus.get(key, 0))
    mean = GaugeMetricFamily("keel_bus_handler_latency_mean_seconds", "Mean handler latency.", labels=["handler"])
    worst = GaugeMetricFamily("keel_bus_handler_latency_max_seconds", "Largest handler latency.", labels=["handler"])
    p99 = GaugeMetricFamily(
        "keel_bus_handler_latency_p99_seconds", "Upper bound of the 99th percentile.", labels=["handler"]
    )
    calls = CounterMetricFamily("keel_bus_handler_calls", "Handler calls.", labels=["handler"])
    for handler, stats in sorted(bus.get("handler_latency_ns", {}).items()):
        mean.add_metric([handler], stats["mean_ns"] / 1e9)
        worst.add_metric([handler], stats["max_ns"] / 1e9)
        p99.add_metric([handler], stats["p99_ns_upper_bound"] / 1e9)
        calls.add_metric([handler], stats["calls"])
    yield from (mean, worst, p99, calls)


def render_metrics(snapshot: Mapping[str, Any]) -> tuple[bytes, str]:
    """Return (body, content type) of the Prometheus text exposition of ``snapshot``."""
    registry = CollectorRegistry()
    registry.register(_SnapshotCollector(snapshot))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
