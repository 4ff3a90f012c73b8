"""report.html: one self-contained page a person reads after a backtest.

The page needs no network and no script: charts are inline SVG drawn here,
tables are plain HTML. It shows the run's headline metrics; the equity curve,
drawdown and gross exposure over time; gross P&L split into net, fees and
funding, per symbol and per strategy (a combined view's fills booked to the
strategies whose signals caused them, see
:class:`~keel.portfolio.attribution.PerformanceAttributor`); turnover;
monthly returns; the regime timeline of each symbol; Brinson-Fachler
attribution over the run; and the trade and transaction-cost tables
(implementation shortfall against the arrival price).

The same run writes the same bytes: nothing on the page depends on when or
where it was written.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.core.messages import MarketRegime, RegimeChanged
from keel.execution.tca import TCA_COLUMNS, tca_row

if TYPE_CHECKING:
    from keel.backtest.engine import BacktestResult

_WIDTH, _HEIGHT, _PAD = 960, 220, 44
_REGIME_COLORS = {
    MarketRegime.TRENDING: "#2b8a3e",
    MarketRegime.MEAN_REVERTING: "#1971c2",
    MarketRegime.HIGH_VOLATILITY: "#e03131",
    MarketRegime.LOW_VOLATILITY: "#f08c00",
    MarketRegime.UNKNOWN: "#adb5bd",
}
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#212529}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dee2e6}
.sub{color:#6c757d;margin:0 0 16px}.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:8px}
.card{border:1px solid #dee2e6;border-radius:6px;padding:8px 10px}.card b{display:block;font-size:18px}
.card span{color:#6c757d;font-size:12px}table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{padding:3px 6px;border-bottom:1px solid #f1f3f5;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f8f9fa;position:sticky;top:0}
.scroll{max-height:420px;overflow:auto;border:1px solid #dee2e6}.pos{color:#2b8a3e}.neg{color:#c92a2a}
svg{display:block;width:100%;height:auto}.note{color:#6c757d;font-size:12.5px}
.legend span{display:inline-block;margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;
height:10px;margin-right:4px;border-radius:2px}
"""


def write_report(folder: Path, result: BacktestResult) -> Path:
    """Write ``report.html`` of a finished backtest into ``folder``; return its path."""
    path = folder / "report.html"
    path.write_text(render_report(result), encoding="utf-8")
    return path


def render_report(result: BacktestResult) -> str:
    """Return the report page of a finished backtest."""
    pipeline, metrics = result.pipeline, result.metrics
    points = pipeline.recorder.equity
    times = np.array([p.ts for p in points], dtype=np.int64)
    equity = np.array([float(p.equity) for p in points], dtype=np.float64)
    exposure = np.array([float(p.gross_exposure) for p in points], dtype=np.float64)
    sections = [
        _header(metrics, result),
        _section("Equity", _line_chart(times, equity, "equity (USDT)", "#1971c2")),
        _section("Drawdown", _line_chart(times, _drawdown(equity) * 100, "drawdown (%)", "#c92a2a")),
        _section("Gross exposure", _line_chart(times, _ratio(exposure, equity), "gross exposure / equity", "#5f3dc4")),
        _section("Profit and loss: gross, costs, net", _pnl_tables(result)),
        _section("Turnover", _turnover(result, equity)),
        _section("Monthly returns", _monthly_returns(times, equity)),
        _section("Regimes", _regime_timeline(pipeline.recorder.regimes, metrics, times)),
        _section("Attribution (Brinson-Fachler, linked over the run)", _attribution(result)),
        _section("Transaction costs (per parent order)", _tca(result)),
        _section("Trades", _trades(result)),
    ]
    title = f"keel backtest: {', '.join(metrics.get('symbols', []))}"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_text(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )


# --- sections -------------------------------------------------------------------------------------


