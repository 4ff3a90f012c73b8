"""The study report: report.html (self-contained, inline SVG), trials.csv and best.yaml.

report.html leads with the winner's result on the held-out window, then the
deflated Sharpe ratio and PBO, the walk-forward table, and the charts:
optimization history, parameter importances, slices, parallel coordinates,
the return vs drawdown Pareto front and the winner's equity in and out of
sample. It loads nothing from the network.
"""

from __future__ import annotations

import csv
import html
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from keel.optimization.objectives import Objective
from keel.optimization.space import nest
from keel.optimization.tuner import TuningResult

_WIDTH, _HEIGHT, _PAD = 560, 260, 40
_TrialState = optuna.trial.TrialState


def write_study_outputs(study: optuna.Study, result: TuningResult, folder: str | Path) -> Path:
    """Write report.html, trials.csv and best.yaml into ``folder``; return it."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_trials_csv(study, out / "trials.csv")
    write_best_yaml(result, out / "best.yaml")
    (out / "report.html").write_text(render_report(study, result), encoding="utf-8")
    return out


def best_layer(result: TuningResult) -> dict[str, Any]:
    """Return the winner as a configuration layer: the strategy selection and every tuned key."""
    layer = nest(result.best_params)
    strategy = layer.setdefault("strategy", {})
    strategy.update(result.base_layer.get("strategy", {}))
    return layer


def write_best_yaml(result: TuningResult, path: Path) -> None:
    """Write the winner as a YAML configuration layer ``keel backtest --config`` accepts."""
    header = (
        f"# Tuned by keel tune: study {result.study_name}, objective {result.objective}, "
        f"{result.trials_run} trials.\n# Held-out {result.holdout_window[0]} to {result.holdout_window[1]}: "
        f"return {result.holdout.get('total_return', 0):.4%}, Sharpe {result.holdout.get('sharpe_ratio', 0):.2f}.\n"
    )
    path.write_text(header + yaml.safe_dump(best_layer(result), sort_keys=True), encoding="utf-8")


def write_trials_csv(study: optuna.Study, path: Path) -> None:
    """Write one row per trial: number, state, values, parameters, duration, worker, error."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({name for t in trials for name in t.params})
    value_columns = [f"value_{i}" for i in range(len(study.directions))]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["number", "state", *value_columns, *params, "duration_seconds", "worker", "error"])
        for t in trials:
            values = list(t.values) if t.values is not None else [""] * len(value_columns)
            duration = t.duration.total_seconds() if t.duration is not None else ""
            writer.writerow(
                [
                    t.number,
                    t.state.name,
                    *values,
                    *(t.params.get(name, "") for name in params),
                    duration,
                    t.user_attrs.get("worker", ""),
                    t.user_attrs.get("error", ""),
                ]
            )


def render_report(study: optuna.Study, result: TuningResult) -> str:
    """Return the HTML report of a study."""
    objective = Objective.parse(result.objective)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state is _TrialState.COMPLETE]
    scores = {t.number: objective.scalar(tuple(t.values)) for t in complete}
    params = sorted({name for t in complete for name in t.params})
    sections = [
        _headline(result),
        _section("Walk-forward", _walk_forward_table(result)),
        _section("Optimization history", _history(scores)),
        _section("Parameter importances", _importances(study, objective)),
        _section("Slices", "".join(_slice(complete, scores, name) for name in params)),
        _section("Parallel coordinates", _parallel(complete, scores, params)),
        _section("Pareto front: out-of-sample return vs drawdown", _pareto(complete)),
        _section(
            "Winner's equity",
            _line_chart(result.equity_in_sample, "in sample (tuning folds)")
            + _line_chart(result.equity_holdout, "held out"),
        ),
    ]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>keel tune: "
        f"{html.escape(result.study_name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Study {html.escape(result.study_name)}</h1>{''.join(sections)}</body></html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "svg{background:#fafafa;border:1px solid #ddd;margin:4px}.lead{font-size:1.2em;background:#eef6ee;padding:1em}"
    "text{font-size:11px}.warning{font-size:1.1em;background:#fbeaea;border-left:4px solid #c33;padding:.6em 1em}"
)


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>{body or '<p>not enough completed trials</p>'}"


