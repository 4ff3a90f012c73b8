"""Typed, frozen configuration: YAML layers, environment overrides, secrets.

Layers are deep-merged, later wins:

1. ``config/default.yaml``
2. ``config/{mode}.yaml`` when a mode is given (the mode also sets ``run.mode``)
3. the user's configuration file, when given
4. environment overrides ``KEEL_<SECTION>__<KEY>=value`` (the value is parsed
   as YAML, so numbers, booleans and lists work; a comma-separated string is
   accepted for tuple fields such as ``data.symbols``)

The files in ``config/`` only document the defaults, which the schema below
also carries, so a missing ``default.yaml`` or ``{mode}.yaml`` is not an
error; a user file that does not exist is.

Secrets never come from YAML. They come from the environment
(``KEEL_BINANCE_API_KEY``, ``KEEL_BINANCE_API_SECRET``, ``KEEL_API_TOKEN``) or
from a file named by ``KEEL_SECRET_FILE`` holding ``NAME=value`` lines with the
same names; the environment wins over the file. They are held in `Secret`,
whose ``repr`` is redacted.

``data.root``, ``exchange.instruments`` and ``exchange.leverage_brackets`` are
made absolute against the file that names them: the folder of the user's
config file, or the project (the folder holding ``config/``) for the default
files and the built-in default, or the working directory for an environment
variable. ``run.output_dir`` is interpreted against the working directory.

Every problem is raised as `ConfigurationError` naming the file (or
environment variable) that set the bad value and its dotted key; that includes
a Markowitz-only portfolio key (``MARKOWITZ_ONLY_KEYS``) set with an allocator
other than markowitz, which would ignore it.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from keel.core.errors import ConfigurationError
from keel.core.instruments import LARGEST_LEVERAGE
from keel.core.intervals import BarInterval, interval_ms
from keel.strategy_engine.base import BaseStrategy
from keel.strategy_engine.funding_arbitrage import FundingArbitrageStrategy
from keel.strategy_engine.grid_trading import GridTradingStrategy
from keel.strategy_engine.hyper_rsi import HyperRsiStrategy
from keel.strategy_engine.mean_reversion import MeanReversionStrategy
from keel.strategy_engine.range_trading import RangeTradingStrategy
from keel.strategy_engine.scheduled_dca import ScheduledDcaStrategy
from keel.strategy_engine.trend_following import TrendFollowingStrategy
from keel.strategy_engine.volatility_breakout import VolatilityBreakoutStrategy

__all__ = [
    "BinanceConfig",
    "BusConfig",
    "DataConfig",
    "ExchangeConfig",
    "KeelConfig",
    "LiveConfig",
    "LoggingConfig",
    "MonitorConfig",
    "PaperConfig",
    "PersistenceConfig",
    "PortfolioConfig",
    "RiskConfig",
    "RunConfig",
    "Secret",
    "Secrets",
    "StrategyConfig",
    "TelegramConfig",
    "WebConfig",
    "config_to_dict",
    "load_config",
]

MODES = ("backtest", "paper", "live")
REDACTED = "**********"
SECRET_FILE_VARIABLE = "KEEL_SECRET_FILE"
# Environment (and secret file) name -> field of `Secrets`.
SECRET_VARIABLES = {
    "KEEL_BINANCE_API_KEY": "binance_api_key",
    "KEEL_BINANCE_API_SECRET": "binance_api_secret",
    "KEEL_API_TOKEN": "api_token",
    "KEEL_TELEGRAM_TOKEN": "telegram_token",
}
_ENV_PREFIX = "KEEL_"
_ENV_SEPARATOR = "__"
_DEFAULTS_SOURCE = "built-in defaults"
_FILE_KEY = "(file)"


class Secret:
    """An immutable string whose ``repr`` and ``str`` never show the value.

    Parameters
    ----------
    value
        The secret text; must not be empty.

    Examples
    --------
    >>> key = Secret("abc123")
    >>> key
    Secret('**********')
    >>> key.reveal()
    'abc123'
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or value == "":
            raise ValueError("a secret must be a non-empty string")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the secret text; pass it only to the code that needs it."""
        return self._value

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, so a comparison against a token leaks no timing.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[Any], handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        """Validate from a non-empty string or a `Secret`; dump redacted as JSON."""
        from_string = core_schema.no_info_after_validator_function(cls, core_schema.str_schema(min_length=1))
        return core_schema.json_or_python_schema(
            json_schema=from_string,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), from_string]),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda _: REDACTED, when_used="json"),
        )


Symbol = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z0-9]+$"),
]

DEFAULT_SYMBOLS = (
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "LINKUSDT",
    "LTCUSDT",
    "BCHUSDT",
    "AVAXUSDT",
    "SUIUSDT",
)


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number only (``int``, ``float``, ``Decimal``, optionally None)."""
    if get_origin(annotation) is Annotated:
        return _numeric(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        kinds = [kind for kind in get_args(annotation) if kind is not NoneType]
        return bool(kinds) and all(_numeric(kind) for kind in kinds)
    return annotation in (int, float, Decimal)


class _Section(BaseModel):
    """Base of every configuration model: frozen, strict about keys, finite numbers, no booleans for numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse true and false where a number goes: pydantic would read them as 1 and 0."""
        field = None if info.field_name is None else cls.model_fields[info.field_name]
        if isinstance(value, bool) and field is not None and _numeric(field.annotation):
            raise PydanticCustomError("boolean_number", "expected a number, not a boolean")
        return value


class RunConfig(_Section):
    """How and where a run happens."""

    mode: Literal["backtest", "paper", "live"] = Field("backtest", description="Run mode: backtest, paper or live.")
    seed: int = Field(7, ge=0, description="Seed of every random number generator.")
    output_dir: Path = Field(
        Path("runs"),
        description="Folder for run results, relative to the working directory.",
    )
    regime_fit_worker: bool = Field(
        True,
        description="Backtests run the regime detectors and the bar-only strategies ahead of the replay in a "
        "worker process: the same views and orders, less wall time with a spare core (false: in the replay).",
    )


class DataConfig(_Section):
    """Recorded market data: bars and funding rates."""

    root: Path = Field(Path("data"), description="Data folder; a relative one is read against the file that names it.")
    bars: str = Field(
        "ohlcv/binance_usdm_1m_2025-05",
        min_length=1,
        description="Folder under root holding {SYMBOL}_{interval}.csv.gz bar files.",
    )
    bar_interval: BarInterval = Field("1m", description="Bar interval: any Binance kline interval from 1m to 1w.")
    resample_from: BarInterval | None = Field(
        None,
        description="Read bar files of this finer interval and aggregate them into bar_interval bars; "
        "None = files of bar_interval.",
    )
    funding: str | None = Field(
        "funding/binance_usdm_funding_2025-03_06.csv.gz",
        min_length=1,
        description="Funding-rate file under root; none = no funding data: zero funding, and strategies that "
        "need funding rates are kept out of the run.",
    )
    symbols: tuple[Symbol, ...] = Field(DEFAULT_SYMBOLS, min_length=1, description="Symbols to trade (upper case).")
    start: datetime | None = Field(
        None,
        description="First bar time (UTC; a date means midnight); None = data start.",
    )
    end: datetime | None = Field(
        None,
        description="End of data, exclusive (UTC; a date means midnight); None = data end.",
    )

    @field_validator("funding", mode="before")
    @classmethod
    def _no_funding(cls, value: object) -> object:
        """Read ``none`` (any case) as no funding data."""
        if isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
            return None
        return value

    @model_validator(mode="after")
    def _resample_divides(self) -> Self:
        source = self.resample_from
        if source is not None and (
            interval_ms(self.bar_interval) % interval_ms(source) != 0 or source == self.bar_interval
        ):
            raise PydanticCustomError(
                "resample_not_finer",
                "resample_from ({source}) must be a finer interval that divides bar_interval ({interval})",
                {"config_key": "resample_from", "source": source, "interval": self.bar_interval},
            )
        return self

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        """Accept ``"BTCUSDT,ETHUSDT"`` as well as a list; upper-case each name."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            return tuple(item.strip().upper() if isinstance(item, str) else item for item in value)
        return value

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        duplicates = sorted({symbol for symbol in value if value.count(symbol) > 1})
        if duplicates:
            raise PydanticCustomError(
                "duplicate_symbols",
                "duplicate symbols: {duplicates}",
                {"duplicates": ", ".join(duplicates)},
            )
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date_to_datetime(cls, value: object) -> object:
        """Read a date (YAML parses ``2025-05-10`` into one) as midnight UTC."""
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return value

    @field_validator("start", "end")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        """Take a naive time as UTC and convert an aware one to UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _end_after_start(self) -> Self:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise PydanticCustomError(
                "end_before_start",
                "end ({end}) must be after start ({start})",
                {
                    "config_key": "end",
                    "end": self.end.isoformat(),
                    "start": self.start.isoformat(),
                },
            )
        return self


class BusConfig(_Section):
    """The in-process event bus."""

    capacity: int = Field(10000, ge=1, description="Maximum number of queued messages.")


def _require_order(low_key: str, low: float, high_key: str, high: float) -> None:
    """Raise a cross-field error naming ``low_key`` unless ``low < high``."""
    if low >= high:
        raise PydanticCustomError(
            "parameters_out_of_order",
            "{low_key} ({low}) must be less than {high_key} ({high})",
            {"config_key": low_key, "low_key": low_key, "low": low, "high_key": high_key, "high": high},
        )


def _ordered(*pairs: tuple[str, str]) -> Any:
    """Return a model validator requiring each ``(low, high)`` pair of fields in order."""

    def check(model: BaseModel) -> BaseModel:
        for low, high in pairs:
            _require_order(low, getattr(model, low), high, getattr(model, high))
        return model

    return model_validator(mode="after")(check)


def parameter_section(
    name: str,
    strategy: type[BaseStrategy],
    *,
    ordered: tuple[tuple[str, str], ...] = (),
    extra: Mapping[str, Any] | None = None,
) -> type[_Section]:
    """Return the configuration model of a strategy's parameters, derived from its ``parameter_space``.

    Each declared :class:`~keel.strategy_engine.parameters.Parameter` becomes a
    field of its kind, default, closed range and description; ``ordered`` lists
    the ``(low, high)`` pairs that must be strictly increasing; ``extra``
    adds fields that are not tunable numbers (name -> (type, Field)).
    """
    fields: dict[str, Any] = {
        key: (spec.kind, Field(spec.default, ge=spec.low, le=spec.high, description=spec.description))
        for key, spec in strategy.parameter_space.items()
    }
    fields.update(extra or {})
    validators = {"_in_order": _ordered(*ordered)} if ordered else None
    summary = (strategy.__doc__ or name).strip().splitlines()[0]
    section: type[_Section] = create_model(
        name, __base__=_Section, __doc__=summary, __validators__=validators, __module__=__name__, **fields
    )
    return section


if TYPE_CHECKING:
    # The sections are built at run time; to the type checker they are configuration sections.
    TrendFollowingParameters = _Section
    MeanReversionParameters = _Section
    RangeTradingParameters = _Section
    FundingArbitrageParameters = _Section
    GridTradingParameters = _Section
    HyperRsiParameters = _Section
    VolatilityBreakoutParameters = _Section
    ScheduledDcaParameters = _Section
else:
    TrendFollowingParameters = parameter_section(
        "TrendFollowingParameters", TrendFollowingStrategy, ordered=(("fast_period", "slow_period"),)
    )
    MeanReversionParameters = parameter_section(
        "MeanReversionParameters", MeanReversionStrategy, ordered=(("exit_z", "entry_z"), ("entry_z", "stop_z"))
    )
    RangeTradingParameters = parameter_section(
        "RangeTradingParameters", RangeTradingStrategy, ordered=(("min_range_width", "max_range_width"),)
    )
    FundingArbitrageParameters = parameter_section("FundingArbitrageParameters", FundingArbitrageStrategy)
    GridTradingParameters = parameter_section("GridTradingParameters", GridTradingStrategy)
    HyperRsiParameters = parameter_section(
        "HyperRsiParameters", HyperRsiStrategy, ordered=(("first_take_profit_atr", "second_take_profit_atr"),)
    )
    VolatilityBreakoutParameters = parameter_section(
        "VolatilityBreakoutParameters", VolatilityBreakoutStrategy, ordered=(("range_period", "baseline_period"),)
    )
    ScheduledDcaParameters = parameter_section(
        "ScheduledDcaParameters",
        ScheduledDcaStrategy,
        extra={
            "cron": (str | None, Field(None, description="Crontab schedule (UTC) replacing interval_minutes.")),
            "misfire_grace_seconds": (
                float,
                Field(300.0, ge=1.0, description="Seconds late a wall-clock fire may still buy (paper and live)."),
            ),
        },
    )


class StrategyParameters(_Section):
    """Parameters of each strategy the manager can run."""

    trend_following: TrendFollowingParameters = Field(
        default_factory=TrendFollowingParameters, description="Trend following."
    )
    mean_reversion: MeanReversionParameters = Field(
        default_factory=MeanReversionParameters, description="Mean reversion."
    )
    range_trading: RangeTradingParameters = Field(default_factory=RangeTradingParameters, description="Range trading.")
    funding_arbitrage: FundingArbitrageParameters = Field(
        default_factory=FundingArbitrageParameters, description="Funding arbitrage."
    )
    grid_trading: GridTradingParameters = Field(default_factory=GridTradingParameters, description="Grid trading.")
    hyper_rsi: HyperRsiParameters = Field(default_factory=HyperRsiParameters, description="HYPERRSI.")
    volatility_breakout: VolatilityBreakoutParameters = Field(
        default_factory=VolatilityBreakoutParameters, description="Volatility breakout."
    )
    scheduled_dca: ScheduledDcaParameters = Field(default_factory=ScheduledDcaParameters, description="Scheduled DCA.")


class StrategyWeights(_Section):
    """One row of the regime weight matrix: a non-negative weight per strategy."""

    trend_following: float = Field(0.25, ge=0.0, description="Weight of trend following.")
    mean_reversion: float = Field(0.25, ge=0.0, description="Weight of mean reversion.")
    range_trading: float = Field(0.25, ge=0.0, description="Weight of range trading.")
    funding_arbitrage: float = Field(0.25, ge=0.0, description="Weight of funding arbitrage.")
    grid_trading: float = Field(0.1, ge=0.0, description="Weight of grid trading (when it runs).")
    hyper_rsi: float = Field(0.1, ge=0.0, description="Weight of HYPERRSI (when it runs).")
    volatility_breakout: float = Field(0.1, ge=0.0, description="Weight of the volatility breakout (when it runs).")
    scheduled_dca: float = Field(0.1, ge=0.0, description="Weight of scheduled DCA (when it runs).")

    @model_validator(mode="after")
    def _some_weight(self) -> Self:
        if not sum(self.model_dump().values()) > 0:
            raise PydanticCustomError(
                "all_weights_zero",
                "at least one strategy needs a positive weight",
                {"config_key": "trend_following"},
            )
        return self


def _weights(
    trend: float, reversion: float, range_: float, funding: float, *extra: float
) -> Callable[[], StrategyWeights]:
    """Return a default factory of one row of the regime weight matrix.

    ``extra`` are the weights of grid trading, HYPERRSI, the volatility
    breakout and scheduled DCA, which weigh only in runs that add them.
    """
    grid, rsi, breakout, dca = extra
    return lambda: StrategyWeights(
        trend_following=trend,
        mean_reversion=reversion,
        range_trading=range_,
        funding_arbitrage=funding,
        grid_trading=grid,
        hyper_rsi=rsi,
        volatility_breakout=breakout,
        scheduled_dca=dca,
    )


class RegimeWeights(_Section):
    """The regime -> strategy weight matrix; ``unknown`` applies before the detector's first fit."""

    trending: StrategyWeights = Field(
        default_factory=_weights(0.55, 0.05, 0.05, 0.35, 0.05, 0.4, 0.2, 0.2), description="Trending."
    )
    mean_reverting: StrategyWeights = Field(
        default_factory=_weights(0.05, 0.45, 0.3, 0.2, 0.4, 0.1, 0.05, 0.2), description="Mean-reverting."
    )
    high_volatility: StrategyWeights = Field(
        default_factory=_weights(0.35, 0.1, 0.05, 0.5, 0.05, 0.2, 0.3, 0.1), description="High volatility."
    )
    low_volatility: StrategyWeights = Field(
        default_factory=_weights(0.1, 0.3, 0.4, 0.2, 0.4, 0.1, 0.4, 0.2), description="Low volatility."
    )
    unknown: StrategyWeights = Field(
        default_factory=_weights(0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25),
        description="Before the detector's first fit.",
    )


class RegimeDetectorConfig(_Section):
    """The HMM + GARCH regime detector (one per symbol)."""

    enabled: bool = Field(True, description="Detect regimes; false applies the unknown row always.")
    trend_window: int = Field(120, ge=2, description="Bars of the efficiency-ratio feature.")
    volatility_window: int = Field(60, ge=2, description="Bars of the realized-volatility feature.")
    fit_window: int = Field(2880, ge=40, description="Bars the HMM and GARCH are fitted on.")
    min_fit_bars: int = Field(1440, ge=40, description="Feature rows needed before the first fit.")
    refit_interval: int = Field(1440, ge=1, description="Bars between refits.")
    n_iter: int = Field(50, ge=1, description="EM iterations of the first fit.")
    refit_n_iter: int = Field(10, ge=1, description="EM iterations of the warm-started refits.")
    tol: float = Field(0.001, gt=0, description="EM convergence tolerance (log-likelihood gain).")
    min_covar: float = Field(1.0e-5, gt=0, description="Floor of the HMM's variances.")
    return_scale: float = Field(10000.0, gt=0, description="Return multiplier before the GARCH fit (bps).")
    relabel_margin: float = Field(1.0, ge=0, description="How much better the naming rule must fit to rename.")
    fit_delay_bars: int = Field(
        0,
        ge=0,
        description="Bars from a refit's start to its use (0: the same bar). Paper and live fit in a worker "
        "process meanwhile, off the event loop; below refit_interval.",
    )

    @model_validator(mode="after")
    def _window_holds_a_fit(self) -> Self:
        if self.fit_window < self.min_fit_bars:
            raise PydanticCustomError(
                "fit_window_too_short",
                "fit_window ({window}) must be at least min_fit_bars ({minimum})",
                {"config_key": "fit_window", "window": self.fit_window, "minimum": self.min_fit_bars},
            )
        return self


StrategyName = Literal[
    "trend_following",
    "mean_reversion",
    "range_trading",
    "funding_arbitrage",
    "grid_trading",
    "hyper_rsi",
    "volatility_breakout",
    "scheduled_dca",
]


class StrategyGateConfig(_Section):
    """A strategy's backtest gate: what its backtest over the last days of data must show before it may trade."""

    min_sharpe: float | None = Field(None, description="Smallest annualized Sharpe ratio; null: not checked.")
    max_drawdown: float | None = Field(None, ge=0.0, description="Largest drawdown, a fraction; null: not checked.")
    min_trades: int = Field(0, ge=0, description="Fewest positions opened in the window.")
    window_days: float = Field(30.0, gt=0.0, description="Days of the most recent data the backtest covers.")


class StrategyConfig(_Section):
    """What trades: the strategy manager with its strategies, regime matrix and detector, or the MA cross."""

    name: Literal["strategy_manager", "moving_average_cross"] = Field(
        "strategy_manager",
        description="strategy_manager (the strategies weighted by regime) or moving_average_cross (the example).",
    )
    fast_period: int = Field(20, ge=1, description="moving_average_cross: bars in the fast moving average.")
    slow_period: int = Field(60, ge=1, description="moving_average_cross: bars in the slow moving average.")
    strategies: tuple[StrategyName, ...] = Field(
        ("trend_following", "mean_reversion", "range_trading", "funding_arbitrage"),
        min_length=1,
        description="Strategies the manager runs.",
    )
    parameters: StrategyParameters = Field(default_factory=StrategyParameters, description="Strategy parameters.")
    regime_weights: RegimeWeights = Field(default_factory=RegimeWeights, description="Regime -> strategy weights.")
    regime: RegimeDetectorConfig = Field(default_factory=RegimeDetectorConfig, description="Regime detector.")
    min_signal: float = Field(0.05, ge=0.0, le=1.0, description="Smallest combined |score| that is a BUY or SELL.")
    publish_step: float = Field(0.1, ge=0.0, description="Score change that makes a signal with the same action news.")
    volatility_scaling: bool = Field(True, description="Scale confidence down when GARCH volatility is above normal.")
    max_consecutive_errors: int = Field(10, ge=1, description="Errors in a row that switch a strategy off.")
    history_bars: int = Field(20000, ge=100, description="Bars kept per symbol for the strategies.")
    warmup_bars: int = Field(
        1440,
        ge=0,
        description="Recorded bars before data.start the strategies, the risk estimates and the optimizer see "
        "(untraded) to start warm.",
    )
    gates: dict[StrategyName, StrategyGateConfig] = Field(
        default_factory=dict,
        description="Backtest gates by strategy (paper and live): a strategy failing its gate is kept out of the vote.",
    )
    gate_recheck_minutes: float = Field(1440.0, gt=0.0, description="Minutes between re-evaluations of the gates.")

    @field_validator("strategies", mode="before")
    @classmethod
    def _split_strategies(cls, value: object) -> object:
        """Accept ``"trend_following,mean_reversion"`` as well as a list."""
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(","))
        return value

    @field_validator("strategies")
    @classmethod
    def _unique_strategies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise PydanticCustomError(
                "duplicate_strategies", "duplicate strategies: {duplicates}", {"duplicates": ", ".join(duplicates)}
            )
        return value

    @model_validator(mode="after")
    def _fast_below_slow(self) -> Self:
        if self.fast_period >= self.slow_period:
            raise PydanticCustomError(
                "fast_not_below_slow",
                "fast_period ({fast}) must be less than slow_period ({slow})",
                {
                    "config_key": "fast_period",
                    "fast": self.fast_period,
                    "slow": self.slow_period,
                },
            )
        return self


