"""Binance USD-M perpetual instruments and their exchange filters, in exact decimals.

An :class:`Instrument` holds one symbol's filters from ``GET /fapi/v1/exchangeInfo``
(PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL, PERCENT_PRICE,
MAX_NUM_ORDERS) as :class:`~decimal.Decimal`. It rounds prices and quantities
onto the exchange grid and tells whether Binance would accept an order, naming
the first filter the order breaks with Binance's error code and wording.

The grid rules are Binance's: a price passes PRICE_FILTER when
``(price - minPrice) % tickSize == 0`` and a quantity passes LOT_SIZE when
``(quantity - minQty) % stepSize == 0``; PERCENT_PRICE bounds a BUY price by
``markPrice * multiplierUp`` and a SELL price by ``markPrice * multiplierDown``;
MIN_NOTIONAL requires ``price * quantity >= notional`` (the mark price stands in
for a MARKET order's price) unless the order is reduce-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext
from enum import Enum
from pathlib import Path
from typing import Any

import msgspec
import yaml

from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import ConfigurationError

LARGEST_LEVERAGE = 125
"""Binance's largest leverage on any USD-M perpetual: no account's exposure over equity can go beyond it."""

# Wide enough that subtracting, dividing into whole steps and multiplying back
# never round for any price or quantity an exchange can express.
_EXACT = Context(prec=60)

_SIDES = frozenset({"BUY", "SELL"})


class Rounding(Enum):
    """Direction in which to move a value onto the exchange grid."""

    DOWN = "DOWN"
    UP = "UP"
    NEAREST = "NEAREST"
    """The closer grid point; a value exactly halfway goes UP."""


class FilterViolation(msgspec.Struct, frozen=True, kw_only=True):
    """The first exchange filter an order breaks.

    Parameters
    ----------
    code
        The error code Binance answers with for this violation.
    message
        Binance's wording, filled with the numbers of the order and the filter.
    """

    code: BinanceErrorCode
    message: str


class _InvalidField(ValueError):
    """An instrument field holds a value Binance never publishes."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """A Binance USD-M perpetual contract with its exchange filters.

    Parameters
    ----------
    symbol, base_asset, quote_asset
        Binance's names, e.g. ``BTCUSDT``, ``BTC``, ``USDT``.
    price_precision, quantity_precision
        The most decimal places Binance accepts in a price and a quantity
        (``pricePrecision`` and ``quantityPrecision``).
    tick_size, min_price, max_price
        PRICE_FILTER.
    step_size, min_quantity, max_quantity
        LOT_SIZE, for LIMIT orders.
    market_step_size, market_min_quantity, market_max_quantity
        MARKET_LOT_SIZE, for MARKET orders.
    min_notional
        MIN_NOTIONAL's ``notional``: the smallest ``price * quantity``.
    multiplier_up, multiplier_down, multiplier_decimal
        PERCENT_PRICE: the band around the mark price a limit price must stay in.
    max_open_orders
        MAX_NUM_ORDERS's ``limit``: open orders allowed on the symbol.
    maker_fee, taker_fee
        Commission rates as fractions of notional (Binance's base tier).
    source
        Where the filter values came from.

    Raises
    ------
    ValueError
        When a value is not finite, is negative where Binance's are not, or a
        minimum exceeds its maximum; the message names the field.
    """

    symbol: str
    base_asset: str
    quote_asset: str
    price_precision: int
    quantity_precision: int
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_quantity: Decimal
    max_quantity: Decimal
    market_step_size: Decimal
    market_min_quantity: Decimal
    market_max_quantity: Decimal
    min_notional: Decimal
    multiplier_up: Decimal
    multiplier_down: Decimal
    multiplier_decimal: int
    max_open_orders: int
    maker_fee: Decimal = Decimal("0.0002")
    taker_fee: Decimal = Decimal("0.0005")
    source: str

    def __post_init__(self) -> None:
        """Check the filters are ones Binance could publish."""
        _check_types(self)
        _check_signs(self)
        _check_bounds(self)

    def round_price(self, price: Decimal, rounding: Rounding) -> Decimal:
        """Move a price onto the tick grid ``min_price + k * tick_size``.

        A passive BUY limit is usually rounded DOWN and a passive SELL UP; that
        choice is the caller's.

        Parameters
        ----------
        price
            A positive, finite price.
        rounding
            Which neighbouring grid point to take.

        Returns
        -------
        Decimal
            The grid price, exact.

        Raises
        ------
        ValueError
            If ``price`` is not finite and positive, or rounds to zero or below.
        """
        _require_positive("price", price)
        rounded = _round_to_grid(price, self.min_price, self.tick_size, rounding)
        if rounded <= 0:
            raise ValueError(f"price {price} rounds {rounding.name} to {rounded}, not a price")
        return rounded

    def round_quantity(self, quantity: Decimal, market: bool = False) -> Decimal:
        """Round a quantity DOWN onto the step grid ``min_quantity + k * step_size``.

        Parameters
        ----------
        quantity
            A positive, finite quantity in base-asset units.
        market
            Use MARKET_LOT_SIZE (for a MARKET order) instead of LOT_SIZE.

        Returns
        -------
        Decimal
            The largest grid quantity not above ``quantity``, or zero when
            ``quantity`` is below the filter's minimum (nothing can be traded).

        Raises
        ------
        ValueError
            If ``quantity`` is not finite and positive.
        """
        _require_positive("quantity", quantity)
        step, minimum, _ = self._lot_size(market)
        if quantity < minimum:
            return Decimal(0).quantize(step)
        return _round_to_grid(quantity, minimum, step, Rounding.DOWN)

    def check_order(
        self,
        *,
        side: str,
        price: Decimal | None,
        quantity: Decimal,
        reference_price: Decimal,
        market: bool,
        reduce_only: bool,
    ) -> FilterViolation | None:
        """Return the first filter Binance would reject this order for, or None.

        Checks run in this order: side, price presence, precision, tick, step,
        minimum and maximum quantity, minimum and maximum price, percent price,
        minimum notional.

        Parameters
        ----------
        side
            ``"BUY"`` or ``"SELL"``.
        price
            The limit price; None for a MARKET order.
        quantity
            The order quantity in base-asset units.
        reference_price
            The mark price: the centre of the PERCENT_PRICE band and the price
            of a MARKET order's notional.
        market
            True for a MARKET order (MARKET_LOT_SIZE, no price), False for LIMIT.
        reduce_only
            Reduce-only orders are exempt from MIN_NOTIONAL.

        Returns
        -------
        FilterViolation or None
            The violation, or None when the order passes every filter.

        Raises
        ------
        ValueError
            If ``price`` (when given), ``quantity`` or ``reference_price`` is
            not finite and positive.
        """
        _require_positive("quantity", quantity)
        _require_positive("reference_price", reference_price)
        if price is not None:
            _require_positive("price", price)
        violations = self._violations(side, price, quantity, reference_price, market, reduce_only)
        return next((violation for violation in violations if violation is not None), None)

    def _violations(
        self,
        side: str,
        price: Decimal | None,
        quantity: Decimal,
        reference_price: Decimal,
        market: bool,
        reduce_only: bool,
    ) -> Iterator[FilterViolation | None]:
        """Yield each check's outcome lazily, in the order Binance applies the filters."""
        yield _shape_violation(side, price, market)
        # Past the shape check, price is None exactly when the order is a MARKET order.
        if price is not None:
            yield self._price_grid_violation(price)
        yield self._quantity_violation(quantity, market)
        if price is not None:
            yield self._price_range_violation(price, side, reference_price)
        if not reduce_only:
            yield self._notional_violation(reference_price if price is None else price, quantity)

    def _lot_size(self, market: bool) -> tuple[Decimal, Decimal, Decimal]:
        """Return (step, minimum, maximum) of MARKET_LOT_SIZE or LOT_SIZE."""
        if market:
            return self.market_step_size, self.market_min_quantity, self.market_max_quantity
        return self.step_size, self.min_quantity, self.max_quantity

    def _price_grid_violation(self, price: Decimal) -> FilterViolation | None:
        """Check the price's decimals and its place on the tick grid."""
        if _decimal_places(price) > self.price_precision:
            return _violation(
                BinanceErrorCode.BAD_PRECISION, f"price {price} has more than {self.price_precision} decimals"
            )
        if not _on_grid(price, self.min_price, self.tick_size):
            return _violation(
                BinanceErrorCode.PRICE_NOT_INCREASED_BY_TICK_SIZE,
                f"price {price}, tick size {self.tick_size} from {self.min_price}",
            )
        return None

    def _quantity_violation(self, quantity: Decimal, market: bool) -> FilterViolation | None:
        """Check the quantity's decimals, step grid and bounds."""
        step, minimum, maximum = self._lot_size(market)
        if _decimal_places(quantity) > self.quantity_precision:
            return _violation(
                BinanceErrorCode.BAD_PRECISION, f"quantity {quantity} has more than {self.quantity_precision} decimals"
            )
        if not _on_grid(quantity, minimum, step):
            return _violation(
                BinanceErrorCode.QTY_NOT_INCREASED_BY_STEP_SIZE, f"quantity {quantity}, step size {step} from {minimum}"
            )
        if quantity < minimum:
            return _violation(BinanceErrorCode.QTY_LESS_THAN_MIN_QTY, f"quantity {quantity} < {minimum}")
        if quantity > maximum:
            return _violation(BinanceErrorCode.QTY_GREATER_THAN_MAX_QTY, f"quantity {quantity} > {maximum}")
        return None

    def _price_range_violation(self, price: Decimal, side: str, reference_price: Decimal) -> FilterViolation | None:
        """Check PRICE_FILTER's bounds, then PERCENT_PRICE around the mark price."""
        if price < self.min_price:
            return _violation(BinanceErrorCode.PRICE_LESS_THAN_MIN_PRICE, f"price {price} < {self.min_price}")
        if price > self.max_price:
            return _violation(BinanceErrorCode.PRICE_GREATER_THAN_MAX_PRICE, f"price {price} > {self.max_price}")
        with localcontext(_EXACT):
            cap = reference_price * self.multiplier_up
            floor = reference_price * self.multiplier_down
        if side == "BUY" and price > cap:
            return _violation(
                BinanceErrorCode.PRICE_HIGHER_THAN_MULTIPLIER_UP,
                f"BUY price {price} > mark {reference_price} x {self.multiplier_up} = {cap}",
            )
        if side == "SELL" and price < floor:
            return _violation(
                BinanceErrorCode.PRICE_LOWER_THAN_MULTIPLIER_DOWN,
                f"SELL price {price} < mark {reference_price} x {self.multiplier_down} = {floor}",
            )
        return None

    def _notional_violation(self, price: Decimal, quantity: Decimal) -> FilterViolation | None:
        """Check MIN_NOTIONAL."""
        with localcontext(_EXACT):
            notional = price * quantity
        if notional < self.min_notional:
            return _violation(BinanceErrorCode.MIN_NOTIONAL, f"notional {notional}", self.min_notional)
        return None


_FIELD_TYPES = {field.name: field.type for field in msgspec.structs.fields(Instrument)}
_DECIMAL_FIELDS = tuple(name for name, kind in _FIELD_TYPES.items() if kind is Decimal)
_INTEGER_FIELDS = tuple(name for name, kind in _FIELD_TYPES.items() if kind is int)
# The symbol is the YAML mapping's key, not a field inside it.
_STRING_FIELDS = tuple(name for name, kind in _FIELD_TYPES.items() if kind is str and name != "symbol")
_OPTIONAL_FIELDS = frozenset(field.name for field in msgspec.structs.fields(Instrument) if not field.required)


_POSITIVE_FIELDS = (
    "tick_size",
    "step_size",
    "market_step_size",
    "min_quantity",
    "market_min_quantity",
    "multiplier_up",
    "multiplier_down",
)
_NON_NEGATIVE_FIELDS = ("min_price", "min_notional")
_BOUNDS = (
    ("min_price", "max_price"),
    ("min_quantity", "max_quantity"),
    ("market_min_quantity", "market_max_quantity"),
    ("multiplier_down", "multiplier_up"),
)


def _check_types(instrument: Instrument) -> None:
    """Require non-empty names, non-negative integers and finite Decimals."""
    for name in ("symbol", *_STRING_FIELDS):
        value = getattr(instrument, name)
        if not isinstance(value, str) or not value:
            raise _InvalidField(name, f"must be a non-empty string, got {value!r}")
    for name in _INTEGER_FIELDS:
        value = getattr(instrument, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _InvalidField(name, f"must be a non-negative integer, got {value!r}")
    for name in _DECIMAL_FIELDS:
        value = getattr(instrument, name)
        if not isinstance(value, Decimal) or not value.is_finite():
            raise _InvalidField(name, f"must be a finite Decimal, got {value!r}")


def _check_signs(instrument: Instrument) -> None:
    """Require positive steps, minimum quantities and multipliers; non-negative minimums."""
    for name in _POSITIVE_FIELDS:
        if getattr(instrument, name) <= 0:
            raise _InvalidField(name, f"must be positive, got {getattr(instrument, name)}")
    for name in _NON_NEGATIVE_FIELDS:
        if getattr(instrument, name) < 0:
            raise _InvalidField(name, f"must not be negative, got {getattr(instrument, name)}")


def _check_bounds(instrument: Instrument) -> None:
    """Require every maximum to be at least its minimum."""
    for low, high in _BOUNDS:
        minimum, maximum = getattr(instrument, low), getattr(instrument, high)
        if maximum < minimum:
            raise _InvalidField(high, f"must not be below {low} ({maximum} < {minimum})")


# libyaml's parser with the safe constructors when PyYAML was built with it: the same values, 5x faster.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

BUNDLED_INSTRUMENTS_FILE = Path(__file__).resolve().parents[1].parent / "config" / "instruments.yaml"
"""The instrument specifications keel ships (``config/instruments.yaml``)."""


def bundled_instruments() -> dict[str, Instrument]:
    """Return the instruments of the bundled specifications file (for components built standalone)."""
    return load_instruments(BUNDLED_INSTRUMENTS_FILE)


def load_instruments(path: str | Path) -> dict[str, Instrument]:
    """Read instruments from a YAML file into a mapping keyed by symbol.

    The file holds one top-level key, ``instruments``, mapping each symbol to
    its fields (every field of :class:`Instrument` except ``symbol``; the fees
    are optional). Decimal fields must be written as quoted strings (or
    integers) so that no value passes through a binary float.

    Parameters
    ----------
    path
        The YAML file, e.g. ``config/instruments.yaml``.

    Returns
    -------
    dict[str, Instrument]
        The instruments by symbol, in file order.

    Raises
    ------
    ConfigurationError
        For a missing or unknown key or a bad value, naming the file and the
        dotted key (``instruments.BTCUSDT.tick_size``).
    """
    file = str(path)
    try:
        document = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    except (OSError, yaml.YAMLError) as error:
        raise ConfigurationError(file, "", f"cannot be read as YAML: {error}") from error
    if not isinstance(document, dict):
        raise ConfigurationError(file, "", "must be a mapping with the key 'instruments'")
    for key in document:
        if key != "instruments":
            raise ConfigurationError(file, str(key), "unknown key")
    entries = document.get("instruments")
    if not isinstance(entries, dict) or not entries:
        raise ConfigurationError(file, "instruments", "missing, or not a mapping of symbols")
    return {str(symbol): _parse_instrument(file, str(symbol), fields) for symbol, fields in entries.items()}


def _parse_instrument(file: str, symbol: str, fields: Any) -> Instrument:
    """Build one instrument from its YAML mapping, naming the key of any error."""
    prefix = f"instruments.{symbol}"
    if not isinstance(fields, dict):
        raise ConfigurationError(file, prefix, "must be a mapping of filter fields")
    allowed = set(_DECIMAL_FIELDS) | set(_INTEGER_FIELDS) | set(_STRING_FIELDS)
    for key in fields:
        if key not in allowed:
            raise ConfigurationError(file, f"{prefix}.{key}", "unknown key")
    for key in sorted(allowed - _OPTIONAL_FIELDS):
        if key not in fields:
            raise ConfigurationError(file, f"{prefix}.{key}", "missing")
    values: dict[str, Any] = {}
    for key, raw in fields.items():
        try:
            values[key] = _parse_value(key, raw)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(file, f"{prefix}.{key}", str(error)) from error
    try:
        return Instrument(symbol=symbol, **values)
    except _InvalidField as error:
        key = f"{prefix}.{error.field}" if error.field != "symbol" else prefix
        raise ConfigurationError(file, key, error.problem) from error


def _parse_value(key: str, raw: Any) -> Decimal | int | str:
    """Convert one YAML scalar to the field's type without passing through float."""
    if key in _STRING_FIELDS:
        if not isinstance(raw, str):
            raise TypeError(f"must be a string, got {raw!r}")
        return raw
    if isinstance(raw, bool):
        raise TypeError(f"must be a number, got {raw!r}")
    if key in _INTEGER_FIELDS:
        if not isinstance(raw, int):
            raise TypeError(f"must be an integer, got {raw!r}")
        return raw
    if isinstance(raw, float):
        raise TypeError(f'must be quoted ("{raw}") to stay an exact decimal')
    if not isinstance(raw, str | int):
        raise TypeError(f"must be a decimal number, got {raw!r}")
    try:
        value = Decimal(str(raw).strip())
    except ArithmeticError as error:
        raise ValueError(f"is not a decimal number: {raw!r}") from error
    if not value.is_finite():
        raise ValueError(f"must be finite, got {raw!r}")
    return value


def _shape_violation(side: str, price: Decimal | None, market: bool) -> FilterViolation | None:
    """Check the side, and that a LIMIT order has a price and a MARKET order none."""
    if side not in _SIDES:
        return _violation(BinanceErrorCode.INVALID_SIDE, f"side {side!r}")
    if market and price is not None:
        return _violation(BinanceErrorCode.PARAM_NOT_REQUIRED, f"price {price}", "price")
    if not market and price is None:
        return _violation(BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, "", "price")
    return None


def _require_positive(name: str, value: Decimal) -> None:
    """Raise naming ``name`` unless ``value`` is a finite, positive Decimal."""
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


_QUANTIZE = {Rounding.DOWN: ROUND_FLOOR, Rounding.UP: ROUND_CEILING, Rounding.NEAREST: ROUND_HALF_UP}
_DECIMAL_GRIDS: dict[tuple[Decimal, Decimal], bool] = {}


def _is_decimal_grid(origin: Decimal, step: Decimal) -> bool:
    """Tell whether the grid ``origin + k * step`` is every multiple of a power of ten written like ``origin``.

    Then rounding onto it is one ``quantize`` (Binance's filters are such
    grids: a step of 0.001 from a minimum of 0.001), with the same digits as
    ``origin + k * step``.
    """
    if not origin.same_quantum(step):  # not in the cache's key: 0.10 and 0.100 are one dictionary key
        return False
    key = (origin, step)
    known = _DECIMAL_GRIDS.get(key)
    if known is None:
        sign, digits, exponent = step.as_tuple()
        known = sign == 0 and digits == (1,) and isinstance(exponent, int) and _on_grid(origin, Decimal(0), step)
        if len(_DECIMAL_GRIDS) < 10_000:
            _DECIMAL_GRIDS[key] = known
    return known


def _round_to_grid(value: Decimal, origin: Decimal, step: Decimal, rounding: Rounding) -> Decimal:
    """Return the grid point ``origin + k * step`` next to ``value`` in direction ``rounding``."""
    if value > 0 and _is_decimal_grid(origin, step):
        try:
            return value.quantize(step, rounding=_QUANTIZE[rounding], context=_EXACT)
        except InvalidOperation:  # more digits than the exact context holds: the general way says why
            pass
    # The exact context's own methods, not localcontext(): this runs for every order and child order.
    exact = _EXACT
    # divmod truncates toward zero; the remainder carries the sign of value - origin.
    steps, remainder = exact.divmod(exact.subtract(value, origin), step)
    if rounding is Rounding.DOWN and remainder < 0:
        steps = exact.subtract(steps, 1)
    elif rounding is Rounding.UP and remainder > 0:
        steps = exact.add(steps, 1)
    elif rounding is Rounding.NEAREST:
        twice = exact.multiply(2, remainder)
        if remainder >= 0 and twice >= step:
            steps = exact.add(steps, 1)
        elif remainder < 0 and exact.minus(twice) > step:
            steps = exact.subtract(steps, 1)
    return exact.add(origin, exact.multiply(steps, step))


def _on_grid(value: Decimal, origin: Decimal, step: Decimal) -> bool:
    """Tell whether ``(value - origin) % step == 0``, exactly."""
    with localcontext(_EXACT):
        return (value - origin) % step == 0


def _decimal_places(value: Decimal) -> int:
    """Count the significant decimal places of ``value`` (trailing zeros do not count)."""
    exponent = value.normalize(_EXACT).as_tuple().exponent
    return max(0, -int(exponent))


def _violation(code: BinanceErrorCode, detail: str, *fill: object) -> FilterViolation:
    """Build a violation whose message is Binance's wording followed by the numbers."""
    message = code.message.format(*fill)
    return FilterViolation(code=code, message=f"{message} ({detail})" if detail else message)
