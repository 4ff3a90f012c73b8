"""The backtest engine: recorded data through the full pipeline on a simulated clock.

The engine replays :class:`~keel.market_data.feeds.RecordedBarFeed` events one
timestamp at a time: it advances the simulated clock (firing due timers),
publishes the event and drains the bus synchronously, so every component
reacts exactly as it would live, in a deterministic order. The same
configuration, data and seed give byte-identical ``trades.csv`` and
``orders.csv``.

The simulated venue treats a held position whose funding time passes without
a recorded rate as an error, so a run without an explicit end stops where the
funding data of its symbols stops (the last recorded settlement plus one
funding interval), not where the bars do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from keel.config import KeelConfig, config_to_dict, load_config
from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.instruments import load_instruments
from keel.core.messages import BarClosed, Message, reset_message_ids
from keel.integration.pipeline import Pipeline, build_feed, build_pipeline
from keel.integration.reports import BARS_PER_YEAR, iso_time, run_metrics, write_run_records
from keel.integration.system_monitor import build_monitors
from keel.market_data.feeds import RecordedBarFeed
from keel.market_data.loaders import load_funding
from keel.strategy_engine.base import BaseStrategy

_log = structlog.get_logger("keel.backtest")

ProgressCallback = Callable[[int, int], None]
"""Called with (events done, events in total)."""


@dataclass(slots=True)
class BacktestResult(Mapping[str, Any]):
    """A finished backtest: its metrics (also readable as ``result["sharpe_ratio"]``) and pipeline."""

    metrics: dict[str, Any]
    pipeline: Pipeline
    config: KeelConfig

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def write(self, output_dir: str | Path) -> Path:
        """Write metrics.json, config.json and the run's CSV files (tca.csv among them); return the folder."""
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(self.metrics, indent=2, sort_keys=True) + "\n")
        (folder / "config.json").write_text(
            json.dumps(config_to_dict(self.config), indent=2, sort_keys=True, default=str) + "\n"
        )
        write_run_records(folder, self.pipeline)
        return folder


