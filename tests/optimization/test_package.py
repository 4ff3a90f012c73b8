"""keel.optimization's public names: importable from the package, Optuna loaded only when they are used."""

from __future__ import annotations

import subprocess
import sys

import pytest

from keel.optimization import cache, config_optimizer, performance, tuner


def test_the_public_names_import_from_the_package() -> None:
    # Act
    from keel.optimization import CacheManager, ConfigOptimizer, HyperparameterTuner, PerformanceEnhancer

    # Assert
    assert CacheManager is cache.CacheManager and ConfigOptimizer is config_optimizer.ConfigOptimizer
    assert HyperparameterTuner is tuner.HyperparameterTuner
    assert PerformanceEnhancer is performance.PerformanceEnhancer


def test_importing_the_package_does_not_load_optuna() -> None:
    # Act: a fresh interpreter, as `keel --help` is
    code = "import sys, keel.optimization; print('optuna' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()

    # Assert
    assert loaded == "False"


def test_an_unknown_name_is_an_attribute_error() -> None:
    # Act / Assert
    import keel.optimization

    with pytest.raises(AttributeError, match="has no attribute 'Tuner'"):
        keel.optimization.Tuner  # noqa: B018
