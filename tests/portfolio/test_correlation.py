"""CorrelationAnalyzer on real returns: correlations, risk decomposition, diversification, jumps."""

from __future__ import annotations

import msgspec
import numpy as np
import pandas as pd
import pytest

from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.messages import AllocationProposed, BarClosed, CorrelationJumped
from keel.portfolio import CorrelationAnalyzer

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


def test_correlation_matrix_matches_pandas_as_the_user_calls_it(may_hourly: pd.DataFrame) -> None:
    # Arrange
    correlation_analyzer = CorrelationAnalyzer().fit(may_hourly)

    # Act
    correlation_matrix = correlation_analyzer.calculate_correlation_matrix()
    recent = correlation_analyzer.calculate_correlation_matrix(window=200)

    # Assert
    pd.testing.assert_frame_equal(correlation_matrix, may_hourly.corr())
    pd.testing.assert_frame_equal(recent, may_hourly.tail(200).corr())


def test_component_contributions_sum_to_the_portfolio_volatility(may_hourly: pd.DataFrame) -> None:
    # Arrange
    analyzer = CorrelationAnalyzer().fit(may_hourly)
    weights = {"BTCUSDT": 0.4, "ETHUSDT": 0.3, "SOLUSDT": -0.2, "BNBUSDT": 0.5}

    # Act
    risk_decomposition = analyzer.decompose_portfolio_risk(weights)

    # Assert
    vector = np.array([weights.get(c, 0.0) for c in may_hourly.columns])
    volatility = float(np.sqrt(vector @ may_hourly.cov().to_numpy() @ vector))
    assert risk_decomposition.volatility == pytest.approx(volatility)
    assert sum(risk_decomposition.component.values()) == pytest.approx(volatility)
    assert sum(risk_decomposition.share.values()) == pytest.approx(1.0)
    assert risk_decomposition.component["XRPUSDT"] == 0.0
    sigma = may_hourly.std().to_numpy()
    assert risk_decomposition.diversification_ratio == pytest.approx(np.abs(vector) @ sigma / volatility)
    assert risk_decomposition.diversification_ratio > 1.0


def test_weights_naming_unknown_assets_are_refused(may_hourly: pd.DataFrame) -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="DOGEUSDT"):
        CorrelationAnalyzer().fit(may_hourly).decompose_portfolio_risk({"DOGEUSDT": 1.0})


def test_prices_are_refused_for_returns(may_hourly: pd.DataFrame) -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="returns look like prices"):
        CorrelationAnalyzer().fit(100_000.0 * (1.0 + may_hourly).cumprod())


@pytest.mark.parametrize("weight", [float("nan"), float("inf")])
def test_a_weight_that_is_not_a_finite_number_is_refused_by_name(may_hourly: pd.DataFrame, weight: float) -> None:
    # Arrange: a NaN weight gave a portfolio of no risk at all
    analyzer = CorrelationAnalyzer().fit(may_hourly)

    # Act / Assert
    with pytest.raises(ValueError, match=f"the weight of BTCUSDT must be a finite number, got {weight}"):
        analyzer.decompose_portfolio_risk({"BTCUSDT": weight, "ETHUSDT": 0.5})


def run_analyzer(bars: tuple[BarClosed, ...]) -> tuple[CorrelationAnalyzer, list[CorrelationJumped]]:
    bus = EventBus()
    clock = SimulatedClock(0)
    analyzer = CorrelationAnalyzer(
        SYMBOLS, window=300, short_window=30, jump_threshold=0.45, check_interval=10, bus=bus, clock=clock
    )
    jumps: list[CorrelationJumped] = []
    bus.subscribe(CorrelationJumped, jumps.append)
    analyzer.start()
    for bar in bars:
        clock.advance_to(max(clock.timestamp_ns(), bar.ts_event))
        bus.publish(bar)
        bus.drain()
    return analyzer, jumps


def test_correlation_jumps_are_published_from_real_bars(make_bars) -> None:
    # Arrange
    bars = make_bars(SYMBOLS, 600)

    # Act
    analyzer, jumps = run_analyzer(bars)
    analyzer.bus.publish(
        AllocationProposed(weights={"BTCUSDT": 0.5, "ETHUSDT": 0.5}, reason="t", ts_event=1, ts_init=1)
    )
    analyzer.bus.drain()

    # Assert
    assert jumps, "a 30-minute correlation should leave the 300-minute one by 0.45 somewhere in 10 hours"
    assert all(abs(j.current - j.previous) > 0.45 for j in jumps)
    assert analyzer.alerts == jumps
    assert analyzer.decompose_portfolio_risk().component["SOLUSDT"] == 0.0


