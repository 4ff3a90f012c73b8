"""Portfolio construction: target weights from the strategies' signals, and how the weights did.

- :class:`PortfolioOptimizer`: Markowitz weights (max Sharpe, min volatility,
  mean-variance, efficient return or risk) with costs, turnover, leverage and
  the risk layer's caps, on a compiled cvxpy problem; estimator and component.
- :class:`MarkowitzProblem`, :class:`PortfolioConstraints`: the compiled
  problem and its constraints.
- :class:`AdaptiveAllocator`: performance-based shares of the strategies.
- :class:`CorrelationAnalyzer`: rolling correlations, risk decomposition,
  diversification ratio, correlation-jump alerts.
- :class:`PerformanceAttributor`: Brinson-Fachler attribution by symbol and
  strategy, Carino-linked, with fees, funding and slippage.
- :class:`EqualWeightAllocator`: the walking skeleton's allocator, kept as a
  baseline (``portfolio.allocator: equal_weight``).
"""

from keel.portfolio.adaptive import AdaptiveAllocator
from keel.portfolio.attribution import PerformanceAttributor
from keel.portfolio.correlation import CorrelationAnalyzer, RiskDecomposition
from keel.portfolio.equal_weight import EqualWeightAllocator
from keel.portfolio.markowitz import MarkowitzProblem, PortfolioConstraints, SolverFailedError
from keel.portfolio.optimizer import OptimizationResult, PortfolioOptimizer
from keel.portfolio.returns import ReturnWindow

__all__ = [
    "AdaptiveAllocator",
    "CorrelationAnalyzer",
    "EqualWeightAllocator",
    "MarkowitzProblem",
    "OptimizationResult",
    "PerformanceAttributor",
    "PortfolioConstraints",
    "PortfolioOptimizer",
    "ReturnWindow",
    "RiskDecomposition",
    "SolverFailedError",
]
