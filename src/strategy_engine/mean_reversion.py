"""Mean reversion: fade z-score extremes of the close, only while the market is not trending.

Logic, per symbol and bar (after ``warmup_bars``):

- z-score: ``(close - mean) / std`` of the last ``lookback`` closes (Bollinger
  bands at ``entry_z`` standard deviations);
- regime filter: Kaufman's efficiency ratio of closes over ``trend_window``
  bars must stay below ``max_trend_strength`` to enter (a trending market
  does not revert);
- entry: flat, armed and filtered in: ``z <= -entry_z`` goes long,
  ``z >= entry_z`` short. The stop-loss is the band at ``stop_z`` and the
  take-profit the mean, both at entry;
- exit: the z-score back inside ``exit_z`` (reverted), or beyond ``stop_z``
  (the move kept going: stop). After an exit the strategy re-arms only once
  ``|z| < entry_z`` again, so it does not re-enter the same extreme;
- strength, fixed at entry: ``|z| / stop_z`` capped at 1; confidence, fixed
  at entry: ``1 - efficiency / max_trend_strength``, in [0, 1].

The view is returned on every bar after warm-up; an unchanged view is the
same object as on the previous bar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from keel.strategy_engine.base import IncrementalStrategy, StrategySignal, SymbolState, clip01, hold
from keel.strategy_engine.indicators import EfficiencyRatio, RollingMoments
from keel.strategy_engine.parameters import Parameter


class _ReversionState(SymbolState):
    __slots__ = ("armed", "confidence", "direction", "efficiency", "moments", "stop", "strength", "take_profit")

    def __init__(self, lookback: int, trend_window: int) -> None:
        super().__init__()
        self.moments = RollingMoments(lookback)
        self.efficiency = EfficiencyRatio(trend_window)
        self.direction = 0
        self.armed = True
        self.stop = math.nan
        self.take_profit = math.nan
        self.strength = 0.0
        self.confidence = 0.0


class MeanReversionStrategy(IncrementalStrategy):
    """Fade z-score extremes of the close while the efficiency ratio says the market is ranging.

    Parameters
    ----------
    name
        The strategy's name.
    **parameters
        Values for :attr:`parameter_space`; ``exit_z < entry_z < stop_z`` is required.
    """

    reads_bar_only: ClassVar[bool] = True

    parameter_space: ClassVar[Mapping[str, Parameter]] = {
        "lookback": Parameter(int, 240, 10, 1000, "bars of the mean and standard deviation"),
        "entry_z": Parameter(float, 3.5, 0.5, 5.0, "z-score magnitude that opens a position"),
        "exit_z": Parameter(float, 0.0, 0.0, 3.0, "z-score magnitude under which the position is closed"),
        "stop_z": Parameter(float, 6.0, 1.0, 10.0, "z-score magnitude that stops the position out"),
        "trend_window": Parameter(int, 240, 10, 1000, "bars of the efficiency-ratio regime filter"),
        "max_trend_strength": Parameter(float, 0.2, 0.01, 1.0, "efficiency ratio above which no entry is taken"),
    }

    def __init__(self, name: str = "mean_reversion", **parameters: Any) -> None:
        super().__init__(name, parameters)
        p = self.parameters
        if not p["exit_z"] < p["entry_z"] < p["stop_z"]:
            raise ValueError(
                f"{name} needs exit_z < entry_z < stop_z, got {p['exit_z']}, {p['entry_z']} and {p['stop_z']}"
            )
        self.warmup_bars = max(p["lookback"], p["trend_window"] + 1)

    def new_state(self) -> _ReversionState:
        """Return fresh indicators for a new symbol."""
        return _ReversionState(self.parameters["lookback"], self.parameters["trend_window"])

    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        """Update the bands with one bar and return the view after it."""
        assert isinstance(state, _ReversionState)
        close = bar[4]
        state.moments.update(close)
        efficiency = state.efficiency.update(close)
        if state.bars < self.warmup_bars:
            return None
        mean, std = state.moments.mean, state.moments.std
        view = state.last_signal
        if not std > 0.0:
            return view if view is not None else hold(market_data["symbol"], efficiency=efficiency)
        p = self.parameters
        z = (close - mean) / std
        direction = state.direction
        if direction != 0:
            reverted = z * direction >= -p["exit_z"]
            stopped = z * direction <= -p["stop_z"]
            if reverted or stopped:
                state.direction = 0
                state.armed = False
        elif not state.armed:
            state.armed = abs(z) < p["entry_z"]
        elif efficiency < p["max_trend_strength"] and abs(z) >= p["entry_z"]:
            self._enter(state, -1 if z > 0 else 1, mean, std, z, efficiency)
        if view is not None and state.direction == direction:
            return view
        metadata = {"z_score": z, "mean": mean, "std": std, "efficiency": efficiency}
        if state.direction == 0:
            return hold(market_data["symbol"], **metadata)
        return StrategySignal(
            market_data["symbol"],
            "BUY" if state.direction > 0 else "SELL",
            state.strength,
            state.confidence,
            stop_loss=state.stop,
            take_profit=state.take_profit,
            metadata=metadata,
        )

    def _enter(
        self, state: _ReversionState, direction: int, mean: float, std: float, z: float, efficiency: float
    ) -> None:
        p = self.parameters
        stop = mean - direction * p["stop_z"] * std
        if stop <= 0.0:
            return
        state.direction = direction
        state.stop = stop
        state.take_profit = mean
        state.strength = clip01(abs(z) / p["stop_z"])
        state.confidence = clip01(1.0 - efficiency / p["max_trend_strength"])