MARKOWITZ_ONLY_KEYS = frozenset(
    {
        "objective",
        "covariance",
        "covariance_halflife_bars",
        "risk_aversion",
        "target_return",
        "target_volatility",
        "max_weight",
        "long_short",
        "net_exposure_limit",
        "turnover_limit",
        "transaction_cost",
        "holding_period_bars",
        "decision_interval_bars",
        "signal_persistence_bars",
        "weight_step",
        "lookback_bars",
        "min_history_bars",
        "reduce_factor",
        "strategy_halflife_bars",
        "strategy_floor",
        "strategy_cap",
    }
)
"""The portfolio keys only the markowitz allocator reads; any other allocator would silently ignore them."""


class PortfolioConfig(_Section):
    """Turning signals into target positions.

    The keys of :data:`MARKOWITZ_ONLY_KEYS` apply to ``allocator: markowitz``
    only: :func:`load_config` refuses one set with another allocator.
    """

    gross_exposure: float = Field(1.0, gt=0, le=10, description="Sum of absolute target notionals over equity.")
    rebalance_threshold: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Fraction of target notional below which no order is sent.",
    )
    rebalance_interval_minutes: int = Field(
        0,
        ge=0,
        description="Minutes between scheduled rebalances (aligned to UTC midnight); 0 disables them.",
    )
    allocator: Literal["markowitz", "equal_weight"] = Field(
        "markowitz", description="markowitz (the optimizer) or equal_weight (the skeleton's allocator)."
    )
    objective: Literal["max_sharpe", "min_volatility", "mean_variance", "efficient_return", "efficient_risk"] = Field(
        "mean_variance", description="Optimizer objective."
    )
    covariance: Literal["sample", "ledoit_wolf", "ewma"] = Field("ledoit_wolf", description="Covariance estimator.")
    covariance_halflife_bars: float = Field(240.0, gt=0, description="Half-life of the EWMA covariance, bars.")
    risk_aversion: float = Field(250.0, gt=0, description="mean_variance risk aversion (per-bar units).")
    target_return: float | None = Field(None, description="efficient_return target, per-bar return.")
    target_volatility: float | None = Field(None, gt=0, description="efficient_risk target, per-bar volatility.")
    max_weight: float = Field(0.3, gt=0, le=10, description="Largest absolute weight of one symbol.")
    long_short: bool = Field(True, description="Allow short weights.")
    net_exposure_limit: float = Field(1.0, ge=0, le=10, description="Largest absolute sum of weights.")
    turnover_limit: float | None = Field(None, gt=0, description="Largest sum of weight changes per rebalance.")
    transaction_cost: float = Field(
        0.0006, ge=0, lt=0.1, description="> 0 switches on the optimizer's cost penalty (the cost model's costs)."
    )
    holding_period_bars: int = Field(
        30, ge=1, description="Bars a position is expected to be held; the cost is spread over them."
    )
    no_trade_band: bool = Field(
        True,
        description="Add exposure only when the view's expected return over edge_horizon_bars covers the "
        "cost model's round trip.",
    )
    edge_horizon_bars: int = Field(
        60, ge=1, description="Bars the no-trade band expects a view's edge to last (its benefit horizon)."
    )
    shared_costs: bool = Field(
        True,
        description="funding_arbitrage's fees and the equal-weight allocator's views are priced by the shared "
        "cost model (else funding_arbitrage's fee_rate, and every BUY or SELL taken).",
    )
    hold_band: bool = Field(
        False,
        description="Keep a position the targets would close until the view turns against it enough that "
        "closing pays its one-way cost over edge_horizon_bars (the exit side of the no-trade band).",
    )
    decision_interval_bars: int = Field(
        1,
        ge=1,
        description="markowitz: act on a change of a symbol's view direction only every this many bars "
        "(1: on the signal itself).",
    )
    signal_persistence_bars: int = Field(
        1,
        ge=1,
        description="markowitz: bars a changed view direction must hold before the weights move (1: at once).",
    )
    weight_step: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="markowitz: target weights are cut toward zero to a multiple of this (0: none).",
    )
    min_order_weight: float = Field(
        0.01, ge=0, lt=1, description="Smallest order worth sending but a close, a fraction of equity."
    )
    impact_coefficient: float = Field(
        1.0, ge=0, description="Square-root-law impact coefficient of the cost model (sigma x sqrt(participation))."
    )
    lookback_bars: int = Field(1440, ge=10, description="Bars of history the optimizer estimates from.")
    min_history_bars: int = Field(60, ge=10, description="Bars a symbol needs before it gets a weight.")
    signal_weight: float = Field(0.8, ge=0, le=1, description="Weight of the strategies' views in expected returns.")
    information_coefficient: float = Field(0.05, gt=0, le=1, description="Scale of a view: IC x volatility x score.")
    reduce_factor: float = Field(0.5, ge=0, lt=1, description="Targets are multiplied by this when risk reduces.")
    strategy_halflife_bars: float = Field(1440.0, gt=0, description="Half-life of strategy performance, bars.")
    strategy_floor: float = Field(0.05, ge=0, le=1, description="Smallest share of a strategy in the views.")
    strategy_cap: float = Field(0.6, gt=0, le=1, description="Largest share of a strategy in the views.")
    attribution_period_hours: int = Field(24, ge=1, description="Length of an attribution period, hours.")

    @model_validator(mode="after")
    def _history_within_lookback(self) -> Self:
        if self.min_history_bars > self.lookback_bars + 1:
            raise PydanticCustomError(
                "history_beyond_lookback",
                "min_history_bars ({history}) must be at most lookback_bars + 1 ({most}): the optimizer keeps "
                "lookback_bars bars, so no symbol would ever get a weight; lower it or raise lookback_bars",
                {"config_key": "min_history_bars", "history": self.min_history_bars, "most": self.lookback_bars + 1},
            )
        return self

    @model_validator(mode="after")
    def _targeted_objective_has_its_target(self) -> Self:
        needed = {"efficient_return": "target_return", "efficient_risk": "target_volatility"}.get(self.objective)
        if needed is not None and getattr(self, needed) is None:
            raise PydanticCustomError(
                "objective_without_target",
                "objective {objective} needs {key}: without it every solve fails and no symbol ever gets a weight; "
                "set {key} (per bar) or choose another objective",
                {"config_key": needed, "objective": self.objective, "key": needed},
            )
        return self

    @model_validator(mode="after")
    def _floor_below_cap(self) -> Self:
        if self.strategy_floor > self.strategy_cap:
            raise PydanticCustomError(
                "floor_above_cap",
                "strategy_floor ({floor}) must not be above strategy_cap ({cap})",
                {"config_key": "strategy_floor", "floor": self.strategy_floor, "cap": self.strategy_cap},
            )
        return self


