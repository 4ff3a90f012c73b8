from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from conftest import API_KEY, ROOT, SECRET, Text, Venue, real_bars
from keel.api.binance.auth import ServerClock
from keel.api.binance.rest import BinanceRestClient, RateLimiter
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import OperatorActionRequiredError, RequestRejectedError
from keel.core.instruments import load_instruments
from keel.core.messages import FundingRateUpdated, OrderAccepted, OrderRejected, SubmitOrder
from keel.core.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from keel.core.ports import ExchangePort, MarginType, PositionMode
from keel.market_data.loaders import load_funding

pytestmark = pytest.mark.asyncio


def order(venue: Venue, client_order_id: str, side: OrderSide, quantity: str, price: str | None = None) -> SubmitOrder:
    now = venue.clock.timestamp_ns()
    return SubmitOrder(
        client_order_id=client_order_id,
        symbol="BTCUSDT",
        side=side,
        order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
        quantity=Decimal(quantity),
        price=Decimal(price) if price is not None else None,
        time_in_force=TimeInForce.GTC,
        ts_event=now,
        ts_init=now,
    )


async def test_limit_order_rests_is_listed_and_cancels(venue: Venue) -> None:
    command = order(venue, "rest-1", OrderSide.BUY, "0.010", "50000")

    await venue.adapter.submit_order(command)
    listed = await venue.adapter.open_orders("BTCUSDT")
    await venue.adapter.cancel_order("BTCUSDT", "rest-1")
    after = await venue.adapter.query_order("BTCUSDT", "rest-1")

    assert [type(r) for r in venue.reports] == [OrderAccepted]
    assert [(o.client_order_id, o.status, o.price, o.quantity) for o in listed] == [
        ("rest-1", OrderStatus.ACCEPTED, Decimal("50000"), Decimal("0.010"))
    ]
    assert after is not None and after.status is OrderStatus.CANCELED


async def test_market_order_fills_into_the_position_and_balance(venue: Venue) -> None:
    await venue.adapter.submit_order(order(venue, "take-1", OrderSide.BUY, "0.100"))
    venue.feed(venue.bars[1])

    positions = await venue.adapter.positions()
    balance = await venue.adapter.balances()
    venue_balance = await venue.server.exchange.balances()
    status = await venue.adapter.query_order("BTCUSDT", "take-1")

    assert status is not None and status.status is OrderStatus.FILLED
    assert [(p.symbol, p.quantity) for p in positions] == [("BTCUSDT", Decimal("0.100"))]
    assert balance.wallet_balance == venue_balance.wallet_balance
    assert balance.available_balance == venue_balance.available_balance


async def test_rejection_reports_binances_code(venue: Venue) -> None:
    await venue.adapter.submit_order(order(venue, "tiny-1", OrderSide.BUY, "0.001", "50000"))

    rejected = [r for r in venue.reports if isinstance(r, OrderRejected)]

    assert [(r.client_order_id, r.code) for r in rejected] == [("tiny-1", BinanceErrorCode.MIN_NOTIONAL)]


async def test_a_refusal_with_a_code_keel_does_not_model_is_reported_rejected_with_binances_code_and_message(
    venue: Venue,
) -> None:
    # Arrange: Binance refuses the submit (HTTP 400) with a code that is not in keel's enum
    venue.server.refuse_submits = [(-4140, "Invalid symbol status for opening position.")]
    command = order(venue, "unmodeled-1", OrderSide.BUY, "0.010", "50000")

    # Act
    await venue.adapter.submit_order(command)

    # Assert: one rejection carrying Binance's code and message; nothing was resent or left unresolved
    rejected = [(r.client_order_id, r.code) for r in venue.reports if isinstance(r, OrderRejected)]
    reasons = [r.reason for r in venue.reports if isinstance(r, OrderRejected)]
    assert rejected == [("unmodeled-1", -4140)]
    assert "Invalid symbol status for opening position." in reasons[0]
    assert venue.adapter.ambiguous_submits == 0
    assert venue.server.placed_client_ids == []


async def test_cancel_of_unknown_order_is_rejected_with_2011(venue: Venue) -> None:
    with pytest.raises(RequestRejectedError) as raised:
        await venue.adapter.cancel_order("BTCUSDT", "never-sent")

    assert raised.value.code == BinanceErrorCode.CANCEL_REJECTED


async def test_query_of_unknown_order_is_none(venue: Venue) -> None:
    assert await venue.adapter.query_order("BTCUSDT", "never-sent") is None


