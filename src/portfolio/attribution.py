"""Performance attribution: Brinson-Fachler by symbol and strategy, Carino-linked, with a cost breakdown.

:class:`PerformanceAttributor` books every fill and funding payment into a
cash-flow book per (strategy, symbol) segment (in floats: it is an analytics
view, the exact book is the risk layer's ``PositionManager``) and cuts time
into periods (one day by default). For each period and segment it keeps

- the portfolio weight ``w_p``: the segment's absolute exposure averaged
  over the period's bar times, over the equity at the period's start (a
  long/short book's signed average can be near zero while it traded
  actively; the gross exposure is the capital the segment used, so ``R_p``
  is the return on that capital, long or short);
- the contribution ``c``: the segment's P&L in the period (price moves of its
  position, fees, funding) over the starting equity, so the contributions
  sum to the portfolio's return.

The benchmark is a buy-and-hold portfolio of the universe (equal weights
unless given), with the symbol's close-to-close return ``R_b`` in the period;
a symbol's benchmark weight is shared equally by the strategies that traded
it. Brinson-Fachler per segment, with ``R_p = c / w_p`` and ``R_B`` the
benchmark's total return:

- allocation ``(w_p - w_b) (R_b - R_B)``
- selection ``w_b (R_p - R_b)``
- interaction ``(w_p - w_b) (R_p - R_b)``

Uninvested equity (or borrowed, when levered) is a cash segment with return
0, so the three effects sum to ``R_p - R_B`` in every period. In a segment of
one symbol, "selection" measures how well the trading within the period
(timing, entries and exits, costs) did against holding the symbol. Periods
are linked with Carino's logarithmic coefficients, so the linked effects sum
to the difference of the compounded returns.

Costs: fees (fill commissions), funding (payments) and slippage (each fill
against the mark when its order was submitted), per symbol and strategy.

Strategies behind a combined view: a fill of the strategy manager's orders is
booked to the strategies whose signals caused it. The part of a fill that
reduces the symbol's position goes to the segments holding it, pro rata to
their quantities; the part that opens or adds goes to the strategies of the
symbol's latest combined signal that pointed the fill's way, pro rata to
their contributions to it (to the manager itself before any did).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from mypy_extensions import mypyc_attr

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_HOUR, Clock, SimulatedClock
from keel.core.component import Component
from keel.core.floats import finite
from keel.core.instruments import bundled_instruments
from keel.core.messages import BarClosed, FundingPaid, OrderFilled, OrderSubmitted, SignalGenerated

CASH = "cash"
Segment = tuple[str, str]
_Key = TypeVar("_Key", bound=Segment | str)
"""(strategy, symbol)."""


@dataclass(slots=True)
class _Book:
    """A segment's position and cash flows (floats)."""

    quantity: float = 0.0
    cash: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    slippage: float = 0.0
    exposure_sum: float = 0.0
    """The absolute exposure summed over the bar times sampled in the open period."""

    def value(self, mark: float) -> float:
        return self.quantity * mark + self.cash - self.fees + self.funding


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(slots=True)
class PeriodRecord:
    """One closed period: starting equity, segments' weights and contributions, benchmark returns."""

    start: int
    end: int
    equity: float
    weights: dict[Segment, float]
    contributions: dict[Segment, float]
    benchmark_returns: dict[str, float]

    @property
    def portfolio_return(self) -> float:
        """Return the period's portfolio return."""
        return sum(self.contributions.values())


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(slots=True)
class Effects:
    """Allocation, selection and interaction effects (linked returns)."""

    allocation: float = 0.0
    selection: float = 0.0
    interaction: float = 0.0
    contribution: float = 0.0
    weight: float = 0.0
    benchmark_weight: float = 0.0

    @property
    def total(self) -> float:
        """Return allocation + selection + interaction."""
        return self.allocation + self.selection + self.interaction

    def add(self, other: Effects, scale: float = 1.0) -> None:
        self.allocation += other.allocation * scale
        self.selection += other.selection * scale
        self.interaction += other.interaction * scale


