"""Binance USD-M futures error codes, each with its message and what to do about it.

The numbers, names and messages follow Binance's USD-M futures error-code
reference (developers.binance.com, derivatives/usds-margined-futures/error-code).
Member names are Binance's own identifiers, with two typos of that page
corrected: ``MARGIN_NOT_SUFFICIEN`` is ``MARGIN_NOT_SUFFICIENT`` and
``PRICE_HIGHTER_THAN_MULTIPLIER_UP`` is ``PRICE_HIGHER_THAN_MULTIPLIER_UP``.
``-1008`` has no identifier there (its heading is "Request Throttled"), so it is
``REQUEST_THROTTLED`` here.

Venue errors are parsed into :class:`BinanceErrorCode` with
:func:`parse_error_code`, never matched by their text. Each code carries an
:class:`ErrorAction` that tells the caller how to react.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class ErrorAction(Enum):
    """What the caller should do after the venue answered with an error."""

    RETRY_LATER = "RETRY_LATER"
    """Transient: the same request may succeed later (after a back-off)."""

    REJECTED = "REJECTED"
    """Definitive: resending the same request fails the same way."""

    AMBIGUOUS = "AMBIGUOUS"
    """The request may have taken effect: query its outcome before acting again."""

    OPERATOR_ACTION = "OPERATOR_ACTION"
    """Keys, signature, clock or account setup: a human must fix it first."""


class BinanceErrorCode(IntEnum):
    """The Binance USD-M futures error codes that keel models.

    The value is Binance's (negative) code. :attr:`message` is Binance's
    documented wording and :attr:`action` the reaction keel takes.
    """

    # 10xx - general server or network issues
    UNKNOWN = -1000
    DISCONNECTED = -1001
    UNAUTHORIZED = -1002
    TOO_MANY_REQUESTS = -1003
    UNEXPECTED_RESP = -1006
    TIMEOUT = -1007
    REQUEST_THROTTLED = -1008
    INVALID_MESSAGE = -1013
    UNKNOWN_ORDER_COMPOSITION = -1014
    TOO_MANY_ORDERS = -1015
    INVALID_TIMESTAMP = -1021
    INVALID_SIGNATURE = -1022
    # 11xx - request issues
    MANDATORY_PARAM_EMPTY_OR_MALFORMED = -1102
    PARAM_NOT_REQUIRED = -1106
    BAD_PRECISION = -1111
    INVALID_TIF = -1115
    INVALID_ORDER_TYPE = -1116
    INVALID_SIDE = -1117
    BAD_SYMBOL = -1121
    INVALID_LISTEN_KEY = -1125
    # 20xx - processing issues
    NEW_ORDER_REJECTED = -2010
    CANCEL_REJECTED = -2011
    NO_SUCH_ORDER = -2013
    BAD_API_KEY_FMT = -2014
    REJECTED_MBX_KEY = -2015
    BALANCE_NOT_SUFFICIENT = -2018
    MARGIN_NOT_SUFFICIENT = -2019
    UNABLE_TO_FILL = -2020
    ORDER_WOULD_IMMEDIATELY_TRIGGER = -2021
    REDUCE_ONLY_REJECT = -2022
    USER_IN_LIQUIDATION = -2023
    POSITION_NOT_SUFFICIENT = -2024
    MAX_OPEN_ORDER_EXCEEDED = -2025
    REDUCE_ONLY_ORDER_TYPE_NOT_SUPPORTED = -2026
    MAX_LEVERAGE_RATIO = -2027
    # 40xx - filters and other issues
    PRICE_LESS_THAN_ZERO = -4001
    PRICE_GREATER_THAN_MAX_PRICE = -4002
    QTY_LESS_THAN_ZERO = -4003
    QTY_LESS_THAN_MIN_QTY = -4004
    QTY_GREATER_THAN_MAX_QTY = -4005
    PRICE_LESS_THAN_MIN_PRICE = -4013
    PRICE_NOT_INCREASED_BY_TICK_SIZE = -4014
    INVALID_CL_ORD_ID_LEN = -4015
    PRICE_HIGHER_THAN_MULTIPLIER_UP = -4016
    QTY_NOT_INCREASED_BY_STEP_SIZE = -4023
    PRICE_LOWER_THAN_MULTIPLIER_DOWN = -4024
    POSITION_SIDE_NOT_MATCH = -4061
    DUPLICATED_CLIENT_ORDER_ID = -4116
    MARKET_ORDER_REJECT = -4131
    MIN_NOTIONAL = -4164
    INVALID_LEVERAGE = -4028
    NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046
    THERE_EXISTS_OPEN_ORDERS = -4047
    THERE_EXISTS_QUANTITY = -4048
    NO_NEED_TO_CHANGE_POSITION_SIDE = -4059
    POSITION_SIDE_CHANGE_EXISTS_OPEN_ORDERS = -4067
    POSITION_SIDE_CHANGE_EXISTS_QUANTITY = -4068
    ISOLATED_LEVERAGE_REJECT_WITH_POSITION = -4161
    # 50xx - order execution issues
    FOK_ORDER_REJECT = -5021
    GTX_ORDER_REJECT = -5022

    @property
    def message(self) -> str:
        """Binance's documented message; ``{}`` stands where Binance writes ``%s``."""
        return _MESSAGES[self]

    @property
    def action(self) -> ErrorAction:
        """How the caller should react to this error."""
        return _ACTIONS[self]


