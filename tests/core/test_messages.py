"""Tests of keel.core.messages: JSON round trips, immutability, ids, kinds and lanes."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.fsm import ComponentState, TradingState
from keel.core.messages import (
    MESSAGE_TYPES,
    AllocationProposed,
    BarClosed,
    BookTickerUpdated,
    BookUpdated,
    CancelAllOrders,
    CancelOrder,
    ComponentStateChanged,
    CorrelationJumped,
    ExecutionCompleted,
    FeedHealthChanged,
    FundingPaid,
    FundingRateUpdated,
    HealthChanged,
    LadderProposed,
    Lane,
    LevelOrderApproved,
    LevelOrderProposed,
    LiquidationReported,
    MarginCalled,
    MarginType,
    MarketRegime,
    MarkPriceUpdated,
    Message,
    MicrostructureSnapshot,
    OrderAccepted,
    OrderApproved,
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionChanged,
    PositionLiquidated,
    PositionSide,
    Rebalance,
    ReconciliationCompleted,
    RegimeChanged,
    RiskBreached,
    RiskLimitsUpdated,
    ScheduleFired,
    ScheduleMisfired,
    SessionEnded,
    SessionStarted,
    SetTradingState,
    SignalAction,
    SignalGenerated,
    SlippageLimitBreached,
    StrategyError,
    StrategyGateEvaluated,
    SubmitOrder,
    SystemHealth,
    TargetQuantityProposed,
    TradeTick,
    TradingStateChanged,
    VenueConditionChanged,
    decode_message,
    encode_message,
    next_message_id,
    reset_message_ids,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderType, TimeInForce

T0 = 1_740_787_200_000_000_000  # 2025-03-01T00:00:00Z
T1 = T0 + 60_000_000_000


def _examples() -> dict[type[Message], Message]:
    """One realistic instance of every message type."""
    common = {"ts_event": T1, "ts_init": T1 + 1_500}
    return {
        BarClosed: BarClosed(
            symbol="BTCUSDT",
            interval="1m",
            open_time=T0,
            open=84_350.1,
            high=84_402.0,
            low=84_301.5,
            close=84_390.2,
            volume=123.456,
            **common,
        ),
        TradeTick: TradeTick(
            symbol="ETHUSDT",
            trade_id="4412093311",
            price=2_215.37,
            quantity=0.75,
            aggressor_side=OrderSide.SELL,
            **common,
        ),
        BookUpdated: BookUpdated(
            symbol="BTCUSDT",
            update_id=6_881_927_331,
            bids=((84_390.1, 2.5), (84_390.0, 0.31)),
            asks=((84_390.2, 1.0),),
            **common,
        ),
        FundingRateUpdated: FundingRateUpdated(
            symbol="BTCUSDT",
            funding_time=T0 + 8 * 3_600_000_000_000,
            rate=Decimal("0.00010000"),
            mark_price=None,
            **common,
        ),
        BookTickerUpdated: BookTickerUpdated(
            symbol="BTCUSDT",
            update_id=5_123_107_839_020,
            bid_price=61_800.2,
            bid_quantity=2.507,
            ask_price=61_800.3,
            ask_quantity=2.51,
            **common,
        ),
        MarkPriceUpdated: MarkPriceUpdated(
            symbol="BTCUSDT",
            mark_price=Decimal("28164.20000000"),
            index_price=Decimal("28178.63478261"),
            estimated_settle_price=Decimal("28177.01834424"),
            funding_rate=Decimal("0.00006493"),
            next_funding_time=1_680_652_800_000_000_000,
            **common,
        ),
        LiquidationReported: LiquidationReported(
            symbol="BTCUSDT",
            side=OrderSide.SELL,
            price=61_650.1,
            average_price=61_702.4,
            quantity=0.125,
            last_filled_quantity=0.125,
            filled_quantity=0.125,
            status="FILLED",
            **common,
        ),
        FeedHealthChanged: FeedHealthChanged(
            symbol="BTCUSDT",
            stream="depth",
            stale=True,
            silent_ns=5_000_000_000,
            reason="no depth update for 5.0 s",
            **common,
        ),
        MicrostructureSnapshot: MicrostructureSnapshot(
            symbol="BTCUSDT",
            update_id=5_123_107_852_948,
            mid_price=61_800.25,
            spread_bps=0.0162,
            microprice=61_800.21,
            imbalance_1=0.07,
            imbalance_5=0.31,
            imbalance_10=0.22,
            depth_bps=10.0,
            bid_depth=41.2,
            ask_depth=35.9,
            book_pressure=0.12,
            bid_wall_price=61_800.0,
            ask_wall_price=None,
            vpin=0.41,
            order_flow_imbalance=-0.18,
            kyle_lambda=2.6,
            realized_volatility=0.0004,
            trade_burst=False,
            sweep=True,
            impact_reference_quantity=1.0,
            impact_bps=0.9,
            expected_volume_share=0.031,
            liquidity_score=None,
            **common,
        ),
        SignalGenerated: SignalGenerated(
            strategy="trend_following",
            symbol="SOLUSDT",
            action=SignalAction.BUY,
            strength=0.8,
            confidence=0.65,
            stop_loss=140.5,
            take_profit=None,
            **common,
        ),
        TargetQuantityProposed: TargetQuantityProposed(
            strategy="scheduled_dca",
            symbol="BTCUSDT",
            quantity=0.0194,
            reference_price=103_250.5,
            reason="scheduled buy",
            **common,
        ),
        LadderProposed: LadderProposed(
            strategy="grid_trading",
            symbol="ETHUSDT",
            prices=(2400.0, 2450.0, 2500.0),
            sides=(OrderSide.BUY, None, OrderSide.SELL),
            level_notional=250.0,
            max_inventory_levels=5,
            reason="grid built",
            **common,
        ),
        LevelOrderProposed: LevelOrderProposed(
            strategy="grid_trading",
            symbol="ETHUSDT",
            ladder_id=17,
            level=0,
            side=OrderSide.BUY,
            price=2400.0,
            notional=250.0,
            **common,
        ),
        LevelOrderApproved: LevelOrderApproved(
            strategy="grid_trading",
            symbol="ETHUSDT",
            ladder_id=17,
            level=0,
            side=OrderSide.BUY,
            price=Decimal("2400.00"),
            quantity=Decimal("0.104"),
            proposal_id=18,
            **common,
        ),
        AllocationProposed: AllocationProposed(
            weights={"BTCUSDT": 0.4, "ETHUSDT": -0.15},
            reason="scheduled rebalance",
            **common,
        ),
        Rebalance: Rebalance(reason="operator", **common),
        RegimeChanged: RegimeChanged(
            symbol="BTCUSDT",
            previous=MarketRegime.LOW_VOLATILITY,
            regime=MarketRegime.HIGH_VOLATILITY,
            probabilities={"trending": 0.12, "mean_reverting": 0.05, "high_volatility": 0.81, "low_volatility": 0.02},
            volatility=0.00094,
            **common,
        ),
        StrategyError: StrategyError(
            strategy="funding_arbitrage",
            symbol="ETHUSDT",
            error_type="MissingFundingDataError",
            message="no funding rate of ETHUSDT settled at 2025-05-10T16:00:00Z",
            disabled=False,
            **common,
        ),
        OrderApproved: OrderApproved(
            symbol="BTCUSDT",
            side=OrderSide.BUY,
            quantity=Decimal("0.015"),
            order_type=OrderType.LIMIT,
            price=Decimal("84390.10"),
            reduce_only=False,
            strategy="trend_following",
            **common,
        ),
        OrderDenied: OrderDenied(
            symbol="BTCUSDT",
            side=OrderSide.SELL,
            quantity=Decimal("2.000"),
            reason_code="MAX_LEVERAGE",
            reason="leverage 7.2 > 5",
            strategy="mean_reversion",
            **common,
        ),
        SetTradingState: SetTradingState(
            state=TradingState.HALTED,
            reason="emergency stop",
            **common,
        ),
        TradingStateChanged: TradingStateChanged(
            previous=TradingState.ACTIVE,
            state=TradingState.REDUCING,
            reason="drawdown 8%",
            **common,
        ),
        CorrelationJumped: CorrelationJumped(
            first="BTCUSDT",
            second="SOLUSDT",
            previous=0.82,
            current=0.41,
            threshold=0.3,
            **common,
        ),
        RiskLimitsUpdated: RiskLimitsUpdated(
            limits={"max_leverage": 8.0, "var_daily_pct": 0.015, "max_drawdown_pct": 0.10},
            position_weight_caps={"BTCUSDT": 2.5, "ETHUSDT": 2.5},
            equity=10250.75,
            reason="update_limits",
            **common,
        ),
        RiskBreached: RiskBreached(
            limit="var_daily_pct",
            value=0.0213,
            threshold=0.015,
            state=TradingState.REDUCING,
            reason="daily 99% VaR 2.13% of equity above the 1.50% limit",
            **common,
        ),
        SubmitOrder: SubmitOrder(
            client_order_id="bt-17",
            symbol="ETHUSDT",
            side=OrderSide.SELL,
            order_type=OrderType.STOP_MARKET,
            quantity=Decimal("1.250"),
            price=None,
            time_in_force=TimeInForce.GTX,
            reduce_only=True,
            stop_price=Decimal("2100.00"),
            strategy="range_trading",
            **common,
        ),
        CancelOrder: CancelOrder(client_order_id="bt-17", symbol="ETHUSDT", **common),
        CancelAllOrders: CancelAllOrders(symbol=None, reason="halt", **common),
        OrderSubmitted: OrderSubmitted(
            client_order_id="bt-18", symbol="BTCUSDT", side=OrderSide.BUY, quantity=Decimal("0.5"), **common
        ),
        OrderAccepted: OrderAccepted(
            client_order_id="bt-18",
            venue_order_id="389172635501",
            symbol="BTCUSDT",
            **common,
        ),
        OrderRejected: OrderRejected(
            client_order_id="bt-19",
            symbol="BTCUSDT",
            code=-2019,
            reason="Margin is insufficient.",
            **common,
        ),
        OrderFilled: OrderFilled(
            client_order_id="bt-18",
            venue_order_id="389172635501",
            symbol="BTCUSDT",
            trade_id="5561230",
            side=OrderSide.BUY,
            last_quantity=Decimal("0.010"),
            last_price=Decimal("84390.10"),
            commission=Decimal("-0.00843901"),
            liquidity_side=LiquiditySide.MAKER,
            strategy="trend_following",
            **common,
        ),
        OrderCanceled: OrderCanceled(client_order_id="bt-18", symbol="BTCUSDT", **common),
        OrderExpired: OrderExpired(
            client_order_id="bt-20",
            symbol="BTCUSDT",
            reason="IOC leftover",
            **common,
        ),
        PositionChanged: PositionChanged(
            symbol="BTCUSDT",
            quantity=Decimal("-0.025"),
            entry_price=Decimal("84390.1"),
            realized_pnl=Decimal("-12.34"),
            **common,
        ),
        FundingPaid: FundingPaid(
            symbol="BTCUSDT",
            funding_time=T0,
            rate=Decimal("0.0001"),
            mark_price=Decimal("84000.00"),
            position_quantity=Decimal("0.5"),
            amount=Decimal("-4.2000"),
            **common,
        ),
        PositionLiquidated: PositionLiquidated(
            symbol="BTCUSDT",
            position_side=PositionSide.BOTH,
            margin_type=MarginType.ISOLATED,
            client_order_id="autoclose-7",
            side=OrderSide.SELL,
            quantity=Decimal("0.500"),
            price=Decimal("76120.4"),
            mark_price=Decimal("76120.4"),
            realized_pnl=Decimal("-4134.85"),
            liquidation_fee=Decimal("565.15"),
            insurance_fund_covered=Decimal("0"),
            **common,
        ),
        SlippageLimitBreached: SlippageLimitBreached(
            parent_order_id="P-3",
            symbol="BTCUSDT",
            slippage_bps=7.4,
            limit_bps=5.0,
            action="go_passive",
            **common,
        ),
        ExecutionCompleted: ExecutionCompleted(
            parent_order_id="P-3",
            symbol="BTCUSDT",
            side=OrderSide.BUY,
            strategy="portfolio",
            style="TWAP",
            quantity=Decimal("0.500"),
            filled_quantity=Decimal("0.500"),
            arrival_price=Decimal("61800.25"),
            average_price=Decimal("61805.1"),
            final_price=Decimal("61810.05"),
            interval_vwap=Decimal("61804.2"),
            fees=Decimal("15.45"),
            implementation_shortfall=Decimal("17.875"),
            implementation_shortfall_bps=5.78,
            spread_paid_bps=0.02,
            estimated_impact_bps=0.9,
            realized_impact_bps=0.77,
            child_orders=8,
            reason="filled",
            **common,
        ),
        ComponentStateChanged: ComponentStateChanged(
            component="risk_controller",
            previous=ComponentState.RUNNING,
            state=ComponentState.DEGRADED,
            reason="handler raised",
            **common,
        ),
        HealthChanged: HealthChanged(
            previous=SystemHealth.HEALTHY,
            health=SystemHealth.DEGRADED,
            reasons=("feed BTCUSDT/bars stale for 180.0 s",),
            **common,
        ),
        SessionStarted: SessionStarted(session=3, mode="paper", recovered=True, **common),
        SessionEnded: SessionEnded(session=3, reason="end of data", finished=True, **common),
        ReconciliationCompleted: ReconciliationCompleted(
            adopted_orders=("keel-18",),
            resolved_orders=("keel-17", "keel-19"),
            never_sent_orders=("keel-19",),
            missed_fills=2,
            missed_funding=0,
            mismatches=(),
            **common,
        ),
        MarginCalled: MarginCalled(
            cross_wallet_balance=Decimal("1000.5"),
            positions=(("BTCUSDT", "LONG", Decimal("0.5"), Decimal("84000.1"), Decimal("210.0")),),
            **common,
        ),
        VenueConditionChanged: VenueConditionChanged(
            venue="binance", condition="banned", active=True, reason="HTTP 418", until_ns=2_000, **common
        ),
        StrategyGateEvaluated: StrategyGateEvaluated(
            strategy="hyper_rsi",
            passed=False,
            reason="Sharpe 0.4 below 1.0",
            sharpe=0.4,
            max_drawdown=0.03,
            trades=12,
            window_days=30.0,
            **common,
        ),
        ScheduleFired: ScheduleFired(
            strategy="scheduled_dca", fire_time=1_746_662_400_000_000_000, coalesced=2, **common
        ),
        ScheduleMisfired: ScheduleMisfired(
            strategy="scheduled_dca",
            first_missed=1_746_662_400_000_000_000,
            last_missed=1_746_691_200_000_000_000,
            missed=3,
            grace_seconds=300.0,
            **common,
        ),
    }


EXAMPLES = _examples()

COMMANDS = {Rebalance, SetTradingState, SubmitOrder, CancelOrder, CancelAllOrders}
CONTROL = {
    SetTradingState,
    TradingStateChanged,
    CancelAllOrders,
    ComponentStateChanged,
    HealthChanged,
    SessionStarted,
    SessionEnded,
    ReconciliationCompleted,
    MarginCalled,
    VenueConditionChanged,
    StrategyGateEvaluated,
}
MARKET_DATA = {
    BarClosed,
    TradeTick,
    BookUpdated,
    FundingRateUpdated,
    BookTickerUpdated,
    MarkPriceUpdated,
    LiquidationReported,
    FeedHealthChanged,
    MicrostructureSnapshot,
}


def test_there_is_one_example_per_message_type() -> None:
    assert set(EXAMPLES) == set(MESSAGE_TYPES)
    assert len(MESSAGE_TYPES) == len(set(MESSAGE_TYPES))


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_every_message_type_round_trips_through_json(message_type: type[Message]) -> None:
    original = EXAMPLES[message_type]

    decoded = decode_message(encode_message(original))

    assert type(decoded) is message_type
    assert decoded == original
    assert msgspec.structs.asdict(decoded) == msgspec.structs.asdict(original)


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_the_json_is_tagged_with_the_type_name(message_type: type[Message]) -> None:
    document = msgspec.json.decode(encode_message(EXAMPLES[message_type]))

    assert document["type"] == message_type.__name__
    assert document["id"] == EXAMPLES[message_type].id


def test_decimals_keep_their_exact_digits_through_json() -> None:
    fill = EXAMPLES[OrderFilled]

    decoded = decode_message(encode_message(fill))

    assert isinstance(decoded, OrderFilled)
    assert isinstance(decoded.last_price, Decimal)
    assert str(decoded.last_price) == "84390.10"
    assert str(decoded.commission) == "-0.00843901"


@settings(max_examples=200, deadline=None)
@given(
    quantity=st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10**6), places=3),
    price=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10**7), places=4),
    commission=st.decimals(min_value=Decimal(-1000), max_value=Decimal(1000), places=8),
)
def test_fill_decimals_round_trip_exactly(quantity: Decimal, price: Decimal, commission: Decimal) -> None:
    fill = OrderFilled(
        client_order_id="p-1",
        venue_order_id="1",
        symbol="BTCUSDT",
        trade_id="9",
        side=OrderSide.SELL,
        last_quantity=quantity,
        last_price=price,
        commission=commission,
        liquidity_side=LiquiditySide.TAKER,
        ts_event=1,
        ts_init=2,
    )

    decoded = decode_message(encode_message(fill))

    assert decoded == fill
    assert isinstance(decoded, OrderFilled)
    assert (str(decoded.last_quantity), str(decoded.last_price), str(decoded.commission)) == (
        str(quantity),
        str(price),
        str(commission),
    )


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_messages_are_immutable(message_type: type[Message]) -> None:
    message = EXAMPLES[message_type]

    with pytest.raises(AttributeError):
        message.ts_event = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        message.id = 0  # type: ignore[misc]

    assert message.ts_event == T1


def test_ids_increase_and_reset_restarts_them() -> None:
    first = OrderSubmitted(
        client_order_id="a-1", symbol="BTCUSDT", side=OrderSide.BUY, quantity=Decimal("0.5"), ts_event=1, ts_init=1
    )
    second = OrderSubmitted(
        client_order_id="a-2", symbol="BTCUSDT", side=OrderSide.BUY, quantity=Decimal("0.5"), ts_event=1, ts_init=1
    )
    assert second.id > first.id

    reset_message_ids()
    restarted = [
        OrderSubmitted(
            client_order_id=f"b-{i}",
            symbol="BTCUSDT",
            side=OrderSide.BUY,
            quantity=Decimal("0.5"),
            ts_event=1,
            ts_init=1,
        ).id
        for i in range(3)
    ]
    reset_message_ids(500)
    from_500 = next_message_id()

    assert restarted == [1, 2, 3]
    assert from_500 == 500


def test_an_explicit_id_is_kept() -> None:
    message = OrderSubmitted(
        client_order_id="a-1",
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        quantity=Decimal("0.5"),
        ts_event=1,
        ts_init=1,
        id=77,
    )

    assert message.id == 77
    assert decode_message(encode_message(message)).id == 77


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json at all",
        b"{",
        b"[1, 2, 3]",
        b'{"type": "NoSuchMessage", "ts_event": 1, "ts_init": 1, "id": 1}',
        b'{"ts_event": 1, "ts_init": 1, "id": 1}',
        b'{"type": "OrderSubmitted", "ts_event": 1, "ts_init": 1, "id": 1}',
        b'{"type": "OrderSubmitted", "client_order_id": "a", "symbol": "B", "ts_event": "x", "ts_init": 1, "id": 1}',
        b'{"type": "SetTradingState", "state": "PANIC", "reason": "", "ts_event": 1, "ts_init": 1, "id": 1}',
    ],
    ids=[
        "empty",
        "garbage",
        "truncated",
        "array",
        "unknown-type",
        "untagged",
        "missing-fields",
        "wrong-field-type",
        "bad-enum",
    ],
)
def test_decoding_garbage_or_an_unknown_type_raises(data: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_message(data)


def test_unknown_type_and_bad_fields_are_validation_errors() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_message(b'{"type": "NoSuchMessage", "ts_event": 1, "ts_init": 1, "id": 1}')
    with pytest.raises(msgspec.ValidationError):
        decode_message(b'{"type": "OrderSubmitted", "client_order_id": "a", "ts_event": 1, "ts_init": 1, "id": 1}')


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_commands_and_events_are_classified(message_type: type[Message]) -> None:
    assert message_type.is_command is (message_type in COMMANDS)
    assert EXAMPLES[message_type].is_command is (message_type in COMMANDS)


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_every_type_travels_on_its_lane(message_type: type[Message]) -> None:
    if message_type in CONTROL:
        expected = Lane.CONTROL
    elif message_type in MARKET_DATA:
        expected = Lane.MARKET_DATA
    else:
        expected = Lane.EXECUTION

    assert message_type.lane is expected
    assert EXAMPLES[message_type].lane is expected


def test_market_data_messages_carry_a_symbol() -> None:
    for message_type in MARKET_DATA:
        assert isinstance(EXAMPLES[message_type].symbol, str)  # type: ignore[attr-defined]
