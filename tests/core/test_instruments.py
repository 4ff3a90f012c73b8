"""Tests of keel.core.instruments: grid rounding, Binance's filter checks, the YAML loader.

The instruments are the real ones from config/instruments.yaml, and their tick
and step sizes are checked against the recorded market data in data/.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import ConfigurationError
from keel.core.instruments import (
    FilterViolation,
    Instrument,
    Rounding,
    load_instruments,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "instruments.yaml"
DATA = ROOT / "data"
MINUTE_BARS = DATA / "ohlcv" / "binance_usdm_1m_2025-05"
HOUR_BARS = DATA / "ohlcv" / "binance_usdm_1h_2025-03"
FUNDING = DATA / "funding" / "binance_usdm_funding_2025-03_06.csv.gz"
BTC_TRADES = DATA / "trades" / "binance_usdm_BTCUSDT_2024-08-08_trades.csv.gz"
MINUTE_SYMBOLS = [
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "LINKUSDT",
    "LTCUSDT",
    "BCHUSDT",
    "AVAXUSDT",
    "SUIUSDT",
]
HOUR_SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "LINKUSDT", "LTCUSDT", "BCHUSDT"]

INSTRUMENTS = load_instruments(CONFIG)
BTC = INSTRUMENTS["BTCUSDT"]


def off_grid(values: list[Decimal], origin: Decimal, step: Decimal) -> list[Decimal]:
    """Return the values that are not origin + k * step."""
    return [value for value in values if (value - origin) % step != 0]


def exact_floor_on_grid(value: Decimal, origin: Decimal, step: Decimal) -> Fraction:
    """Independent oracle: the grid point at or below value, in rational arithmetic."""
    steps = math.floor((Fraction(value) - Fraction(origin)) / Fraction(step))
    return Fraction(origin) + steps * Fraction(step)


def decimal_places(value: Decimal) -> int:
    return max(0, -int(value.normalize().as_tuple().exponent))


def grid_price(instrument: Instrument, steps: int) -> Decimal:
    return instrument.min_price + steps * instrument.tick_size


instruments = st.sampled_from(list(INSTRUMENTS.values()))


@st.composite
def prices_in_range(draw: st.DrawFn, instrument: Instrument) -> Decimal:
    """A positive price between the filter's bounds with up to 10 decimals."""
    places = draw(st.integers(min_value=0, max_value=10))
    low = max(instrument.min_price, Decimal(1).scaleb(-places))
    return draw(st.decimals(min_value=low, max_value=instrument.max_price, places=places))


@st.composite
def accepted_limit_orders(draw: st.DrawFn) -> tuple[Instrument, dict[str, Any]]:
    """An instrument and a LIMIT order on every grid, inside every bound."""
    instrument = draw(instruments)
    # A mark price on the grid, away from the price bounds so the band fits inside them.
    low_steps = int((instrument.min_price * 2 - instrument.min_price) / instrument.tick_size)
    high_steps = int((instrument.max_price / 2 - instrument.min_price) / instrument.tick_size)
    reference = grid_price(instrument, draw(st.integers(low_steps, high_steps)))
    lowest = instrument.round_price(reference * instrument.multiplier_down, Rounding.UP)
    highest = instrument.round_price(reference * instrument.multiplier_up, Rounding.DOWN)
    side = draw(st.sampled_from(["BUY", "SELL"]))
    span = int((highest - lowest) / instrument.tick_size)
    price = lowest + draw(st.integers(0, span)) * instrument.tick_size
    smallest = instrument.round_quantity(instrument.min_notional / price) + instrument.step_size
    smallest = max(smallest, instrument.min_quantity)
    quantity = smallest + draw(st.integers(0, 10_000)) * instrument.step_size
    assume(quantity <= instrument.max_quantity)
    order = {
        "side": side,
        "price": price,
        "quantity": quantity,
        "reference_price": reference,
        "market": False,
        "reduce_only": False,
    }
    return instrument, order


# --- round_price ---------------------------------------------------------------------------


@given(st.data())
def test_round_price_lands_on_the_tick_grid_in_the_requested_direction(data: st.DataObject) -> None:
    # Arrange
    instrument = data.draw(instruments)
    price = data.draw(prices_in_range(instrument))
    rounding = data.draw(st.sampled_from(list(Rounding)))

    # Act
    rounded = instrument.round_price(price, rounding)

    # Assert
    assert isinstance(rounded, Decimal)
    assert (rounded - instrument.min_price) % instrument.tick_size == 0
    assert abs(rounded - price) < instrument.tick_size
    if rounding is Rounding.DOWN:
        assert rounded <= price
    elif rounding is Rounding.UP:
        assert rounded >= price
    else:
        assert 2 * abs(rounded - price) <= instrument.tick_size