class RiskConfig(_Section):
    """Pre-trade risk limits."""

    max_order_notional: Decimal = Field(Decimal(50000), gt=0, description="Largest notional of one order (USDT).")
    max_leverage: float = Field(
        3.0, gt=0, le=LARGEST_LEVERAGE, description="Largest gross notional over equity (Binance's largest is 125)."
    )
    max_position_notional: Decimal = Field(
        Decimal(100000), gt=0, description="Largest notional of one position (USDT)."
    )
    max_net_leverage: float = Field(
        3.0, gt=0, le=LARGEST_LEVERAGE, description="Largest absolute net notional over equity."
    )
    var_daily_pct: float = Field(0.05, gt=0, le=1, description="Largest daily VaR as a fraction of equity.")
    var_confidence: float = Field(0.99, gt=0.5, lt=1, description="VaR confidence level.")
    var_method: Literal["historical", "parametric", "ewma"] = Field(
        "parametric", description="VaR method of the portfolio monitor (pre-trade checks are parametric)."
    )
    var_window_bars: int = Field(1440, ge=10, description="Bars of returns for VaR, volatility and Kelly.")
    max_drawdown_pct: float = Field(0.25, gt=0, le=1, description="Drawdown that moves trading to REDUCING.")
    halt_drawdown_pct: float = Field(0.35, gt=0, le=1, description="Drawdown that moves trading to HALTED.")
    max_orders_per_minute: int = Field(120, ge=1, description="Most approved orders in a rolling minute.")
    kelly_fraction: float = Field(0.25, gt=0, le=1, description="Share of full Kelly.")
    atr_risk_pct: float = Field(0.05, gt=0, le=1, description="Equity lost at most on atr_multiple daily ATRs.")
    atr_multiple: float = Field(3.0, gt=0, description="Daily ATRs of adverse move the ATR size survives.")
    var_budget_pct: float = Field(0.05, gt=0, le=1, description="Largest daily VaR of one position over equity.")
    liquidation_sigmas: float = Field(4.0, gt=0, description="Daily standard deviations kept from liquidation.")

    @model_validator(mode="after")
    def _halt_after_reduce(self) -> Self:
        if self.halt_drawdown_pct < self.max_drawdown_pct:
            raise PydanticCustomError(
                "halt_before_reduce",
                "halt_drawdown_pct ({halt}) must not be below max_drawdown_pct ({reduce})",
                {"config_key": "halt_drawdown_pct", "halt": self.halt_drawdown_pct, "reduce": self.max_drawdown_pct},
            )
        return self