def test_lookahead_alerts_up_to_t_ignore_later_bars(make_bars) -> None:
    # Arrange
    bars = make_bars(SYMBOLS, 600)
    cut = 1600
    t = bars[cut].ts_event
    perturbed = bars[: cut + 1] + tuple(
        msgspec.structs.replace(b, close=b.close * (1.03 if i % 3 else 0.97)) for i, b in enumerate(bars[cut + 1 :])
    )

    # Act
    whole, full = run_analyzer(bars)
    _, stopped = run_analyzer(bars[: cut + 1])
    other, changed = run_analyzer(perturbed)

    # Assert (message ids differ between runs; the content may not)
    def content(jumps: list[CorrelationJumped], until: int | None = None) -> list[tuple]:
        return [
            (j.ts_event, j.first, j.second, j.previous, j.current)
            for j in jumps
            if until is None or j.ts_event <= until
        ]

    assert content(full, t) == content(stopped) == content(changed, t)
    assert not whole.calculate_correlation_matrix().equals(other.calculate_correlation_matrix())


def test_an_analyzer_with_no_returns_says_how_to_give_it_some() -> None:
    # Arrange
    analyzer = CorrelationAnalyzer()

    # Act / Assert
    with pytest.raises(ValueError, match=r"fit\(returns\)"):
        analyzer.calculate_correlation_matrix()
    with pytest.raises(ValueError, match=r"fit\(returns\)"):
        analyzer.decompose_portfolio_risk()


def test_a_decomposition_before_any_allocation_is_refused_saying_what_to_do(may_hourly: pd.DataFrame) -> None:
    # Arrange: returns but no allocation yet; it answered a volatility of 0 on every asset
    analyzer = CorrelationAnalyzer().fit(may_hourly)

    # Act / Assert
    with pytest.raises(ValueError, match=r"no allocation yet.*rebalance.*or pass the weights"):
        analyzer.decompose_portfolio_risk()


def test_a_decomposition_after_an_allocation_on_the_bus_uses_its_weights(may_hourly: pd.DataFrame) -> None:
    # Arrange
    bus = EventBus()
    analyzer = CorrelationAnalyzer(bus=bus).fit(may_hourly)
    analyzer.start()
    weights = {"BTCUSDT": 0.6, "ETHUSDT": 0.4}

    # Act
    bus.publish(AllocationProposed(weights=weights, reason="rebalance", ts_event=1, ts_init=1))
    bus.drain()

    # Assert
    assert analyzer.decompose_portfolio_risk() == analyzer.decompose_portfolio_risk(weights)
    assert analyzer.decompose_portfolio_risk().volatility > 0


def test_a_returns_frame_passed_to_the_uc_calls_is_refused_with_the_call_to_make(may_hourly: pd.DataFrame) -> None:
    # Arrange
    analyzer = CorrelationAnalyzer()

    # Act / Assert
    with pytest.raises(TypeError, match=r"fit\(returns\)"):
        analyzer.calculate_correlation_matrix(may_hourly)
    with pytest.raises(TypeError, match=r"fit\(returns\)"):
        analyzer.decompose_portfolio_risk(may_hourly)


@pytest.mark.parametrize("window", [0, -5, 2.5, True])
def test_a_window_that_is_not_a_positive_whole_number_is_refused(may_hourly: pd.DataFrame, window: object) -> None:
    # Arrange
    analyzer = CorrelationAnalyzer().fit(may_hourly)

    # Act / Assert
    with pytest.raises((TypeError, ValueError), match="window"):
        analyzer.calculate_correlation_matrix(window)  # type: ignore[arg-type]


def test_fit_refuses_what_is_not_a_frame_of_numeric_returns(may_hourly: pd.DataFrame) -> None:
    # Arrange
    analyzer = CorrelationAnalyzer()

    # Act / Assert
    with pytest.raises(TypeError, match="DataFrame"):
        analyzer.fit(may_hourly.to_numpy())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="note"):
        analyzer.fit(may_hourly.assign(note="rebalanced"))
