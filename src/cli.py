"""The ``keel`` command: backtest, paper (and later live) runs, and data tools.

Exit codes: 0 success; 1 a run failed (bad data, a crashed component);
2 bad usage or configuration, with one line naming the file and key.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from keel.config import KeelConfig, load_config
from keel.core.errors import ConfigurationError, MalformedDataError, OperatorActionRequiredError
from keel.core.log import configure_logging
from keel.market_data.loaders import BarSpacingError

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"keel: {message}", err=True)
    sys.exit(code)


def _load(mode: str, config_file: str | None, overrides: dict[str, Any] | None = None) -> KeelConfig:
    """Load the configuration; exit 2 with one line naming the file and key on any problem."""
    try:
        config = load_config(mode, config_file)
        if overrides:
            config = _override(config, overrides)
    except ConfigurationError as error:
        _fail(f"configuration error: {error}", EXIT_USAGE)
    configure_logging(config.logging.level, config.logging.format)
    return config


def _override(config: KeelConfig, overrides: dict[str, Any]) -> KeelConfig:
    """Apply command-line options on top of the loaded configuration, validated like the files."""
    data = config.model_dump()
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        data[section][key] = value
    try:
        return KeelConfig.model_validate(data)
    except ValueError as error:
        first = str(error).splitlines()
        raise ConfigurationError("command line", ", ".join(overrides), " ".join(first[1:3]).strip()) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keel")
def main() -> None:
    """keel: an event-driven trading system for Binance USD-M perpetual futures."""


def _symbols(values: tuple[str, ...]) -> tuple[str, ...] | None:
    symbols = tuple(s.strip().upper() for value in values for s in value.split(",") if s.strip())
    return symbols or None


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file layered over config/.")
@click.option("--symbols", multiple=True, help="Symbols to trade (comma-separated or repeated).")
@click.option("--start", help="First bar time, UTC (e.g. 2025-05-10).")
@click.option("--end", help="End time, exclusive, UTC.")
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False), help="Folder for results.")
def backtest(
    config_file: str | None, symbols: tuple[str, ...], start: str | None, end: str | None, output_dir: str
) -> None:
    """Run a backtest on the recorded data and write metrics.json, equity.csv, trades.csv, orders.csv."""
    from keel.backtest.engine import BacktestEngine

    overrides: dict[str, Any] = {}
    if _symbols(symbols):
        overrides["data.symbols"] = _symbols(symbols)
    if start:
        overrides["data.start"] = start
    if end:
        overrides["data.end"] = end
    config = _load("backtest", config_file, overrides)
    try:
        with _progress("backtest") as progress:
            result = BacktestEngine(config).run(progress=progress)
    except BarSpacingError as error:
        _fail(f"data error: {error}", EXIT_USAGE)
    except MalformedDataError as error:
        _fail(f"data error: {error}", EXIT_FAILURE)
    folder = result.write(output_dir)
    keys = ("total_return", "sharpe_ratio", "max_drawdown", "n_trades", "fees_paid", "bars_processed", "wall_seconds")
    click.echo(json.dumps({key: result[key] for key in keys}))
    click.echo(f"results written to {folder}")
    if result["handler_errors"]:
        _fail(f"{result['handler_errors']} handler errors during the backtest; see the log", EXIT_FAILURE)


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    """Yield a progress callback: a rich bar on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@main.command()
@click.option("--mode", type=click.Choice(["paper", "live"]), default="paper", show_default=True)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file layered over config/.")
@click.option("--speed", type=float, help="Replay speed of the recorded feed (paper): 60 = one 1m bar per second.")
@click.option("--duration", type=float, help="Stop after this many wall-clock seconds.")
@click.option("--symbols", multiple=True, help="Symbols to trade (comma-separated or repeated).")
@click.option("--host", help="Address the web app listens on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port of the web app (default 8000; 0 picks a free one).")
@click.option("--no-web", is_flag=True, help="Do not serve the control API and dashboard.")
@click.option("--fresh", is_flag=True, help="Open a new paper account instead of recovering an unfinished session.")
def run(
    mode: str,
    config_file: str | None,
    speed: float | None,
    duration: float | None,
    symbols: tuple[str, ...],
    host: str | None,
    port: int | None,
    no_web: bool,
    fresh: bool,
) -> None:
    """Run the trading pipeline in wall-clock time until the data ends, the duration elapses or Ctrl-C.

    An unfinished paper session (stopped or crashed) is recovered and continued unless ``--fresh``.
    """
    overrides: dict[str, Any] = {}
    if fresh:
        overrides["paper.resume"] = False
    if host is not None:
        overrides["web.host"] = host
    if port is not None:
        overrides["web.port"] = port
    if no_web:
        overrides["web.enabled"] = False
    if speed is not None:
        overrides["paper.speed"] = speed
    if duration is not None:
        overrides["paper.duration_seconds"] = duration
    if _symbols(symbols):
        overrides["data.symbols"] = _symbols(symbols)
    config = _load(mode, config_file, overrides)
    if mode == "live":
        _fail(
            "live trading needs the Binance Futures adapter, which this version does not have yet; use --mode paper",
            EXIT_USAGE,
        )
    from keel.integration.paper import PaperSession

    run_dir = Path(config.run.output_dir) / f"paper-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    try:
        session = PaperSession(config, run_dir, on_status=_print_status)
    except BarSpacingError as error:
        _fail(f"data error: {error}", EXIT_USAGE)
    except OperatorActionRequiredError as error:
        _fail(str(error), EXIT_FAILURE)
    duration_seconds = config.paper.duration_seconds
    until = "until the data ends" if duration_seconds is None else f"for {duration_seconds:g} s"
    recovering = f"recovering session {session.plan.session}" if session.plan.recover else "fresh paper account"
    click.echo(
        f"keel paper run ({recovering}): {len(config.data.symbols)} symbols, replay speed {config.paper.speed:g}x, "
        f"{until}; Ctrl-C stops cleanly"
    )
    try:
        final = asyncio.run(_run_paper(session))
    except BarSpacingError as error:
        _fail(f"data error: {error}", EXIT_USAGE)
    except MalformedDataError as error:
        _fail(f"data error: {error}", EXIT_FAILURE)
    _print_status(final)
    click.echo(f"stopped ({final['stop_reason']}); final state written to {run_dir}")
    if final["handler_errors"]:
        _fail(f"{final['handler_errors']} handler errors during the run; see the log", EXIT_FAILURE)


