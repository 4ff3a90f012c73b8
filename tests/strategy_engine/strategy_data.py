"""Real bundled data for the strategy-engine tests: 1m bars and recorded funding, as events and as arrays."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keel.core.messages import BarClosed, FundingRateUpdated
from keel.market_data.loaders import load_funding, load_ohlcv

DATA = Path(__file__).resolve().parents[2] / "data"
BARS = DATA / "ohlcv/binance_usdm_1m_2025-05"
FUNDING = DATA / "funding/binance_usdm_funding_2025-03_06.csv.gz"
MINUTE_NS = 60_000_000_000
MS_NS = 1_000_000


@cache
def bar_frame(symbol: str) -> pd.DataFrame:
    """Return a symbol's recorded 1m bars."""
    return load_ohlcv(BARS / f"{symbol}_1m.csv.gz", symbol=symbol).frame


@cache
def funding_frame(symbol: str) -> pd.DataFrame:
    """Return a symbol's recorded funding settlements."""
    frame = load_funding(FUNDING).frame
    return frame[frame["symbol"] == symbol].reset_index(drop=True)


def market_data(symbol: str, start: int = 0, count: int | None = None) -> dict[str, Any]:
    """Return ``count`` bars from ``start`` as the user's ``market_data`` dict, with every funding row."""
    frame = bar_frame(symbol).iloc[start : None if count is None else start + count]
    funding = funding_frame(symbol)
    return {
        "symbol": symbol,
        "timestamp": frame["open_time_ms"].to_numpy(np.int64) * MS_NS + MINUTE_NS,
        **{name: frame[name].to_numpy(np.float64) for name in ("open", "high", "low", "close", "volume")},
        "funding_time": funding["time_ms"].to_numpy(np.int64) * MS_NS,
        "funding_rate": funding["funding_rate"].to_numpy(np.float64),
        "mark_price": funding["mark_price"].to_numpy(np.float64),
    }


def truncated(data: dict[str, Any], count: int) -> dict[str, Any]:
    """Return the first ``count`` bars of ``data`` (funding columns unchanged)."""
    return {
        key: value[:count] if key in ("timestamp", "open", "high", "low", "close", "volume") else value
        for key, value in data.items()
    }


def perturbed(data: dict[str, Any], after: int, seed: int = 11) -> dict[str, Any]:
    """Return ``data`` with every bar after index ``after`` and every later funding row changed."""
    rng = np.random.default_rng(seed)
    changed = dict(data)
    factor = np.ones(len(data["close"]))
    factor[after + 1 :] = 1.0 + rng.normal(0.0, 0.01, len(factor) - after - 1)
    for key in ("open", "high", "low", "close"):
        changed[key] = data[key] * factor
    changed["volume"] = data["volume"] * factor
    cut_time = data["timestamp"][after]
    later = data["funding_time"] > cut_time
    changed["funding_rate"] = np.where(later, -data["funding_rate"] * 3.0, data["funding_rate"])
    changed["mark_price"] = np.where(later, data["mark_price"] * 1.02, data["mark_price"])
    return changed


def events(symbol: str, start: int = 0, count: int | None = None, data: dict[str, Any] | None = None) -> list[Any]:
    """Return bars and funding settlements of a symbol as bus events in feed order (bars first on ties)."""
    data = market_data(symbol, start, count) if data is None else data
    bars = [
        BarClosed(
            symbol=symbol,
            interval="1m",
            open_time=int(ts) - MINUTE_NS,
            open=float(o),
            high=float(h),
            low=float(lo),
            close=float(c),
            volume=float(v),
            ts_event=int(ts),
            ts_init=int(ts),
        )
        for ts, o, h, lo, c, v in zip(
            data["timestamp"], data["open"], data["high"], data["low"], data["close"], data["volume"], strict=True
        )
    ]
    first, last = bars[0].ts_event - MINUTE_NS, bars[-1].ts_event
    settlements = [
        FundingRateUpdated(
            symbol=symbol,
            funding_time=int(t),
            rate=Decimal(repr(float(r))),
            mark_price=None if np.isnan(m) else Decimal(repr(float(m))),
            ts_event=int(t),
            ts_init=int(t),
        )
        for t, r, m in zip(data["funding_time"], data["funding_rate"], data["mark_price"], strict=True)
        if first <= t <= last
    ]
    merged: list[Any] = [*bars, *settlements]
    merged.sort(key=lambda e: (e.ts_event, isinstance(e, FundingRateUpdated)))
    return merged


