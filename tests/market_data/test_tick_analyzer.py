"""TickDataAnalyzer on the real tape and bars: streaming equals the batch reference; no look-ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel.core.messages import BarClosed, TradeTick
from keel.core.orders import OrderSide
from keel.market_data.feeds import RecordedBarFeed
from keel.market_data.tick_analyzer import TickDataAnalyzer, TradeFlowMetrics, bar_vpin_batch, tick_metrics_batch

DATA = Path(__file__).resolve().parents[2] / "data"
TRADES = DATA / "trades/binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"
FIELDS = ("vpin", "order_flow_imbalance", "kyle_lambda", "realized_volatility", "trade_burst", "sweep")


def _streamed(trades: list[TradeTick], **parameters: object) -> list[TradeFlowMetrics]:
    analyzer = TickDataAnalyzer(**parameters)  # type: ignore[arg-type]
    return [analyzer.on_trade(trade) for trade in trades]


def _columns(trades: list[TradeTick]) -> tuple[np.ndarray, ...]:
    return (
        np.array([t.ts_event for t in trades], dtype=np.int64),
        np.array([t.price for t in trades]),
        np.array([t.quantity for t in trades]),
        np.array([t.aggressor_side is OrderSide.SELL for t in trades]),
    )


@pytest.mark.parametrize(("classification", "count"), [("aggressor", None), ("bulk", 4_000)])
def test_streaming_equals_the_batch_reference_on_the_real_tape(
    btc_trades: list[TradeTick], classification: str, count: int | None
) -> None:
    # Arrange
    trades = btc_trades[:count]
    parameters = {"bucket_volume": 5.0, "vpin_buckets": 20, "classification": classification}

    # Act
    streamed = _streamed(trades, **parameters)
    batch = tick_metrics_batch(*_columns(trades), **parameters)  # type: ignore[arg-type]

    # Assert
    for name in FIELDS:
        values = np.array([np.nan if getattr(m, name) is None else getattr(m, name) for m in streamed], dtype=float)
        np.testing.assert_allclose(values, batch[name].astype(float), rtol=1e-7, atol=1e-10, err_msg=name)
    assert streamed[-1].vpin is not None and 0 <= streamed[-1].vpin <= 1


def test_bar_vpin_by_bulk_classification_equals_the_batch_reference_on_a_month_of_bars() -> None:
    # Arrange
    bars = [
        b
        for b in RecordedBarFeed(DATA / "ohlcv/binance_usdm_1m_2025-05", ["BTCUSDT"], "1m")
        if isinstance(b, BarClosed)
    ]
    analyzer = TickDataAnalyzer(bucket_volume=2_000.0, vpin_buckets=50)

    # Act
    streamed = np.array([np.nan if (v := analyzer.on_bar(b)) is None else v for b in bars])
    batch = bar_vpin_batch(np.array([b.close for b in bars]), np.array([b.volume for b in bars]), 2_000.0, 50)

    # Assert
    np.testing.assert_allclose(streamed, batch, rtol=1e-9, atol=1e-12)
    assert analyzer.bar_buckets.buckets > 1_000 and 0 < analyzer.vpin < 1  # type: ignore[operator]


def test_calculate_vpin_on_a_frame_equals_the_streaming_value(btc_trades: list[TradeTick]) -> None:
    # Arrange
    frame = pd.read_csv(TRADES)
    analyzer = TickDataAnalyzer(bucket_volume=5.0, vpin_buckets=20)

    # Act
    batch_value = analyzer.calculate_vpin(frame)
    streamed = _streamed(btc_trades, bucket_volume=5.0, vpin_buckets=20)[-1].vpin

    # Assert
    assert batch_value == pytest.approx(streamed, rel=1e-9)


@pytest.mark.parametrize(("column", "value"), [("qty", np.nan), ("price", -5.0), ("price", np.inf), ("qty", 0.0)])
def test_calculate_vpin_names_the_first_trade_without_a_positive_finite_price_or_quantity(
    column: str, value: float
) -> None:
    # Arrange: the real tape with one row spoilt
    frame = pd.read_csv(TRADES)
    frame.loc[100, column] = value

    # Act / Assert: a NaN quantity raised "cannot convert float NaN to integer", a negative price was used
    with pytest.raises(ValueError, match=f"tick data row 100: {column} {value!r} is not a positive finite number"):
        TickDataAnalyzer(bucket_volume=5.0).calculate_vpin(frame)


def test_a_trade_without_a_positive_finite_price_or_quantity_is_refused_and_changes_nothing(
    btc_trades: list[TradeTick],
) -> None:
    # Arrange
    analyzer = TickDataAnalyzer(bucket_volume=5.0, vpin_buckets=20)
    before = [analyzer.on_trade(trade) for trade in btc_trades[:500]][-1]
    trade = btc_trades[500]

    # Act / Assert
    for price, quantity in ((trade.price, np.nan), (np.nan, trade.quantity), (-trade.price, trade.quantity)):
        with pytest.raises(ValueError, match="a trade needs a positive finite price and quantity"):
            analyzer.update(trade.ts_event, price, quantity, trade.aggressor_side is OrderSide.SELL)
    assert analyzer.last == before
    assert analyzer.on_trade(trade) == _streamed(btc_trades[:501], bucket_volume=5.0, vpin_buckets=20)[-1]


def test_a_malformed_bar_is_counted_and_left_out_of_the_bar_vpin() -> None:
    # Arrange: real bars, one of them with a NaN close in between
    bars = [
        m
        for m in RecordedBarFeed(DATA / "ohlcv/binance_usdm_1m_2025-05", ["BTCUSDT"], "1m")
        if isinstance(m, BarClosed)
    ]
    clean, spoilt = TickDataAnalyzer(bucket_volume=50.0), TickDataAnalyzer(bucket_volume=50.0)
    broken = bars[300].__class__(**{**{f: getattr(bars[300], f) for f in bars[300].__struct_fields__}, "close": np.nan})

    # Act
    for index, bar in enumerate(bars[:2000]):
        clean.on_bar(bar)
        if index == 300:
            spoilt.on_bar(broken)
        spoilt.on_bar(bar)

    # Assert
    assert spoilt.malformed_bars == 1 and clean.malformed_bars == 0
    assert spoilt.bar_buckets.vpin == clean.bar_buckets.vpin is not None


def test_lookahead_values_up_to_a_trade_ignore_later_trades(btc_trades: list[TradeTick]) -> None:
    # Arrange: stop at trade 8000, or go on with later trades' sizes and sides perturbed
    cut = 8_000
    later = [
        TradeTick(
            symbol=t.symbol,
            trade_id=t.trade_id,
            price=t.price + 5,
            quantity=t.quantity * 7,
            aggressor_side=OrderSide.BUY,
            ts_event=t.ts_event,
            ts_init=t.ts_init,
        )
        for t in btc_trades[cut:]
    ]

    # Act
    stopped = _streamed(btc_trades[:cut], bucket_volume=5.0)
    continued = _streamed([*btc_trades[:cut], *later], bucket_volume=5.0)

    # Assert
    assert continued[:cut] == stopped
    assert continued[cut + 300 :] != _streamed(btc_trades, bucket_volume=5.0)[cut + 300 :]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="classification"):
        TickDataAnalyzer(bucket_volume=1.0, classification="tick")
    with pytest.raises(ValueError, match="bucket_volume"):
        TickDataAnalyzer(bucket_volume=0.0)


def test_a_long_burst_window_over_the_tape_played_twice_equals_the_batch_reference(
    btc_trades: list[TradeTick],
) -> None:
    # Arrange: the real tape, then again right after it; a 5-minute window holds thousands of trades and
    # trades x window passes 2**53, where only exact integer division decides a burst
    ts, prices, quantities, sellers = _columns(btc_trades)
    shift = int(ts[-1] - ts[0]) + 1
    columns = (np.r_[ts, ts + shift], np.r_[prices, prices], np.r_[quantities, quantities], np.r_[sellers, sellers])
    parameters = {"bucket_volume": 5.0, "burst_window_ns": 300_000_000_000, "burst_multiple": 1.0}
    analyzer = TickDataAnalyzer(**parameters)  # type: ignore[arg-type]

    # Act
    streamed = [analyzer.update(int(t), float(p), float(q), bool(s)) for t, p, q, s in zip(*columns, strict=True)]
    batch = tick_metrics_batch(*columns, **parameters)  # type: ignore[arg-type]

    # Assert
    bursts = np.array([m.trade_burst for m in streamed])
    np.testing.assert_array_equal(bursts, batch["trade_burst"])
    assert bursts[-5_000:].any() and not bursts.all()


def test_a_burst_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="burst_window_ns"):
        TickDataAnalyzer(bucket_volume=1.0, burst_window_ns=0)
