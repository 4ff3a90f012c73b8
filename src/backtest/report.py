"""Backtest and run reports: performance metrics and the CSV files written from a run.

Metrics are computed from the equity curve sampled at every bar close:
simple returns per bar, annualized with ``sqrt(bars per year)`` (crypto
trades 365 x 24 h). ``max_drawdown`` is a positive fraction of the running
peak. ``win_rate`` is the share of position-reducing fills that realized a
profit (before fees). The CSV files are written with exact decimals and
integer timestamps, so the same run writes the same bytes.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np

from keel.core.orders import Order

MINUTES_PER_YEAR = 365 * 24 * 60
BARS_PER_YEAR = {"1m": MINUTES_PER_YEAR, "1h": MINUTES_PER_YEAR // 60}


def performance_metrics(equity: Sequence[float], bars_per_year: int) -> dict[str, float]:
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
    "client_order_id", "venue_order_id", "symbol", "side", "order_type", "time_in_force", "quantity",
    "price", "reduce_only", "status", "filled_quantity", "average_price", "commission", "strategy",
    "ts_init", "ts_last", "reason",
)
FILL_COLUMNS = (
    "ts_event", "trade_id", "client_order_id", "symbol", "side", "quantity", "price", "commission",
    "liquidity_side", "strategy",
)


def order_rows(orders: Iterable[Order]) -> list[list[object]]:
    """Return one CSV row per order."""
    return [
        [
            o.client_order_id, o.venue_order_id or "", o.symbol, o.side.value, o.order_type.value,
            o.time_in_force.value, o.quantity, "" if o.price is None else o.price, o.reduce_only,
            o.status.value, o.filled_quantity, "" if o.average_price is None else _plain(o.average_price),
            _plain(o.commission), o.strategy, o.ts_init, o.ts_last, o.reason,
        ]
        for o in orders
    ]


def _plain(value: Decimal) -> str:
    """Format a computed decimal without an exponent, at most 12 places."""
    return format(value.quantize(Decimal("1e-12")).normalize(), "f")
