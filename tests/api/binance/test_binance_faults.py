from __future__ import annotations

from collections import Counter
from decimal import Decimal

import aiohttp
import pytest

from conftest import Venue, make_venue
from keel.api.binance.constants import BALANCE_PATH
from keel.core.errors import RetryLaterError
from keel.core.messages import OrderAccepted, SubmitOrder
from keel.core.orders import OrderSide, OrderType, TimeInForce

pytestmark = pytest.mark.asyncio


def resting(venue: Venue, n: int) -> SubmitOrder:
    now = venue.clock.timestamp_ns()
    return SubmitOrder(
        client_order_id=f"amb-{n}",
        symbol="BTCUSDT",
        side=OrderSide.BUY if n % 2 else OrderSide.SELL,
        order_type=OrderType.LIMIT,
        quantity=Decimal("0.010"),
        price=Decimal("50000") if n % 2 else Decimal("150000"),
        time_in_force=TimeInForce.GTC,
        ts_event=now,
        ts_init=now,
    )


async def test_binance_fault_ambiguous_submits_are_resolved_by_their_own_id(venue: Venue) -> None:
    # 5xx after placing, connections dropped after placing, and 5xx before placing, interleaved.
    commands = [resting(venue, n) for n in range(1_000)]
    for n, command in enumerate(commands):
        venue.server.fail_after_accept = 1 if n % 3 == 0 else 0
        venue.server.drop_after_accept = 1 if n % 3 == 1 else 0
        venue.server.fail_before_accept = 1 if n % 3 == 2 else 0
        try:
            await venue.adapter.submit_order(command)
        except RetryLaterError:
            await venue.adapter.submit_order(command)  # the caller resends under the same id
        # Keeps the open-order count under MAX_NUM_ORDERS.
        await venue.server.exchange.cancel_all_orders("BTCUSDT")

    placed = Counter(venue.server.placed_client_ids)
    accepted = [r.client_order_id for r in venue.reports if isinstance(r, OrderAccepted)]

    assert set(placed) == {c.client_order_id for c in commands}
    assert max(placed.values()) == 1
    assert sorted(accepted) == sorted(c.client_order_id for c in commands)
    assert venue.adapter.ambiguous_submits == 1_000


async def test_binance_fault_three_times_the_weight_budget_draws_no_429(session: aiohttp.ClientSession) -> None:
    venue = await make_venue(session, weight_limit=200, client_budget=160)
    try:
        start = venue.clock.timestamp_ns()
        for _ in range(3 * 200 // 5):  # GET /fapi/v2/balance weighs 5
            await venue.client.request("GET", BALANCE_PATH, signed=True)

        assert venue.server.responses.get(429, 0) == 0
        assert venue.server.responses.get(418, 0) == 0
        assert venue.client.limiter.waits >= 2
        assert venue.clock.timestamp_ns() - start >= 2 * 60 * 1_000_000_000 - 60 * 1_000_000_000
    finally:
        await venue.server.stop()


@pytest.mark.parametrize("skew_ms", [30_000, -30_000])
async def test_binance_fault_clock_skew_keeps_requests_inside_recv_window(venue: Venue, skew_ms: int) -> None:
    venue.skew_ms[0] = skew_ms

    for n in range(20):
        await venue.adapter.balances()
        venue.clock.advance_to(venue.clock.timestamp_ns() + 7 * 1_000_000_000)
        await venue.adapter.query_order("BTCUSDT", f"none-{n}")

    assert venue.server.responses.get(400, 0) == 20  # the -2013 answers to the queries, none -1021
    assert abs(venue.client.clock.offset_ms + skew_ms) <= 1


async def test_binance_fault_a_429_is_waited_out_and_a_418_stops_sending(venue: Venue) -> None:
    venue.server.weight_limit = 12  # /time (1) + two balances (5 each) fit; a third does not
    for _ in range(2):
        await venue.client.request("GET", BALANCE_PATH, signed=True)
    with pytest.raises(RetryLaterError) as throttled:
        await venue.client.request("GET", BALANCE_PATH, signed=True)
    venue.client.limiter.blocked_until_ms = 0  # a misbehaving caller ignores Retry-After
    with pytest.raises(RetryLaterError):
        await venue.client.request("GET", BALANCE_PATH, signed=True)
    sent = venue.client.requests_sent

    with pytest.raises(RetryLaterError):
        await venue.client.request("GET", BALANCE_PATH, signed=True)

    assert throttled.value.retry_after_seconds is not None and throttled.value.retry_after_seconds > 0
    assert venue.server.responses.get(429) == 1 and venue.server.responses.get(418) == 1
    assert venue.client.limiter.banned
    assert venue.client.requests_sent == sent


async def test_binance_fault_order_bursts_are_paced_on_the_order_count_headers(venue: Venue) -> None:
    venue.server.order_limit_10s = 6
    venue.client.limiter.orders_10s_budget = 5
    start = venue.clock.timestamp_ns()

    for n in range(12):
        await venue.adapter.submit_order(resting(venue, n))

    assert venue.server.responses.get(429, 0) == 0
    assert len(venue.server.placed_client_ids) == 12
    assert venue.client.limiter.waits >= 2
    assert venue.clock.timestamp_ns() - start >= 10 * 1_000_000_000


async def test_a_clock_measurement_paced_by_the_weight_budget_does_not_count_the_wait_as_round_trip(
    session: aiohttp.ClientSession,
) -> None:
    # Arrange: the minute's weight budget is used up, so the time request waits for the next window
    venue = await make_venue(session, client_budget=16)
    try:
        for _ in range(3):  # the first measurement weighs 1, GET /fapi/v2/balance 5
            await venue.client.request("GET", BALANCE_PATH, signed=True)
        assert venue.client.limiter.waits == 0

        # Act
        await venue.client.sync_time()

        # Assert: the pacing wait happened, and the measurement is as exact as the round trip (none here)
        assert venue.client.limiter.waits == 1
        assert venue.client.clock.uncertainty_ms == 0
        assert venue.client.clock.is_safe()
    finally:
        await venue.server.stop()


async def test_a_signed_request_after_a_too_uncertain_measurement_measures_again_and_goes_out(venue: Venue) -> None:
    # Arrange: the last measurement's round trip took 8 s, too uncertain to sign with a 5 s recvWindow
    clock = venue.client.clock
    now = clock.local_ms()
    clock.record(now - 8_000, now - 4_000, now)
    assert not clock.is_safe()

    # Act
    balance = await venue.adapter.balances()

    # Assert: measured again at once rather than refused until the next scheduled measurement
    assert balance.wallet_balance == Decimal("100000")
    assert clock.uncertainty_ms == 0
