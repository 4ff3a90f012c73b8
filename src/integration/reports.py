"""Run reports: performance metrics and the files written from a backtest or paper run.

Metrics are computed from the equity curve sampled at every bar close:
simple returns per bar, annualized with ``sqrt(bars per year)`` (crypto
trades 365 x 24 h). ``drawdown`` and ``max_drawdown`` (positive fractions of
the equity peak) are the risk controller's, the system's one drawdown, which
a restart restores with the rest of the state. ``win_rate`` is the share of position-reducing fills that realized a
profit (before fees). The CSV files are written with exact decimals and
integer timestamps, so the same run writes the same bytes.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.core.clock import NANOS_PER_MILLI
from keel.core.intervals import INTERVAL_MS, bars_per_year
from keel.core.messages import PositionLiquidated
from keel.core.orders import Order, OrderStatus
from keel.execution.tca import TCA_COLUMNS, tca_row
from keel.portfolio.attribution import ATTRIBUTION_COLUMNS

if TYPE_CHECKING:
    from keel.integration.pipeline import Pipeline

BARS_PER_YEAR = {name: bars_per_year(name) for name in INTERVAL_MS}


def performance_metrics(equity: Sequence[float], bars_per_year: float) -> dict[str, float]:
    """Return total_return, sharpe_ratio, sortino_ratio and max_drawdown of an equity curve."""
    values = np.asarray(equity, dtype=np.float64)
    if len(values) < 2 or values[0] <= 0:
        return {"total_return": 0.0, "sharpe_ratio": 0.0, "sortino_ratio": 0.0, "max_drawdown": 0.0}
    returns = values[1:] / values[:-1] - 1.0
    scale = math.sqrt(bars_per_year)
    deviation = float(returns.std(ddof=1)) if len(returns) > 1 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    mean = float(returns.mean())
    peaks = np.maximum.accumulate(values)
    return {
        "total_return": float(values[-1] / values[0] - 1.0),
        "sharpe_ratio": mean / deviation * scale if deviation > 0 else 0.0,
        "sortino_ratio": mean / downside * scale if downside > 0 else 0.0,
        "max_drawdown": float(np.max(1.0 - values / peaks)),
    }


def win_rate(closing_pnls: Iterable[Decimal]) -> float:
    """Return the share of closing fills with a positive realized P&L (0 when none)."""
    pnls = list(closing_pnls)
    return sum(1 for p in pnls if p > 0) / len(pnls) if pnls else 0.0


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write rows with a header, ``\\n`` line ends, values as ``str()``."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


ORDER_COLUMNS = (
    "client_order_id",
    "venue_order_id",
    "symbol",
    "side",
    "order_type",
    "time_in_force",
    "quantity",
    "price",
    "reduce_only",
    "status",
    "filled_quantity",
    "average_price",
    "commission",
    "strategy",
    "ts_init",
    "ts_last",
    "reason",
)
FILL_COLUMNS = (
    "ts_event",
    "trade_id",
    "client_order_id",
    "symbol",
    "side",
    "quantity",
    "price",
    "commission",
    "liquidity_side",
    "strategy",
)


def order_rows(orders: Iterable[Order]) -> list[list[object]]:
    """Return one CSV row per order."""
    return [
        [
            o.client_order_id,
            o.venue_order_id or "",
            o.symbol,
            o.side.value,
            o.order_type.value,
            o.time_in_force.value,
            o.quantity,
            "" if o.price is None else o.price,
            o.reduce_only,
            o.status.value,
            o.filled_quantity,
            "" if o.average_price is None else _plain(o.average_price),
            _plain(o.commission),
            o.strategy,
            o.ts_init,
            o.ts_last,
            o.reason,
        ]
        for o in orders
    ]


def _plain(value: Decimal) -> str:
    """Format a computed decimal without an exponent, at most 12 places."""
    return format(value.quantize(Decimal("1e-12")).normalize(), "f")


def _cell(value: object) -> object:
    """Write a missing value as an empty cell and a computed decimal without an exponent."""
    if value is None:
        return ""
    return _plain(value) if isinstance(value, Decimal) else value


def iso_time(ts: int) -> str:
    """Format integer nanoseconds as an ISO-8601 UTC time to the second."""
    return datetime.fromtimestamp(ts / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(value: Decimal) -> str:
    """Format an amount of USDT with 8 decimals."""
    return format(value.quantize(Decimal("0.00000001")), "f")


def write_run_records(folder: Path, pipeline: Pipeline) -> None:
    """Write equity.csv, trades.csv, orders.csv, tca.csv and attribution.csv of a run into ``folder``.

    tca.csv holds one row per finished parent order (its transaction-cost analysis).
    """
    recorder = pipeline.recorder
    write_csv(
        folder / "equity.csv",
        ("ts_ms", "time_utc", "equity", "gross_exposure"),
        (
            (p.ts // NANOS_PER_MILLI, iso_time(p.ts), money(p.equity), money(p.gross_exposure))
            for p in recorder.equity_curve()
        ),
    )
    write_csv(
        folder / "trades.csv",
        FILL_COLUMNS,
        (
            (
                f.ts_event,
                f.trade_id,
                f.client_order_id,
                f.symbol,
                f.side.value,
                f.last_quantity,
                f.last_price,
                f.commission,
                f.liquidity_side.value,
                f.strategy,
            )
            for f in recorder.fills
        ),
    )
    write_csv(folder / "orders.csv", ORDER_COLUMNS, order_rows(pipeline.orders.orders.values()))
    write_csv(
        folder / "tca.csv",
        TCA_COLUMNS,
        ([_cell(row[c]) for c in TCA_COLUMNS] for row in map(tca_row, recorder.executions)),
    )
    if pipeline.attribution is not None:
        write_csv(folder / "attribution.csv", ATTRIBUTION_COLUMNS, pipeline.attribution.rows())


def liquidation_metrics(liquidations: Sequence[PositionLiquidated]) -> dict[str, Any]:
    """Return the count, clearance fees and insurance-covered losses of the venue's liquidations, also per symbol."""
    by_symbol: dict[str, int] = {}
    for liquidation in liquidations:
        by_symbol[liquidation.symbol] = by_symbol.get(liquidation.symbol, 0) + 1
    return {
        "liquidations": len(liquidations),
        "liquidations_by_symbol": dict(sorted(by_symbol.items())),
        "liquidation_fees": float(sum((x.liquidation_fee for x in liquidations), Decimal(0))),
        "insurance_fund_covered": float(sum((x.insurance_fund_covered for x in liquidations), Decimal(0))),
    }


