"""Search spaces: dotted configuration keys with a type, a range and a scale.

A strategy's space comes from its declared :class:`~keel.strategy_engine.parameters.Parameter`
entries (ints stay ints; a positive range spanning a decade or more is searched
on a log scale). Any other configuration key (``risk.max_leverage``,
``portfolio.gross_exposure``) can be added with explicit bounds. Ordering
constraints between keys (``fast_period < slow_period``) are enforced by
construction: the larger key is sampled from a range that starts above the
value already drawn for the smaller one, so no sample is ever discarded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from pydantic import ValidationError

from keel.config import KeelConfig, describe_validation_error
from keel.strategy_engine.factory import StrategyFactory

_STRATEGY_SECTION = "strategy.parameters"

# (smaller key, larger key) pairs the configuration requires in order, by key suffix.
ORDERED_KEYS: tuple[tuple[str, str], ...] = (
    ("trend_following.fast_period", "trend_following.slow_period"),
    ("mean_reversion.exit_z", "mean_reversion.entry_z"),
    ("mean_reversion.entry_z", "mean_reversion.stop_z"),
    ("range_trading.min_range_width", "range_trading.max_range_width"),
    ("strategy.fast_period", "strategy.slow_period"),
    ("risk.max_drawdown_pct", "risk.halt_drawdown_pct"),
)

# Smallest gap kept between an ordered pair of float keys.
_FLOAT_GAP = 1e-6


class Suggester(Protocol):
    """What a search space draws values from (an ``optuna.Trial``)."""

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class Dimension:
    """One searched configuration key.

    Parameters
    ----------
    key
        Dotted configuration key, e.g. ``strategy.parameters.trend_following.fast_period``.
    kind
        ``int`` or ``float``.
    low, high
        Closed range searched.
    log
        Search on a log scale.
    """

    key: str
    kind: type
    low: int | float
    high: int | float
    log: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (int, float):
            raise TypeError(f"{self.key}: kind must be int or float, got {self.kind!r}")
        if not self.low <= self.high:
            raise ValueError(f"{self.key}: low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.key}: a log scale needs a positive low, got {self.low}")


@dataclass(frozen=True, slots=True)
class Choice:
    """One configuration key searched over a list of values (an allocator, an execution style, a switch).

    Parameters
    ----------
    key
        Dotted configuration key, e.g. ``portfolio.allocator``.
    choices
        The values tried (strings, numbers or booleans).
    """

    key: str
    choices: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.choices) < 1 or len(set(self.choices)) != len(self.choices):
            raise ValueError(f"{self.key}: choices must be distinct and at least one, got {self.choices!r}")


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """The dimensions of a study and the ordering constraints between them."""

    dimensions: tuple[Dimension | Choice, ...]

    def __post_init__(self) -> None:
        keys = [d.key for d in self.dimensions]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate keys in the search space: {keys}")
        for smaller, larger in self.ordered_pairs():
            if smaller.low >= larger.high:
                raise ValueError(
                    f"{smaller.key} must be below {larger.key}, but its range [{smaller.low}, {smaller.high}] "
                    f"leaves no room under [{larger.low}, {larger.high}]"
                )

    @property
    def keys(self) -> tuple[str, ...]:
        """The dotted keys searched, in sampling order."""
        return tuple(d.key for d in self.dimensions)

    def ordered_pairs(self) -> list[tuple[Dimension, Dimension]]:
        """Return the (smaller, larger) dimension pairs both present in the space."""
        by_key = {d.key: d for d in self.dimensions if isinstance(d, Dimension)}
        pairs = []
        for smaller_suffix, larger_suffix in ORDERED_KEYS:
            smaller = next((d for k, d in by_key.items() if _is_key(k, smaller_suffix)), None)
            larger = next((d for k, d in by_key.items() if _is_key(k, larger_suffix)), None)
            if smaller is not None and larger is not None:
                pairs.append((smaller, larger))
        return pairs

    def sample(self, suggester: Suggester) -> dict[str, int | float]:
        """Draw one value per key; every ordered pair comes out strictly in order.

        A key that must exceed another is drawn after it, from a range whose low
        end sits just above the value drawn; a key that must stay below one drawn
        earlier is capped the same way.
        """
        floors: dict[str, list[str]] = {}
        ceilings: dict[str, list[str]] = {}
        for smaller, larger in self.ordered_pairs():
            floors.setdefault(larger.key, []).append(smaller.key)
            ceilings.setdefault(smaller.key, []).append(larger.key)
        values: dict[str, int | float] = {}
        for dimension in self._sampling_order():
            if isinstance(dimension, Choice):
                values[dimension.key] = suggester.suggest_categorical(dimension.key, list(dimension.choices))
                continue
            low, high = dimension.low, dimension.high
            for key in floors.get(dimension.key, []):
                if key in values:
                    low = max(low, _above(values[key], dimension.kind))
            for key in ceilings.get(dimension.key, []):
                if key in values:
                    high = min(high, _below(values[key], dimension.kind))
            values[dimension.key] = _suggest(suggester, dimension, low, high)
        return values

    def _sampling_order(self) -> list[Dimension | Choice]:
        """Return the dimensions with every smaller key of a pair before its larger one."""
        ordered = list(self.dimensions)
        for _ in range(len(ordered)):
            moved = False
            for smaller, larger in self.ordered_pairs():
                i, j = ordered.index(smaller), ordered.index(larger)
                if i > j:
                    ordered.insert(j, ordered.pop(i))
                    moved = True
            if not moved:
                break
        return ordered


def _is_key(key: str, suffix: str) -> bool:
    return key == suffix or key.endswith("." + suffix)


def _above(value: int | float, kind: type) -> int | float:
    return int(value) + 1 if kind is int else float(value) + _FLOAT_GAP


def _below(value: int | float, kind: type) -> int | float:
    return int(value) - 1 if kind is int else float(value) - _FLOAT_GAP


def _suggest(suggester: Suggester, dimension: Dimension, low: int | float, high: int | float) -> int | float:
    if low > high:
        raise ValueError(f"{dimension.key}: no value fits between {low} and {high}")
    if dimension.kind is int:
        return suggester.suggest_int(dimension.key, int(low), int(high), log=dimension.log)
    return suggester.suggest_float(dimension.key, float(low), float(high), log=dimension.log)


def _log_scale(low: float, high: float) -> bool:
    """A positive range spanning at least a decade is searched on a log scale."""
    return low > 0 and high / low >= 10


def strategy_key(strategy: str, name: str) -> str:
    """Return the configuration key of a strategy parameter."""
    if strategy == "moving_average_cross":
        return f"strategy.{name}"
    return f"{_STRATEGY_SECTION}.{strategy}.{name}"


def strategy_space(strategy: str, bounds: Mapping[str, Any] | None = None) -> SearchSpace:
    """Return the search space of a strategy's declared parameters.

    Parameters
    ----------
    strategy
        Strategy name (``trend_following`` or ``TrendFollowing``).
    bounds
        Parameters to search with narrower ranges ``(low, high)``, by parameter
        name (or full dotted configuration key for keys outside the strategy,
        where a list gives the values to choose from, e.g.
        ``{"portfolio.allocator": ["markowitz", "equal_weight"]}``); when given,
        only these are searched.

    Raises
    ------
    ValueError
        If a name is not a parameter of the strategy, or a range leaves the declared one.
    """
    strategy_class = StrategyFactory.strategy_class(strategy)
    section = canonical_strategy(strategy)
    declared = strategy_class.parameter_space
    if not bounds:
        return SearchSpace(
            tuple(
                Dimension(strategy_key(section, name), p.kind, p.low, p.high, _log_scale(p.low, p.high))
                for name, p in declared.items()
            )
        )
    dimensions: list[Dimension | Choice] = []
    for name, bound in bounds.items():
        if "." in name and isinstance(bound, list):
            dimensions.append(config_choice(name, bound))
            continue
        low, high = _range(name, bound)
        if "." in name:
            dimensions.append(config_dimension(name, low, high))
            continue
        if name not in declared:
            raise ValueError(f"{section} has no parameter {name}; expected some of: {', '.join(declared)}")
        spec = declared[name]
        if low < spec.low or high > spec.high:
            raise ValueError(f"{section} parameter {name}: range ({low}, {high}) leaves [{spec.low}, {spec.high}]")
        if spec.kind is int and not (float(low).is_integer() and float(high).is_integer()):
            raise ValueError(f"{section} parameter {name} is an integer; got range ({low}, {high})")
        kind_low, kind_high = spec.kind(low), spec.kind(high)
        dimensions.append(
            Dimension(strategy_key(section, name), spec.kind, kind_low, kind_high, _log_scale(kind_low, kind_high))
        )
    return SearchSpace(tuple(dimensions))


def _range(name: str, bound: Any) -> tuple[int | float, int | float]:
    """Return a searched range ``(low, high)``, or raise naming the parameter and what was given."""
    numbers = (
        isinstance(bound, tuple | list)
        and len(bound) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bound)
    )
    if not numbers:
        raise ValueError(f"{name}: a range is (low, high) of two finite numbers, got {bound!r}")
    low, high = bound
    if low > high:
        raise ValueError(f"{name}: low {low} is above high {high}")
    return low, high


def canonical_strategy(strategy: str) -> str:
    """Return the configuration section name of a strategy (``trend_following``)."""
    strategy_class = StrategyFactory.strategy_class(strategy)
    for name, registered in StrategyFactory.registry.items():
        if registered is strategy_class:
            return name
    raise ValueError(f"unknown strategy {strategy!r}")


def config_dimension(key: str, low: float, high: float, *, log: bool | None = None) -> Dimension:
    """Return a dimension for any numeric configuration key, typed like its current value.

    Raises
    ------
    ValueError
        If the key does not exist in the configuration or is not a number, the
        range is not finite, an integer key gets fractional ends, or an end is
        not a valid value of the key.
    """
    base = KeelConfig()
    value = get_key(base.model_dump(), key)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"configuration key {key} is not a number (it holds {value!r})")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{key}: range ({low}, {high}) is not finite")
    kind = int if isinstance(value, int) else float
    if kind is int and not (float(low).is_integer() and float(high).is_integer()):
        raise ValueError(f"{key} is an integer; got range ({low}, {high})")
    kind_low, kind_high = kind(low), kind(high)
    for end in (kind_low, kind_high):
        _check_value(base, key, end)
    return Dimension(key, kind, kind_low, kind_high, _log_scale(low, high) if log is None else log)


def config_choice(key: str, choices: Sequence[Any]) -> Choice:
    """Return a choice over values of any configuration key; each value is checked by the configuration.

    Raises
    ------
    ValueError
        If the key does not exist or a value is not valid for it.
    """
    base = KeelConfig()
    get_key(base.model_dump(), key)
    for value in choices:
        _check_value(base, key, value)
    return Choice(key, tuple(choices))


def _check_value(base: KeelConfig, key: str, value: Any) -> None:
    """Raise naming the key and the configuration's reason when ``value`` is not valid for it."""
    try:
        apply_values(base, {key: value})
    except ValueError as error:
        reason = str(error).removeprefix(f"{key}: ")
        raise ValueError(f"{key}: {value!r} is not a valid value ({reason})") from None


def get_key(data: Mapping[str, Any], key: str) -> Any:
    """Return the value at a dotted key of nested mappings, or raise naming the key."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(f"unknown configuration key {key}")
        node = node[part]
    return node


def apply_values(config: KeelConfig, values: Mapping[str, Any]) -> KeelConfig:
    """Return ``config`` with each dotted key set, validated like a configuration file.

    Raises
    ------
    ValueError
        If a key is unknown or the result fails validation.
    """
    data = config.model_dump()
    for key, value in values.items():
        get_key(data, key)
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    try:
        return KeelConfig.model_validate(data)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn dotted keys into nested mappings (a configuration layer)."""
    layer: dict[str, Any] = {}
    for key, value in values.items():
        *parents, last = key.split(".")
        node = layer
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return layer