def _header(metrics: Mapping[str, Any], result: BacktestResult) -> str:
    config = result.config
    cards = [
        ("total return", _percent(metrics.get("total_return", 0.0))),
        ("Sharpe ratio", f"{metrics.get('sharpe_ratio', 0.0):.2f}"),
        ("Sortino ratio", f"{metrics.get('sortino_ratio', 0.0):.2f}"),
        ("max drawdown", _percent(metrics.get("max_drawdown", 0.0))),
        ("final equity", f"{metrics.get('final_equity', 0.0):,.2f}"),
        ("trades (fills)", str(metrics.get("n_trades", 0))),
        ("fees paid", f"{metrics.get('fees_paid', 0.0):,.2f}"),
        ("funding paid", f"{metrics.get('funding_paid', 0.0):,.2f}"),
    ]
    notes = []
    if config.data.funding is None:
        notes.append("No funding data (data.funding: none): funding is zero in this run.")
    for name, reason in sorted(metrics.get("strategies_excluded", {}).items()):
        notes.append(f"{name} was kept out: {reason}.")
    for name, reason in sorted(metrics.get("strategies_not_ready", {}).items()):
        notes.append(
            f"{name} never formed a view: it {reason} ({config.data.bar_interval} bars; its periods are in bars): "
            "run a longer span, shorter bars or more warm-up (strategy.warmup_bars), or shorten its periods."
        )
    if metrics.get("handler_errors"):
        notes.append(f"{metrics['handler_errors']} handler errors during the run: see the log.")
    if metrics.get("strategy_errors"):
        off = "; ".join(f"{name} off for {', '.join(s)}" for name, s in metrics.get("strategies_disabled", {}).items())
        notes.append(f"The strategies raised {metrics['strategy_errors']} times ({off or 'none switched off'}).")
    if metrics.get("views_before_history") and not metrics.get("n_orders"):
        bars = metrics.get("bars_processed", 0) // max(len(metrics.get("symbols", [])), 1)
        notes.append(
            f"No order: {metrics['views_before_history']} view changes came before any symbol had "
            f"portfolio.min_history_bars ({config.portfolio.min_history_bars}) bars, which the optimizer needs "
            f"to weigh it; the run had about {bars} bars a symbol: run a longer span or shorter bars, "
            "or lower portfolio.min_history_bars."
        )
    if metrics.get("views_not_worth_costs") and not metrics.get("n_orders"):
        notes.append(
            f"No order: {metrics['views_not_worth_costs']} times a view's edge did not pay its trading costs "
            "(see the README's Trading costs)."
        )
    subtitle = (
        f"{metrics.get('start', '')} to {metrics.get('end', '')}, {config.data.bar_interval} bars, "
        f"capital {metrics.get('initial_capital', 0.0):,.2f} USDT, {metrics.get('bars_processed', 0)} bars, "
        f"strategy {config.strategy.name}, seed {config.run.seed}"
    )
    card_html = "".join(f'<div class="card"><b>{_text(v)}</b><span>{_text(k)}</span></div>' for k, v in cards)
    note_html = "".join(f'<p class="note">{_text(n)}</p>' for n in notes)
    return (
        f"<h1>keel backtest: {_text(', '.join(metrics.get('symbols', [])))}</h1>"
        f'<p class="sub">{_text(subtitle)}</p><div class="cards">{card_html}</div>{note_html}'
    )


def _pnl_tables(result: BacktestResult) -> str:
    pipeline = result.pipeline
    by_symbol = pipeline.positions.pnl_by_symbol()
    rows = []
    totals = [Decimal(0)] * 4
    for symbol, pnl in by_symbol.items():
        gross = pnl.realized + pnl.unrealized
        values = (gross, pnl.fees, -pnl.funding, pnl.total)
        totals = [t + v for t, v in zip(totals, values, strict=True)]
        rows.append([symbol, *_pnl_cells(*(float(v) for v in values))])
    rows.append(["total", *_pnl_cells(*(float(v) for v in totals))])
    header = ("symbol", "gross P&L", "fees", "funding paid", "net P&L")
    symbol_table = _table(header, rows)
    bars = _bar_chart([r[0] for r in rows[:-1]], [float(p.realized + p.unrealized) for p in by_symbol.values()])
    strategy_table = ""
    if pipeline.attribution is not None:
        by_strategy = pipeline.attribution.pnl_by_strategy()
        strategy_rows = [
            [name, *_pnl_cells(*(v[key] for key in ("gross", "fees", "funding_paid", "net")))]
            for name, v in by_strategy.items()
        ]
        strategy_table = (
            "<h3>By strategy</h3><p class=note>Fills of the combined view are booked to the strategies whose "
            "signals caused them: reductions to the strategies holding the position, additions to the strategies "
            "pointing the fill's way (pro rata to their contributions).</p>"
            + _table(("strategy", "gross P&L", "fees", "funding paid", "net P&L"), strategy_rows)
        )
    return f"<h3>By symbol</h3>{bars}{symbol_table}{strategy_table}"


