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
from keel.core.errors import ConfigurationError, MalformedDataError, OperatorActionRequiredError, RetryLaterError
from keel.core.log import configure_logging
from keel.optimization.cli import tune

EXIT_FAILURE = 1
EXIT_USAGE = 2
STATUS_TTL_SECONDS = 60.0
"""How long a status published to the status cache stays readable (a dead process's status then disappears)."""


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"keel: {message}", err=True)
    sys.exit(code)


def _load(
    mode: str,
    config_file: str | None,
    overrides: dict[str, Any] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
) -> KeelConfig:
    """Load the configuration with the command line's values laid over it; exit 2 with one line on any problem.

    ``overrides`` are dotted keys (``{"data.start": "2025-05-10"}``), ``sections``
    whole sections; both are validated with the files, so an error names the
    key at fault and says it came from the command line.
    """
    layers = {section: dict(values) for section, values in (sections or {}).items()}
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".")
        layers.setdefault(section, {})[key] = value
    try:
        config = load_config(mode, config_file, overrides=layers, overrides_source="command line")
    except ConfigurationError as error:
        _fail(f"configuration error: {error}", EXIT_USAGE)
    configure_logging(config.logging.level, config.logging.format)
    return config


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
@click.option(
    "--profile", is_flag=True, help="Also write where the run spent its time (profile.html, profile.speedscope.json)."
)
def backtest(
    config_file: str | None,
    symbols: tuple[str, ...],
    start: str | None,
    end: str | None,
    output_dir: str,
    profile: bool,
) -> None:
    """Run a backtest on the recorded data and write metrics.json, equity.csv, trades.csv, orders.csv."""
    from keel.backtest.engine import BacktestEngine
    from keel.backtest.profile import profiled, write_profile

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
            engine = BacktestEngine(config)
            if profile:
                result, session = profiled(lambda: engine.run(progress=progress))
            else:
                result = engine.run(progress=progress)
    except MalformedDataError as error:
        _fail(f"data error: {error}", EXIT_FAILURE)
    except ConfigurationError as error:
        _fail(f"configuration error: {error}", EXIT_USAGE)
    folder = result.write(output_dir)
    if profile:
        write_profile(folder, session)
    keys = ("total_return", "sharpe_ratio", "max_drawdown", "n_trades", "fees_paid", "bars_processed", "wall_seconds")
    click.echo(json.dumps({key: result[key] for key in keys}))
    click.echo(f"results written to {folder}")
    if result["strategy_errors"]:
        disabled = "; ".join(
            f"{name} off for {', '.join(symbols)}" for name, symbols in result["strategies_disabled"].items()
        )
        click.echo(
            f"keel: the strategies raised {result['strategy_errors']} times ({disabled or 'none switched off'}); "
            "see the log",
            err=True,
        )
    for name, reason in result["strategies_not_ready"].items():
        click.echo(f"keel: {name} never formed a view: it {reason} (its periods are in bars)", err=True)
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
@click.option(
    "--feed",
    type=click.Choice(["replay", "binance"]),
    help="Paper market data: the bundled replay (default) or Binance's live streams at binance.ws_url.",
)
@click.option("--duration", type=float, help="Stop after this many wall-clock seconds.")
@click.option("--symbols", multiple=True, help="Symbols to trade (comma-separated or repeated).")
@click.option("--host", help="Address the web app listens on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port of the web app (default 8000; 0 picks a free one).")
@click.option("--no-web", is_flag=True, help="Do not serve the control API and dashboard.")
@click.option(
    "--fresh",
    is_flag=True,
    help="Open a new paper account, with the configured risk limits, instead of recovering an unfinished session.",
)
@click.option("--testnet", is_flag=True, help="Live: trade on the Binance futures testnet (binance.testnet).")
@click.option(
    "--i-understand-this-trades-real-money",
    "confirmed",
    is_flag=True,
    help="Live: confirm that keel places real orders (or live.confirm: true in your configuration).",
)
def run(
    mode: str,
    config_file: str | None,
    speed: float | None,
    feed: str | None,
    duration: float | None,
    symbols: tuple[str, ...],
    host: str | None,
    port: int | None,
    no_web: bool,
    fresh: bool,
    testnet: bool,
    confirmed: bool,
) -> None:
    """Run the trading pipeline in wall-clock time until the data ends, the duration elapses or Ctrl-C.

    An unfinished session (stopped or crashed) is recovered and continued unless ``--fresh``. ``--mode live``
    trades the Binance account of KEEL_BINANCE_API_KEY / KEEL_BINANCE_API_SECRET and needs
    ``--i-understand-this-trades-real-money`` (or ``live.confirm: true``).
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
    if feed is not None:
        overrides["paper.feed"] = feed
    if _symbols(symbols):
        overrides["data.symbols"] = _symbols(symbols)
    sections: dict[str, dict[str, Any]] = {}
    if confirmed:
        sections["live"] = {"confirm": True}
    if testnet:
        sections["binance"] = {"testnet": True}
    config = _load(mode, config_file, overrides, sections)
    from keel.integration.paper import PaperSession

    run_dir = Path(config.run.output_dir) / f"{mode}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    try:
        session = PaperSession(config, run_dir, on_status=_print_status, venue=_venue(config))
    except (OperatorActionRequiredError, RetryLaterError) as error:
        _fail(str(error), EXIT_FAILURE)
    except ConfigurationError as error:
        _fail(f"configuration error: {error}", EXIT_USAGE)
    duration_seconds = config.paper.duration_seconds
    until = "until the data ends" if duration_seconds is None else f"for {duration_seconds:g} s"
    fresh_start = "fresh paper account" if mode == "paper" else "fresh session"
    recovering = f"recovering session {session.plan.session}" if session.plan.recover else fresh_start
    where = "" if mode == "paper" else f" on {session.venue!r}, REDUCING until reconciled with the account"
    source = f"replay speed {config.paper.speed:g}x"
    if config.paper.feed == "binance":
        source = f"Binance market streams at {session.market_stream.ws_url if session.market_stream else ''}"
        until = "until stopped" if duration_seconds is None else until
    click.echo(
        f"keel {mode} run ({recovering}){where}: {len(config.data.symbols)} symbols, {source}, {until}; "
        "Ctrl-C stops cleanly"
    )
    try:
        final = asyncio.run(_run_paper(session))
    except MalformedDataError as error:
        _fail(f"data error: {error}", EXIT_FAILURE)
    except OperatorActionRequiredError as error:
        _fail(f"the venue needs an operator: {error}", EXIT_FAILURE)
    _print_status(final)
    click.echo(f"stopped ({final['stop_reason']}); final state written to {run_dir}")
    if final["handler_errors"]:
        _fail(f"{final['handler_errors']} handler errors during the run; see the log", EXIT_FAILURE)


def _venue(config: KeelConfig) -> Any:
    """Return the live run's Binance venue, or None for the paper venue."""
    if config.run.mode != "live":
        return None
    from keel.integration.live import BinanceVenue

    return BinanceVenue(config, live_feed=config.paper.feed == "binance")


