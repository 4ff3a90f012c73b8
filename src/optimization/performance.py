"""PerformanceEnhancer, as the optimization layer names it.

It lives in :mod:`keel.integration.performance` so the paper (and live)
sessions of the integration layer can start it; see there.
"""

from keel.integration.performance import (
    KnobChange,
    PerformanceBounds,
    PerformanceEnhancer,
    SnapshotKnob,
    resident_memory_bytes,
)

__all__ = ["KnobChange", "PerformanceBounds", "PerformanceEnhancer", "SnapshotKnob", "resident_memory_bytes"]
