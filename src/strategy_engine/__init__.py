"""Strategy engine: market data in, regime-weighted trading signals out, past data only.

Holds the strategy contract (:class:`BaseStrategy`, :class:`StrategySignal`,
:class:`IncrementalStrategy`, declared :class:`Parameter` spaces), the market
history strategies read (:class:`MarketData`), incremental indicators, the
:class:`NoLookAheadRegimeDetector` (HMM regimes and GARCH volatility filtered
bar by bar), the four production strategies (:class:`TrendFollowingStrategy`,
:class:`MeanReversionStrategy`, :class:`RangeTradingStrategy`,
:class:`FundingArbitrageStrategy`), four more a run can add
(:class:`GridTradingStrategy`, :class:`HyperRsiStrategy`,
:class:`VolatilityBreakoutStrategy`, :class:`ScheduledDcaStrategy`), the skeleton's
:class:`MovingAverageCrossStrategy` kept as an example, the
:class:`StrategyManager` that weights them by regime, the
:class:`StrategyFactory` and the bus component :class:`StrategyRunner`.
"""

from keel.core.messages import MarketRegime
from keel.strategy_engine.base import BaseStrategy, IncrementalStrategy, Ladder, StrategySignal, SymbolState
from keel.strategy_engine.factory import StrategyFactory
from keel.strategy_engine.funding_arbitrage import FundingArbitrageStrategy, MissingFundingDataError
from keel.strategy_engine.grid_trading import GridTradingStrategy
from keel.strategy_engine.history import MarketData, SymbolHistory
from keel.strategy_engine.hyper_rsi import HyperRsiStrategy
from keel.strategy_engine.manager import (
    DEFAULT_REGIME_WEIGHTS,
    ManagerUpdate,
    StrategyFailure,
    StrategyManager,
    default_strategies,
)
from keel.strategy_engine.mean_reversion import MeanReversionStrategy
from keel.strategy_engine.moving_average_cross import MovingAverageCrossStrategy
from keel.strategy_engine.parameters import Parameter
from keel.strategy_engine.performance import StrategyPerformance
from keel.strategy_engine.range_trading import RangeTradingStrategy
from keel.strategy_engine.regime import (
    REGIMES,
    Garch11Filter,
    GaussianHmmFilter,
    NoLookAheadRegimeDetector,
    RegimeState,
)
from keel.strategy_engine.runner import StrategyRunner
from keel.strategy_engine.schedule import Schedule
from keel.strategy_engine.scheduled_dca import ScheduledDcaStrategy
from keel.strategy_engine.trend_following import TrendFollowingStrategy
from keel.strategy_engine.volatility_breakout import VolatilityBreakoutStrategy

__all__ = [
    "DEFAULT_REGIME_WEIGHTS",
    "REGIMES",
    "BaseStrategy",
    "FundingArbitrageStrategy",
    "Garch11Filter",
    "GaussianHmmFilter",
    "GridTradingStrategy",
    "HyperRsiStrategy",
    "IncrementalStrategy",
    "Ladder",
    "ManagerUpdate",
    "MarketData",
    "MarketRegime",
    "MeanReversionStrategy",
    "MissingFundingDataError",
    "MovingAverageCrossStrategy",
    "NoLookAheadRegimeDetector",
    "Parameter",
    "RangeTradingStrategy",
    "RegimeState",
    "Schedule",
    "ScheduledDcaStrategy",
    "StrategyFactory",
    "StrategyFailure",
    "StrategyManager",
    "StrategyPerformance",
    "StrategyRunner",
    "StrategySignal",
    "SymbolHistory",
    "SymbolState",
    "TrendFollowingStrategy",
    "VolatilityBreakoutStrategy",
    "default_strategies",
]
