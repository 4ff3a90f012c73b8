"""The backtest engine: recorded data through the full pipeline on a simulated clock.

The engine runs a :class:`~keel.integration.replay.RecordedRun`: the
recorded feed replayed one timestamp at a time through the same pipeline a
paper or live run wires, every component reacting exactly as it would live,
in a deterministic order. The same configuration, data and seed give
byte-identical ``trades.csv``, ``orders.csv`` and ``report.html``.

The simulated venue treats a held position whose funding time passes without
a recorded rate as an error, so a run without an explicit end stops where the
funding data of its symbols stops (the last recorded settlement plus one
funding interval), not where the bars do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import structlog

from keel.backtest.report import write_report
from keel.config import KeelConfig, config_to_dict, load_config
from keel.integration.pipeline import Pipeline
from keel.integration.replay import ProgressCallback, RecordedRun, funding_coverage_end
from keel.integration.reports import BARS_PER_YEAR, iso_time, run_metrics, write_run_records
from keel.market_data.feeds import (
    RecentPreparedFiles,
    RecordedBarFeed,
    installed_prepared_data,
    use_prepared_data,
)
from keel.strategy_engine.base import BaseStrategy

_log = structlog.get_logger("keel.backtest")


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
        """Write metrics.json, config.json, the CSV files (tca.csv among them) and report.html; return the folder."""
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(self.metrics, indent=2, sort_keys=True) + "\n")
        (folder / "config.json").write_text(
            json.dumps(config_to_dict(self.config), indent=2, sort_keys=True, default=str) + "\n"
        )
        write_run_records(folder, self.pipeline)
        write_report(folder, self)
        return folder


class BacktestEngine:
    """Run strategies over the bundled recorded data through the whole pipeline.

    Parameters
    ----------
    config
        The configuration; ``load_config("backtest")`` when None.

    Attributes
    ----------
    prepared_files : RecentPreparedFiles
        The data files parsed by this process's backtests, shared by every
        engine: a file unchanged since is not parsed again (unless a tuning
        study installed its own store, which is used instead).
    """

    prepared_files: ClassVar[RecentPreparedFiles] = RecentPreparedFiles()

    def __init__(self, config: KeelConfig | None = None) -> None:
        self.config = config if config is not None else load_config("backtest")

    async def run_backtest(
        self,
        strategy: BaseStrategy | None = None,
        start_date: str | date | datetime | None = None,
        end_date: str | date | datetime | None = None,
        initial_capital: float | Decimal | None = None,
        symbols: list[str] | str | None = None,
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
        symbols: list[str] | str | None = None,
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
            Symbols to trade (a list, or one string of comma-separated
            symbols); ``data.symbols`` when None.
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
        ValueError
            If ``initial_capital`` is not a positive finite number.
        """
        if initial_capital is not None and (not initial_capital.is_finite() or initial_capital <= 0):
            raise ValueError(f"initial_capital must be a positive finite number, got {initial_capital}")
        with use_prepared_data(installed_prepared_data() or self.prepared_files):
            config = self._effective_config(symbols, start, end, initial_capital)
            started = time.perf_counter()
            # Nothing reads the handler latencies of a backtest: no clock read per handler call.
            run = RecordedRun(config, strategy, measure_latency=False, fit_worker=config.run.regime_fit_worker)
            run.replay(progress)
        pipeline = run.pipeline
        metrics = self._metrics(config, pipeline, run.bars, run.events, run.feed, run.handler_failures)
        metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
        return BacktestResult(metrics, pipeline, config)

    def _effective_config(
        self,
        symbols: list[str] | str | None,
        start: str | date | datetime | None,
        end: str | date | datetime | None,
        initial_capital: Decimal | None,
    ) -> KeelConfig:
        data: dict[str, Any] = {}
        if isinstance(symbols, str):  # "BTCUSDT" or "BTCUSDT,ETHUSDT", as on the command line; not its letters
            symbols = [symbol.strip() for symbol in symbols.split(",")]
        if symbols is not None:
            data["symbols"] = tuple(symbols)
        if start is not None:
            data["start"] = _to_datetime(start, "start")
        if end is not None:
            data["end"] = _to_datetime(end, "end")
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
                "bar_interval": config.data.bar_interval,
                "funding_data": "none" if config.data.funding is None else str(config.data.root / config.data.funding),
            }
        )
        if handler_failures:
            _log.error("handlers raised during the backtest", count=len(handler_failures), first=handler_failures[0])
        return metrics


def _to_datetime(value: str | date | datetime, name: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{name} {value!r} is not an ISO 8601 date or time: write e.g. 2025-05-10 or 2025-05-10T06:00"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
