"""The simulated Binance USD-M venue on real recorded bars and funding rates.

Prices come from the bundled BTCUSDT / ETHUSDT 1m bars of May 2025 and the
real funding file (``data/SOURCES.md`` datasets 1, 3 and 4); every expected
fill price, fee and funding amount is worked out by hand from those rows.
"""

from __future__ import annotations

import asyncio
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from venue_harness import ROOT, money, real_bars, real_funding, real_instruments, run_now

from keel.api.simulated_exchange import SimulatedExchange
from keel.core.clock import NANOS_PER_MILLI, SimulatedClock
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import MalformedDataError, RequestRejectedError
from keel.core.messages import (
    BarClosed,
    Event,
    FundingPaid,
    FundingRateUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    SubmitOrder,
)
from keel.core.orders import LiquiditySide, OrderSide, OrderStatus, OrderType, TimeInForce
from keel.market_data.loaders import load_mark_price_klines

MARK_KLINES_FILE = ROOT / "data" / "funding" / "binance_usdm_markprice_8h_2025-03_06.csv.gz"

INITIAL_BALANCE = Decimal("10000")
ONE_BPS = Decimal("0.0001")
EIGHT_HOURS_NS = 8 * 3_600_000 * NANOS_PER_MILLI

T = TypeVar("T")


# --- real data ----------------------------------------------------------------------------


def funding_inside(symbol: str, bars: tuple[BarClosed, ...]) -> list[FundingRateUpdated]:
    """The real funding settlements of ``symbol`` that fall inside the bars' span."""
    return [e for e in real_funding(symbol) if bars[0].open_time < e.funding_time <= bars[-1].ts_event]


def taker_buy_price(open_price: float, slippage_bps: Decimal, tick: Decimal) -> Decimal:
    """Open moved up by the slippage, rounded UP to the tick (away from a buyer)."""
    raw = money(open_price) * (1 + slippage_bps * ONE_BPS)
    return (raw / tick).to_integral_value(rounding=ROUND_CEILING) * tick


def taker_sell_price(open_price: float, slippage_bps: Decimal, tick: Decimal) -> Decimal:
    """Open moved down by the slippage, rounded DOWN to the tick (away from a seller)."""
    raw = money(open_price) * (1 - slippage_bps * ONE_BPS)
    return (raw / tick).to_integral_value(rounding=ROUND_FLOOR) * tick


# --- harness -------------------------------------------------------------------------------


class Venue:
    """A simulated exchange on a simulated clock, with every report collected."""

    def __init__(
        self, initial_balance: Decimal = INITIAL_BALANCE, slippage_bps: float = 1.0, start_ns: int | None = None
    ) -> None:
        self.clock = SimulatedClock(real_bars("BTCUSDT")[0].open_time if start_ns is None else start_ns)
        self.exchange = SimulatedExchange(
            real_instruments(), self.clock, initial_balance=initial_balance, leverage=5, slippage_bps=slippage_bps
        )
        self.reports: list[Event] = []
        self.exchange.set_report_handler(self.reports.append)

    def bar(self, bar: BarClosed) -> None:
        self.clock.advance_to(max(self.clock.timestamp_ns(), bar.ts_event))
        self.exchange.on_bar(bar)

    def bars(self, bars: tuple[BarClosed, ...] | list[BarClosed]) -> None:
        for bar in bars:
            self.bar(bar)

    def funding(self, event: FundingRateUpdated) -> None:
        self.clock.advance_to(max(self.clock.timestamp_ns(), event.ts_event))
        self.exchange.on_funding(event)

    def submit(self, command: SubmitOrder) -> None:
        self.exchange.submit(command)

    def of_type(self, kind: type[T]) -> list[T]:
        return [r for r in self.reports if isinstance(r, kind)]

    def market(
        self, client_order_id: str, side: OrderSide, quantity: str, symbol: str = "BTCUSDT", reduce_only: bool = False
    ) -> SubmitOrder:
        now = self.clock.timestamp_ns()
        return SubmitOrder(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            order_type=OrderType.MARKET,
            quantity=Decimal(quantity),
            reduce_only=reduce_only,
            ts_event=now,
            ts_init=now,
        )

    def limit(
        self,
        client_order_id: str,
        side: OrderSide,
        quantity: str,
        price: Decimal,
        time_in_force: TimeInForce = TimeInForce.GTC,
        symbol: str = "BTCUSDT",
    ) -> SubmitOrder:
        now = self.clock.timestamp_ns()
        return SubmitOrder(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            order_type=OrderType.LIMIT,
            quantity=Decimal(quantity),
            price=price,
            time_in_force=time_in_force,
            ts_event=now,
            ts_init=now,
        )


