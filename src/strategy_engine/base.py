"""The strategy contract: market data up to now in, a signal out, state from the past only.

One contract serves the strategy developer and the event-driven engine:

- :meth:`BaseStrategy.generate_signal` ``(market_data, current_index)`` is what
  a strategy implements (UC-2.1): ``market_data`` maps ``symbol`` and the bar
  and funding columns of :mod:`keel.strategy_engine.history` to arrays, and
  the strategy may read only indexes ``<= current_index`` (and funding rows
  settled before that bar's ``timestamp``);
- :meth:`BaseStrategy.on_bar` / :meth:`BaseStrategy.on_funding` adapt bus
  events to it: they append to the strategy's own per-symbol history and
  call ``generate_signal`` on its last bar. The :class:`~keel.strategy_engine.manager.StrategyManager`
  shares one history per symbol between its strategies instead.

:class:`IncrementalStrategy` is the base of strategies that keep O(1)
per-bar state: it feeds them each bar once, in order, and rebuilds their
state from the start of the data when called out of sequence, so a
sequential run and random access give the same signals.

Tunable parameters are declared in ``parameter_space``
(:class:`~keel.strategy_engine.parameters.Parameter`) and validated when the
strategy is built; ``warmup_bars`` declares how many bars a symbol needs
before the strategy may signal on it.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from keel.core.costs import CostModel
from keel.core.messages import BarClosed, FundingRateUpdated, SignalAction
from keel.strategy_engine.history import SymbolHistory, bar_at
from keel.strategy_engine.parameters import Parameter, validate_parameters

_DIRECTIONS = {"BUY": 1, "SELL": -1, "HOLD": 0}


@dataclass(frozen=True, slots=True)
class Ladder:
    """Resting post-only limit orders a strategy wants, one per price level (a grid).

    Parameters
    ----------
    prices
        Level prices, increasing; empty ends the ladder (its orders are canceled).
    sides
        ``"BUY"``, ``"SELL"`` or None (no order at that level) per price.
    level_notional
        USDT each level's order is worth.
    max_inventory_levels
        Filled levels the ladder may hold either way.

    Raises
    ------
    ValueError
        If the prices are not positive, finite and increasing, a side is
        unknown, the lengths differ, or the notional or cap is not positive.
    """

    prices: tuple[float, ...]
    sides: tuple[str | None, ...]
    level_notional: float
    max_inventory_levels: int

    def __post_init__(self) -> None:
        if len(self.prices) != len(self.sides):
            raise ValueError(
                f"a ladder needs one side per price, got {len(self.prices)} prices, {len(self.sides)} sides"
            )
        if any(not (math.isfinite(p) and p > 0.0) for p in self.prices) or any(
            b <= a for a, b in zip(self.prices, self.prices[1:], strict=False)
        ):
            raise ValueError(f"ladder prices must be positive, finite and increasing, got {self.prices!r}")
        if any(side not in ("BUY", "SELL", None) for side in self.sides):
            raise ValueError(f"ladder sides must be BUY, SELL or None, got {self.sides!r}")
        if not (math.isfinite(self.level_notional) and self.level_notional > 0.0) or self.max_inventory_levels < 1:
            raise ValueError(
                f"a ladder needs a positive level notional and inventory cap, got "
                f"{self.level_notional!r} and {self.max_inventory_levels!r}"
            )

    @classmethod
    def ended(cls, level_notional: float, max_inventory_levels: int) -> Ladder:
        """Return the ladder with no levels: its orders are canceled, what it holds released."""
        return cls((), (), level_notional, max_inventory_levels)


@dataclass(frozen=True, slots=True)
class StrategySignal:
    """A strategy's view on one symbol.

    Parameters
    ----------
    symbol
        The instrument.
    action
        ``"BUY"``, ``"SELL"`` or ``"HOLD"`` (a :class:`~keel.core.messages.SignalAction` is accepted).
    strength
        How strongly to act, in [0, 1].
    confidence
        How sure the strategy is, in [0, 1].
    stop_loss, take_profit
        Optional positive price levels.
    metadata
        Free-form details for reports.
    target_quantity
        The position (base units, negative is short) the strategy holds by
        itself, outside the weights: the allocator leaves it as it is and the
        risk layer adds it to the symbol's target (None: none).
    ladder
        Resting post-only orders the strategy wants, one per price level (None: none).
    """

    symbol: str
    action: str
    strength: float
    confidence: float
    stop_loss: float | None = None
    take_profit: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    target_quantity: float | None = None
    ladder: Ladder | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol:
            raise ValueError(f"signal symbol must be a symbol's name, got {self.symbol!r}")
        if isinstance(self.action, SignalAction):
            object.__setattr__(self, "action", self.action.value)
        if self.action not in _DIRECTIONS:
            raise ValueError(f"signal action must be BUY, SELL or HOLD, got {self.action!r}")
        for name in ("strength", "confidence"):
            value = getattr(self, name)
            # NaN fails both comparisons, so it is refused here too.
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"signal {name} must lie in [0, 1], got {value!r}")
        for name in ("stop_loss", "take_profit"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"signal {name} must be a positive finite price or None, got {value!r}")
        if self.target_quantity is not None and not math.isfinite(self.target_quantity):
            raise ValueError(f"signal target_quantity must be finite or None, got {self.target_quantity!r}")

    @property
    def direction(self) -> int:
        """Return +1 for BUY, -1 for SELL, 0 for HOLD."""
        return _DIRECTIONS[self.action]

    @property
    def score(self) -> float:
        """Return ``direction * strength * confidence``, in [-1, 1]."""
        return _DIRECTIONS[self.action] * self.strength * self.confidence


class BaseStrategy(ABC):
    """Base class of every strategy.

    Parameters
    ----------
    name
        The strategy's name, used in signals, orders and reports.
    parameters
        Its parameters. When the class declares a ``parameter_space`` they are
        validated against it and the missing ones take their defaults;
        otherwise they are kept as given.

    Raises
    ------
    ValueError, TypeError
        If a declared parameter is unknown, out of range or of the wrong type.
    """

    parameter_space: ClassVar[Mapping[str, Parameter]] = {}
    """Tunable parameters: name -> type, range and default."""

    history_capacity: ClassVar[int | None] = 100_000
    """Bars per symbol kept by :meth:`on_bar`'s own history."""

    warmup_bars: int = 0
    """Bars a symbol needs before the strategy may signal on it."""

    hold_means_flat: ClassVar[bool] = False
    """Whether a bare HOLD (strength and confidence 0) means "go flat" rather than "no new view".

    False by default: a strategy written as in the user's UC-2.1 answers HOLD
    on every quiet bar, and reading that as "sell everything" would buy every
    spike and sell it on the next bar. keel's own strategies set it True.
    """

    places_own_orders: ClassVar[bool] = False
    """Whether its target quantities become orders of its own (their approvals carry its name).

    False for a strategy that only votes in a manager's combined view: the
    orders of that view carry the manager's name. ``execution.styles`` names
    the strategies whose orders carry their names.
    """

    costs: CostModel | None = None
    """The shared cost model, for strategies that weigh an edge against trading costs (None: their own)."""

    def use_costs(self, costs: CostModel | None) -> None:
        """Price trades with the run's shared cost model (None: the strategy's own fee parameters)."""
        self.costs = costs

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        self.name = name
        given = dict(parameters or {})
        self.parameters: dict[str, Any] = (
            validate_parameters(name, self.parameter_space, given) if self.parameter_space else given
        )
        self._histories: dict[str, SymbolHistory] = {}

    @classmethod
    def default_parameters(cls) -> dict[str, int | float]:
        """Return the declared parameters' defaults."""
        return {name: spec.default for name, spec in cls.parameter_space.items()}

    @abstractmethod
    def generate_signal(self, market_data: Mapping[str, Any], current_index: int) -> StrategySignal | None:
        """Return the view on ``market_data["symbol"]`` at bar ``current_index``.

        Read only bars ``<= current_index`` and funding rows settled before
        that bar's ``timestamp``. What the answer means for the position:

        - BUY / SELL: be long / short, sized by ``strength * confidence``;
        - a HOLD with some strength or confidence: be flat;
        - a bare HOLD (strength and confidence 0): no new view, the position
          stays as the last view left it, unless the class sets
          :attr:`hold_means_flat` (then: be flat);
        - None: no new view.
        """

    def on_bar(self, bar: BarClosed) -> StrategySignal | None:
        """Append a closed bar to the symbol's history and return the signal on it."""
        history = self._histories.get(bar.symbol)
        if history is None:
            history = self._histories[bar.symbol] = SymbolHistory(bar.symbol, self.history_capacity)
        history.append_bar(bar.ts_event, bar.open, bar.high, bar.low, bar.close, bar.volume)
        return self.generate_signal(history.view(), len(history) - 1)

    def on_funding(self, event: FundingRateUpdated) -> None:
        """Append a settled funding rate to the symbol's history."""
        history = self._histories.get(event.symbol)
        if history is None:
            history = self._histories[event.symbol] = SymbolHistory(event.symbol, self.history_capacity)
        history.append_funding(
            event.funding_time,
            float(event.rate),
            None if event.mark_price is None else float(event.mark_price),
        )


