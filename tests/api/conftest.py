"""Fixtures for the venue tests: harnesses on the real bars and on the real book session."""

from __future__ import annotations

from typing import Any

import pytest
from venue_harness import Harness, HarnessFactory, real_bars, real_session


@pytest.fixture
def bar_venue() -> HarnessFactory:
    """Build a venue whose clock starts at the first real BTCUSDT 1m bar."""

    def build(**settings: Any) -> Harness:
        return Harness(real_bars("BTCUSDT")[0].open_time, **settings)

    return build


@pytest.fixture
def book_venue() -> HarnessFactory:
    """Build a venue whose clock starts at the first event of the real BTCUSDT book session."""

    def build(**settings: Any) -> Harness:
        return Harness(real_session()[0].ts_event, **settings)

    return build
