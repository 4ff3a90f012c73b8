"""Binance USD-M futures endpoints, header names and request weights.

Values follow Binance's USD-M futures "General Info" and endpoint pages
(developers.binance.com, derivatives/usds-margined-futures).
"""

from __future__ import annotations

from typing import Final

REST_URL: Final = "https://fapi.binance.com"
WS_URL: Final = "wss://fstream.binance.com"
TESTNET_REST_URL: Final = "https://testnet.binancefuture.com"
TESTNET_WS_URL: Final = "wss://stream.binancefuture.com"

API_KEY_HEADER: Final = "X-MBX-APIKEY"
USED_WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"
ORDER_COUNT_10S_HEADER: Final = "X-MBX-ORDER-COUNT-10S"
ORDER_COUNT_1M_HEADER: Final = "X-MBX-ORDER-COUNT-1M"
RETRY_AFTER_HEADER: Final = "Retry-After"

DEFAULT_RECV_WINDOW_MS: Final = 5_000
MAX_RECV_WINDOW_MS: Final = 60_000

# Binance's default USD-M limits (GET /fapi/v1/exchangeInfo, rateLimits).
REQUEST_WEIGHT_PER_MINUTE: Final = 2_400
ORDERS_PER_10_SECONDS: Final = 300
ORDERS_PER_MINUTE: Final = 1_200

PING_PATH: Final = "/fapi/v1/ping"
TIME_PATH: Final = "/fapi/v1/time"
EXCHANGE_INFO_PATH: Final = "/fapi/v1/exchangeInfo"
DEPTH_PATH: Final = "/fapi/v1/depth"
ORDER_PATH: Final = "/fapi/v1/order"
ALL_OPEN_ORDERS_PATH: Final = "/fapi/v1/allOpenOrders"
OPEN_ORDERS_PATH: Final = "/fapi/v1/openOrders"
POSITION_RISK_PATH: Final = "/fapi/v2/positionRisk"
BALANCE_PATH: Final = "/fapi/v2/balance"
ACCOUNT_PATH: Final = "/fapi/v2/account"
USER_TRADES_PATH: Final = "/fapi/v1/userTrades"
MAX_TRADES_PER_REQUEST: Final = 1_000
"""The most trades one ``GET /fapi/v1/userTrades`` returns (its ``limit``; 500 when not sent)."""
TRADE_WINDOW_MS: Final = 7 * 24 * 3_600_000
"""The longest span one ``GET /fapi/v1/userTrades`` lists (7 days from ``startTime``)."""
TRADE_HISTORY_MS: Final = 183 * 24 * 3_600_000
"""How far back ``GET /fapi/v1/userTrades`` reaches (6 months)."""
INCOME_PATH: Final = "/fapi/v1/income"
MAX_INCOME_PER_REQUEST: Final = 1_000
"""The most rows one ``GET /fapi/v1/income`` returns (its ``limit``; 100 when not sent)."""
INCOME_HISTORY_MS: Final = 93 * 24 * 3_600_000
"""How far back ``GET /fapi/v1/income`` reaches (3 months; without startTime and endTime, 7 days only)."""
LISTEN_KEY_PATH: Final = "/fapi/v1/listenKey"
KLINES_PATH: Final = "/fapi/v1/klines"
MAX_KLINES_PER_REQUEST: Final = 1_500

# Request weight of each endpoint as Binance documents it; paths not listed weigh 1.
ENDPOINT_WEIGHTS: Final[dict[tuple[str, str], int]] = {
    ("GET", EXCHANGE_INFO_PATH): 1,
    ("GET", DEPTH_PATH): 20,
    ("GET", ORDER_PATH): 1,
    ("POST", ORDER_PATH): 0,
    ("DELETE", ORDER_PATH): 1,
    ("DELETE", ALL_OPEN_ORDERS_PATH): 1,
    ("GET", OPEN_ORDERS_PATH): 40,
    ("GET", POSITION_RISK_PATH): 5,
    ("GET", BALANCE_PATH): 5,
    ("GET", ACCOUNT_PATH): 5,
    ("GET", USER_TRADES_PATH): 5,
    ("GET", INCOME_PATH): 30,
    ("POST", LISTEN_KEY_PATH): 1,
    ("PUT", LISTEN_KEY_PATH): 1,
    ("DELETE", LISTEN_KEY_PATH): 1,
}

ORDER_PLACING: Final[frozenset[tuple[str, str]]] = frozenset({("POST", ORDER_PATH)})


def endpoint_weight(method: str, path: str) -> int:
    """Return the request weight Binance charges for ``method path``.

    Parameters
    ----------
    method
        The HTTP method, upper case.
    path
        The endpoint path, e.g. ``/fapi/v1/order``.

    Returns
    -------
    int
        The documented weight, 1 for endpoints not listed.
    """
    return ENDPOINT_WEIGHTS.get((method, path), 1)


LEVERAGE_BRACKET_PATH: Final = "/fapi/v1/leverageBracket"
LEVERAGE_PATH: Final = "/fapi/v1/leverage"
MARGIN_TYPE_PATH: Final = "/fapi/v1/marginType"
POSITION_MODE_PATH: Final = "/fapi/v1/positionSide/dual"
SYMBOL_CONFIG_PATH: Final = "/fapi/v1/symbolConfig"
FUNDING_RATE_PATH: Final = "/fapi/v1/fundingRate"
MAX_FUNDING_RATES_PER_REQUEST: Final = 1_000


def klines_weight(limit: int) -> int:
    """Return the request weight of ``GET /fapi/v1/klines`` with ``limit`` (Binance charges by the limit).

    Parameters
    ----------
    limit
        Klines asked for (1 to 1500).
    """
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1_000:
        return 5
    return 10