async def _run_paper(session: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, session.request_stop, f"signal {signal.Signals(signum).name}")
    web = session.config.web
    if not web.enabled and web.status_cache_url is None and not session.config.telegram.enabled:
        return await session.run()
    from keel.web import SnapshotPublisher, SnapshotService

    status_cache = _status_cache(session)
    publisher = SnapshotPublisher(
        session.orchestrator,
        interval_seconds=min(0.25, web.dashboard_interval_seconds),
        extra_metrics=lambda: {"event_loop_lag_seconds": session.loop_lag.lag_seconds},
        on_publish=None if status_cache is None else lambda s: status_cache.offer(s.status.model_dump(mode="json")),
    )
    server = None
    if web.enabled:
        server = _serve(session, publisher)
    publishing = asyncio.create_task(publisher.run(), name="snapshots")
    telegram = _start_telegram(session, SnapshotService(publisher, loop))
    try:
        return await session.run()
    finally:
        publishing.cancel()
        publisher.publish()  # the last word readers get: the stopped run's final status
        if telegram is not None:
            await asyncio.to_thread(telegram.stop)
        if server is not None:
            await asyncio.to_thread(server.stop)
        if status_cache is not None:
            await asyncio.to_thread(status_cache.close)


def _status_cache(session: Any) -> Any:
    """The Redis status cache of ``web.status_cache_url``, watched by the system monitor (None when not set)."""
    url = session.config.web.status_cache_url
    if url is None:
        return None
    from keel.optimization.cache import CacheManager, CacheSettings, StatusCache

    status_cache = StatusCache(CacheManager(url, CacheSettings(ttl_seconds=STATUS_TTL_SECONDS)))
    session.monitors[0].watch_dependency("status cache", status_cache.problem)
    click.echo(f"publishing the status to {url} for API readers")
    return status_cache