@given(st.data())
def test_round_price_down_is_exact(data: st.DataObject) -> None:
    # Arrange
    instrument = data.draw(instruments)
    price = data.draw(prices_in_range(instrument))

    # Act
    rounded = instrument.round_price(price, Rounding.DOWN)

    # Assert
    assert Fraction(rounded) == exact_floor_on_grid(price, instrument.min_price, instrument.tick_size)


@given(instruments, st.integers(min_value=0, max_value=10**6), st.sampled_from(list(Rounding)))
def test_round_price_keeps_a_grid_price(instrument: Instrument, steps: int, rounding: Rounding) -> None:
    # Arrange
    price = grid_price(instrument, steps)

    # Act
    rounded = instrument.round_price(price, rounding)

    # Assert
    assert rounded == price


@pytest.mark.parametrize(
    ("symbol", "price", "rounding", "expected"),
    [
        ("BTCUSDT", "95000.15", Rounding.DOWN, "95000.10"),
        ("BTCUSDT", "95000.15", Rounding.UP, "95000.20"),
        ("BTCUSDT", "95000.15", Rounding.NEAREST, "95000.20"),
        ("BTCUSDT", "95000.149", Rounding.NEAREST, "95000.10"),
        ("XRPUSDT", "2.19245", Rounding.DOWN, "2.1924"),
        ("SUIUSDT", "3.27134", Rounding.UP, "3.271400"),
        ("ENAUSDT", "0.33333333", Rounding.NEAREST, "0.3333000"),
    ],
)
def test_round_price_examples(symbol: str, price: str, rounding: Rounding, expected: str) -> None:
    # Arrange
    instrument = INSTRUMENTS[symbol]

    # Act
    rounded = instrument.round_price(Decimal(price), rounding)

    # Assert
    assert str(rounded) == expected


def test_round_price_below_the_grid_raises() -> None:
    # Arrange: ENAUSDT's grid starts at 0.001 with ticks of 0.0001
    instrument = INSTRUMENTS["ENAUSDT"]

    # Act / Assert
    with pytest.raises(ValueError, match="price"):
        instrument.round_price(Decimal("0.00004"), Rounding.DOWN)


# --- round_quantity ------------------------------------------------------------------------


@given(instruments, st.booleans(), st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(20000000), places=8))
def test_round_quantity_rounds_down_onto_the_step_grid(instrument: Instrument, market: bool, quantity: Decimal) -> None:
    # Arrange
    step = instrument.market_step_size if market else instrument.step_size
    minimum = instrument.market_min_quantity if market else instrument.min_quantity

    # Act
    rounded = instrument.round_quantity(quantity, market=market)

    # Assert
    assert isinstance(rounded, Decimal)
    assert rounded <= quantity
    if quantity < minimum:
        assert rounded == 0
    else:
        assert (rounded - minimum) % step == 0
        assert quantity - rounded < step
        assert Fraction(rounded) == exact_floor_on_grid(quantity, minimum, step)
        assert instrument.round_quantity(rounded, market=market) == rounded


def test_round_quantity_uses_market_lot_size_for_market_orders() -> None:
    # Arrange: a LOT_SIZE step of 0.001 and a MARKET_LOT_SIZE step of 0.01
    instrument = msgspec.structs.replace(BTC, market_step_size=Decimal("0.01"), market_min_quantity=Decimal("0.01"))

    # Act
    limit, market = (instrument.round_quantity(Decimal("0.0179"), market=flag) for flag in (False, True))

    # Assert
    assert (limit, market) == (Decimal("0.017"), Decimal("0.01"))


# --- check_order: accepted ----------------------------------------------------------------


@given(accepted_limit_orders())
def test_check_order_accepts_an_order_on_every_grid_and_inside_every_bound(
    case: tuple[Instrument, dict[str, Any]],
) -> None:
    # Arrange
    instrument, order = case

    # Act
    violation = instrument.check_order(**order)

    # Assert
    assert violation is None