def _headline(result: TuningResult) -> str:
    h = result.holdout
    pbo = "n/a" if result.pbo is None else f"{result.pbo:.2f}"
    params = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in sorted(result.best_params.items())
    )
    warnings = "".join(f"<p class='warning'><b>Warning:</b> {html.escape(w)}</p>" for w in result.warnings)
    return (
        f"{warnings}<div class='lead'><b>Held-out window {html.escape(result.holdout_window[0])} to "
        f"{html.escape(result.holdout_window[1])} (never seen in tuning):</b> return {h.get('total_return', 0):.4%}, "
        f"Sharpe {h.get('sharpe_ratio', 0):.3f}, Sortino {h.get('sortino_ratio', 0):.3f}, "
        f"Calmar {h.get('calmar_ratio', 0):.3f}, max drawdown {h.get('max_drawdown', 0):.4%}, "
        f"trades {int(h.get('n_trades', 0))}.<br>Deflated Sharpe ratio {result.deflated_sharpe:.3f} "
        f"(over {result.trials_run} trials run) · PBO {pbo} · objective {html.escape(result.objective)} "
        f"(out-of-sample score of the winner {result.best_value:.4f}) · trials: {result.trials_complete} complete, "
        f"{result.trials_pruned} pruned, {result.trials_failed} failed, "
        f"{result.trials_without_trades} without a trade.</div>"
        f"<h2>Winner's parameters</h2><table>{params}</table>"
    )


def _walk_forward_table(result: TuningResult) -> str:
    if not result.walk_forward:
        return ""
    head = "".join(f"<th>{c}</th>" for c in result.walk_forward[0])
    rows = "".join(
        "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row.values()) + "</tr>" for row in result.walk_forward
    )
    return (
        "<p>Per fold, the trial with the best train score (what a walk-forward run picks) and its test score.</p>"
        f"<table><tr>{head}</tr>{rows}</table>"
    )


def _history(scores: dict[int, float]) -> str:
    if not scores:
        return ""
    numbers = sorted(scores)
    best, best_line = -math.inf, []
    for n in numbers:
        best = max(best, scores[n])
        best_line.append((float(n), best))
    points = [(float(n), scores[n]) for n in numbers]
    return _plot(points, "trial", "score", line=best_line)


def _importances(study: optuna.Study, objective: Objective) -> str:
    complete = study.get_trials(deepcopy=False, states=(_TrialState.COMPLETE,))
    if len(complete) < 2 or len({tuple(sorted(t.params.items())) for t in complete}) < 2:
        return ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                study, target=lambda t: objective.scalar(tuple(t.values))
            )
    except (RuntimeError, ValueError) as error:
        return f"<p>importances unavailable: {html.escape(str(error))}</p>"
    bars = []
    for i, (name, value) in enumerate(importances.items()):
        width = 300 * value
        bars.append(
            f"<rect x='200' y='{10 + 22 * i}' width='{width:.1f}' height='16' fill='#4a7'/>"
            f"<text x='195' y='{22 + 22 * i}' text-anchor='end'>{html.escape(name.split('.')[-1])}</text>"
            f"<text x='{205 + width:.1f}' y='{22 + 22 * i}'>{value:.3f}</text>"
        )
    return f"<svg width='{_WIDTH}' height='{20 + 22 * len(importances)}'>{''.join(bars)}</svg>"


def _numeric(trials: Sequence[optuna.trial.FrozenTrial], name: str) -> dict[int, float]:
    """Return each trial's value of ``name`` as a number; choices become their rank among the values seen."""
    values = {t.number: t.params[name] for t in trials if name in t.params}
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()):
        return {n: float(v) for n, v in values.items()}
    ranks = {v: float(i) for i, v in enumerate(sorted({str(v) for v in values.values()}))}
    return {n: ranks[str(v)] for n, v in values.items()}


def _slice(trials: Sequence[optuna.trial.FrozenTrial], scores: dict[int, float], name: str) -> str:
    points = [(x, scores[n]) for n, x in _numeric(trials, name).items()]
    return _plot(points, name.split(".")[-1], "score", width=360)