class ExchangeConfig(_Section):
    """The simulated exchange and account settings."""

    initial_balance: Decimal = Field(Decimal(10000), gt=0, description="Starting wallet balance (USDT).")
    leverage: int = Field(5, ge=1, le=LARGEST_LEVERAGE, description="Leverage set on each symbol.")
    maker_fee: Decimal | None = Field(
        None,
        ge=Decimal("-0.01"),
        le=Decimal("0.01"),
        description="Maker fee rate of every symbol as a fraction (negative for a rebate); None = each instrument's.",
    )
    taker_fee: Decimal | None = Field(
        None,
        ge=0,
        le=Decimal("0.01"),
        description="Taker fee rate of every symbol as a fraction; None = each instrument's.",
    )
    slippage_bps: float = Field(1.0, ge=0, description="Simulated slippage of market orders, basis points.")
    instruments: Path = Field(
        Path("config/instruments.yaml"),
        description="Instrument specifications file; a relative one is read against the file that names it.",
    )
    margin_type: Literal["CROSSED", "ISOLATED"] = Field("CROSSED", description="Margin type set on each symbol.")
    position_mode: Literal["ONE_WAY", "HEDGE"] = Field(
        "ONE_WAY",
        description="Position mode of the account; keel trades one net position per symbol, so ONE_WAY (HEDGE is "
        "refused at start).",
    )
    participation_rate: Decimal | None = Field(
        Decimal("0.1"),
        gt=0,
        le=1,
        description="Largest share of a bar's volume the account may trade in it; None = no cap.",
    )
    touch_fill_probability: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Chance a bar that only touches a resting limit fills it (trading through always fills).",
    )
    latency_ms: float = Field(0.0, ge=0, description="Time a request takes to reach the simulated venue, ms.")
    latency_jitter_ms: float = Field(
        0.0, ge=0, description="Extra random latency, uniform in [0, this] ms, drawn from run.seed."
    )
    leverage_brackets: Path = Field(
        Path("config/leverage_brackets.yaml"),
        description="Leverage brackets and liquidation fees file; a relative one is read against the file naming it.",
    )
    funding_interval_hours: dict[Symbol, Annotated[int, Field(ge=1, le=24)]] = Field(
        default_factory=lambda: {"ENAUSDT": 4},
        description="Funding interval of the symbols that do not settle every 8 hours.",
    )

    @model_validator(mode="after")
    def _one_way_positions(self) -> Self:
        if self.position_mode == "HEDGE":
            raise PydanticCustomError(
                "hedge_mode",
                "keel holds one net position per symbol and sends its orders without a position side, which an "
                "account in HEDGE mode rejects (Binance -4061): use ONE_WAY",
                {"config_key": "position_mode"},
            )
        return self