@given(accepted_limit_orders())
def test_check_order_accepts_the_same_quantity_as_a_market_order(
    case: tuple[Instrument, dict[str, Any]],
) -> None:
    # Arrange
    instrument, order = case
    assume(order["quantity"] * order["reference_price"] >= instrument.min_notional)
    assume(order["quantity"] <= instrument.market_max_quantity)
    market_order = {**order, "price": None, "market": True}

    # Act
    violation = instrument.check_order(**market_order)

    # Assert
    assert violation is None


def test_percent_price_bounds_only_the_side_that_could_cross() -> None:
    # Arrange: a SELL far above the mark and a BUY far below it rest passively
    far_sell = {"side": "SELL", "price": Decimal("120000.0")}
    far_buy = {"side": "BUY", "price": Decimal("60000.0")}
    common = {"quantity": Decimal("0.010"), "reference_price": Decimal(95000), "market": False, "reduce_only": False}

    # Act
    violations = [BTC.check_order(**far_sell, **common), BTC.check_order(**far_buy, **common)]

    # Assert
    assert violations == [None, None]


# --- check_order: rejected ----------------------------------------------------------------


def order(**changes: Any) -> dict[str, Any]:
    """A BTCUSDT BUY LIMIT that passes every filter, with the given changes."""
    base = {
        "side": "BUY",
        "price": Decimal("95000.1"),
        "quantity": Decimal("0.002"),
        "reference_price": Decimal(95000),
        "market": False,
        "reduce_only": False,
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("instrument", "changes", "code"),
    [
        pytest.param(BTC, {"side": "HOLD"}, BinanceErrorCode.INVALID_SIDE, id="side"),
        pytest.param(BTC, {"market": True}, BinanceErrorCode.PARAM_NOT_REQUIRED, id="market-order-with-price"),
        pytest.param(
            BTC, {"price": None}, BinanceErrorCode.MANDATORY_PARAM_EMPTY_OR_MALFORMED, id="limit-order-without-price"
        ),
        pytest.param(BTC, {"price": Decimal("95000.123")}, BinanceErrorCode.BAD_PRECISION, id="price-precision"),
        pytest.param(BTC, {"quantity": Decimal("0.0025")}, BinanceErrorCode.BAD_PRECISION, id="quantity-precision"),
        pytest.param(
            BTC, {"price": Decimal("95000.15")}, BinanceErrorCode.PRICE_NOT_INCREASED_BY_TICK_SIZE, id="tick-size"
        ),
        pytest.param(
            msgspec.structs.replace(BTC, step_size=Decimal("0.002")),
            {"quantity": Decimal("0.004")},
            BinanceErrorCode.QTY_NOT_INCREASED_BY_STEP_SIZE,
            id="step-size",
        ),
        pytest.param(
            msgspec.structs.replace(BTC, min_quantity=Decimal("0.010")),
            {"quantity": Decimal("0.005")},
            BinanceErrorCode.QTY_LESS_THAN_MIN_QTY,
            id="min-quantity",
        ),
        pytest.param(
            BTC, {"quantity": Decimal("1000.001")}, BinanceErrorCode.QTY_GREATER_THAN_MAX_QTY, id="max-quantity"
        ),
        pytest.param(
            BTC,
            {"price": Decimal("261.0"), "reference_price": Decimal(261), "quantity": Decimal(1)},
            BinanceErrorCode.PRICE_LESS_THAN_MIN_PRICE,
            id="min-price",
        ),
        pytest.param(
            BTC,
            {"price": Decimal("809484.1"), "reference_price": Decimal(809484)},
            BinanceErrorCode.PRICE_GREATER_THAN_MAX_PRICE,
            id="max-price",
        ),
        pytest.param(
            BTC, {"price": Decimal("99750.1")}, BinanceErrorCode.PRICE_HIGHER_THAN_MULTIPLIER_UP, id="buy-above-cap"
        ),
        pytest.param(
            BTC,
            {"side": "SELL", "price": Decimal("90249.9")},
            BinanceErrorCode.PRICE_LOWER_THAN_MULTIPLIER_DOWN,
            id="sell-below-floor",
        ),
        pytest.param(BTC, {"quantity": Decimal("0.001")}, BinanceErrorCode.MIN_NOTIONAL, id="limit-notional"),
        pytest.param(
            BTC,
            {"price": None, "market": True, "quantity": Decimal("0.001")},
            BinanceErrorCode.MIN_NOTIONAL,
            id="market-notional-at-mark-price",
        ),
    ],
)
def test_check_order_names_the_violated_filter(
    instrument: Instrument, changes: dict[str, Any], code: BinanceErrorCode
) -> None:
    # Arrange
    candidate = order(**changes)

    # Act
    violation = instrument.check_order(**candidate)

    # Assert
    assert violation is not None
    assert violation.code is code
    assert violation.message.startswith(code.message.split("{")[0])


