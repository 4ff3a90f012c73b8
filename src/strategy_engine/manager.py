"""The strategy manager: every strategy on every symbol, weighted by the detected regime.

:class:`StrategyManager` keeps one market history and one
:class:`~keel.strategy_engine.regime.NoLookAheadRegimeDetector` per symbol and,
on each closed bar:

1. validates the bar (non-finite or non-positive prices, ``high < low``, an
   open or close outside the range, negative volume, a time not after the
   previous bar's: counted and skipped, never used);
2. updates the regime detector;
3. marks each strategy's previous view to the bar's return (its performance);
4. runs each strategy's ``generate_signal`` inside a guard: an exception
   becomes a :class:`StrategyFailure` (the runner publishes it as a
   ``StrategyError`` event) and the strategy's last view stands; after
   ``max_consecutive_errors`` failures in a row the strategy is switched off
   for that symbol and its view dropped; the other strategies go on;
5. combines the views. Each strategy's weight is the regime matrix row of
   every regime averaged by the regime's filtered probability (the
   ``unknown`` row before the detector's first fit), renormalized over the
   strategies running on the symbol. Flat (HOLD) views abstain: with scores
   ``d * strength * confidence`` the combined score is
   ``net = sum(w * score) / sum(w of the strategies with a non-zero score)``,
   so a lone view counts in full and opposed views net out by weight. Its
   confidence is the weight-averaged confidence of the strategies agreeing
   with its sign and its strength ``|net| / confidence`` (so
   ``strength * confidence == |net|``).
   With ``volatility_scaling`` the confidence is multiplied by
   ``min(1, sqrt(long-run variance / forecast variance))`` of the GARCH. The
   action is BUY (SELL) when the scaled ``net`` is at least ``min_signal``
   (at most ``-min_signal``), else HOLD; stop-loss and take-profit come from the
   largest agreeing contributor;
6. decides whether the combined signal is news: a new action, or a score that
   moved by at least ``publish_step`` since the last published one.

The same code serves the user's call :meth:`StrategyManager.generate_trading_signals`
(arrays of whole histories, processed bar by bar, incrementally when the
arrays grow) and the bus (:meth:`StrategyManager.on_bar`, through
:class:`~keel.strategy_engine.runner.StrategyRunner`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import pandas as pd
import structlog
from mypy_extensions import mypyc_attr

from keel.core.costs import CostModel
from keel.core.messages import BarClosed, FundingRateUpdated, MarketRegime
from keel.strategy_engine.base import BaseStrategy, IncrementalStrategy, StrategySignal, clip01
from keel.strategy_engine.funding_arbitrage import FundingArbitrageStrategy
from keel.strategy_engine.history import BAR_COLUMNS, FUNDING_COLUMNS, SymbolHistory, bar_at, valid_bar
from keel.strategy_engine.mean_reversion import MeanReversionStrategy
from keel.strategy_engine.performance import StrategyPerformance
from keel.strategy_engine.range_trading import RangeTradingStrategy
from keel.strategy_engine.regime import (
    REGIMES,
    UNKNOWN_STATE,
    NoLookAheadRegimeDetector,
    RegimeFit,
    RegimeFitStore,
    RegimeState,
)
from keel.strategy_engine.symbol_history import BarRow
from keel.strategy_engine.trend_following import TrendFollowingStrategy

if TYPE_CHECKING:
    from keel.strategy_engine.regime_prefetch import PrefetchedRegimeFits, SymbolBarViews

_log = structlog.get_logger("keel.strategy")

RegimeWeights = Mapping[str, Mapping[str, float]]
"""Regime value (``trending`` ... ``low_volatility``, ``unknown``) -> strategy name -> weight."""

DEFAULT_REGIME_WEIGHTS: dict[str, dict[str, float]] = {
    "trending": {
        "trend_following": 0.55,
        "mean_reversion": 0.05,
        "range_trading": 0.05,
        "funding_arbitrage": 0.35,
        "grid_trading": 0.05,
        "hyper_rsi": 0.4,
        "volatility_breakout": 0.2,
        "scheduled_dca": 0.2,
    },
    "mean_reverting": {
        "trend_following": 0.05,
        "mean_reversion": 0.45,
        "range_trading": 0.3,
        "funding_arbitrage": 0.2,
        "grid_trading": 0.4,
        "hyper_rsi": 0.1,
        "volatility_breakout": 0.05,
        "scheduled_dca": 0.2,
    },
    "high_volatility": {
        "trend_following": 0.35,
        "mean_reversion": 0.1,
        "range_trading": 0.05,
        "funding_arbitrage": 0.5,
        "grid_trading": 0.05,
        "hyper_rsi": 0.2,
        "volatility_breakout": 0.3,
        "scheduled_dca": 0.1,
    },
    "low_volatility": {
        "trend_following": 0.1,
        "mean_reversion": 0.3,
        "range_trading": 0.4,
        "funding_arbitrage": 0.2,
        "grid_trading": 0.4,
        "hyper_rsi": 0.1,
        "volatility_breakout": 0.4,
        "scheduled_dca": 0.2,
    },
    "unknown": dict.fromkeys(
        (
            "trend_following",
            "mean_reversion",
            "range_trading",
            "funding_arbitrage",
            "grid_trading",
            "hyper_rsi",
            "volatility_breakout",
            "scheduled_dca",
        ),
        0.25,
    ),
}
"""The default regime -> strategy matrix (also in ``config/default.yaml``)."""

OPTIONAL_STRATEGIES = frozenset(("grid_trading", "hyper_rsi", "volatility_breakout", "scheduled_dca"))
"""Strategies outside the default four: a matrix may name them when they do not run (their column is dropped)."""

REGIME_ROWS = (*(r.value for r in REGIMES), MarketRegime.UNKNOWN.value)
"""The rows a regime matrix must have."""


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class StrategyFailure:
    """A strategy raised on a bar of a symbol (``disabled``: it was switched off for that symbol)."""

    strategy: str
    symbol: str
    error_type: str
    message: str
    disabled: bool
    ts: int


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class ManagerUpdate:
    """What one bar produced: the combined signal when it is news, failures, a regime change."""

    signal: StrategySignal | None = None
    failures: tuple[StrategyFailure, ...] = ()
    regime_change: tuple[MarketRegime, RegimeState] | None = None
    intents: tuple[tuple[str, StrategySignal], ...] = ()
    """New standing intents (a target quantity, a ladder) of each voting strategy, by strategy name."""


NO_UPDATE: Final = ManagerUpdate()


class _Combined:
    """The combined view of a symbol after a bar (a signal is built from it on demand).

    A plain class, not a named tuple: compiled, its fields are read natively on every bar.
    ``weights`` are the strategies' regime weights (None: worked out from
    ``regime`` and ``voting`` when a signal needs them).
    """

    def __init__(
        self,
        score: float,
        strength: float,
        confidence: float,
        factor: float,
        leader: int | None,
        weights: tuple[float, ...] | None,
        contributions: tuple[float, ...],
        regime: RegimeState = UNKNOWN_STATE,
        voting: tuple[bool, ...] = (),
    ) -> None:
        self.score = score
        self.strength = strength
        self.confidence = confidence
        self.factor = factor
        self.leader = leader
        self.weights = weights
        self.contributions = contributions
        self.regime = regime
        self.voting = voting

    def as_tuple(self) -> tuple[object, ...]:
        """Return the fields in order."""
        return (
            self.score,
            self.strength,
            self.confidence,
            self.factor,
            self.leader,
            self.weights,
            self.contributions,
            self.regime,
            self.voting,
        )

    @property
    def action(self) -> str:
        return "BUY" if self.score > 0.0 else "SELL" if self.score < 0.0 else "HOLD"


_FLAT = _Combined(0.0, 0.0, 0.0, 1.0, None, (), ())
_REPUBLISH = "republish"
"""A published action no signal has: the next signal is news."""


@dataclass(slots=True)
class _SymbolBook:
    """Everything the manager keeps for one symbol; per-strategy lists follow the manager's strategy order."""

    history: SymbolHistory | None
    detector: NoLookAheadRegimeDetector | None
    views: list[StrategySignal | None]
    view_scores: list[float]
    """Each view's score (0 for none), kept with the view: it is read every bar."""
    scores: list[float]
    intents: list[tuple[object, ...] | None]
    consecutive_errors: list[int]
    enabled: list[bool]
    intents_pending: bool = False
    regime: RegimeState = UNKNOWN_STATE
    combined: _Combined = _FLAT
    combine_inputs: tuple[object, ...] | None = None
    combine_settings: tuple[float, bool] | None = None
    published_action: str | None = None
    published_score: float = 0.0
    last_close: float | None = None
    last_key: int | None = None
    processed: int = 0
    bars: int = 0
    rejected_bars: int = 0
    rejected_funding: int = 0
    bar_views: SymbolBarViews | None = None
    prefetched: list[bool] | None = None
    """Which strategies' views come from :attr:`bar_views` (None: all run here)."""
    run_here: tuple[int, ...] = ()
    """While views come from :attr:`bar_views`: the strategies that still run here."""
    voting: tuple[bool, ...] | None = None
    """Which strategies vote (enabled, not stopped, not gated); None: to be worked out again."""


