from __future__ import annotations

import pytest

from keel.api.binance.auth import ServerClock, sign, signed_query
from keel.core.errors import RetryLaterError

# Binance's published USD-M futures example ("SIGNED Endpoint Examples for POST /fapi/v1/order").
DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_QUERY = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943"
)
DOC_SIGNATURE = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


class _Secret:
    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value


class _Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def test_sign_reproduces_binance_documented_example() -> None:
    assert sign(DOC_QUERY, DOC_SECRET) == DOC_SIGNATURE


def test_signed_query_builds_the_documented_request_byte_for_byte() -> None:
    params = [
        ("symbol", "BTCUSDT"),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("quantity", "1"),
        ("price", "9000"),
        ("timeInForce", "GTC"),
    ]

    query = signed_query(params, _Secret(DOC_SECRET), timestamp_ms=1591702613943, recv_window_ms=5000)

    assert query == f"{DOC_QUERY}&signature={DOC_SIGNATURE}"


def test_server_clock_stamps_with_measured_offset() -> None:
    local = _Clock(1_000_000)
    clock = ServerClock(local, recv_window_ms=5000)

    clock.record(sent_local_ms=1_000_000, server_ms=1_030_010, received_local_ms=1_000_020)

    assert clock.offset_ms == 30_000
    assert clock.timestamp_ms() == 1_000_000 + 30_000 - 10


def test_server_clock_refuses_before_first_measurement() -> None:
    clock = ServerClock(_Clock(0))

    with pytest.raises(RetryLaterError):
        clock.timestamp_ms()


def test_server_clock_refuses_when_measurement_is_stale() -> None:
    local = _Clock(0)
    clock = ServerClock(local, max_age_ms=60_000)
    clock.record(0, 5, 10)
    local.now_ms = 60_010

    with pytest.raises(RetryLaterError):
        clock.timestamp_ms()


def test_server_clock_refuses_when_round_trip_exceeds_window() -> None:
    clock = ServerClock(_Clock(6_000), recv_window_ms=5000)

    clock.record(0, 3_000, 6_000)

    assert not clock.is_safe()


def test_binance_urls_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.config import load_config

    monkeypatch.setenv("KEEL_BINANCE__REST_URL", "http://127.0.0.1:8081")
    monkeypatch.setenv("KEEL_BINANCE__TESTNET", "true")

    config = load_config()

    assert config.binance.endpoints() == ("http://127.0.0.1:8081", "wss://stream.binancefuture.com")
