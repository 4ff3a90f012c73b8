"""``keel tune``: run or join a study, several local worker processes, and ``keel tune report``.

Kept here, next to the tuner, and attached to the ``keel`` command in
:mod:`keel.cli`. Optuna is imported only when a tuning command runs.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from keel.config import KeelConfig, load_config
from keel.core.errors import ConfigurationError, MalformedDataError

EXIT_FAILURE = 1
EXIT_USAGE = 2
OBJECTIVES = ("sharpe", "sortino", "calmar", "return", "pareto")
_POLL_SECONDS = 2.0


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"keel: {message}", err=True)
    sys.exit(code)


def _parse_space(values: tuple[str, ...]) -> dict[str, Any] | None:
    """Read ``NAME=LOW:HIGH`` and ``KEY=A,B`` (a choice) options into a parameter space."""
    space: dict[str, Any] = {}
    for text in values:
        name, _, bounds = text.partition("=")
        if name.strip() in space:
            _fail(f"--param {name.strip()} is given twice: give each name once", EXIT_USAGE)
        if ":" not in bounds and "," in bounds:
            space[name.strip()] = [_choice(item.strip()) for item in bounds.split(",")]
            continue
        low, _, high = bounds.partition(":")
        try:
            space[name.strip()] = (float(low), float(high))
        except ValueError:
            _fail(f"--param {text!r}: expected NAME=LOW:HIGH, e.g. fast_period=5:20", EXIT_USAGE)
    return space or None


def _choice(text: str) -> Any:
    """Read one choice as YAML would (``true``, ``3``, ``0.5`` or a string)."""
    import yaml

    return yaml.safe_load(text)


def _config(config_file: str | None, symbols: tuple[str, ...], start: str | None, end: str | None) -> KeelConfig:
    data: dict[str, Any] = {}
    chosen = tuple(s.strip().upper() for value in symbols for s in value.split(",") if s.strip())
    if chosen:
        data["symbols"] = chosen
    if start:
        data["start"] = start
    if end:
        data["end"] = end
    try:
        return load_config("backtest", config_file, overrides={"data": data}, overrides_source="command line")
    except ConfigurationError as error:
        _fail(f"configuration error: {error}", EXIT_USAGE)


@click.group(invoke_without_command=True)
@click.option("--strategy", help="Strategy to tune (trend_following, mean_reversion, range_trading, ...).")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True, help="Trials in the study.")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="sharpe", show_default=True)
@click.option(
    "--param", "params", multiple=True, help="Search NAME=LOW:HIGH or KEY=A,B only (repeatable); default: all."
)
@click.option("--storage", help="Optuna storage URL (default tuning.storage: sqlite:///runs/optuna.db).")
@click.option("--study", "study_name", help="Study name (default {strategy}-{objective}); workers join by name.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Local worker processes.")
@click.option("--output", "output_dir", type=click.Path(file_okay=False), help="Folder for report.html, trials.csv.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file layered over config/.")
@click.option("--symbols", multiple=True, help="Symbols to trade (comma-separated or repeated).")
@click.option("--start", help="First bar time, UTC (e.g. 2025-05-10).")
@click.option("--end", help="End time, exclusive, UTC.")
@click.pass_context
def tune(ctx: click.Context, **options: Any) -> None:
    """Tune a strategy with Optuna on walk-forward backtests; write report.html, trials.csv, best.yaml.

    Every trial is a full backtest per walk-forward fold; the winner is re-run
    on a held-out window. Several processes (--workers, or `keel tune` on other
    machines with the same PostgreSQL --storage and --study) share one study.
    Interrupted studies resume when the command is run again.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not options["strategy"]:
        _fail("keel tune needs --strategy (e.g. --strategy trend_following)", EXIT_USAGE)
    if not options["output_dir"]:
        _fail("keel tune needs --output DIR", EXIT_USAGE)
    config = _config(options["config_file"], options["symbols"], options["start"], options["end"])
    from keel.core.log import configure_logging

    configure_logging(config.logging.level, config.logging.format)
    try:
        _run(config, options)
    except MalformedDataError as error:
        _fail(f"data error: {error}", EXIT_FAILURE)
    except ValueError as error:
        _fail(str(error), EXIT_USAGE)