@mypyc_attr(allow_interpreted_subclasses=True)
class StrategyManager:
    """Run strategies on every symbol and combine their views by regime.

    Parameters
    ----------
    strategies
        The strategies (names must be unique); the four production
        strategies with default parameters when None.
    regime_weights
        The regime -> strategy weight matrix with a row for every regime of
        :data:`REGIME_ROWS`; :data:`DEFAULT_REGIME_WEIGHTS` when None and the
        strategies are the default ones, else equal weights.
    detector_factory
        Builds a symbol's regime detector; ``NoLookAheadRegimeDetector`` when
        None. Pass ``False`` to run without regime detection (the ``unknown``
        row always applies).
    min_signal
        Smallest combined ``|score|`` that is a BUY or SELL, in [0, 1].
    publish_step
        Change of the combined score that makes a new signal with the same action news.
    volatility_scaling
        Scale confidence down when the GARCH forecast is above its long-run level.
    max_consecutive_errors
        Failures in a row after which a strategy is switched off for a symbol.
    fee_rate
        Fee per unit of exposure change in the performance records.
    history_bars
        Bars kept per symbol for the strategies (None: all).
    name
        The manager's name (the ``strategy`` of the signals it publishes).
    """

    def __init__(
        self,
        strategies: Sequence[BaseStrategy] | None = None,
        regime_weights: RegimeWeights | None = None,
        detector_factory: Callable[[], NoLookAheadRegimeDetector] | bool | None = None,
        *,
        min_signal: float = 0.05,
        publish_step: float = 0.1,
        volatility_scaling: bool = True,
        max_consecutive_errors: int = 10,
        fee_rate: float = 0.0005,
        history_bars: int | None = 20_000,
        name: str = "strategy_manager",
    ) -> None:
        if strategies is None:
            strategies = default_strategies()
            if regime_weights is None:
                regime_weights = DEFAULT_REGIME_WEIGHTS
        self.strategies: tuple[BaseStrategy, ...] = tuple(strategies)
        if not self.strategies:
            raise ValueError("a strategy manager needs at least one strategy")
        names = [s.name for s in self.strategies]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"strategy names must be unique, got {', '.join(duplicates)} more than once")
        if not 0.0 <= min_signal <= 1.0:
            raise ValueError(f"min_signal must lie in [0, 1], got {min_signal}")
        if not publish_step >= 0.0:
            raise ValueError(f"publish_step must be >= 0, got {publish_step}")
        if max_consecutive_errors < 1:
            raise ValueError(f"max_consecutive_errors must be >= 1, got {max_consecutive_errors}")
        self.name = name
        self.regime_weights = _checked_weights(regime_weights, names)
        if detector_factory is None or detector_factory is True:
            detector_factory = NoLookAheadRegimeDetector
        self._detector_factory = detector_factory or None
        self.min_signal = min_signal
        self.publish_step = publish_step
        self.volatility_scaling = volatility_scaling
        self.max_consecutive_errors = max_consecutive_errors
        self.fee_rate = fee_rate
        self.costs: CostModel | None = None
        self._stopped = [False] * len(self.strategies)
        self._gates: list[str | None] = [None] * len(self.strategies)
        self.history_bars = history_bars
        self.performance = {n: StrategyPerformance() for n in (*names, name)}
        self._performances = [self.performance[n] for n in names]
        self._performance = self.performance[name]
        self._incremental = [isinstance(s, IncrementalStrategy) for s in self.strategies]
        self._no_contributions = (0.0,) * len(self.strategies)
        self._regime_columns = [tuple(self.regime_weights[r.value][n] for r in REGIMES) for n in names]
        self._unknown_weights = [self.regime_weights[MarketRegime.UNKNOWN.value][n] for n in names]
        self._books: dict[str, _SymbolBook] = {}
        self.signals_published = 0
        self._fit_executor: Executor | None = None
        self._fit_store: RegimeFitStore | None = None
        self._bar_view_store: PrefetchedRegimeFits | None = None

    # --- the event-driven path ----------------------------------------------------

    def on_bar(self, bar: BarClosed) -> ManagerUpdate:
        """Process one closed bar of any symbol; return what it produced."""
        symbol = bar.symbol
        book = self._books.get(symbol)
        if book is None or book.history is None:
            book = self._book(symbol, event_driven=True)
        history = book.history
        assert history is not None
        ts, open_, high, low, close, volume = bar.ts_event, bar.open, bar.high, bar.low, bar.close, bar.volume
        previous_key = history.last_timestamp
        if not valid_bar(ts, open_, high, low, close, volume, previous_key):
            book.rejected_bars += 1
            return NO_UPDATE
        row = history.append_bar(ts, open_, high, low, close, volume)
        return self._process(book, symbol, history.view(), len(history) - 1, ts, close, True, (row, previous_key))

    def on_funding(self, event: FundingRateUpdated) -> None:
        """Record a settled funding rate of a symbol (a non-finite or out-of-order one is counted and skipped)."""
        book = self._book(event.symbol, event_driven=True)
        history = book.history
        assert history is not None
        rate = float(event.rate)
        mark = None if event.mark_price is None else float(event.mark_price)
        previous = history.last_funding_time
        in_order = previous is None or event.funding_time > previous
        if not (math.isfinite(rate) and in_order and (mark is None or (math.isfinite(mark) and mark > 0))):
            book.rejected_funding += 1
            return
        history.append_funding(event.funding_time, rate, mark)

    # --- the user's call ----------------------------------------------------------

    def generate_trading_signals(self, market_data: Mapping[str, Any]) -> list[StrategySignal]:
        """Return the combined signal at the last bar of each symbol (UC-1.1).

        Parameters
        ----------
        market_data
            One symbol's data (a mapping with ``symbol``, ``close`` and
            optionally ``timestamp``, ``open``, ``high``, ``low``, ``volume``,
            ``funding_time``, ``funding_rate``, ``mark_price`` as arrays), or a
            mapping of symbol -> such data. Times are nanoseconds since the
            epoch, or dates (naive ones are UTC). Each bar is processed once,
            in order; a later call whose arrays extend the earlier ones
            processes only the new bars.

        Raises
        ------
        ValueError
            If a symbol's data is empty, misses ``close``, has columns of
            different lengths, a non-finite or non-positive price, timestamps
            that do not rise bar by bar, or an open or close outside its bar's
            low and high (named with its column and index).
        """
        per_symbol = {market_data["symbol"]: market_data} if "symbol" in market_data else dict(market_data)
        signals = []
        for symbol, data in per_symbol.items():
            if not isinstance(data, Mapping) or data.get("symbol", symbol) != symbol:
                raise ValueError(f"market data of {symbol} must be a mapping whose symbol is {symbol}")
            view = {**data, "symbol": symbol}
            for column in _TIME_COLUMNS:
                if column in view:
                    view[column] = _as_nanoseconds(view[column])
            length = _check_arrays(symbol, view)
            book = self._book(symbol, event_driven=False)
            start = self._resume_index(book, view, length)
            if start == 0 and book.processed:
                book = self._books[symbol] = self._new_book(symbol, event_driven=False)
            for index in range(start, length):
                key, _, _, _, close, _ = bar_at(view, index)
                self._process(book, symbol, view, index, key, close, False)
                book.last_key = key
                book.processed = index + 1
            signals.append(self._signal(book, symbol))
        return signals

    @staticmethod
    def _resume_index(book: _SymbolBook, view: Mapping[str, Any], length: int) -> int:
        """Return the first bar to process: after the last one seen when the data extends it, else 0."""
        processed = book.processed
        if book.last_key is not None and 0 < processed <= length and bar_at(view, processed - 1)[0] == book.last_key:
            return processed
        return 0

    # --- status ---------------------------------------------------------------------

    def get_system_status(self) -> dict[str, Any]:
        """Return the strategies' health and performance, each symbol's regime and signal (UC-1.1)."""
        books = sorted(self._books.items())
        disabled = [[symbol for symbol, book in books if not book.enabled[i]] for i in range(len(self.strategies))]
        active = [s.name for i, s in enumerate(self.strategies) if not books or len(disabled[i]) < len(books)]
        return {
            "health": "DEGRADED" if any(disabled) else "OK",
            "active_strategies": len(active),
            "strategies": {
                s.name: {
                    "type": type(s).__name__,
                    "enabled": not self._stopped[i],
                    "gate": self._gates[i],
                    "parameters": dict(s.parameters),
                    "disabled_symbols": disabled[i],
                    "performance": self.performance[s.name].as_dict(),
                }
                for i, s in enumerate(self.strategies)
            },
            "combined_performance": self.performance[self.name].as_dict(),
            "symbols": {symbol: self._symbol_status(symbol, book) for symbol, book in books},
            "bars_processed": sum(book.bars for _, book in books),
            "rejected_bars": sum(book.rejected_bars for _, book in books),
            "rejected_funding": sum(book.rejected_funding for _, book in books),
            "signals_published": self.signals_published,
        }

    def unready_strategies(self) -> dict[str, str]:
        """Return, by strategy, why it never formed a view: no symbol gave it the bars its warm-up needs.

        The bars counted are those the manager took (a warm-up's included).
        Empty when every strategy had enough bars of some symbol, or no bar came yet.
        """
        most = max((book.bars for book in self._books.values()), default=0)
        if not most:
            return {}
        return {
            strategy.name: f"needs {strategy.warmup_bars} bars of a symbol, the run gave at most {most}"
            for strategy in self.strategies
            if strategy.warmup_bars > most
        }

    def reset_performance(self) -> None:
        """Start every performance record afresh (after a warm-up on history)."""
        self.performance = {n: StrategyPerformance() for n in self.performance}
        self._performances = [self.performance[s.name] for s in self.strategies]
        self._performance = self.performance[self.name]
        self.signals_published = 0

    def enable_all(self) -> list[tuple[str, str]]:
        """Switch every strategy back on for every symbol with a clean error count; return those that were off.

        A warm-up on history never keeps a strategy off for the run: what
        failed on data before the run gets the run's own chances.
        """
        enabled = []
        for symbol, book in sorted(self._books.items()):
            for i, strategy in enumerate(self.strategies):
                if not book.enabled[i]:
                    enabled.append((strategy.name, symbol))
                book.enabled[i] = True
                book.voting = None
                book.consecutive_errors[i] = 0
        return enabled

    def republish(self) -> None:
        """Make every symbol's next combined signal news, whatever it is (after a pause)."""
        for book in self._books.values():
            book.published_action = _REPUBLISH
            book.intents = [None] * len(self.strategies)
            book.intents_pending = True

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        """Return each strategy's parameters by strategy name."""
        return {s.name: dict(s.parameters) for s in self.strategies}

    @property
    def detector_factory(self) -> Callable[[], NoLookAheadRegimeDetector] | None:
        """Return what builds each symbol's regime detector (None: the manager detects no regimes)."""
        return self._detector_factory

    def use_fit_executor(self, executor: Executor | None) -> None:
        """Run every symbol's regime refits in ``executor`` (None: inline); decisions do not depend on it."""
        self._fit_executor = executor
        for book in self._books.values():
            if book.detector is not None:
                book.detector.use_executor(executor)

    def use_fit_store(self, store: RegimeFitStore | None) -> None:
        """Take every symbol's regime refits from ``store`` (None: each detector fits its own); no decision changes."""
        self._fit_store = store
        for book in self._books.values():
            if book.detector is not None:
                book.detector.use_fit_store(store)

    def bar_only_strategies(self) -> list[tuple[int, IncrementalStrategy]]:
        """Return (index, blank copy) of each strategy whose views depend on its symbol's bars alone.

        Those are the incremental strategies that read the bar only
        (:attr:`~keel.strategy_engine.base.IncrementalStrategy.reads_bar_only`),
        whose HOLD means flat and whose ``generate_signal`` is the incremental one.
        """
        return [
            (i, strategy.blank_copy())
            for i, strategy in enumerate(self.strategies)
            if isinstance(strategy, IncrementalStrategy)
            and strategy.reads_bar_only
            and strategy.hold_means_flat
            and type(strategy).generate_signal is IncrementalStrategy.generate_signal
        ]

    def use_bar_views(self, store: PrefetchedRegimeFits | None) -> None:
        """Take each symbol's regime views and bar-only strategies' views from ``store``; no decision changes.

        The store's worker makes them from the same bars with the same code.
        Where its views stop (a worker failure, or the store is taken away
        with None), the symbol's detector and those strategies are brought up
        to date from the recorded bars at its next bar and run here again.
        """
        self._bar_view_store = store
        for symbol, book in self._books.items():
            if book.history is None:
                continue
            if store is not None:
                self._attach_bar_views(book, symbol, store)
            elif book.bar_views is not None:
                book.bar_views.stop()

    def _attach_bar_views(self, book: _SymbolBook, symbol: str, store: PrefetchedRegimeFits) -> None:
        views = store.symbol_views(symbol)
        if views is None:
            return
        sent = set(views.strategies)
        book.prefetched = [i in sent and book.enabled[i] for i in range(len(self.strategies))]
        book.run_here = tuple(i for i, prefetched in enumerate(book.prefetched) if not prefetched)
        for i, prefetched in enumerate(book.prefetched):
            if prefetched:
                book.consecutive_errors[i] = 0
        book.bar_views = views

    def _leave_bar_views(self, book: _SymbolBook, symbol: str, through: int | None) -> None:
        """Bring the symbol's detector and prefetched strategies through bar ``through``; run them here from now.

        ``through`` is the close time of the last bar the manager took.
        """
        views, prefetched = book.bar_views, book.prefetched
        assert views is not None and prefetched is not None
        book.bar_views = book.prefetched = None
        detector = self._new_detector() if views.states_sent and book.detector is not None else None
        strategies = [s for i, s in enumerate(self.strategies) if prefetched[i]]
        for strategy in strategies:
            assert isinstance(strategy, IncrementalStrategy)
        views.catch_up(through, detector, cast(list[IncrementalStrategy], strategies))
        if detector is not None:
            book.detector = detector
        _log.info("bar views stopped: running here", symbol=symbol, through=through, views_taken=views.taken)

    def fit_due_next(self, symbol: str) -> Future[RegimeFit] | None:
        """Return the regime refit the symbol's next bar applies (to wait for off the event loop), or None."""
        book = self._books.get(symbol)
        return None if book is None or book.detector is None else book.detector.fit_due_next()

    def regime(self, symbol: str) -> RegimeState:
        """Return the latest regime view of a symbol (UNKNOWN before its first fit)."""
        book = self._books.get(symbol)
        return UNKNOWN_STATE if book is None else book.regime

    def weights(self, symbol: str) -> dict[str, float]:
        """Return the current strategy weights of a symbol (normalized over its running strategies)."""
        book = self._books.get(symbol)
        if book is None:
            vector = self._weight_vector(UNKNOWN_STATE, [True] * len(self.strategies))
        else:
            vector = self._weight_vector(book.regime, book.enabled)
        return {s.name: w for s, w in zip(self.strategies, vector, strict=True)}

    def _symbol_status(self, symbol: str, book: _SymbolBook) -> dict[str, Any]:
        regime = book.regime
        combined = book.combined
        return {
            "bars": book.bars,
            "rejected_bars": book.rejected_bars,
            "regime": regime.regime.value,
            "regime_probabilities": regime.as_dict(),
            "volatility": regime.volatility,
            "weights": self.weights(symbol),
            "signal": {"action": combined.action, "strength": combined.strength, "confidence": combined.confidence},
        }

    # --- the shared core ----------------------------------------------------------

    def _book(self, symbol: str, *, event_driven: bool) -> _SymbolBook:
        book = self._books.get(symbol)
        # A symbol fed by events and then by arrays (or the reverse) starts over.
        if book is None or (book.history is not None) != event_driven:
            book = self._books[symbol] = self._new_book(symbol, event_driven=event_driven)
            if event_driven and self._bar_view_store is not None:
                self._attach_bar_views(book, symbol, self._bar_view_store)
        return book

    def _new_detector(self) -> NoLookAheadRegimeDetector | None:
        detector = self._detector_factory() if self._detector_factory else None
        if detector is not None and self._fit_executor is not None:
            detector.use_executor(self._fit_executor)
        if detector is not None and self._fit_store is not None:
            detector.use_fit_store(self._fit_store)
        return detector

    def _new_book(self, symbol: str, *, event_driven: bool) -> _SymbolBook:
        count = len(self.strategies)
        return _SymbolBook(
            history=SymbolHistory(symbol, self.history_bars) if event_driven else None,
            detector=self._new_detector(),
            views=[None] * count,
            view_scores=[0.0] * count,
            scores=[0.0] * count,
            intents=[None] * count,
            consecutive_errors=[0] * count,
            enabled=[True] * count,
        )

    def _process(
        self,
        book: _SymbolBook,
        symbol: str,
        market_data: Mapping[str, Any],
        index: int,
        ts: int,
        close: float,
        news_only: bool,
        known_bar: tuple[BarRow, int | None] | None = None,
    ) -> ManagerUpdate:
        book.bars += 1
        views = book.bar_views
        taken = None if views is None or known_bar is None else views.take(ts, known_bar[1])
        if taken is None:
            if views is not None:
                self._leave_bar_views(book, symbol, None if known_bar is None else known_bar[1])
            regime_change = None if book.detector is None else self._update_regime(book, close)
            failures = self._run_strategies(book, symbol, market_data, index, ts, known_bar)
        else:
            state, changes = taken
            regime_change = self._update_regime(book, close) if state is None else self._new_regime(book, state)
            failures = self._run_strategies(book, symbol, market_data, index, ts, known_bar, book.run_here)
            if changes:
                self._take_views(book, changes)
        previous_close = book.last_close
        bar_return = 0.0 if previous_close is None else close / previous_close - 1.0
        book.last_close = close
        fee_rate = self.fee_rate
        scores, view_scores = book.scores, book.view_scores
        performances = self._performances
        # By index, not zip(..., strict=True) and a slice copy: compiled, those are generic calls on every bar.
        for i in range(len(performances)):
            held, score = scores[i], view_scores[i]
            if held == 0.0 and score == 0.0:
                # StrategyPerformance.record's flat-throughout case, inlined: most strategies are flat most bars.
                performances[i].bars += 1
            else:
                performances[i].record(held, bar_return, score, fee_rate)
            scores[i] = score
        previous = book.combine_inputs
        if previous is not None and previous[0] is not book.regime:
            # _combined's first case, inlined: a new regime view (every bar once the detector is fitted).
            book.combine_inputs = (book.regime,)
            combined = self._combine(book)
        else:
            combined = self._combined(book)
        held_score, score = book.combined.score, combined.score
        if held_score == 0.0 and score == 0.0:
            self._performance.bars += 1
        else:
            self._performance.record(held_score, bar_return, score, fee_rate)
        book.combined = combined
        signal = self._news(book, symbol) if news_only else None
        intents = self._new_intents(book) if news_only and book.intents_pending else ()
        if signal is None and not failures and regime_change is None and not intents:
            return NO_UPDATE
        return ManagerUpdate(signal, tuple(failures), regime_change, intents)

    def _new_intents(self, book: _SymbolBook) -> tuple[tuple[str, StrategySignal], ...]:
        """Return the voting strategies' target quantities and ladders that changed since they were last returned."""
        book.intents_pending = False
        found: list[tuple[str, StrategySignal]] = []
        for i, view in enumerate(book.views):
            if view is None or (view.target_quantity is None and view.ladder is None):
                continue
            intent = (view.target_quantity, view.ladder)
            if intent == book.intents[i] or self._stopped[i] or self._gates[i] is not None:
                continue
            book.intents[i] = intent
            found.append((self.strategies[i].name, view))
        return tuple(found)

    def _update_regime(self, book: _SymbolBook, close: float) -> tuple[MarketRegime, RegimeState] | None:
        if book.detector is None:
            return None
        previous = book.regime.regime
        book.regime = book.detector.update(close)
        return (previous, book.regime) if book.regime.regime is not previous else None

    @staticmethod
    def _new_regime(book: _SymbolBook, state: RegimeState) -> tuple[MarketRegime, RegimeState] | None:
        """:meth:`_update_regime` with the detector's view made elsewhere."""
        previous = book.regime.regime
        book.regime = state
        return (previous, state) if state.regime is not previous else None

    @staticmethod
    def _take_views(book: _SymbolBook, changes: Sequence[tuple[int, StrategySignal]]) -> None:
        """Take the prefetched strategies' new views of a bar, as :meth:`_run_strategies` takes them."""
        prefetched = book.prefetched
        assert prefetched is not None
        views = book.views
        for i, signal in changes:
            if prefetched[i]:
                views[i] = signal
                book.view_scores[i] = signal.score
                if signal.target_quantity is not None or signal.ladder is not None:
                    book.intents_pending = True

    def _run_strategies(
        self,
        book: _SymbolBook,
        symbol: str,
        market_data: Mapping[str, Any],
        index: int,
        ts: int,
        known_bar: tuple[BarRow, int | None] | None,
        only: Sequence[int] | None = None,
    ) -> list[StrategyFailure]:
        """Run each enabled strategy (of those ``only`` lists, by index) on the bar; return their failures."""
        failures = []
        views = book.views
        strategies = self.strategies
        for i in range(len(strategies)) if only is None else only:
            if not book.enabled[i]:
                continue
            strategy = strategies[i]
            try:
                if known_bar is not None and self._incremental[i]:
                    # _incremental[i] holds isinstance(strategy, IncrementalStrategy), asked once.
                    row, previous_key = known_bar
                    signal = cast(IncrementalStrategy, strategy).signal_after(
                        symbol, market_data, index, row, previous_key
                    )
                else:
                    signal = strategy.generate_signal(market_data, index)
                # An unchanged view (the same object) needs no look: nothing below would take it.
                if signal is not None and signal is not views[i] and not _no_new_view(strategy, signal):
                    if not (isinstance(signal, StrategySignal) and signal.symbol == symbol):
                        raise TypeError(
                            f"generate_signal must return a StrategySignal of {symbol} or None, got {signal!r}"
                        )
                    views[i] = signal
                    book.view_scores[i] = signal.score
                    if signal.target_quantity is not None or signal.ladder is not None:
                        book.intents_pending = True
            except Exception as error:
                failures.append(self._failed(i, book, symbol, ts, error))
                continue
            book.consecutive_errors[i] = 0
        return failures

    def _failed(self, i: int, book: _SymbolBook, symbol: str, ts: int, error: Exception) -> StrategyFailure:
        name = self.strategies[i].name
        book.consecutive_errors[i] += 1
        self._performances[i].errors += 1
        disabled = book.consecutive_errors[i] >= self.max_consecutive_errors
        if disabled:
            book.enabled[i] = False
            book.voting = None
            book.views[i] = None
            book.view_scores[i] = 0.0
        _log.error("strategy raised", strategy=name, symbol=symbol, ts=ts, error=repr(error), disabled=disabled)
        return StrategyFailure(name, symbol, type(error).__name__, str(error), disabled, ts)

    def _weight_vector(self, regime: RegimeState, enabled: Sequence[bool]) -> tuple[float, ...]:
        probabilities = regime.probabilities
        if probabilities is None:
            raw = [w if on else 0.0 for w, on in zip(self._unknown_weights, enabled, strict=True)]
        else:
            p0, p1, p2, p3 = probabilities
            raw = [
                p0 * w0 + p1 * w1 + p2 * w2 + p3 * w3 if on else 0.0
                for (w0, w1, w2, w3), on in zip(self._regime_columns, enabled, strict=True)
            ]
        total = sum(raw)
        return tuple([w / total for w in raw]) if total > 0.0 else (0.0,) * len(raw)

    def set_strategy_enabled(self, name: str, enabled: bool) -> None:
        """Let an operator stop (or restart) one strategy's vote; it keeps updating while stopped.

        Raises
        ------
        KeyError
            If no strategy has that name.
        """
        names = [s.name for s in self.strategies]
        if name not in names:
            raise KeyError(name)
        self._stopped[names.index(name)] = not enabled
        self._recheck_intents()
        self._recount_votes()

    def use_costs(self, costs: CostModel | None) -> None:
        """Give every strategy (and any swapped in later) the run's shared cost model."""
        self.costs = costs
        for strategy in self.strategies:
            strategy.use_costs(costs)

    def replace_strategy(self, strategy: BaseStrategy) -> BaseStrategy:
        """Swap in ``strategy`` for the running one of the same name (new parameters); return the old one.

        Call it between bars. The new instance warms up from the kept history
        on its next bar; until it has a view of its own the strategy's vote is flat.

        Raises
        ------
        KeyError
            If no strategy has that name.
        """
        names = [s.name for s in self.strategies]
        if strategy.name not in names:
            raise KeyError(strategy.name)
        index = names.index(strategy.name)
        previous = self.strategies[index]
        if self.costs is not None:
            strategy.use_costs(self.costs)
        self.strategies = (*self.strategies[:index], strategy, *self.strategies[index + 1 :])
        self._incremental[index] = isinstance(strategy, IncrementalStrategy)
        for book in self._books.values():
            book.views[index] = None
            book.view_scores[index] = 0.0
            if book.prefetched is not None:
                book.prefetched[index] = False
                book.run_here = tuple(i for i, prefetched in enumerate(book.prefetched) if not prefetched)
        return previous

    def set_strategy_gate(self, name: str, reason: str | None) -> None:
        """Keep a strategy out of the vote while a gate holds it (``reason``), or let it back in (None).

        Separate from :meth:`set_strategy_enabled`: an operator's switch and the
        backtest gate each hold a strategy on their own account.

        Raises
        ------
        KeyError
            If no strategy has that name.
        """
        names = [s.name for s in self.strategies]
        if name not in names:
            raise KeyError(name)
        self._gates[names.index(name)] = reason
        self._recheck_intents()
        self._recount_votes()

    def _recount_votes(self) -> None:
        """Work out every symbol's voting strategies, and so its combined view, again at its next bar."""
        for book in self._books.values():
            book.voting = None
            # A gate is not among the inputs _combined compares: without this, the kept view would stand until
            # some other input moved.
            book.combine_inputs = None

    def _recheck_intents(self) -> None:
        """Look at every symbol's standing intents again at its next bar (a strategy's vote was let in or held)."""
        for book in self._books.values():
            book.intents_pending = True

    def strategy_gate(self, name: str) -> str | None:
        """Return why a gate keeps the strategy out of the vote (None: it does not)."""
        return self._gates[[s.name for s in self.strategies].index(name)]

    def strategy_enabled(self, name: str) -> bool:
        """Return whether an operator left the strategy's vote on."""
        return not self._stopped[[s.name for s in self.strategies].index(name)]

    def _combined(self, book: _SymbolBook) -> _Combined:
        """Return the combined view, recomputed only when something it depends on changed since the last bar."""
        previous = book.combine_inputs
        if previous is not None and previous[0] is not book.regime:
            # A new regime view (every bar once the detector is fitted): no need to compare the rest.
            book.combine_inputs = (book.regime,)
            return self._combine(book)
        # The settings by value: compiled, every read of a float attribute is a new object.
        kept = book.combine_settings
        if (
            previous is not None
            and kept is not None
            and kept[0] == self.min_signal
            and kept[1] == self.volatility_scaling
            and _same_inputs(previous, book.regime, book.views, book.enabled, self._stopped)
        ):
            return book.combined
        book.combine_inputs = (book.regime, *book.views, *book.enabled, *self._stopped)
        book.combine_settings = (self.min_signal, self.volatility_scaling)
        return self._combine(book)

    def _combine(self, book: _SymbolBook) -> _Combined:
        voting = book.voting
        if voting is None:
            voting = book.voting = tuple(
                on and not stopped and gate is None
                for on, stopped, gate in zip(book.enabled, self._stopped, self._gates, strict=True)
            )
        scores = book.scores
        regime = book.regime
        # The volatility factor: long-run over forecast volatility, capped at 1 (1 without a GARCH view).
        variance, long_run = regime.variance, regime.long_run_variance
        if not self.volatility_scaling or variance is None or long_run is None or not variance > 0.0:
            factor = 1.0
        else:
            factor = min(1.0, math.sqrt(long_run / variance))
        if not any(scores):
            # Every view flat (most bars): no vote to weigh, and the weights are worked out only for a signal.
            return _Combined(0.0, 0.0, 0.0, factor, None, None, self._no_contributions, regime, voting)
        weights = self._weight_vector(regime, voting)
        # Flat views abstain: the vote is shared by the strategies that hold a position view.
        # (Plain loops, not sum() of generators: this runs every bar, and adds in the same order.)
        voting_weight = 0.0
        for w, score in zip(weights, scores, strict=True):
            if score != 0.0:
                voting_weight += w
        if not voting_weight > 0.0:
            return _Combined(0.0, 0.0, 0.0, factor, None, weights, self._no_contributions)
        contributions = tuple([w * score / voting_weight for w, score in zip(weights, scores, strict=True)])
        net = sum(contributions)
        if net == 0.0 or abs(net) * factor < self.min_signal:
            return _Combined(0.0, 0.0, 0.0, factor, None, weights, contributions)
        sign = 1 if net > 0.0 else -1
        agreeing_weight = confidence = 0.0
        leader = None
        for i, view in enumerate(book.views):
            if view is not None and view.direction == sign and weights[i] > 0.0:
                agreeing_weight += weights[i]
                confidence += weights[i] * view.confidence
                if leader is None or abs(contributions[i]) > abs(contributions[leader]):
                    leader = i
        confidence /= agreeing_weight
        strength = clip01(abs(net) / confidence)
        confidence = clip01(confidence * factor)
        return _Combined(sign * strength * confidence, strength, confidence, factor, leader, weights, contributions)

    def _news(self, book: _SymbolBook, symbol: str) -> StrategySignal | None:
        combined = book.combined
        action = combined.action
        score = combined.score
        if action == book.published_action and abs(score - book.published_score) < max(self.publish_step, 1e-12):
            return None
        if book.published_action is None and action == "HOLD":
            # Nothing to say before the first view: flat is where every symbol starts.
            return None
        book.published_action = action
        book.published_score = score
        self.signals_published += 1
        return self._signal(book, symbol)

    def _signal(self, book: _SymbolBook, symbol: str) -> StrategySignal:
        combined = book.combined
        names = [s.name for s in self.strategies]
        weights = combined.weights
        if weights is None:
            weights = self._weight_vector(combined.regime, combined.voting)
        metadata = {
            "regime": book.regime.regime.value,
            "regime_probabilities": book.regime.as_dict(),
            "weights": dict(zip(names, weights, strict=True)),
            "contributions": dict(zip(names, combined.contributions, strict=True)),
            "volatility_factor": combined.factor,
        }
        leader = None if combined.leader is None else book.views[combined.leader]
        return StrategySignal(
            symbol,
            combined.action,
            combined.strength,
            combined.confidence,
            stop_loss=None if leader is None else leader.stop_loss,
            take_profit=None if leader is None else leader.take_profit,
            metadata=metadata,
        )


