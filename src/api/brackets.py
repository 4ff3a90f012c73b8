"""Binance's notional and leverage brackets: initial-margin limits and maintenance margin.

A symbol's brackets (``GET /fapi/v1/leverageBracket``) say, for each range of
position notional, the highest leverage allowed and the maintenance margin
``notional * rate - maintenance_amount``. :func:`load_leverage_schedule` reads
the documented subset in ``config/leverage_brackets.yaml`` into a
:class:`LeverageSchedule`; the functions below look a notional up in a
symbol's brackets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import ConfigurationError, RequestRejectedError
from keel.core.ports import LeverageBracket

DEFAULT_SCHEDULE_FILE = Path(__file__).resolve().parents[2] / "config" / "leverage_brackets.yaml"
"""The documented subset bundled with keel's source tree."""

_TOP_KEYS = {"default_brackets", "brackets", "default_liquidation_fee", "liquidation_fees"}
_TABLE_KEYS = {"source", "brackets"}
_BRACKET_KEYS = {"initial_leverage", "notional_floor", "notional_cap", "maintenance_margin_rate", "maintenance_amount"}


class LeverageSchedule:
    """Every symbol's brackets and liquidation clearance fee, with the documented defaults.

    Parameters
    ----------
    brackets
        Brackets of the symbols that have their own, lowest first.
    default_brackets
        Brackets of every other symbol.
    liquidation_fees
        Liquidation clearance fee rates of the symbols that have their own.
    default_liquidation_fee
        The rate of every other symbol.
    """

    def __init__(
        self,
        brackets: Mapping[str, Sequence[LeverageBracket]],
        default_brackets: Sequence[LeverageBracket],
        liquidation_fees: Mapping[str, Decimal],
        default_liquidation_fee: Decimal,
    ) -> None:
        self._brackets = {symbol: tuple(table) for symbol, table in brackets.items()}
        self._default = tuple(default_brackets)
        self._fees = dict(liquidation_fees)
        self._default_fee = default_liquidation_fee

    def brackets(self, symbol: str) -> tuple[LeverageBracket, ...]:
        """Return the brackets of ``symbol`` (the default table when it has none of its own)."""
        return self._brackets.get(symbol, self._default)

    def liquidation_fee(self, symbol: str) -> Decimal:
        """Return the liquidation clearance fee rate of ``symbol``."""
        return self._fees.get(symbol, self._default_fee)


def bracket_for(brackets: Sequence[LeverageBracket], notional: Decimal) -> LeverageBracket:
    """Return the bracket holding ``notional`` (floor exclusive, cap inclusive; zero is in the first).

    Raises
    ------
    RequestRejectedError
        With -2027 if the notional lies beyond the last bracket.
    """
    for bracket in brackets:
        if bracket.notional_cap is None or notional <= bracket.notional_cap:
            return bracket
    raise RequestRejectedError(
        f"notional {notional} is beyond the last bracket ({brackets[-1].notional_cap}): "
        f"{BinanceErrorCode.MAX_LEVERAGE_RATIO.message}",
        BinanceErrorCode.MAX_LEVERAGE_RATIO,
    )


def maintenance_margin(brackets: Sequence[LeverageBracket], notional: Decimal) -> Decimal:
    """Return Binance's maintenance margin ``notional * rate - maintenance_amount`` of a position."""
    bracket = bracket_for(brackets, notional)
    return notional * bracket.maintenance_margin_rate - bracket.maintenance_amount


def max_notional(brackets: Sequence[LeverageBracket], leverage: int) -> Decimal | None:
    """Return the largest notional a position may reach at ``leverage`` (None: unbounded).

    Raises
    ------
    RequestRejectedError
        With -4028 if ``leverage`` exceeds the first bracket's or is below 1.
    """
    allowed = [b for b in brackets if b.initial_leverage >= leverage]
    if leverage < 1 or not allowed:
        raise RequestRejectedError(
            BinanceErrorCode.INVALID_LEVERAGE.message.format(leverage), BinanceErrorCode.INVALID_LEVERAGE
        )
    return allowed[-1].notional_cap


# libyaml's parser with the safe constructors when PyYAML was built with it: the same values, 4x faster (every
# backtest reads the schedule).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_leverage_schedule(path: str | Path = DEFAULT_SCHEDULE_FILE) -> LeverageSchedule:
    """Read brackets and liquidation fees from a YAML file (format in ``config/leverage_brackets.yaml``).

    Raises
    ------
    ConfigurationError
        For a missing or unknown key, a bad value, brackets that do not join
        up, or a published maintenance amount that disagrees with Binance's rule.
    """
    file = str(path)
    try:
        document = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    except (OSError, yaml.YAMLError) as error:
        raise ConfigurationError(file, "", f"cannot be read as YAML: {error}") from error
    if not isinstance(document, dict):
        raise ConfigurationError(file, "", f"must be a mapping with the keys {sorted(_TOP_KEYS)}")
    _check_keys(file, "", document, _TOP_KEYS, _TOP_KEYS)
    tables = document["brackets"]
    fees = document["liquidation_fees"]
    if not isinstance(tables, dict) or not isinstance(fees, dict):
        raise ConfigurationError(file, "brackets", "brackets and liquidation_fees must be mappings by symbol")
    return LeverageSchedule(
        {str(s): _parse_table(file, f"brackets.{s}", t) for s, t in tables.items()},
        _parse_table(file, "default_brackets", document["default_brackets"]),
        {str(s): _parse_rate(file, f"liquidation_fees.{s}", r) for s, r in fees.items()},
        _parse_rate(file, "default_liquidation_fee", document["default_liquidation_fee"]),
    )