def _run(config: KeelConfig, options: dict[str, Any]) -> None:
    import optuna

    from keel.optimization.objectives import Objective
    from keel.optimization.report import write_study_outputs
    from keel.optimization.tuner import HyperparameterTuner, count_trials, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    tuner = HyperparameterTuner(config, storage=options["storage"], study_name=options["study_name"])
    space = _parse_space(options["params"])
    strategy, trials = options["strategy"], options["trials"]
    objective = Objective.parse(options["objective"], config.tuning.max_drawdown)
    storage = open_storage(tuner.storage_url)
    study = tuner.create_study(strategy, objective, storage=storage)
    tuner.plan()
    tuner.preload()
    job = (strategy, space, options["objective"], trials)
    if options["workers"] == 1:
        with _progress_bar(trials, count_trials(study)) as update:
            tuner.optimize(*job, callbacks=[lambda s, _t: update(s)], finish=False)
    else:
        done = count_trials(study)
        # The workers are forked from here: no open database connection, no thread may be inherited.
        storage.engine.dispose()
        _run_workers(tuner, job, options["workers"], trials - done, study, done)
    study = optuna.load_study(study_name=study.study_name, storage=tuner.storage_url)
    result = tuner.finish(study, strategy)
    folder = write_study_outputs(study, result, options["output_dir"])
    click.echo(_summary_line(result))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.cache.get("health") == "DEGRADED":
        click.echo(f"warning: the backtest cache ({result.cache['backend']}) was unreachable; trials ran uncached")
    click.echo(f"report written to {folder / 'report.html'}; apply with keel backtest --config {folder / 'best.yaml'}")


def _run_workers(tuner: Any, job: tuple[Any, ...], workers: int, remaining: int, study: Any, done: int) -> None:
    """Fork ``workers`` processes sharing the remaining trials exactly; wait for them, the parent idle.

    Forked from a parent that has imported everything and loaded the data,
    a worker starts at once and its trials share the parent's prepared arrays
    (copy-on-write) instead of importing and parsing again. The workers draw
    trials from one shared count (:class:`TrialClaims`): a worker whose trials
    ran faster takes the next one instead of idling while another works
    through a fixed share.
    """
    context = multiprocessing.get_context("fork")
    claims = TrialClaims(context, remaining)
    processes = [
        context.Process(target=_work, args=(tuner, job, index, claims), name=f"keel-tune-{index}")
        for index in range(min(workers, remaining))
    ]
    # Objects the parent holds are left out of the workers' collections, so collecting does not copy their pages.
    gc.freeze()
    for process in processes:
        process.start()
    gc.unfreeze()
    try:
        with _progress_bar(job[3], done) as update:
            alive = processes
            while alive:
                alive[0].join(_POLL_SECONDS)
                update(study)
                alive = [process for process in processes if process.is_alive()]
    finally:
        for process in processes:
            process.join()
    failed = [process.exitcode for process in processes if process.exitcode]
    if failed:
        _fail(f"{len(failed)} tuning workers exited with an error (codes {failed}); see their output", EXIT_FAILURE)


class TrialClaims:
    """The trials left for a set of local workers: each claim takes one, under a lock, until none is left."""

    def __init__(self, context: Any, trials: int) -> None:
        self._left = context.Value("i", trials)

    def __call__(self) -> bool:
        """Take one trial; return False when all are taken."""
        with self._left.get_lock():
            if self._left.value <= 0:
                return False
            self._left.value -= 1
            return True


def _work(tuner: Any, job: tuple[Any, ...], index: int, claims: TrialClaims) -> None:
    """One worker process: run trials of the study while ``claims`` has some (the held-out re-run is the parent's)."""
    strategy, space, objective, trials = job
    tuner.optimize(strategy, space, objective, trials, worker_index=index, claim=claims, finish=False)


