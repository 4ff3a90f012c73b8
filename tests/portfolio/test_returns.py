"""The rolling return window agrees, bit for bit, with a plain numpy reference of the same definition."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.portfolio.returns import ReturnWindow

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


class NumpyReturnWindow:
    """The reference: pending and last closes as numpy arrays, a row kept when every symbol had a bar."""

    def __init__(self, symbols: tuple[str, ...], size: int) -> None:
        self.index = {s: i for i, s in enumerate(symbols)}
        self.size = size
        self.rows: list[np.ndarray] = []
        self.last_close = np.full(len(symbols), np.nan)
        self.pending = np.full(len(symbols), np.nan)
        self.pending_ts: int | None = None

    def add_close(self, symbol: str, ts: int, close: float) -> np.ndarray | None:
        column = self.index.get(symbol)
        if column is None or not math.isfinite(close) or close <= 0:
            return None
        completed = None
        if self.pending_ts is not None and ts != self.pending_ts:
            filled = ~np.isnan(self.pending)
            if filled.all() and not np.isnan(self.last_close).any():
                completed = self.pending / self.last_close - 1.0
                self.rows.append(completed)
            self.last_close = np.where(filled, self.pending, self.last_close)
            self.pending = np.full(len(self.index), np.nan)
        self.pending_ts = ts
        self.pending[column] = close
        return completed

    def returns(self) -> np.ndarray:
        kept = self.rows[-self.size :]
        return np.array(kept) if kept else np.empty((0, len(self.index)))


bar = st.tuples(
    st.integers(min_value=0, max_value=2),  # time step: same time, next, or a skipped one
    st.sampled_from((*SYMBOLS, "XRPUSDT")),
    st.one_of(st.floats(min_value=0.01, max_value=1e5), st.sampled_from([0.0, -1.0, math.nan, math.inf])),
)


@settings(max_examples=200, deadline=None)
@given(
    bars=st.lists(bar, max_size=120),
    size=st.integers(min_value=2, max_value=20),
    symbols=st.sampled_from([SYMBOLS, SYMBOLS[:1]]),  # one symbol: the window's single-column path
)
def test_window_matches_the_numpy_reference(
    bars: list[tuple[int, str, float]], size: int, symbols: tuple[str, ...]
) -> None:
    # Arrange
    window, reference = ReturnWindow(symbols, size), NumpyReturnWindow(symbols, size)
    ts = 0

    # Act / Assert: every completed row, then the kept rows, are the same floats
    for step, symbol, close in bars:
        ts += step
        row, expected = window.add_close(symbol, ts, close), reference.add_close(symbol, ts, close)
        assert (row is None) == (expected is None)
        if row is not None:
            assert row.tobytes() == expected.tobytes()
    assert window.returns().tobytes() == reference.returns().tobytes()
    assert len(window) == len(reference.returns()) and window.rows_added == len(reference.rows)
