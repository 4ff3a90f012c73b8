"""MarketImpactModel on the real session: observations (streaming = batch), calibration, estimates, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keel.core.messages import BookUpdated, MarketDataEvent, TradeTick
from keel.core.orders import OrderSide
from keel.market_data.impact import (
    ImpactCollector,
    ImpactModelNotFittedError,
    MarketConditions,
    MarketImpactModel,
    PowerLawRegressor,
    impact_observations_batch,
)


def _collect(events: list[MarketDataEvent]) -> ImpactCollector:
    collector = ImpactCollector()
    for event in events:
        if isinstance(event, BookUpdated):
            collector.on_book(event)
        elif isinstance(event, TradeTick):
            collector.on_trade(event)
    return collector


@pytest.fixture(scope="module")
def observations(btc_session_events: list[MarketDataEvent]) -> pd.DataFrame:
    return _collect(btc_session_events).frame()


def test_streaming_observations_equal_the_pandas_reference(
    btc_session_events: list[MarketDataEvent], observations: pd.DataFrame
) -> None:
    # Arrange
    books = pd.DataFrame(
        [
            (
                b.ts_event,
                (b.bids[0][0] + b.asks[0][0]) / 2,
                (b.asks[0][0] - b.bids[0][0]) / ((b.bids[0][0] + b.asks[0][0]) / 2) * 1e4,
                sum(q for _, q in b.bids),
                sum(q for _, q in b.asks),
            )
            for b in btc_session_events
            if isinstance(b, BookUpdated)
        ],
        columns=["ts_event", "mid", "spread_bps", "bid_depth", "ask_depth"],
    )
    trades = pd.DataFrame(
        [
            (t.ts_event, t.price, t.quantity, t.aggressor_side is OrderSide.BUY)
            for t in btc_session_events
            if isinstance(t, TradeTick)
        ],
        columns=["ts_event", "price", "quantity", "buyer_aggressor"],
    )

    # Act
    reference = impact_observations_batch(books, trades)

    # Assert
    assert len(observations) == len(reference) > 5_000
    np.testing.assert_allclose(observations.to_numpy(float), reference.to_numpy(float), rtol=1e-12, atol=1e-9)
    # A typical taker order pays half the one-tick spread against the last book before it
    assert observations["immediate_bps"].median() == pytest.approx(observations["spread_bps"].median() / 2, rel=0.05)


def test_the_calibrated_model_predicts_held_out_orders(observations: pd.DataFrame) -> None:
    # Arrange: fit on the first half of the session, test on the second
    half = len(observations) // 2
    model = MarketImpactModel(random_state=7).fit(observations.iloc[:half])
    test = observations.iloc[half:]

    # Act
    predicted = np.array(
        [
            model.estimate_market_impact(q, MarketConditions(s, d)).expected_bps
            for q, s, d in zip(test["quantity"], test["spread_bps"], test["depth"], strict=True)
        ]
    )

    # Assert: larger participation costs more, in the data and in the model, and the model beats a constant
    participation = test["quantity"] / test["depth"]
    small, large = participation < 0.01, participation >= 0.5
    assert test["immediate_bps"][large].mean() > 3 * test["immediate_bps"][small].mean()
    assert predicted[large.to_numpy()].mean() > 3 * predicted[small.to_numpy()].mean()
    error = np.mean((test["immediate_bps"] - predicted) ** 2)
    constant = np.mean((test["immediate_bps"] - observations.iloc[:half]["immediate_bps"].mean()) ** 2)
    assert error < constant
    assert model.immediate_exponent_ in model.exponents and model.n_observations_ == half


def test_an_estimate_has_an_interval_and_grows_with_size(observations: pd.DataFrame) -> None:
    # Arrange
    model = MarketImpactModel().fit(observations)
    conditions = {"spread_bps": 0.0162, "depth": 10.0}

    # Act
    estimates = [model.estimate_market_impact(size, conditions) for size in (0.01, 0.1, 1.0, 10.0)]

    # Assert
    expected = [e.expected_bps for e in estimates]
    assert expected == sorted(expected) and expected[0] >= 0.0081 - 1e-12
    for e in estimates:
        assert e.lower_bps <= e.expected_bps <= e.upper_bps
        assert e.temporary_bps + e.permanent_bps == pytest.approx(e.expected_bps)
        assert e.confidence == 0.95


def test_the_same_seed_gives_the_same_model(observations: pd.DataFrame) -> None:
    first = MarketImpactModel(random_state=3).fit(observations)
    second = MarketImpactModel(random_state=3).fit(observations)

    assert np.array_equal(first.immediate_coefficients_, second.immediate_coefficients_)
    assert first.get_params() == second.get_params()


def test_estimating_before_fitting_or_with_bad_inputs_is_refused(observations: pd.DataFrame) -> None:
    with pytest.raises(ImpactModelNotFittedError):
        MarketImpactModel().estimate_market_impact(1.0, {"spread_bps": 0.02, "depth": 5.0})
    model = MarketImpactModel(n_bootstrap=20).fit(observations.head(500))
    with pytest.raises(ValueError, match="must be positive"):
        model.estimate_market_impact(0.0, {"spread_bps": 0.02, "depth": 5.0})
    with pytest.raises(ValueError, match="at least 10"):
        MarketImpactModel().fit(observations.head(5))
    with pytest.raises(ValueError, match="impact observations miss the columns depth, permanent_bps"):
        MarketImpactModel().fit(observations.drop(columns=["depth", "permanent_bps"]))


def test_the_power_law_regressor_follows_the_scikit_learn_contract() -> None:
    # Arrange: x and y from the real session's shape of relation y = 2 x^0.5 exactly
    x = np.linspace(0.01, 2.0, 50)[:, None]

    # Act
    regressor = PowerLawRegressor(exponent=0.5).fit(x, 2.0 * np.sqrt(x[:, 0]))

    # Assert
    assert regressor.coefficient_ == pytest.approx(2.0)
    np.testing.assert_allclose(regressor.predict(x), 2.0 * np.sqrt(x[:, 0]))
    assert regressor.get_params() == {"exponent": 0.5}


def test_lookahead_observations_up_to_t_ignore_later_events(btc_session_events: list[MarketDataEvent]) -> None:
    # Arrange: stop halfway, or go on with every later trade doubled and every later book shifted
    cut = len(btc_session_events) // 2
    later = []
    for e in btc_session_events[cut:]:
        if isinstance(e, TradeTick):
            later.append(
                TradeTick(
                    symbol=e.symbol,
                    trade_id=e.trade_id,
                    price=e.price,
                    quantity=e.quantity * 2,
                    aggressor_side=e.aggressor_side,
                    ts_event=e.ts_event,
                    ts_init=e.ts_init,
                )
            )
        elif isinstance(e, BookUpdated):
            later.append(
                BookUpdated(
                    symbol=e.symbol,
                    update_id=e.update_id,
                    bids=tuple((p + 50, q) for p, q in e.bids),
                    asks=tuple((p + 50, q) for p, q in e.asks),
                    ts_event=e.ts_event,
                    ts_init=e.ts_init,
                )
            )

    # Act
    stopped = _collect(btc_session_events[:cut]).observations
    continued = _collect([*btc_session_events[:cut], *later]).observations

    # Assert
    assert continued[: len(stopped)] == stopped
    assert all(o.ts_event + 1_000_000_000 <= btc_session_events[cut - 1].ts_event for o in stopped)
