"""HYPERRSI on real bars: trend-filtered, momentum-confirmed RSI entries, staged exits, trailing stop, no look-ahead."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from strategy_data import MAY_5, assert_no_lookahead, index_at, market_data, signals, transitions

from keel.strategy_engine import HyperRsiStrategy
from keel.strategy_engine.indicators import RelativeStrengthIndex

PARAMETERS = {"first_take_profit_atr": 1.5}


@pytest.fixture(scope="module")
def week() -> dict:
    return market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=7 * 1440)


@pytest.fixture(scope="module")
def views(week: dict) -> list:
    return signals(HyperRsiStrategy(**PARAMETERS), week)


def wilder_rsi(close: pd.Series, period: int) -> np.ndarray:
    change = close.diff()
    gain, loss = change.clip(lower=0.0).to_numpy(), (-change).clip(lower=0.0).to_numpy()
    rsi = np.full(len(close), np.nan)
    average_gain, average_loss = gain[1 : period + 1].mean(), loss[1 : period + 1].mean()
    rsi[period] = 100.0 * average_gain / (average_gain + average_loss)
    for i in range(period + 1, len(close)):
        average_gain += (gain[i] - average_gain) / period
        average_loss += (loss[i] - average_loss) / period
        rsi[i] = 100.0 * average_gain / (average_gain + average_loss)
    return rsi


def test_rsi_matches_wilders_batch_definition(week: dict) -> None:
    # Arrange
    close = pd.Series(week["close"][:2000])
    rsi = RelativeStrengthIndex(14)

    # Act
    values = np.array([rsi.update(c) for c in close])

    # Assert
    assert np.isnan(values[:14]).all()
    assert np.allclose(values[14:], wilder_rsi(close, 14)[14:])


def test_entries_cross_the_rsi_line_back_in_the_trends_direction_with_momentum(week: dict, views: list) -> None:
    # Arrange
    p = HyperRsiStrategy(**PARAMETERS).parameters
    close = pd.Series(week["close"])
    rsi = wilder_rsi(close, p["rsi_period"])
    ema = close.ewm(span=p["trend_period"], adjust=False).mean().to_numpy()

    # Act
    entries = [(i, new) for i, old, new in transitions(views) if old == "HOLD"]

    # Assert
    assert len(entries) >= 5
    for i, action in entries:
        rising = ema[i] > ema[i - p["slope_bars"]]
        if action == "BUY":
            assert rising and rsi[i - 1] <= p["oversold"] < rsi[i] and close[i] > close[i - 1]
        else:
            assert not rising and rsi[i - 1] >= 100 - p["oversold"] > rsi[i] and close[i] < close[i - 1]


def test_positions_scale_out_once_and_the_trailing_stop_only_tightens(views: list) -> None:
    # Arrange
    held = [(i, v) for i, v in enumerate(views) if v is not None and v.action != "HOLD"]

    # Act
    pairs = [
        (a, b)
        for (i, a), (j, b) in itertools.pairwise(held)
        if j == i + 1 and a.metadata["entry"] == b.metadata["entry"]
    ]

    # Assert
    assert any(b.strength == 0.5 and a.strength == 1.0 for a, b in pairs)
    for before, after in pairs:
        assert after.strength <= before.strength
        if after.action == "BUY":
            assert after.stop_loss >= before.stop_loss
        else:
            assert after.stop_loss <= before.stop_loss


def test_take_profits_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="first_take_profit_atr < second_take_profit_atr"):
        HyperRsiStrategy(first_take_profit_atr=5.0, second_take_profit_atr=4.0)


def test_lookahead_hyper_rsi_up_to_t_ignores_later_bars() -> None:
    data = market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=3000)
    assert_no_lookahead(lambda: HyperRsiStrategy(**PARAMETERS), data, cut=2000)
