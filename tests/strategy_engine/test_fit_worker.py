"""The lean worker process regime refits run in: results in order, errors carried back, a clean end."""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import BrokenExecutor

import pytest

from keel.strategy_engine.fit_worker import FitWorker


def loaded_modules() -> list[str]:
    """Return the modules the calling process has imported."""
    return sorted(sys.modules)


def test_results_and_errors_come_back_from_the_child_process() -> None:
    # Arrange
    with FitWorker() as worker:
        # Act
        results = [worker.submit(math.factorial, n) for n in range(8)]
        failed = worker.submit(math.sqrt, -1.0)
        modules = worker.submit(loaded_modules)
        unsendable = worker.submit(len, sys.modules)

        # Assert
        assert [future.result(timeout=60) for future in results] == [math.factorial(n) for n in range(8)]
        with pytest.raises(ValueError, match="math domain error"):
            failed.result(timeout=60)
        loaded = modules.result(timeout=60)
        with pytest.raises(TypeError, match="pickle"):
            unsendable.result(timeout=60)
    assert "keel.strategy_engine.regime" in loaded
    assert not {"keel.integration", "keel.cli", "numba", "arch"} & set(loaded)


def test_after_shutdown_nothing_more_is_accepted() -> None:
    # Arrange
    worker = FitWorker()

    # Act
    worker.shutdown()

    # Assert
    assert worker._process.returncode == 0
    with pytest.raises(RuntimeError, match="after shutdown"):
        worker.submit(math.factorial, 3)


class _StubbornError(Exception):
    """An error whose constructor cannot be called again from its message alone (it does not pickle back)."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


def _raise_stubborn() -> None:
    raise _StubbornError("fit", "no convergence")


def test_an_error_that_cannot_be_rebuilt_comes_back_as_its_repr_and_the_worker_goes_on() -> None:
    # Arrange
    with FitWorker() as worker:
        # Act
        failed = worker.submit(_raise_stubborn)
        after = worker.submit(math.factorial, 5)

        # Assert
        with pytest.raises(RuntimeError, match=r"_StubbornError.*no convergence"):
            failed.result(timeout=60)
        assert after.result(timeout=60) == 120


def _rebuild_in(pid: int) -> object:
    if pid != os.getpid():
        raise ValueError("this object cannot be rebuilt in another process")
    return object()


class _ProcessBound:
    """A result that pickles in the child but cannot be unpickled in the parent."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return _rebuild_in, (os.getpid(),)


def _process_bound() -> _ProcessBound:
    return _ProcessBound()


def test_a_result_the_parent_cannot_unpickle_breaks_the_worker_instead_of_leaving_its_futures_waiting() -> None:
    # Arrange
    with FitWorker() as worker:
        # Act
        unreadable = worker.submit(_process_bound)

        # Assert
        with pytest.raises(BrokenExecutor, match="cannot be rebuilt"):
            unreadable.result(timeout=20)
        with pytest.raises(BrokenExecutor):
            worker.submit(math.factorial, 5)
