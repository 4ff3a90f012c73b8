"""Microseconds per bar of the regime detector and each strategy on the bundled BTCUSDT 1m bars.

Measures, in one process on the same real bars:

- the regime update (``NoLookAheadRegimeDetector.update``: features, one
  forward step of the 4-state HMM, one GARCH(1,1) step), excluding and
  including (amortized) its scheduled refits, and its two filter steps alone;
- the references it replaces: hmmlearn's ``predict`` and ``predict_proba``
  on the last 100 feature rows (what re-decoding each bar would cost) and
  arch's one-step ``forecast`` of the fitted GARCH, each timed per call;
- each strategy's ``generate_signal`` on a shared history, and the whole
  ``StrategyManager`` per bar (four strategies, regime weighting, performance).

The bars run to 2025-06-03 08:00 UTC, the end of the recorded BTCUSDT funding.
Prints one JSON line. ``--quick`` uses 4,000 bars and one repeat (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from arch import arch_model

from keel.core.messages import BarClosed, FundingRateUpdated
from keel.market_data.feeds import RecordedBarFeed
from keel.strategy_engine import (
    FundingArbitrageStrategy,
    Garch11Filter,
    GaussianHmmFilter,
    MeanReversionStrategy,
    NoLookAheadRegimeDetector,
    RangeTradingStrategy,
    StrategyManager,
    SymbolHistory,
    TrendFollowingStrategy,
)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_WINDOW = 100
# The recorded BTCUSDT funding ends with the 2025-06-03 00:00 settlement: later bars would (rightly)
# make the funding strategy raise MissingFundingDataError at 08:31.
FUNDING_END_NS = 1_748_937_600_000_000_000  # 2025-06-03 08:00 UTC


class _TimedDetector(NoLookAheadRegimeDetector):
    """The detector, timing its refits apart from the per-bar update."""

    refit_seconds = 0.0
    refits = 0

    def _refit(self) -> None:
        started = time.perf_counter()
        super()._refit()
        self.refit_seconds += time.perf_counter() - started
        self.refits += 1


def per_call_us(call: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def regime_numbers(closes: list[float]) -> dict[str, float]:
    detector = _TimedDetector()
    started = time.perf_counter()
    for close in closes:
        detector.update(close)
    total = time.perf_counter() - started
    return {
        "regime_update_us_per_bar": (total - detector.refit_seconds) / len(closes) * 1e6,
        "regime_update_with_refits_us_per_bar": total / len(closes) * 1e6,
        "regime_refits": detector.refits,
        "regime_refit_ms": detector.refit_seconds / max(detector.refits, 1) * 1e3,
    }


def reference_numbers(closes: list[float], calls: int) -> dict[str, float]:
    detector = NoLookAheadRegimeDetector(refit_interval=10**9).fit(closes[:1800])
    model = detector.hmm_
    features = np.array(detector._features)
    window = features[-REFERENCE_WINDOW:]
    hmm_filter = GaussianHmmFilter.from_model(model)
    hmm_filter.update(window[0].tolist())
    rows = [row.tolist() for row in features]
    returns = np.diff(np.log(np.array(closes[:2881]))) * 1e4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = arch_model(returns, mean="Zero", vol="GARCH", p=1, q=1, rescale=False).fit(disp="off")
    omega, alpha, beta = (float(v) for v in result.params.to_numpy())
    garch = Garch11Filter(omega, alpha, beta, float(result.conditional_volatility[-1]) ** 2)
    scaled = returns.tolist()
    step = iter(range(10**9))
    return {
        "hmm_filter_step_us": per_call_us(lambda: hmm_filter.update(rows[next(step) % len(rows)]), 20_000),
        "garch_step_us": per_call_us(lambda: garch.update(scaled[next(step) % len(scaled)]), 20_000),
        "hmmlearn_predict_window100_us": per_call_us(lambda: model.predict(window), calls),
        "hmmlearn_predict_proba_window100_us": per_call_us(lambda: model.predict_proba(window), calls),
        "arch_forecast_1step_us": per_call_us(lambda: result.forecast(horizon=1, reindex=False), max(calls // 10, 5)),
    }


def strategy_numbers(stream: list[object], bars: int) -> dict[str, float]:
    numbers = {}
    for make in (TrendFollowingStrategy, MeanReversionStrategy, RangeTradingStrategy, FundingArbitrageStrategy):
        strategy = make()
        history = SymbolHistory("BTCUSDT", 20_000)
        elapsed = 0.0
        for event in stream:
            if isinstance(event, BarClosed):
                history.append_bar(event.ts_event, event.open, event.high, event.low, event.close, event.volume)
                view, index = history.view(), len(history) - 1
                started = time.perf_counter()
                strategy.generate_signal(view, index)
                elapsed += time.perf_counter() - started
            elif isinstance(event, FundingRateUpdated):
                mark = None if event.mark_price is None else float(event.mark_price)
                history.append_funding(event.funding_time, float(event.rate), mark)
        numbers[f"{strategy.name}_us_per_bar"] = elapsed / bars * 1e6
    for label, detector in (("manager_us_per_bar", None), ("manager_without_regime_us_per_bar", False)):
        manager = StrategyManager(detector_factory=detector)
        started = time.perf_counter()
        for event in stream:
            if isinstance(event, BarClosed):
                manager.on_bar(event)
            elif isinstance(event, FundingRateUpdated):
                manager.on_funding(event)
        numbers[label] = (time.perf_counter() - started) / bars * 1e6
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4,000 bars, one repeat")
    args = parser.parse_args()
    feed = RecordedBarFeed(
        ROOT / "data/ohlcv/binance_usdm_1m_2025-05",
        ["BTCUSDT"],
        "1m",
        ROOT / "data/funding/binance_usdm_funding_2025-03_06.csv.gz",
        end_ns=FUNDING_END_NS,
    )
    stream = list(feed)
    if args.quick:
        stream = [e for e in stream if e.ts_event <= stream[0].ts_event + 4000 * 60_000_000_000]
    closes = [e.close for e in stream if isinstance(e, BarClosed)]
    repeats = 1 if args.quick else 3
    calls = 50 if args.quick else 500
    runs = [
        {
            **regime_numbers(closes),
            **reference_numbers(closes, calls),
            **strategy_numbers(stream, len(closes)),
        }
        for _ in range(repeats)
    ]
    numbers = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    regime = numbers["regime_update_us_per_bar"]
    print(
        json.dumps(
            {
                "benchmark": "strategies",
                "symbol": "BTCUSDT",
                "bars": len(closes),
                "repeats": repeats,
                **{key: round(value, 2) for key, value in numbers.items()},
                "speedup_vs_hmmlearn_predict": round(numbers["hmmlearn_predict_window100_us"] / regime, 1),
                "speedup_vs_arch_forecast": round(numbers["arch_forecast_1step_us"] / regime, 1),
                "regime_goal_us_per_bar": 10.0,
                "regime_goal_met": regime <= 10.0,
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
