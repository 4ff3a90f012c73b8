"""The microstructure engine: the four analyzers per symbol, summarized on the bus.

:class:`MicrostructureEngine` subscribes to ``BookUpdated``, ``TradeTick`` and
``BarClosed`` and keeps, per symbol, an
:class:`~keel.market_data.book_analyzer.OrderBookAnalyzer`, a
:class:`~keel.market_data.tick_analyzer.TickDataAnalyzer`, an
:class:`~keel.market_data.impact.ImpactCollector` with an optional
:class:`~keel.market_data.impact.MarketImpactModel`, and a
:class:`~keel.market_data.liquidity.LiquidityProfiler` (fed 1m bars). On the
first book at least ``snapshot_interval_ns`` after the previous snapshot it
publishes a ``MicrostructureSnapshot`` (market-data lane: the bus conflates
them per symbol, newest wins) that strategies, risk and execution read.

Everything is driven by event times, so a replay gives the same snapshots;
the impact model is refitted (when ``refit_every`` is set) only on completed
observations, so no snapshot uses data from after its time.
"""

from __future__ import annotations

from collections.abc import Mapping

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_SECOND, Clock
from keel.core.component import Component
from keel.core.messages import BarClosed, BookUpdated, MicrostructureSnapshot, TradeTick
from keel.market_data.book_analyzer import BookMetrics, OrderBookAnalyzer
from keel.market_data.impact import ImpactCollector, MarketConditions, MarketImpactModel
from keel.market_data.liquidity import LiquidityProfiler
from keel.market_data.tick_analyzer import TickDataAnalyzer


class SymbolAnalyzers:
    """The analyzers of one symbol and the snapshot they make together.

    Parameters
    ----------
    symbol
        The symbol.
    bucket_volume
        VPIN bucket size (base units).
    impact_model
        A calibrated impact model, or None until ``refit_every`` observations exist.
    impact_reference_quantity
        The buy order size (base units) whose expected impact each snapshot
        carries, against the visible asks.
    refit_every
        Refit the impact model on all completed observations every this many
        new ones (None: never).
    depth_bps
        Half-width of the depth measure.
    """

    def __init__(
        self,
        symbol: str,
        bucket_volume: float,
        impact_model: MarketImpactModel | None = None,
        impact_reference_quantity: float = 1.0,
        refit_every: int | None = None,
        depth_bps: float = 10.0,
    ) -> None:
        self.symbol = symbol
        self.book = OrderBookAnalyzer(depth_bps=depth_bps)
        self.ticks = TickDataAnalyzer(bucket_volume=bucket_volume)
        self.impact = ImpactCollector()
        self.impact_model = impact_model
        self.impact_reference_quantity = impact_reference_quantity
        self.refit_every = refit_every
        self.liquidity = LiquidityProfiler()
        self.refits = 0
        self._observations_at_fit = 0

    def on_book(self, book: BookUpdated) -> BookMetrics:
        """Update the book analyzer and the impact observations."""
        metrics = self.book.update(book)
        if self.impact.on_book(book) and self.refit_every is not None:
            count = len(self.impact.observations)
            if count - self._observations_at_fit >= self.refit_every:
                self.impact_model = MarketImpactModel().fit(self.impact.frame())
                self._observations_at_fit = count
                self.refits += 1
        return metrics

    def on_trade(self, trade: TradeTick) -> None:
        """Update the trade-flow analyzer and the current taker order."""
        self.ticks.on_trade(trade)
        self.impact.on_trade(trade)

    def on_bar(self, bar: BarClosed) -> None:
        """Feed 1m bars to the liquidity profile and the bar VPIN."""
        if bar.interval == "1m":
            self.liquidity.on_bar(bar)
            self.ticks.on_bar(bar)

    def snapshot(self, ts_init: int) -> MicrostructureSnapshot | None:
        """Return the current snapshot, or None before the first book."""
        book = self.book.last
        if book is None:
            return None
        flow = self.ticks.last
        impact_bps = None
        depths = self.impact.visible_depth
        if self.impact_model is not None and depths is not None and depths[1] > 0:
            conditions = MarketConditions(spread_bps=book.spread_bps, depth=depths[1])
            impact_bps = self.impact_model.estimate_market_impact(
                self.impact_reference_quantity, conditions
            ).expected_bps
        return MicrostructureSnapshot(
            symbol=self.symbol,
            update_id=book.update_id,
            mid_price=book.mid_price,
            spread_bps=book.spread_bps,
            microprice=book.microprice,
            imbalance_1=book.imbalance_1,
            imbalance_5=book.imbalance_5,
            imbalance_10=book.imbalance_10,
            depth_bps=self.book.depth_bps,
            bid_depth=book.bid_depth,
            ask_depth=book.ask_depth,
            book_pressure=book.book_pressure,
            bid_wall_price=book.bid_wall_price,
            ask_wall_price=book.ask_wall_price,
            vpin=self.ticks.vpin,
            order_flow_imbalance=None if flow is None else flow.order_flow_imbalance,
            kyle_lambda=None if flow is None else flow.kyle_lambda,
            realized_volatility=None if flow is None else flow.realized_volatility,
            trade_burst=False if flow is None else flow.trade_burst,
            sweep=False if flow is None else flow.sweep,
            impact_reference_quantity=self.impact_reference_quantity,
            impact_bps=impact_bps,
            expected_volume_share=self.liquidity.expected_volume_share(book.ts_event),
            liquidity_score=self.liquidity.liquidity_score(book.ts_event),
            ts_event=book.ts_event,
            ts_init=ts_init,
        )