def _parallel(trials: Sequence[optuna.trial.FrozenTrial], scores: dict[int, float], params: list[str]) -> str:
    if len(trials) < 2 or not params:
        return ""
    axes = [*params, "score"]
    numeric = {name: _numeric(trials, name) for name in params}
    columns = {name: [numeric[name].get(t.number, np.nan) for t in trials] for name in params}
    columns["score"] = [scores[t.number] for t in trials]
    width = max(_WIDTH, 140 * len(axes))
    step = (width - 2 * _PAD) / (len(axes) - 1)
    span = {n: (np.nanmin(v), np.nanmax(v)) for n, v in columns.items()}
    low_score, high_score = span["score"]
    lines = []
    for row in range(len(trials)):
        coordinates = []
        for i, name in enumerate(axes):
            low, high = span[name]
            y = 0.5 if high == low else (columns[name][row] - low) / (high - low)
            coordinates.append(f"{_PAD + i * step:.1f},{_HEIGHT - _PAD - y * (_HEIGHT - 2 * _PAD):.1f}")
        shade = 0.5 if high_score == low_score else (columns["score"][row] - low_score) / (high_score - low_score)
        color = f"rgb({int(200 * (1 - shade))},{int(80 + 120 * shade)},90)"
        lines.append(f"<polyline fill='none' stroke='{color}' stroke-opacity='0.7' points='{' '.join(coordinates)}'/>")
    labels = "".join(
        f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{_PAD}' y2='{_HEIGHT - _PAD}' stroke='#999'/>"
        f"<text x='{x:.1f}' y='{_HEIGHT - 10}' text-anchor='middle'>{html.escape(n.split('.')[-1])}</text>"
        for x, n in ((_PAD + i * step, n) for i, n in enumerate(axes))
    )
    return f"<svg width='{width}' height='{_HEIGHT}'>{labels}{''.join(lines)}</svg>"


def _pareto(trials: Sequence[optuna.trial.FrozenTrial]) -> str:
    points = []
    for t in trials:
        folds = t.user_attrs.get("folds", [])
        if folds:
            points.append(
                (max(f["test_drawdown"] for f in folds), float(np.mean([f["test_return"] for f in folds])), t.number)
            )
    front = [p for p in points if not any(q[0] <= p[0] and q[1] >= p[1] and q[:2] != p[:2] for q in points)]
    front_numbers = {p[2] for p in front}
    return _plot(
        [(p[0], p[1]) for p in points],
        "max out-of-sample drawdown",
        "mean out-of-sample return",
        highlight=[(p[0], p[1]) for p in points if p[2] in front_numbers],
        line=sorted((p[0], p[1]) for p in front),
    )


def _line_chart(values: Sequence[float], label: str) -> str:
    if len(values) < 2:
        return ""
    stride = max(1, len(values) // 400)
    points = [(float(i), float(v)) for i, v in enumerate(values[::stride])]
    return _plot([], f"{label} (bar / {stride})", "equity", line=points)


def _plot(
    points: Sequence[tuple[float, float]],
    x_label: str,
    y_label: str,
    *,
    line: Sequence[tuple[float, float]] = (),
    highlight: Sequence[tuple[float, float]] = (),
    width: int = _WIDTH,
) -> str:
    everything = [*points, *line, *highlight]
    finite = [(x, y) for x, y in everything if math.isfinite(x) and math.isfinite(y)]
    if not finite:
        return ""
    xs, ys = [p[0] for p in finite], [p[1] for p in finite]
    x_low, x_high, y_low, y_high = min(xs), max(xs), min(ys), max(ys)

    def place(x: float, y: float) -> tuple[float, float]:
        fx = 0.5 if x_high == x_low else (x - x_low) / (x_high - x_low)
        fy = 0.5 if y_high == y_low else (y - y_low) / (y_high - y_low)
        return _PAD + fx * (width - 2 * _PAD), _HEIGHT - _PAD - fy * (_HEIGHT - 2 * _PAD)

    parts = [
        f"<line x1='{_PAD}' y1='{_HEIGHT - _PAD}' x2='{width - _PAD}' y2='{_HEIGHT - _PAD}' stroke='#999'/>",
        f"<line x1='{_PAD}' y1='{_PAD}' x2='{_PAD}' y2='{_HEIGHT - _PAD}' stroke='#999'/>",
        f"<text x='{width / 2}' y='{_HEIGHT - 8}' text-anchor='middle'>{html.escape(x_label)}</text>",
        f"<text x='4' y='{_PAD - 8}'>{html.escape(y_label)} [{_fmt(y_low)}, {_fmt(y_high)}]</text>",
        f"<text x='{width - _PAD}' y='{_HEIGHT - _PAD + 14}' text-anchor='end'>{_fmt(x_low)} to {_fmt(x_high)}</text>",
    ]
    if line:
        coordinates = " ".join("{:.1f},{:.1f}".format(*place(x, y)) for x, y in line)
        parts.append(f"<polyline fill='none' stroke='#27c' stroke-width='1.5' points='{coordinates}'/>")
    for x, y in points:
        if math.isfinite(x) and math.isfinite(y):
            cx, cy = place(x, y)
            parts.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='3' fill='#555' fill-opacity='0.6'/>")
    for x, y in highlight:
        cx, cy = place(x, y)
        parts.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='4' fill='#d33'/>")
    return f"<svg width='{width}' height='{_HEIGHT}'>{''.join(parts)}</svg>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))