def _serve(session: Any, publisher: Any) -> Any:
    """Serve the web app from its own thread over ``publisher``'s snapshots; return the server."""
    from keel.optimization.config_optimizer import ConfigOptimizer
    from keel.web import ConfigChangesOnLoop, SnapshotService, ThreadedServer, create_app

    web = session.config.web
    loop = asyncio.get_running_loop()
    token = session.config.secrets.api_token
    app = create_app(
        SnapshotService(publisher, loop),
        api_token=None if token is None else token.reveal(),
        audit=session.orchestrator.record_operator_action,
        dashboard_interval_seconds=web.dashboard_interval_seconds,
        control_requests_per_minute=web.control_requests_per_minute,
        max_body_bytes=web.max_body_bytes,
        read_requests_per_second=web.read_requests_per_second,
        max_websockets_per_client=web.max_websockets_per_client,
        max_snapshot_age_seconds=web.max_snapshot_age_seconds,
        config_changes=ConfigChangesOnLoop(ConfigOptimizer(session.orchestrator), loop),
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
    return server


def _start_telegram(session: Any, operations: Any) -> Any:
    """Start Telegram notifications and commands when configured (None when not)."""
    settings = session.config.telegram
    if not settings.enabled:
        return None
    token = session.config.secrets.telegram_token
    if token is None or not settings.chat_ids:
        _fail("telegram.enabled needs KEEL_TELEGRAM_TOKEN and at least one telegram.chat_ids entry", EXIT_USAGE)
    from keel.notifications import start_telegram

    pipeline = session.pipeline
    audit = session.orchestrator.record_operator_action
    _, thread = start_telegram(settings, token, pipeline.bus, pipeline.clock, operations, audit)
    click.echo(f"telegram: notifying and obeying chats {', '.join(map(str, settings.chat_ids))}")
    return thread


def _print_status(status: dict[str, Any]) -> None:
    click.echo(
        f"[{status['time']}] bars {status['bars']:>7} | equity {status['equity']} | P&L {status['pnl']} | "
        f"orders {status['orders']} (open {status['open_orders']}) | fills {status['fills']} | "
        f"bus depth {status['bus_depth']} (max {status['bus_high_water_mark']}) | {status['trading_state']}"
        f"{_stream_status(status.get('market_stream'))}"
    )


def _stream_status(stream: dict[str, Any] | None) -> str:
    """Return the status line's part on Binance's market streams ("" for a replayed feed)."""
    if stream is None:
        return ""
    part = f" | streams {stream['messages']} messages, {stream['reconnects']} reconnects"
    if stream["connections"] == 0 and stream["last_error"]:
        part += f", not connected: {stream['last_error']}"
    return part


@main.group()
def data() -> None:
    """Inspect the recorded market data."""


@data.command("inspect")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def inspect(paths: tuple[str, ...]) -> None:
    """Print rows, span, symbols, gaps and bad rows of each data file (folders are searched)."""
    from keel.market_data.inspection import inspect_paths, render_report

    unreadable: list[tuple[Path, str]] = []
    reports = inspect_paths(paths, unreadable)
    for report in reports:
        click.echo(render_report(report))
        click.echo("")
    for path, problem in unreadable:
        click.echo(f"cannot read {path}: {problem}", err=True)
    bad = sum(len(r.bad_rows) for r in reports)
    gaps = sum(len(r.gaps) for r in reports)
    click.echo(
        f"{len(reports)} files, {sum(r.rows_kept for r in reports)} rows kept, {bad} bad rows, {gaps} gaps, "
        f"{len(unreadable)} unreadable"
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


@data.command("download")
@click.option("--symbols", multiple=True, required=True, help="Symbols (comma-separated or repeated).")
@click.option("--interval", default="1m", show_default=True, help="Kline interval (1m ... 1d, 1w).")
@click.option("--start", required=True, help="First month, YYYY-MM.")
@click.option("--end", required=True, help="Last month, YYYY-MM (inclusive).")
@click.option(
    "--kinds",
    default="klines,funding,mark_price",
    show_default=True,
    help="Any of klines, funding, mark_price, agg_trades (comma-separated).",
)
@click.option("--to", "destination", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--mark-interval", default="1h", show_default=True, help="Interval of the mark-price klines.")
@click.option("--base-url", help="Archive address (default Binance's public data archive).")
def download(
    symbols: tuple[str, ...],
    interval: str,
    start: str,
    end: str,
    kinds: str,
    destination: str,
    mark_interval: str,
    base_url: str | None,
) -> None:
    """Download Binance's public archive (checksums verified, resumable) and write it in keel's format."""
    from keel.market_data import archive

    names = _symbols(symbols) or ()
    wanted = tuple(kind.strip() for kind in kinds.split(",") if kind.strip())
    try:
        files = archive.archive_files(
            names,
            interval,
            archive.parse_month(start),
            archive.parse_month(end),
            wanted,
            archive.today_utc(),
            mark_interval,
        )
    except ValueError as error:
        _fail(f"usage error: {error}", EXIT_USAGE)
    folder = Path(destination)
    result = archive.ArchiveResult()
    source = archive.BinanceArchive(base_url or archive.DEFAULT_BASE_URL)
    with _progress("download") as progress:
        zips = source.download(files, folder / "archive", result, progress)
    _finish_archive(archive, zips, folder, result)


@data.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--to", "destination", required=True, type=click.Path(file_okay=False), help="Folder to write.")
def import_command(paths: tuple[str, ...], destination: str) -> None:
    """Write Binance archive zips or CSVs you already have (files or folders) in keel's format."""
    from keel.market_data import archive

    try:
        sources = archive.check_sources([Path(path) for path in paths])
    except MalformedDataError as error:
        _fail(f"data error: {error}", EXIT_USAGE)
    _finish_archive(archive, sources, Path(destination), archive.ArchiveResult())


def _bad_rows_written(written: list[Path]) -> dict[Path, int]:
    """Return the malformed rows of each written data file that has some (the loaders' own check)."""
    from keel.market_data.inspection import inspect_paths

    reports = inspect_paths([path for path in written if path.name.endswith(".csv.gz")], [])
    return {Path(report.path): len(report.bad_rows) for report in reports if report.bad_rows}


def _finish_archive(archive: Any, sources: list[Path], folder: Path, result: Any) -> None:
    """Convert fetched or given archive files, write data.yaml, print what happened."""
    try:
        section = archive.convert_archive(sources, folder, result)
    except archive.ArchiveError as error:
        _fail(f"data error: {error}", EXIT_FAILURE)
    if section:
        archive.write_data_config(folder, section, result)
    for path in result.missing:
        click.echo(f"missing in the archive (a gap in the data): {path}", err=True)
    for path, reason in result.failed:
        click.echo(f"refused {path}: {reason}", err=True)
    bad_rows = _bad_rows_written(result.written)
    for path, count in bad_rows.items():
        click.echo(
            f"{path}: {count} malformed rows, written as they were (keel skips them; keel data inspect lists them)",
            err=True,
        )
    summary = {
        "downloaded": len(result.downloaded),
        "reused": len(result.reused),
        "missing": len(result.missing),
        "failed": len(result.failed),
        "written": [str(path) for path in result.written],
        "bad_rows": sum(bad_rows.values()),
        "config": str(result.config) if result.config else None,
    }
    click.echo(json.dumps(summary))
    if result.config:
        click.echo(f"run it: keel backtest --config {result.config} --output runs/backtest")
    if result.failed:
        _fail(f"{len(result.failed)} files refused; run the command again to retry them", EXIT_FAILURE)


@data.command("instruments")
@click.option("--from", "source_file", type=click.Path(exists=True, dir_okay=False), help="Saved exchangeInfo JSON.")
@click.option(
    "--download", is_flag=True, help="Fetch GET /fapi/v1/exchangeInfo from binance.rest_url (public, no keys)."
)
@click.option(
    "--brackets", "brackets_file", type=click.Path(exists=True, dir_okay=False), help="Saved leverageBracket JSON."
)
@click.option("--symbols", multiple=True, help="Symbols to write (default: every trading perpetual).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file layered over config/.")
def instruments_command(
    source_file: str | None,
    download: bool,
    brackets_file: str | None,
    symbols: tuple[str, ...],
    config_file: str | None,
) -> None:
    """Write exchange filters (and leverage brackets) of symbols into the configured instrument files."""
    from keel.core import exchange_info

    if bool(source_file) == download:
        _fail("usage error: give exactly one of --from FILE or --download", EXIT_USAGE)
    config = _load("backtest", config_file)
    try:
        if source_file:
            answer = exchange_info.read_json(source_file)
            source = f"exchangeInfo file {Path(source_file).resolve()}"
        else:
            answer, source = _download_exchange_info(config)
        names = _symbols(symbols)
        update = exchange_info.instruments_document(answer, names, source)
        target = Path(config.exchange.instruments).resolve()
        merged = exchange_info.merge_instruments(target, update)
        header = f"# Binance USD-M instruments; written by keel data instruments from {source}.\n"
        exchange_info.dump_yaml(target, header, {"instruments": merged})
        written = [str(target)]
        if brackets_file:
            tables = exchange_info.brackets_document(
                exchange_info.read_json(brackets_file), f"leverageBracket file {Path(brackets_file).resolve()}"
            )
            fees = exchange_info.liquidation_fees(answer, update)
            brackets_target = Path(config.exchange.leverage_brackets).resolve()
            document = exchange_info.merge_brackets(brackets_target, tables, fees)
            exchange_info.dump_yaml(
                brackets_target, "# Binance USD-M leverage brackets; see keel data instruments.\n", document
            )
            written.append(str(brackets_target))
    except exchange_info.ExchangeInfoError as error:
        _fail(f"exchange info error: {error}", EXIT_USAGE)
    click.echo(json.dumps({"instruments": sorted(update), "written": written}))


def _download_exchange_info(config: KeelConfig) -> tuple[Any, str]:
    """Fetch the public exchangeInfo answer from the configured Binance REST address."""
    import urllib.error
    import urllib.request
    from decimal import Decimal

    from keel.core.exchange_info import ExchangeInfoError

    url = f"{_rest_url(config).rstrip('/')}/fapi/v1/exchangeInfo"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read(), parse_float=Decimal), f"GET {url}"
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as error:
        raise ExchangeInfoError(f"GET {url} failed ({error}); save the answer to a file and use --from") from error


def _rest_url(config: KeelConfig) -> str:
    rest, _ = config.binance.endpoints()
    return rest


@main.group()
def backup() -> None:
    """Back up and restore the account's database, latest snapshot and configuration."""


def _backup_options(command: Any) -> Any:
    command = click.option(
        "--dir", "backup_dir", type=click.Path(file_okay=False), help="Backup folder (default persistence.backup_dir)."
    )(command)
    command = click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), help="YAML file layered over config/."
    )(command)
    return click.option("--mode", type=click.Choice(["paper", "live"]), default="paper", show_default=True)(command)


