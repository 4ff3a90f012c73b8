"""One model of what a trade costs, shared by the allocator, the risk layer and the router.

:class:`CostModel` prices trading a notional of a symbol as a fraction of it:

- the fee: the instrument's maker or taker rate (or the configured override);
- half the spread: from the recorded book when one is seen, otherwise the
  larger of half a tick and the configured bar slippage (bars carry no book);
- market impact: the square-root law, ``impact_coefficient x sigma x
  sqrt(notional / bar dollar volume)``, with the per-bar volatility and the
  dollar volume averaged (EWMA) over recent bars;
- funding carry over a holding horizon: the last funding rate times the
  settlements in the horizon, paid by a long when the rate is positive.

A maker fill pays the maker fee and no spread or impact; a taker fill pays the
taker fee, half the spread and the impact. From these it derives the no-trade
rule (:meth:`CostModel.worth_trading`: trade only when the expected benefit
over the horizon covers the round trip), its exit side
(:meth:`CostModel.worth_closing`: close only when the expected loss avoided
covers one way) and the smallest order worth sending
(:meth:`CostModel.min_order_notional`). Everything it holds came from data
observed at or before the time it is asked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mypy_extensions import mypyc_attr

from keel.core.floats import finite
from keel.core.instruments import Instrument
from keel.core.messages import BarClosed, BookUpdated, FundingRateUpdated, OrderFilled
from keel.core.orders import LiquiditySide

BPS = 1e-4
MAX_PARTICIPATION = 100.0


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class CostSettings:
    """Parameters of the cost model.

    Parameters
    ----------
    maker_fee, taker_fee
        Fee rates of every symbol; each instrument's own when None.
    slippage_bps
        Half-spread assumed on bars (no book), basis points.
    impact_coefficient
        Square-root-law coefficient (dimensionless, ~1 in the literature).
    halflife_bars
        Half-life of the volatility and dollar-volume averages, bars.
    maker_share
        Expected share of the traded notional filled as a maker before any
        fill is seen, in [0, 1]; fills then update it (EWMA over
        ``halflife_fills`` fills).
    halflife_fills
        Half-life of the observed maker share, fills.
    """

    maker_fee: float | None = None
    taker_fee: float | None = None
    slippage_bps: float = 1.0
    impact_coefficient: float = 1.0
    halflife_bars: float = 60.0
    maker_share: float = 0.0
    halflife_fills: float = 50.0

    def __post_init__(self) -> None:
        for name in ("maker_fee", "taker_fee"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and -0.01 < value < 0.1):
                raise ValueError(f"{name} must be a rate in (-0.01, 0.1), got {value}")
        if not (math.isfinite(self.slippage_bps) and self.slippage_bps >= 0):
            raise ValueError(f"slippage_bps must be a non-negative number, got {self.slippage_bps}")
        if not (math.isfinite(self.impact_coefficient) and self.impact_coefficient >= 0):
            raise ValueError(f"impact_coefficient must be a non-negative number, got {self.impact_coefficient}")
        if not self.halflife_bars > 0:
            raise ValueError(f"halflife_bars must be positive, got {self.halflife_bars}")
        if not self.halflife_fills > 0:
            raise ValueError(f"halflife_fills must be positive, got {self.halflife_fills}")
        if not 0.0 <= self.maker_share <= 1.0:
            raise ValueError(f"maker_share must lie in [0, 1], got {self.maker_share}")


@dataclass(slots=True)
class _Market:
    """What the model knows of one symbol's market."""

    price: float = 0.0
    variance: float = 0.0
    dollar_volume: float = 0.0
    book_half_spread: float | None = None
    funding_rate: float = 0.0
    bars: int = 0