ExecutionStyleName = Literal["AGGRESSIVE", "PASSIVE", "TWAP", "VWAP", "ADAPTIVE"]


class ExecutionConfig(_Section):
    """How the smart order router works approved orders (the seed of TWAP randomization is run.seed)."""

    default_style: ExecutionStyleName = Field(
        "AGGRESSIVE",
        description="Style of approvals whose strategy has none in styles. Bars have no book: only AGGRESSIVE "
        "children fill promptly on bar data.",
    )
    styles: dict[str, ExecutionStyleName] = Field(
        default_factory=dict,
        description="Execution style by the strategy name orders carry: the manager's (its combined view), a strategy "
        "placing its own orders (scheduled_dca), portfolio or manual; another name stops the run at start.",
    )
    twap_horizon_seconds: float = Field(300.0, gt=0, description="Horizon of TWAP and VWAP parents, seconds.")
    twap_slices: int = Field(10, ge=1, description="Slices of a TWAP parent.")
    size_jitter: float = Field(0.2, ge=0, lt=1, description="TWAP slice sizes scaled by a draw in [1 - j, 1 + j].")
    time_jitter: float = Field(0.2, ge=0, lt=0.5, description="TWAP slice times moved by up to j of the interval.")
    passive_time_limit_seconds: float = Field(
        30.0, gt=0, description="Seconds a PASSIVE parent posts before it takes the rest."
    )
    protection_bps: float = Field(
        10.0, gt=0, description="Band beyond the arrival touch no AGGRESSIVE child fills, basis points."
    )
    max_orders_per_10s: int = Field(300, ge=1, description="Most child orders the router sends in 10 seconds.")
    urgency: float = Field(0.5, ge=0, le=1, description="Default urgency of ADAPTIVE parents, 0 (patient) to 1.")
    pause_seconds: float = Field(10.0, gt=0, description="How long a slippage limit pauses a parent, seconds.")
    slow_down_factor: float = Field(2.0, ge=1, description="How much a slippage limit stretches a schedule.")
    passive_adverse_bps: float = Field(
        10.0, gt=0, description="Move of the touch against a PASSIVE parent that makes it take, basis points."
    )


class PaperConfig(_Section):
    """Paper trading on replayed data."""

    feed: Literal["replay", "binance"] = Field(
        "replay",
        description="Market data: replay = the bundled recording paced by speed; binance = the live public "
        "market streams at binance.ws_url (depth snapshots from binance.rest_url; no keys).",
    )
    speed: float = Field(60.0, gt=0, description="Replay speed; 60 replays one 1m bar per second.")
    duration_seconds: float | None = Field(
        None,
        gt=0,
        description="Stop after this many wall-clock seconds; None = run to the end.",
    )
    status_interval_seconds: float = Field(5.0, gt=0, description="Seconds between status lines.")
    resume: bool = Field(
        True,
        description=(
            "Recover an unfinished session (stopped or crashed) at start; false opens a new account with the "
            "configured risk limits (the ones operators set at run time are forgotten)."
        ),
    )
    cancel_orders_on_stop: bool = Field(
        False,
        description=(
            "Cancel the working orders when a session stops before its data ends; false leaves them (and their "
            "execution algorithms) working at the paper venue, which pauses with keel, for the restart to go on with."
        ),
    )
    venue_state_file: str = Field(
        "paper-venue.db",
        min_length=1,
        description="The paper venue's own state file under run.output_dir (it outlives keel's process, as a venue).",
    )


class LiveConfig(_Section):
    """Live trading safeguards."""

    confirm: bool = Field(False, description="Must be true to trade live.")
    testnet: bool = Field(True, description="Trade on the Binance testnet, not mainnet.")


class LoggingConfig(_Section):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level written.")
    format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto = console on a terminal, JSON lines otherwise."
    )


class WebConfig(_Section):
    """The operator web app served by ``keel run``."""

    enabled: bool = Field(True, description="Serve the control API, dashboard and /metrics.")
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on (loopback by default).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    dashboard_interval_seconds: float = Field(
        0.5, gt=0, le=1, allow_inf_nan=False, description="Seconds between dashboard updates (at most 1)."
    )
    control_requests_per_minute: int = Field(30, ge=1, description="Rate limit of control routes per client.")
    read_requests_per_second: int = Field(20, ge=1, description="Rate limit of read routes per client.")
    max_websockets_per_client: int = Field(10, ge=1, description="Dashboard WebSockets one client may hold open.")
    max_body_bytes: int = Field(16_384, ge=256, description="Largest body a control route accepts (413 above).")
    max_snapshot_age_seconds: float = Field(
        10.0,
        gt=0,
        allow_inf_nan=False,
        description="Oldest the trading loop's latest snapshot may be: older, /health/ready answers 503 and the "
        "dashboard shows its data as stale.",
    )
    status_cache_url: str | None = Field(
        None, description="Redis URL the latest status is published to for API readers elsewhere; None: not published."
    )


class MonitorConfig(_Section):
    """The system monitor of paper and live runs."""

    stale_data_state: Literal["REDUCING", "HALTED", "none"] = Field(
        "REDUCING", description="Trading state a stale market-data feed moves to (none: only report it)."
    )
    stale_after_bars: int = Field(3, ge=1, description="Bar intervals without a bar after which a feed is stale.")
    reconciliation_mismatch_state: Literal["REDUCING", "HALTED", "none"] = Field(
        "HALTED",
        description="Trading state a reconciliation mismatch with the venue moves to (none: only report it).",
    )
    database_outage_state: Literal["REDUCING", "HALTED", "none"] = Field(
        "REDUCING",
        description="Trading state while the database cannot be reached (none: only report it); restored after.",
    )
    rejections_before_alert: int = Field(
        3, ge=1, description="Venue rejections within rejection_window_minutes that raise the health alert."
    )
    rejection_window_minutes: float = Field(60.0, gt=0, description="Window the venue rejections are counted in.")
    rejection_state: Literal["REDUCING", "HALTED", "none"] = Field(
        "REDUCING",
        description="Trading state repeated venue rejections move to, until an operator resumes (none: only report).",
    )
    loop_lag_degraded_seconds: float = Field(
        0.25, gt=0, allow_inf_nan=False, description="Event-loop lag (s) above which health is DEGRADED."
    )
    venue_ban_state: Literal["REDUCING", "HALTED", "none"] = Field(
        "HALTED",
        description="Trading state while the venue bans this IP (HTTP 418; none: only report it); restored after.",
    )


class PersistenceConfig(_Section):
    """Where state, the journal and the audit log are stored."""

    url: str | None = Field(
        None,
        description="SQLAlchemy URL (sqlite:///file.db or postgresql+psycopg://...); none = <run.output_dir>/keel.db.",
    )
    journal_flush_every: int = Field(
        100, ge=1, description="Journaled events buffered per write (orders and control events are written at once)."
    )
    journal_flush_seconds: float = Field(
        1.0, gt=0, le=60, allow_inf_nan=False, description="Longest wait (wall clock) of a journaled event."
    )
    snapshot_every: int = Field(1000, ge=1, description="Journaled events between two state snapshots.")
    snapshot_interval_seconds: float = Field(
        900.0, gt=0, allow_inf_nan=False, description="Trading time between two state snapshots (also taken on time)."
    )
    database_stall_seconds: float = Field(
        5.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds one database call may go unanswered before the database counts as out (a hang); "
        "a refused connection counts at once.",
    )
    journal_buffer: int = Field(
        10_000, ge=1, description="Journaled events held in memory at most; past it they go to the spill file."
    )
    spill_file: str = Field(
        "journal-spill.jsonl",
        min_length=1,
        description="File under run.output_dir where the journal goes while the database cannot be reached.",
    )
    backup_interval_hours: float | None = Field(
        None, gt=0, description="Hours between backups taken during a run (keel backup create); none = no schedule."
    )
    backup_keep: int | None = Field(10, ge=1, description="Newest backups kept by each scheduled backup; none = all.")
    backup_max_age_days: float | None = Field(
        None, gt=0, description="Scheduled backups delete backups older than this (the newest stays); none = no limit."
    )
    backup_dir: Path | None = Field(None, description="Backup folder; none = <run.output_dir>/backups.")


