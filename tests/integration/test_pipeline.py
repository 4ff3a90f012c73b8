"""The pipeline wiring shared by backtest and paper runs."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, NANOS_PER_MINUTE, SimulatedClock
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import ConfigurationError
from keel.core.fsm import ComponentState, TradingState
from keel.core.instruments import load_instruments
from keel.core.messages import (
    BarClosed,
    ExecutionCompleted,
    FundingRateUpdated,
    LadderProposed,
    LevelOrderApproved,
    Message,
    OrderApproved,
    OrderFilled,
    OrderRejected,
    PositionSide,
    SetTradingState,
    SignalAction,
    SignalGenerated,
    SubmitOrder,
    TargetQuantityProposed,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderType, TimeInForce
from keel.core.ports import ExchangePort
from keel.integration.pipeline import build_pipeline
from keel.integration.replay import RecordedRun
from keel.market_data.feeds import RecordedBarFeed


def test_a_raising_handler_degrades_its_component_and_the_run_goes_on() -> None:
    # Arrange
    config = load_config("backtest", environ={})
    bus = EventBus()
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), bus, SimulatedClock(0))
    pipeline.start()
    bus.drain()

    def broken_risk_handler(bar: BarClosed) -> None:
        raise ArithmeticError("bug in a risk handler")

    bus.subscribe(BarClosed, broken_risk_handler, name="risk.controller.volatility")
    bar = BarClosed(
        symbol="BTCUSDT",
        interval="1m",
        open_time=0,
        open=95505.4,
        high=95505.5,
        low=95502.7,
        close=95502.7,
        volume=16.536,
        ts_event=60_000_000_000,
        ts_init=60_000_000_000,
    )

    # Act
    bus.publish(bar)
    bus.drain()

    # Assert
    assert bus.handler_errors == 1
    assert pipeline.risk.state is ComponentState.DEGRADED
    assert pipeline.orders.state is ComponentState.RUNNING
    assert pipeline.positions.marks["BTCUSDT"] == Decimal("95502.7")


def test_the_venues_liquidation_reaches_the_position_book_and_the_recorder() -> None:
    # Arrange: BTCUSDT only, isolated at 100x; a 0.1 BTC long sent through the order manager on
    # the real bars of 2025-05-04 (the strategies may trade too).
    base = load_config("backtest", environ={})
    config = base.model_copy(
        update={
            "data": base.data.model_copy(update={"symbols": ("BTCUSDT",)}),
            "exchange": base.exchange.model_copy(update={"margin_type": "ISOLATED", "leverage": 100}),
            "strategy": base.strategy.model_copy(
                update={"name": "moving_average_cross", "fast_period": 900, "slow_period": 1000}
            ),
            "portfolio": base.portfolio.model_copy(update={"rebalance_interval_minutes": 0}),
        }
    )
    root = Path(__file__).resolve().parents[2]
    feed = RecordedBarFeed(
        root / "data" / config.data.bars,
        ("BTCUSDT",),
        "1m",
        root / "data" / config.data.funding,
        end_ns=1_746_403_200_000 * NANOS_PER_MILLI,
    )
    events = list(feed)
    clock = SimulatedClock(events[0].ts_event)
    bus = EventBus()
    pipeline = build_pipeline(config, load_instruments(root / "config" / "instruments.yaml"), bus, clock)
    pipeline.start()
    bus.drain()

    # Act
    for index, event in enumerate(events):
        clock.advance_to(event.ts_event)
        bus.publish(event)
        bus.drain()
        if index == 0:
            bus.publish(
                SubmitOrder(
                    client_order_id="manual-1",
                    symbol="BTCUSDT",
                    side=OrderSide.BUY,
                    order_type=OrderType.MARKET,
                    quantity=Decimal("0.100"),
                    ts_event=event.ts_event,
                    ts_init=event.ts_event,
                )
            )
            bus.drain()

    # Assert: whatever else the strategies traded, every liquidation's fill reached the books
    liquidations = pipeline.recorder.liquidations
    assert liquidations and pipeline.recorder.fills[0].client_order_id == "manual-1"
    fill_ids = [f.client_order_id for f in pipeline.recorder.fills]
    assert all(liquidation.client_order_id in fill_ids for liquidation in liquidations)
    assert pipeline.positions.quantity("BTCUSDT") == pipeline.exchange.account.quantity(("BTCUSDT", PositionSide.BOTH))
    assert pipeline.positions.fees_paid == pipeline.exchange.fees_paid
    assert any(isinstance(e, FundingRateUpdated) for e in events)
    assert pipeline.positions.equity() == pipeline.exchange.balance().margin_balance
    assert pipeline.orders.unknown_reports == 0


# --- orders the venue never rejects ---------------------------------------------------------------

_NEVER_REJECTED = {
    int(BinanceErrorCode.REDUCE_ONLY_REJECT),
    int(BinanceErrorCode.MIN_NOTIONAL),
    int(BinanceErrorCode.MARGIN_NOT_SUFFICIENT),
}
_PROPERTY_SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT")
_START_PRICES = {"BTCUSDT": 95502.7, "ETHUSDT": 1827.53, "XRPUSDT": 2.2}
# 2025-05-05 00:00 UTC: a funding time; the runs end long before the next one.
_PROPERTY_START_NS = 1_746_403_200_000 * NANOS_PER_MILLI

_signals = st.lists(
    st.tuples(st.sampled_from(_PROPERTY_SYMBOLS), st.sampled_from(list(SignalAction))), min_size=0, max_size=3
)
_steps = st.lists(
    st.tuples(
        st.lists(st.floats(-0.02, 0.02), min_size=3, max_size=3),  # each symbol's return over the bar
        st.sampled_from([0.5, 20.0, 1e6]),  # volume: the venue fills 10% of it, so IOC children may expire
        _signals,
    ),
    min_size=5,
    max_size=40,
)


def _property_config(gross_exposure: float, leverage: int, max_leverage: float, style: str) -> KeelConfig:
    base = load_config("backtest", environ={})
    return base.model_copy(
        update={
            "data": base.data.model_copy(update={"symbols": _PROPERTY_SYMBOLS, "start": None, "end": None}),
            "exchange": base.exchange.model_copy(update={"leverage": leverage}),
            "strategy": base.strategy.model_copy(
                update={"name": "moving_average_cross", "fast_period": 900, "slow_period": 1000, "warmup_bars": 0}
            ),
            "portfolio": base.portfolio.model_copy(
                update={
                    "allocator": "equal_weight",
                    "gross_exposure": gross_exposure,
                    "rebalance_threshold": 0.0,
                    "rebalance_interval_minutes": 1,
                    "no_trade_band": False,  # every random target is ordered: the cost rule would skip most
                }
            ),
            "risk": base.risk.model_copy(update={"max_leverage": max_leverage, "max_net_leverage": max_leverage}),
            "execution": base.execution.model_copy(update={"default_style": style, "twap_horizon_seconds": 180.0}),
        }
    )


def _bar(symbol: str, open_time: int, open_: float, close: float, volume: float) -> BarClosed:
    return BarClosed(
        symbol=symbol,
        interval="1m",
        open_time=open_time,
        open=open_,
        high=max(open_, close),
        low=min(open_, close),
        close=close,
        volume=volume,
        ts_event=open_time + NANOS_PER_MINUTE,
        ts_init=open_time + NANOS_PER_MINUTE,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=_steps,
    gross_exposure=st.sampled_from([0.002, 0.01, 0.05, 0.5, 2.0, 4.0]),
    leverage=st.sampled_from([1, 2, 5, 20]),
    max_leverage=st.sampled_from([1.0, 3.0, 6.0]),
    style=st.sampled_from(["AGGRESSIVE", "TWAP", "PASSIVE"]),
)
@example(  # an IOC leftover once approved again beside its parent's retry: a doubled buy the margin refused
    steps=[
        ([0.0, 0.0, 0.0], 0.5, [("ETHUSDT", SignalAction.BUY)]),
        ([0.0, 0.015625, 0.0], 0.5, []),
        ([0.0, -0.015625, 0.0], 0.5, []),
        ([0.0, 0.0, 0.0], 0.5, []),
        ([0.0, 0.0, 0.0], 0.5, []),
    ],
    gross_exposure=2.0,
    leverage=1,
    max_leverage=1.0,
    style="AGGRESSIVE",
)
def test_random_targets_through_allocator_risk_and_router_are_never_rejected_by_the_venue(
    steps: list[tuple[list[float], float, list[tuple[str, SignalAction]]]],
    gross_exposure: float,
    leverage: int,
    max_leverage: float,
    style: str,
) -> None:
    # Arrange: the pipeline as a backtest wires it, the equal-weight allocator rebalancing every minute
    # (drifting prices make small orders, a small gross exposure dust-sized positions), signals at random.
    config = _property_config(gross_exposure, leverage, max_leverage, style)
    clock = SimulatedClock(_PROPERTY_START_NS)
    bus = EventBus()
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), bus, clock)
    rejected: list[OrderRejected] = []
    bus.subscribe(OrderRejected, rejected.append, name="test.rejections")
    pipeline.start()
    bus.drain()
    prices = dict(_START_PRICES)

    def run_bar(index: int, returns: list[float], volume: float) -> None:
        open_time = _PROPERTY_START_NS + index * NANOS_PER_MINUTE
        clock.advance_to(open_time + NANOS_PER_MINUTE)
        bus.drain()
        for symbol, change in zip(_PROPERTY_SYMBOLS, returns, strict=True):
            close = prices[symbol] * (1.0 + change)
            bus.publish(_bar(symbol, open_time, prices[symbol], close, volume))
            bus.drain()
            prices[symbol] = close

    # Act
    for index, (returns, volume, signals) in enumerate(steps):
        run_bar(index, returns, volume)
        for symbol, action in signals:
            now = clock.timestamp_ns()
            bus.publish(
                SignalGenerated(
                    strategy="random", symbol=symbol, action=action, strength=1.0, confidence=1.0, ts_event=now,
                    ts_init=now,
                )
            )  # fmt: skip
            bus.drain()
    now = clock.timestamp_ns()
    bus.publish(SetTradingState(state=TradingState.HALTED, reason="end of the test", ts_event=now, ts_init=now))
    bus.drain()
    for index in range(len(steps), len(steps) + 2):
        run_bar(index, [0.0, 0.0, 0.0], 1e6)

    # Assert: no order the venue should never reject was rejected; after a halt nothing stays on its way;
    # the position book agrees with the venue.
    assert [(r.code, r.reason) for r in rejected if r.code in _NEVER_REJECTED] == []
    for symbol in _PROPERTY_SYMBOLS:
        assert pipeline.risk.pending(symbol) == 0
        venue = pipeline.exchange.account.quantity((symbol, PositionSide.BOTH))
        assert pipeline.positions.quantity(symbol) == pipeline.orders.position(symbol) == venue


class _OtherVenue:
    name = "other"


def test_the_pipeline_holds_its_venue_by_the_exchange_port() -> None:
    # Arrange
    config = load_config("backtest", environ={})
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), EventBus(), SimulatedClock(0))
    elsewhere = dataclasses.replace(pipeline, exchange=_OtherVenue())

    # Act
    simulated = pipeline.simulated_exchange()

    # Assert
    assert isinstance(pipeline.exchange, ExchangePort)
    assert simulated is pipeline.exchange
    with pytest.raises(TypeError, match="the venue other is not the simulated exchange"):
        elsewhere.simulated_exchange()


# --- strategies that trade fixed amounts: a grid's ladder, scheduled buys --------------------------------------


def replay_recording(overrides: dict[str, Any], *kinds: type[Message]) -> tuple[RecordedRun, dict[type, list[Any]]]:
    """Run a backtest of ``overrides`` through the whole pipeline, recording the messages of ``kinds``."""
    run = RecordedRun(load_config("backtest", overrides=overrides, environ={}), None, measure_latency=False)
    seen: dict[type, list[Any]] = {kind: [] for kind in kinds}
    for kind in kinds:
        run.pipeline.bus.subscribe(kind, seen[kind].append, name=f"test.{kind.__name__}")
    run.replay(None)
    return run, seen


def test_a_grid_rests_post_only_limits_at_its_level_prices_fills_them_as_maker_and_re_arms_within_its_cap() -> None:
    # Arrange: two days of BTCUSDT on 1m bars, a grid of 8 levels of 500 USDT capped at 3, alone
    grid = {"range_period": 240, "levels": 8, "max_inventory_levels": 3, "min_range_width": 0.004}
    overrides = {
        "data": {"symbols": ["BTCUSDT"], "start": "2025-05-10", "end": "2025-05-12"},
        "strategy": {"strategies": ["grid_trading"], "parameters": {"grid_trading": grid}},
    }
    inventory: list[float] = []

    # Act
    run = RecordedRun(load_config("backtest", overrides=overrides, environ={}), None, measure_latency=False)
    bus = run.pipeline.bus
    ladders: list[LadderProposed] = []
    approvals: list[LevelOrderApproved] = []
    bus.subscribe(LadderProposed, ladders.append, name="test.ladders")
    bus.subscribe(LevelOrderApproved, approvals.append, name="test.approvals")
    ledgers = run.pipeline.risk.ladders.ledgers
    bus.subscribe(
        OrderFilled, lambda _: inventory.extend(abs(x.inventory_levels) for x in ledgers.values()), name="test.cap"
    )
    run.replay(None)

    # Assert: every approval is at its ladder's level price on the tick grid, on the passive side of it
    tick = Decimal("0.10")
    by_id = {ladder.id: ladder for ladder in ladders}
    for approved in approvals:
        level_price = Decimal(repr(by_id[approved.ladder_id].prices[approved.level]))
        assert Decimal(0) <= (level_price - approved.price) * approved.side.sign < tick
    # the order manager saw post-only limits at those prices, filled as a maker at them
    orders = run.pipeline.orders
    grid_orders = [o for o in orders.orders.values() if o.time_in_force is TimeInForce.GTX]
    approved_prices = {(a.side, a.price) for a in approvals}
    assert len(grid_orders) == len(approvals) > 20
    assert all(o.order_type is OrderType.LIMIT and (o.side, o.price) in approved_prices for o in grid_orders)
    grid_fills = [f for f in orders.fills() if orders.orders[f.client_order_id].time_in_force is TimeInForce.GTX]
    assert all(f.liquidity_side is LiquiditySide.MAKER for f in grid_fills)
    assert all(f.last_price == orders.orders[f.client_order_id].price for f in grid_fills)
    assert run.pipeline.ladders is not None and run.pipeline.ladders.rearmed >= 10
    assert inventory and max(inventory) <= 3 + 1e-9


def test_each_scheduled_buy_fills_its_fixed_notional_within_one_lot_step_until_the_budget_stops_it() -> None:
    # Arrange: 1000 USDT every 4 hours on two symbols for two days (12 fires each), a budget of 3 buys
    dca = {"interval_minutes": 240, "notional_usdt": 1000.0, "budget_usdt": 3000.0, "take_profit": 1.0}
    overrides = {
        "data": {"symbols": ["BTCUSDT", "ETHUSDT"], "start": "2025-05-10", "end": "2025-05-12"},
        "strategy": {"strategies": ["scheduled_dca"], "warmup_bars": 0, "parameters": {"scheduled_dca": dca}},
        "portfolio": {"allocator": "equal_weight"},
    }

    # Act
    run, seen = replay_recording(overrides, TargetQuantityProposed, OrderApproved, ExecutionCompleted)

    # Assert: three buys per symbol, each its own parent order, filled in full
    fires = {a.id: a for a in seen[OrderApproved]}
    completed = [c for c in seen[ExecutionCompleted] if c.strategy == "scheduled_dca"]
    assert sorted(c.symbol for c in completed) == ["BTCUSDT"] * 3 + ["ETHUSDT"] * 3
    instruments = load_instruments(run.config.exchange.instruments)
    targets = {(t.symbol, t.ts_event): t for t in seen[TargetQuantityProposed]}
    for parent in completed:
        approved = fires[parent.approval_id]  # type: ignore[index]
        close = Decimal(repr(targets[(parent.symbol, approved.ts_event)].reference_price))
        step = instruments[parent.symbol].market_step_size
        assert parent.side is OrderSide.BUY and parent.filled_quantity == approved.quantity
        # the quantity is the notional at the fire's close within one step; the fill's notional moves with the price
        assert abs(parent.filled_quantity * close - 1000) <= step * close
        assert parent.average_price is not None
        fill_notional = parent.filled_quantity * parent.average_price
        assert abs(fill_notional - 1000) <= step * parent.average_price + parent.filled_quantity * abs(
            parent.average_price - close
        )
    assert {t.reason for t in seen[TargetQuantityProposed] if t.quantity > 0} == {"scheduled buy"}


@pytest.mark.parametrize("shared", [True, False])
def test_the_shared_cost_model_prices_funding_arbitrage_and_the_equal_weight_views_when_switched_on(
    shared: bool,
) -> None:
    # Arrange
    overrides = {
        "portfolio": {"allocator": "equal_weight", "shared_costs": shared},
        "strategy": {"warmup_bars": 0},
    }
    config = load_config("backtest", environ={}, overrides=overrides)

    # Act
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), EventBus(), SimulatedClock(0))

    # Assert
    assert pipeline.costs is not None
    expected = pipeline.costs if shared else None
    funding = next(s for s in pipeline.strategy.strategy.strategies if s.name == "funding_arbitrage")
    assert funding.costs is expected
    assert pipeline.allocator.costs is expected


@pytest.mark.parametrize(
    ("styles", "message"),
    [
        ({"trend_folowing": "TWAP"}, "no order carries the strategy 'trend_folowing'"),
        ({"trend_following": "TWAP"}, "set execution.styles.strategy_manager instead"),
    ],
)
def test_an_execution_style_for_a_strategy_whose_orders_do_not_carry_its_name_stops_the_build(
    styles: dict[str, str], message: str
) -> None:
    # Arrange: a typo, and a strategy that only votes in the manager's combined view
    config = load_config("backtest", overrides={"execution": {"styles": styles}})

    # Act
    with pytest.raises(ConfigurationError) as raised:
        build_pipeline(config, load_instruments(config.exchange.instruments), EventBus(), SimulatedClock(0))

    # Assert: the key and what to set instead
    assert f"execution.styles.{next(iter(styles))}" in str(raised.value) and message in str(raised.value)


def test_execution_styles_may_name_the_manager_a_strategy_with_orders_of_its_own_and_the_operator() -> None:
    # Arrange
    styles = {"strategy_manager": "TWAP", "scheduled_dca": "PASSIVE", "manual": "AGGRESSIVE", "portfolio": "TWAP"}
    config = load_config(
        "backtest",
        overrides={
            "execution": {"styles": styles},
            "strategy": {"strategies": ["trend_following", "scheduled_dca"]},
        },
    )

    # Act
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), EventBus(), SimulatedClock(0))

    # Assert
    assert {name: style.value for name, style in pipeline.router.styles.items()} == styles


def test_execution_styles_may_name_what_orders_carry_in_other_runs_of_the_file() -> None:
    # Arrange: the moving-average cross alone (as a tuning trial runs it) with styles written for the manager's runs
    config = load_config(
        "backtest",
        overrides={
            "execution": {"styles": {"strategy_manager": "TWAP", "scheduled_dca": "PASSIVE"}},
            "strategy": {"name": "moving_average_cross"},
        },
    )

    # Act
    pipeline = build_pipeline(config, load_instruments(config.exchange.instruments), EventBus(), SimulatedClock(0))

    # Assert: built, the styles kept for whichever strategy carries them
    assert set(pipeline.router.styles) == {"strategy_manager", "scheduled_dca"}