class MicrostructureEngine(Component):
    """Run :class:`SymbolAnalyzers` per symbol on the bus and publish snapshots (see module doc).

    Parameters
    ----------
    name, bus, clock
        As for every component.
    bucket_volume
        VPIN bucket size per symbol (base units).
    snapshot_interval_ns
        Least event time between two snapshots of a symbol.
    impact_models
        Calibrated impact models per symbol (optional).
    impact_reference_quantity
        Order size per symbol whose impact snapshots carry (default 1.0).
    refit_every
        Refit each symbol's impact model every this many observations (None: never).
    """

    def __init__(
        self,
        name: str,
        bus: EventBus,
        clock: Clock,
        bucket_volume: Mapping[str, float],
        snapshot_interval_ns: int = NANOS_PER_SECOND,
        impact_models: Mapping[str, MarketImpactModel] | None = None,
        impact_reference_quantity: Mapping[str, float] | None = None,
        refit_every: int | None = None,
    ) -> None:
        super().__init__(name, bus, clock)
        if snapshot_interval_ns < 0:
            raise ValueError(f"snapshot interval must be >= 0, got {snapshot_interval_ns}")
        models = impact_models or {}
        sizes = impact_reference_quantity or {}
        self.analyzers = {
            symbol: SymbolAnalyzers(symbol, volume, models.get(symbol), sizes.get(symbol, 1.0), refit_every)
            for symbol, volume in bucket_volume.items()
        }
        self.snapshot_interval_ns = snapshot_interval_ns
        self.snapshots_published = 0
        self._last_snapshot: dict[str, int] = {}

    def on_start(self) -> None:
        """Subscribe to books, trades and bars."""
        self.bus.subscribe(BookUpdated, self.on_book, name=f"{self.name}.book")
        self.bus.subscribe(TradeTick, self.on_trade, name=f"{self.name}.trade")
        self.bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.bar")

    def on_book(self, book: BookUpdated) -> None:
        """Analyze a book and publish a snapshot when one is due."""
        analyzers = self.analyzers.get(book.symbol)
        if analyzers is None:
            return
        analyzers.on_book(book)
        last = self._last_snapshot.get(book.symbol)
        if last is None or book.ts_event - last >= self.snapshot_interval_ns:
            snapshot = analyzers.snapshot(self.clock.timestamp_ns())
            if snapshot is not None:
                self._last_snapshot[book.symbol] = book.ts_event
                self.snapshots_published += 1
                self.bus.publish(snapshot)

    def on_trade(self, trade: TradeTick) -> None:
        """Analyze a trade."""
        analyzers = self.analyzers.get(trade.symbol)
        if analyzers is not None:
            analyzers.on_trade(trade)

    def on_bar(self, bar: BarClosed) -> None:
        """Add a bar to the liquidity profile and the bar VPIN."""
        analyzers = self.analyzers.get(bar.symbol)
        if analyzers is not None:
            analyzers.on_bar(bar)
