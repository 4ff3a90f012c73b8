"""Margin, liquidation, funding and snapshots of the simulated venue, on real bars and the real funding file.

Hand computations use the real rows: BTCUSDT bar 1 of 2025-05-04 opens at
95502.8 (a taker buy fills at 95512.4 after 1 bp of slippage), the real
16:00 UTC settlement pays 0.00003745 at mark 95421.1; ENAUSDT settles every
4 hours, and its 04/12/20 UTC rows carry no mark price.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from venue_harness import (
    ROOT,
    Harness,
    HarnessFactory,
    money,
    real_bars,
    real_funding,
    strip_ids,
    with_funding,
)

from keel.core.clock import NANOS_PER_HOUR, NANOS_PER_MILLI
from keel.core.errors import MalformedDataError
from keel.core.messages import BarClosed, FundingPaid, OrderFilled, PositionLiquidated
from keel.core.orders import LiquiditySide, OrderSide, OrderStatus, OrderType
from keel.core.ports import MarginType
from keel.market_data.loaders import load_mark_price_klines

BTC = "BTCUSDT"
BARS = real_bars(BTC)
ENTRY = Decimal("95512.4")  # 95502.8 * 1.0001 = 95512.35028, rounded up to the tick
FIRST_FUNDING = next(e for e in real_funding(BTC) if e.funding_time > BARS[0].open_time)  # 2025-05-04 16:00
TAKER = Decimal("0.0005")


def isolated_long(venue: Harness, quantity: str, leverage: int) -> None:
    venue.run(venue.exchange.set_margin_type(BTC, MarginType.ISOLATED))
    venue.run(venue.exchange.set_leverage(BTC, leverage))
    venue.feed(BARS[0])
    venue.submit(OrderSide.BUY, quantity)
    venue.feed(BARS[1])


def test_isolated_position_reports_binances_liquidation_and_break_even_prices(bar_venue: HarnessFactory) -> None:
    # Arrange / Act: 0.1 BTC at 95512.4, 100x isolated
    venue = bar_venue()
    isolated_long(venue, "0.100", 100)

    # Assert: isolated wallet = 9551.24 / 100 - fee 4.77562 = 90.73678;
    # LP = (90.73678 + 0 - 0.1 * 95512.4) / (0.1 * 0.004 - 0.1); break-even = (9551.24 + 4.77562) / 0.1
    (position,) = venue.run(venue.exchange.positions())
    assert position.isolated_margin == Decimal("90.73678")
    assert position.liquidation_price == Decimal("-9460.50322") / Decimal("-0.0996")
    assert position.break_even_price == Decimal("95560.1562")
    assert position.maintenance_margin == Decimal("0.1") * money(BARS[1].close) * Decimal("0.004")
    assert position.initial_margin == Decimal("0.1") * money(BARS[1].close) / 100
    balance = venue.exchange.balance()
    assert balance.cross_wallet_balance == Decimal("10000") - Decimal("95.5124")
    assert balance.wallet_balance == Decimal("10000") - Decimal("4.77562")


def test_cross_position_reports_binances_liquidation_price(bar_venue: HarnessFactory) -> None:
    # Arrange / Act: 0.5 BTC at 95512.4 on the 10000 cross wallet, fee 23.8781
    venue = bar_venue()
    venue.feed(BARS[0])
    venue.submit(OrderSide.BUY, "0.500")
    venue.feed(BARS[1])

    # Assert: LP = (9976.1219 + 0 - 47756.2) / (0.5 * 0.004 - 0.5)
    (position,) = venue.run(venue.exchange.positions())
    assert position.liquidation_price == Decimal("-37780.0781") / Decimal("-0.498")
    assert position.margin_type is MarginType.CROSSED and position.isolated_margin == 0


def test_isolated_long_is_liquidated_at_the_first_close_through_its_liquidation_price(
    bar_venue: HarnessFactory,
) -> None:
    # Arrange: the position pays the real 16:00 funding (isolated wallet 90.73678 - 0.357..., so its
    # liquidation price rises); replay the real bars with their funding until it is liquidated.
    venue = bar_venue()
    isolated_long(venue, "0.100", 100)
    assert (FIRST_FUNDING.rate, FIRST_FUNDING.mark_price) == (Decimal("0.00003745"), Decimal("95421.1"))
    paid = Decimal("0.1") * Decimal("95421.1") * Decimal("0.00003745")
    wallet = Decimal("90.73678") - paid
    liquidation_price = (wallet - Decimal("0.1") * ENTRY) / (Decimal("0.0004") - Decimal("0.1"))
    first_through = next(i for i, b in enumerate(BARS) if i > 1 and money(b.close) <= liquidation_price)
    assert FIRST_FUNDING.funding_time < BARS[first_through].ts_event

    # Act
    venue.feed(*with_funding(BARS[2:]))

    # Assert: closed at that bar's close (the mark), the whole margin left taken as clearance fee
    (liquidated,) = venue.of_type(PositionLiquidated)
    mark = money(BARS[first_through].close)
    assert liquidated.ts_event == BARS[first_through].ts_event
    assert (liquidated.price, liquidated.mark_price, liquidated.quantity) == (mark, mark, Decimal("0.100"))
    assert liquidated.side is OrderSide.SELL and liquidated.margin_type is MarginType.ISOLATED
    assert liquidated.realized_pnl == Decimal("0.1") * (mark - ENTRY)
    assert liquidated.liquidation_fee == wallet + liquidated.realized_pnl
    assert liquidated.insurance_fund_covered == 0
    fill = venue.of_type(OrderFilled)[-1]
    assert fill.client_order_id == liquidated.client_order_id == "autoclose-1"
    assert (fill.last_price, fill.commission, fill.liquidity_side) == (
        mark,
        liquidated.liquidation_fee,
        LiquiditySide.TAKER,
    )
    assert venue.run(venue.exchange.positions()) == []
    assert venue.exchange.wallet_balance == Decimal("10000") - Decimal("95.5124")


def test_liquidation_cancels_the_symbols_open_orders(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue()
    isolated_long(venue, "0.100", 100)
    resting = venue.limit(OrderSide.BUY, "0.002", "90000.0")

    # Act
    venue.feed(*with_funding(BARS[2:]))

    # Assert
    assert len(venue.of_type(PositionLiquidated)) == 1
    report = venue.run(venue.exchange.query_order(BTC, resting.client_order_id))
    assert report is not None and report.status is OrderStatus.CANCELED


def test_a_well_margined_position_is_never_liquidated(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue()
    venue.feed(BARS[0])
    venue.submit(OrderSide.BUY, "0.050")

    # Act
    venue.feed(*with_funding(BARS[1:]))

    # Assert
    assert venue.of_type(PositionLiquidated) == []
    settlements = [e for e in with_funding(BARS[1:]) if not isinstance(e, BarClosed)]
    assert len(venue.of_type(FundingPaid)) == len(settlements) == 2


# --- funding --------------------------------------------------------------------------------------------


def test_a_held_position_whose_funding_time_passes_without_a_recorded_rate_is_an_error(
    bar_venue: HarnessFactory,
) -> None:
    # Arrange: a long through 16:00 UTC, replayed without the funding file's 16:00 row
    venue = bar_venue()
    venue.feed(BARS[0])
    venue.submit(OrderSide.BUY, "0.010")
    funding_time = FIRST_FUNDING.funding_time
    before = [b for b in BARS[1:] if b.ts_event <= funding_time + 60 * 1_000_000_000]
    after = next(b for b in BARS if b.ts_event > funding_time + 60 * 1_000_000_000)
    venue.feed(*before)

    # Act / Assert
    with pytest.raises(MalformedDataError, match="no funding rate recorded for BTCUSDT"):
        venue.feed(after)
    assert venue.of_type(FundingPaid) == []


def ena_klines() -> list[BarClosed]:
    """ENAUSDT's real 8h mark-price klines (no 1m bars are bundled) as bars without volume."""
    frame = load_mark_price_klines(ROOT / "data" / "funding" / "binance_usdm_markprice_8h_2025-03_06.csv.gz").frame
    rows = frame[frame["symbol"] == "ENAUSDT"].head(4)
    return [
        BarClosed(
            symbol="ENAUSDT",
            interval="8h",
            open_time=int(r.open_time_ms) * NANOS_PER_MILLI,
            open=float(r.open),
            high=float(r.high),
            low=float(r.low),
            close=float(r.close),
            volume=0.0,
            ts_event=int(r.open_time_ms) * NANOS_PER_MILLI + 8 * NANOS_PER_HOUR,
            ts_init=int(r.open_time_ms) * NANOS_PER_MILLI + 8 * NANOS_PER_HOUR,
        )
        for r in rows.itertuples(index=False)
    ]


