"""PortfolioOptimizer: the user's calls, the estimator contract, fallback, and the component on a bus of real bars."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_SECOND, SimulatedClock
from keel.core.fsm import TradingState
from keel.core.messages import (
    AllocationProposed,
    BarClosed,
    ExecutionCompleted,
    Rebalance,
    RiskLimitsUpdated,
    SignalAction,
    SignalGenerated,
    TradingStateChanged,
)
from keel.core.orders import OrderSide
from keel.portfolio import PortfolioOptimizer
from keel.portfolio.optimizer import _closes_on_one_grid, _CloseWindow, _common_times

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def test_optimize_weights_as_the_user_calls_it(may_hourly: pd.DataFrame) -> None:
    # Arrange
    optimizer = PortfolioOptimizer()

    # Act
    result = asyncio.run(
        optimizer.optimize_weights(
            returns_data=may_hourly, constraints={"min_weight": 0.05, "max_weight": 0.6}, objective="max_sharpe"
        )
    )

    # Assert
    assert set(result.weights) == set(may_hourly.columns)
    assert sum(result.weights.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(0.05 - 1e-9 <= w <= 0.6 + 1e-9 for w in result.weights.values())
    assert result.status == "optimal" and result.fallback_reason == ""
    assert result.sharpe_ratio > 0 and result.volatility > 0


@pytest.mark.parametrize(
    ("constraints", "key"),
    [
        ({"min_weight": "0.05"}, "min_weight"),
        ({"max_weight": "0.6"}, "max_weight"),
        ({"long_short": "no"}, "long_short"),
        ({"max_weight": True}, "max_weight"),
        ({"net_exposure_bounds": (0.0, "1")}, "net_exposure_bounds"),
    ],
)
def test_optimize_weights_refuses_a_constraint_of_the_wrong_type_naming_it(
    may_hourly: pd.DataFrame, constraints: dict[str, object], key: str
) -> None:
    # Arrange
    optimizer = PortfolioOptimizer()

    # Act / Assert
    with pytest.raises(ValueError, match=f"constraint {key}"):
        asyncio.run(optimizer.optimize_weights(returns_data=may_hourly, constraints=constraints))


def test_optimize_weights_names_a_column_that_holds_no_numbers(may_hourly: pd.DataFrame) -> None:
    # Arrange: a notes column left in the frame of returns
    returns_data = may_hourly.assign(note="rebalanced")

    # Act / Assert
    with pytest.raises(ValueError, match="note"):
        asyncio.run(PortfolioOptimizer().optimize_weights(returns_data=returns_data))


@pytest.mark.parametrize(
    ("constraints", "objective", "conflict"),
    [
        ({"min_weight": 0.2}, "max_sharpe", r"min_weight 0\.2 x 10 assets = 2 is above the net exposure 1 .*"
         r"lower min_weight to at most 0\.1"),
        ({"max_weight": 0.05}, "min_volatility", r"max_weight 0\.05 x 10 assets = 0\.5 is below the net exposure 1 .*"
         r"raise max_weight to at least 0\.1"),
        ({"min_weight": 0.5, "max_weight": 0.4}, "max_sharpe", r"min_weight 0\.5 is above max_weight 0\.4.*"
         r"lower min_weight or raise max_weight"),
        ({"gross_leverage": 0.5}, "min_volatility", r"gross leverage of at least 1, above gross_leverage 0\.5.*"
         r"raise gross_leverage to at least 1"),
        ({"long_short": True, "max_weight": 0.1, "net_exposure": None, "net_exposure_bounds": (2.0, 3.0)},
         "mean_variance", r"max_weight 0\.1 x 10 assets = 1 is below the lowest net exposure 2 .*raise max_weight"),
    ],
    ids=["floors above fully invested", "caps below fully invested", "floor above cap", "gross below net",
         "caps below the net bounds"],
)  # fmt: skip
def test_optimize_weights_with_constraints_nothing_meets_refuses_them_naming_what_to_relax(
    may_hourly: pd.DataFrame, constraints: dict[str, object], objective: str, conflict: str
) -> None:
    # Arrange: all-zero "fallback" weights were returned for these, as if they were an answer
    optimizer = PortfolioOptimizer()

    # Act / Assert
    with pytest.raises(ValueError, match=conflict):
        asyncio.run(optimizer.optimize_weights(returns_data=may_hourly, constraints=constraints, objective=objective))
    assert optimizer.fallbacks == 0 and optimizer.solves == 0


def test_optimize_weights_refuses_what_the_solver_finds_infeasible_and_keeps_its_weights(
    may_hourly: pd.DataFrame, march_hourly: pd.DataFrame
) -> None:
    # Arrange: bounds that can hold, but in March 2025 no long-only mix with 5% floors earns anything
    columns = list(march_hourly.columns.intersection(may_hourly.columns))
    optimizer = PortfolioOptimizer(constraints={"min_weight": 0.05, "max_weight": 0.6})
    before = asyncio.run(optimizer.optimize_weights(returns_data=may_hourly[columns], objective="max_sharpe"))

    # Act / Assert
    with pytest.raises(ValueError, match=r"no weights within the bounds have a positive expected return.*relax"):
        asyncio.run(optimizer.optimize_weights(returns_data=march_hourly[columns], objective="max_sharpe"))
    assert optimizer.result() == before
    assert optimizer.fallbacks == 0


def test_fit_with_constraints_nothing_meets_holds_its_weights_and_says_why(may_hourly: pd.DataFrame) -> None:
    # Arrange: the pipeline's path; ten floors of 20% cannot sum to a fully invested 100%
    optimizer = PortfolioOptimizer(constraints={"min_weight": 0.2})

    # Act
    optimizer.fit(may_hourly, objective="max_sharpe")

    # Assert: nothing held yet, so no weights
    assert optimizer.status_ == "fallback" and optimizer.method_ == "held"
    assert "lower bounds (min_weight) sum to 2, above the net exposure 1" in optimizer.fallback_reason_
    assert set(optimizer.weights_.tolist()) == {0.0}


def test_prices_duplicate_assets_and_bad_expected_returns_are_refused_by_what_is_wrong(
    may_hourly: pd.DataFrame,
) -> None:
    # Arrange: the same real returns, and the prices they came from
    prices = 100_000.0 * (1.0 + may_hourly).cumprod()
    optimizer = PortfolioOptimizer()

    # Act / Assert: prices gave "optimal" weights, a repeated column a weight that was overwritten
    with pytest.raises(ValueError, match=r"returns look like prices .*prices\.pct_change\(\)\.dropna\(\)"):
        optimizer.fit(prices)
    with pytest.raises(ValueError, match="returns name an asset twice: BTCUSDT"):
        optimizer.fit(pd.concat([may_hourly, may_hourly[["BTCUSDT"]]], axis=1))
    with pytest.raises(ValueError, match=r"expected_returns must be finite numbers, got \[nan"):
        optimizer.fit(may_hourly, expected_returns=[np.nan] * 10)
    with pytest.raises(ValueError, match=r"expected_returns must be 10 numbers, one per asset, got shape \(1,\)"):
        optimizer.fit(may_hourly, expected_returns=[0.1])


def test_fit_returns_self_with_learned_attributes(may_hourly: pd.DataFrame) -> None:
    # Arrange
    optimizer = PortfolioOptimizer(objective="min_volatility", covariance="sample")

    # Act
    fitted = optimizer.fit(may_hourly)

    # Assert
    assert fitted is optimizer
    assert optimizer.assets_ == list(may_hourly.columns)
    assert optimizer.weights_.shape == (10,)
    np.testing.assert_allclose(optimizer.covariance_, may_hourly.cov().to_numpy())
    np.testing.assert_allclose(optimizer.expected_returns_, may_hourly.mean().to_numpy())


@pytest.mark.parametrize("covariance", ["sample", "ledoit_wolf", "ewma"])
def test_every_covariance_estimator_gives_a_valid_portfolio(may_hourly: pd.DataFrame, covariance: str) -> None:
    # Act
    weights = PortfolioOptimizer(covariance=covariance, constraints={"max_weight": 0.4}).fit(may_hourly).weights_

    # Assert
    assert weights.sum() == pytest.approx(1.0, abs=1e-8)
    assert weights.min() >= -1e-9 and weights.max() <= 0.4 + 1e-9


def test_solver_failure_keeps_the_previous_weights_and_says_why(
    may_hourly: pd.DataFrame, march_hourly: pd.DataFrame
) -> None:
    # Arrange: the same 9 columns, first in May (feasible), then in March (no long-only portfolio earns)
    columns = list(march_hourly.columns.intersection(may_hourly.columns))
    optimizer = PortfolioOptimizer(constraints={"min_weight": 0.05, "max_weight": 0.6}, covariance="sample")
    previous = optimizer.fit(may_hourly[columns]).weights_.copy()

    # Act
    optimizer.fit(march_hourly[columns])

    # Assert
    assert optimizer.status_ == "fallback"
    assert "nfeasible" in optimizer.fallback_reason_
    np.testing.assert_array_equal(optimizer.weights_, previous)
    assert optimizer.fallbacks == 1
    assert optimizer.method_ == "held"


def test_a_solver_failure_falls_back_along_the_chain_and_says_which_step_gave_the_weights(
    may_hourly: pd.DataFrame,
) -> None:
    # Arrange: both solvers starved of iterations on the optimizer's compiled problem
    optimizer = PortfolioOptimizer(constraints={"max_weight": 0.3, "transaction_cost": 0.0006}, covariance="sample")
    optimizer.fit(may_hourly)
    for problem in optimizer._problems.values():
        problem.max_iterations = problem.alternative_max_iterations = 2
        if problem._direct is not None:
            problem._direct._settings.max_iter = 2
            problem._direct._solver = None

    # Act
    optimizer.fit(may_hourly)

    # Assert
    assert optimizer.status_ == "fallback" and optimizer.method_ == "minimum_variance"
    assert optimizer.fallback_reason_.endswith("shrunk minimum-variance weights")
    assert optimizer.weights_.sum() == pytest.approx(1.0, abs=1e-9)
    assert optimizer.weights_.max() <= 0.3 + 1e-12


def test_returns_with_nan_are_refused_with_a_clear_error(may_hourly: pd.DataFrame) -> None:
    # Arrange
    broken = may_hourly.copy()
    broken.iloc[5, 2] = np.nan

    # Act / Assert: the asset and the first bad row are named
    with pytest.raises(ValueError, match=rf"NaN or infinite values \({broken.columns[2]}: 1 from row 5\)"):
        PortfolioOptimizer().fit(broken)
    with pytest.raises(ValueError, match="unknown objective"):
        PortfolioOptimizer(objective="max_return")


# --- the component ----------------------------------------------------------------------------


class Desk:
    """A started optimizer on a bus with real bars; proposals collected."""

    def __init__(self, **parameters: object) -> None:
        self.bus = EventBus()
        self.clock = SimulatedClock(0)
        settings = {
            "objective": "mean_variance",
            "constraints": {"long_short": True, "max_weight": 0.5, "net_exposure": None, "gross_leverage": 1.0},
            "risk_aversion": 50.0,
            "symbols": SYMBOLS,
            "min_history": 30,
            "lookback": 240,
            **parameters,
        }
        self.optimizer = PortfolioOptimizer(bus=self.bus, clock=self.clock, **settings)  # type: ignore[arg-type]
        self.proposals: list[AllocationProposed] = []
        self.bus.subscribe(AllocationProposed, self.proposals.append)
        self.optimizer.start()
        self.bus.drain()

    def feed(self, bars: tuple[BarClosed, ...]) -> None:
        for bar in bars:
            self.clock.advance_to(max(self.clock.timestamp_ns(), bar.ts_event))
            self.bus.publish(bar)
            self.bus.drain()

    def signal(self, symbol: str, action: SignalAction, strategy: str = "trend") -> None:
        now = self.clock.timestamp_ns()
        self.bus.publish(
            SignalGenerated(
                strategy=strategy, symbol=symbol, action=action, strength=1.0, confidence=0.8, ts_event=now, ts_init=now
            )
        )
        self.bus.drain()


def test_a_view_changing_direction_proposes_optimized_weights(make_bars) -> None:
    # Arrange
    desk = Desk()
    desk.feed(make_bars(SYMBOLS, 120))

    # Act
    desk.signal("ETHUSDT", SignalAction.BUY)
    desk.signal("ETHUSDT", SignalAction.BUY)
    desk.signal("SOLUSDT", SignalAction.SELL)

    # Assert
    assert len(desk.proposals) == 2
    first, second = (p.weights for p in desk.proposals)
    assert set(first) == set(SYMBOLS)
    assert first["ETHUSDT"] > 0
    assert second["SOLUSDT"] < first["SOLUSDT"]
    assert sum(abs(w) for w in second.values()) <= 1.0 + 1e-7


def test_a_warmed_up_optimizer_proposes_what_one_fed_the_same_bars_live_proposes(make_bars) -> None:
    # Arrange
    bars = make_bars(SYMBOLS, 120)
    live, warmed = Desk(), Desk()
    live.feed(bars)

    # Act
    count = warmed.optimizer.warm_up(bars)
    warmed.clock.advance_to(live.clock.timestamp_ns())
    for desk in (live, warmed):
        desk.signal("ETHUSDT", SignalAction.BUY)

    # Assert
    assert count == len(bars)
    assert [p.weights for p in warmed.proposals] == [p.weights for p in live.proposals] != []


def test_warm_up_compiles_the_problem_without_solving_for_weights(make_bars) -> None:
    # Arrange
    desk = Desk()

    # Act
    desk.optimizer.warm_up(make_bars(SYMBOLS, 120))

    # Assert: the compile (the costly first solve) is done, no weights were kept or proposed
    assert desk.optimizer.compiled_sizes == (len(SYMBOLS),)
    assert desk.optimizer.solves == 0
    assert not hasattr(desk.optimizer, "weights_")
    assert desk.proposals == []


def test_the_problem_is_compiled_once_history_is_enough_and_then_only_re_solved(make_bars) -> None:
    # Arrange
    desk = Desk()
    desk.feed(make_bars(SYMBOLS, 20))
    before = desk.optimizer.compiled_sizes

    # Act
    desk.feed(make_bars(SYMBOLS, 100, start=20))
    desk.signal("ETHUSDT", SignalAction.BUY)
    desk.signal("ETHUSDT", SignalAction.SELL)

    # Assert
    assert before == ()
    assert desk.optimizer.compiled_sizes == (len(SYMBOLS),)
    assert desk.optimizer.solves == 2


def test_risk_caps_and_leverage_limit_bound_the_proposal(make_bars) -> None:
    # Arrange
    desk = Desk()
    desk.feed(make_bars(SYMBOLS, 120))
    now = desk.clock.timestamp_ns()
    desk.bus.publish(
        RiskLimitsUpdated(
            limits={"max_leverage": 0.6},
            position_weight_caps={"ETHUSDT": 0.1},
            equity=10_000.0,
            reason="test",
            ts_event=now,
            ts_init=now,
        )
    )
    desk.bus.drain()

    # Act
    desk.signal("ETHUSDT", SignalAction.BUY)

    # Assert
    weights = desk.proposals[-1].weights
    assert abs(weights["ETHUSDT"]) <= 0.1 + 1e-8
    assert sum(abs(w) for w in weights.values()) <= 0.6 + 1e-7


def test_rebalance_reduce_and_the_reducing_state_as_the_user_calls_them(make_bars) -> None:
    # Arrange
    desk = Desk()
    desk.feed(make_bars(SYMBOLS, 120))
    desk.signal("BTCUSDT", SignalAction.BUY)

    # Act
    result = asyncio.run(desk.optimizer.rebalance_portfolio())
    targets = desk.optimizer.weights()
    reduced = asyncio.run(desk.optimizer.reduce_risk_exposure())
    now = desk.clock.timestamp_ns()
    desk.bus.publish(
        TradingStateChanged(
            previous=TradingState.ACTIVE, state=TradingState.REDUCING, reason="VaR", ts_event=now, ts_init=now
        )
    )
    desk.bus.drain()

    # Assert
    assert result is not None and result.status == "optimal"
    assert reduced == {s: w * 0.5 for s, w in targets.items()}
    assert desk.proposals[-1].weights == {s: w * 0.25 for s, w in targets.items()}
    assert desk.proposals[-1].reason.startswith("reduce risk")


def test_the_pipelines_rebalance_with_constraints_nothing_meets_still_proposes_and_never_fails(make_bars) -> None:
    # Arrange: three floors of 50% cannot sum to a fully invested 100%; optimize_weights refuses these
    desk = Desk(objective="min_volatility", constraints={"min_weight": 0.5})
    desk.feed(make_bars(SYMBOLS, 120))

    # Act
    result = asyncio.run(desk.optimizer.rebalance_portfolio())
    desk.bus.drain()

    # Assert: nothing held yet, so no weights, and the reason says why
    assert result is not None and result.status == "fallback"
    assert "lower bounds (min_weight) sum to 1.5, above the net exposure 1" in result.fallback_reason
    assert desk.proposals[-1].weights == dict.fromkeys(SYMBOLS, 0.0)


def test_scheduled_rebalance_proposes_on_the_timer(make_bars) -> None:
    # Arrange
    desk = Desk(rebalance_interval_ns=30 * 60_000_000_000)

    # Act
    desk.feed(make_bars(SYMBOLS, 125))

    # Assert: the timers at minutes 30, 60, 90, 120 fire; the first one before 30 bars of history is empty
    scheduled = [p for p in desk.proposals if "scheduled" in p.reason]
    assert len(scheduled) >= 3


def test_rebalance_command_is_handled(make_bars) -> None:
    # Arrange
    desk = Desk()
    desk.feed(make_bars(SYMBOLS, 60))
    now = desk.clock.timestamp_ns()

    # Act
    desk.bus.publish(Rebalance(reason="operator", ts_event=now, ts_init=now))
    desk.bus.drain()

    # Assert
    assert desk.proposals[-1].reason == "rebalance (operator)"


def run_allocations(bars: tuple[BarClosed, ...], signal_at: list[int]) -> list[tuple[int, dict[str, float]]]:
    desk = Desk(risk_aversion=20_000.0)  # weights inside their bounds, so every input moves them
    actions = [SignalAction.BUY, SignalAction.SELL]
    for index, bar in enumerate(bars):
        desk.feed((bar,))
        if index in signal_at:
            desk.signal(bar.symbol, actions[index % 2])
    return [(p.ts_event, p.weights) for p in desk.proposals]


def test_lookahead_allocations_up_to_t_ignore_later_bars(make_bars) -> None:
    # Arrange: signals at fixed bars; the second run stops at t, the third has every later close doubled
    bars = make_bars(SYMBOLS, 200)
    signal_at = [150, 301, 452, 591]
    cut = 460
    t = bars[cut].ts_event
    perturbed = bars[: cut + 1] + tuple(
        msgspec.structs.replace(b, close=b.close * (1.05 if i % 2 else 0.95)) for i, b in enumerate(bars[cut + 1 :])
    )

    # Act
    full = run_allocations(bars, signal_at)
    stopped = run_allocations(bars[: cut + 1], signal_at)
    changed = run_allocations(perturbed, signal_at)

    # Assert
    upto = [(ts, w) for ts, w in full if ts <= t]
    assert len(upto) == 3
    assert upto == stopped
    assert upto == [(ts, w) for ts, w in changed if ts <= t]
    assert full != changed, "later data should change later allocations"


def execution_report(symbol: str, shortfall_bps: float) -> ExecutionCompleted:
    return ExecutionCompleted(
        parent_order_id="parent-1",
        symbol=symbol,
        side=OrderSide.BUY,
        strategy="portfolio",
        style="AGGRESSIVE",
        quantity=Decimal("1"),
        filled_quantity=Decimal("1"),
        arrival_price=Decimal("100"),
        average_price=Decimal("100.5"),
        final_price=Decimal("100.5"),
        interval_vwap=None,
        fees=Decimal("0.05"),
        implementation_shortfall=Decimal("0.55"),
        implementation_shortfall_bps=shortfall_bps,
        spread_paid_bps=1.0,
        estimated_impact_bps=None,
        realized_impact_bps=4.0,
        child_orders=1,
        reason="filled",
        ts_event=1,
        ts_init=1,
    )


def test_measured_execution_costs_feed_back_into_the_cost_assumption(may_hourly: pd.DataFrame) -> None:
    # Arrange: the same optimizer twice; one learns that BCHUSDT costs 20x the assumed 5 bps
    constraints = {"transaction_cost": 0.0005, "max_weight": 0.6}
    assumed = PortfolioOptimizer(objective="mean_variance", constraints=constraints, cost_assumption=0.0005)
    informed = PortfolioOptimizer(objective="mean_variance", constraints=constraints, cost_assumption=0.0005)
    informed.on_execution(execution_report("BCHUSDT", 100.0))
    informed.on_execution(execution_report("BCHUSDT", 100.0))

    # Act
    plain = assumed.fit(may_hourly).weights_
    costly = informed.fit(may_hourly).weights_

    # Assert: the measured cost moves the allocation out of BCHUSDT
    bch = list(may_hourly.columns).index("BCHUSDT")
    assert informed.measured_costs_ == {"BCHUSDT": pytest.approx(0.01)}
    assert plain[bch] == pytest.approx(0.4, abs=1e-4)
    assert costly[bch] == pytest.approx(0.0, abs=1e-4)


@given(st.sets(st.integers(0, 400), min_size=1), st.sets(st.integers(0, 400), min_size=1))
def test_common_bar_times_by_binary_search_equal_numpys_intersection(first: set[int], second: set[int]) -> None:
    # Arrange: two symbols' strictly rising bar times
    times, other = np.array(sorted(first), dtype=np.int64), np.array(sorted(second), dtype=np.int64)

    # Act
    common = _common_times(times, other)

    # Assert
    np.testing.assert_array_equal(common, np.intersect1d(times, other, assume_unique=True))


@given(
    st.lists(
        st.sets(st.integers(min_value=0, max_value=60), min_size=0, max_size=61),
        min_size=2,
        max_size=4,
    ),
    st.sampled_from(["all", "some", "none"]),
)
def test_the_panel_holds_the_closes_at_the_common_completed_bar_times(per_symbol: list[set[int]], sharing: str) -> None:
    # Arrange: every symbol on the same bar times (the usual case), some of them (the others with gaps), or none
    symbols = tuple(f"S{i}USDT" for i in range(len(per_symbol)))
    if sharing == "all":
        per_symbol = [per_symbol[0]] * len(per_symbol)
    elif sharing == "some":
        per_symbol = [per_symbol[0], per_symbol[0], *per_symbol[2:]]
    optimizer = PortfolioOptimizer(symbols=symbols, min_history=2, lookback=100)
    bars = sorted((ts, i) for i, times in enumerate(per_symbol) for ts in times)
    for ts, i in bars:
        optimizer.on_bar(bar_of_close(symbols[i], ts, 100.0 + 10 * i + ts / 100))

    # Act
    assets, closes = optimizer._panel()

    # Assert: the times all ready symbols share, the latest bar time left out
    ready = [s for s, times in zip(symbols, per_symbol, strict=True) if len(times) > 2]
    common = sorted(set.intersection(*(per_symbol[symbols.index(s)] for s in ready)) - {bars[-1][0]}) if ready else []
    if not ready or len(common) < 2:
        assert (assets, closes.size) == ([], 0)
        return
    expected = np.array([[100.0 + 10 * symbols.index(s) + ts / 100 for s in ready] for ts in common])
    assert assets == ready
    np.testing.assert_array_equal(closes, expected)


@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 40)), min_size=2, max_size=4),
    st.sampled_from([None, "gap", "off the grid"]),
)
def test_the_panel_of_gapless_runs_equals_the_searched_one(runs: list[tuple[int, int]], defect: str | None) -> None:
    # Arrange: each symbol's bars a gapless run of minutes (different starts and ends), or one with a defect
    symbols = tuple(f"S{i}USDT" for i in range(len(runs)))
    per_symbol = [list(range(start, start + length)) for start, length in runs]
    if defect == "gap" and len(per_symbol[-1]) > 2:
        del per_symbol[-1][1]
    optimizer = PortfolioOptimizer(symbols=symbols, min_history=2, lookback=100)
    bars = sorted((ts, i) for i, times in enumerate(per_symbol) for ts in times)
    for ts, i in bars:
        bar = bar_of_close(symbols[i], ts, 100.0 + 10 * i + ts / 100)
        if defect == "off the grid" and i == 0:
            bar = msgspec.structs.replace(bar, ts_event=bar.ts_event + NANOS_PER_SECOND)
        optimizer.on_bar(bar)
    ready = [s for s in symbols if len(optimizer._closes[s]) > 2]
    windows = [optimizer._closes[s] for s in ready]
    defective = (defect == "gap" and symbols[-1] in ready and len(per_symbol[-1]) < runs[-1][1]) or (
        defect == "off the grid" and symbols[0] in ready and len(ready) > 1
    )

    # Act
    sliced = _closes_on_one_grid(windows, optimizer._bar_ts) if windows else None

    # Assert: gapless runs on one grid are sliced, to the bit what the binary search finds; any defect is searched
    if not windows or defective:
        assert sliced is None
        return
    searched = optimizer._closes_by_search(windows)
    assert sliced is not None
    assert sliced.shape == searched.shape
    assert sliced.tobytes() == searched.tobytes()


@given(st.lists(st.sampled_from([60, 60, 60, 120, 30]), max_size=40), st.integers(2, 12))
def test_a_close_window_knows_when_its_bar_times_step_evenly(steps: list[int], size: int) -> None:
    # Arrange: bar times 60 s apart with some other steps among them, kept in a window of ``size``
    window = _CloseWindow(size)
    times = np.cumsum([0, *steps])

    for ts in times.tolist():
        # Act
        window.append(ts, 1.0)

        # Assert: after every bar, the step the window reports is its times' one step, if they have one
        differences = set(np.diff(window.times()).tolist())
        expected = differences.pop() if len(differences) == 1 else None
        assert window.step() == expected
        assert (window.first_time(), window.last_time()) == (window.times()[0], window.times()[-1])


def bar_of_close(symbol: str, minute: int, close: float) -> BarClosed:
    """A 1m bar of ``symbol`` closing at ``close`` in minute ``minute``."""
    open_time = minute * 60 * NANOS_PER_SECOND
    end = open_time + 60 * NANOS_PER_SECOND
    return BarClosed(
        symbol=symbol,
        interval="1m",
        open_time=open_time,
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
        ts_event=end,
        ts_init=end,
    )


# --- decision cadence and signal persistence ----------------------------------------------


def by_time(bars: tuple[BarClosed, ...]) -> list[tuple[BarClosed, ...]]:
    """Group bars by bar time, in time order."""
    groups: dict[int, list[BarClosed]] = {}
    for bar in bars:
        groups.setdefault(bar.ts_event, []).append(bar)
    return [tuple(group) for group in groups.values()]


def test_a_decision_interval_acts_on_a_view_change_only_at_the_next_decision_bar(make_bars) -> None:
    # Arrange: bar times 0..121 fed; the view changes at bar time 121, the next multiple of 5 is 125
    times = by_time(make_bars(SYMBOLS, 130))
    desk = Desk(decision_interval_bars=5)
    for group in times[:122]:
        desk.feed(group)

    # Act
    desk.signal("ETHUSDT", SignalAction.BUY)
    proposed_after = []
    for index, group in enumerate(times[122:], start=122):
        desk.feed(group)
        proposed_after.append((index, len(desk.proposals)))

    # Assert
    assert next(index for index, count in proposed_after if count) == 125
    assert len(desk.proposals) == 1
    assert desk.proposals[0].ts_event == times[125][0].ts_event
    assert desk.proposals[0].weights["ETHUSDT"] > 0


def test_a_view_change_that_reverts_before_the_decision_bar_trades_nothing(make_bars) -> None:
    # Arrange
    times = by_time(make_bars(SYMBOLS, 130))
    desk = Desk(decision_interval_bars=5)
    for group in times[:121]:
        desk.feed(group)

    # Act: BUY, then HOLD (no view) before bar time 125
    desk.signal("ETHUSDT", SignalAction.BUY)
    desk.feed(times[121])
    desk.signal("ETHUSDT", SignalAction.HOLD)
    for group in times[122:]:
        desk.feed(group)

    # Assert
    assert desk.proposals == []


def test_signal_persistence_waits_until_the_changed_view_held_for_the_bars(make_bars) -> None:
    # Arrange
    times = by_time(make_bars(SYMBOLS, 130))
    held, flipped = Desk(signal_persistence_bars=3), Desk(signal_persistence_bars=3)
    for desk in (held, flipped):
        for group in times[:120]:
            desk.feed(group)
        desk.signal("ETHUSDT", SignalAction.BUY)

    # Act: one desk keeps the view, the other turns it back after one bar
    held.feed(times[120])
    held.feed(times[121])
    count_before = len(held.proposals)
    held.feed(times[122])
    flipped.feed(times[120])
    flipped.signal("ETHUSDT", SignalAction.HOLD)
    for group in times[121:]:
        flipped.feed(group)

    # Assert
    assert count_before == 0
    assert [p.ts_event for p in held.proposals] == [times[122][0].ts_event]
    assert flipped.proposals == []


@pytest.mark.parametrize("knobs", [{"decision_interval_bars": 5}, {"signal_persistence_bars": 3}])
def test_a_deferred_decision_at_t_uses_no_bar_of_t_or_later(make_bars, knobs: dict[str, int]) -> None:
    # Arrange: two runs differ only in the closes from the decision bar time on
    times = by_time(make_bars(SYMBOLS, 140))
    decision = 125
    perturbed = times[:decision] + [
        tuple(msgspec.structs.replace(b, close=b.close * (1.05 if i % 2 else 0.95)) for b in group)
        for i, group in enumerate(times[decision:])
    ]
    runs = []
    for series in (times, perturbed):
        desk = Desk(risk_aversion=20_000.0, **knobs)
        for group in series[:122]:
            desk.feed(group)
        desk.signal("ETHUSDT", SignalAction.BUY)
        for group in series[122:]:
            desk.feed(group)
        runs.append([(p.ts_event, p.weights) for p in desk.proposals])

    # Assert: the same decision, made at a bar time no later than the perturbation
    assert runs[0] == runs[1] != []
    assert runs[0][0][0] <= times[decision][0].ts_event


def test_decision_knobs_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="decision_interval_bars"):
        PortfolioOptimizer(symbols=SYMBOLS, decision_interval_bars=0)


def test_a_weight_step_cuts_the_proposed_weights_toward_zero_to_its_grid(make_bars) -> None:
    # Arrange
    bars = make_bars(SYMBOLS, 120)
    plain, stepped = Desk(), Desk(weight_step=0.05)

    # Act
    for desk in (plain, stepped):
        desk.feed(bars)
        desk.signal("ETHUSDT", SignalAction.BUY)

    # Assert
    free, cut = plain.proposals[0].weights, stepped.proposals[0].weights
    assert any(abs(w) % 0.05 > 1e-6 for w in free.values()), "the plain weights should be off the grid"
    for symbol, weight in cut.items():
        assert abs(weight / 0.05 - round(weight / 0.05)) < 1e-9
        assert abs(weight) <= abs(free[symbol]) + 1e-12
        assert abs(free[symbol]) - abs(weight) < 0.05 + 1e-9


@pytest.mark.parametrize("knobs", [{}, {"signal_persistence_bars": 3}])
def test_view_changes_before_any_symbol_has_enough_history_are_counted_once_each(
    make_bars, knobs: dict[str, int]
) -> None:
    # Arrange: 20 bar times, the optimizer needs 30
    times = by_time(make_bars(SYMBOLS, 20))
    desk = Desk(**knobs)
    for group in times[:10]:
        desk.feed(group)

    # Act
    desk.signal("ETHUSDT", SignalAction.BUY)
    desk.signal("SOLUSDT", SignalAction.SELL)
    for group in times[10:]:
        desk.feed(group)

    # Assert
    assert desk.proposals == []
    assert desk.optimizer.views_before_history == 2


def test_view_changes_with_enough_history_are_not_counted_as_waiting(make_bars) -> None:
    # Arrange
    desk = Desk()
    desk.feed(make_bars(SYMBOLS, 120))

    # Act
    desk.signal("ETHUSDT", SignalAction.BUY)

    # Assert
    assert len(desk.proposals) == 1
    assert desk.optimizer.views_before_history == 0
