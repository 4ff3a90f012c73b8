"""Funding arbitrage on the recorded funding rates and mark prices: timing, side, edge, missing data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from strategy_data import (
    MAY_5,
    MINUTE_NS,
    assert_no_lookahead,
    funding_within_bars,
    index_at,
    market_data,
    signals,
    transitions,
)

from keel.core.costs import CostModel, CostSettings
from keel.core.instruments import bundled_instruments
from keel.strategy_engine import FundingArbitrageStrategy, MissingFundingDataError, StrategySignal
from keel.strategy_engine.funding_arbitrage import _FundingState

HOUR_NS = 60 * MINUTE_NS


@pytest.fixture(scope="module")
def sol() -> dict:
    return market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=20 * 1440)


def predicted_rate(data: dict, now: int, half_life: float) -> float:
    """The exponentially weighted mean of every rate settled before ``now``, computed in one pass."""
    decay = 0.5 ** (1.0 / half_life)
    rates = data["funding_rate"][data["funding_time"] < now]
    value = rates[0]
    for rate in rates[1:]:
        value = decay * value + (1 - decay) * rate
    return float(value)


def basis_at_last_settlement(data: dict, now: int) -> float:
    """The last close at or before the latest settlement before ``now``, over its mark, minus 1."""
    settled = np.flatnonzero(data["funding_time"] < now)[-1]
    time, mark = data["funding_time"][settled], data["mark_price"][settled]
    close = data["close"][np.searchsorted(data["timestamp"], time, side="right") - 1]
    return float(close / mark - 1.0)


def test_entries_take_the_receiving_side_shortly_before_a_settlement_when_the_edge_pays(sol: dict) -> None:
    # Arrange
    p = FundingArbitrageStrategy.default_parameters()
    views = signals(FundingArbitrageStrategy(), sol)

    # Act
    entries = [(i, new) for i, old, new in transitions(views) if old == "HOLD"]

    # Assert
    assert len(entries) >= 3
    for i, action in entries:
        now = int(sol["timestamp"][i])
        predicted = predicted_rate(sol, now, p["rate_half_life"])
        direction = -1 if predicted > 0 else 1
        assert action == ("SELL" if direction < 0 else "BUY")
        last_settlement = sol["funding_time"][sol["funding_time"] < now][-1]
        minutes_left = (last_settlement + 8 * HOUR_NS - now) / MINUTE_NS
        assert 0 < minutes_left <= p["entry_window_minutes"]
        basis = basis_at_last_settlement(sol, now)
        edge = abs(predicted) * p["holding_intervals"] + p["basis_weight"] * -direction * basis - 2 * p["fee_rate"]
        assert edge >= p["min_edge"]
        assert views[i].metadata["edge"] == pytest.approx(edge, rel=1e-9)
        assert views[i].metadata["predicted_rate"] == pytest.approx(predicted, rel=1e-12)
        assert views[i].stop_loss == pytest.approx(sol["close"][i] * (1 - direction * p["stop_loss"]))


def test_the_shared_cost_model_prices_the_round_trip_when_the_run_gives_one(sol: dict) -> None:
    # Arrange: a cost model of 5.5 bp taker fee and no spread: an 11 bp round trip instead of 10 bp
    p = FundingArbitrageStrategy.default_parameters()
    costly = FundingArbitrageStrategy()
    costly.use_costs(CostModel(bundled_instruments(), CostSettings(taker_fee=0.00055, slippage_bps=0.0)))

    # Act
    own = signals(FundingArbitrageStrategy(), sol)
    priced = signals(costly, sol)

    # Assert: the edge is net of the model's round trip, and fewer entries pay it
    entries = [i for i, old, _ in transitions(priced) if old == "HOLD"]
    assert 0 < len(entries) < len([i for i, old, _ in transitions(own) if old == "HOLD"])
    for i in entries:
        now = int(sol["timestamp"][i])
        predicted = predicted_rate(sol, now, p["rate_half_life"])
        direction = -1 if predicted > 0 else 1
        basis = basis_at_last_settlement(sol, now)
        edge = abs(predicted) * p["holding_intervals"] + p["basis_weight"] * -direction * basis - 0.0011
        assert priced[i].metadata["edge"] == pytest.approx(edge, rel=1e-9)
        assert priced[i].strength == pytest.approx(min(1.0, edge / 0.0011))


def test_a_negative_funding_rate_makes_it_go_long() -> None:
    # Arrange: BCHUSDT's funding was negative in early May 2025 (shorts paid longs)
    data = market_data("BCHUSDT", start=index_at("BCHUSDT", MAY_5), count=3 * 1440)

    # Act
    actions = {new for _, old, new in transitions(signals(FundingArbitrageStrategy(), data)) if old == "HOLD"}

    # Assert
    assert actions == {"BUY"}


def test_a_missing_settlement_is_an_error_naming_when_it_was_due(sol: dict) -> None:
    # Arrange: drop the 16:00 settlement of 2025-05-07
    due = int(datetime(2025, 5, 7, 16, tzinfo=UTC).timestamp()) * 1_000_000_000
    keep = np.abs(sol["funding_time"] - due) > MINUTE_NS
    gappy = {**sol, **{k: sol[k][keep] for k in ("funding_time", "funding_rate", "mark_price")}}
    strategy = FundingArbitrageStrategy()
    first_late = int(np.searchsorted(sol["timestamp"], due + 30 * MINUTE_NS, side="right"))

    # Act
    views = [strategy.generate_signal(gappy, i) for i in range(first_late)]
    with pytest.raises(MissingFundingDataError, match="due at 2025-05-07T16:00:00Z is missing"):
        strategy.generate_signal(gappy, first_late)

    # Assert
    assert views[-1] is not None


def test_market_data_without_funding_columns_is_an_error() -> None:
    # Arrange
    data = market_data("BTCUSDT", count=10)
    bars_only = {k: v for k, v in data.items() if not k.startswith("funding")}

    # Act / Assert
    with pytest.raises(MissingFundingDataError, match="funding_time and funding_rate"):
        FundingArbitrageStrategy().generate_signal(bars_only, 0)


def test_bars_before_the_first_settlement_wait_for_the_funding_data_and_trade_once_it_starts() -> None:
    # Arrange: the funding data starts 10 h after the bars do (a warm-up before the funding file)
    data = market_data("BTCUSDT", count=2400)
    start = data["timestamp"][0] + 10 * 60 * MINUTE_NS
    late = {
        **data,
        **{k: data[k][data["funding_time"] >= start] for k in ("funding_time", "funding_rate", "mark_price")},
    }
    strategy = FundingArbitrageStrategy()

    # Act
    views = [strategy.generate_signal(late, i) for i in range(len(late["timestamp"]))]

    # Assert
    before = [v for v, ts in zip(views, late["timestamp"], strict=True) if ts <= start]
    assert all(v.action == "HOLD" and v.metadata["settlements"] == 0 for v in before)
    assert views[-1].metadata["settlements"] > 0


def test_a_non_finite_rate_is_counted_and_skipped_and_a_missing_mark_gives_no_basis(sol: dict) -> None:
    # Arrange
    inside = np.flatnonzero(sol["funding_time"] > sol["timestamp"][0])[:2]
    damaged = {**sol, "funding_rate": sol["funding_rate"].copy(), "mark_price": sol["mark_price"].copy()}
    damaged["funding_rate"][inside[0]] = np.nan
    damaged["mark_price"][inside[1]] = np.nan
    after_second = int(np.searchsorted(sol["timestamp"], sol["funding_time"][inside[1]], side="right"))

    # Act
    views = signals(FundingArbitrageStrategy(), damaged, upto=after_second)

    # Assert
    assert views[-1].metadata["malformed_funding_rows"] == 1
    assert views[-1].metadata["basis"] == 0.0


def test_lookahead_funding_arbitrage_up_to_t_ignores_later_bars_and_settlements() -> None:
    data = funding_within_bars(market_data("SOLUSDT", start=index_at("SOLUSDT", MAY_5), count=6 * 1440))
    assert_no_lookahead(FundingArbitrageStrategy, data, cut=4 * 1440)


class EveryStepInFull(FundingArbitrageStrategy):
    """The strategy without its quiet-bar shortcut: every bar runs the whole step (the reference)."""

    def _quiet_before(self, state: _FundingState, signal: StrategySignal | None) -> int:
        return 0


class CountingFullSteps(FundingArbitrageStrategy):
    """The strategy as shipped, counting the bars that ran the whole step and the stops they hit."""

    def __init__(self, **parameters: Any) -> None:
        super().__init__(**parameters)
        self.full_steps = 0
        self.stops = 0

    def _full_step(self, state: _FundingState, *args: Any) -> StrategySignal | None:
        stopped_out = state.stopped_out
        self.full_steps += 1
        signal = super()._full_step(state, *args)
        self.stops += state.stopped_out and not stopped_out
        return signal


@pytest.mark.parametrize("stop_loss", [0.03, 0.003])
@pytest.mark.parametrize("symbol", ["SOLUSDT", "BCHUSDT", "AVAXUSDT"])
def test_quiet_bars_give_the_signals_every_full_step_gives(symbol: str, stop_loss: float) -> None:
    # Arrange: ten real days of entries, exits and settlements (and stops, with the tight one)
    data = market_data(symbol, start=index_at(symbol, MAY_5), count=10 * 1440)
    reference, shipped = EveryStepInFull(stop_loss=stop_loss), CountingFullSteps(stop_loss=stop_loss)

    # Act
    expected = signals(reference, data)
    got = signals(shipped, data)

    # Assert
    assert got == expected
    assert len(transitions(got)) >= 2
    assert shipped.full_steps < len(got) / 3  # most bars took the shortcut
    assert shipped.stops > 0 or stop_loss > 0.01


def test_a_missing_settlement_raises_on_the_same_bar_after_quiet_bars(sol: dict) -> None:
    # Arrange: drop the 16:00 settlement of 2025-05-07
    due = int(datetime(2025, 5, 7, 16, tzinfo=UTC).timestamp()) * 1_000_000_000
    keep = np.abs(sol["funding_time"] - due) > MINUTE_NS
    gappy = {**sol, **{k: sol[k][keep] for k in ("funding_time", "funding_rate", "mark_price")}}
    failures = []

    # Act
    for strategy in (EveryStepInFull(), CountingFullSteps()):
        for i in range(len(gappy["close"])):
            try:
                strategy.generate_signal(gappy, i)
            except MissingFundingDataError:
                failures.append(i)
                break

    # Assert
    assert len(failures) == 2 and failures[0] == failures[1]
