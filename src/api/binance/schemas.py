"""Binance USD-M JSON payloads <-> keel's reports and commands.

Decimals travel as Binance's strings both ways; nothing passes through float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from keel.api.binance.auth import Param
from keel.core.clock import NANOS_PER_MILLI
from keel.core.errors import MalformedDataError
from keel.core.instruments import Instrument
from keel.core.messages import FundingPaid, MarginType, OrderFilled, PositionSide, SubmitOrder, WorkingType
from keel.core.orders import LiquiditySide, OrderSide, OrderStatus, OrderType, TimeInForce
from keel.core.ports import (
    BalanceReport,
    LeverageBracket,
    OrderStatusReport,
    PositionReport,
    SymbolConfiguration,
)

_STATUS_FROM_BINANCE: dict[str, OrderStatus] = {
    "NEW": OrderStatus.ACCEPTED,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}
STATUS_TO_BINANCE: dict[OrderStatus, str] = {
    OrderStatus.SUBMITTED: "NEW",
    OrderStatus.ACCEPTED: "NEW",
    OrderStatus.PENDING_CANCEL: "NEW",
    OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED",
    OrderStatus.FILLED: "FILLED",
    OrderStatus.CANCELED: "CANCELED",
    OrderStatus.REJECTED: "REJECTED",
    OrderStatus.EXPIRED: "EXPIRED",
}


def _field(payload: dict[str, Any], key: str) -> Any:
    try:
        return payload[key]
    except KeyError:
        raise MalformedDataError(f"Binance payload lacks {key!r}: {sorted(payload)}") from None


def _decimal(payload: dict[str, Any], key: str) -> Decimal:
    return Decimal(str(_field(payload, key)))


def _optional_price(payload: dict[str, Any], key: str) -> Decimal | None:
    value = payload.get(key)
    if value is None:
        return None
    price = Decimal(str(value))
    return price if price != 0 else None


def order_params(command: SubmitOrder) -> list[Param]:
    """Return the ``POST /fapi/v1/order`` parameters of ``command``, in a fixed order."""
    params: list[Param] = [
        ("symbol", command.symbol),
        ("side", command.side.value),
        ("type", command.order_type.value),
        ("newClientOrderId", command.client_order_id),
        ("positionSide", command.position_side.value),
    ]
    if not command.close_position:
        params.append(("quantity", str(command.quantity)))
    if command.order_type is OrderType.LIMIT:
        params.append(("timeInForce", command.time_in_force.value))
    if command.price is not None:
        params.append(("price", str(command.price)))
    if command.stop_price is not None:
        params.append(("stopPrice", str(command.stop_price)))
        params.append(("workingType", command.working_type.value))
    if command.reduce_only:
        params.append(("reduceOnly", "true"))
    if command.close_position:
        params.append(("closePosition", "true"))
    return params


def submit_order_from(params: dict[str, str], ts_ns: int) -> SubmitOrder:
    """Rebuild the keel command from ``POST /fapi/v1/order`` parameters (the local Binance's side)."""
    price = params.get("price")
    stop = params.get("stopPrice")
    return SubmitOrder(
        client_order_id=params["newClientOrderId"],
        symbol=params["symbol"],
        side=OrderSide(params["side"]),
        order_type=OrderType(params["type"]),
        quantity=Decimal(params.get("quantity", "0")),
        price=Decimal(price) if price is not None else None,
        time_in_force=TimeInForce(params.get("timeInForce", "GTC")),
        reduce_only=params.get("reduceOnly") == "true",
        stop_price=Decimal(stop) if stop is not None else None,
        position_side=PositionSide(params.get("positionSide", "BOTH")),
        close_position=params.get("closePosition") == "true",
        working_type=WorkingType(params.get("workingType", "CONTRACT_PRICE")),
        ts_event=ts_ns,
        ts_init=ts_ns,
    )


def order_json(report: OrderStatusReport) -> dict[str, Any]:
    """Render ``report`` as Binance's order object (the local Binance's side)."""
    return {
        "clientOrderId": report.client_order_id,
        "orderId": int(report.venue_order_id) if report.venue_order_id.isdigit() else report.venue_order_id,
        "symbol": report.symbol,
        "side": report.side.value,
        "type": report.order_type.value,
        "origType": report.order_type.value,
        "timeInForce": report.time_in_force.value,
        "status": STATUS_TO_BINANCE[report.status],
        "origQty": str(report.quantity),
        "price": str(report.price or 0),
        "executedQty": str(report.filled_quantity),
        "avgPrice": str(report.average_price or 0),
        "reduceOnly": report.reduce_only,
        "stopPrice": str(report.stop_price or 0),
        "positionSide": report.position_side.value,
        "closePosition": report.close_position,
        "workingType": report.working_type.value,
        "updateTime": report.ts_last // NANOS_PER_MILLI,
    }


def order_report(payload: dict[str, Any]) -> OrderStatusReport:
    """Parse Binance's order object into an :class:`OrderStatusReport`.

    Raises
    ------
    MalformedDataError
        When a field is missing or its status unknown.
    """
    status = str(_field(payload, "status"))
    if status not in _STATUS_FROM_BINANCE:
        raise MalformedDataError(f"Binance order status {status!r} is unknown")
    return OrderStatusReport(
        client_order_id=str(_field(payload, "clientOrderId")),
        venue_order_id=str(_field(payload, "orderId")),
        symbol=str(_field(payload, "symbol")),
        side=OrderSide(_field(payload, "side")),
        order_type=OrderType(payload.get("origType", _field(payload, "type"))),
        time_in_force=TimeInForce(payload.get("timeInForce", "GTC")),
        status=_STATUS_FROM_BINANCE[status],
        quantity=_decimal(payload, "origQty"),
        price=_optional_price(payload, "price"),
        filled_quantity=_decimal(payload, "executedQty"),
        average_price=_optional_price(payload, "avgPrice"),
        reduce_only=bool(payload.get("reduceOnly", False)),
        ts_last=int(_field(payload, "updateTime")) * NANOS_PER_MILLI,
        stop_price=_optional_price(payload, "stopPrice"),
        position_side=PositionSide(payload.get("positionSide", "BOTH")),
        close_position=bool(payload.get("closePosition", False)),
        working_type=WorkingType(payload.get("workingType", "CONTRACT_PRICE")),
    )


def position_json(report: PositionReport) -> dict[str, Any]:
    """Render ``report`` as one ``GET /fapi/v2/positionRisk`` entry (the local Binance's side)."""
    return {
        "symbol": report.symbol,
        "positionAmt": str(report.quantity),
        "entryPrice": str(report.entry_price),
        "breakEvenPrice": str(report.break_even_price or 0),
        "markPrice": str(report.mark_price),
        "unRealizedProfit": str(report.unrealized_pnl),
        "liquidationPrice": str(report.liquidation_price or 0),
        "leverage": str(report.leverage),
        "marginType": "isolated" if report.margin_type is MarginType.ISOLATED else "cross",
        "isolatedMargin": str(report.isolated_margin),
        "positionSide": report.position_side.value,
        "notional": str(report.notional),
        "initialMargin": str(report.initial_margin),
        "maintMargin": str(report.maintenance_margin),
    }


def position_report(payload: dict[str, Any]) -> PositionReport:
    """Parse one ``GET /fapi/v2/positionRisk`` entry."""
    return PositionReport(
        symbol=str(_field(payload, "symbol")),
        quantity=_decimal(payload, "positionAmt"),
        entry_price=_decimal(payload, "entryPrice"),
        mark_price=_decimal(payload, "markPrice"),
        unrealized_pnl=_decimal(payload, "unRealizedProfit"),
        leverage=int(_field(payload, "leverage")),
        position_side=PositionSide(payload.get("positionSide", "BOTH")),
        margin_type=MarginType.ISOLATED if payload.get("marginType") == "isolated" else MarginType.CROSSED,
        break_even_price=_optional_price(payload, "breakEvenPrice"),
        liquidation_price=_optional_price(payload, "liquidationPrice"),
        notional=Decimal(str(payload.get("notional", "0"))),
        isolated_margin=Decimal(str(payload.get("isolatedMargin", "0"))),
        initial_margin=Decimal(str(payload.get("initialMargin", "0"))),
        maintenance_margin=Decimal(str(payload.get("maintMargin", "0"))),
    )


def balance_json(report: BalanceReport) -> dict[str, Any]:
    """Render ``report`` as the USDT entry of ``GET /fapi/v2/account``'s ``assets`` (the local Binance's side)."""
    return {
        "asset": report.asset,
        "walletBalance": str(report.wallet_balance),
        "unrealizedProfit": str(report.unrealized_pnl),
        "marginBalance": str(report.margin_balance),
        "initialMargin": str(report.initial_margin),
        "maintMargin": str(report.maintenance_margin),
        "crossWalletBalance": str(report.cross_wallet_balance),
        "availableBalance": str(report.available_balance),
    }


def balance_report(payload: dict[str, Any], asset: str = "USDT") -> BalanceReport:
    """Parse ``GET /fapi/v2/account`` and return its ``asset`` entry.

    Raises
    ------
    MalformedDataError
        When the answer has no ``asset`` entry.
    """
    for entry in _field(payload, "assets"):
        if entry.get("asset") == asset:
            return BalanceReport(
                asset=asset,
                wallet_balance=_decimal(entry, "walletBalance"),
                unrealized_pnl=_decimal(entry, "unrealizedProfit"),
                margin_balance=_decimal(entry, "marginBalance"),
                available_balance=_decimal(entry, "availableBalance"),
                cross_wallet_balance=_decimal(entry, "crossWalletBalance"),
                initial_margin=_decimal(entry, "initialMargin"),
                maintenance_margin=_decimal(entry, "maintMargin"),
            )
    raise MalformedDataError(f"Binance balance answer has no {asset} entry")


def symbol_json(instrument: Instrument, status: str = "TRADING") -> dict[str, Any]:
    """Render ``instrument`` as one ``exchangeInfo`` symbol, filters and ``status`` (the local Binance's side)."""
    return {
        "symbol": instrument.symbol,
        "contractType": "PERPETUAL",
        "status": status,
        "baseAsset": instrument.base_asset,
        "quoteAsset": instrument.quote_asset,
        "marginAsset": instrument.quote_asset,
        "pricePrecision": instrument.price_precision,
        "quantityPrecision": instrument.quantity_precision,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "tickSize": str(instrument.tick_size),
                "minPrice": str(instrument.min_price),
                "maxPrice": str(instrument.max_price),
            },
            {
                "filterType": "LOT_SIZE",
                "stepSize": str(instrument.step_size),
                "minQty": str(instrument.min_quantity),
                "maxQty": str(instrument.max_quantity),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "stepSize": str(instrument.market_step_size),
                "minQty": str(instrument.market_min_quantity),
                "maxQty": str(instrument.market_max_quantity),
            },
            {"filterType": "MIN_NOTIONAL", "notional": str(instrument.min_notional)},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": str(instrument.multiplier_up),
                "multiplierDown": str(instrument.multiplier_down),
                "multiplierDecimal": str(instrument.multiplier_decimal),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": instrument.max_open_orders},
        ],
    }