@contextmanager
def _progress_bar(total: int, done: int) -> Iterator[Any]:
    """Yield ``update(study)``: a rich bar of trials done, best so far and ETA on a terminal."""
    from keel.optimization.tuner import count_finished

    if not sys.stderr.isatty():
        yield lambda study: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("tuning"), BarColumn(), MofNCompleteColumn(), TextColumn("best {task.fields[best]}"))
    with Progress(*columns, TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("tune", total=total, completed=done, best="-")

        def update(study: Any) -> None:
            finished, best = count_finished(study)
            bar.update(task, completed=finished, best="-" if best is None else f"{best:.4g}")

        yield update


def _summary_line(result: Any) -> str:
    return json.dumps(
        {
            "study": result.study_name,
            "holdout_return": result.holdout["total_return"],
            "holdout_sharpe": result.holdout["sharpe_ratio"],
            "holdout_max_drawdown": result.holdout["max_drawdown"],
            "deflated_sharpe": result.deflated_sharpe,
            "pbo": result.pbo,
            "trials": result.trials_run,
            "best_params": result.best_params,
        }
    )


@tune.command("report")
@click.option("--storage", help="Optuna storage URL (default tuning.storage).")
@click.option("--study", "study_name", required=True, help="Name of the stored study.")
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False), help="Folder for the report.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file layered over config/.")
def report(storage: str | None, study_name: str, output_dir: str, config_file: str | None) -> None:
    """Rebuild report.html, trials.csv and best.yaml of a stored study (held-out re-run included)."""
    import optuna

    from keel.optimization.report import write_study_outputs
    from keel.optimization.tuner import HyperparameterTuner, config_of_study

    config = _config(config_file, (), None, None)
    url = storage or config.tuning.storage
    try:
        study = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        _fail(f"no study named {study_name!r} in {url}", EXIT_USAGE)
    tuner = HyperparameterTuner(config_of_study(study, config), storage=url, study_name=study_name)
    try:
        result = tuner.finish(study)
    except (ValueError, MalformedDataError) as error:
        _fail(str(error), EXIT_FAILURE)
    folder = write_study_outputs(study, result, output_dir)
    click.echo(_summary_line(result))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"report written to {folder / 'report.html'}")


@tune.command("apply")
@click.argument("best_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Control API of the running session.")
@click.option(
    "--split",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Start an A/B split: the tuned parameters get this share of the capital, the running ones the rest.",
)
def apply(best_file: str, url: str, split: float | None) -> None:
    """Send a tuned layer (DIR/best.yaml) to a running paper or live session; it applies at the next bar.

    The token comes from KEEL_API_TOKEN. Only what can change at run time is
    sent (strategy parameters, risk limits); the strategy selection of the
    layer is left out. Roll back with POST /api/v1/config/rollback.
    """
    import os

    values = run_time_values(best_file)
    token = os.environ.get("KEEL_API_TOKEN")
    if not token:
        _fail("keel tune apply needs the session's API token in KEEL_API_TOKEN", EXIT_USAGE)
    staged = _post(f"{url.rstrip('/')}/api/v1/config/apply", {"values": values, "split": split}, token)
    what = f"an A/B split ({split:.0%} of the capital to the tuned parameters)" if split else "the tuned parameters"
    click.echo(f"staged change {staged['change_id']}: {what}, applied at the next bar boundary")
    click.echo(json.dumps(staged["values"], sort_keys=True))


def run_time_values(best_file: str) -> dict[str, Any]:
    """Return the dotted keys of a tuned layer that a running system can change (the strategy selection left out)."""
    import yaml

    try:
        layer = yaml.safe_load(Path(best_file).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        _fail(f"{best_file}: not YAML: {error}", EXIT_USAGE)
    if not isinstance(layer, dict):
        _fail(f"{best_file}: expected a configuration layer (a mapping)", EXIT_USAGE)
    values = {key: value for key, value in _flatten(layer) if key not in ("strategy.name", "strategy.strategies")}
    if not values:
        _fail(f"{best_file}: no tuned values to apply", EXIT_USAGE)
    return values


def _flatten(layer: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in layer.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _post(url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    """POST JSON with the bearer token; return the JSON answer, or fail with the API's error message."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = error.reason
        _fail(f"{url} refused the change ({error.code}): {message}", EXIT_FAILURE)
    except urllib.error.URLError as error:
        _fail(f"cannot reach {url}: {error.reason}; is the session running with its web app?", EXIT_FAILURE)
