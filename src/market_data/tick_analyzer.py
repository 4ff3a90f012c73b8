"""Trade-flow microstructure: VPIN, order-flow imbalance, Kyle's lambda, realized volatility, bursts, sweeps.

:class:`TickDataAnalyzer` updates on every trade (``on_trade``) and, for
VPIN over long horizons, on bars (``on_bar``); each value at a trade uses
that trade and earlier ones only. :func:`tick_metrics_batch` and
:func:`bar_vpin_batch` are the plain vectorized references a test holds equal
to the streaming values on the real tape and bars.

Definitions (``N`` is a window length in trades):

- VPIN: volume is cut into buckets of ``bucket_volume``; a trade larger than
  the room left in a bucket spills into the next ones. VPIN is the mean of
  ``|buy - sell| / bucket_volume`` over the last ``vpin_buckets`` full
  buckets. Trades are classified by their aggressor (``aggressor``) or by
  bulk volume classification (``bulk``: a share ``Phi(dp / sigma)`` of the
  volume is buying, ``dp`` the price change since the previous trade or bar
  and ``sigma`` the sample standard deviation of the last ``sigma_window``
  changes, this one included). Bars are always classified in bulk.
- order-flow imbalance: ``sum(signed quantity) / sum(quantity)`` over the last ``flow_window`` trades.
- Kyle's lambda: the least-squares slope of the price change on the signed
  quantity over the last ``lambda_window`` trades (price units per base unit).
- realized volatility: ``sqrt(sum r^2)`` of the log returns between the last
  ``volatility_window`` + 1 trades.
- burst: at least ``burst_min_trades`` trades in the last ``burst_window_ns``
  and ``burst_multiple`` times the session's mean rate over such a window.
- sweep: the trade belongs to one taker order (same time and aggressor side
  as the previous trade) that has reached ``sweep_levels`` distinct prices.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.special import ndtr

from keel.core.clock import NANOS_PER_SECOND
from keel.core.messages import BarClosed, TradeTick
from keel.core.orders import OrderSide
from keel.market_data._kernels import (
    BURST_MIN_TRADES,
    BURST_MULTIPLE,
    BURST_WINDOW_NS,
    FIRST_TS,
    FLOAT_HEADER,
    FLOW_SIZE,
    INT_HEADER,
    LAMBDA_SIZE,
    NEEDS_ROOM,
    OUT,
    RETURNS_SIZE,
    SWEEP_LEVELS,
    TIMES_COUNT,
    TIMES_HEAD,
    TRADES,
    trade_flow,
)

_TIMES_CAPACITY = 1024

_SQRT2 = math.sqrt(2.0)

_isfinite = math.isfinite


class TradeFlowMetrics(NamedTuple):
    """Trade-flow state after one trade (None until a window has filled)."""

    ts_event: int
    vpin: float | None
    order_flow_imbalance: float
    kyle_lambda: float | None
    realized_volatility: float | None
    trade_burst: bool
    sweep: bool


class VolumeBuckets:
    """Volume-synchronized buckets and the VPIN over the last ``window`` of them.

    Parameters
    ----------
    bucket_volume
        Volume per bucket (base units).
    window
        Full buckets VPIN averages over.
    """

    def __init__(self, bucket_volume: float, window: int) -> None:
        if not bucket_volume > 0 or window < 1:
            raise ValueError("bucket_volume must be positive and window at least 1")
        self.bucket_volume = bucket_volume
        self.window = window
        self._buy = 0.0
        self._filled = 0.0
        self._imbalances: deque[float] = deque(maxlen=window)
        self.buckets = 0
        self.vpin: float | None = None

    def add(self, buy: float, sell: float) -> None:
        """Add classified volume, closing as many buckets as it fills (``vpin`` is None until ``window`` have)."""
        total = buy + sell
        if total <= 0:
            return
        buy_share = buy / total
        size = self.bucket_volume
        while total > 0:
            take = min(total, size - self._filled)
            self._buy += take * buy_share
            self._filled += take
            total -= take
            if self._filled >= size * (1 - 1e-12):
                self._imbalances.append(abs(2 * self._buy - self._filled) / size)
                self.buckets += 1
                self._buy = self._filled = 0.0
                if len(self._imbalances) == self.window:
                    self.vpin = math.fsum(self._imbalances) / self.window


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


class TickDataAnalyzer:
    """Trade-flow metrics of one symbol, updated per trade and per bar (see module doc).

    Parameters
    ----------
    bucket_volume
        VPIN bucket size, base units.
    vpin_buckets
        Buckets in the VPIN average.
    classification
        ``"aggressor"`` (exact, trades only) or ``"bulk"``.
    sigma_window, flow_window, lambda_window, volatility_window
        Window lengths (trades; bars for ``sigma_window`` on bars).
    burst_window_ns, burst_multiple, burst_min_trades
        Burst detection.
    sweep_levels
        Distinct prices one taker order must reach to count as a sweep.
    """

    def __init__(
        self,
        bucket_volume: float,
        vpin_buckets: int = 50,
        classification: str = "aggressor",
        sigma_window: int = 100,
        flow_window: int = 200,
        lambda_window: int = 200,
        volatility_window: int = 200,
        burst_window_ns: int = NANOS_PER_SECOND,
        burst_multiple: float = 3.0,
        burst_min_trades: int = 20,
        sweep_levels: int = 3,
    ) -> None:
        if classification not in ("aggressor", "bulk"):
            raise ValueError(f"classification must be 'aggressor' or 'bulk', got {classification!r}")
        if min(sigma_window, flow_window, lambda_window, volatility_window) < 2:
            raise ValueError("every window must hold at least 2 observations")
        if burst_window_ns <= 0:
            raise ValueError(f"burst_window_ns must be positive, got {burst_window_ns}")
        self.classification = classification
        self._aggressor = classification == "aggressor"
        self.buckets = VolumeBuckets(bucket_volume, vpin_buckets)
        self.bar_buckets = VolumeBuckets(bucket_volume, vpin_buckets)
        self.burst_window_ns = burst_window_ns
        self.burst_multiple = burst_multiple
        self.burst_min_trades = burst_min_trades
        self.sweep_levels = sweep_levels
        self._changes: deque[float] = deque(maxlen=sigma_window)
        self._bar_changes: deque[float] = deque(maxlen=sigma_window)
        # The per-trade windows, burst and sweep live in two buffers updated by a compiled kernel
        # (see keel.market_data._kernels.trade_flow for their layout).
        self._floats = np.zeros(FLOAT_HEADER + 2 * flow_window + 4 * lambda_window + volatility_window)
        self._floats[BURST_MULTIPLE] = burst_multiple
        self._results = self._floats[OUT : OUT + 5]
        self._ints = np.zeros(INT_HEADER + _TIMES_CAPACITY, dtype=np.int64)
        self._ints[[FLOW_SIZE, LAMBDA_SIZE, RETURNS_SIZE]] = flow_window, lambda_window, volatility_window
        self._ints[[BURST_WINDOW_NS, BURST_MIN_TRADES, SWEEP_LEVELS]] = burst_window_ns, burst_min_trades, sweep_levels
        self._last_price = math.nan
        self._last_bar_close: float | None = None
        self.last: TradeFlowMetrics | None = None
        self.malformed_bars = 0

    @property
    def vpin(self) -> float | None:
        """Return the trade VPIN, or the bar VPIN when no trade VPIN exists yet."""
        trade_vpin = self.buckets.vpin
        return trade_vpin if trade_vpin is not None else self.bar_buckets.vpin

    def on_trade(self, trade: TradeTick) -> TradeFlowMetrics:
        """Update with one trade and return the metrics after it."""
        return self.update(trade.ts_event, trade.price, trade.quantity, trade.aggressor_side is OrderSide.SELL)

    def update(self, ts: int, price: float, quantity: float, seller_aggressor: bool) -> TradeFlowMetrics:
        """Update with one trade given as plain values (see :meth:`on_trade`).

        Raises
        ------
        ValueError
            If the price or the quantity is not a positive finite number (nothing is updated).
        """
        if not (_isfinite(price) and price > 0.0 and _isfinite(quantity) and quantity > 0.0):
            raise ValueError(f"a trade needs a positive finite price and quantity, got {price!r} and {quantity!r}")
        previous = self._last_price
        if self._aggressor:
            buy = 0.0 if seller_aggressor else quantity
        else:
            buy = quantity * self._trade_buy_share(price, previous)
        self.buckets.add(buy, quantity - buy)
        self._last_price = price
        while trade_flow(self._floats, self._ints, ts, price, previous, quantity, seller_aggressor) == NEEDS_ROOM:
            self._grow_times()
        flow_imbalance, kyle_lambda, volatility, burst, sweep = self._results.tolist()
        metrics = TradeFlowMetrics(
            ts,
            self.buckets.vpin,
            flow_imbalance,
            None if kyle_lambda != kyle_lambda else kyle_lambda,
            None if volatility != volatility else volatility,
            burst > 0.0 if burst >= 0.0 else self._exact_burst(ts),
            sweep > 0.0,
        )
        self.last = metrics
        return metrics

    def _trade_buy_share(self, price: float, previous: float) -> float:
        """Bulk-classify a trade against the previous one (NaN before the first)."""
        has_change = previous == previous
        change = price - previous if has_change else 0.0
        if has_change:
            self._changes.append(change)
        return self._bulk_buy_share(change, self._changes, has_change)

    def _grow_times(self) -> None:
        """Double the ring of trade times in the burst window, oldest first."""
        ints = self._ints
        times = ints[INT_HEADER:]
        order = (np.arange(ints[TIMES_COUNT]) + ints[TIMES_HEAD]) % times.size
        grown = np.zeros(INT_HEADER + 2 * times.size, dtype=np.int64)
        grown[:INT_HEADER] = ints[:INT_HEADER]
        grown[INT_HEADER : INT_HEADER + order.size] = times[order]
        grown[TIMES_HEAD] = 0
        self._ints = grown

    def _exact_burst(self, ts: int) -> bool:
        """Decide a burst with Python's exact int division (the kernel's floats would round its operands)."""
        ints = self._ints
        elapsed = ts - int(ints[FIRST_TS])
        mean_per_window = int(ints[TRADES]) * self.burst_window_ns / elapsed
        return int(ints[TIMES_COUNT]) >= self.burst_multiple * mean_per_window

    def on_bar(self, bar: BarClosed) -> float | None:
        """Add a bar's volume to the bar VPIN (bulk classification); return the bar VPIN.

        A bar without a positive finite close and a finite volume of at least
        zero is counted in :attr:`malformed_bars` and left out.
        """
        if not (_isfinite(bar.close) and bar.close > 0.0 and _isfinite(bar.volume) and bar.volume >= 0.0):
            self.malformed_bars += 1
            return self.bar_buckets.vpin
        previous = self._last_bar_close
        change = 0.0 if previous is None else bar.close - previous
        if previous is not None:
            self._bar_changes.append(change)
        share = self._bulk_buy_share(change, self._bar_changes, previous is not None)
        self.bar_buckets.add(bar.volume * share, bar.volume * (1.0 - share))
        self._last_bar_close = bar.close
        return self.bar_buckets.vpin

    @staticmethod
    def _bulk_buy_share(change: float, changes: deque[float], has_change: bool) -> float:
        if not has_change or len(changes) < 2:
            return 0.5
        sigma = float(np.std(np.fromiter(changes, dtype=np.float64, count=len(changes)), ddof=1))
        if sigma == 0.0:
            return 0.5
        return _normal_cdf(change / sigma)

    def calculate_vpin(self, tick_data: pd.DataFrame) -> float | None:
        """Return the VPIN after a whole trade frame (``price``, ``qty``, ``is_buyer_maker``), batch style.

        The frame is classified like the streaming analyzer and does not
        touch this analyzer's state.

        Raises
        ------
        ValueError
            Naming the first row whose price or quantity is not a positive finite number.
        """
        for column in ("price", "qty"):
            values = tick_data[column].to_numpy(np.float64)
            bad = np.flatnonzero(~(np.isfinite(values) & (values > 0.0)))
            if bad.size:
                row = tick_data.index[bad[0]]
                raise ValueError(
                    f"tick data row {row}: {column} {float(values[bad[0]])!r} is not a positive finite number"
                )
        metrics = tick_metrics_batch(
            tick_data["time_ms"].to_numpy(np.int64) * 1_000_000,
            tick_data["price"].to_numpy(np.float64),
            tick_data["qty"].to_numpy(np.float64),
            tick_data["is_buyer_maker"].to_numpy(bool),
            bucket_volume=self.buckets.bucket_volume,
            vpin_buckets=self.buckets.window,
            classification=self.classification,
            sigma_window=self._changes.maxlen or 2,
        )
        last = metrics["vpin"][-1] if len(metrics["vpin"]) else np.nan
        return None if np.isnan(last) else float(last)


# --- plain batch references ------------------------------------------------------------------


def _bulk_shares(changes: np.ndarray, sigma_window: int) -> np.ndarray:
    """Buy shares by bulk classification; ``changes[0]`` is the first observation (no change yet)."""
    shares = np.full(len(changes), 0.5)
    series = pd.Series(changes[1:])
    sigma = series.rolling(sigma_window, min_periods=2).std(ddof=1).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        z = changes[1:] / sigma
    computed = np.where(np.isfinite(z) & (sigma > 0), ndtr(np.nan_to_num(z)), 0.5)
    shares[1:] = computed
    return shares


def _vpin_series(buy: np.ndarray, volume: np.ndarray, bucket_volume: float, window: int) -> np.ndarray:
    """VPIN after each observation, by cutting cumulative volume at bucket boundaries."""
    cumulative = np.cumsum(volume)
    cumulative_buy = np.cumsum(buy)
    edges = np.asarray(
        np.arange(1, int(cumulative[-1] / bucket_volume * (1 + 1e-12)) + 1) * bucket_volume if len(volume) else [],
        dtype=np.float64,
    )
    # Buy volume up to each edge: interpolate inside the observation that crosses it.
    index = np.searchsorted(cumulative, edges * (1 - 1e-12), side="left")
    before = np.where(index > 0, cumulative[np.maximum(index - 1, 0)], 0.0)
    before_buy = np.where(index > 0, cumulative_buy[np.maximum(index - 1, 0)], 0.0)
    share = buy[index] / np.where(volume[index] > 0, volume[index], 1.0)
    buy_at_edge = before_buy + (edges - before) * share
    bucket_buy = np.diff(np.r_[0.0, buy_at_edge])
    imbalance = np.abs(2 * bucket_buy - bucket_volume) / bucket_volume
    result = np.full(len(volume), np.nan)
    if len(imbalance) >= window:
        means = np.convolve(imbalance, np.ones(window) / window, mode="valid")
        closed_at = index[window - 1 :]
        result[closed_at] = means
        result = pd.Series(result).ffill().to_numpy()
    return result


def tick_metrics_batch(
    ts: np.ndarray,
    prices: np.ndarray,
    quantities: np.ndarray,
    seller_aggressor: np.ndarray,
    bucket_volume: float,
    vpin_buckets: int = 50,
    classification: str = "aggressor",
    sigma_window: int = 100,
    flow_window: int = 200,
    lambda_window: int = 200,
    volatility_window: int = 200,
    burst_window_ns: int = NANOS_PER_SECOND,
    burst_multiple: float = 3.0,
    burst_min_trades: int = 20,
    sweep_levels: int = 3,
) -> dict[str, np.ndarray]:
    """Compute every :class:`TradeFlowMetrics` field after each trade at once (the plain reference).

    Returns
    -------
    dict of str to ndarray
        ``vpin``, ``order_flow_imbalance``, ``kyle_lambda``,
        ``realized_volatility`` (NaN where the streaming value is None),
        ``trade_burst`` and ``sweep`` (bool).
    """
    sign = np.where(seller_aggressor, -1.0, 1.0)
    changes = np.r_[0.0, np.diff(prices)]
    if classification == "aggressor":
        buy = np.where(seller_aggressor, 0.0, quantities)
    else:
        buy = quantities * _bulk_shares(changes, sigma_window)
    signed = pd.Series(sign * quantities)
    flow = (
        signed.rolling(flow_window, min_periods=1).sum()
        / pd.Series(quantities).rolling(flow_window, min_periods=1).sum()
    )
    x = pd.Series(sign * quantities)[1:].reset_index(drop=True)
    y = pd.Series(changes[1:])
    covariance = x.rolling(lambda_window).cov(y, ddof=0)
    variance = x.rolling(lambda_window).var(ddof=0)
    slope = np.r_[np.nan, (covariance / variance.where(variance > 0)).to_numpy()]
    returns = pd.Series(np.log(prices[1:] / prices[:-1]))
    volatility = np.r_[np.nan, np.sqrt((returns**2).rolling(volatility_window).sum().to_numpy())]
    count_in_window = np.arange(1, len(ts) + 1) - np.searchsorted(ts, ts - burst_window_ns, side="right")
    elapsed = ts - ts[0] if len(ts) else ts
    mean_per_window = np.arange(1, len(ts) + 1) * burst_window_ns / np.where(elapsed > 0, elapsed, 1)
    burst = (
        (elapsed >= burst_window_ns)
        & (count_in_window >= burst_min_trades)
        & (count_in_window >= burst_multiple * mean_per_window)
    )
    new_run = np.r_[True, (ts[1:] != ts[:-1]) | (seller_aggressor[1:] != seller_aggressor[:-1])]
    run = np.cumsum(new_run)
    level_change = np.r_[True, prices[1:] != prices[:-1]] | new_run
    levels = pd.Series(level_change.astype(np.int64)).groupby(run).cumsum().to_numpy()
    return {
        "vpin": _vpin_series(buy, quantities, bucket_volume, vpin_buckets),
        "order_flow_imbalance": flow.to_numpy(),
        "kyle_lambda": slope,
        "realized_volatility": volatility,
        "trade_burst": burst,
        "sweep": levels >= sweep_levels,
    }


def bar_vpin_batch(
    closes: np.ndarray, volumes: np.ndarray, bucket_volume: float, vpin_buckets: int = 50, sigma_window: int = 100
) -> np.ndarray:
    """Bar VPIN (bulk classification) after each bar, the reference of :meth:`TickDataAnalyzer.on_bar`."""
    changes = np.r_[0.0, np.diff(closes)]
    buy = volumes * _bulk_shares(changes, sigma_window)
    return _vpin_series(buy, volumes, bucket_volume, vpin_buckets)