def _turnover(result: BacktestResult, equity: np.ndarray) -> str:
    fills = result.pipeline.recorder.fills
    notional: dict[str, float] = {}
    maker: dict[str, float] = {}
    for fill in fills:
        value = float(fill.last_quantity * fill.last_price)
        notional[fill.symbol] = notional.get(fill.symbol, 0.0) + value
        if fill.liquidity_side.value == "MAKER":
            maker[fill.symbol] = maker.get(fill.symbol, 0.0) + value
    average = float(equity.mean()) if len(equity) else 0.0
    rows = [
        [s, f"{v:,.2f}", _ratio_text(v, average), _percent(maker.get(s, 0.0) / v if v else 0.0)]
        for s, v in sorted(notional.items())
    ]
    total = sum(notional.values())
    rows.append(
        ["total", f"{total:,.2f}", _ratio_text(total, average), _percent(sum(maker.values()) / total if total else 0.0)]
    )
    return _table(("symbol", "traded notional", "turnover (x average equity)", "maker share"), rows)


def _monthly_returns(times: np.ndarray, equity: np.ndarray) -> str:
    if len(equity) < 2:
        return '<p class="note">No equity curve.</p>'
    months = [datetime.fromtimestamp(int(t) // 1_000_000_000, tz=UTC).strftime("%Y-%m") for t in times]
    rows = []
    start = float(equity[0])
    for index, month in enumerate(months):
        last = index + 1 == len(months) or months[index + 1] != month
        if last:
            end = float(equity[index])
            rows.append([month, _signed(end - start), _percent(end / start - 1.0 if start else 0.0)])
            start = end
    return _table(("month", "P&L", "return"), rows)


def _regime_timeline(regimes: Sequence[RegimeChanged], metrics: Mapping[str, Any], times: np.ndarray) -> str:
    if len(times) < 2:
        return '<p class="note">No bars.</p>'
    symbols = list(metrics.get("symbols", []))
    first, last = int(times[0]), int(times[-1])
    span = max(1, last - first)
    row_height, label = 18, 90
    height = row_height * max(1, len(symbols)) + 6
    shapes = []
    for row, symbol in enumerate(symbols):
        changes = [r for r in regimes if r.symbol == symbol]
        current, since = MarketRegime.UNKNOWN, first
        y = 3 + row * row_height
        for change in [*changes, None]:
            until = last if change is None else min(max(change.ts_event, first), last)
            if until > since:
                x0 = label + (since - first) / span * (_WIDTH - label)
                width = max(0.5, (until - since) / span * (_WIDTH - label))
                shapes.append(
                    f'<rect x="{x0:.1f}" y="{y}" width="{width:.1f}" height="{row_height - 4}" '
                    f'fill="{_REGIME_COLORS[current]}"><title>{_text(symbol)} {current.value}</title></rect>'
                )
            if change is not None:
                current, since = change.regime, until
        shapes.append(f'<text x="0" y="{y + row_height - 7}" font-size="11">{_text(symbol)}</text>')
    legend = "".join(
        f'<span><i style="background:{color}"></i>{regime.value}</span>' for regime, color in _REGIME_COLORS.items()
    )
    svg = f'<svg viewBox="0 0 {_WIDTH} {height}" role="img" aria-label="regimes">{"".join(shapes)}</svg>'
    return f'{svg}<div class="legend">{legend}</div>'


def _attribution(result: BacktestResult) -> str:
    attribution = result.pipeline.attribution
    if attribution is None:
        return '<p class="note">Attribution was not wired in this run.</p>'
    summary = attribution.summary()
    head = _table(
        ("", "portfolio", "benchmark", "active", "allocation", "selection", "interaction"),
        [
            [
                "run",
                _percent(summary["portfolio_return"]),
                _percent(summary["benchmark_return"]),
                _percent(summary["active_return"]),
                _percent(summary["asset_allocation"]),
                _percent(summary["security_selection"]),
                _percent(summary["interaction_effect"]),
            ]
        ],
    )
    parts = [head]
    for title, key in (("By symbol", "by_symbol"), ("By strategy", "by_strategy")):
        rows = [
            [name, *(_percent(v[k]) for k in ("contribution", "allocation", "selection", "interaction", "total"))]
            for name, v in summary[key].items()
        ]
        header = ("name", "contribution", "allocation", "selection", "interaction", "total effect")
        parts.append(f"<h3>{title}</h3>{_table(header, rows)}")
    return "".join(parts)


def _tca(result: BacktestResult) -> str:
    rows = [tca_row(execution) for execution in result.pipeline.recorder.executions]
    if not rows:
        return '<p class="note">No parent order finished.</p>'
    columns = [c for c in TCA_COLUMNS if c not in ("parent_order_id", "reason")]
    body = [[_cell(row[c]) for c in columns] for row in rows]
    shortfall = [
        float(bps) for row in rows if isinstance(bps := row["implementation_shortfall_bps"], int | float | Decimal)
    ]
    average = f"{np.mean(shortfall):.2f}" if shortfall else "n/a"
    note = f'<p class="note">Average implementation shortfall against the arrival price: {average} bps.</p>'
    return note + f'<div class="scroll">{_table(columns, body)}</div>'


def _trades(result: BacktestResult) -> str:
    fills = result.pipeline.recorder.fills
    if not fills:
        return '<p class="note">No fills.</p>'
    rows = [
        [
            datetime.fromtimestamp(f.ts_event // 1_000_000_000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S"),
            f.symbol,
            f.side.value,
            str(f.last_quantity),
            str(f.last_price),
            str(f.commission),
            f.liquidity_side.value,
            f.client_order_id,
        ]
        for f in fills
    ]
    header = ("time (UTC)", "symbol", "side", "quantity", "price", "fee", "liquidity", "order")
    return f'<div class="scroll">{_table(header, rows)}</div>'


# --- charts and cells ---------------------------------------------------------------------------


def _line_chart(times: np.ndarray, values: np.ndarray, label: str, color: str) -> str:
    """Return an SVG line chart of values over time, axis labels at the ends."""
    if len(values) < 2:
        return '<p class="note">Not enough points to draw.</p>'
    low, high = float(np.min(values)), float(np.max(values))
    if high == low:
        high, low = high + 1.0, low - 1.0
    first, last = int(times[0]), int(times[-1])
    width, height = _WIDTH - 2 * _PAD, _HEIGHT - 2 * _PAD // 2
    step = max(1, len(values) // 2000)  # a couple of thousand points draw the same picture
    xs = _PAD + (times[::step] - first) / max(1, last - first) * width
    ys = _PAD // 2 + (high - values[::step]) / (high - low) * height
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs.tolist(), ys.tolist(), strict=True))
    start, end = _day(first), _day(last)
    return (
        f'<svg viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="{_text(label)}">'
        f'<rect x="{_PAD}" y="{_PAD // 2}" width="{width}" height="{height}" fill="#f8f9fa"/>'
        f'<polyline fill="none" stroke="{color}" stroke-width="1.4" points="{path}"/>'
        f'<text x="{_PAD}" y="{_HEIGHT - 4}" font-size="11">{start}</text>'
        f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - 4}" font-size="11" text-anchor="end">{end}</text>'
        f'<text x="2" y="{_PAD // 2 + 10}" font-size="11">{high:,.4g}</text>'
        f'<text x="2" y="{_PAD // 2 + height}" font-size="11">{low:,.4g}</text>'
        f'<text x="{_WIDTH // 2}" y="12" font-size="11" text-anchor="middle">{_text(label)}</text></svg>'
    )


def _bar_chart(labels: Sequence[str], values: Sequence[float]) -> str:
    """Return an SVG bar chart of signed values (green up, red down)."""
    if not values:
        return ""
    height = 160
    extent = max(abs(v) for v in values) or 1.0
    zero = height / 2
    slot = min(120.0, (_WIDTH - 2 * _PAD) / len(values))
    shapes = [f'<line x1="{_PAD}" x2="{_WIDTH - _PAD}" y1="{zero}" y2="{zero}" stroke="#adb5bd"/>']
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        bar = abs(value) / extent * (zero - 16)
        x = _PAD + index * slot + slot * 0.15
        y = zero - bar if value >= 0 else zero
        color = "#2b8a3e" if value >= 0 else "#c92a2a"
        shapes.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{max(bar, 0.5):.1f}" fill="{color}">'
            f"<title>{_text(label)} {value:,.2f}</title></rect>"
            f'<text x="{x + slot * 0.35:.1f}" y="{height - 2}" font-size="10" '
            f'text-anchor="middle">{_text(label)}</text>'
        )
    return (
        f'<svg viewBox="0 0 {_WIDTH} {height}" role="img" aria-label="gross P&amp;L by symbol">{"".join(shapes)}</svg>'
    )


def _pnl_cells(gross: float, fees: float, funding_paid: float, net: float) -> list[str]:
    """Return P&L cells: gains and losses coloured, costs plain."""
    return [_signed(gross), f"{fees:,.2f}", f"{funding_paid:,.2f}", _signed(net)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_text(title)}</h2>{body}</section>"


def _drawdown(equity: np.ndarray) -> np.ndarray:
    if len(equity) == 0:
        return equity
    peaks = np.maximum.accumulate(equity)
    return np.where(peaks > 0, equity / peaks - 1.0, 0.0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _ratio_text(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base > 0 else "n/a"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.4f}"
    return _text(str(value))


def _signed(value: float) -> str:
    css = "pos" if value > 0 else "neg" if value < 0 else ""
    return f'<span class="{css}">{value:,.2f}</span>'


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts // 1_000_000_000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)
