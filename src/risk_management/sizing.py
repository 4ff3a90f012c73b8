"""Position sizing: the smallest of the Kelly, ATR, VaR-budget and liquidation-safety sizes.

All four are notional limits on one position, in quote currency:

- Kelly: ``fraction x regime multiplier x max(0, mu) / sigma^2 x equity``,
  with ``mu`` the per-bar expected return in the trade's direction and
  ``sigma`` the per-bar volatility (the growth-optimal leverage of a
  log-normal bet, scaled down: full Kelly is far too aggressive with
  estimated inputs). The regime multiplier shrinks it in regimes where the
  estimate is least trustworthy.
- ATR: an adverse move of ``atr_multiple`` daily ATRs loses at most
  ``atr_risk_pct`` of equity (the bar ATR times ``sqrt(bars per day)``).
- VaR budget: the position's own daily VaR at ``var_confidence`` is at most
  ``var_budget_pct`` of equity.
- Liquidation safety: at the account's leverage, the position keeps a
  distance to its liquidation price of at least ``liquidation_sigmas`` daily
  standard deviations (and never exceeds ``leverage x equity``).

:meth:`PositionSizer.size` takes the smallest, rounds the quantity down to
the instrument's step and returns zero when the result is below the minimum
quantity or the minimum notional.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from keel.core.instruments import Instrument
from keel.core.messages import MarketRegime
from keel.risk_management.var import normal_quantile

_isfinite = math.isfinite

_MIN_VOLATILITY = 1e-12
"""A per-bar volatility below this is no estimate (and its square underflows): no limit from it."""

DEFAULT_REGIME_MULTIPLIERS: Mapping[MarketRegime, float] = {
    MarketRegime.TRENDING: 1.0,
    MarketRegime.LOW_VOLATILITY: 1.0,
    MarketRegime.MEAN_REVERTING: 0.75,
    MarketRegime.HIGH_VOLATILITY: 0.5,
    MarketRegime.UNKNOWN: 0.75,
}


def kelly_fraction(mean: float, variance: float, *, fraction: float = 0.25, multiplier: float = 1.0) -> float:
    """Return the fractional Kelly leverage ``fraction x multiplier x max(0, mean) / variance``.

    Zero when the edge is not positive or the variance is not; never negative.
    """
    if not (math.isfinite(mean) and math.isfinite(variance)) or variance <= 0 or mean <= 0:
        return 0.0
    return fraction * multiplier * mean / variance


@dataclass(frozen=True, slots=True)
class StepGrid:
    """An instrument's quantity grid ``minimum + k x step`` up to its maximum, for fast exact rounding."""

    step: Decimal
    minimum: Decimal
    largest_steps: int
    step_float: float
    minimum_float: float
    min_notional: Decimal
    min_notional_float: float

    @classmethod
    def of(cls, instrument: Instrument, market: bool = True) -> StepGrid:
        """Return MARKET_LOT_SIZE's grid (LOT_SIZE's when ``market`` is False)."""
        if market:
            step, minimum, maximum = (
                instrument.market_step_size,
                instrument.market_min_quantity,
                instrument.market_max_quantity,
            )
        else:
            step, minimum, maximum = instrument.step_size, instrument.min_quantity, instrument.max_quantity
        largest = int((maximum - minimum) // step)
        notional = instrument.min_notional
        return cls(step, minimum, largest, float(step), float(minimum), notional, float(notional))

    def floor(self, quantity: float) -> Decimal:
        """Round a positive float quantity down onto the grid, exactly, as a Decimal (0 below the minimum).

        A tiny relative margin is taken off first, so float error can only
        round down, never up past the requested quantity; above the maximum
        the result is the largest grid quantity within it.
        """
        return self.floor_pair(quantity)[0]

    def floor_pair(self, quantity: float) -> tuple[Decimal, float]:
        """Return :meth:`floor`'s quantity as an exact Decimal and as the nearest float."""
        if not quantity > 0 or quantity == math.inf:
            return Decimal(0), 0.0
        steps = math.floor((quantity * (1.0 - 1e-12) - self.minimum_float) / self.step_float + 1e-9)
        if steps < 0:
            return Decimal(0), 0.0
        steps = min(steps, self.largest_steps)
        exact = self.minimum + steps * self.step
        return exact, float(exact)


def floor_to_step(quantity: float, instrument: Instrument, market: bool = True) -> Decimal:
    """Round a positive float quantity down onto the instrument's step grid (see :meth:`StepGrid.floor`)."""
    return StepGrid.of(instrument, market).floor(quantity)


@dataclass(frozen=True, slots=True)
class SizeLimits:
    """The four notional limits of one position and the smallest of them."""

    kelly: float
    atr: float
    var_budget: float
    liquidation: float
    notional: float = math.inf
    """The smallest limit (set by :meth:`of`)."""

    @classmethod
    def of(cls, kelly: float, atr: float, var_budget: float, liquidation: float) -> SizeLimits:
        """Return the limits with their smallest one."""
        smallest = kelly
        for value in (atr, var_budget, liquidation):
            if value < smallest:
                smallest = value
        return cls(kelly, atr, var_budget, liquidation, smallest)

    @property
    def binding(self) -> str:
        """Return the name of the smallest limit."""
        limits = {"kelly": self.kelly, "atr": self.atr, "var_budget": self.var_budget, "liquidation": self.liquidation}
        return min(limits, key=limits.__getitem__)


@dataclass(frozen=True, slots=True)
class SizeDecision:
    """A sized position: its quantity (0 when none may be traded), the limits, and why."""

    quantity: Decimal
    limits: SizeLimits
    reason: str


class PositionSizer:
    """Size positions by Kelly, ATR, VaR budget and liquidation safety.

    Parameters
    ----------
    kelly_fraction
        Share of full Kelly (0.25 = quarter Kelly).
    atr_risk_pct, atr_multiple
        At most ``atr_risk_pct`` of equity lost on ``atr_multiple`` daily ATRs.
    var_budget_pct, var_confidence
        The position's own daily VaR at most ``var_budget_pct`` of equity.
    leverage
        The account's leverage on the symbol.
    liquidation_sigmas
        Daily standard deviations kept between the price and liquidation.
    regime_multipliers
        Kelly multiplier per market regime.
    """

    def __init__(
        self,
        *,
        kelly_fraction: float = 0.25,
        atr_risk_pct: float = 0.05,
        atr_multiple: float = 3.0,
        var_budget_pct: float = 0.05,
        var_confidence: float = 0.99,
        leverage: float = 5.0,
        liquidation_sigmas: float = 4.0,
        regime_multipliers: Mapping[MarketRegime, float] | None = None,
    ) -> None:
        for name, value in (
            ("kelly_fraction", kelly_fraction),
            ("atr_risk_pct", atr_risk_pct),
            ("atr_multiple", atr_multiple),
            ("var_budget_pct", var_budget_pct),
            ("leverage", leverage),
            ("liquidation_sigmas", liquidation_sigmas),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        self.kelly_fraction = kelly_fraction
        self.atr_risk_pct = atr_risk_pct
        self.atr_multiple = atr_multiple
        self.var_budget_pct = var_budget_pct
        self.var_confidence = var_confidence
        self.leverage = leverage
        self.liquidation_sigmas = liquidation_sigmas
        self.regime_multipliers = dict(DEFAULT_REGIME_MULTIPLIERS if regime_multipliers is None else regime_multipliers)
        self._z = normal_quantile(var_confidence)

    def limits(
        self,
        *,
        equity: float,
        expected_return: float,
        volatility: float,
        atr: float,
        price: float,
        bars_per_day: float,
        regime: MarketRegime = MarketRegime.UNKNOWN,
    ) -> SizeLimits:
        """Return the four notional limits of a position.

        Parameters
        ----------
        equity
            Account equity (quote currency).
        expected_return
            Per-bar expected return in the position's direction.
        volatility
            Per-bar return standard deviation (0 when unknown: no limit from it;
            below 1e-12 counts as unknown).
        atr
            Average true range per bar, in price units (0 when unknown).
        price
            The mark price.
        bars_per_day
            Bars in a day (1440 for 1m bars).
        regime
            The symbol's market regime.

        Raises
        ------
        ValueError
            If equity, expected return, volatility, ATR or bars per day is not a
            finite number, volatility or ATR is negative, or bars per day is not
            positive (an estimate that is NaN would switch its limits off).
        """
        _check_inputs(equity, expected_return, volatility, atr, bars_per_day)
        if not equity > 0:
            return SizeLimits.of(0.0, 0.0, 0.0, 0.0)
        daily = math.sqrt(bars_per_day)
        multiplier = self.multiplier(regime)
        if volatility > _MIN_VOLATILITY:
            kelly = kelly_fraction(
                expected_return, volatility * volatility, fraction=self.kelly_fraction, multiplier=multiplier
            )
            kelly_notional = kelly * equity
            var_notional = self.var_budget_pct * equity / (self._z * volatility * daily)
            liquidation = min(self.leverage * equity, equity / (self.liquidation_sigmas * volatility * daily))
        else:
            kelly_notional = var_notional = math.inf
            liquidation = self.leverage * equity
        atr_notional = (
            self.atr_risk_pct * equity * price / (self.atr_multiple * atr * daily)
            if atr > 0 and price > 0
            else math.inf
        )
        return SizeLimits.of(kelly_notional, atr_notional, var_notional, liquidation)

    def multiplier(self, regime: MarketRegime) -> float:
        """Return the Kelly multiplier of a regime (UNKNOWN's for a regime without one)."""
        found = self.regime_multipliers.get(regime)
        return found if found is not None else self.regime_multipliers.get(MarketRegime.UNKNOWN, 1.0)

    def max_notional(
        self,
        equity: float,
        expected_return: float,
        volatility: float,
        atr: float,
        price: float,
        daily: float,
        multiplier: float,
    ) -> float:
        """Return the smallest of :meth:`limits` (the pre-trade hot path: positional floats, nothing built).

        ``daily`` is ``sqrt(bars per day)``, ``multiplier`` the regime's Kelly
        multiplier; a test checks it equals ``limits(...).notional``.

        Raises
        ------
        ValueError
            As :meth:`limits` does.
        """
        finite = _isfinite(equity) and _isfinite(expected_return) and _isfinite(volatility) and _isfinite(atr)
        if not (finite and _isfinite(daily) and daily > 0) or volatility < 0 or atr < 0:
            _check_inputs(equity, expected_return, volatility, atr, daily * daily)
        if not equity > 0:
            return 0.0
        cap = self.leverage * equity
        if volatility > _MIN_VOLATILITY:
            if expected_return > 0 and expected_return != math.inf:
                kelly = self.kelly_fraction * multiplier * expected_return / (volatility * volatility) * equity
            else:
                kelly = 0.0
            var_budget = self.var_budget_pct * equity / (self._z * volatility * daily)
            liquidation = equity / (self.liquidation_sigmas * volatility * daily)
            cap = min(cap, kelly, var_budget, liquidation)
        if atr > 0 and price > 0:
            cap = min(cap, self.atr_risk_pct * equity * price / (self.atr_multiple * atr * daily))
        return cap

    def size(
        self,
        instrument: Instrument,
        *,
        equity: float,
        expected_return: float,
        volatility: float,
        atr: float,
        price: float,
        bars_per_day: float,
        regime: MarketRegime = MarketRegime.UNKNOWN,
    ) -> SizeDecision:
        """Return the largest quantity within every limit, on the step grid, or zero with the reason."""
        limits = self.limits(
            equity=equity,
            expected_return=expected_return,
            volatility=volatility,
            atr=atr,
            price=price,
            bars_per_day=bars_per_day,
            regime=regime,
        )
        notional = limits.notional
        if not price > 0 or not math.isfinite(price):
            return SizeDecision(Decimal(0), limits, "no usable price")
        if not equity > 0:
            return SizeDecision(Decimal(0), limits, "no equity to size from")
        if not math.isfinite(notional):
            return SizeDecision(Decimal(0), limits, "no volatility or ATR estimate yet")
        quantity = floor_to_step(notional / price, instrument)
        if quantity <= 0:
            return SizeDecision(Decimal(0), limits, f"{limits.binding} limit is below one step")
        if quantity * Decimal(repr(price)) < instrument.min_notional:
            return SizeDecision(Decimal(0), limits, f"{limits.binding} size is below the minimum notional")
        return SizeDecision(quantity, limits, f"limited by {limits.binding}")


def _check_inputs(equity: float, expected_return: float, volatility: float, atr: float, bars_per_day: float) -> None:
    """Raise unless the sizing inputs are usable numbers (0 volatility or ATR is "no estimate yet")."""
    named = {
        "equity": equity,
        "expected_return": expected_return,
        "volatility": volatility,
        "atr": atr,
        "bars_per_day": bars_per_day,
    }
    for name, value in named.items():
        if not math.isfinite(value):
            raise ValueError(f"position sizing needs a finite {name}, got {value}")
    if volatility < 0 or atr < 0:
        raise ValueError(f"volatility and ATR cannot be negative, got {volatility} and {atr}")
    if not bars_per_day > 0:
        raise ValueError(f"bars_per_day must be positive, got {bars_per_day}")
