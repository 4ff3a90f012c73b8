"""keel's errors cross process boundaries whole: a worker's error reaches its parent as the same error."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from keel.core.errors import ConfigurationError, KeelError, RetryLaterError
from keel.market_data.feeds import DataNotCoveredError

MINUTE_NS = 60_000_000_000


@pytest.mark.parametrize(
    "error",
    [
        ConfigurationError("config/default.yaml", "strategy.parameters.trend_following.fast_period", "above 100"),
        RetryLaterError("rate limited", retry_after_seconds=2.5),
        DataNotCoveredError(("DOGEUSDT",), "5m", Path("data/ohlcv"), [(0, 10 * MINUTE_NS)], None, 20 * MINUTE_NS),
    ],
    ids=lambda error: type(error).__name__,
)
def test_an_error_pickles_as_the_call_that_built_it(error: KeelError) -> None:
    # Act
    copy = pickle.loads(pickle.dumps(error))

    # Assert
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__