class BinanceConfig(_Section):
    """Where keel reaches Binance USD-M: mainnet, the testnet, a proxy, or a local Binance."""

    testnet: bool = Field(False, description="Use the futures testnet; rest_url and ws_url left unset follow it.")
    rest_url: str | None = Field(
        None, description="REST base URL; None = https://fapi.binance.com (testnet: https://testnet.binancefuture.com)."
    )
    ws_url: str | None = Field(
        None,
        description="WebSocket base URL; None = wss://fstream.binance.com (testnet: wss://stream.binancefuture.com).",
    )
    recv_window_ms: int = Field(5000, gt=0, le=60000, description="recvWindow sent with every SIGNED request (ms).")
    time_sync_interval_seconds: float = Field(
        180.0, gt=0, le=290, description="Seconds between measurements of the offset to Binance's clock (live)."
    )
    poll_interval_seconds: float = Field(
        10.0, gt=0, description="Seconds between REST polls of orders and positions while the user-data stream is down."
    )
    poll_failures_before_pause: int = Field(
        3, ge=1, description="Failed polls in a row that open the circuit breaker (polling pauses)."
    )
    poll_pause_seconds: float = Field(30.0, gt=0, description="How long an open circuit breaker pauses polling.")

    @field_validator("rest_url", "ws_url")
    @classmethod
    def _url_with_scheme_and_host(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Refuse a URL keel could not connect to: a REST URL is http(s)://host, a stream URL ws(s)://host."""
        schemes = ("http", "https") if info.field_name == "rest_url" else ("ws", "wss")
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in schemes or not parts.hostname:
                raise PydanticCustomError(
                    "binance_url",
                    "needs {first}:// or {second}:// and a host (for example {first}://127.0.0.1:8080)",
                    {"first": schemes[0], "second": schemes[1]},
                )
        return value

    def endpoints(self) -> tuple[str, str]:
        """Return the REST and WebSocket base URLs in effect."""
        if self.testnet:
            rest, ws = "https://testnet.binancefuture.com", "wss://stream.binancefuture.com"
        else:
            rest, ws = "https://fapi.binance.com", "wss://fstream.binance.com"
        return self.rest_url or rest, self.ws_url or ws


_BINANCE_NETWORKS = {
    "fapi.binance.com": "mainnet",
    "fstream.binance.com": "mainnet",
    "testnet.binancefuture.com": "testnet",
    "stream.binancefuture.com": "testnet",
    "fstream.binancefuture.com": "testnet",
}


def binance_network(url: str) -> str | None:
    """Return ``mainnet`` or ``testnet`` for a Binance USD-M endpoint, None for another host (a proxy, a local one).

    Parameters
    ----------
    url
        A REST or WebSocket base URL.
    """
    return _BINANCE_NETWORKS.get(urlsplit(url).hostname or "")


class Secrets(_Section):
    """Credentials; set only from the environment or the secret file."""

    binance_api_key: Secret | None = Field(None, description="Binance API key.")
    binance_api_secret: Secret | None = Field(None, description="Binance API secret.")
    api_token: Secret | None = Field(None, description="Bearer token of the control API's state-changing routes.")
    telegram_token: Secret | None = Field(None, description="Telegram bot token.")


class PerformanceConfig(_Section):
    """The PerformanceEnhancer of paper and live runs: process metrics on /metrics and bounded knob tuning."""

    enabled: bool = Field(True, description="Measure CPU, memory, event-loop lag, GC and the bus (false: off).")
    auto_tune: bool = Field(True, description="Move the knobs (bus capacity, snapshot interval, GC threshold).")
    interval_seconds: float = Field(30.0, gt=0, allow_inf_nan=False, description="Seconds between two tunings.")
    max_bus_capacity: int = Field(100_000, ge=1, description="Largest bus capacity the tuning may set.")
    max_snapshot_every: int = Field(20_000, ge=1, description="Most journaled events between snapshots it may set.")
    max_gc_threshold: int = Field(50_000, ge=1, description="Largest generation-0 GC threshold it may set.")
    lag_threshold_ms: float = Field(
        50.0, gt=0, allow_inf_nan=False, description="Loop lag (ms) that stretches snapshots."
    )
    gc_share_threshold: float = Field(
        0.05, ge=0, le=1, description="Share of the time in GC above which the GC threshold is raised."
    )


class TuningConfig(_Section):
    """Hyperparameter tuning (keel tune): storage, walk-forward windows, pruning, cache."""

    storage: str = Field(
        "sqlite:///runs/optuna.db", min_length=1, description="Optuna storage URL (SQLite or PostgreSQL)."
    )
    train_days: float = Field(3.0, gt=0, description="Length of each walk-forward train window, days.")
    test_days: float = Field(1.0, gt=0, description="Length of each walk-forward test window, days.")
    embargo_hours: float = Field(
        1.0, ge=0, description="Gap left out after each train window and before the held-out window."
    )
    holdout_days: float = Field(2.0, gt=0, description="Final window tuning never sees; the winner is re-run on it.")
    anchored: bool = Field(False, description="Train windows all start at the range start (else they roll).")
    pruner: Literal["median", "hyperband", "none"] = Field("median", description="Pruner of unpromising trials.")
    max_drawdown: float = Field(0.2, gt=0, le=1, description="Drawdown cap of the return objective.")
    cache_url: str | None = Field(None, description="Redis URL of the backtest cache; None keeps it in process.")


class TelegramConfig(_Section):
    """Telegram notifications and commands (paper and live runs); the token comes from KEEL_TELEGRAM_TOKEN."""

    enabled: bool = Field(False, description="Send notifications to and obey commands from the chats below.")
    chat_ids: tuple[int, ...] = Field((), description="Chats notified and obeyed; every other chat is refused.")
    base_url: str = Field("https://api.telegram.org/bot", min_length=1, description="Bot API URL up to the token.")
    min_interval_seconds: float = Field(3.0, gt=0, description="Seconds between two messages (the batching window).")
    timeout_seconds: float = Field(10.0, gt=0, description="Seconds a Bot API call may take.")
    max_attempts: int = Field(
        5, ge=1, description="Tries of one Bot API call Telegram answers 429 (Too Many Requests)."
    )
    max_wait_seconds: float = Field(
        30.0, gt=0, description="Seconds one Bot API call may wait out 429s in all; then it is tried at the next send."
    )
    unreachable_retry_seconds: float = Field(
        300.0,
        gt=0,
        description="Seconds between two tries of a chat that refuses the bot (403 blocked, 400 chat not found).",
    )
    outbox_capacity: int = Field(1000, ge=1, description="Notifications queued at most; more are dropped and counted.")
    daily_pnl_hour_utc: int = Field(0, ge=0, le=23, description="Hour (UTC) of the daily P&L summary.")


class KeelConfig(_Section):
    """The whole configuration of one keel process."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run settings.")
    data: DataConfig = Field(default_factory=DataConfig, description="Market data.")
    bus: BusConfig = Field(default_factory=BusConfig, description="Event bus.")
    strategy: StrategyConfig = Field(default_factory=StrategyConfig, description="Strategy.")
    portfolio: PortfolioConfig = Field(default_factory=PortfolioConfig, description="Portfolio construction.")
    risk: RiskConfig = Field(default_factory=RiskConfig, description="Risk limits.")
    exchange: ExchangeConfig = Field(default_factory=ExchangeConfig, description="Exchange and account.")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig, description="Order execution.")
    paper: PaperConfig = Field(default_factory=PaperConfig, description="Paper trading.")
    live: LiveConfig = Field(default_factory=LiveConfig, description="Live trading.")
    performance: PerformanceConfig = Field(
        default_factory=PerformanceConfig, description="Process metrics and bounded performance tuning."
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    web: WebConfig = Field(default_factory=WebConfig, description="Operator web app.")
    telegram: TelegramConfig = Field(default_factory=TelegramConfig, description="Telegram notifications and commands.")
    persistence: PersistenceConfig = Field(default_factory=PersistenceConfig, description="Storage.")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, description="System monitor.")
    tuning: TuningConfig = Field(default_factory=TuningConfig, description="Hyperparameter tuning.")
    binance: BinanceConfig = Field(default_factory=BinanceConfig, description="Binance endpoints.")
    secrets: Secrets = Field(default_factory=Secrets, description="Credentials.")

    @model_validator(mode="after")
    def _live_needs_confirmation_and_keys(self) -> Self:
        if self.run.mode != "live":
            return self
        if not self.live.confirm:
            raise PydanticCustomError(
                "live_not_confirmed",
                "live mode trades real money and needs --i-understand-this-trades-real-money "
                "(or live.confirm: true in your configuration file, or KEEL_LIVE__CONFIRM=true)",
                {"config_key": "live.confirm"},
            )
        for field, variable in (
            ("binance_api_key", "KEEL_BINANCE_API_KEY"),
            ("binance_api_secret", "KEEL_BINANCE_API_SECRET"),
        ):
            if getattr(self.secrets, field) is None:
                raise PydanticCustomError(
                    "live_without_keys",
                    "live mode needs {variable} in the environment or in the file named by KEEL_SECRET_FILE",
                    {"config_key": f"secrets.{field}", "variable": variable},
                )
        binance = self.binance
        if (binance.rest_url is None) != (binance.ws_url is None):
            given, missing = ("rest_url", "ws_url") if binance.ws_url is None else ("ws_url", "rest_url")
            raise PydanticCustomError(
                "live_half_endpoints",
                "live mode with binance.{given} set needs binance.{missing} set too: left unset it would be the "
                "{network}'s, so orders and market data could come from different Binances",
                {
                    "config_key": f"binance.{missing}",
                    "given": given,
                    "missing": missing,
                    "network": "testnet" if self.live.testnet or binance.testnet else "mainnet",
                },
            )
        return self._live_endpoints_on_one_network()

    def _live_endpoints_on_one_network(self) -> Self:
        """Refuse Binance endpoints of two networks, or of mainnet while the testnet is asked for (or the reverse)."""
        binance, testnet = self.binance, self.live.testnet or self.binance.testnet
        rest, ws = (binance_network(url) if url is not None else None for url in (binance.rest_url, binance.ws_url))
        if rest is not None and ws is not None and rest != ws:
            raise PydanticCustomError(
                "live_mixed_networks",
                "binance.rest_url is Binance's {rest} and binance.ws_url its {ws}: orders would go to one and be "
                "priced from the other's market; point both at the same network",
                {"config_key": "binance.ws_url", "rest": rest, "ws": ws},
            )
        wanted = "testnet" if testnet else "mainnet"
        if (network := rest or ws) is not None and network != wanted:
            raise PydanticCustomError(
                "live_network_not_asked_for",
                "live.testnet is {testnet} (or --testnet) but binance.rest_url and ws_url are Binance's {network}: "
                "set live.testnet to match the network you mean to trade on, or change the URLs",
                {"config_key": "live.testnet", "testnet": str(testnet).lower(), "network": network},
            )
        return self


def config_to_dict(config: KeelConfig) -> dict[str, Any]:
    """Return the configuration as plain JSON-compatible data, secrets redacted.

    Parameters
    ----------
    config
        The configuration to dump.

    Returns
    -------
    dict
        Nested sections of strings, numbers, booleans and lists; a set secret
        is ``"**********"``, an unset one ``None``.
    """
    return config.model_dump(mode="json")


# Dotted key path (as a tuple) -> the source that set it; for a section, the
# last source that touched it.
_Provenance = dict[tuple[str, ...], str]


def load_config(
    mode: str | None = None,
    config_file: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str = "overrides",
) -> KeelConfig:
    """Load, merge and validate the configuration.

    Parameters
    ----------
    mode
        ``"backtest"``, ``"paper"`` or ``"live"``: also read
        ``config/{mode}.yaml`` and set ``run.mode``.
    config_file
        A user configuration file merged over the ``config/`` files.
    environ
        The environment to read overrides and secrets from; defaults to
        ``os.environ``.
    config_dir
        Folder holding ``default.yaml`` and the mode files; defaults to
        ``./config`` when it exists, else the ``config`` folder of the
        source tree. A folder given that does not exist is an error.
    overrides
        Sections of keys laid over everything else (``{"risk": {"max_leverage": 2}}``),
        named ``overrides_source`` in errors.

    Returns
    -------
    KeelConfig
        The validated, frozen configuration.

    Raises
    ------
    ConfigurationError
        For the first problem found, naming the file or environment variable
        that set the bad value and its dotted key.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    provenance: _Provenance = {("secrets",): "environment"}
    directory = _config_folder(config_dir)
    layers = _layers(mode, config_file, environ, directory)
    if overrides:
        layers.append((dict(overrides), overrides_source))
    for layer, source in layers:
        _merge(merged, layer, source, provenance)
    try:
        config = KeelConfig.model_validate(merged)
    except ValidationError as error:
        raise _to_configuration_error(error, provenance) from None
    if mode is not None and config.run.mode != mode:
        raise ConfigurationError(
            provenance[("run", "mode")],
            "run.mode",
            f"{config.run.mode!r} conflicts with the requested mode {mode!r}",
        )
    _refuse_ignored_markowitz_keys(config.portfolio, provenance, _default_files(directory, mode))
    return _resolve_paths(config, provenance, directory)


def _default_files(directory: Path, mode: str | None) -> set[str]:
    """Return the sources of the configuration folder's files, which hold the defaults: default.yaml, the mode's."""
    files = {str(directory / "default.yaml")}
    if mode is not None:
        files.add(str(directory / f"{mode}.yaml"))
    return files


def _refuse_ignored_markowitz_keys(portfolio: PortfolioConfig, provenance: _Provenance, documenting: set[str]) -> None:
    """Refuse a Markowitz-only key set explicitly while another allocator runs: it would be silently ignored.

    Only keys the user gave count (``model_fields_set``, from a source other
    than ``documenting``: the configuration folder's default and mode files,
    which hold every key's default for whichever allocator is chosen).
    """
    if portfolio.allocator == "markowitz":
        return
    for key in sorted(MARKOWITZ_ONLY_KEYS & portfolio.model_fields_set):
        source = _source_of(("portfolio", key), provenance)
        if source in documenting:
            continue
        raise ConfigurationError(
            source,
            f"portfolio.{key}",
            f"applies to the markowitz allocator only, but portfolio.allocator is {portfolio.allocator!r} "
            f"(from {_source_of(('portfolio', 'allocator'), provenance)}), which ignores it; remove the key, "
            "or set portfolio.allocator to markowitz",
        )


def _config_folder(config_dir: str | Path | None) -> Path:
    """Return the folder of the configuration files; one given must exist (a typo would load none of them)."""
    if config_dir is None:
        return _default_config_dir()
    directory = Path(config_dir)
    if not directory.is_dir():
        raise ConfigurationError(str(directory), _FILE_KEY, "not a folder: give the folder holding default.yaml")
    return directory


_INPUT_PATHS = (("data", "root"), ("exchange", "instruments"), ("exchange", "leverage_brackets"))
"""Input files and folders: a relative one is read against the file that names it."""


def _resolve_paths(config: KeelConfig, provenance: _Provenance, directory: Path) -> KeelConfig:
    """Make relative input paths absolute: against the YAML file that set them (``config/``'s files: the project).

    A path set by an environment variable, the command line or not at all is
    read against the project for keel's defaults and the working directory
    for the rest, so ``keel backtest`` finds the bundled data from any folder.
    """
    project = directory.resolve().parent
    updates: dict[str, dict[str, Path]] = {}
    for section, key in _INPUT_PATHS:
        value = Path(getattr(getattr(config, section), key))
        if value.is_absolute():
            continue
        source = provenance.get((section, key))
        if source is None:
            base = project
        elif source.endswith((".yaml", ".yml")) and Path(source).is_file():
            folder = Path(source).resolve().parent
            base = project if folder == directory.resolve() else folder
        else:
            base = Path.cwd()
        updates.setdefault(section, {})[key] = (base / value).resolve()
    if not updates:
        return config
    return config.model_copy(update={s: getattr(config, s).model_copy(update=values) for s, values in updates.items()})


def _layers(
    mode: str | None,
    config_file: str | Path | None,
    environ: Mapping[str, str],
    directory: Path,
) -> list[tuple[dict[str, Any], str]]:
    """Return every layer, lowest priority first, with its source name."""
    layers = _optional_file_layer(directory / "default.yaml")
    if mode is not None:
        if mode not in MODES:
            raise ConfigurationError(
                "mode argument",
                "run.mode",
                f"unknown mode {mode!r}; expected one of {', '.join(MODES)}",
            )
        layers += _optional_file_layer(directory / f"{mode}.yaml")
        layers.append(({"run": {"mode": mode}}, f"requested mode {mode!r}"))
    if config_file is not None:
        layers.append((_read_yaml(Path(config_file)), str(config_file)))
    layers += _environment_layers(environ)
    layers += _secret_layers(environ)
    return layers


def _default_config_dir() -> Path:
    local = Path.cwd() / "config"
    if local.is_dir():
        return local
    return Path(__file__).resolve().parent.parent / "config"


def _optional_file_layer(path: Path) -> list[tuple[dict[str, Any], str]]:
    return [(_read_yaml(path), str(path))] if path.is_file() else []


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the later would silently replace it)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float) and key in first_lines:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"{key!r} is given twice in one mapping (first at line {first_lines[key]}); "
                    "the later would silently replace the earlier",
                    key_node.start_mark,
                )
            if isinstance(key, str | int | float):
                first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    """Read one configuration file: a mapping of sections, no secrets."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(source, _FILE_KEY, f"cannot read: {error.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigurationError(source, _FILE_KEY, _describe_yaml_error(error)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(source, _FILE_KEY, "must be a mapping of sections")
    _reject_secrets(data, source)
    return data


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    """Describe a YAML error on one line."""
    problem = getattr(error, "problem", None) or "invalid YAML"
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _reject_secrets(data: dict[str, Any], source: str) -> None:
    if "secrets" not in data:
        return
    section = data["secrets"]
    names = sorted(section) if isinstance(section, dict) and section else []
    key = f"secrets.{names[0]}" if names else "secrets"
    raise ConfigurationError(
        source,
        key,
        "secrets may not be set in a configuration file; set "
        f"{', '.join(SECRET_VARIABLES)} in the environment or in the file named "
        f"by {SECRET_FILE_VARIABLE}",
    )


def _environment_layers(environ: Mapping[str, str]) -> list[tuple[dict[str, Any], str]]:
    """Turn ``KEEL_<SECTION>__<KEY>=value`` variables into layers, sorted by name."""
    layers = []
    for name in sorted(environ):
        if not name.startswith(_ENV_PREFIX) or _ENV_SEPARATOR not in name:
            continue
        source = f"environment variable {name}"
        path = name[len(_ENV_PREFIX) :].lower().split(_ENV_SEPARATOR)
        if path[0] == "secrets":
            raise ConfigurationError(
                source,
                ".".join(path),
                f"set secrets with {', '.join(SECRET_VARIABLES)}",
            )
        layers.append((_nest(path, _parse_environment_value(environ[name], source, path)), source))
    return layers


def _parse_environment_value(text: str, source: str, path: list[str]) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigurationError(source, ".".join(path), _describe_yaml_error(error)) from None


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    """Return ``{"a": {"b": value}}`` for the path ``["a", "b"]``."""
    for key in reversed(path):
        value = {key: value}
    return value


def _secret_layers(environ: Mapping[str, str]) -> list[tuple[dict[str, Any], str]]:
    """Return the secret file's secrets, then the environment's (which win)."""
    layers = []
    file_name = environ.get(SECRET_FILE_VARIABLE)
    if file_name:
        layers += _read_secret_file(Path(file_name))
    for variable, field in SECRET_VARIABLES.items():
        value = environ.get(variable)
        # An empty variable (e.g. `KEY=${KEY:-}` in compose) counts as unset.
        if value:
            layers.append(({"secrets": {field: value}}, f"environment variable {variable}"))
    return layers


def _read_secret_file(path: Path) -> list[tuple[dict[str, Any], str]]:
    """Read ``NAME=value`` lines from a file that only its owner can read."""
    source = str(path)
    try:
        mode = path.stat().st_mode
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigurationError(
            source,
            SECRET_FILE_VARIABLE,
            f"cannot read the secret file: {error.strerror}",
        ) from None
    if os.name == "posix" and mode & 0o077:
        raise ConfigurationError(
            source,
            SECRET_FILE_VARIABLE,
            f"secret file is readable by group or others (mode {mode & 0o777:o}); run chmod 600 {source}",
        )
    return [
        ({"secrets": secret}, source)
        for number, line in enumerate(lines, start=1)
        if (secret := _parse_secret_line(line, number, source))
    ]


def _parse_secret_line(line: str, number: int, source: str) -> dict[str, str]:
    """Parse one secret-file line; blank lines and ``#`` comments give ``{}``."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return {}
    name, separator, value = stripped.partition("=")
    name = name.strip()
    # The line is never quoted in an error: it may hold a secret.
    if not separator or name not in SECRET_VARIABLES:
        raise ConfigurationError(
            source,
            f"line {number}",
            f"expected NAME=value with NAME one of {', '.join(SECRET_VARIABLES)}",
        )
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return {SECRET_VARIABLES[name]: value} if value else {}


