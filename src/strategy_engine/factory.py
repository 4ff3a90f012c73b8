"""Build strategies and the strategy manager by name from plain settings.

:class:`StrategyFactory` maps strategy names (``trend_following`` or the
review's ``TrendFollowing``) to classes, so the configuration and the tuner
can name strategies. :meth:`StrategyFactory.create_manager` takes the
``strategy`` section of the configuration as a plain mapping (the strategy
engine does not import the configuration layer).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from keel.strategy_engine.base import BaseStrategy
from keel.strategy_engine.funding_arbitrage import FundingArbitrageStrategy
from keel.strategy_engine.grid_trading import GridTradingStrategy
from keel.strategy_engine.hyper_rsi import HyperRsiStrategy
from keel.strategy_engine.manager import StrategyManager
from keel.strategy_engine.mean_reversion import MeanReversionStrategy
from keel.strategy_engine.moving_average_cross import MovingAverageCrossStrategy
from keel.strategy_engine.range_trading import RangeTradingStrategy
from keel.strategy_engine.regime import NoLookAheadRegimeDetector
from keel.strategy_engine.scheduled_dca import ScheduledDcaStrategy
from keel.strategy_engine.trend_following import TrendFollowingStrategy
from keel.strategy_engine.volatility_breakout import VolatilityBreakoutStrategy

_MANAGER_SETTINGS = {
    "min_signal",
    "publish_step",
    "volatility_scaling",
    "max_consecutive_errors",
    "history_bars",
}


class StrategyFactory:
    """Create strategies by name.

    Names are snake case (``trend_following``); the CamelCase forms of the
    review (``TrendFollowing``, ``TrendFollowingStrategy``) are accepted too.
    """

    registry: ClassVar[dict[str, type[BaseStrategy]]] = {
        "trend_following": TrendFollowingStrategy,
        "mean_reversion": MeanReversionStrategy,
        "range_trading": RangeTradingStrategy,
        "funding_arbitrage": FundingArbitrageStrategy,
        "moving_average_cross": MovingAverageCrossStrategy,
        "grid_trading": GridTradingStrategy,
        "hyper_rsi": HyperRsiStrategy,
        "volatility_breakout": VolatilityBreakoutStrategy,
        "scheduled_dca": ScheduledDcaStrategy,
    }

    @classmethod
    def register(cls, name: str, strategy_class: type[BaseStrategy]) -> None:
        """Make ``strategy_class`` creatable as ``name``."""
        if not (isinstance(strategy_class, type) and issubclass(strategy_class, BaseStrategy)):
            raise TypeError(f"{strategy_class!r} is not a BaseStrategy subclass")
        cls.registry[_canonical(name)] = strategy_class

    @classmethod
    def available(cls) -> list[str]:
        """Return the names that can be created."""
        return sorted(cls.registry)

    @classmethod
    def strategy_class(cls, strategy_type: str) -> type[BaseStrategy]:
        """Return the class registered as ``strategy_type``.

        Raises
        ------
        ValueError
            If no strategy has that name.
        """
        found = cls.registry.get(_canonical(strategy_type))
        if found is None:
            raise ValueError(f"unknown strategy {strategy_type!r}; available: {', '.join(cls.available())}")
        return found

    @classmethod
    def create_strategy(cls, strategy_type: str, parameters: Mapping[str, Any] | None = None) -> BaseStrategy:
        """Create a strategy of ``strategy_type`` with ``parameters`` (the rest defaulted).

        Raises
        ------
        ValueError, TypeError
            If the name is unknown or a parameter is invalid.
        """
        return cls.strategy_class(strategy_type)(**dict(parameters or {}))

    @classmethod
    def create_manager(cls, settings: Mapping[str, Any], *, fee_rate: float | None = None) -> StrategyManager:
        """Create a :class:`StrategyManager` from the configuration's ``strategy`` section.

        Parameters
        ----------
        settings
            ``strategies`` (names to run), ``parameters`` (name -> parameters),
            ``regime_weights`` (regime -> name -> weight), ``regime`` (the
            detector's parameters, or ``enabled: false``) and the manager's
            ``min_signal``, ``publish_step``, ``volatility_scaling``,
            ``max_consecutive_errors``, ``history_bars``. Other keys (the
            moving-average cross's) are ignored.
        fee_rate
            Fee per unit of exposure change in the performance records; the
            manager's default when None.
        """
        names = list(settings.get("strategies", ()))
        parameters = settings.get("parameters", {})
        strategies = [cls.create_strategy(name, parameters.get(name)) for name in names]
        weights = settings.get("regime_weights")
        if weights is not None:
            # Strategies left out of the run drop out of the matrix too.
            weights = {row: {n: w for n, w in entries.items() if n in names} for row, entries in weights.items()}
        options = {key: settings[key] for key in _MANAGER_SETTINGS if key in settings}
        if fee_rate is not None:
            options["fee_rate"] = fee_rate
        return StrategyManager(strategies, weights, _detector_factory(settings.get("regime", {})), **options)


def _detector_factory(settings: Mapping[str, Any]) -> functools.partial[NoLookAheadRegimeDetector] | bool:
    """Return a factory of detectors with ``settings`` (False when ``enabled`` is false)."""
    options = dict(settings)
    if not options.pop("enabled", True):
        return False
    factory = functools.partial(NoLookAheadRegimeDetector, **options)
    factory()  # fail now, naming the bad detector setting, not at the first bar
    return factory


def _canonical(name: str) -> str:
    """Return ``trend_following`` for ``TrendFollowing``, ``TrendFollowingStrategy`` or ``trend_following``."""
    base = name.removesuffix("Strategy") if name != "Strategy" else name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()
