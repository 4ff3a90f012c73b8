"""Bars from the real trade tape: time bars equal a pandas resample; volume and dollar bars add up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel.core.messages import BarClosed, TradeTick
from keel.market_data.bars import (
    DollarBarAggregator,
    TimeBarAggregator,
    VolumeBarAggregator,
    interval_ns,
    resample_ohlcv,
    time_bars_batch,
)

BARS_DIR = Path(__file__).resolve().parents[2] / "data" / "ohlcv" / "binance_usdm_1m_2025-05"


def _feed(aggregator, trades: list[TradeTick]) -> list[BarClosed]:  # type: ignore[no-untyped-def]
    return [bar for trade in trades for bar in aggregator.on_trade(trade)]


@pytest.mark.parametrize("interval", ["1s", "1m"])
def test_time_bars_equal_the_pandas_reference(btc_trades: list[TradeTick], interval: str) -> None:
    # Arrange
    aggregator = TimeBarAggregator("BTCUSDT", interval)
    step = interval_ns(interval)
    end = btc_trades[-1].ts_event - btc_trades[-1].ts_event % step + step

    # Act
    bars = [*_feed(aggregator, btc_trades), *aggregator.close_until(end)]
    reference = time_bars_batch(
        np.array([t.ts_event for t in btc_trades]),
        np.array([t.price for t in btc_trades]),
        np.array([t.quantity for t in btc_trades]),
        interval,
    )

    # Assert
    got = pd.DataFrame(
        [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in bars], columns=reference.columns
    )
    assert got["open_time"].tolist() == reference["open_time"].tolist()
    np.testing.assert_allclose(
        got.drop(columns="open_time").to_numpy(), reference.drop(columns="open_time").to_numpy(), rtol=1e-12
    )
    assert all(b.ts_event == b.open_time + step for b in bars)
    assert sum(b.volume for b in bars) == pytest.approx(sum(t.quantity for t in btc_trades), rel=1e-12)


def test_a_bar_closes_only_once_its_interval_is_over(btc_trades: list[TradeTick]) -> None:
    # Arrange
    aggregator = TimeBarAggregator("BTCUSDT", "1m")

    # Act
    emitted = [(trade.ts_event, bar) for trade in btc_trades for bar in aggregator.on_trade(trade)]

    # Assert
    assert emitted
    for ts, bar in emitted:
        assert bar.ts_event <= ts and bar.ts_init == ts


def test_intervals_without_trades_give_flat_bars_at_the_last_close(btc_trades: list[TradeTick]) -> None:
    # Arrange
    aggregator = TimeBarAggregator("BTCUSDT", "1m")
    _feed(aggregator, btc_trades)
    last_open = btc_trades[-1].ts_event - btc_trades[-1].ts_event % 60_000_000_000

    # Act
    bars = aggregator.close_until(last_open + 4 * 60_000_000_000)

    # Assert
    assert len(bars) == 4
    assert bars[0].volume > 0 and bars[0].close == btc_trades[-1].price
    assert all(b.volume == 0 and b.open == b.high == b.low == b.close == btc_trades[-1].price for b in bars[1:])


def test_volume_and_dollar_bars_close_on_their_thresholds(btc_trades: list[TradeTick]) -> None:
    # Act
    volume_bars = _feed(VolumeBarAggregator("BTCUSDT", 50.0), btc_trades)
    dollar_bars = _feed(DollarBarAggregator("BTCUSDT", 2_000_000.0), btc_trades)

    # Assert
    total = sum(t.quantity for t in btc_trades)
    assert 0 <= total - sum(b.volume for b in volume_bars) < 50.0
    assert all(b.volume >= 50.0 for b in volume_bars)
    assert all(b.low <= b.open <= b.high and b.low <= b.close <= b.high for b in volume_bars + dollar_bars)
    assert volume_bars[0].interval == "volume:50" and dollar_bars[0].interval == "dollar:2e+06"
    assert len(dollar_bars) > 0


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="bar interval"):
        TimeBarAggregator("BTCUSDT", "1x")
    with pytest.raises(ValueError, match="threshold"):
        VolumeBarAggregator("BTCUSDT", 0)


def _plain_resample(frame: pd.DataFrame, source_ms: int, target_ms: int) -> list[tuple[float, ...]]:
    """The reference: walk the rows, one bucket at a time."""
    buckets: dict[int, list[tuple]] = {}
    for row in frame.itertuples(index=False):
        buckets.setdefault(row.open_time_ms - row.open_time_ms % target_ms, []).append(row)
    out = []
    for start, rows in sorted(buckets.items()):
        if len(rows) == target_ms // source_ms:
            out.append(
                (
                    start,
                    rows[0].open,
                    max(r.high for r in rows),
                    min(r.low for r in rows),
                    rows[-1].close,
                    sum(r.volume for r in rows),
                )
            )
    return out


@pytest.mark.parametrize("target", ["5m", "15m", "1h", "4h"])
def test_resampled_real_klines_equal_the_plain_reference(target: str) -> None:
    # Arrange
    from keel.core.intervals import INTERVAL_MS
    from keel.market_data.loaders import load_ohlcv

    frame = load_ohlcv(BARS_DIR / "ETHUSDT_1m.csv.gz").frame.iloc[:3000]

    # Act
    resampled = resample_ohlcv(frame, 60_000, INTERVAL_MS[target])

    # Assert
    expected = _plain_resample(frame, 60_000, INTERVAL_MS[target])
    np.testing.assert_allclose(resampled.to_numpy(np.float64), np.array(expected, dtype=np.float64), rtol=1e-12)
    assert (resampled["open_time_ms"] % INTERVAL_MS[target] == 0).all()


def test_a_bucket_missing_a_source_bar_is_left_out_not_guessed() -> None:
    # Arrange
    from keel.market_data.loaders import load_ohlcv

    frame = load_ohlcv(BARS_DIR / "BTCUSDT_1m.csv.gz").frame.iloc[:600]
    aligned = frame[frame["open_time_ms"] % 3_600_000 == 0].index[0]
    holed = frame.drop(index=aligned + 7)

    # Act
    resampled = resample_ohlcv(holed, 60_000, 3_600_000)

    # Assert
    assert int(frame["open_time_ms"][aligned]) not in set(resampled["open_time_ms"])
    assert len(resampled) == len(resample_ohlcv(frame, 60_000, 3_600_000)) - 1