def _no_new_view(strategy: BaseStrategy, signal: object) -> bool:
    """Tell a bare HOLD of a strategy whose HOLD does not mean flat (see ``BaseStrategy.hold_means_flat``)."""
    return (
        not strategy.hold_means_flat
        and isinstance(signal, StrategySignal)
        and signal.action == "HOLD"
        and signal.strength == 0.0
        and signal.confidence == 0.0
    )


def default_strategies() -> list[BaseStrategy]:
    """Return the four production strategies with their default parameters."""
    return [
        TrendFollowingStrategy(),
        MeanReversionStrategy(),
        RangeTradingStrategy(),
        FundingArbitrageStrategy(),
    ]


def _checked_weights(weights: RegimeWeights | None, names: Sequence[str]) -> dict[str, dict[str, float]]:
    if weights is None:
        return {row: dict.fromkeys(names, 1.0) for row in REGIME_ROWS}
    missing_rows = [row for row in REGIME_ROWS if row not in weights]
    unknown_rows = sorted(set(weights) - set(REGIME_ROWS))
    if missing_rows or unknown_rows:
        raise ValueError(
            f"the regime weight matrix needs exactly the rows {', '.join(REGIME_ROWS)}; "
            f"missing {missing_rows or 'none'}, unknown {unknown_rows or 'none'}"
        )
    checked = {}
    for row in REGIME_ROWS:
        entries = {n: w for n, w in weights[row].items() if n in names or n not in OPTIONAL_STRATEGIES}
        unknown = sorted(set(entries) - set(names))
        if unknown:
            raise ValueError(f"regime weights row {row} names unknown strategies {', '.join(unknown)}")
        for name, value in entries.items():
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"regime weight {row}.{name} must be finite and >= 0, got {value!r}")
        if not sum(entries.values()) > 0.0:
            raise ValueError(f"regime weights row {row} must give some strategy a positive weight")
        checked[row] = {name: float(entries.get(name, 0.0)) for name in names}
    return checked


