"""Regime refits cached across tuning trials: the same fits, the same orders, no second fit."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keel.backtest import BacktestEngine
from keel.config import KeelConfig, load_config
from keel.optimization.cache import CacheManager, RegimeFitCache, decode_regime_fit, encode_regime_fit
from keel.optimization.space import apply_values
from keel.optimization.tuner import HyperparameterTuner
from keel.strategy_engine.regime import use_regime_fit_store

FAST = "strategy.parameters.trend_following.fast_period"


def regime_config(storage: Path) -> KeelConfig:
    """Two days of two symbols, hour-scale strategy windows, a detector that refits several times."""
    return apply_values(
        load_config("backtest"),
        {
            "data.symbols": ("BTCUSDT", "ETHUSDT"),
            "data.start": "2025-05-10",
            "data.end": "2025-05-12",
            "strategy.parameters.trend_following.fast_period": 20,
            "strategy.parameters.trend_following.slow_period": 80,
            "strategy.parameters.mean_reversion.lookback": 60,
            "strategy.parameters.range_trading.range_period": 120,
            "strategy.warmup_bars": 200,
            "strategy.regime.min_fit_bars": 600,
            "strategy.regime.fit_window": 900,
            "strategy.regime.refit_interval": 400,
            "portfolio.no_trade_band": False,
            "tuning.train_days": 1.0,
            "tuning.test_days": 0.5,
            "tuning.embargo_hours": 1.0,
            "tuning.holdout_days": 0.25,
            "tuning.storage": f"sqlite:///{storage}",
        },
    )


def orders(config: KeelConfig, folder: Path) -> str:
    result = BacktestEngine(config).run()
    result.write(folder)
    return (folder / "orders.csv").read_text()


def test_a_run_on_cached_fits_places_byte_identical_orders(tmp_path: Path) -> None:
    # Arrange: an uncached run; the cache filled by a run with other strategy parameters
    config = regime_config(tmp_path / "optuna.db")
    other = apply_values(config, {FAST: 8})
    uncached = orders(config, tmp_path / "uncached")
    fits = RegimeFitCache(CacheManager())
    with use_regime_fit_store(fits):
        BacktestEngine(other).run()
    filled = fits.metrics()

    # Act
    with use_regime_fit_store(fits):
        cached = orders(config, tmp_path / "cached")

    # Assert
    assert uncached.count("\n") > 1
    assert cached == uncached
    assert filled["misses"] >= 3 and filled["hits"] == 0
    assert fits.metrics()["hits"] == filled["misses"]
    assert fits.metrics()["misses"] == filled["misses"]


def test_the_trials_of_a_study_take_their_refits_from_the_cache(tmp_path: Path) -> None:
    # Arrange
    tuner = HyperparameterTuner(regime_config(tmp_path / "optuna.db"), cache=CacheManager(), study_name="regime")

    # Act
    async def run() -> object:
        job = await tuner.start_optimization(
            strategy_name="TrendFollowing", parameter_space={"fast_period": (5, 20), "slow_period": (20, 50)}, trials=3
        )
        return await job

    result = asyncio.run(run())

    # Assert: the first trial fits its windows, the two others read those fits (only the held-out
    # re-run fits a window of its own)
    metrics = result.cache["regime_fits"]
    assert result.trials_run == 3
    assert metrics["hits"] > metrics["misses"] > 0


def test_a_refit_survives_its_encoding_exactly(tmp_path: Path) -> None:
    # Arrange
    fits = RegimeFitCache(CacheManager())
    with use_regime_fit_store(fits):
        BacktestEngine(regime_config(tmp_path / "optuna.db")).run()
    stored = list(fits._held.values())

    # Act
    decoded = [decode_regime_fit(encode_regime_fit(fit)) for fit in stored]

    # Assert
    assert stored
    for fit, back in zip(stored, decoded, strict=True):
        assert back.probabilities == fit.probabilities and back.garch == fit.garch
        assert back.garch_variance == fit.garch_variance
        assert fit.hmm is not None and back.hmm is not None
        assert all(a.tobytes() == b.tobytes() for a, b in zip(fit.hmm, back.hmm, strict=True))
