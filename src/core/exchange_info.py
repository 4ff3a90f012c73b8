"""Binance's exchangeInfo and leverageBracket answers as keel's instrument and bracket files.

``GET /fapi/v1/exchangeInfo`` describes every symbol's filters;
``GET /fapi/v1/leverageBracket`` (signed) its notional brackets. keel keeps
both as YAML (``config/instruments.yaml``, ``config/leverage_brackets.yaml``)
so that a run never depends on the network. :func:`instruments_document` and
:func:`brackets_document` turn the JSON answers (saved files or fresh
downloads) into those files' mappings, keeping every decimal exactly as
Binance wrote it; ``keel data instruments`` writes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

_FILTERS = {
    "PRICE_FILTER": {"tickSize": "tick_size", "minPrice": "min_price", "maxPrice": "max_price"},
    "LOT_SIZE": {"stepSize": "step_size", "minQty": "min_quantity", "maxQty": "max_quantity"},
    "MARKET_LOT_SIZE": {
        "stepSize": "market_step_size",
        "minQty": "market_min_quantity",
        "maxQty": "market_max_quantity",
    },
    "MIN_NOTIONAL": {"notional": "min_notional"},
    "PERCENT_PRICE": {"multiplierUp": "multiplier_up", "multiplierDown": "multiplier_down"},
}


class ExchangeInfoError(ValueError):
    """An exchangeInfo or leverageBracket answer lacks what keel needs; the message names it."""


def read_json(path: str | Path) -> Any:
    """Read a saved Binance JSON answer, decimals kept exact.

    Raises
    ------
    ExchangeInfoError
        When the file cannot be read or is not JSON.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
    except (OSError, ValueError) as error:
        raise ExchangeInfoError(f"{Path(path).resolve()}: cannot be read as JSON ({error})") from error


def _text(value: Any) -> str:
    """Write a JSON scalar as the exact decimal text Binance sent."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ExchangeInfoError(f"expected a number, got {value!r}")
    return str(value)


def instrument_fields(entry: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Return one symbol's ``instruments.yaml`` mapping from its exchangeInfo entry.

    Raises
    ------
    ExchangeInfoError
        When a filter or field keel checks orders against is missing.
    """
    symbol = entry.get("symbol", "?")
    filters = {item.get("filterType"): item for item in entry.get("filters", ())}
    fields: dict[str, Any] = {}
    try:
        fields["base_asset"] = str(entry["baseAsset"])
        fields["quote_asset"] = str(entry["quoteAsset"])
        fields["price_precision"] = int(entry["pricePrecision"])
        fields["quantity_precision"] = int(entry["quantityPrecision"])
    except KeyError as error:
        raise ExchangeInfoError(f"{symbol}: field {error.args[0]} missing") from error
    for filter_type, names in _FILTERS.items():
        if filter_type not in filters:
            raise ExchangeInfoError(f"{symbol}: filter {filter_type} missing")
        for binance_name, keel_name in names.items():
            if binance_name not in filters[filter_type]:
                raise ExchangeInfoError(f"{symbol}: {filter_type}.{binance_name} missing")
            fields[keel_name] = _text(filters[filter_type][binance_name])
    fields["multiplier_decimal"] = int(filters["PERCENT_PRICE"].get("multiplierDecimal", 4))
    if "MAX_NUM_ORDERS" not in filters:
        raise ExchangeInfoError(f"{symbol}: filter MAX_NUM_ORDERS missing")
    fields["max_open_orders"] = int(filters["MAX_NUM_ORDERS"]["limit"])
    fields["source"] = source
    return fields


def instruments_document(
    exchange_info: Mapping[str, Any], symbols: Sequence[str] | None, source: str
) -> dict[str, dict[str, Any]]:
    """Return the ``instruments`` mapping of the perpetual USDⓈ-M symbols asked for.

    Parameters
    ----------
    exchange_info
        The exchangeInfo answer.
    symbols
        Symbols to keep; every trading perpetual when None.
    source
        Where the answer came from, written into each entry.

    Raises
    ------
    ExchangeInfoError
        When a symbol asked for is not in the answer, or lacks a filter.
    """
    entries = {entry["symbol"]: entry for entry in exchange_info.get("symbols", ()) if "symbol" in entry}
    if symbols is None:
        wanted = [
            name
            for name, entry in entries.items()
            if entry.get("contractType") == "PERPETUAL" and entry.get("status") == "TRADING"
        ]
    else:
        missing = [name for name in symbols if name not in entries]
        if missing:
            raise ExchangeInfoError(f"no exchangeInfo entry for {', '.join(missing)}")
        wanted = list(symbols)
    return {name: instrument_fields(entries[name], source) for name in wanted}


def liquidation_fees(exchange_info: Mapping[str, Any], symbols: Iterable[str]) -> dict[str, str]:
    """Return each symbol's ``liquidationFee`` where exchangeInfo gives one."""
    entries = {entry.get("symbol"): entry for entry in exchange_info.get("symbols", ())}
    return {
        name: _text(entries[name]["liquidationFee"]) for name in symbols if "liquidationFee" in entries.get(name, {})
    }


def brackets_document(leverage_brackets: Sequence[Mapping[str, Any]], source: str) -> dict[str, dict[str, Any]]:
    """Return the ``brackets`` mapping of ``leverage_brackets.yaml`` from a leverageBracket answer.

    Raises
    ------
    ExchangeInfoError
        When an entry has no brackets or a bracket lacks a field.
    """
    tables: dict[str, dict[str, Any]] = {}
    for entry in leverage_brackets:
        symbol = entry.get("symbol", "?")
        rows = entry.get("brackets")
        if not rows:
            raise ExchangeInfoError(f"{symbol}: no brackets")
        brackets = []
        for row in sorted(rows, key=lambda item: int(item.get("bracket", 0))):
            try:
                brackets.append(
                    {
                        "initial_leverage": int(row["initialLeverage"]),
                        "notional_floor": _text(row["notionalFloor"]),
                        "notional_cap": _text(row["notionalCap"]),
                        "maintenance_margin_rate": _text(row["maintMarginRatio"]),
                        "maintenance_amount": _text(row["cum"]),
                    }
                )
            except KeyError as error:
                raise ExchangeInfoError(f"{symbol}: bracket field {error.args[0]} missing") from error
        tables[str(symbol)] = {"source": source, "brackets": brackets}
    return tables


def merge_instruments(path: Path, update: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return the instruments of ``path`` (when it exists) with ``update`` laid over them."""
    existing: dict[str, dict[str, Any]] = {}
    if path.exists():
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        existing = dict(document.get("instruments") or {})
    existing.update(update)
    return existing


def merge_brackets(path: Path, tables: Mapping[str, Any], fees: Mapping[str, str]) -> dict[str, Any]:
    """Return the leverage-bracket document of ``path`` with ``tables`` and ``fees`` laid over it."""
    document = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    if not document:
        raise ExchangeInfoError(
            f"{path.resolve()}: no leverage-bracket file to update (copy config/leverage_brackets.yaml there first)"
        )
    document.setdefault("brackets", {}).update(tables)
    document.setdefault("liquidation_fees", {}).update(fees)
    return dict(document)


def dump_yaml(path: Path, header: str, document: Mapping[str, Any]) -> None:
    """Write a YAML file with a comment header, decimals as quoted strings, keys in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True, default_flow_style=False)
    path.write_text(header + text, encoding="utf-8")
