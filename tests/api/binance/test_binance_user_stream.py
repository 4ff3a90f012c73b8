from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest

from conftest import Venue
from keel.api.binance.user_stream import KEEPALIVE_MAX_SECONDS, ListenKeyKeeper, UserEventMapper
from keel.core.messages import OrderAccepted, OrderCanceled, OrderFilled, PositionChanged

HOUR_NS = 3_600 * 1_000_000_000


def _advance(venue: Venue) -> Any:
    async def sleep(seconds: float) -> None:
        venue.clock.advance_to(venue.clock.timestamp_ns() + int(seconds * 1_000_000_000))

    return sleep


@pytest.mark.asyncio
async def test_binance_fault_listen_key_kept_alive_over_72_hours(venue: Venue) -> None:
    start = venue.clock.timestamp_ns()
    keeper = ListenKeyKeeper(venue.client, _advance(venue), seed=7)

    await keeper.maintain(lambda: venue.clock.timestamp_ns() - start < 72 * HOUR_NS)

    assert venue.server.listen_keys_made == 1
    assert venue.server.listen_key_expiries == 0
    assert keeper.keepalives >= 72 * 3_600 // KEEPALIVE_MAX_SECONDS
    assert keeper.listen_key == venue.server.listen_key


@pytest.mark.asyncio
async def test_expired_listen_key_is_recreated_and_announced(venue: Venue) -> None:
    announced: list[str] = []
    keeper = ListenKeyKeeper(venue.client, _advance(venue), on_new_key=announced.append)
    first = await keeper.create()
    venue.clock.advance_to(venue.clock.timestamp_ns() + 2 * HOUR_NS)  # the process slept through the window

    await keeper.keep_alive()

    assert keeper.recreations == 1
    assert announced == [first, venue.server.listen_key]
    assert first != venue.server.listen_key


@pytest.mark.asyncio
async def test_a_keepalive_binance_did_not_take_is_tried_again_and_the_key_outlives_its_hour(venue: Venue) -> None:
    # Arrange: Binance bans the IP (HTTP 418, 120 s) just before the first keepalive goes out
    start = venue.clock.timestamp_ns()
    advance = _advance(venue)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await advance(seconds)
        if len(waits) == 1:
            venue.server.banned_until_ms = venue.clock.timestamp_ns() // 1_000_000 + 1

    keeper = ListenKeyKeeper(venue.client, sleep, seed=7)

    # Act: three hours of upkeep
    await keeper.maintain(lambda: venue.clock.timestamp_ns() - start < 3 * HOUR_NS)

    # Assert: the upkeep went on after the refused keepalive; the key never expired
    assert venue.server.responses.get(418, 0) == 1
    assert keeper.keepalives >= 3 * 3_600 // KEEPALIVE_MAX_SECONDS
    assert venue.server.listen_key_expiries == 0
    assert keeper.listen_key == venue.server.listen_key


@pytest.mark.asyncio
async def test_a_keepalive_refused_for_the_keys_is_tried_again_until_the_keys_pass_again(venue: Venue) -> None:
    # Arrange: the keys stop passing (revoked, IP whitelist) before the first keepalive, and pass an hour later
    start = venue.clock.timestamp_ns()
    advance = _advance(venue)
    key = venue.server._api_key
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await advance(seconds)
        if len(waits) == 1:
            venue.server._api_key = "revoked"
        elif venue.clock.timestamp_ns() - start > HOUR_NS:
            venue.server._api_key = key

    keeper = ListenKeyKeeper(venue.client, sleep, seed=7)

    # Act: three hours of upkeep
    await keeper.maintain(lambda: venue.clock.timestamp_ns() - start < 3 * HOUR_NS)

    # Assert: the upkeep outlived the refusals and keeps the key it holds alive
    assert keeper.failures > 0
    assert keeper.listen_key == venue.server.listen_key
    assert venue.server._listen_key_alive()


def _trade(client_id: str, trade_id: int, quantity: str, status: str, ts: int) -> dict[str, Any]:
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": ts,
        "T": ts,
        "o": {
            "s": "BTCUSDT",
            "c": client_id,
            "S": "BUY",
            "o": "LIMIT",
            "x": "TRADE",
            "X": status,
            "i": 42,
            "l": quantity,
            "L": "60000.1",
            "n": "0.01",
            "t": trade_id,
            "m": True,
        },
    }


def _state(client_id: str, execution: str, ts: int) -> dict[str, Any]:
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": ts,
        "T": ts,
        "o": {"s": "BTCUSDT", "c": client_id, "S": "BUY", "o": "LIMIT", "x": execution, "X": execution, "i": 42},
    }


def test_binance_fault_duplicated_and_reordered_user_events_map_each_fill_once() -> None:
    events = [_state("a", "NEW", 1)] + [
        _trade("a", trade_id, "0.001", "FILLED" if trade_id == 9 else "PARTIALLY_FILLED", 1 + trade_id)
        for trade_id in range(10)
    ]
    delivered = events * 3
    random.Random(3).shuffle(delivered)
    mapper = UserEventMapper()

    mapped = [e for payload in delivered for e in mapper.map(payload, now_ns=0)]

    fills = [e for e in mapped if isinstance(e, OrderFilled)]
    assert sorted(int(f.trade_id) for f in fills) == list(range(10))
    assert sum(f.last_quantity for f in fills) == Decimal("0.010")
    assert len([e for e in mapped if isinstance(e, OrderAccepted)]) <= 1
    assert mapper.duplicates == len(delivered) - len(mapped)


def test_cancel_and_account_update_map_to_keel_events() -> None:
    mapper = UserEventMapper()
    account = {
        "e": "ACCOUNT_UPDATE",
        "E": 5,
        "T": 5,
        "a": {"m": "ORDER", "B": [], "P": [{"s": "BTCUSDT", "pa": "-0.5", "ep": "60000", "cr": "12.5", "ps": "BOTH"}]},
    }

    canceled = mapper.map(_state("b", "CANCELED", 4), now_ns=9)
    positions = mapper.map(account, now_ns=9)

    assert [(type(e), e.client_order_id) for e in canceled if isinstance(e, OrderCanceled)] == [(OrderCanceled, "b")]
    assert [(p.symbol, p.quantity, p.realized_pnl) for p in positions if isinstance(p, PositionChanged)] == [
        ("BTCUSDT", Decimal("-0.5"), Decimal("12.5"))
    ]
