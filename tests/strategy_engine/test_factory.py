"""StrategyFactory by name, the manager from the configuration, and the configuration kept in step with the code."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from annotated_types import Ge, Le
from pydantic import BaseModel
from strategy_data import market_data

from keel.config import (
    FundingArbitrageParameters,
    MeanReversionParameters,
    RangeTradingParameters,
    RegimeDetectorConfig,
    RegimeWeights,
    StrategyConfig,
    TrendFollowingParameters,
    load_config,
)
from keel.core.errors import ConfigurationError
from keel.strategy_engine import (
    DEFAULT_REGIME_WEIGHTS,
    BaseStrategy,
    FundingArbitrageStrategy,
    MeanReversionStrategy,
    NoLookAheadRegimeDetector,
    RangeTradingStrategy,
    StrategyFactory,
    StrategyManager,
    StrategySignal,
    TrendFollowingStrategy,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
PAIRS = [
    (TrendFollowingStrategy, TrendFollowingParameters),
    (MeanReversionStrategy, MeanReversionParameters),
    (RangeTradingStrategy, RangeTradingParameters),
    (FundingArbitrageStrategy, FundingArbitrageParameters),
]


class _Hold(BaseStrategy):
    def __init__(self, **parameters: Any) -> None:
        super().__init__("hold", parameters)

    def generate_signal(self, market_data: Any, current_index: int) -> StrategySignal:
        return StrategySignal(market_data["symbol"], "HOLD", 0.0, 0.0)


@pytest.mark.parametrize("name", ["trend_following", "TrendFollowing", "TrendFollowingStrategy"])
def test_strategies_are_created_by_snake_or_camel_case_name(name: str) -> None:
    # Act
    strategy = StrategyFactory.create_strategy(name, {"fast_period": 10})

    # Assert
    assert isinstance(strategy, TrendFollowingStrategy)
    assert strategy.parameters["fast_period"] == 10


def test_an_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'Momentum'; available: funding_arbitrage"):
        StrategyFactory.create_strategy("Momentum")


def test_a_users_strategy_can_be_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange
    monkeypatch.setattr(StrategyFactory, "registry", dict(StrategyFactory.registry))

    # Act
    StrategyFactory.register("HoldForever", _Hold)

    # Assert
    assert isinstance(StrategyFactory.create_strategy("hold_forever"), _Hold)
    with pytest.raises(TypeError, match="not a BaseStrategy subclass"):
        StrategyFactory.register("nothing", dict)  # type: ignore[arg-type]


def test_the_manager_is_built_from_the_configuration() -> None:
    # Arrange
    config = load_config(
        "backtest",
        environ={"KEEL_STRATEGY__STRATEGIES": "trend_following,funding_arbitrage"},
        config_dir=CONFIG_DIR,
    )
    settings = config.strategy.model_dump()
    settings["parameters"]["trend_following"]["channel_period"] = 90

    # Act
    manager = StrategyFactory.create_manager(settings, fee_rate=0.0004)

    # Assert
    assert [s.name for s in manager.strategies] == ["trend_following", "funding_arbitrage"]
    assert manager.strategies[0].parameters["channel_period"] == 90
    assert manager.regime_weights["trending"] == {"trend_following": 0.55, "funding_arbitrage": 0.35}
    assert manager.fee_rate == 0.0004
    manager.generate_trading_signals(market_data("BTCUSDT", count=50))
    assert manager.regime("BTCUSDT").regime.value == "unknown"


def test_a_bad_detector_setting_fails_when_the_manager_is_built() -> None:
    # Arrange
    settings = StrategyConfig().model_dump()
    settings["regime"]["trend_window"] = 1

    # Act / Assert
    with pytest.raises(ValueError, match="trend_window must be >= 2"):
        StrategyFactory.create_manager(settings)


@pytest.mark.parametrize(("strategy", "section"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_configuration_sections_are_derived_from_each_strategys_parameter_space(
    strategy: type[BaseStrategy], section: type[BaseModel]
) -> None:
    # Arrange
    space = strategy.parameter_space

    # Act
    fields = section.model_fields

    # Assert
    assert list(fields) == list(space)
    for name, spec in space.items():
        field = fields[name]
        bounds = {type(m): m for m in field.metadata}
        assert field.annotation is spec.kind, name
        assert field.default == spec.default, name
        assert bounds[Ge].ge == spec.low and bounds[Le].le == spec.high, name


def test_configuration_defaults_are_the_codes_defaults() -> None:
    # Arrange
    detector_defaults = {name: p.default for name, p in inspect.signature(NoLookAheadRegimeDetector).parameters.items()}
    manager_defaults = inspect.signature(StrategyManager).parameters
    config = StrategyConfig()

    # Act
    detector = config.regime.model_dump(exclude={"enabled"})

    # Assert
    assert RegimeWeights().model_dump() == DEFAULT_REGIME_WEIGHTS
    assert detector == detector_defaults
    assert set(RegimeDetectorConfig.model_fields) - {"enabled"} == set(detector_defaults)
    for name in ("min_signal", "publish_step", "volatility_scaling", "max_consecutive_errors", "history_bars"):
        assert getattr(config, name) == manager_defaults[name].default, name
    assert list(config.strategies) == [s.name for s in StrategyManager().strategies]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "strategy:\n  parameters:\n    trend_following:\n      fast_period: 90\n      slow_period: 80\n",
            "trend_following.fast_period",
        ),
        (
            "strategy:\n  parameters:\n    mean_reversion:\n      entry_z: 2.0\n      exit_z: 3.0\n",
            "mean_reversion.exit_z",
        ),
        ("strategy:\n  regime:\n    fit_window: 100\n", "regime.fit_window"),
        ("strategy:\n  strategies: [trend_following, trend_following]\n", "strategy.strategies"),
        ("strategy:\n  regime_weights:\n    trending:\n      momentum: 1.0\n", "trending.momentum"),
    ],
)
def test_a_bad_strategy_setting_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    # Arrange
    user = tmp_path / "user.yaml"
    user.write_text(text)

    # Act
    with pytest.raises(ConfigurationError) as caught:
        load_config(config_file=user, environ={}, config_dir=CONFIG_DIR)

    # Assert
    assert key in caught.value.key
