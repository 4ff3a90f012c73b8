"""Strategy engine: strategies turn closed bars into signals.

Holds :class:`BaseStrategy` (the contract), :class:`StrategySignal`,
:class:`StrategyRunner` (the component that runs a strategy on the bus and
isolates its failures) and the walking skeleton's
:class:`MovingAverageCrossStrategy`. Regime detection and the four production
strategies come next.
"""

from keel.strategy_engine.base import BaseStrategy, StrategyRunner, StrategySignal
from keel.strategy_engine.moving_average_cross import MovingAverageCrossStrategy

__all__ = ["BaseStrategy", "MovingAverageCrossStrategy", "StrategyRunner", "StrategySignal"]