def test_check_order_band_edges_are_accepted() -> None:
    # Arrange: exactly mark x multiplierUp for a BUY and mark x multiplierDown for a SELL
    at_cap = order(price=Decimal("99750.0"))
    at_floor = order(side="SELL", price=Decimal("90250.0"))

    # Act
    violations = [BTC.check_order(**at_cap), BTC.check_order(**at_floor)]

    # Assert
    assert violations == [None, None]


def test_min_notional_message_is_binance_wording_with_the_filter_value() -> None:
    # Arrange: 0.001 BTC at 95000.1 is 95.0001 USDT, below BTCUSDT's 100

    # Act
    violation = BTC.check_order(**order(quantity=Decimal("0.001")))

    # Assert
    assert violation == FilterViolation(
        code=BinanceErrorCode.MIN_NOTIONAL,
        message="Order's notional must be no smaller than 100 (unless you choose reduce only) (notional 95.0001)",
    )


def test_reduce_only_orders_are_exempt_from_min_notional() -> None:
    # Arrange
    small = order(quantity=Decimal("0.001"), reduce_only=True)

    # Act
    violation = BTC.check_order(**small)

    # Assert
    assert violation is None


@given(accepted_limit_orders(), st.integers(min_value=1, max_value=9))
def test_check_order_rejects_a_price_off_the_tick_grid(case: tuple[Instrument, dict[str, Any]], tenths: int) -> None:
    # Arrange: move an accepted price by a fraction of a tick
    instrument, accepted = case
    price = accepted["price"] + instrument.tick_size * tenths / 10

    # Act
    violation = instrument.check_order(**{**accepted, "price": price})

    # Assert
    assert violation is not None
    if decimal_places(price) > instrument.price_precision:
        assert violation.code is BinanceErrorCode.BAD_PRECISION
    else:
        assert violation.code is BinanceErrorCode.PRICE_NOT_INCREASED_BY_TICK_SIZE


@given(accepted_limit_orders())
def test_check_order_rejects_a_notional_below_the_minimum(
    case: tuple[Instrument, dict[str, Any]],
) -> None:
    # Arrange: the smallest quantity, at a price where it is worth less than the minimum
    instrument, accepted = case
    assume(accepted["price"] * instrument.min_quantity < instrument.min_notional)
    small = {**accepted, "quantity": instrument.min_quantity}

    # Act
    violation = instrument.check_order(**small)

    # Assert
    assert violation is not None
    assert violation.code is BinanceErrorCode.MIN_NOTIONAL


# --- input validation ---------------------------------------------------------------------


BAD_NUMBERS = [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal(0), Decimal("-0.1")]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=str)
def test_round_price_rejects_a_non_positive_or_non_finite_price(bad: Decimal) -> None:
    with pytest.raises(ValueError, match="price"):
        BTC.round_price(bad, Rounding.DOWN)


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=str)
def test_round_quantity_rejects_a_non_positive_or_non_finite_quantity(bad: Decimal) -> None:
    with pytest.raises(ValueError, match="quantity"):
        BTC.round_quantity(bad)


@pytest.mark.parametrize("argument", ["price", "quantity", "reference_price"])
@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=str)
def test_check_order_rejects_a_bad_number_naming_the_argument(argument: str, bad: Decimal) -> None:
    with pytest.raises(ValueError, match=argument):
        BTC.check_order(**order(**{argument: bad}))