class BacktestEngine:
    """Run strategies over the bundled recorded data through the whole pipeline.

    Parameters
    ----------
    config
        The configuration; ``load_config("backtest")`` when None.
    """

    def __init__(self, config: KeelConfig | None = None) -> None:
        self.config = config if config is not None else load_config("backtest")

    async def run_backtest(
        self,
        strategy: BaseStrategy | None = None,
        start_date: str | date | datetime | None = None,
        end_date: str | date | datetime | None = None,
        initial_capital: float | Decimal | None = None,
        symbols: list[str] | None = None,
    ) -> BacktestResult:
        """Run a backtest and return its result (a mapping of metrics).

        ``results["total_return"]``, ``results["sharpe_ratio"]`` and
        ``results["max_drawdown"]`` are fractions. Dates are UTC; the end is
        exclusive. See :meth:`run` for the rest.
        """
        return self.run(
            strategy,
            symbols=symbols,
            start=start_date,
            end=end_date,
            initial_capital=None if initial_capital is None else Decimal(str(initial_capital)),
        )

    def run(
        self,
        strategy: BaseStrategy | None = None,
        *,
        symbols: list[str] | None = None,
        start: str | date | datetime | None = None,
        end: str | date | datetime | None = None,
        initial_capital: Decimal | None = None,
        progress: ProgressCallback | None = None,
    ) -> BacktestResult:
        """Run a backtest synchronously.

        Parameters
        ----------
        strategy
            The strategy; the configured one when None.
        symbols
            Symbols to trade; ``data.symbols`` when None.
        start, end
            UTC bounds (end exclusive); ``data.start`` / ``data.end`` when None.
        initial_capital
            Starting balance; ``exchange.initial_balance`` when None.
        progress
            Called every 10,000 events and at the end.

        Raises
        ------
        MalformedDataError
            If the data files are unreadable or hold no bars in the range.
        """
        config = self._effective_config(symbols, start, end, initial_capital)
        started = time.perf_counter()
        reset_message_ids()
        feed = build_feed(config)
        handler_failures: list[str] = []
        bus = EventBus(
            config.bus.capacity,
            on_handler_error=lambda name, message, error: handler_failures.append(f"{name}: {error!r}"),
        )
        clock = SimulatedClock(feed.summary.first_ns)
        instruments = load_instruments(config.exchange.instruments)
        pipeline = build_pipeline(config, instruments, bus, clock, strategy=strategy, client_order_namespace="keel")
        monitors = build_monitors(config, bus, clock)
        pipeline.start()
        for monitor in monitors:
            monitor.start()
        bus.drain()
        bars, events = self._replay(feed, pipeline, progress)
        for monitor in monitors:
            monitor.stop()
        pipeline.stop()
        bus.drain()
        metrics = self._metrics(config, pipeline, bars, events, feed, handler_failures)
        metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
        return BacktestResult(metrics, pipeline, config)

    def _effective_config(
        self,
        symbols: list[str] | None,
        start: str | date | datetime | None,
        end: str | date | datetime | None,
        initial_capital: Decimal | None,
    ) -> KeelConfig:
        data: dict[str, Any] = {}
        if symbols is not None:
            data["symbols"] = tuple(symbols)
        if start is not None:
            data["start"] = _to_datetime(start)
        if end is not None:
            data["end"] = _to_datetime(end)
        elif self.config.data.end is None:
            covered = funding_coverage_end(self.config, data.get("symbols", self.config.data.symbols))
            first = data.get("start", self.config.data.start)
            if covered is not None and (first is None or covered > first):
                data["end"] = covered
        update: dict[str, Any] = {}
        if data:
            update["data"] = self.config.data.model_validate({**self.config.data.model_dump(), **data})
        if initial_capital is not None:
            update["exchange"] = self.config.exchange.model_copy(update={"initial_balance": initial_capital})
        return self.config.model_copy(update=update) if update else self.config

    def _replay(self, feed: RecordedBarFeed, pipeline: Pipeline, progress: ProgressCallback | None) -> tuple[int, int]:
        bus, clock = pipeline.bus, pipeline.clock
        assert isinstance(clock, SimulatedClock)
        total = feed.summary.bars + feed.summary.funding_events
        bars = events = 0
        pending_bar_ts: int | None = None
        message: Message
        for message in feed:
            ts = message.ts_event
            if pending_bar_ts is not None and ts != pending_bar_ts:
                pipeline.record_equity(pending_bar_ts)
                pending_bar_ts = None
            clock.advance_to(ts)
            bus.publish(message)
            bus.drain()
            events += 1
            if message.__class__ is BarClosed:
                bars += 1
                pending_bar_ts = ts
            if progress is not None and events % 10_000 == 0:
                progress(events, total)
        if pending_bar_ts is not None:
            pipeline.record_equity(pending_bar_ts)
        if progress is not None:
            progress(events, total)
        return bars, events

    def _metrics(
        self,
        config: KeelConfig,
        pipeline: Pipeline,
        bars: int,
        events: int,
        feed: RecordedBarFeed,
        handler_failures: list[str],
    ) -> dict[str, Any]:
        metrics = run_metrics(pipeline, BARS_PER_YEAR[config.data.bar_interval])
        metrics.update(
            {
                "bars_processed": bars,
                "events_processed": events,
                "handler_errors": len(handler_failures),
                "symbols": list(config.data.symbols),
                "start": iso_time(feed.summary.first_ns),
                "end": iso_time(feed.summary.last_ns),
                "bad_rows_dropped": sum(len(r.bad_rows) for r in feed.reports),
                "data_gaps": sum(len(r.gaps) for r in feed.reports),
            }
        )
        if handler_failures:
            _log.error("handlers raised during the backtest", count=len(handler_failures), first=handler_failures[0])
        return metrics


def funding_coverage_end(config: KeelConfig, symbols: tuple[str, ...]) -> datetime | None:
    """Return when the funding data of ``symbols`` stops covering a held position (None: no funding at all).

    That is the earliest, over the symbols, of the last recorded settlement
    plus the symbol's funding interval; a symbol without any recorded funding
    does not bound it (holding it through a funding time fails loudly instead).
    """
    data = config.data
    frame = load_funding(data.root / data.funding).frame
    ends = []
    for symbol in symbols:
        times = frame.loc[frame["symbol"] == symbol, "time_ms"]
        if times.empty:
            continue
        hours = config.exchange.funding_interval_hours.get(symbol, 8)
        last_hour_ms = int(times.max()) // 3_600_000 * 3_600_000
        ends.append(last_hour_ms + hours * 3_600_000)
    return datetime.fromtimestamp(min(ends) / 1000, tz=UTC) if ends else None


def _to_datetime(value: str | date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