def views_not_worth_costs(pipeline: Pipeline) -> int:
    """Return how often a view's exposure was not taken because its edge did not pay its trading costs.

    The equal-weight allocator takes such a signal as flat, the optimizer's
    cost-penalized solve gives it no weight, the risk layer leaves a target's
    added exposure out (``portfolio.no_trade_band``, the
    smallest order). Signals published with no order sent and no denial are
    usually these.
    """
    return pipeline.allocator.views_not_worth_costs + pipeline.risk.views_not_worth_costs


def views_before_history(pipeline: Pipeline) -> int:
    """Return how many view changes came while the optimizer had too little history to weigh any symbol.

    The Markowitz optimizer solves only for symbols with
    ``portfolio.min_history_bars`` bars; until one has them it proposes no
    weights (the equal-weight allocator needs no history: 0).
    """
    return getattr(pipeline.allocator, "views_before_history", 0)


def strategies_disabled(pipeline: Pipeline) -> dict[str, list[str]]:
    """Return, by strategy, the symbols it was switched off for after raising too often in a row."""
    strategies = pipeline.strategy.manager.get_system_status()["strategies"]
    return {name: info["disabled_symbols"] for name, info in sorted(strategies.items()) if info["disabled_symbols"]}


def run_metrics(pipeline: Pipeline, bars_per_year: float) -> dict[str, Any]:
    """Return the performance, trading and cost metrics of a run so far."""
    positions = pipeline.positions
    orders = pipeline.orders.orders.values()
    curve = [float(p.equity) for p in pipeline.recorder.equity_curve()]
    metrics: dict[str, Any] = performance_metrics(curve, bars_per_year)
    metrics.update(
        {
            "initial_capital": float(positions.initial_capital),
            "final_equity": float(positions.equity()),
            "win_rate": win_rate(positions.closing_pnls),
            "n_trades": positions.fills,
            "n_orders": len(pipeline.orders.orders) + pipeline.orders.orders_forgotten,
            "n_orders_rejected": sum(1 for o in orders if o.status is OrderStatus.REJECTED),
            "n_orders_denied": len(pipeline.recorder.denials),
            "orders_denied_by_reason": dict(sorted(Counter(d.reason_code for d in pipeline.recorder.denials).items())),
            "signals_published": pipeline.strategy.manager.signals_published,
            "views_not_worth_costs": views_not_worth_costs(pipeline),
            "views_before_history": views_before_history(pipeline),
            "fees_paid": float(positions.fees_paid),
            "funding_paid": float(-positions.funding_received),
            "fees_by_symbol": {s: float(v) for s, v in sorted(positions.fees_by_symbol.items())},
            "funding_paid_by_symbol": {s: float(-v) for s, v in sorted(positions.funding_by_symbol.items())},
            **liquidation_metrics(pipeline.recorder.liquidations),
            "realized_pnl": float(positions.realized_pnl()),
            "unrealized_pnl": float(positions.unrealized_pnl()),
            "bus_messages_dispatched": pipeline.bus.dispatched,
            "bus_high_water_mark": pipeline.bus.high_water_mark,
            "trading_state": pipeline.risk.trading_state.value,
            "strategies_excluded": dict(sorted(pipeline.excluded_strategies.items())),
            "strategy_errors": pipeline.strategy.errors,
            "strategies_disabled": strategies_disabled(pipeline),
            "strategies_not_ready": pipeline.strategy.manager.unready_strategies(),
            # The risk controller's drawdown is the system's one drawdown (restored across restarts).
            "drawdown": pipeline.risk.drawdown,
            "max_drawdown": pipeline.risk.max_drawdown,
        }
    )
    return metrics