def _backup_manager(mode: str, config_file: str | None, backup_dir: str | None) -> Any:
    from keel.integration.paper import backup_manager

    config = _load(mode, config_file, {"persistence.backup_dir": backup_dir} if backup_dir else None)
    return backup_manager(config)


@backup.command("create")
@_backup_options
@click.option("--keep", type=click.IntRange(min=1), help="Then keep only the newest N backups.")
@click.option("--max-age-days", type=click.FloatRange(min=0), help="Then delete backups older than this.")
def backup_create(
    mode: str, config_file: str | None, backup_dir: str | None, keep: int | None, max_age_days: float | None
) -> None:
    """Write a backup (consistent while a run trades), then apply the retention given."""
    from datetime import timedelta

    from keel.persistence.backup import BackupError

    manager = _backup_manager(mode, config_file, backup_dir)
    try:
        info = manager.create()
    except BackupError as error:
        _fail(f"backup failed: {error}", EXIT_FAILURE)
    click.echo(f"created {info.name} in {info.path} (journal sequence {info.journal_sequence})")
    max_age = None if max_age_days is None else timedelta(days=max_age_days)
    for name in manager.prune(keep=keep, max_age=max_age):
        click.echo(f"deleted {name} (retention)")


@backup.command("list")
@_backup_options
def backup_list(mode: str, config_file: str | None, backup_dir: str | None) -> None:
    """List the backups, oldest first."""
    manager = _backup_manager(mode, config_file, backup_dir)
    backups = manager.list()
    if not backups:
        click.echo(f"no backups in {manager.backup_dir}", err=True)
    for info in backups:
        size = sum(int(f["bytes"]) for f in info.files.values())
        created = info.created_at.isoformat()
        click.echo(f"{info.name}  {created}  {info.backend}  journal {info.journal_sequence}  {size} B")