@dataclass(slots=True)
class _Costs:
    fees: dict[str, float] = field(default_factory=dict)
    funding: dict[str, float] = field(default_factory=dict)
    slippage: dict[str, float] = field(default_factory=dict)


def brinson_fachler(
    weights: Mapping[_Key, float],
    returns: Mapping[_Key, float],
    benchmark_weights: Mapping[_Key, float],
    benchmark_returns: Mapping[_Key, float],
) -> dict[_Key, Effects]:
    """Return single-period Brinson-Fachler effects per segment (weights and returns as fractions).

    Segments missing on one side count with weight 0 there. The effects sum to
    ``sum(w_p R_p) - sum(w_b R_b)`` when both weight sets sum to the same total.
    """
    total_benchmark = sum(benchmark_weights.get(k, 0.0) * benchmark_returns.get(k, 0.0) for k in benchmark_weights)
    effects = {}
    for segment in sorted(set(weights) | set(benchmark_weights), key=str):
        wp, wb = weights.get(segment, 0.0), benchmark_weights.get(segment, 0.0)
        rb = benchmark_returns.get(segment, 0.0)
        rp = returns.get(segment, rb)
        effects[segment] = Effects(
            allocation=(wp - wb) * (rb - total_benchmark),
            selection=wb * (rp - rb),
            interaction=(wp - wb) * (rp - rb),
            weight=wp,
            benchmark_weight=wb,
            contribution=wp * rp,
        )
    return effects


def carino_coefficient(portfolio: float, benchmark: float) -> float:
    """Return Carino's ``(ln(1 + R_p) - ln(1 + R_b)) / (R_p - R_b)`` (``1 / (1 + R)`` when they are equal)."""
    if abs(portfolio - benchmark) < 1e-15:
        return 1.0 / (1.0 + portfolio)
    return (math.log1p(portfolio) - math.log1p(benchmark)) / (portfolio - benchmark)


