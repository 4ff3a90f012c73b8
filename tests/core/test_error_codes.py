"""Tests of keel.core.error_codes: parsing Binance codes and what each tells the caller."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.core.error_codes import BinanceErrorCode, ErrorAction, parse_error_code

KNOWN_VALUES = frozenset(int(code) for code in BinanceErrorCode)


@pytest.mark.parametrize("code", list(BinanceErrorCode), ids=lambda code: code.name)
def test_every_member_round_trips_through_parse_error_code(code: BinanceErrorCode) -> None:
    # Arrange
    sent = int(code)

    # Act
    parsed = parse_error_code(sent)

    # Assert
    assert parsed is code


@given(st.integers().filter(lambda value: value not in KNOWN_VALUES))
def test_unknown_code_parses_to_unknown(sent: int) -> None:
    # Arrange: a code keel does not model

    # Act
    parsed = parse_error_code(sent)

    # Assert
    assert parsed is BinanceErrorCode.UNKNOWN


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (-1000, "UNKNOWN"),
        (-1003, "TOO_MANY_REQUESTS"),
        (-1007, "TIMEOUT"),
        (-1013, "INVALID_MESSAGE"),
        (-1015, "TOO_MANY_ORDERS"),
        (-1021, "INVALID_TIMESTAMP"),
        (-1022, "INVALID_SIGNATURE"),
        (-1102, "MANDATORY_PARAM_EMPTY_OR_MALFORMED"),
        (-1111, "BAD_PRECISION"),
        (-1116, "INVALID_ORDER_TYPE"),
        (-1117, "INVALID_SIDE"),
        (-2010, "NEW_ORDER_REJECTED"),
        (-2011, "CANCEL_REJECTED"),
        (-2013, "NO_SUCH_ORDER"),
        (-2014, "BAD_API_KEY_FMT"),
        (-2015, "REJECTED_MBX_KEY"),
        (-2019, "MARGIN_NOT_SUFFICIENT"),
        (-2021, "ORDER_WOULD_IMMEDIATELY_TRIGGER"),
        (-2022, "REDUCE_ONLY_REJECT"),
        (-2025, "MAX_OPEN_ORDER_EXCEEDED"),
        (-4003, "QTY_LESS_THAN_ZERO"),
        (-4004, "QTY_LESS_THAN_MIN_QTY"),
        (-4005, "QTY_GREATER_THAN_MAX_QTY"),
        (-4013, "PRICE_LESS_THAN_MIN_PRICE"),
        (-4014, "PRICE_NOT_INCREASED_BY_TICK_SIZE"),
        (-4016, "PRICE_HIGHER_THAN_MULTIPLIER_UP"),
        (-4023, "QTY_NOT_INCREASED_BY_STEP_SIZE"),
        (-4024, "PRICE_LOWER_THAN_MULTIPLIER_DOWN"),
        (-4116, "DUPLICATED_CLIENT_ORDER_ID"),
        (-4164, "MIN_NOTIONAL"),
        (-5022, "GTX_ORDER_REJECT"),
    ],
)
def test_codes_carry_binance_numbers(number: int, name: str) -> None:
    # Arrange: numbers and names from Binance's USD-M error-code page

    # Act
    parsed = parse_error_code(number)

    # Assert
    assert parsed.name == name


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (BinanceErrorCode.TIMEOUT, ErrorAction.AMBIGUOUS),
        (BinanceErrorCode.UNEXPECTED_RESP, ErrorAction.AMBIGUOUS),
        (BinanceErrorCode.UNKNOWN, ErrorAction.AMBIGUOUS),
        (BinanceErrorCode.DUPLICATED_CLIENT_ORDER_ID, ErrorAction.AMBIGUOUS),
        (BinanceErrorCode.TOO_MANY_REQUESTS, ErrorAction.RETRY_LATER),
        (BinanceErrorCode.TOO_MANY_ORDERS, ErrorAction.RETRY_LATER),
        (BinanceErrorCode.INVALID_TIMESTAMP, ErrorAction.OPERATOR_ACTION),
        (BinanceErrorCode.INVALID_SIGNATURE, ErrorAction.OPERATOR_ACTION),
        (BinanceErrorCode.REJECTED_MBX_KEY, ErrorAction.OPERATOR_ACTION),
        (BinanceErrorCode.MARGIN_NOT_SUFFICIENT, ErrorAction.REJECTED),
        (BinanceErrorCode.MIN_NOTIONAL, ErrorAction.REJECTED),
        (BinanceErrorCode.GTX_ORDER_REJECT, ErrorAction.REJECTED),
        (BinanceErrorCode.CANCEL_REJECTED, ErrorAction.REJECTED),
    ],
)
def test_action_tells_the_caller_what_to_do(code: BinanceErrorCode, action: ErrorAction) -> None:
    # Arrange: a code received from the venue

    # Act
    classified = parse_error_code(int(code)).action

    # Assert
    assert classified is action


@pytest.mark.parametrize("code", list(BinanceErrorCode), ids=lambda code: code.name)
def test_every_member_has_a_message_and_an_action(code: BinanceErrorCode) -> None:
    # Arrange: every modelled code

    # Act
    message, action = code.message, code.action

    # Assert
    assert message.strip()
    assert isinstance(action, ErrorAction)


def test_min_notional_message_is_a_template_for_the_notional() -> None:
    # Arrange
    code = BinanceErrorCode.MIN_NOTIONAL

    # Act
    message = code.message.format(5)

    # Assert
    assert message == "Order's notional must be no smaller than 5 (unless you choose reduce only)"