@mypyc_attr(allow_interpreted_subclasses=True)
class CostModel:
    """Expected cost of trading a notional of a symbol, as a fraction of the notional.

    Parameters
    ----------
    instruments
        Filters and fee rates of every symbol.
    settings
        Fee overrides, bar slippage, impact, averaging and maker share.
    """

    def __init__(self, instruments: Mapping[str, Instrument], settings: CostSettings | None = None) -> None:
        self.settings = settings if settings is not None else CostSettings()
        self._instruments = dict(instruments)
        self._markets: dict[str, _Market] = {}
        self._decay: float = 0.5 ** (1.0 / self.settings.halflife_bars)
        self._fill_decay: float = 0.5 ** (1.0 / self.settings.halflife_fills)
        self.maker_share = self.settings.maker_share

    # --- observations -------------------------------------------------------------------------

    def observe_bar(self, symbol: str, close: float, volume: float) -> None:
        """Take a closed bar: the price, the per-bar variance and the dollar volume averages."""
        if not (finite(close) and close > 0 and finite(volume) and volume >= 0):
            return
        market = self._market(symbol)
        decay = self._decay
        if market.price > 0:
            change = math.log(close / market.price)
            market.variance = decay * market.variance + (1 - decay) * change * change
        dollars = close * volume
        market.dollar_volume = dollars if market.bars == 0 else decay * market.dollar_volume + (1 - decay) * dollars
        market.price = close
        market.bars += 1

    def observe_book(self, symbol: str, bid: float, ask: float) -> None:
        """Take the top of the book: its half-spread replaces the bar assumption."""
        if not (finite(bid) and finite(ask) and 0 < bid <= ask):
            return
        market = self._market(symbol)
        mid = (bid + ask) / 2
        market.book_half_spread = (ask - bid) / 2 / mid
        market.price = mid

    def observe_funding(self, symbol: str, rate: float) -> None:
        """Take the latest funding rate (per settlement)."""
        if finite(rate):
            self._market(symbol).funding_rate = rate

    def _market(self, symbol: str) -> _Market:
        """Return what is known of ``symbol``'s market (a new record the first time: none is built per bar)."""
        market = self._markets.get(symbol)
        if market is None:
            market = self._markets[symbol] = _Market()
        return market

    def on_bar(self, bar: BarClosed) -> None:
        """Bus handler of :meth:`observe_bar`."""
        self.observe_bar(bar.symbol, bar.close, bar.volume)

    def on_book(self, book: BookUpdated) -> None:
        """Bus handler of :meth:`observe_book`."""
        if book.bids and book.asks:
            self.observe_book(book.symbol, book.bids[0][0], book.asks[0][0])

    def on_funding(self, event: FundingRateUpdated) -> None:
        """Bus handler of :meth:`observe_funding`."""
        self.observe_funding(event.symbol, float(event.rate))

    def on_fill(self, fill: OrderFilled) -> None:
        """Move the expected maker share towards what this fill was."""
        maker = 1.0 if fill.liquidity_side is LiquiditySide.MAKER else 0.0
        self.maker_share = self._fill_decay * self.maker_share + (1 - self._fill_decay) * maker

    # --- the parts ----------------------------------------------------------------------------

    def fee_rate(self, symbol: str, liquidity: LiquiditySide) -> float:
        """Return the fee rate of a maker or a taker fill of ``symbol``."""
        settings = self.settings
        if liquidity is LiquiditySide.MAKER:
            override = settings.maker_fee
            return float(self._instrument(symbol).maker_fee) if override is None else override
        override = settings.taker_fee
        return float(self._instrument(symbol).taker_fee) if override is None else override

    def half_spread(self, symbol: str) -> float:
        """Return half the spread, a fraction of the price: the book's, else max(half a tick, bar slippage)."""
        market = self._markets.get(symbol)
        if market is not None and market.book_half_spread is not None:
            return market.book_half_spread
        tick = 0.0
        if market is not None and market.price > 0:
            tick = float(self._instrument(symbol).tick_size) / market.price / 2
        return max(tick, self.settings.slippage_bps * BPS)

    def volatility(self, symbol: str) -> float:
        """Return the averaged per-bar volatility of log returns (0 before two bars)."""
        market = self._markets.get(symbol)
        return 0.0 if market is None else math.sqrt(market.variance)

    def impact(self, symbol: str, notional: float) -> float:
        """Return the square-root-law impact of taking ``notional`` in one bar, a fraction of the price.

        The participation (notional over the averaged bar dollar volume) is capped at ``MAX_PARTICIPATION``.
        """
        market = self._markets.get(symbol)
        if market is None or market.dollar_volume <= 0 or notional <= 0:
            return 0.0
        # Beyond a hundred bars' volume the square-root law says nothing; the cap keeps the cost finite.
        participation = min(abs(notional) / market.dollar_volume, MAX_PARTICIPATION)
        return self.settings.impact_coefficient * math.sqrt(market.variance) * math.sqrt(participation)

    def funding_carry(self, symbol: str, side_sign: int, settlements: float) -> float:
        """Return the funding a position pays over ``settlements`` funding times, a fraction (negative: received)."""
        market = self._markets.get(symbol)
        rate = 0.0 if market is None else market.funding_rate
        return side_sign * rate * settlements

    # --- what the layers ask ------------------------------------------------------------------

    def cost_rate(self, symbol: str, notional: float = 0.0, liquidity: LiquiditySide | None = None) -> float:
        """Return the expected one-way cost of trading ``notional`` of ``symbol``, a fraction of it.

        ``liquidity`` None blends maker and taker by the expected maker share.
        """
        if liquidity is LiquiditySide.MAKER:
            return self.fee_rate(symbol, LiquiditySide.MAKER)
        taker = self.fee_rate(symbol, LiquiditySide.TAKER) + self.half_spread(symbol) + self.impact(symbol, notional)
        if liquidity is LiquiditySide.TAKER:
            return taker
        share = self.maker_share
        return share * self.fee_rate(symbol, LiquiditySide.MAKER) + (1 - share) * taker

    def round_trip(self, symbol: str, notional: float = 0.0, liquidity: LiquiditySide | None = None) -> float:
        """Return the expected cost of opening and later closing ``notional``, a fraction of it."""
        return 2.0 * self.cost_rate(symbol, notional, liquidity)

    def worth_trading(self, symbol: str, notional: float, edge_per_bar: float, horizon_bars: float) -> bool:
        """Return whether a trade whose expected return is ``edge_per_bar`` for ``horizon_bars`` beats its cost.

        The benefit is ``edge_per_bar x horizon_bars`` (a fraction of the
        notional traded); the cost is the round trip of ``notional``.
        """
        if not (math.isfinite(edge_per_bar) and horizon_bars > 0):
            return False
        return edge_per_bar * horizon_bars >= self.round_trip(symbol, notional)

    def worth_closing(self, symbol: str, notional: float, edge_per_bar: float, horizon_bars: float) -> bool:
        """Return whether closing a position whose expected return is ``edge_per_bar`` beats keeping it.

        The close avoids the expected loss ``-edge_per_bar x horizon_bars`` (a
        fraction of the notional held) and pays one way of ``notional``: with
        :meth:`worth_trading` (which asks for the round trip to open) this is a
        hysteresis band, a position opens on twice the edge that closes it.
        """
        if not (math.isfinite(edge_per_bar) and horizon_bars > 0):
            return True
        return -edge_per_bar * horizon_bars >= self.cost_rate(symbol, notional)

    def maker_pays(self, symbol: str, notional: float, wait_bars: float) -> bool:
        """Return whether posting beats taking: the fee and spread saved exceed the risk of waiting.

        The risk of waiting is the expected adverse move over ``wait_bars``
        (half a per-bar standard deviation per square root of a bar), paid
        when the order is not filled and falls back to a taker.
        """
        saved = self.cost_rate(symbol, notional, LiquiditySide.TAKER) - self.cost_rate(
            symbol, notional, LiquiditySide.MAKER
        )
        return saved > 0.5 * self.volatility(symbol) * math.sqrt(max(wait_bars, 0.0))

    def min_order_notional(self, symbol: str, equity: float, min_weight: float) -> float:
        """Return the smallest notional worth an order: the venue's minimum, or ``min_weight`` of ``equity``."""
        minimum = float(self._instrument(symbol).min_notional)
        return max(minimum, min_weight * equity) if equity > 0 else minimum

    def _instrument(self, symbol: str) -> Instrument:
        instrument = self._instruments.get(symbol)
        if instrument is None:
            raise ValueError(f"no instrument specification for {symbol}")
        return instrument