def test_a_float_is_refused() -> None:
    with pytest.raises(TypeError, match="price"):
        BTC.round_price(95000.1, Rounding.DOWN)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tick_size": Decimal(0)}, "tick_size"),
        ({"step_size": Decimal("-0.001")}, "step_size"),
        ({"max_price": Decimal(100)}, "max_price"),
        ({"max_quantity": Decimal("0.0001")}, "max_quantity"),
        ({"min_notional": Decimal("NaN")}, "min_notional"),
        ({"price_precision": -1}, "price_precision"),
        ({"source": ""}, "source"),
    ],
)
def test_instrument_refuses_filters_binance_never_publishes(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        msgspec.structs.replace(BTC, **changes)


# --- real data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [MINUTE_BARS / f"{symbol}_1m.csv.gz" for symbol in MINUTE_SYMBOLS]
    + [HOUR_BARS / f"{symbol}_1h.csv.gz" for symbol in HOUR_SYMBOLS],
    ids=lambda path: path.name,
)
def test_recorded_close_prices_lie_on_the_tick_grid(path: Path) -> None:
    # Arrange
    instrument = INSTRUMENTS[path.name.split("_")[0]]
    closes = [Decimal(str(value)) for value in pd.read_csv(path)["close"]]

    # Act
    misplaced = off_grid(closes, instrument.min_price, instrument.tick_size)

    # Assert
    assert not misplaced, (
        f"{len(misplaced)} of {len(closes)} closes are off {instrument.symbol}'s grid "
        f"(tick {instrument.tick_size} from {instrument.min_price}), e.g. {misplaced[:5]}"
    )
    assert instrument.min_price <= min(closes) <= max(closes) <= instrument.max_price


def test_recorded_btc_trades_lie_on_the_tick_and_step_grids() -> None:
    # Arrange: prices and quantities exactly as the exchange sent them
    trades = pd.read_csv(BTC_TRADES, dtype={"price": str, "qty": str})
    prices = [Decimal(value) for value in trades["price"]]
    quantities = [Decimal(value) for value in trades["qty"]]

    # Act
    misplaced_prices = off_grid(prices, BTC.min_price, BTC.tick_size)
    misplaced_quantities = off_grid(quantities, BTC.min_quantity, BTC.step_size)

    # Assert
    assert misplaced_prices == []
    assert misplaced_quantities == []
    assert min(quantities) >= BTC.min_quantity


# --- load_instruments ---------------------------------------------------------------------


def test_load_instruments_reads_every_bundled_symbol() -> None:
    # Arrange
    funding_symbols = set(pd.read_csv(FUNDING)["symbol"])

    # Act
    loaded = load_instruments(CONFIG)

    # Assert
    assert set(loaded) == funding_symbols | set(MINUTE_SYMBOLS)
    assert all(symbol == instrument.symbol for symbol, instrument in loaded.items())
    assert all(instrument.source for instrument in loaded.values())
    assert loaded["BTCUSDT"].tick_size == Decimal("0.10")
    assert loaded["BTCUSDT"].maker_fee == Decimal("0.0002")
    assert loaded["BTCUSDT"].taker_fee == Decimal("0.0005")