def parse_error_code(code: int) -> BinanceErrorCode:
    """Return the enum member for a code Binance sent, UNKNOWN when keel does not model it.

    Parameters
    ----------
    code
        The ``code`` field of Binance's error payload, e.g. ``-2019``.

    Returns
    -------
    BinanceErrorCode
        The matching member, or :attr:`BinanceErrorCode.UNKNOWN`. Never raises.
    """
    try:
        return BinanceErrorCode(code)
    except ValueError:
        return BinanceErrorCode.UNKNOWN


_E = BinanceErrorCode

_MESSAGES: dict[BinanceErrorCode, str] = {
    _E.UNKNOWN: "An unknown error occured while processing the request.",
    _E.DISCONNECTED: "Internal error; unable to process your request. Please try again.",
    _E.UNAUTHORIZED: "You are not authorized to execute this request.",
    _E.TOO_MANY_REQUESTS: (
        "Too many requests; current limit is {} requests per minute. "
        "Please use the websocket for live updates to avoid polling the API."
    ),
    _E.UNEXPECTED_RESP: ("An unexpected response was received from the message bus. Execution status unknown."),
    _E.TIMEOUT: ("Timeout waiting for response from backend server. Send status unknown; execution status unknown."),
    _E.REQUEST_THROTTLED: (
        "Request throttled by system-level protection. Reduce-only/close-position orders are exempt. Please try again."
    ),
    _E.INVALID_MESSAGE: "INVALID_MESSAGE.",
    _E.UNKNOWN_ORDER_COMPOSITION: "Unsupported order combination.",
    _E.TOO_MANY_ORDERS: "Too many new orders.",
    _E.INVALID_TIMESTAMP: "Timestamp for this request is outside of the recvWindow.",
    _E.INVALID_SIGNATURE: "Signature for this request is not valid.",
    _E.MANDATORY_PARAM_EMPTY_OR_MALFORMED: ("Mandatory parameter '{}' was not sent, was empty/null, or malformed."),
    _E.PARAM_NOT_REQUIRED: "Parameter '{}' sent when not required.",
    _E.BAD_PRECISION: "Precision is over the maximum defined for this asset.",
    _E.INVALID_TIF: "Invalid timeInForce.",
    _E.INVALID_ORDER_TYPE: "Invalid orderType.",
    _E.INVALID_SIDE: "Invalid side.",
    _E.BAD_SYMBOL: "Invalid symbol.",
    _E.INVALID_LISTEN_KEY: (
        "This listenKey does not exist. Please use `POST /fapi/v1/listenKey` to recreate `listenKey`"
    ),
    _E.NEW_ORDER_REJECTED: "NEW_ORDER_REJECTED",
    _E.CANCEL_REJECTED: "Unknown order sent.",
    _E.NO_SUCH_ORDER: "Order does not exist.",
    _E.BAD_API_KEY_FMT: "API-key format invalid.",
    _E.REJECTED_MBX_KEY: "Invalid API-key, IP, or permissions for action.",
    _E.BALANCE_NOT_SUFFICIENT: "Balance is insufficient.",
    _E.MARGIN_NOT_SUFFICIENT: "Margin is insufficient.",
    _E.UNABLE_TO_FILL: "Unable to fill.",
    _E.ORDER_WOULD_IMMEDIATELY_TRIGGER: "Order would immediately trigger.",
    _E.REDUCE_ONLY_REJECT: "ReduceOnly Order is rejected.",
    _E.USER_IN_LIQUIDATION: "User in liquidation mode now.",
    _E.POSITION_NOT_SUFFICIENT: "Position is not sufficient.",
    _E.MAX_OPEN_ORDER_EXCEEDED: "Reach max open order limit.",
    _E.REDUCE_ONLY_ORDER_TYPE_NOT_SUPPORTED: "This OrderType is not supported when reduceOnly.",
    _E.MAX_LEVERAGE_RATIO: "Exceeded the maximum allowable position at current leverage.",
    _E.PRICE_LESS_THAN_ZERO: "Price less than 0.",
    _E.PRICE_GREATER_THAN_MAX_PRICE: "Price greater than max price.",
    _E.QTY_LESS_THAN_ZERO: "Quantity less than zero.",
    _E.QTY_LESS_THAN_MIN_QTY: "Quantity less than min quantity.",
    _E.QTY_GREATER_THAN_MAX_QTY: "Quantity greater than max quantity.",
    _E.PRICE_LESS_THAN_MIN_PRICE: "Price less than min price.",
    _E.PRICE_NOT_INCREASED_BY_TICK_SIZE: "Price not increased by tick size.",
    _E.INVALID_CL_ORD_ID_LEN: "Client order id length should not be more than 36 chars",
    _E.PRICE_HIGHER_THAN_MULTIPLIER_UP: "Price is higher than mark price multiplier cap.",
    _E.QTY_NOT_INCREASED_BY_STEP_SIZE: "Qty not increased by step size.",
    _E.PRICE_LOWER_THAN_MULTIPLIER_DOWN: "Price is lower than mark price multiplier floor.",
    _E.POSITION_SIDE_NOT_MATCH: "Order's position side does not match user's setting.",
    _E.DUPLICATED_CLIENT_ORDER_ID: "clientOrderId is duplicated",
    _E.MARKET_ORDER_REJECT: ("The counterparty's best price does not meet the PERCENT_PRICE filter limit"),
    _E.MIN_NOTIONAL: "Order's notional must be no smaller than {} (unless you choose reduce only)",
    _E.INVALID_LEVERAGE: "Leverage {} is not valid",
    _E.NO_NEED_TO_CHANGE_MARGIN_TYPE: "No need to change margin type.",
    _E.THERE_EXISTS_OPEN_ORDERS: "Margin type cannot be changed if there exists open orders.",
    _E.THERE_EXISTS_QUANTITY: "Margin type cannot be changed if there exists position.",
    _E.NO_NEED_TO_CHANGE_POSITION_SIDE: "No need to change position side.",
    _E.POSITION_SIDE_CHANGE_EXISTS_OPEN_ORDERS: "Position side cannot be changed if there exists open orders.",
    _E.POSITION_SIDE_CHANGE_EXISTS_QUANTITY: "Position side cannot be changed if there exists position.",
    _E.ISOLATED_LEVERAGE_REJECT_WITH_POSITION: (
        "Leverage reduction is not supported in Isolated Margin Mode with open positions"
    ),
    _E.FOK_ORDER_REJECT: ("Due to the order could not be filled immediately, the FOK order has been rejected."),
    _E.GTX_ORDER_REJECT: ("Due to the order could not be executed as maker, the Post Only order will be rejected."),
}