async def _run_paper(session: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, session.request_stop, f"signal {signal.Signals(signum).name}")
    web = session.config.web
    if not web.enabled:
        return await session.run()
    from keel.web import SnapshotPublisher, SnapshotService, ThreadedServer, create_app

    token = session.config.secrets.api_token
    publisher = SnapshotPublisher(
        session.orchestrator,
        interval_seconds=min(0.25, web.dashboard_interval_seconds),
        extra_metrics=lambda: {"event_loop_lag_seconds": session.loop_lag.lag_seconds},
    )
    app = create_app(
        SnapshotService(publisher, asyncio.get_running_loop()),
        api_token=None if token is None else token.reveal(),
        audit=session.orchestrator.record_operator_action,
        dashboard_interval_seconds=web.dashboard_interval_seconds,
        control_requests_per_minute=web.control_requests_per_minute,
        max_body_bytes=web.max_body_bytes,
        read_requests_per_second=web.read_requests_per_second,
        max_websockets_per_client=web.max_websockets_per_client,
    )
    server = ThreadedServer(app, web.host, web.port)
    try:
        server.start()
    except OSError as error:
        _fail(f"cannot serve the web app on {web.host}:{web.port}: {error}; use --port or --no-web", EXIT_FAILURE)
    click.echo(
        f"dashboard: http://{web.host}:{server.port}/dashboard  (API docs: http://{web.host}:{server.port}/docs)"
    )
    if token is None:
        click.echo("no API token set (KEEL_API_TOKEN): emergency stop and other control routes are refused")
    publishing = asyncio.create_task(publisher.run(), name="snapshots")
    try:
        return await session.run()
    finally:
        publishing.cancel()
        await asyncio.to_thread(server.stop)


def _print_status(status: dict[str, Any]) -> None:
    click.echo(
        f"[{status['time']}] bars {status['bars']:>7} | equity {status['equity']} | P&L {status['pnl']} | "
        f"orders {status['orders']} (open {status['open_orders']}) | fills {status['fills']} | "
        f"bus depth {status['bus_depth']} (max {status['bus_high_water_mark']}) | {status['trading_state']}"
    )


@main.group()
def data() -> None:
    """Inspect the recorded market data."""


@data.command("inspect")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def inspect(paths: tuple[str, ...]) -> None:
    """Print rows, span, symbols, gaps and bad rows of each data file (folders are searched)."""
    from keel.market_data.inspection import UnreadableFile, inspect_all, render_report

    results = inspect_all(paths)
    reports = [result for result in results if not isinstance(result, UnreadableFile)]
    unreadable = [result for result in results if isinstance(result, UnreadableFile)]
    for result in results:
        if isinstance(result, UnreadableFile):
            click.echo(f"{result.path}\n  unreadable: {result.reason}\n")
        else:
            click.echo(render_report(result))
            click.echo("")
    bad = sum(len(r.bad_rows) for r in reports)
    gaps = sum(len(r.gaps) for r in reports)
    click.echo(
        f"{len(reports)} files, {sum(r.rows_kept for r in reports)} rows kept, {bad} bad rows, {gaps} gaps"
        + (f", {len(unreadable)} unreadable" if unreadable else "")
    )
    if unreadable:
        sys.exit(EXIT_FAILURE)


@data.command("replay-book")
@click.argument("session_dir", type=click.Path(exists=True, file_okay=False))
def replay_book_command(session_dir: str) -> None:
    """Rebuild a recorded session's order book and print its match rate against bookTicker as one JSON line."""
    from keel.market_data.book_replay import replay_book

    try:
        report = replay_book(session_dir)
    except MalformedDataError as error:
        _fail(f"data error: {error}", EXIT_FAILURE)
    click.echo(json.dumps(report.to_dict()))


if __name__ == "__main__":
    main()
