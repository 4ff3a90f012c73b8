"""The backtest gate: a strategy must show a rule's Sharpe, drawdown and trade count before it may trade.

:func:`evaluate_gate` backtests one strategy on the last ``window_days`` of
the bars it is given (the bars before the window warm it up, untraded) and
checks the result against a :class:`GateRule`. The backtest marks the
strategy's own views to market as :class:`~keel.strategy_engine.performance.StrategyPerformance`
does: on each symbol the exposure ``direction * strength * confidence`` set
at a bar's close earns the next bar's return and pays ``fee_rate`` per unit
of exposure change; the symbols share the book equally. Its Sharpe ratio is
annualized from the per-bar results, its maximum drawdown is the largest
fall of the cumulative return from its peak, and a trade is a position
opened (from flat, or by reversing).

The verdict only reads bars it is given, so a caller that gives bars up to
now gets a verdict without look-ahead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.strategy_engine.base import BaseStrategy

DAY_NS = 86_400_000_000_000
YEAR_NS = 365 * DAY_NS


@dataclass(frozen=True, slots=True)
class GateRule:
    """What a strategy must show over the window before it may trade.

    Parameters
    ----------
    min_sharpe
        Smallest annualized Sharpe ratio (None: not checked).
    max_drawdown
        Largest drawdown, a fraction of the book (None: not checked).
    min_trades
        Fewest positions opened.
    window_days
        Days of the most recent data the backtest covers.
    """

    min_sharpe: float | None = None
    max_drawdown: float | None = None
    min_trades: int = 0
    window_days: float = 30.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_days) and self.window_days > 0):
            raise ValueError(f"gate window_days must be positive, got {self.window_days!r}")
        if self.min_trades < 0:
            raise ValueError(f"gate min_trades must be >= 0, got {self.min_trades!r}")
        if self.max_drawdown is not None and not self.max_drawdown >= 0:
            raise ValueError(f"gate max_drawdown must be >= 0, got {self.max_drawdown!r}")


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """The outcome of a gate check: the backtest's figures, and why the strategy failed (None: it passed)."""

    strategy: str
    passed: bool
    reason: str | None
    sharpe: float | None
    max_drawdown: float
    trades: int
    bars: int
    window_start: int | None
    window_end: int | None

    def as_dict(self) -> dict[str, Any]:
        """Return the verdict as plain JSON-compatible data."""
        return {
            "strategy": self.strategy,
            "passed": self.passed,
            "reason": self.reason,
            "sharpe": self.sharpe,
            "max_drawdown": self.max_drawdown,
            "trades": self.trades,
            "bars": self.bars,
            "window_start": self.window_start,
            "window_end": self.window_end,
        }


def evaluate_gate(
    make_strategy: Callable[[], BaseStrategy],
    market_data: Mapping[str, Mapping[str, Any]],
    rule: GateRule,
    *,
    fee_rate: float = 0.0005,
) -> GateVerdict:
    """Backtest a fresh strategy on the last ``rule.window_days`` of ``market_data``; judge it by ``rule``.

    Parameters
    ----------
    make_strategy
        Builds the strategy (a fresh instance, so a running one is not disturbed).
    market_data
        Symbol -> the strategy's ``market_data`` (``timestamp``, OHLCV arrays,
        optional funding columns), up to now.
    rule
        What the strategy must show.
    fee_rate
        Fee per unit of exposure change.
    """
    strategy = make_strategy()
    ends = [int(data["timestamp"][-1]) for data in market_data.values() if len(data["timestamp"])]
    if not ends:
        return _verdict(strategy.name, rule, None, 0.0, 0, 0, None, None, "no data to backtest on")
    end = max(ends)
    start = end - int(rule.window_days * DAY_NS)
    results: dict[int, float] = {}
    trades = 0
    for symbol, data in sorted(market_data.items()):
        times, pnl, opened = _symbol_backtest(strategy, {**data, "symbol": symbol}, start, fee_rate)
        trades += opened
        for ts, value in zip(times.tolist(), pnl.tolist(), strict=True):
            results[ts] = results.get(ts, 0.0) + value / len(market_data)
    if not results:
        return _verdict(strategy.name, rule, None, 0.0, trades, 0, None, None, "no bars in the window")
    times = np.array(sorted(results), dtype=np.int64)
    pnl = np.array([results[t] for t in times.tolist()])
    equity = np.cumsum(pnl)
    drawdown = float(np.max(np.maximum.accumulate(np.maximum(equity, 0.0)) - equity))
    sharpe = _annualized_sharpe(times, pnl)
    return _verdict(strategy.name, rule, sharpe, drawdown, trades, len(times), int(times[0]), int(times[-1]), None)


def _symbol_backtest(
    strategy: BaseStrategy, data: Mapping[str, Any], start: int, fee_rate: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Return the bar times in the window, the per-bar results of the views there and the positions opened."""
    timestamps = np.asarray(data["timestamp"], dtype=np.int64)
    close = np.asarray(data["close"], dtype=float)
    first = int(np.searchsorted(timestamps, start, side="right"))
    exposure = 0.0
    opened = 0
    times, results = [], []
    for index in range(len(close)):
        signal = strategy.generate_signal(data, index)
        new = exposure if signal is None else _exposure(strategy, signal, exposure)
        if index >= first and index > 0:
            result = exposure * (close[index] / close[index - 1] - 1.0) - fee_rate * abs(new - exposure)
            times.append(int(timestamps[index]))
            results.append(result)
            if new != 0.0 and (exposure == 0.0 or math.copysign(1.0, new) != math.copysign(1.0, exposure)):
                opened += 1
        exposure = new if index >= first else 0.0
    return np.array(times, dtype=np.int64), np.array(results), opened


def _exposure(strategy: BaseStrategy, signal: Any, held: float) -> float:
    if signal.action == "HOLD" and signal.strength == 0.0 and signal.confidence == 0.0:
        return 0.0 if strategy.hold_means_flat else held
    return float(signal.score)


def _annualized_sharpe(times: np.ndarray, pnl: np.ndarray) -> float | None:
    if len(pnl) < 2:
        return None
    deviation = float(np.std(pnl))
    if not deviation > 0.0:
        return None
    step = float(np.median(np.diff(times)))
    return float(np.mean(pnl)) / deviation * math.sqrt(YEAR_NS / step) if step > 0 else None


def _verdict(
    name: str,
    rule: GateRule,
    sharpe: float | None,
    drawdown: float,
    trades: int,
    bars: int,
    window_start: int | None,
    window_end: int | None,
    failure: str | None,
) -> GateVerdict:
    reasons = [failure] if failure else []
    if rule.min_sharpe is not None and (sharpe is None or sharpe < rule.min_sharpe):
        shown = "undefined" if sharpe is None else f"{sharpe:.2f}"
        reasons.append(f"Sharpe {shown} < {rule.min_sharpe:g}")
    if rule.max_drawdown is not None and drawdown > rule.max_drawdown:
        reasons.append(f"max drawdown {drawdown:.2%} > {rule.max_drawdown:.2%}")
    if trades < rule.min_trades:
        reasons.append(f"{trades} trades < {rule.min_trades}")
    reason = None
    if reasons:
        reason = f"backtest gate over the last {rule.window_days:g} days failed: " + "; ".join(reasons)
    return GateVerdict(name, not reasons, reason, sharpe, drawdown, trades, bars, window_start, window_end)