def _merge(
    target: dict[str, Any],
    layer: Mapping[str, Any],
    source: str,
    provenance: _Provenance,
    path: tuple[str, ...] = (),
) -> None:
    """Deep-merge ``layer`` into ``target`` in place, recording each key's source."""
    provenance[path] = source
    for key, value in layer.items():
        key_path = (*path, str(key))
        if isinstance(value, dict):
            # A section new to ``target`` is merged key by key too, so each of its keys has its source.
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _merge(target[key], value, source, provenance, key_path)
        else:
            target[key] = value
            provenance[key_path] = source


def describe_validation_error(error: ValidationError) -> str:
    """Return the first problem of a configuration's validation on one line: ``dotted.key: what is wrong``."""
    detail = error.errors(include_url=False)[0]
    path = tuple(_key_path(detail["loc"]))
    named = (detail.get("ctx") or {}).get("config_key")
    if named is None:
        return f"{'.'.join(path)}: {_describe(detail, path)}"
    return f"{'.'.join(path + tuple(named.split('.')))}: {detail['msg']}"


def _to_configuration_error(error: ValidationError, provenance: _Provenance) -> ConfigurationError:
    """Describe the first validation error with the source that caused it."""
    detail = error.errors(include_url=False)[0]
    path = tuple(_key_path(detail["loc"]))
    named = (detail.get("ctx") or {}).get("config_key")
    if named is None:
        return ConfigurationError(_source_of(path, provenance), ".".join(path), _describe(detail, path))
    # A cross-field error belongs to the last source that touched its section.
    key = path + tuple(named.split("."))
    return ConfigurationError(_source_of(key[:-1], provenance), ".".join(key), detail["msg"])