def instrument_from(symbol: dict[str, Any], source: str) -> Instrument:
    """Parse one ``exchangeInfo`` symbol's filters into an :class:`Instrument`.

    Raises
    ------
    MalformedDataError
        When a filter keel needs is missing (the message names the symbol and filter).
    """
    name = str(_field(symbol, "symbol"))
    filters = {f["filterType"]: f for f in _field(symbol, "filters")}

    def of(kind: str) -> dict[str, Any]:
        if kind not in filters:
            raise MalformedDataError(f"exchangeInfo symbol {name} lacks the {kind} filter")
        return dict(filters[kind])

    price, lot, market, percent = of("PRICE_FILTER"), of("LOT_SIZE"), of("MARKET_LOT_SIZE"), of("PERCENT_PRICE")
    return Instrument(
        symbol=name,
        base_asset=str(_field(symbol, "baseAsset")),
        quote_asset=str(_field(symbol, "quoteAsset")),
        price_precision=int(_field(symbol, "pricePrecision")),
        quantity_precision=int(_field(symbol, "quantityPrecision")),
        tick_size=_decimal(price, "tickSize"),
        min_price=_decimal(price, "minPrice"),
        max_price=_decimal(price, "maxPrice"),
        step_size=_decimal(lot, "stepSize"),
        min_quantity=_decimal(lot, "minQty"),
        max_quantity=_decimal(lot, "maxQty"),
        market_step_size=_decimal(market, "stepSize"),
        market_min_quantity=_decimal(market, "minQty"),
        market_max_quantity=_decimal(market, "maxQty"),
        min_notional=_decimal(of("MIN_NOTIONAL"), "notional"),
        multiplier_up=_decimal(percent, "multiplierUp"),
        multiplier_down=_decimal(percent, "multiplierDown"),
        multiplier_decimal=int(_field(percent, "multiplierDecimal")),
        max_open_orders=int(_field(of("MAX_NUM_ORDERS"), "limit")),
        source=source,
    )