@pytest.fixture
def venue() -> Venue:
    return Venue()


BTC = "BTCUSDT"


# --- MARKET orders ----------------------------------------------------------------------------


def test_market_buy_fills_at_the_next_open_plus_slippage_rounded_up_to_the_tick(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    instrument = real_instruments()[BTC]
    venue.bar(bars[0])
    venue.submit(venue.market("m-1", OrderSide.BUY, "0.010"))
    filled_before_next_bar = venue.of_type(OrderFilled)

    # Act
    venue.bar(bars[1])

    # Assert
    assert filled_before_next_bar == []
    (fill,) = venue.of_type(OrderFilled)
    raw = money(bars[1].open) * (1 + ONE_BPS)
    assert raw == Decimal("95512.35028")  # 95502.8 x 1.0001: between two ticks
    expected = taker_buy_price(bars[1].open, Decimal(1), instrument.tick_size)
    assert expected == Decimal("95512.4")
    assert fill.last_price == expected
    assert fill.last_price != money(bars[0].close) and fill.last_price != money(bars[0].open)
    assert fill.liquidity_side is LiquiditySide.TAKER
    assert fill.last_quantity == Decimal("0.010")
    assert fill.commission == Decimal("0.010") * expected * instrument.taker_fee
    assert fill.commission == Decimal("0.47756200")
    assert fill.ts_event == bars[1].open_time
    assert venue.exchange.wallet_balance == INITIAL_BALANCE - fill.commission


def test_market_sell_fills_at_the_next_open_minus_slippage_rounded_down_to_the_tick(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    instrument = real_instruments()[BTC]
    venue.bar(bars[0])
    venue.submit(venue.market("m-1", OrderSide.SELL, "0.004"))

    # Act
    venue.bar(bars[1])

    # Assert
    (fill,) = venue.of_type(OrderFilled)
    assert money(bars[1].open) * (1 - ONE_BPS) == Decimal("95493.24972")
    assert fill.last_price == taker_sell_price(bars[1].open, Decimal(1), instrument.tick_size) == Decimal("95493.2")
    assert fill.commission == Decimal("0.004") * Decimal("95493.2") * Decimal("0.0005")
    assert venue.exchange.wallet_balance == INITIAL_BALANCE - fill.commission


def test_market_order_waits_for_the_bar_after_submission_whatever_the_slippage() -> None:
    # Arrange
    venue = Venue(slippage_bps=2.5)
    bars = real_bars(BTC)
    instrument = real_instruments()[BTC]
    venue.bars(bars[:5])
    venue.submit(venue.market("m-1", OrderSide.BUY, "0.002"))

    # Act
    accepted_only = list(venue.reports)
    venue.bar(bars[5])

    # Assert
    assert [type(r) for r in accepted_only] == [OrderAccepted]
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == taker_buy_price(bars[5].open, Decimal("2.5"), instrument.tick_size)
    assert fill.ts_event == bars[5].open_time


def test_a_bar_of_another_symbol_does_not_fill_the_order(venue: Venue) -> None:
    # Arrange
    venue.bar(real_bars(BTC)[0])
    venue.bar(real_bars("ETHUSDT")[0])
    venue.submit(venue.market("m-1", OrderSide.BUY, "0.002"))

    # Act
    venue.bar(real_bars("ETHUSDT")[1])

    # Assert
    assert venue.of_type(OrderFilled) == []
    assert [o.client_order_id for o in run_now(venue.exchange.open_orders())] == ["m-1"]


# --- funding ---------------------------------------------------------------------------------


def _open_position_until_funding(venue: Venue, side: OrderSide, quantity: str) -> FundingRateUpdated:
    bars = real_bars(BTC)
    (funding, *_) = funding_inside(BTC, bars)
    venue.bar(bars[0])
    venue.submit(venue.market("f-1", side, quantity))
    venue.bars([b for b in bars[1:] if b.ts_event <= funding.funding_time])
    return funding


def test_long_pays_a_positive_real_funding_rate_at_the_recorded_mark(venue: Venue) -> None:
    # Arrange
    funding = _open_position_until_funding(venue, OrderSide.BUY, "0.010")
    bars = real_bars(BTC)
    assert bars[0].open_time < funding.funding_time <= bars[-1].ts_event
    assert funding.rate == Decimal("0.00003745") and funding.mark_price == Decimal("95421.1")
    wallet_before = venue.exchange.wallet_balance

    # Act
    venue.funding(funding)

    # Assert
    (paid,) = venue.of_type(FundingPaid)
    assert paid.amount == -Decimal("0.010") * funding.mark_price * funding.rate
    assert paid.amount == Decimal("-0.03573520195")
    assert paid.position_quantity == Decimal("0.010")
    assert paid.rate == funding.rate and paid.mark_price == funding.mark_price
    assert paid.funding_time == funding.funding_time
    assert venue.exchange.wallet_balance == wallet_before + paid.amount
    assert venue.exchange.funding_received == paid.amount


def test_short_receives_a_positive_real_funding_rate(venue: Venue) -> None:
    # Arrange
    funding = _open_position_until_funding(venue, OrderSide.SELL, "0.010")
    wallet_before = venue.exchange.wallet_balance

    # Act
    venue.funding(funding)

    # Assert
    (paid,) = venue.of_type(FundingPaid)
    assert paid.amount == Decimal("0.03573520195")
    assert paid.position_quantity == Decimal("-0.010")
    assert venue.exchange.wallet_balance == wallet_before + paid.amount


def test_no_position_means_no_funding_report(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    (funding, *_) = funding_inside(BTC, bars)
    venue.bars([b for b in bars if b.ts_event <= funding.funding_time])

    # Act
    venue.funding(funding)

    # Assert
    assert venue.of_type(FundingPaid) == []
    assert venue.exchange.wallet_balance == INITIAL_BALANCE


def test_funding_of_a_closed_position_pays_nothing(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    (funding, *_) = funding_inside(BTC, bars)
    venue.bar(bars[0])
    venue.submit(venue.market("f-1", OrderSide.BUY, "0.002"))
    venue.bar(bars[1])
    venue.submit(venue.market("f-2", OrderSide.SELL, "0.002"))
    venue.bars([b for b in bars[2:] if b.ts_event <= funding.funding_time])
    wallet_before = venue.exchange.wallet_balance

    # Act
    venue.funding(funding)

    # Assert
    assert venue.of_type(FundingPaid) == []
    assert venue.exchange.wallet_balance == wallet_before


def test_missing_mark_price_for_an_open_position_is_malformed_data(venue: Venue) -> None:
    # Arrange
    funding = _open_position_until_funding(venue, OrderSide.BUY, "0.010")
    without_mark = FundingRateUpdated(
        symbol=BTC,
        funding_time=funding.funding_time,
        rate=funding.rate,
        mark_price=None,
        ts_event=funding.ts_event,
        ts_init=funding.ts_init,
    )
    wallet_before = venue.exchange.wallet_balance

    # Act / Assert
    with pytest.raises(MalformedDataError):
        venue.funding(without_mark)
    assert venue.of_type(FundingPaid) == []
    assert venue.exchange.wallet_balance == wallet_before


def test_real_enausdt_funding_row_without_mark_price_is_malformed_data_for_an_open_position() -> None:
    # Arrange: ENAUSDT has no 1m bars bundled; its real 8h mark-price klines serve as bars.
    frame = load_mark_price_klines(MARK_KLINES_FILE).frame
    rows = frame[frame["symbol"] == "ENAUSDT"].head(3)
    klines = [
        BarClosed(
            symbol="ENAUSDT",
            interval="8h",
            open_time=int(r.open_time_ms) * NANOS_PER_MILLI,
            open=float(r.open),
            high=float(r.high),
            low=float(r.low),
            close=float(r.close),
            volume=0.0,
            ts_event=int(r.open_time_ms) * NANOS_PER_MILLI + EIGHT_HOURS_NS,
            ts_init=int(r.open_time_ms) * NANOS_PER_MILLI + EIGHT_HOURS_NS,
        )
        for r in rows.itertuples(index=False)
    ]
    missing = next(e for e in real_funding("ENAUSDT") if e.mark_price is None and klines[1].ts_event < e.funding_time)
    assert missing.funding_time // (3_600_000 * NANOS_PER_MILLI) % 24 in (4, 12, 20)
    venue = Venue(start_ns=klines[0].open_time)
    venue.bar(klines[0])
    venue.submit(venue.market("ena-1", OrderSide.BUY, "100", symbol="ENAUSDT"))
    venue.bar(klines[1])
    assert [p.quantity for p in run_now(venue.exchange.positions())] == [Decimal("100")]

    # Act / Assert
    with pytest.raises(MalformedDataError):
        venue.funding(missing)
    assert venue.of_type(FundingPaid) == []


# --- rejections ----------------------------------------------------------------------------------


def _step_violation_code() -> int:
    last = money(real_bars(BTC)[0].close)
    violation = real_instruments()[BTC].check_order(
        side="BUY", price=None, quantity=Decimal("0.0025"), reference_price=last, market=True, reduce_only=False
    )
    assert violation is not None
    return int(violation.code)


@pytest.mark.parametrize(
    ("case", "build", "expected_code"),
    [
        (
            "unknown symbol",
            lambda v: v.market("r-1", OrderSide.BUY, "1", symbol="DOGEUSDT"),
            lambda: BinanceErrorCode.BAD_SYMBOL,
        ),
        ("quantity off the step", lambda v: v.market("r-1", OrderSide.BUY, "0.0025"), _step_violation_code),
        (
            "below min notional",
            lambda v: v.market("r-1", OrderSide.BUY, "0.001"),
            lambda: BinanceErrorCode.MIN_NOTIONAL,
        ),
        (
            "reduce-only without a position",
            lambda v: v.market("r-1", OrderSide.SELL, "0.002", reduce_only=True),
            lambda: BinanceErrorCode.REDUCE_ONLY_REJECT,
        ),
        (
            "post-only that would take",
            lambda v: v.limit("r-1", OrderSide.BUY, "0.002", money(real_bars(BTC)[0].close), TimeInForce.GTX),
            lambda: BinanceErrorCode.GTX_ORDER_REJECT,
        ),
        (
            "insufficient margin",
            lambda v: v.market("r-1", OrderSide.BUY, "100"),
            lambda: BinanceErrorCode.MARGIN_NOT_SUFFICIENT,
        ),
    ],
)
def test_rejections_carry_binance_codes_and_a_reason(venue: Venue, case: str, build: Any, expected_code: Any) -> None:
    # Arrange
    venue.bar(real_bars(BTC)[0])
    command = build(venue)

    # Act
    venue.submit(command)
    venue.bar(real_bars(BTC)[1])

    # Assert
    (rejection,) = venue.reports
    assert isinstance(rejection, OrderRejected), case
    assert rejection.code == int(expected_code())
    assert rejection.client_order_id == "r-1"
    assert rejection.reason.strip() != ""
    assert run_now(venue.exchange.open_orders()) == []
    assert run_now(venue.exchange.query_order(command.symbol, "r-1")) is None
    assert venue.exchange.wallet_balance == INITIAL_BALANCE


def test_quantity_off_the_step_uses_the_instrument_check_code() -> None:
    # Arrange / Act
    code = _step_violation_code()

    # Assert: the instrument names a precision or a step error, as Binance does
    assert code in (BinanceErrorCode.BAD_PRECISION, BinanceErrorCode.QTY_NOT_INCREASED_BY_STEP_SIZE)


def test_reduce_only_buy_against_a_long_would_increase_it_and_is_rejected(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    venue.bar(bars[0])
    venue.submit(venue.market("o-1", OrderSide.BUY, "0.002"))
    venue.bar(bars[1])
    venue.reports.clear()

    # Act
    venue.submit(venue.market("o-2", OrderSide.BUY, "0.002", reduce_only=True))

    # Assert
    (rejection,) = venue.reports
    assert isinstance(rejection, OrderRejected)
    assert rejection.code == BinanceErrorCode.REDUCE_ONLY_REJECT
    assert rejection.reason


def test_reduce_only_sell_of_a_long_is_accepted_even_below_min_notional(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    venue.bar(bars[0])
    venue.submit(venue.market("o-1", OrderSide.BUY, "0.002"))
    venue.bar(bars[1])
    venue.reports.clear()

    # Act
    venue.submit(venue.market("o-2", OrderSide.SELL, "0.001", reduce_only=True))
    venue.bar(bars[2])

    # Assert
    assert [type(r) for r in venue.reports] == [OrderAccepted, OrderFilled]
    assert [p.quantity for p in run_now(venue.exchange.positions())] == [Decimal("0.001")]


def test_duplicate_client_order_id_is_rejected(venue: Venue) -> None:
    # Arrange
    venue.bar(real_bars(BTC)[0])
    venue.submit(venue.market("d-1", OrderSide.BUY, "0.002"))

    # Act
    venue.submit(venue.market("d-1", OrderSide.BUY, "0.003"))

    # Assert
    accepted, rejection = venue.reports
    assert isinstance(accepted, OrderAccepted)
    assert isinstance(rejection, OrderRejected)
    assert rejection.code == BinanceErrorCode.DUPLICATED_CLIENT_ORDER_ID
    assert rejection.reason
    report = run_now(venue.exchange.query_order(BTC, "d-1"))
    assert report is not None and report.quantity == Decimal("0.002")


def test_order_before_any_price_is_refused_with_a_reason(venue: Venue) -> None:
    # Arrange
    command = venue.market("p-1", OrderSide.BUY, "0.002")

    # Act
    venue.submit(command)

    # Assert
    (rejection,) = venue.reports
    assert isinstance(rejection, OrderRejected)
    assert rejection.reason


# --- LIMIT orders ----------------------------------------------------------------------------------


def test_resting_buy_fills_as_maker_at_its_price_only_when_a_bar_trades_below_it(venue: Venue) -> None:
    # Arrange: after bar 1 (close 95478.1) a buy rests at 95457.6; bars 2 and 3 touch it
    # (low == limit), bar 4 stays above, bar 5 trades through (low 95450.3).
    bars = real_bars(BTC)
    instrument = real_instruments()[BTC]
    limit = Decimal("95457.6")
    assert money(bars[1].close) > limit
    assert money(bars[2].low) == limit and money(bars[3].low) == limit and money(bars[4].low) > limit
    assert money(bars[5].low) < limit
    venue.bars(bars[:2])
    venue.submit(venue.limit("l-1", OrderSide.BUY, "0.003", limit))

    # Act
    venue.bars(bars[2:5])
    fills_while_touched = venue.of_type(OrderFilled)
    venue.bar(bars[5])

    # Assert
    assert fills_while_touched == []
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == limit
    assert fill.liquidity_side is LiquiditySide.MAKER
    assert fill.commission == Decimal("0.003") * limit * instrument.maker_fee
    assert fill.ts_event == bars[5].ts_event
    assert venue.exchange.wallet_balance == INITIAL_BALANCE - fill.commission
    report = run_now(venue.exchange.query_order(BTC, "l-1"))
    assert report is not None and report.status is OrderStatus.FILLED and report.average_price == limit


def test_resting_sell_fills_as_maker_at_its_price_only_when_a_bar_trades_above_it(venue: Venue) -> None:
    # Arrange: after bar 10 (close 95412.3) a sell rests at 95435.7, the high of bar 11.
    bars = real_bars(BTC)
    limit = Decimal("95435.7")
    assert money(bars[10].close) < limit and money(bars[11].high) == limit
    assert all(money(b.high) <= limit for b in bars[11:15]) and money(bars[15].high) > limit
    venue.bars(bars[:11])
    venue.submit(venue.limit("l-1", OrderSide.SELL, "0.003", limit))

    # Act
    venue.bars(bars[11:15])
    fills_while_below = venue.of_type(OrderFilled)
    venue.bar(bars[15])

    # Assert
    assert fills_while_below == []
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == limit
    assert fill.liquidity_side is LiquiditySide.MAKER
    assert [p.quantity for p in run_now(venue.exchange.positions())] == [Decimal("-0.003")]


def test_marketable_limit_fills_as_taker_at_the_slipped_open_when_below_its_limit(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    instrument = real_instruments()[BTC]
    limit = Decimal("95530.0")  # above the last close 95502.7: marketable
    venue.bar(bars[0])
    venue.submit(venue.limit("l-1", OrderSide.BUY, "0.002", limit))

    # Act
    venue.bar(bars[1])

    # Assert
    (fill,) = venue.of_type(OrderFilled)
    slipped = taker_buy_price(bars[1].open, Decimal(1), instrument.tick_size)
    assert slipped == Decimal("95512.4") < limit
    assert fill.last_price == min(slipped, limit) == slipped
    assert fill.liquidity_side is LiquiditySide.TAKER
    assert fill.commission == Decimal("0.002") * slipped * instrument.taker_fee


def test_marketable_limit_fills_as_taker_at_its_limit_when_the_slipped_open_is_above_it(venue: Venue) -> None:
    # Arrange: the next open 95502.8 crosses 95505.0, the slipped open 95512.4 does not
    bars = real_bars(BTC)
    instrument = real_instruments()[BTC]
    limit = Decimal("95505.0")
    assert money(bars[1].open) <= limit < taker_buy_price(bars[1].open, Decimal(1), instrument.tick_size)
    venue.bar(bars[0])
    venue.submit(venue.limit("l-1", OrderSide.BUY, "0.002", limit))

    # Act
    venue.bar(bars[1])

    # Assert
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == limit
    assert fill.liquidity_side is LiquiditySide.TAKER
    assert fill.commission == Decimal("0.002") * limit * instrument.taker_fee


def test_ioc_limit_that_does_not_cross_the_next_open_expires(venue: Venue) -> None:
    # Arrange: limit = last close 95502.7 (marketable on arrival); the next open is 95502.8
    bars = real_bars(BTC)
    limit = money(bars[0].close)
    assert money(bars[1].open) > limit
    venue.bar(bars[0])
    venue.submit(venue.limit("i-1", OrderSide.BUY, "0.002", limit, TimeInForce.IOC))

    # Act
    venue.bar(bars[1])

    # Assert
    assert [type(r) for r in venue.reports] == [OrderAccepted, OrderExpired]
    (expired,) = venue.of_type(OrderExpired)
    assert expired.client_order_id == "i-1"
    assert run_now(venue.exchange.open_orders()) == []
    report = run_now(venue.exchange.query_order(BTC, "i-1"))
    assert report is not None and report.status is OrderStatus.EXPIRED
    assert venue.exchange.wallet_balance == INITIAL_BALANCE


def test_ioc_limit_that_crosses_the_next_open_fills_as_taker(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    limit = Decimal("95520.0")
    venue.bar(bars[0])
    venue.submit(venue.limit("i-1", OrderSide.BUY, "0.002", limit, TimeInForce.IOC))

    # Act
    venue.bar(bars[1])

    # Assert
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == Decimal("95512.4")
    assert fill.liquidity_side is LiquiditySide.TAKER


def test_post_only_below_the_market_rests_and_fills_as_maker(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    limit = Decimal("95457.6")
    venue.bars(bars[:2])
    venue.submit(venue.limit("g-1", OrderSide.BUY, "0.003", limit, TimeInForce.GTX))

    # Act
    venue.bars(bars[2:6])

    # Assert
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == limit and fill.liquidity_side is LiquiditySide.MAKER


# --- cancel -----------------------------------------------------------------------------------------


def test_cancel_of_a_working_order_reports_canceled_and_removes_it(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    venue.bar(bars[0])
    venue.submit(venue.limit("c-1", OrderSide.BUY, "0.002", Decimal("94000.0")))

    # Act
    run_now(venue.exchange.cancel_order(BTC, "c-1"))

    # Assert
    (canceled,) = venue.of_type(OrderCanceled)
    assert canceled.client_order_id == "c-1" and canceled.symbol == BTC
    assert run_now(venue.exchange.open_orders()) == []
    report = run_now(venue.exchange.query_order(BTC, "c-1"))
    assert report is not None and report.status is OrderStatus.CANCELED
    venue.bars(bars[1:60])
    assert venue.of_type(OrderFilled) == []


def test_cancel_through_asyncio_run_works_on_the_synchronous_venue(venue: Venue) -> None:
    # Arrange
    venue.bar(real_bars(BTC)[0])
    asyncio.run(venue.exchange.submit_order(venue.limit("c-1", OrderSide.BUY, "0.002", Decimal("94000.0"))))

    # Act
    asyncio.run(venue.exchange.cancel_order(BTC, "c-1"))

    # Assert
    assert [type(r) for r in venue.reports] == [OrderAccepted, OrderCanceled]


@pytest.mark.parametrize("client_order_id", ["never-sent", "c-1"])
def test_cancel_of_an_unknown_or_finished_order_is_rejected_with_2011(venue: Venue, client_order_id: str) -> None:
    # Arrange: c-1 is a market order that has filled, so it is no longer working
    bars = real_bars(BTC)
    venue.bar(bars[0])
    venue.submit(venue.market("c-1", OrderSide.BUY, "0.002"))
    venue.bar(bars[1])

    # Act / Assert
    with pytest.raises(RequestRejectedError) as raised:
        run_now(venue.exchange.cancel_order(BTC, client_order_id))
    assert raised.value.code == BinanceErrorCode.CANCEL_REJECTED == -2011
    assert venue.of_type(OrderCanceled) == []


def test_cancel_all_of_one_symbol_then_of_every_symbol(venue: Venue) -> None:
    # Arrange
    venue.bar(real_bars(BTC)[0])
    venue.bar(real_bars("ETHUSDT")[0])
    venue.submit(venue.limit("b-1", OrderSide.BUY, "0.002", Decimal("94000.0")))
    venue.submit(venue.limit("b-2", OrderSide.SELL, "0.002", Decimal("97000.0")))
    venue.submit(venue.limit("e-1", OrderSide.BUY, "0.020", Decimal("1800.00"), symbol="ETHUSDT"))

    # Act
    run_now(venue.exchange.cancel_all_orders(BTC))
    after_btc = [o.client_order_id for o in run_now(venue.exchange.open_orders())]
    run_now(venue.exchange.cancel_all_orders())

    # Assert
    assert after_btc == ["e-1"]
    assert [c.client_order_id for c in venue.of_type(OrderCanceled)] == ["b-1", "b-2", "e-1"]
    assert run_now(venue.exchange.open_orders()) == []


# --- state queries -------------------------------------------------------------------------------------


def test_queries_reflect_positions_orders_and_balances(venue: Venue) -> None:
    # Arrange
    bars = real_bars(BTC)
    instrument = real_instruments()[BTC]
    venue.bar(bars[0])
    venue.submit(venue.market("q-1", OrderSide.BUY, "0.010"))
    venue.bar(bars[1])
    venue.submit(venue.limit("q-2", OrderSide.BUY, "0.002", Decimal("94000.0")))

    # Act
    venue.bar(bars[2])
    positions = run_now(venue.exchange.positions())
    balance = run_now(venue.exchange.balances())
    open_orders = run_now(venue.exchange.open_orders(BTC))
    filled = run_now(venue.exchange.query_order(BTC, "q-1"))
    info = run_now(venue.exchange.exchange_info())

    # Assert
    entry = Decimal("95512.4")
    mark = money(bars[2].close)
    fee = Decimal("0.010") * entry * instrument.taker_fee
    (position,) = positions
    assert (position.symbol, position.quantity, position.entry_price) == (BTC, Decimal("0.010"), entry)
    assert position.mark_price == mark
    assert position.unrealized_pnl == Decimal("0.010") * (mark - entry)
    assert position.leverage == 5
    assert [o.client_order_id for o in open_orders] == ["q-2"]
    assert open_orders[0].status is OrderStatus.ACCEPTED and open_orders[0].price == Decimal("94000.0")
    assert run_now(venue.exchange.open_orders("ETHUSDT")) == []
    assert filled is not None and filled.status is OrderStatus.FILLED
    assert filled.filled_quantity == Decimal("0.010") and filled.average_price == entry
    assert run_now(venue.exchange.query_order("ETHUSDT", "q-1")) is None
    assert balance.asset == "USDT"
    assert balance.wallet_balance == INITIAL_BALANCE - fee
    assert balance.unrealized_pnl == position.unrealized_pnl
    assert balance.margin_balance == balance.wallet_balance + balance.unrealized_pnl
    initial_margin = (Decimal("0.010") * mark + Decimal("0.002") * Decimal("94000.0")) / 5
    assert balance.available_balance == balance.margin_balance - initial_margin
    assert info[BTC] == instrument


def test_balances_of_a_fresh_account(venue: Venue) -> None:
    # Arrange / Act
    balance = run_now(venue.exchange.balances())

    # Assert
    assert balance.wallet_balance == balance.margin_balance == balance.available_balance == INITIAL_BALANCE
    assert balance.unrealized_pnl == 0
    assert run_now(venue.exchange.positions()) == []


# --- accounting property ----------------------------------------------------------------------------


class ReferenceBook:
    """Hand-written average-cost position accounting, independent of keel's."""

    def __init__(self, initial_balance: Decimal) -> None:
        self.quantity = Decimal(0)
        self.entry = Decimal(0)
        self.realized = Decimal(0)
        self.wallet = initial_balance

    def fill(self, signed: Decimal, price: Decimal, commission: Decimal) -> None:
        if self.quantity == 0 or (self.quantity > 0) == (signed > 0):
            new = self.quantity + signed
            self.entry = (abs(self.quantity) * self.entry + abs(signed) * price) / abs(new)
            self.quantity = new
            self.wallet += -commission
            return
        closing = min(abs(signed), abs(self.quantity))
        sign = 1 if self.quantity > 0 else -1
        realized = closing * (price - self.entry) * sign
        self.realized += realized
        self.wallet += realized - commission
        remainder = self.quantity + signed
        if remainder == 0:
            self.entry = Decimal(0)
        elif (remainder > 0) != (self.quantity > 0):
            self.entry = price
        self.quantity = remainder


signed_steps = st.integers(min_value=2, max_value=40).flatmap(
    lambda n: st.lists(
        st.tuples(st.sampled_from([OrderSide.BUY, OrderSide.SELL]), st.integers(min_value=2, max_value=60)),
        min_size=1,
        max_size=n,
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders=signed_steps, start=st.integers(min_value=0, max_value=40))
@example(orders=[(OrderSide.BUY, 10), (OrderSide.BUY, 7), (OrderSide.BUY, 3)] + [(OrderSide.SELL, 4)] * 30, start=0)
def test_wallet_equals_initial_minus_fees_plus_realized_plus_funding(
    orders: list[tuple[OrderSide, int]], start: int
) -> None:
    # Arrange: one market order per bar, each filled at the open of the next real bar;
    # the real 16:00 UTC funding settles in between when the run spans it.
    venue = Venue(initial_balance=Decimal("1000000"))
    bars = real_bars(BTC)[start : start + len(orders) + 1]
    funding = [e for e in funding_inside(BTC, real_bars(BTC)) if bars[0].ts_event < e.funding_time]
    step = real_instruments()[BTC].market_step_size
    book = ReferenceBook(Decimal("1000000"))
    expected_funding = Decimal(0)
    venue.bar(bars[0])

    # Act
    for index, (side, steps) in enumerate(orders):
        venue.submit(venue.market(f"h-{index}", side, str(steps * step)))
        bar = bars[index + 1]
        for event in [e for e in funding if e.funding_time <= bar.open_time]:
            venue.funding(event)
            payment = -book.quantity * event.mark_price * event.rate  # type: ignore[operator]
            expected_funding += payment
            book.wallet += payment
            funding.remove(event)
        venue.bar(bar)
        (fill,) = [f for f in venue.of_type(OrderFilled) if f.client_order_id == f"h-{index}"]
        book.fill(fill.last_quantity * fill.side.sign, fill.last_price, fill.commission)

    # Assert
    fills = venue.of_type(OrderFilled)
    assert len(venue.of_type(OrderRejected)) == 0
    assert len(fills) == len(orders)
    fees = sum((f.commission for f in fills), Decimal(0))
    funding_paid = sum((p.amount for p in venue.of_type(FundingPaid)), Decimal(0))
    assert funding_paid == expected_funding
    assert venue.exchange.fees_paid == fees
    # Booked fill by fill (wallet += realized - commission, += funding) the balance is exact; summed
    # in one go it may differ in the 28th significant digit, because an average entry price
    # can be a repeating decimal (three buys at different prices).
    assert venue.exchange.wallet_balance == book.wallet
    assert abs(venue.exchange.wallet_balance - (Decimal("1000000") - fees + book.realized + funding_paid)) < Decimal(
        "1e-18"
    )
    signed_total = sum((f.last_quantity * f.side.sign for f in fills), Decimal(0))
    positions = run_now(venue.exchange.positions())
    if signed_total == 0:
        assert positions == []
    else:
        (position,) = positions
        assert position.quantity == signed_total == book.quantity
        assert position.entry_price == book.entry
    # Cash-flow identity, free of average-price division: equity = cash + position x mark.
    mark = money(bars[len(orders)].close)
    cash_flow = -sum((f.last_quantity * f.side.sign * f.last_price for f in fills), Decimal(0))
    equity = Decimal("1000000") - fees + funding_paid + cash_flow + signed_total * mark
    assert abs(venue.exchange.balance().margin_balance - equity) < Decimal("1e-12")