def _parse_table(file: str, key: str, table: Any) -> tuple[LeverageBracket, ...]:
    if not isinstance(table, dict):
        raise ConfigurationError(file, key, "must be a mapping with source and brackets")
    _check_keys(file, key, table, _TABLE_KEYS, _TABLE_KEYS)
    rows = table["brackets"]
    if not isinstance(rows, list) or not rows:
        raise ConfigurationError(file, f"{key}.brackets", "must be a non-empty list")
    parsed: list[LeverageBracket] = []
    for index, row in enumerate(rows):
        parsed.append(_parse_bracket(file, f"{key}.brackets[{index}]", row, parsed[-1] if parsed else None))
    return tuple(parsed)


def _parse_bracket(file: str, key: str, row: Any, previous: LeverageBracket | None) -> LeverageBracket:
    if not isinstance(row, dict):
        raise ConfigurationError(file, key, "must be a mapping")
    _check_keys(file, key, row, _BRACKET_KEYS, _BRACKET_KEYS - {"maintenance_amount"})
    leverage = row["initial_leverage"]
    if isinstance(leverage, bool) or not isinstance(leverage, int) or leverage < 1:
        raise ConfigurationError(file, f"{key}.initial_leverage", f"must be an integer >= 1, got {leverage!r}")
    floor = _decimal(file, f"{key}.notional_floor", row["notional_floor"])
    cap = None if row["notional_cap"] is None else _decimal(file, f"{key}.notional_cap", row["notional_cap"])
    rate = _parse_rate(file, f"{key}.maintenance_margin_rate", row["maintenance_margin_rate"])
    _check_joins(file, key, previous, floor, cap, leverage, rate)
    amount = Decimal(0) if previous is None else floor * (rate - previous.maintenance_margin_rate)
    amount += Decimal(0) if previous is None else previous.maintenance_amount
    if "maintenance_amount" in row:
        published = _decimal(file, f"{key}.maintenance_amount", row["maintenance_amount"])
        if published != amount:
            raise ConfigurationError(
                file, f"{key}.maintenance_amount", f"{published} disagrees with Binance's rule, which gives {amount}"
            )
    return LeverageBracket(
        bracket=1 if previous is None else previous.bracket + 1,
        initial_leverage=leverage,
        notional_floor=floor,
        notional_cap=cap,
        maintenance_margin_rate=rate,
        maintenance_amount=amount,
    )


def _check_joins(
    file: str,
    key: str,
    previous: LeverageBracket | None,
    floor: Decimal,
    cap: Decimal | None,
    leverage: int,
    rate: Decimal,
) -> None:
    expected_floor = Decimal(0) if previous is None else previous.notional_cap
    if expected_floor is None or floor != expected_floor:
        raise ConfigurationError(file, f"{key}.notional_floor", f"must equal the previous cap ({expected_floor})")
    if cap is not None and cap <= floor:
        raise ConfigurationError(file, f"{key}.notional_cap", f"must exceed the floor {floor}")
    if previous is not None and (leverage > previous.initial_leverage or rate < previous.maintenance_margin_rate):
        raise ConfigurationError(file, key, "leverage must not rise and the maintenance rate must not fall")


def _check_keys(file: str, key: str, mapping: dict[Any, Any], allowed: set[str], required: set[str]) -> None:
    prefix = f"{key}." if key else ""
    for name in mapping:
        if name not in allowed:
            raise ConfigurationError(file, f"{prefix}{name}", "unknown key")
    for name in sorted(required - set(mapping)):
        raise ConfigurationError(file, f"{prefix}{name}", "missing")


def _parse_rate(file: str, key: str, raw: Any) -> Decimal:
    value = _decimal(file, key, raw)
    if not 0 <= value < 1:
        raise ConfigurationError(file, key, f"must be a fraction in [0, 1), got {value}")
    return value


def _decimal(file: str, key: str, raw: Any) -> Decimal:
    if isinstance(raw, bool | float) or not isinstance(raw, str | int):
        raise ConfigurationError(file, key, f"must be a quoted decimal, got {raw!r}")
    try:
        value = Decimal(str(raw).strip())
    except ArithmeticError as error:
        raise ConfigurationError(file, key, f"is not a decimal number: {raw!r}") from error
    if not value.is_finite() or value < 0:
        raise ConfigurationError(file, key, f"must be finite and not negative, got {raw!r}")
    return value