def brackets_json(symbol: str, brackets: tuple[LeverageBracket, ...]) -> dict[str, Any]:
    """Render one symbol of ``GET /fapi/v1/leverageBracket`` (the local Binance's side)."""
    return {
        "symbol": symbol,
        "brackets": [
            {
                "bracket": b.bracket,
                "initialLeverage": b.initial_leverage,
                "notionalCap": str(b.notional_cap) if b.notional_cap is not None else None,
                "notionalFloor": str(b.notional_floor),
                "maintMarginRatio": str(b.maintenance_margin_rate),
                "cum": str(b.maintenance_amount),
            }
            for b in brackets
        ],
    }


def brackets_from(payload: dict[str, Any]) -> tuple[LeverageBracket, ...]:
    """Parse one symbol of ``GET /fapi/v1/leverageBracket``."""
    return tuple(
        LeverageBracket(
            bracket=int(_field(b, "bracket")),
            initial_leverage=int(_field(b, "initialLeverage")),
            notional_floor=_decimal(b, "notionalFloor"),
            notional_cap=Decimal(str(b["notionalCap"])) if b.get("notionalCap") is not None else None,
            maintenance_margin_rate=_decimal(b, "maintMarginRatio"),
            maintenance_amount=_decimal(b, "cum"),
        )
        for b in _field(payload, "brackets")
    )