def ena_venue() -> tuple[Harness, list[BarClosed]]:
    klines = ena_klines()
    return Harness(klines[0].open_time, funding_interval_hours={"ENAUSDT": 4}), klines


def test_four_hourly_funding_is_paid_from_the_real_rows_and_a_row_without_mark_price_is_an_error() -> None:
    # Arrange: ENAUSDT 2025-03-17: a 1000 ENA long filled at the 00:00 kline's open 0.3584 (+1 bp ->
    # 0.3585); settlements at 08:00 (rate 0.00005, mark 0.3698) and 12:00 (no mark price recorded).
    venue, klines = ena_venue()
    rows = [e for e in real_funding("ENAUSDT") if klines[1].open_time <= e.funding_time <= klines[2].ts_event]
    assert [e.funding_time // NANOS_PER_HOUR % 24 for e in rows] == [0, 4, 8, 12, 16]
    venue.feed(klines[0])
    venue.submit(OrderSide.BUY, "1000", symbol="ENAUSDT")
    venue.feed(*rows[:2], klines[1])
    (fill,) = venue.of_type(OrderFilled)
    assert fill.last_price == Decimal("0.3585")

    # Act
    venue.feed(rows[2])

    # Assert: a long pays 1000 * 0.3698 * 0.00005
    (paid,) = venue.of_type(FundingPaid)
    assert (paid.rate, paid.mark_price) == (Decimal("0.00005"), Decimal("0.3698"))
    assert paid.amount == Decimal("-0.018490")
    with pytest.raises(MalformedDataError, match="no recorded mark price"):
        venue.feed(rows[3])


def test_a_missing_four_hourly_settlement_is_detected_on_the_four_hour_grid() -> None:
    # Arrange: as above, but the 12:00 row never arrives; the 16:00 kline close comes next
    venue, klines = ena_venue()
    rows = [e for e in real_funding("ENAUSDT") if klines[1].open_time <= e.funding_time <= klines[2].ts_event]
    venue.feed(klines[0])
    venue.submit(OrderSide.BUY, "1000", symbol="ENAUSDT")
    venue.feed(*rows[:2], klines[1], rows[2])

    # Act / Assert
    with pytest.raises(MalformedDataError, match="no funding rate recorded for ENAUSDT at 1742212800000000000"):
        venue.feed(klines[2])


# --- snapshot and determinism ---------------------------------------------------------------------------


def scripted_run(venue: Harness, events: list, orders_at: dict[int, list]) -> None:
    for index, event in enumerate(events):
        venue.feed(event)
        for action in orders_at.get(index, []):
            action(venue)


def test_a_restored_snapshot_continues_exactly_like_the_original() -> None:
    # Arrange: isolated and cross positions, resting, stop and in-flight orders at the snapshot
    events = with_funding(BARS[:120])
    settings = {"initial_balance": Decimal("50000"), "latency_ns": 2_000_000_000, "latency_jitter_ns": 900_000_000}
    orders_at = {
        0: [lambda v: v.submit(OrderSide.BUY, "0.100")],
        3: [lambda v: v.limit(OrderSide.BUY, "0.050", "95420.0")],
        5: [
            lambda v: v.submit(
                OrderSide.SELL, "0.050", OrderType.STOP_MARKET, stop_price=Decimal("95380.0"), reduce_only=True
            )
        ],
        40: [lambda v: v.limit(OrderSide.SELL, "0.030", "95600.0"), lambda v: v.submit(OrderSide.SELL, "0.020")],
    }
    original = Harness(BARS[0].open_time, seed=11, **settings)
    scripted_run(original, events[:41], orders_at)
    snapshot = original.exchange.snapshot()
    restored = Harness(BARS[0].open_time, seed=99, **settings)
    restored.exchange.restore(snapshot)
    restored.clock.advance_to(original.clock.timestamp_ns())
    original.reports.clear()

    # Act
    late = original.order(OrderSide.BUY, "0.010", client_order_id="after-restore")
    later = {19: [lambda v: v.exchange.submit(late)]}
    scripted_run(original, events[41:], later)
    scripted_run(restored, events[41:], later)

    # Assert
    assert strip_ids(original.reports) == strip_ids(restored.reports)
    assert len(original.of_type(OrderFilled)) >= 2
    assert restored.exchange.snapshot() == original.exchange.snapshot()
    assert original.exchange.balance() == restored.exchange.balance()


def test_same_data_settings_and_seed_give_the_same_reports() -> None:
    # Arrange
    def run(seed: int) -> list:
        venue = Harness(BARS[0].open_time, latency_ns=1_000_000_000, latency_jitter_ns=40_000_000_000, seed=seed)
        scripted_run(
            venue,
            with_funding(BARS[:90]),
            {
                i: [lambda v, i=i: v.submit(OrderSide.BUY if i % 2 else OrderSide.SELL, "0.010")]
                for i in range(0, 80, 7)
            },
        )
        return strip_ids(venue.reports)

    # Act / Assert
    assert run(5) == run(5)
    assert run(5) != run(6)