# Codes not listed here are REJECTED: a definitive refusal of that request.
_NOT_REJECTED: dict[BinanceErrorCode, ErrorAction] = {
    # Binance says the outcome is unknown, or (UNKNOWN) keel cannot tell.
    _E.UNKNOWN: ErrorAction.AMBIGUOUS,
    _E.UNEXPECTED_RESP: ErrorAction.AMBIGUOUS,
    _E.TIMEOUT: ErrorAction.AMBIGUOUS,
    # keel's client order ids are deterministic: a duplicate means an earlier
    # submit of this very order reached the venue, so look it up.
    _E.DUPLICATED_CLIENT_ORDER_ID: ErrorAction.AMBIGUOUS,
    _E.DISCONNECTED: ErrorAction.RETRY_LATER,
    _E.TOO_MANY_REQUESTS: ErrorAction.RETRY_LATER,
    _E.REQUEST_THROTTLED: ErrorAction.RETRY_LATER,
    _E.TOO_MANY_ORDERS: ErrorAction.RETRY_LATER,
    _E.UNAUTHORIZED: ErrorAction.OPERATOR_ACTION,
    _E.INVALID_TIMESTAMP: ErrorAction.OPERATOR_ACTION,
    _E.INVALID_SIGNATURE: ErrorAction.OPERATOR_ACTION,
    _E.BAD_API_KEY_FMT: ErrorAction.OPERATOR_ACTION,
    _E.REJECTED_MBX_KEY: ErrorAction.OPERATOR_ACTION,
}

_ACTIONS: dict[BinanceErrorCode, ErrorAction] = {
    code: _NOT_REJECTED.get(code, ErrorAction.REJECTED) for code in BinanceErrorCode
}