def configuration_json(configuration: SymbolConfiguration) -> dict[str, Any]:
    """Render one ``GET /fapi/v1/symbolConfig`` entry (the local Binance's side)."""
    cap = configuration.max_notional
    return {
        "symbol": configuration.symbol,
        "marginType": configuration.margin_type.value,
        "isAutoAddMargin": "false",
        "leverage": configuration.leverage,
        "maxNotionalValue": str(cap) if cap is not None else "INF",
    }


def configuration_from(payload: dict[str, Any]) -> SymbolConfiguration:
    """Parse one ``GET /fapi/v1/symbolConfig`` entry or a ``POST /fapi/v1/leverage`` answer."""
    cap = str(payload.get("maxNotionalValue", "INF"))
    margin = str(payload.get("marginType", "CROSSED")).upper()
    return SymbolConfiguration(
        symbol=str(_field(payload, "symbol")),
        leverage=int(_field(payload, "leverage")),
        margin_type=MarginType.ISOLATED if margin == "ISOLATED" else MarginType.CROSSED,
        max_notional=None if cap == "INF" else Decimal(cap),
    )


def trade_json(fill: OrderFilled) -> dict[str, Any]:
    """Render ``fill`` as one ``GET /fapi/v1/userTrades`` entry (the local Binance's side)."""
    return {
        "symbol": fill.symbol,
        "id": int(fill.trade_id) if fill.trade_id.isdigit() else fill.trade_id,
        "orderId": int(fill.venue_order_id) if fill.venue_order_id.isdigit() else fill.venue_order_id,
        "side": fill.side.value,
        "price": str(fill.last_price),
        "qty": str(fill.last_quantity),
        "quoteQty": str(fill.last_price * fill.last_quantity),
        "commission": str(fill.commission),
        "commissionAsset": "USDT",
        "maker": fill.liquidity_side is LiquiditySide.MAKER,
        "buyer": fill.side is OrderSide.BUY,
        "time": fill.ts_event // NANOS_PER_MILLI,
    }


def fill_from(payload: dict[str, Any], client_order_id: str, now_ns: int) -> OrderFilled:
    """Parse one ``GET /fapi/v1/userTrades`` entry; Binance omits the client id, the caller supplies it."""
    return OrderFilled(
        client_order_id=client_order_id,
        venue_order_id=str(_field(payload, "orderId")),
        symbol=str(_field(payload, "symbol")),
        trade_id=str(_field(payload, "id")),
        side=OrderSide(_field(payload, "side")),
        last_quantity=_decimal(payload, "qty"),
        last_price=_decimal(payload, "price"),
        commission=_decimal(payload, "commission"),
        liquidity_side=LiquiditySide.MAKER if payload.get("maker") else LiquiditySide.TAKER,
        ts_event=int(_field(payload, "time")) * NANOS_PER_MILLI,
        ts_init=now_ns,
    )


def funding_from(income: dict[str, Any], rate: dict[str, Any], now_ns: int) -> FundingPaid:
    """Join a ``FUNDING_FEE`` income entry with its ``GET /fapi/v1/fundingRate`` settlement.

    Binance's income entry has only the amount; the settlement gives the rate
    and mark, and the position is what the amount implies:
    ``amount = -quantity * mark * rate``.
    """
    amount = _decimal(income, "income")
    funding_rate = _decimal(rate, "fundingRate")
    mark = _decimal(rate, "markPrice")
    quantity = -amount / (mark * funding_rate) if funding_rate != 0 and mark != 0 else Decimal(0)
    ts = int(_field(income, "time")) * NANOS_PER_MILLI
    return FundingPaid(
        symbol=str(_field(income, "symbol")),
        funding_time=int(_field(rate, "fundingTime")) * NANOS_PER_MILLI,
        rate=funding_rate,
        mark_price=mark,
        position_quantity=quantity,
        amount=amount,
        ts_event=ts,
        ts_init=now_ns,
    )
