"""The strategy manager on real bars: regime weighting, the combined vote, isolation, performance, no look-ahead."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from strategy_data import (
    MAY_5,
    MINUTE_NS,
    events,
    feed,
    funding_within_bars,
    hourly_strategies,
    index_at,
    market_data,
    perturbed,
    truncated,
)

from keel.core.costs import CostModel
from keel.core.instruments import bundled_instruments
from keel.core.messages import BarClosed, FundingRateUpdated, MarketRegime
from keel.strategy_engine import (
    DEFAULT_REGIME_WEIGHTS,
    REGIMES,
    BaseStrategy,
    FundingArbitrageStrategy,
    MeanReversionStrategy,
    MissingFundingDataError,
    MovingAverageCrossStrategy,
    NoLookAheadRegimeDetector,
    RangeTradingStrategy,
    StrategyManager,
    StrategySignal,
    TrendFollowingStrategy,
)

SMALL_DETECTOR = {"min_fit_bars": 600, "fit_window": 900, "refit_interval": 400}


def small_detector() -> NoLookAheadRegimeDetector:
    return NoLookAheadRegimeDetector(**SMALL_DETECTOR)


class _Fixed(BaseStrategy):
    """A strategy that always holds the same view."""

    def __init__(self, name: str, action: str, strength: float, confidence: float, stop: float | None = None) -> None:
        super().__init__(name)
        self.view = (action, strength, confidence, stop)

    def generate_signal(self, market_data: Any, current_index: int) -> StrategySignal:
        action, strength, confidence, stop = self.view
        return StrategySignal(market_data["symbol"], action, strength, confidence, stop_loss=stop)


class _Raising(BaseStrategy):
    """A strategy with a bug: it raises on every bar."""

    def __init__(self) -> None:
        super().__init__("buggy")

    def generate_signal(self, market_data: Any, current_index: int) -> StrategySignal:
        raise ZeroDivisionError("division by zero in strategy code")


def three_days(symbol: str) -> dict[str, Any]:
    return funding_within_bars(market_data(symbol, start=index_at(symbol, MAY_5), count=3 * 1440))


# Trend following's windows from before they were doubled: short enough to change its view in three days.
QUICKER_TREND = {"fast_period": 40, "slow_period": 160, "channel_period": 160, "atr_period": 60}


@pytest.fixture(scope="module")
def run() -> tuple[StrategyManager, list[StrategySignal]]:
    strategies = [
        TrendFollowingStrategy(**QUICKER_TREND),
        MeanReversionStrategy(),
        RangeTradingStrategy(),
        FundingArbitrageStrategy(),
    ]
    manager = StrategyManager(strategies, DEFAULT_REGIME_WEIGHTS, detector_factory=small_detector)
    signals = manager.generate_trading_signals({s: three_days(s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")})
    return manager, signals


def test_generate_trading_signals_gives_one_combined_signal_per_symbol(run: tuple) -> None:
    # Arrange
    manager, signals = run

    # Act
    status = manager.get_system_status()

    # Assert
    assert [s.symbol for s in signals] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    for signal in signals:
        assert set(signal.metadata) == {
            "regime",
            "regime_probabilities",
            "weights",
            "contributions",
            "volatility_factor",
        }
        assert signal.metadata["regime"] in {r.value for r in REGIMES}
    assert status["bars_processed"] == 3 * 3 * 1440
    assert status["active_strategies"] == 4 and status["health"] == "OK"
    assert set(status["symbols"]) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    for name in ("trend_following", "mean_reversion", "range_trading", "funding_arbitrage"):
        assert status["strategies"][name]["performance"]["bars"] == 3 * 3 * 1440
    for name in ("trend_following", "mean_reversion", "range_trading"):
        assert status["strategies"][name]["performance"]["exposure_changes"] > 0


def test_weights_are_the_matrix_rows_averaged_by_regime_probability(run: tuple) -> None:
    # Arrange
    manager, _ = run
    regime = manager.regime("ETHUSDT")
    names = ["trend_following", "mean_reversion", "range_trading", "funding_arbitrage"]
    raw = {
        n: sum(p * DEFAULT_REGIME_WEIGHTS[r.value][n] for p, r in zip(regime.probabilities, REGIMES, strict=True))
        for n in names
    }

    # Act
    weights = manager.weights("ETHUSDT")

    # Assert
    assert regime.regime is not MarketRegime.UNKNOWN
    assert weights == pytest.approx({n: w / sum(raw.values()) for n, w in raw.items()}, rel=1e-12)
    assert manager.weights("XRPUSDT") == pytest.approx({n: 0.25 for n in names})


def test_calling_again_with_longer_arrays_processes_only_the_new_bars() -> None:
    # Arrange
    data = three_days("SOLUSDT")
    once = StrategyManager(detector_factory=small_detector)
    growing = StrategyManager(detector_factory=small_detector)

    # Act
    expected = once.generate_trading_signals(data)
    for count in (1000, 2500, 3 * 1440):
        actual = growing.generate_trading_signals(truncated(data, count))

    # Assert
    assert actual == expected
    assert growing.get_system_status()["bars_processed"] == once.get_system_status()["bars_processed"]


def test_the_combined_signal_is_the_weighted_vote_of_the_views() -> None:
    # Arrange: no regime detection, so the unknown row (equal weights) applies
    strategies = [
        _Fixed("a", "BUY", 0.8, 0.5, stop=90_000.0),
        _Fixed("b", "BUY", 0.6, 1.0, stop=91_000.0),
        _Fixed("c", "SELL", 1.0, 0.3),
        _Fixed("d", "HOLD", 0.0, 0.0),
    ]
    manager = StrategyManager(strategies, detector_factory=False, min_signal=0.0)
    data = market_data("BTCUSDT", count=5)

    # Act
    (signal,) = manager.generate_trading_signals(data)

    # Assert
    net = 0.25 * (0.8 * 0.5 + 0.6 * 1.0 - 1.0 * 0.3) / 0.75  # d holds no view: three share the vote
    confidence = (0.5 + 1.0) / 2
    assert signal.action == "BUY"
    assert signal.confidence == pytest.approx(confidence)
    assert signal.strength == pytest.approx(net / confidence)
    assert signal.strength * signal.confidence == pytest.approx(net)
    assert signal.stop_loss == 91_000.0  # the largest agreeing contribution is b's
    assert signal.metadata["contributions"]["c"] == pytest.approx(-0.1)
    assert signal.metadata["contributions"]["d"] == 0.0


def test_a_vote_below_min_signal_is_hold() -> None:
    # Arrange
    strategies = [_Fixed("a", "BUY", 0.2, 0.2), _Fixed("b", "HOLD", 0.0, 0.0)]
    manager = StrategyManager(strategies, detector_factory=False, min_signal=0.05)

    # Act
    (signal,) = manager.generate_trading_signals(market_data("BTCUSDT", count=5))

    # Assert
    assert (signal.action, signal.strength, signal.confidence) == ("HOLD", 0.0, 0.0)


def test_a_raising_strategy_is_reported_then_switched_off_and_the_others_go_on() -> None:
    # Arrange
    manager = StrategyManager(
        [_Raising(), MovingAverageCrossStrategy(5, 20)], detector_factory=False, max_consecutive_errors=3
    )

    # Act
    updates = feed(manager, events("BTCUSDT", count=300))

    # Assert
    failures = [f for u in updates for f in u.failures]
    assert [(f.strategy, f.error_type, f.disabled) for f in failures] == [
        ("buggy", "ZeroDivisionError", False),
        ("buggy", "ZeroDivisionError", False),
        ("buggy", "ZeroDivisionError", True),
    ]
    assert sum(u.signal is not None for u in updates) > 3
    status = manager.get_system_status()
    assert status["health"] == "DEGRADED"
    assert status["strategies"]["buggy"]["disabled_symbols"] == ["BTCUSDT"]
    assert status["strategies"]["buggy"]["performance"]["errors"] == 3
    assert status["active_strategies"] == 1


def test_funding_data_that_stops_switches_off_funding_arbitrage_only() -> None:
    # Arrange: bars whose funding settlements stop after the first one
    data = market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=1500)
    stream = events("BTCUSDT", data=data)
    settlements = [e for e in stream if isinstance(e, FundingRateUpdated)]
    cut = [e for e in stream if not isinstance(e, FundingRateUpdated) or e is settlements[0]]
    manager = StrategyManager(max_consecutive_errors=2, detector_factory=False)

    # Act
    updates = feed(manager, cut)

    # Assert
    failures = [f for u in updates for f in u.failures]
    assert {f.strategy for f in failures} == {"funding_arbitrage"}
    assert failures[0].error_type == MissingFundingDataError.__name__
    # The first bar more than 30 min after the second settlement was due.
    settled_minute = settlements[0].funding_time // MINUTE_NS * MINUTE_NS
    assert failures[0].ts == settled_minute + (8 * 60 + 31) * MINUTE_NS
    assert failures[-1].disabled
    assert manager.get_system_status()["active_strategies"] == 3


def test_bars_before_any_funding_data_are_no_failure() -> None:
    # Arrange: bars without their funding settlements (the funding file starts later)
    data = market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=900)
    bars_only = [e for e in events("BTCUSDT", data=data) if isinstance(e, BarClosed)]
    manager = StrategyManager(max_consecutive_errors=2, detector_factory=False)

    # Act
    updates = feed(manager, bars_only)

    # Assert
    assert [f for u in updates for f in u.failures] == []
    assert manager.get_system_status()["active_strategies"] == 4


def test_malformed_bars_are_counted_and_skipped() -> None:
    # Arrange
    good = [e for e in events("ETHUSDT", count=3) if isinstance(e, BarClosed)]
    bad = [
        BarClosed(**{**_fields(good[1]), "close": math.nan}),
        BarClosed(**{**_fields(good[1]), "high": good[1].low - 1.0}),
        BarClosed(**{**_fields(good[0])}),
    ]
    manager = StrategyManager(detector_factory=False)

    # Act
    manager.on_bar(good[0])
    for bar in bad:
        manager.on_bar(bar)
    manager.on_bar(good[1])

    # Assert
    status = manager.get_system_status()
    assert status["rejected_bars"] == 3
    assert status["bars_processed"] == 2


def test_performance_is_the_marked_to_market_exposure_less_fees() -> None:
    # Arrange
    data = market_data("SOLUSDT", count=2000)
    manager = StrategyManager([MovingAverageCrossStrategy(10, 40)], detector_factory=False, fee_rate=0.0004)
    alone = MovingAverageCrossStrategy(10, 40)
    views = [alone.generate_signal(data, i) for i in range(2000)]
    exposure, held, expected = np.zeros(2000), 0.0, 0.0
    for i, view in enumerate(views):
        held = view.score if view is not None else held
        exposure[i] = held
    returns = np.concatenate([[0.0], data["close"][1:] / data["close"][:-1] - 1.0])
    previous = np.concatenate([[0.0], exposure[:-1]])
    expected = float(np.sum(previous * returns) - 0.0004 * np.sum(np.abs(exposure - previous)))

    # Act
    manager.generate_trading_signals(data)

    # Assert
    performance = manager.performance["ma_cross"]
    assert performance.total_return == pytest.approx(expected, rel=1e-9)
    assert performance.bars == 2000


def test_lookahead_manager_outputs_up_to_t_ignore_later_bars_and_settlements() -> None:
    # Arrange
    data = funding_within_bars(market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=2 * 1440))
    cut = 1700

    def make() -> StrategyManager:
        return StrategyManager(hourly_strategies(), DEFAULT_REGIME_WEIGHTS, small_detector)

    # Act
    stopped = feed(make(), events("BTCUSDT", data=truncated(data, cut + 1)))
    full = feed(make(), events("BTCUSDT", data=data))
    changed = feed(make(), events("BTCUSDT", data=perturbed(data, cut)))

    # Assert
    assert sum(u.signal is not None for u in stopped) > 10
    assert sum(u.regime_change is not None for u in stopped) > 3
    assert full[: cut + 1] == stopped
    assert changed[: cut + 1] == stopped
    assert changed[cut + 1 :] != full[cut + 1 :]


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({k: v for k, v in DEFAULT_REGIME_WEIGHTS.items() if k != "unknown"}, "missing"),
        ({**DEFAULT_REGIME_WEIGHTS, "trending": {"momentum": 1.0}}, "unknown strategies momentum"),
        ({**DEFAULT_REGIME_WEIGHTS, "trending": {"trend_following": -1.0}}, "finite and >= 0"),
        ({**DEFAULT_REGIME_WEIGHTS, "trending": {"trend_following": 0.0}}, "positive weight"),
    ],
)
def test_a_bad_weight_matrix_is_refused(weights: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StrategyManager(regime_weights=weights)


def test_duplicate_names_and_bad_market_data_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        StrategyManager([FundingArbitrageStrategy(), FundingArbitrageStrategy()])
    data = market_data("BTCUSDT", count=10)
    with pytest.raises(ValueError, match=r"close\[3\]"):
        StrategyManager().generate_trading_signals({**data, "close": np.where(np.arange(10) == 3, -1.0, data["close"])})
    with pytest.raises(ValueError, match="column high has 9 rows"):
        StrategyManager().generate_trading_signals({**data, "high": data["high"][:9]})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda d: {"timestamp": d["timestamp"][[0, 1, 2, 4, 3, 5, 6, 7, 8, 9]]},
            r"timestamp\[4\] = .* does not follow",
        ),
        (
            lambda d: {"timestamp": d["timestamp"][[0, 1, 2, 2, 4, 5, 6, 7, 8, 9]]},
            r"timestamp\[3\] = .* does not follow",
        ),
        (lambda d: {"high": d["low"] * 0.999}, r"open\[0\] = .* is outside the bar's low .* and high"),
        (
            lambda d: {"close": np.where(np.arange(10) == 6, d["high"] * 1.01, d["close"])},
            r"close\[6\] = .* is outside",
        ),
    ],
    ids=["out of order", "repeated", "high below low", "close above high"],
)
def test_market_data_out_of_time_order_or_outside_its_range_is_refused_by_index(change: Any, match: str) -> None:
    # Arrange: ten real bars, one thing wrong with them
    data = market_data("BTCUSDT", count=10)

    # Act / Assert: disordered bars would be read as a price path they are not
    with pytest.raises(ValueError, match=match):
        StrategyManager().generate_trading_signals({**data, **change(data)})


@pytest.mark.parametrize(
    "as_dates",
    [
        lambda ns: pd.to_datetime(ns),
        lambda ns: pd.to_datetime(ns).to_numpy(),
        lambda ns: list(pd.to_datetime(ns).to_pydatetime()),
        lambda ns: pd.to_datetime(ns, utc=True).tz_convert("Asia/Seoul"),
    ],
    ids=["pandas", "datetime64", "datetime", "zoned"],
)
def test_times_given_as_dates_are_the_same_instants_as_nanoseconds(as_dates: Any) -> None:
    # Arrange: two days of real bars and their funding; dates raised "int() argument must be ... not 'Timestamp'"
    data = market_data("BTCUSDT", count=2880)
    dated = {**data, "timestamp": as_dates(data["timestamp"]), "funding_time": as_dates(data["funding_time"])}

    # Act
    expected = StrategyManager().generate_trading_signals(data)
    got = StrategyManager().generate_trading_signals(dated)

    # Assert
    assert got == expected


def _fields(bar: BarClosed) -> dict[str, Any]:
    return {f: getattr(bar, f) for f in BarClosed.__struct_fields__ if f != "id"}


def test_a_replaced_strategy_votes_with_its_new_view_and_unknown_names_are_refused() -> None:
    # Arrange
    data = funding_within_bars(market_data("BTCUSDT", start=index_at("BTCUSDT", MAY_5), count=50))
    manager = StrategyManager(
        [_Fixed("a", "BUY", 1.0, 1.0), _Fixed("b", "BUY", 1.0, 1.0)],
        None,
        detector_factory=False,
    )
    manager.generate_trading_signals(truncated(data, 40))

    # Act
    previous = manager.replace_strategy(_Fixed("a", "SELL", 1.0, 1.0))
    (signal,) = manager.generate_trading_signals(data)

    # Assert
    assert previous.name == "a" and [s.name for s in manager.strategies] == ["a", "b"]
    assert signal.action == "HOLD"  # one BUY and one SELL of equal weight cancel
    with pytest.raises(KeyError):
        manager.replace_strategy(_Fixed("c", "BUY", 1.0, 1.0))


def test_the_run_cost_model_reaches_every_strategy_and_any_swapped_in_later() -> None:
    # Arrange
    manager = StrategyManager(
        [_Fixed("a", "BUY", 1.0, 1.0), _Fixed("b", "BUY", 1.0, 1.0)], None, detector_factory=False
    )
    costs = CostModel(bundled_instruments())

    # Act
    manager.use_costs(costs)
    manager.replace_strategy(_Fixed("a", "SELL", 1.0, 1.0))

    # Assert
    assert [s.costs for s in manager.strategies] == [costs, costs]


def test_the_kept_combined_view_is_the_one_recombined_from_scratch_on_every_bar() -> None:
    # Arrange: two real-data crosses, one of them stopped by the operator for a while and held by a gate for
    # another, min_signal moved once
    manager = StrategyManager(
        [MovingAverageCrossStrategy(5, 20, name="fast"), MovingAverageCrossStrategy(20, 60, name="slow")],
        detector_factory=False,
        min_signal=0.0,
    )
    stream = [e for e in events("BTCUSDT", count=900) if isinstance(e, BarClosed)]
    kept, recombined = [], []

    # Act
    for index, bar in enumerate(stream):
        if index == 300:
            manager.set_strategy_enabled("slow", False)
        if index == 500:
            manager.set_strategy_enabled("slow", True)
        if index == 550:
            manager.set_strategy_gate("slow", "failed its backtest")
        if index == 650:
            manager.set_strategy_gate("slow", None)
        if index == 700:
            manager.min_signal = 0.6
        manager.on_bar(bar)
        book = manager._books["BTCUSDT"]
        kept.append(book.combined.as_tuple())
        recombined.append(manager._combine(book).as_tuple())

    # Assert
    assert kept == recombined
    assert len({c[0] for c in kept}) > 2  # the scores


class _CountingManager(StrategyManager):
    """A manager that counts how often it works out a combined view from scratch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.combines = 0

    def _combine(self, book: Any) -> Any:
        self.combines += 1
        return super()._combine(book)


def test_a_bar_that_changes_no_input_of_the_combined_view_reuses_it() -> None:
    # Arrange: a real-data cross, which holds one view for tens of bars between crosses, with a non-zero
    # min_signal (compiled, each read of a float attribute is a new object: compared by identity, it was
    # always new, and the view was recombined on every bar)
    manager = _CountingManager(
        [MovingAverageCrossStrategy(5, 20, name="fast")], detector_factory=False, min_signal=0.05
    )
    stream = [e for e in events("BTCUSDT", count=900) if isinstance(e, BarClosed)]
    views_held = []

    # Act
    for bar in stream:
        manager.on_bar(bar)
        views_held.append(manager._books["BTCUSDT"].views[0])

    # Assert: one combination for the first bar, then one for each bar whose view is a new one
    new_views = sum(1 for before, after in itertools.pairwise(views_held) if after is not before)
    assert 10 < new_views < 200
    assert manager.combines == 1 + new_views