class SymbolState:
    """Per-symbol state of an :class:`IncrementalStrategy`: the last bar it saw and its last signal."""

    __slots__ = ("bars", "last_key", "last_signal")

    def __init__(self) -> None:
        self.bars = 0
        self.last_key: int | None = None
        self.last_signal: StrategySignal | None = None


class IncrementalStrategy(BaseStrategy):
    """A strategy whose per-symbol state advances one bar at a time in O(1).

    keel's own strategies derive from it; their HOLD means "flat"
    (:attr:`BaseStrategy.hold_means_flat`).

    Subclasses implement :meth:`new_state` and :meth:`step`. A call for the
    bar right after the last one seen (by ``timestamp``, or by index when the
    data has no timestamps) costs one step; a repeated call returns the
    previous answer; any other call rebuilds the symbol's state from the first
    bar of ``market_data`` up to ``current_index``. A step whose view did not
    change returns ``state.last_signal`` itself, so callers can tell "unchanged"
    by identity and no signal is allocated.
    """

    hold_means_flat: ClassVar[bool] = True

    reads_bar_only: ClassVar[bool] = False
    """Whether :meth:`step` reads nothing but ``bar`` and ``market_data["symbol"]``.

    Not the index, other columns, funding rows or the shared cost model.
    Then the views depend on the symbol's bars alone, and a backtest may
    compute them ahead in a worker process (see
    :mod:`keel.strategy_engine.regime_prefetch`). A subclass whose step reads
    more must set it False.
    """

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, parameters)
        self._states: dict[str, SymbolState] = {}
        self._steps_after_known_bar = type(self).generate_signal is IncrementalStrategy.generate_signal

    @abstractmethod
    def new_state(self) -> SymbolState:
        """Return a fresh state for a symbol."""

    @abstractmethod
    def step(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        """Advance ``state`` by bar ``index`` (``bar`` is its key and OHLCV); return the signal on it."""

    def generate_signal(self, market_data: Mapping[str, Any], current_index: int) -> StrategySignal | None:
        """Advance the symbol's state to ``current_index`` and return the signal there."""
        symbol = market_data["symbol"]
        bar = bar_at(market_data, current_index)
        state = self._states.get(symbol)
        if state is not None and state.bars:
            if bar[0] == state.last_key:
                return state.last_signal
            if not self._follows(state, market_data, current_index, bar[0]):
                state = None
        if state is None:
            state = self._replay(market_data, current_index)
            self._states[symbol] = state
        return self._advance(state, market_data, current_index, bar)

    def signal_after(
        self,
        symbol: str,
        market_data: Mapping[str, Any],
        current_index: int,
        bar: tuple[int, float, float, float, float, float],
        previous_key: int | None,
    ) -> StrategySignal | None:
        """Return :meth:`generate_signal` for a caller that already holds the bar and its predecessor's key.

        ``bar`` is ``bar_at(market_data, current_index)`` and ``previous_key``
        the key of bar ``current_index - 1`` (None for the first bar); when
        the symbol's state stopped at that key the bar costs one step, with no
        look-up of the data; otherwise it is :meth:`generate_signal` itself.
        """
        state = self._states.get(symbol)
        if (
            state is not None
            and previous_key is not None
            and state.last_key == previous_key
            and state.bars
            and current_index > 0
            and bar[0] > previous_key
            and self._steps_after_known_bar
        ):
            # _advance, inlined: this runs for every strategy, symbol and bar.
            state.bars += 1
            state.last_key = bar[0]
            signal = self.step(state, market_data, current_index, bar)
            state.last_signal = signal
            return signal
        return self.generate_signal(market_data, current_index)

    def symbol_state(self, symbol: str) -> SymbolState:
        """Return the symbol's state (a fresh one if it has none).

        For a strategy whose :attr:`reads_bar_only` holds, stepping this state
        bar by bar with :meth:`step` (counting ``bars``, keeping ``last_key``
        and ``last_signal`` as :meth:`signal_after` does), with
        ``{"symbol": symbol}`` as the market data, gives the signals
        :meth:`signal_after` gives.
        """
        state = self._states.get(symbol)
        if state is None:
            state = self._states[symbol] = self.new_state()
        return state

    def blank_copy(self) -> IncrementalStrategy:
        """Return a copy of this strategy (class, name, parameters) with no symbol state and no shared cost model."""
        clone = copy.copy(self)
        clone._states = {}
        clone._histories = {}
        clone.costs = None
        return clone

    def reset(self, symbol: str | None = None) -> None:
        """Forget the state of one symbol (or of all)."""
        if symbol is None:
            self._states.clear()
        else:
            self._states.pop(symbol, None)

    @staticmethod
    def _follows(state: SymbolState, market_data: Mapping[str, Any], index: int, key: int) -> bool:
        if index == 0 or state.last_key is None or key <= state.last_key:
            return False
        return bar_at(market_data, index - 1)[0] == state.last_key

    def _replay(self, market_data: Mapping[str, Any], current_index: int) -> SymbolState:
        state = self.new_state()
        for index in range(current_index):
            self._advance(state, market_data, index, bar_at(market_data, index))
        return state

    def _advance(
        self,
        state: SymbolState,
        market_data: Mapping[str, Any],
        index: int,
        bar: tuple[int, float, float, float, float, float],
    ) -> StrategySignal | None:
        state.bars += 1
        state.last_key = bar[0]
        signal = self.step(state, market_data, index, bar)
        state.last_signal = signal
        return signal


def hold(symbol: str, **metadata: Any) -> StrategySignal:
    """Return a flat (HOLD) signal with zero strength and confidence."""
    return StrategySignal(symbol, "HOLD", 0.0, 0.0, metadata=metadata)


def clip01(value: float) -> float:
    """Clip a number into [0, 1] (NaN becomes 0)."""
    if value >= 1.0:
        return 1.0
    if value > 0.0:
        return value
    return 0.0
