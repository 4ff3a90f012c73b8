"""Replaying a recording: the garbage collector leaves what existed before the replay alone while it runs."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from keel.config import load_config
from keel.core.messages import BarClosed
from keel.integration.replay import RecordedRun


class _Cycle:
    """An object that refers to itself: only the cyclic garbage collector frees it."""

    def __init__(self) -> None:
        self.me: Any = self


def test_replay_keeps_earlier_objects_out_of_collections_and_hands_them_back() -> None:
    # Arrange: one day of BTCUSDT, and a reference cycle that became garbage before the replay
    overrides = {
        "data": {"symbols": ["BTCUSDT"], "start": "2025-05-10", "end": "2025-05-11"},
        "strategy": {"name": "moving_average_cross"},
        "portfolio": {"allocator": "equal_weight"},
    }
    run = RecordedRun(load_config("backtest", overrides=overrides, environ={}), None, measure_latency=False)
    frozen_during: list[int] = []

    def count_frozen(bar: BarClosed) -> None:
        if not frozen_during:  # counting walks every frozen object: once is enough
            frozen_during.append(gc.get_freeze_count())

    run.pipeline.bus.subscribe(BarClosed, count_frozen, name="test.gc")
    garbage = _Cycle()
    collected = weakref.ref(garbage)
    del garbage

    # Act
    run.replay(None)
    gc.collect()

    # Assert: frozen while it ran, nothing frozen after, and the earlier garbage is collectable again
    assert run.bars > 1000
    assert frozen_during[0] > 0
    assert gc.get_freeze_count() == 0
    assert collected() is None