async def test_exchange_info_loads_every_filter_into_instruments(venue: Venue) -> None:
    expected = load_instruments(ROOT / "config" / "instruments.yaml")

    loaded = await venue.adapter.exchange_info()

    strip = {"source", "maker_fee", "taker_fee"}
    assert loaded.keys() == expected.keys()
    for symbol, instrument in loaded.items():
        for field in instrument.__struct_fields__:
            if field not in strip:
                assert getattr(instrument, field) == getattr(expected[symbol], field), (symbol, field)


async def test_cancel_all_leaves_no_open_order(venue: Venue) -> None:
    for n in range(3):
        await venue.adapter.submit_order(order(venue, f"many-{n}", OrderSide.BUY, "0.010", str(50000 + n)))

    await venue.adapter.cancel_all_orders()

    assert await venue.adapter.open_orders() == []


async def test_wrong_secret_is_refused_with_1022(venue: Venue) -> None:
    client = BinanceRestClient(
        venue.server.base_url,
        Text(API_KEY),
        Text(SECRET + "x"),
        ServerClock(lambda: venue.clock.timestamp_ns() // 1_000_000),
        RateLimiter(lambda: 0, lambda s: _never(s)),
        venue.client._session,
    )

    with pytest.raises((OperatorActionRequiredError, RequestRejectedError)) as raised:
        await client.request("GET", "/fapi/v2/balance", signed=True)

    assert "-1022" in str(raised.value.__cause__)


async def _never(seconds: float) -> None:
    raise AssertionError(f"nothing should wait, asked for {seconds} s")


async def test_leverage_margin_type_and_position_mode_round_trip(venue: Venue) -> None:
    expected_brackets = await venue.server.exchange.leverage_brackets("BTCUSDT")

    configuration = await venue.adapter.set_leverage("BTCUSDT", 10)
    await venue.adapter.set_margin_type("BTCUSDT", MarginType.ISOLATED)
    await venue.adapter.set_position_mode(PositionMode.HEDGE)
    brackets = await venue.adapter.leverage_brackets("BTCUSDT")

    assert (configuration.leverage, configuration.margin_type) == (10, MarginType.CROSSED)
    assert (await venue.adapter.symbol_configuration("BTCUSDT")).margin_type is MarginType.ISOLATED
    assert await venue.adapter.position_mode() is PositionMode.HEDGE
    assert brackets == expected_brackets


async def test_leverage_above_the_bracket_is_rejected_with_binances_code(venue: Venue) -> None:
    with pytest.raises(RequestRejectedError) as raised:
        await venue.adapter.set_leverage("BTCUSDT", 1_000)

    assert raised.value.code == BinanceErrorCode.INVALID_LEVERAGE


def _without_stamps(events: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for event in events:
        data = msgspec.to_builtins(event)
        for key in ("id", "ts_init", "strategy"):
            data.pop(key, None)
        rows.append(data)
    return rows


async def test_account_trades_and_funding_payments_are_the_venues(venue: Venue) -> None:
    await venue.adapter.submit_order(order(venue, "held-1", OrderSide.SELL, "0.200"))
    venue.feed(venue.bars[1])
    settle = venue.bars[1].ts_event
    venue.server.exchange.on_funding(
        FundingRateUpdated(
            symbol="BTCUSDT",
            funding_time=settle,
            rate=Decimal("0.0001"),
            mark_price=Decimal("60000"),
            ts_event=settle,
            ts_init=settle,
        )
    )

    trades = await venue.adapter.account_trades("BTCUSDT")
    payments = await venue.adapter.funding_payments()

    assert trades and _without_stamps(trades) == _without_stamps(await venue.server.exchange.account_trades("BTCUSDT"))
    assert payments and _without_stamps(payments) == _without_stamps(await venue.server.exchange.funding_payments())


async def test_adapter_is_an_exchange_port(venue: Venue) -> None:
    assert isinstance(venue.adapter, ExchangePort)


async def test_filters_are_checked_before_sending(venue: Venue) -> None:
    await venue.adapter.exchange_info()
    venue.adapter.set_mark_price("BTCUSDT", Decimal("60000"))
    sent = venue.client.requests_sent

    await venue.adapter.submit_order(order(venue, "tiny-2", OrderSide.BUY, "0.001", "50000"))
    await venue.adapter.submit_order(order(venue, "off-tick", OrderSide.BUY, "0.010", "50000.05"))

    rejected = [(r.client_order_id, r.code) for r in venue.reports if isinstance(r, OrderRejected)]
    assert rejected == [
        ("tiny-2", BinanceErrorCode.MIN_NOTIONAL),
        ("off-tick", BinanceErrorCode.PRICE_NOT_INCREASED_BY_TICK_SIZE),
    ]
    assert venue.client.requests_sent == sent
    assert venue.server.placed_client_ids == []


async def test_account_trades_pages_through_more_fills_than_one_answer_of_binance_holds(venue: Venue) -> None:
    # Arrange: 1,200 fills, over Binance's 500 trades an answer holds by default and its 1,000 at most
    start = venue.clock.timestamp_ns()
    bars = real_bars("BTCUSDT", 10)
    for n, bar in enumerate(bars[1:9]):
        for m in range(150):
            side = OrderSide.BUY if m % 2 else OrderSide.SELL
            await venue.server.exchange.submit_order(order(venue, f"many-{n}-{m}", side, "0.002"))
        venue.feed(bar)

    # Act
    fills = await venue.adapter.account_trades("BTCUSDT", start)

    # Assert: every fill, each once
    assert len(fills) == 1_200
    assert len({f.trade_id for f in fills}) == 1_200


async def test_funding_payments_page_through_more_settlements_than_one_answer_of_binance_holds(venue: Venue) -> None:
    # Arrange: BTCUSDT and ETHUSDT held through the recorded settlements after they opened: over the 100 rows
    # Binance's income answer holds by default
    start = venue.clock.timestamp_ns()
    eth = real_bars("ETHUSDT", 2)
    venue.server.exchange.on_bar(eth[0])
    for symbol, quantity in (("BTCUSDT", "0.010"), ("ETHUSDT", "0.100")):
        short = order(venue, f"held-{symbol}", OrderSide.SELL, quantity)
        await venue.adapter.submit_order(msgspec.structs.replace(short, symbol=symbol))
    venue.feed(venue.bars[1])
    venue.server.exchange.on_bar(eth[1])
    recorded = load_funding(ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz").frame
    held = recorded[recorded.symbol.isin(["BTCUSDT", "ETHUSDT"]) & (recorded.time_ms * 1_000_000 > start)]
    for row in held.sort_values(["time_ms", "symbol"]).itertuples(index=False):
        settle = int(row.time_ms) * 1_000_000
        venue.clock.advance_to(settle)
        venue.server.exchange.on_funding(
            FundingRateUpdated(
                symbol=row.symbol,
                funding_time=settle,
                rate=Decimal(str(row.funding_rate)),
                mark_price=Decimal(str(row.mark_price)),
                ts_event=settle,
                ts_init=settle,
            )
        )
    settled = await venue.server.exchange.funding_payments(start)

    # Act
    payments = await venue.adapter.funding_payments(start)

    # Assert: every settlement, each once, with its own rate
    assert len(settled) > 100
    assert [(p.symbol, p.funding_time, p.rate, p.amount) for p in payments] == [
        (p.symbol, p.funding_time, p.rate, p.amount) for p in settled
    ]


async def test_account_trades_reach_fills_more_than_seven_days_after_the_start(venue: Venue) -> None:
    # Arrange: a round trip at the start and one nine days later (Binance lists trades 7 days from startTime at most)
    start = venue.clock.timestamp_ns()
    bars = real_bars("BTCUSDT", 9 * 1_440 + 2)
    for name, at in (("early", bars[1]), ("late", bars[-1])):
        venue.feed(bars[bars.index(at) - 1])
        await venue.adapter.submit_order(order(venue, f"{name}-buy", OrderSide.BUY, "0.002"))
        await venue.adapter.submit_order(order(venue, f"{name}-sell", OrderSide.SELL, "0.002"))
        venue.feed(at)

    # Act
    fills = await venue.adapter.account_trades("BTCUSDT", start)

    # Assert
    assert [f.client_order_id for f in fills] == ["early-buy", "early-sell", "late-buy", "late-sell"]


async def test_funding_payments_reach_settlements_more_than_seven_days_after_the_start(venue: Venue) -> None:
    # Arrange: a short held through a settlement every 8 hours for nine days (Binance lists income 7 days at most
    # unless told where the window ends)
    start = venue.clock.timestamp_ns()
    await venue.adapter.submit_order(order(venue, "held", OrderSide.SELL, "0.010"))
    venue.feed(venue.bars[1])
    first = venue.bars[1].ts_event
    settlements = [first + n * 8 * 3_600 * 1_000_000_000 for n in range(27)]
    for settle in settlements:
        venue.clock.advance_to(settle)
        venue.server.exchange.on_funding(
            FundingRateUpdated(
                symbol="BTCUSDT",
                funding_time=settle,
                rate=Decimal("0.0001"),
                mark_price=Decimal("60000"),
                ts_event=settle,
                ts_init=settle,
            )
        )

    # Act
    payments = await venue.adapter.funding_payments(start)

    # Assert: every settlement from the start to now, each once
    assert [p.funding_time for p in payments] == settlements