def _check_arrays(symbol: str, data: Mapping[str, Any]) -> int:
    if "close" not in data:
        raise ValueError(f"market data of {symbol} has no close column")
    length = len(data["close"])
    if length == 0:
        raise ValueError(f"market data of {symbol} has no bars")
    for key in BAR_COLUMNS:
        if key in data and len(data[key]) != length:
            raise ValueError(f"market data of {symbol}: column {key} has {len(data[key])} rows, close has {length}")
    for key in ("open", "high", "low", "close"):
        if key in data:
            values = np.asarray(data[key], dtype=float)
            bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
            if bad.size:
                raise ValueError(
                    f"market data of {symbol}: {key}[{bad[0]}] = {values[bad[0]]!r} is not a positive finite price"
                )
    _check_bar_order(symbol, data)
    funding_lengths = {key: len(data[key]) for key in FUNDING_COLUMNS if key in data}
    if len(set(funding_lengths.values())) > 1:
        raise ValueError(f"market data of {symbol}: funding columns have different lengths {funding_lengths}")
    return length


_TIME_COLUMNS = ("timestamp", "funding_time")


def _same_inputs(
    previous: tuple[object, ...],
    regime: RegimeState,
    views: list[StrategySignal | None],
    enabled: list[bool],
    stopped: list[bool],
) -> bool:
    """Return whether ``previous`` holds ``(regime, *views, *enabled, *stopped)``, the very objects, in order.

    Compared in place: building that tuple on every bar only to compare it would be most of the work.
    (The lists are typed: compiled, a loop over a list is native, over a ``Sequence`` generic.)
    """
    count = len(views)
    if len(previous) != 1 + count + len(enabled) + len(stopped) or previous[0] is not regime:
        return False
    for i in range(count):
        if previous[1 + i] is not views[i]:
            return False
    for i in range(len(enabled)):
        if previous[1 + count + i] is not enabled[i]:
            return False
    offset = 1 + count + len(enabled)
    return all(previous[offset + i] is stopped[i] for i in range(len(stopped)))