@mypyc_attr(allow_interpreted_subclasses=True)
class PerformanceAttributor(Component):
    """Attribute a run's performance to allocation, selection and interaction, by symbol and strategy.

    Parameters
    ----------
    symbols
        The universe (the benchmark's symbols); the bundled instruments' when None.
    initial_capital
        Starting equity; 10,000 when None.
    period_ns
        Length of an attribution period (epoch-aligned); one day by default.
    benchmark_weights
        Buy-and-hold weights of the benchmark; equal weights summing to one when None.
    bus, clock
        The event bus and the clock; private ones when used standalone.
    """

    def __init__(
        self,
        symbols: Sequence[str] | None = None,
        initial_capital: Decimal | float | None = None,
        *,
        period_ns: int = 24 * NANOS_PER_HOUR,
        benchmark_weights: Mapping[str, float] | None = None,
        bus: EventBus | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__("portfolio.attribution", bus or EventBus(), clock or SimulatedClock(0))
        symbols = tuple(bundled_instruments()) if symbols is None else symbols
        initial_capital = 10_000.0 if initial_capital is None else initial_capital
        if not symbols:
            raise ValueError("attribution needs at least one symbol")
        if period_ns <= 0:
            raise ValueError(f"attribution period must be positive, got {period_ns} ns")
        self.symbols = tuple(symbols)
        self.initial_capital = float(initial_capital)
        self.period_ns = period_ns
        weights = benchmark_weights or {s: 1.0 / len(self.symbols) for s in self.symbols}
        unknown = sorted(set(weights) - set(self.symbols))
        if unknown:
            raise ValueError(f"benchmark weights name symbols outside the universe: {', '.join(unknown)}")
        self.benchmark_weights = dict(weights)
        self.periods: list[PeriodRecord] = []
        self._books: dict[Segment, _Book] = {}
        self._marks: dict[str, float] = {}
        self._decision_marks: dict[str, float] = {}
        self._pointing: dict[tuple[str, str, float], dict[str, float]] = {}
        self._period_start: int | None = None
        self._start_marks: dict[str, float] = {}
        self._start_values: dict[Segment, float] = {}
        self._start_equity = self.initial_capital
        self._samples = 0
        self._sample_ts: int | None = None

    def rebase_capital(self, capital: float) -> None:
        """Start from ``capital``: a live account's opening balance, set before anything trades."""
        self.initial_capital = float(capital)
        self._start_equity = self.initial_capital

    # --- events ---------------------------------------------------------------------------

    def on_start(self) -> None:
        """Subscribe to bars, submissions, fills and funding."""
        self.bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.marks")
        self.bus.subscribe(OrderSubmitted, self.on_submitted, name=f"{self.name}.decisions")
        self.bus.subscribe(OrderFilled, self.on_fill, name=self.name)
        self.bus.subscribe(SignalGenerated, self.on_signal, name=f"{self.name}.signals")
        self.bus.subscribe(FundingPaid, self.on_funding, name=f"{self.name}.funding")

    def on_bar(self, bar: BarClosed) -> None:
        """Mark the symbol; sample exposures once per bar time; close the period when it ends."""
        close = bar.close
        if not finite(close) or close <= 0:
            return
        ts = bar.ts_event
        if ts != self._sample_ts:
            if self._sample_ts is not None:
                self._sample()
                if self._period_start is not None and ts >= self._period_start + self.period_ns:
                    self._close_period(self._sample_ts)
                    self._period_start = ts - (ts % self.period_ns)
            if self._period_start is None:
                self._period_start = ts - (ts % self.period_ns)
            self._sample_ts = ts
        symbol = bar.symbol
        self._marks[symbol] = close
        if symbol not in self._start_marks:
            self._start_marks[symbol] = close

    def on_submitted(self, submitted: OrderSubmitted) -> None:
        """Remember the mark at the decision, for slippage."""
        mark = self._marks.get(submitted.symbol)
        if mark is not None:
            self._decision_marks[submitted.client_order_id] = mark

    def on_signal(self, signal: SignalGenerated) -> None:
        """Remember, for each direction, the strategies of the latest combined view of a symbol pointing that way."""
        for sign in (1.0, -1.0):
            pointing = {s: c * sign for s, c in sorted(signal.contributions.items()) if c * sign > 0}
            if pointing:
                self._pointing[(signal.strategy, signal.symbol, sign)] = pointing

    def on_fill(self, fill: OrderFilled) -> None:
        """Book the fill's cash flow, fee and slippage into the segments of the strategies behind it."""
        quantity = float(fill.last_quantity) * fill.side.sign
        price = float(fill.last_price)
        decision = self._decision_marks.get(fill.client_order_id)
        for strategy, part in self._split(fill.strategy, fill.symbol, quantity):
            book = self._books.setdefault((strategy, fill.symbol), _Book())
            share = part / quantity
            book.quantity += part
            book.cash -= part * price
            book.fees += float(fill.commission) * share
            if decision is not None:
                book.slippage += part * (price - decision)
        self._marks.setdefault(fill.symbol, price)

    def _split(self, source: str, symbol: str, quantity: float) -> list[tuple[str, float]]:
        """Return (strategy, signed quantity) parts of a fill: closing by holdings, opening by contributions."""
        # Segments holding the other side of the fill: the fill closes them first.
        held = {s: b.quantity for (s, sym), b in self._books.items() if sym == symbol and b.quantity * quantity < 0}
        total_held = sum(held.values())
        closing = -total_held if abs(total_held) < abs(quantity) else quantity
        parts = {strategy: closing * (amount / total_held) for strategy, amount in held.items()}
        opening = quantity - closing
        if opening != 0:
            pointing = self._pointing.get((source, symbol, 1.0 if opening > 0 else -1.0), {source: 1.0})
            weight = sum(pointing.values())
            for strategy, amount in pointing.items():
                parts[strategy] = parts.get(strategy, 0.0) + opening * (amount / weight)
        return [(strategy, part) for strategy, part in sorted(parts.items()) if part != 0]

    def on_funding(self, payment: FundingPaid) -> None:
        """Split a funding payment across the symbol's segments by their quantities."""
        books = [b for (_, s), b in self._books.items() if s == payment.symbol and b.quantity != 0]
        total = sum(b.quantity for b in books)
        if total == 0:
            self._books.setdefault(("portfolio", payment.symbol), _Book()).funding += float(payment.amount)
            return
        for book in books:
            book.funding += float(payment.amount) * book.quantity / total

    # --- periods --------------------------------------------------------------------------

    def equity(self) -> float:
        """Return the equity of the cash-flow book at the last marks."""
        return self.initial_capital + sum(b.value(self._marks.get(s, 0.0)) for (_, s), b in self._books.items())

    def _sample(self) -> None:
        marks = self._marks
        for key, book in self._books.items():
            quantity = book.quantity
            if quantity != 0:
                book.exposure_sum += abs(quantity) * marks.get(key[1], 0.0)
        self._samples += 1

    def _close_period(self, end: int) -> None:
        record = self._record(end)
        if record is not None:
            self.periods.append(record)
        self._start_marks = dict(self._marks)
        self._start_values = {k: b.value(self._marks.get(k[1], 0.0)) for k, b in self._books.items()}
        self._start_equity = self.equity()
        for book in self._books.values():
            book.exposure_sum = 0.0
        self._samples = 0

    def _record(self, end: int) -> PeriodRecord | None:
        equity = self._start_equity
        if self._period_start is None or equity <= 0 or not self._samples:
            return None
        contributions = {}
        weights = {}
        for key, book in self._books.items():
            change = book.value(self._marks.get(key[1], 0.0)) - self._start_values.get(key, 0.0)
            average = book.exposure_sum / self._samples
            if change or average:
                contributions[key] = change / equity
                weights[key] = average / equity
        returns = {
            s: self._marks[s] / self._start_marks[s] - 1.0
            for s in self.symbols
            if s in self._marks and s in self._start_marks
        }
        return PeriodRecord(self._period_start, end, equity, weights, contributions, returns)

    def _all_periods(self) -> list[PeriodRecord]:
        """Return the closed periods and the open one so far."""
        periods = list(self.periods)
        if self._sample_ts is not None:
            books, samples = list(self._books.values()), self._samples
            sums = [book.exposure_sum for book in books]
            self._sample()
            current = self._record(self._sample_ts)
            for book, kept in zip(books, sums, strict=True):
                book.exposure_sum = kept
            self._samples = samples
            if current is not None:
                periods.append(current)
        return periods

    # --- attribution ------------------------------------------------------------------------

    def _segment_benchmarks(self, periods: Sequence[PeriodRecord]) -> dict[Segment, float]:
        strategies: dict[str, set[str]] = {}
        for period in periods:
            for strategy, symbol in period.weights:
                strategies.setdefault(symbol, set()).add(strategy)
        weights = {}
        for symbol, weight in self.benchmark_weights.items():
            owners = sorted(strategies.get(symbol, {"none"}))
            for strategy in owners:
                weights[(strategy, symbol)] = weight / len(owners)
        return weights

    def _period_effects(self, period: PeriodRecord, benchmark: Mapping[Segment, float]) -> dict[Segment | str, Effects]:
        segment_returns: dict[Segment | str, float] = {}
        residual: dict[Segment, float] = {}
        for key, contribution in period.contributions.items():
            weight = period.weights.get(key, 0.0)
            if abs(weight) > 1e-12:
                segment_returns[key] = contribution / weight
            else:
                residual[key] = contribution
        portfolio_weights: dict[Segment | str, float] = {key: weight for key, weight in period.weights.items()}
        portfolio_weights[CASH] = 1.0 - sum(period.weights.values())
        benchmark_weights: dict[Segment | str, float] = {key: weight for key, weight in benchmark.items()}
        benchmark_weights[CASH] = 1.0 - sum(benchmark.values())
        benchmark_returns: dict[Segment | str, float] = {
            key: period.benchmark_returns.get(key[1], 0.0)
            for key in set(portfolio_weights) | set(benchmark)
            if isinstance(key, tuple)
        }
        benchmark_returns[CASH] = 0.0
        returns: dict[Segment | str, float] = dict(segment_returns)
        returns[CASH] = 0.0
        effects = brinson_fachler(portfolio_weights, returns, benchmark_weights, benchmark_returns)
        for key, value in residual.items():
            # P&L with no average exposure (fees of a round trip inside one period) is selection.
            effects.setdefault(key, Effects()).selection += value
        for key, value in period.contributions.items():
            effects[key].contribution = value
        return effects

    def attribution_table(self) -> tuple[dict[str, float], dict[Segment | str, Effects]]:
        """Return the linked totals and the linked effects per segment over every period so far."""
        periods = self._all_periods()
        benchmark = self._segment_benchmarks(periods)
        linked: dict[Segment | str, Effects] = {}
        portfolio_growth = benchmark_growth = 1.0
        per_period = []
        for period in periods:
            effects = self._period_effects(period, benchmark)
            rp = period.portfolio_return
            rb = sum(benchmark.get(k, 0.0) * period.benchmark_returns.get(k[1], 0.0) for k in benchmark)
            per_period.append((effects, rp, rb))
            portfolio_growth *= 1.0 + rp
            benchmark_growth *= 1.0 + rb
        total_portfolio, total_benchmark = portfolio_growth - 1.0, benchmark_growth - 1.0
        overall = carino_coefficient(total_portfolio, total_benchmark)
        for effects, rp, rb in per_period:
            scale = carino_coefficient(rp, rb) / overall
            for key, effect in effects.items():
                target = linked.setdefault(key, Effects())
                target.add(effect, scale)
                target.contribution += effect.contribution
                target.weight += effect.weight / len(per_period)
                target.benchmark_weight += effect.benchmark_weight / len(per_period)
        totals = {
            "portfolio_return": total_portfolio,
            "benchmark_return": total_benchmark,
            "active_return": total_portfolio - total_benchmark,
            "periods": float(len(periods)),
        }
        return totals, linked

    async def calculate_attribution(self) -> dict[str, Any]:
        """Return the attribution so far, as in the user's UC-3.1.

        Keys: ``asset_allocation``, ``security_selection``, ``interaction_effect``
        (linked totals, fractions of equity), ``portfolio_return``,
        ``benchmark_return``, ``active_return`` (their sum), ``periods``,
        ``by_symbol`` and ``by_strategy`` (the three effects each) and
        ``costs`` (fees, funding paid and slippage, in USDT, in total, by symbol
        and by strategy).
        """
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Return :meth:`calculate_attribution`'s result synchronously."""
        totals, linked = self.attribution_table()
        by_symbol: dict[str, Effects] = {}
        by_strategy: dict[str, Effects] = {}
        for key, effects in linked.items():
            symbol, strategy = (CASH, CASH) if key == CASH else (key[1], key[0])
            for group in (by_symbol.setdefault(symbol, Effects()), by_strategy.setdefault(strategy, Effects())):
                group.add(effects)
                group.contribution += effects.contribution
        overall = Effects()
        for effects in linked.values():
            overall.add(effects)
        return {
            "asset_allocation": overall.allocation,
            "security_selection": overall.selection,
            "interaction_effect": overall.interaction,
            **totals,
            "by_symbol": {k: _effects_dict(v) for k, v in sorted(by_symbol.items())},
            "by_strategy": {k: _effects_dict(v) for k, v in sorted(by_strategy.items())},
            "costs": self.costs(),
        }

    def pnl_by_strategy(self) -> dict[str, dict[str, float]]:
        """Return each strategy's P&L in USDT at the last marks: gross (before costs), fees, funding paid, net."""
        totals: dict[str, dict[str, float]] = {}
        for (strategy, symbol), book in sorted(self._books.items()):
            mark = self._marks.get(symbol, 0.0)
            entry = totals.setdefault(strategy, {"gross": 0.0, "fees": 0.0, "funding_paid": 0.0, "net": 0.0})
            entry["gross"] += book.quantity * mark + book.cash
            entry["fees"] += book.fees
            entry["funding_paid"] -= book.funding
            entry["net"] += book.value(mark)
        return totals

    def costs(self) -> dict[str, Any]:
        """Return fees, funding paid and slippage in USDT: totals, by symbol and by strategy."""
        costs = {"by_symbol": _Costs(), "by_strategy": _Costs()}
        for (strategy, symbol), book in self._books.items():
            for view, key in ((costs["by_symbol"], symbol), (costs["by_strategy"], strategy)):
                view.fees[key] = view.fees.get(key, 0.0) + book.fees
                view.funding[key] = view.funding.get(key, 0.0) - book.funding
                view.slippage[key] = view.slippage.get(key, 0.0) + book.slippage
        symbols = costs["by_symbol"]
        return {
            "fees": sum(symbols.fees.values()),
            "funding": sum(symbols.funding.values()),
            "slippage": sum(symbols.slippage.values()),
            "by_symbol": {k: _cost_dict(costs["by_symbol"], k) for k in sorted(symbols.fees)},
            "by_strategy": {k: _cost_dict(costs["by_strategy"], k) for k in sorted(costs["by_strategy"].fees)},
        }

    def rows(self) -> list[list[object]]:
        """Return attribution.csv's rows: the total, each symbol, each strategy, each segment, cash."""
        summary = self.summary()
        _, linked = self.attribution_table()
        cost = summary["costs"]
        overall = Effects(
            summary["asset_allocation"],
            summary["security_selection"],
            summary["interaction_effect"],
            summary["portfolio_return"],
        )
        rows = [_row("total", "", "", overall, (cost["fees"], cost["funding"], cost["slippage"]))]
        empty = {"fees": 0.0, "funding": 0.0, "slippage": 0.0}
        for level, grouping in (("symbol", "by_symbol"), ("strategy", "by_strategy")):
            for name, values in summary[grouping].items():
                costs = cost[grouping].get(name, empty)
                effects = Effects(
                    values["allocation"], values["selection"], values["interaction"], values["contribution"]
                )
                strategy, symbol = (name, "") if level == "strategy" else ("", name)
                rows.append(
                    _row(level, strategy, symbol, effects, (costs["fees"], costs["funding"], costs["slippage"]))
                )
        for key in sorted(k for k in linked if isinstance(k, tuple)):
            book = self._books.get(key, _Book())
            rows.append(_row("segment", key[0], key[1], linked[key], (book.fees, -book.funding, book.slippage)))
        return rows


ATTRIBUTION_COLUMNS = (
    "level",
    "strategy",
    "symbol",
    "allocation",
    "selection",
    "interaction",
    "total_effect",
    "contribution",
    "fees",
    "funding_paid",
    "slippage",
)


def _row(level: str, strategy: str, symbol: str, effects: Effects, costs: tuple[float, float, float]) -> list[object]:
    numbers = (effects.allocation, effects.selection, effects.interaction, effects.total, effects.contribution, *costs)
    return [level, strategy, symbol, *(f"{value:.12g}" for value in numbers)]


def _effects_dict(effects: Effects) -> dict[str, float]:
    return {
        "allocation": effects.allocation,
        "selection": effects.selection,
        "interaction": effects.interaction,
        "total": effects.total,
        "contribution": effects.contribution,
    }


def _cost_dict(costs: _Costs, key: str) -> dict[str, float]:
    return {
        "fees": costs.fees.get(key, 0.0),
        "funding": costs.funding.get(key, 0.0),
        "slippage": costs.slippage.get(key, 0.0),
    }