def write_config(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "instruments.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def real_document() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def drop_tick_size(document: dict[str, Any]) -> None:
    del document["instruments"]["BTCUSDT"]["tick_size"]


def add_unknown_field(document: dict[str, Any]) -> None:
    document["instruments"]["ETHUSDT"]["tick"] = "0.01"


def unquote_tick_size(document: dict[str, Any]) -> None:
    document["instruments"]["BTCUSDT"]["tick_size"] = 0.1


def garble_tick_size(document: dict[str, Any]) -> None:
    document["instruments"]["BTCUSDT"]["tick_size"] = "one tenth"


def zero_tick_size(document: dict[str, Any]) -> None:
    document["instruments"]["BTCUSDT"]["tick_size"] = "0"


def infinite_max_price(document: dict[str, Any]) -> None:
    document["instruments"]["SOLUSDT"]["max_price"] = "Infinity"


def invert_price_bounds(document: dict[str, Any]) -> None:
    document["instruments"]["XRPUSDT"]["max_price"] = "0.0001"


def quote_precision(document: dict[str, Any]) -> None:
    document["instruments"]["BTCUSDT"]["price_precision"] = "2"


def empty_source(document: dict[str, Any]) -> None:
    document["instruments"]["SUIUSDT"]["source"] = ""


def add_top_level_key(document: dict[str, Any]) -> None:
    document["defaults"] = {"maker_fee": "0.0002"}


def drop_instruments(document: dict[str, Any]) -> None:
    del document["instruments"]


def list_fields(document: dict[str, Any]) -> None:
    document["instruments"]["ENAUSDT"] = ["tick_size", "0.0001"]


@pytest.mark.parametrize(
    ("breakage", "key"),
    [
        (drop_tick_size, "instruments.BTCUSDT.tick_size"),
        (add_unknown_field, "instruments.ETHUSDT.tick"),
        (unquote_tick_size, "instruments.BTCUSDT.tick_size"),
        (garble_tick_size, "instruments.BTCUSDT.tick_size"),
        (zero_tick_size, "instruments.BTCUSDT.tick_size"),
        (infinite_max_price, "instruments.SOLUSDT.max_price"),
        (invert_price_bounds, "instruments.XRPUSDT.max_price"),
        (quote_precision, "instruments.BTCUSDT.price_precision"),
        (empty_source, "instruments.SUIUSDT.source"),
        (add_top_level_key, "defaults"),
        (drop_instruments, "instruments"),
        (list_fields, "instruments.ENAUSDT"),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_load_instruments_names_the_broken_key(tmp_path: Path, breakage: Any, key: str) -> None:
    # Arrange
    document = real_document()
    breakage(document)
    path = write_config(tmp_path, document)

    # Act
    with pytest.raises(ConfigurationError) as raised:
        load_instruments(path)

    # Assert
    assert raised.value.key == key
    assert raised.value.file == str(path)
    assert raised.value.problem


def test_load_instruments_refuses_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "instruments.yaml"
    path.write_text("instruments: [unclosed\n", encoding="utf-8")

    # Act / Assert
    with pytest.raises(ConfigurationError, match="YAML"):
        load_instruments(path)


@given(st.data())
def test_rounding_is_exact_whatever_the_callers_decimal_context(data: st.DataObject) -> None:
    # Arrange
    instrument = data.draw(instruments)
    price = data.draw(prices_in_range(instrument))
    rounding = data.draw(st.sampled_from(list(Rounding)))
    expected = instrument.round_price(price, rounding)

    # Act
    with localcontext(Context(prec=2)):
        rounded = instrument.round_price(price, rounding)

    # Assert
    assert str(rounded) == str(expected)
    assert abs(rounded - price) < instrument.tick_size


def general_grid_rounding(value: Decimal, origin: Decimal, step: Decimal, rounding: Rounding) -> Decimal:
    """The grid rounding written out step by step (what the one-quantize shortcut must reproduce digit for digit)."""
    with localcontext(Context(prec=60)):
        steps, remainder = divmod(value - origin, step)
        up = remainder > 0 if rounding is Rounding.UP else remainder >= 0 and 2 * remainder >= step
        down = remainder < 0 if rounding is Rounding.DOWN else remainder < 0 and -2 * remainder > step
        if rounding is not Rounding.DOWN and up:
            steps += 1
        elif rounding is not Rounding.UP and down:
            steps -= 1
        return origin + steps * step


@given(
    exponent=st.integers(-8, 2),
    origin_steps=st.integers(0, 1000),
    value=st.decimals(min_value="0.00000001", max_value="1000000", places=12),
    rounding=st.sampled_from(list(Rounding)),
    origin_exponent_shift=st.integers(0, 1),
)
def test_rounding_onto_a_power_of_ten_grid_gives_the_same_digits_as_the_general_rounding(
    exponent: int, origin_steps: int, value: Decimal, rounding: Rounding, origin_exponent_shift: int
) -> None:
    # Arrange: a grid of multiples of 10^exponent from a minimum written with that exponent (or one more digit)
    step = Decimal(1).scaleb(exponent)
    origin = (origin_steps * step).quantize(Decimal(1).scaleb(exponent - origin_exponent_shift)) or step
    instrument = INSTRUMENTS["BTCUSDT"]
    grid = msgspec.structs.replace(instrument, min_price=origin, tick_size=step, max_price=Decimal("1e9"))

    # Act
    rounded = grid.round_price(value, rounding) if value >= origin else None

    # Assert
    if rounded is not None:
        assert str(rounded) == str(general_grid_rounding(value, origin, step, rounding))


def test_a_minimum_written_with_more_digits_than_its_step_keeps_them_after_an_equal_grid_was_rounded() -> None:
    # Arrange: two grids equal in value, 0.10 and 0.100 from a step of 0.01
    instrument = INSTRUMENTS["BTCUSDT"]
    short = msgspec.structs.replace(instrument, min_price=Decimal("0.10"), tick_size=Decimal("0.01"))
    long = msgspec.structs.replace(instrument, min_price=Decimal("0.100"), tick_size=Decimal("0.01"))

    # Act
    first = short.round_price(Decimal("123.455"), Rounding.DOWN)
    second = long.round_price(Decimal("123.455"), Rounding.DOWN)

    # Assert
    assert str(first) == "123.45"
    assert str(second) == "123.450"