def _as_nanoseconds(values: Any) -> Any:
    """Return a time column of dates as int64 nanoseconds since the epoch (naive dates are UTC); else as it is."""
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.datetime64):
        return array.astype("datetime64[ns]").astype(np.int64)
    if array.dtype == object and len(array) and isinstance(array[0], datetime):
        return pd.to_datetime(array, utc=True).as_unit("ns").asi8
    return values


def _check_bar_order(symbol: str, data: Mapping[str, Any]) -> None:
    """Raise unless timestamps rise bar by bar and each bar's open and close lie within its low and high."""
    if "timestamp" in data:
        steps = np.diff(np.asarray(data["timestamp"], dtype=np.int64))
        back = np.flatnonzero(steps <= 0)
        if back.size:
            i = int(back[0]) + 1
            raise ValueError(
                f"market data of {symbol}: timestamp[{i}] = {data['timestamp'][i]} does not follow "
                f"timestamp[{i - 1}] = {data['timestamp'][i - 1]}: bars must come in time order, each once"
            )
    if "high" in data and "low" in data:
        high, low = np.asarray(data["high"], dtype=float), np.asarray(data["low"], dtype=float)
        for key in ("open", "close"):
            if key in data:
                values = np.asarray(data[key], dtype=float)
                outside = np.flatnonzero((values < low) | (values > high))
                if outside.size:
                    i = int(outside[0])
                    raise ValueError(
                        f"market data of {symbol}: {key}[{i}] = {float(values[i])!r} is outside the bar's "
                        f"low {float(low[i])!r} and high {float(high[i])!r}"
                    )
