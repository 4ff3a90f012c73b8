"""The configured instruments checked against Binance's exchangeInfo before a run on Binance's market trades.

keel rounds every order onto the filters of ``exchange.instruments``. When
Binance has changed a filter since that file was written (a tick size, a
minimum notional), keel's orders land on the wrong grid and Binance refuses
them (-1111, -4164, ...). A paper or live run on Binance's market therefore
compares each traded symbol's filters with the ones Binance publishes now,
exactly as Decimals, and does not start while one differs, or while a
symbol is missing or not trading. While exchangeInfo does not answer, a
live start waits for it; a paper run goes on and reports its instruments
unchecked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from keel.api.binance.constants import EXCHANGE_INFO_PATH
from keel.api.binance.schemas import instrument_from
from keel.core.errors import OperatorActionRequiredError
from keel.core.instruments import Instrument

COMPARED_FILTERS: tuple[tuple[str, str], ...] = (
    ("base_asset", "baseAsset"),
    ("quote_asset", "quoteAsset"),
    ("price_precision", "pricePrecision"),
    ("quantity_precision", "quantityPrecision"),
    ("tick_size", "PRICE_FILTER.tickSize"),
    ("min_price", "PRICE_FILTER.minPrice"),
    ("max_price", "PRICE_FILTER.maxPrice"),
    ("step_size", "LOT_SIZE.stepSize"),
    ("min_quantity", "LOT_SIZE.minQty"),
    ("max_quantity", "LOT_SIZE.maxQty"),
    ("market_step_size", "MARKET_LOT_SIZE.stepSize"),
    ("market_min_quantity", "MARKET_LOT_SIZE.minQty"),
    ("market_max_quantity", "MARKET_LOT_SIZE.maxQty"),
    ("min_notional", "MIN_NOTIONAL.notional"),
    ("multiplier_up", "PERCENT_PRICE.multiplierUp"),
    ("multiplier_down", "PERCENT_PRICE.multiplierDown"),
    ("multiplier_decimal", "PERCENT_PRICE.multiplierDecimal"),
    ("max_open_orders", "MAX_NUM_ORDERS.limit"),
)
"""The instrument fields exchangeInfo publishes (keel's name, Binance's); fees and ``source`` are keel's own."""


class InstrumentsDifferError(OperatorActionRequiredError):
    """The configured instruments are not Binance's: refresh the file (the message says how) or drop the symbol."""


def instrument_differences(
    configured: Mapping[str, Instrument], symbols: Iterable[Mapping[str, Any]], source: str
) -> tuple[list[str], list[str]]:
    """Return what keeps the configured symbols from trading on Binance's filters.

    Parameters
    ----------
    configured
        The instruments keel trades, by symbol.
    symbols
        The ``symbols`` entries of Binance's exchangeInfo answer.
    source
        Where the answer came from.

    Returns
    -------
    tuple[list[str], list[str]]
        One line per symbol Binance does not trade (not listed as a
        perpetual contract, or its status not ``TRADING``), and one per
        filter Binance publishes with another value.
    """
    listed = {str(entry.get("symbol")): entry for entry in symbols if entry.get("contractType") == "PERPETUAL"}
    untraded: list[str] = []
    differing: list[str] = []
    for name, mine in sorted(configured.items()):
        entry = listed.get(name)
        if entry is None:
            untraded.append(f"{name}: not listed as a perpetual contract")
        elif entry.get("status") != "TRADING":
            untraded.append(f"{name}: status {entry.get('status')}, not TRADING")
        else:
            differing += _filter_differences(mine, instrument_from(dict(entry), source))
    return untraded, differing


def _filter_differences(mine: Instrument, binance: Instrument) -> list[str]:
    """Name each published filter whose value differs (Decimal equality: 0.10 is 0.1)."""
    return [
        f"{mine.symbol} {field} ({published}): configured {getattr(mine, field)}, Binance {getattr(binance, field)}"
        for field, published in COMPARED_FILTERS
        if getattr(mine, field) != getattr(binance, field)
    ]


def check_instruments(
    configured: Mapping[str, Instrument], exchange_info: Mapping[str, Any], rest_url: str, instruments_file: str
) -> None:
    """Refuse to start unless Binance trades every configured symbol with the configured filters.

    Parameters
    ----------
    configured
        The instruments keel trades, by symbol.
    exchange_info
        Binance's ``GET /fapi/v1/exchangeInfo`` answer.
    rest_url
        The Binance it came from (the refresh command downloads from it).
    instruments_file
        The configured ``exchange.instruments`` file.

    Raises
    ------
    InstrumentsDifferError
        Naming every difference and what to do: the command that rewrites
        the file from this Binance, or removing a symbol it does not trade.
    """
    source = f"{rest_url}{EXCHANGE_INFO_PATH}"
    untraded, differing = instrument_differences(configured, exchange_info.get("symbols", ()), source)
    advice: list[str] = []
    if differing:
        stale = sorted({line.split(" ", 1)[0] for line in differing})
        command = (
            f"KEEL_BINANCE__REST_URL={rest_url} KEEL_EXCHANGE__INSTRUMENTS={instruments_file} "
            f"keel data instruments --download --symbols {','.join(stale)}"
        )
        advice.append(f"orders would be rounded to the wrong grid and refused: rewrite the file with `{command}`")
    if untraded:
        advice.append(
            "remove the symbols Binance does not trade from data.symbols (--symbols), or trade them where they are "
            "listed (a testnet lists fewer symbols; a delisted or settling one is not trading)"
        )
    if advice:
        raise InstrumentsDifferError(
            f"the instruments in {instruments_file} are not Binance's at {source}: "
            f"{'; '.join(untraded + differing)}. To start, {'; and '.join(advice)}"
        )