def feed(target: Any, stream: Sequence[Any]) -> list[Any]:
    """Send events to anything with ``on_bar`` / ``on_funding``; return what ``on_bar`` returned per bar."""
    out = []
    for event in stream:
        if isinstance(event, BarClosed):
            out.append(target.on_bar(event))
        else:
            target.on_funding(event)
    return out


def index_at(symbol: str, time_ms: int) -> int:
    """Return the index of the symbol's first bar opening at or after ``time_ms``."""
    return int(np.searchsorted(bar_frame(symbol)["open_time_ms"].to_numpy(), time_ms))


MAY_5 = 1_746_403_200_000
"""2025-05-05 00:00 UTC in milliseconds."""


def signals(strategy: Any, data: dict[str, Any], upto: int | None = None) -> list[Any]:
    """Return ``strategy.generate_signal(data, i)`` for every bar up to ``upto`` (inclusive)."""
    last = len(data["close"]) - 1 if upto is None else upto
    return [strategy.generate_signal(data, i) for i in range(last + 1)]


def assert_no_lookahead(make: Any, data: dict[str, Any], cut: int) -> None:
    """Outputs up to bar ``cut`` are identical stopped at ``cut``, run on, and with the future perturbed.

    Checked both on arrays (``generate_signal``) and on bus events (``on_bar``).
    """
    stopped = signals(make(), truncated(data, cut + 1))
    full = signals(make(), data)
    changed_data = perturbed(data, cut)
    changed = signals(make(), changed_data)
    assert full[: cut + 1] == stopped
    assert changed[: cut + 1] == stopped
    assert changed[cut + 1 :] != full[cut + 1 :]
    symbol = data["symbol"]
    stopped_events = feed(make(), events(symbol, data=truncated(data, cut + 1)))
    full_events = feed(make(), events(symbol, data=data))
    changed_events = feed(make(), events(symbol, data=changed_data))
    assert full_events[: cut + 1] == stopped_events == stopped
    assert changed_events[: cut + 1] == stopped_events


def transitions(views: list[Any]) -> list[tuple[int, str, str]]:
    """Return (bar, previous action, new action) wherever the view's action changed."""
    out = []
    previous = "HOLD"
    for i, view in enumerate(views):
        if view is not None and view.action != previous:
            out.append((i, previous, view.action))
            previous = view.action
    return out


def funding_within_bars(data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` with only the funding rows inside its bars' span, as a recorded feed delivers them."""
    first, last = data["timestamp"][0] - MINUTE_NS, data["timestamp"][-1]
    keep = (data["funding_time"] >= first) & (data["funding_time"] <= last)
    return {**data, **{key: data[key][keep] for key in ("funding_time", "funding_rate", "mark_price")}}


def hourly_strategies() -> list[Any]:
    """The four strategies with hour-scale windows: busy enough on a day or two of 1m bars to test with."""
    from keel.strategy_engine import (
        FundingArbitrageStrategy,
        MeanReversionStrategy,
        RangeTradingStrategy,
        TrendFollowingStrategy,
    )

    return [
        TrendFollowingStrategy(fast_period=20, slow_period=80, channel_period=60, atr_period=30),
        MeanReversionStrategy(lookback=60, entry_z=2.0, exit_z=0.5, stop_z=4.0, trend_window=120),
        RangeTradingStrategy(range_period=120, entry_band=0.15, min_range_width=0.004, max_trend_strength=0.25),
        FundingArbitrageStrategy(),
    ]