@backup.command("verify")
@_backup_options
@click.argument("name")
def backup_verify(mode: str, config_file: str | None, backup_dir: str | None, name: str) -> None:
    """Re-check a backup's checksums and test-restore it into a scratch database."""
    from keel.persistence.backup import BackupError

    try:
        info = _backup_manager(mode, config_file, backup_dir).verify(name)
    except BackupError as error:
        _fail(f"backup refused: {error}", EXIT_FAILURE)
    click.echo(f"{info.name}: {len(info.files)} files match their SHA-256 and the database restores")


@backup.command("restore")
@_backup_options
@click.argument("name")
def backup_restore(mode: str, config_file: str | None, backup_dir: str | None, name: str) -> None:
    """Replace the account's database (and paper venue) with a backup; refused while a run holds the account."""
    from keel.persistence.backup import AccountInUseError, BackupError

    try:
        info = _backup_manager(mode, config_file, backup_dir).restore(name)
    except (BackupError, AccountInUseError, RetryLaterError) as error:
        _fail(f"restore refused: {error}", EXIT_FAILURE)
    click.echo(f"restored {info.name} (journal sequence {info.journal_sequence}); the next keel run recovers from it")


@main.command()
@click.argument("service_name")
@click.option("--version", "version", required=True, help="The image tag to run (of the service's repository).")
@click.option(
    "--strategy",
    default="rolling",
    show_default=True,
    help="rolling or recreate: both replace the one container in place (a service trades one account).",
)
@click.option("--image", help="A whole image reference to run instead of <repository>:<version>.")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True, help="Seconds.")
@click.option("--stop-grace", type=click.FloatRange(min=0), default=60.0, show_default=True, help="Seconds.")
def deploy(
    service_name: str, version: str, strategy: str, image: str | None, ready_timeout: float, stop_grace: float
) -> None:
    """Replace SERVICE_NAME's container by one of --version; roll back if it does not become healthy.

    Prints the result as JSON. Exit code 0: deployed or unchanged; 1: rolled
    back, or failed (then neither version runs); 2: refused, nothing changed.
    """
    from keel.operations import DeploymentError, DeploymentTools
    from keel.operations.containers import ContainerEngineError

    tools = DeploymentTools(ready_timeout_seconds=ready_timeout, stop_grace_seconds=stop_grace)
    try:
        result = asyncio.run(tools.deploy_service(service_name, version, strategy, image))
    except ValueError as error:
        _fail(f"usage error: {error}", EXIT_USAGE)
    except DeploymentError as error:
        _fail(f"deployment refused: {error}", EXIT_USAGE)
    except ContainerEngineError as error:
        _fail(f"deployment failed: {error}", EXIT_FAILURE)
    click.echo(result.model_dump_json())
    if result.status not in ("deployed", "unchanged"):
        sys.exit(EXIT_FAILURE)


main.add_command(tune)

if __name__ == "__main__":
    main()