def _key_path(location: tuple[int | str, ...]) -> list[str]:
    """Keep the configuration keys of a pydantic location, drop validator tags.

    Tags such as ``is-instance[Secret]`` name union members, not keys.
    """
    keys = []
    for part in location:
        if isinstance(part, str) and "[" in part:
            break
        keys.append(str(part))
    return keys


def _source_of(path: tuple[str, ...], provenance: _Provenance) -> str:
    """Return the source of ``path``, else of its nearest recorded ancestor."""
    for length in range(len(path), -1, -1):
        if path[:length] in provenance:
            return provenance[path[:length]]
    return _DEFAULTS_SOURCE


def _describe(detail: Mapping[str, Any], path: tuple[str, ...]) -> str:
    """Return a one-line problem description, never showing a secret."""
    if detail["type"] == "extra_forbidden":
        return f"unknown key; expected one of: {', '.join(_known_keys(path[:-1]))}"
    message = detail["msg"]
    value = detail.get("input")
    if path[:1] == ("secrets",) or isinstance(value, dict | list):
        return message
    return f"{message}, got {value!r}"


def _known_keys(path: tuple[str, ...]) -> list[str]:
    """Return the field names of the model at ``path``."""
    model: type[BaseModel] = KeelConfig
    for key in path:
        model = model.model_fields[key].annotation  # type: ignore[assignment]
    return list(model.model_fields)
