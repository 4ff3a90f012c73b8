"""Portfolio construction: target weights from the strategies' signals.

Holds the walking skeleton's :class:`EqualWeightAllocator`; the Markowitz
optimizer with transaction costs, correlation analysis, attribution and the
adaptive allocator come next.
"""

from keel.portfolio.equal_weight import EqualWeightAllocator

__all__ = ["EqualWeightAllocator"]
