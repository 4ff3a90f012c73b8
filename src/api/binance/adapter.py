"""The Binance USD-M venue behind keel's :class:`~keel.core.ports.ExchangePort`.

The client order id is the idempotency key. A submit whose answer is lost
(5xx, timeout, dropped connection) is resolved by querying that same id,
never by sending the order again under a new one: if Binance has it, keel
carries on with Binance's record; if Binance never saw it, the order was
not placed and the caller decides (the router resends under the same id).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from keel.api.binance.constants import (
    ACCOUNT_PATH,
    ALL_OPEN_ORDERS_PATH,
    EXCHANGE_INFO_PATH,
    FUNDING_RATE_PATH,
    INCOME_HISTORY_MS,
    INCOME_PATH,
    LEVERAGE_BRACKET_PATH,
    LEVERAGE_PATH,
    MARGIN_TYPE_PATH,
    MAX_FUNDING_RATES_PER_REQUEST,
    MAX_INCOME_PER_REQUEST,
    MAX_TRADES_PER_REQUEST,
    OPEN_ORDERS_PATH,
    ORDER_PATH,
    POSITION_MODE_PATH,
    POSITION_RISK_PATH,
    SYMBOL_CONFIG_PATH,
    TRADE_HISTORY_MS,
    TRADE_WINDOW_MS,
    USER_TRADES_PATH,
)
from keel.api.binance.instrument_check import check_instruments
from keel.api.binance.rest import BinanceRequestError, BinanceRestClient
from keel.api.binance.schemas import (
    balance_report,
    brackets_from,
    configuration_from,
    fill_from,
    funding_from,
    instrument_from,
    order_params,
    order_report,
    position_report,
)
from keel.api.binance.user_stream import UserEventMapper
from keel.core.clock import NANOS_PER_MILLI
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import AmbiguousOutcomeError, RequestRejectedError, RetryLaterError
from keel.core.instruments import FilterViolation, Instrument
from keel.core.messages import Event, FundingPaid, OrderAccepted, OrderFilled, OrderRejected, SubmitOrder
from keel.core.orders import OrderType
from keel.core.ports import (
    BalanceReport,
    LeverageBracket,
    MarginType,
    OrderStatusReport,
    PositionMode,
    PositionReport,
    ReportHandler,
    SymbolConfiguration,
)

Sleep = Callable[[float], Awaitable[None]]


class SubmitOutcomeUnknownError(AmbiguousOutcomeError):
    """Binance could not tell whether an order was placed, even after querying its id."""


class BinanceAdapter:
    """Trades one Binance USD-M account through the signed REST API.

    Parameters
    ----------
    client
        The paced, signing REST client.
    now_ns
        The clock stamping reports (``Clock.timestamp_ns``).
    sleep
        Waits between resolution queries (simulated in tests).
    resolve_attempts
        How many times an ambiguous submit is queried before giving up with
        :class:`SubmitOutcomeUnknownError`.
    events
        The user-data stream's mapper, shared so an acceptance seen on REST
        and on the stream is reported once.
    symbols
        The symbols keel trades: the account history of every symbol
        (``account_trades(None)``) is read for these only (None: every
        perpetual contract, one request each).
    """

    name = "binance"
    is_synchronous = False

    def __init__(
        self,
        client: BinanceRestClient,
        now_ns: Callable[[], int],
        sleep: Sleep,
        resolve_attempts: int = 5,
        events: UserEventMapper | None = None,
        symbols: tuple[str, ...] | None = None,
    ) -> None:
        self._client = client
        self._now_ns = now_ns
        self._sleep = sleep
        self._resolve_attempts = resolve_attempts
        self._handler: ReportHandler | None = None
        self._instruments: dict[str, Instrument] = {}
        self.ambiguous_submits = 0
        self._client_ids: dict[tuple[str, str], str] = {}
        self._marks: dict[str, Decimal] = {}
        self.events = events if events is not None else UserEventMapper()
        self.refused_locally = 0
        self._symbols_traded = symbols

    def set_report_handler(self, handler: ReportHandler) -> None:
        """Send every report (accepted, rejected, ...) to ``handler``."""
        self._handler = handler

    def report(self, event: Event) -> None:
        """Hand ``event`` (from REST or the user-data stream) to the report handler."""
        if self._handler is not None:
            self._handler(event)

    _report = report

    def venue_metrics(self) -> dict[str, object]:
        """Return the offset to Binance's clock (s) and the share of each rate limit in use, 0 to 1."""
        clock, limiter = self._client.clock, self._client.limiter
        return {
            "exchange_server_time_offset_seconds": None if clock.uncertainty_ms is None else clock.offset_ms / 1000,
            "exchange_rate_limit_usage": limiter.usage(),
        }

    def _accepted(self, report: OrderStatusReport) -> None:
        self._client_ids[report.symbol, report.venue_order_id] = report.client_order_id
        if not self.events.first_state(report.client_order_id, "NEW"):
            return
        now = self._now_ns()
        self._report(
            OrderAccepted(
                client_order_id=report.client_order_id,
                venue_order_id=report.venue_order_id,
                symbol=report.symbol,
                ts_event=report.ts_last,
                ts_init=now,
            )
        )

    def set_mark_price(self, symbol: str, mark: Decimal) -> None:
        """Record ``symbol``'s latest mark price (the PERCENT_PRICE centre and a MARKET order's notional)."""
        self._marks[symbol] = mark

    def _filter_violation(self, command: SubmitOrder) -> FilterViolation | None:
        """Check ``command`` against the loaded filters; orders without a reference price pass to Binance."""
        instrument = self._instruments.get(command.symbol)
        if instrument is None or command.close_position:
            return None
        reference = self._marks.get(command.symbol) or command.stop_price or command.price
        if reference is None:
            return None
        return instrument.check_order(
            side=command.side.value,
            price=command.price,
            quantity=command.quantity,
            reference_price=reference,
            market=command.order_type is not OrderType.LIMIT,
            reduce_only=command.reduce_only,
        )

    async def submit_order(self, command: SubmitOrder) -> None:
        """Place ``command``; report it accepted or rejected.

        Raises
        ------
        RetryLaterError
            Nothing was sent (paced, banned, 429) or Binance asked for a retry;
            resending the same command (same client id) is safe.
        SubmitOutcomeUnknownError
            The submit was ambiguous and querying its id never settled it.
        """
        violation = self._filter_violation(command)
        if violation is not None:
            self.refused_locally += 1
            self._rejected(command, violation.code, violation.message)
            return
        try:
            payload = await self._client.request("POST", ORDER_PATH, order_params(command), signed=True)
        except RequestRejectedError as error:
            self._rejected(command, int(error.code or BinanceErrorCode.UNKNOWN), str(error))
            return
        except AmbiguousOutcomeError as error:
            if isinstance(error.__cause__, BinanceRequestError) and (
                error.__cause__.code is BinanceErrorCode.DUPLICATED_CLIENT_ORDER_ID
            ):
                await self._resolve_duplicate(command, str(error))
                return
            self.ambiguous_submits += 1
            report = await self._resolve(command)
            if report is None:
                raise RetryLaterError(
                    f"order {command.client_order_id} never reached Binance; resend it under the same id"
                ) from None
            self._accepted(report)
            return
        self._accepted(order_report(payload))

    def _rejected(self, command: SubmitOrder, code: int, reason: str) -> None:
        now = self._now_ns()
        self._report(
            OrderRejected(
                client_order_id=command.client_order_id,
                symbol=command.symbol,
                code=code,
                reason=reason,
                ts_event=now,
                ts_init=now,
            )
        )

    async def _resolve_duplicate(self, command: SubmitOrder, reason: str) -> None:
        """-4116: the id is taken. If by this very order (an earlier send landed), carry on; else reject."""
        report = await self._resolve(command)
        same = report is not None and (report.side, report.quantity, report.price, report.order_type) == (
            command.side,
            command.quantity,
            command.price,
            command.order_type,
        )
        if same and report is not None:
            self._accepted(report)
        else:
            self._rejected(command, BinanceErrorCode.DUPLICATED_CLIENT_ORDER_ID, reason)

    async def _resolve(self, command: SubmitOrder) -> OrderStatusReport | None:
        """Query the ambiguous order's own id until Binance says it has it or not."""
        for _ in range(self._resolve_attempts):
            try:
                return await self.query_order(command.symbol, command.client_order_id)
            except (RetryLaterError, AmbiguousOutcomeError):
                await self._sleep(1.0)
        raise SubmitOutcomeUnknownError(
            f"order {command.client_order_id}: outcome unknown after {self._resolve_attempts} queries"
        )

    async def cancel_order(self, symbol: str, client_order_id: str) -> None:
        """Cancel one order by its client id.

        Raises
        ------
        RequestRejectedError
            With -2011 when Binance has no working order of that id.
        """
        params = [("symbol", symbol), ("origClientOrderId", client_order_id)]
        await self._client.request("DELETE", ORDER_PATH, params, signed=True)

    async def cancel_all_orders(self, symbol: str | None = None) -> None:
        """Cancel every working order of ``symbol``, or of every symbol holding one."""
        symbols = [symbol] if symbol is not None else sorted({o.symbol for o in await self.open_orders()})
        for name in symbols:
            await self._client.request("DELETE", ALL_OPEN_ORDERS_PATH, [("symbol", name)], signed=True)

    async def query_order(self, symbol: str, client_order_id: str) -> OrderStatusReport | None:
        """Return Binance's record of an order, None when Binance does not know it (-2013)."""
        params = [("symbol", symbol), ("origClientOrderId", client_order_id)]
        try:
            payload = await self._client.request("GET", ORDER_PATH, params, signed=True)
        except RequestRejectedError as error:
            if error.code == BinanceErrorCode.NO_SUCH_ORDER:
                return None
            raise
        return order_report(payload)

    async def open_orders(self, symbol: str | None = None) -> list[OrderStatusReport]:
        """Return the working orders (of ``symbol``, or all), oldest first."""
        params = [("symbol", symbol)] if symbol is not None else []
        payload: list[dict[str, Any]] = await self._client.request("GET", OPEN_ORDERS_PATH, params, signed=True)
        return sorted((order_report(p) for p in payload), key=lambda r: r.ts_last)

    async def positions(self) -> list[PositionReport]:
        """Return the non-zero positions."""
        payload: list[dict[str, Any]] = await self._client.request("GET", POSITION_RISK_PATH, signed=True)
        return [position_report(p) for p in payload if Decimal(str(p["positionAmt"])) != 0]

    async def balances(self) -> BalanceReport:
        """Return the USDT account."""
        return balance_report(await self._client.request("GET", ACCOUNT_PATH, signed=True))

    async def exchange_info(self) -> dict[str, Instrument]:
        """Return the perpetual contracts with their filters, as Binance publishes them now."""
        return self._load_filters(await self._client.request("GET", EXCHANGE_INFO_PATH))

    async def check_instruments(self, configured: Mapping[str, Instrument], instruments_file: str) -> None:
        """Load Binance's filters (checked against orders from now on), refusing them unless they are ``configured``.

        Raises
        ------
        InstrumentsDifferError
            When Binance does not trade a configured symbol, or publishes a
            filter of it otherwise; the message says how to refresh the file.
        """
        payload = await self._client.request("GET", EXCHANGE_INFO_PATH)
        self._load_filters(payload)
        check_instruments(configured, payload, self._client.base_url, instruments_file)

    def _load_filters(self, payload: dict[str, Any]) -> dict[str, Instrument]:
        """Keep the trading perpetual contracts of an exchangeInfo answer; return them."""
        source = f"{self._client.base_url}{EXCHANGE_INFO_PATH}"
        self._instruments = {
            s["symbol"]: instrument_from(s, source)
            for s in payload["symbols"]
            if s.get("contractType") == "PERPETUAL" and s.get("status") == "TRADING"
        }
        return dict(self._instruments)

    async def leverage_brackets(self, symbol: str | None = None) -> dict[str, tuple[LeverageBracket, ...]]:
        """Return the notional and leverage brackets of ``symbol`` (or of every symbol)."""
        params = [("symbol", symbol)] if symbol is not None else []
        payload = await self._client.request("GET", LEVERAGE_BRACKET_PATH, params, signed=True)
        entries: list[dict[str, Any]] = payload if isinstance(payload, list) else [payload]
        return {str(e["symbol"]): brackets_from(e) for e in entries}

    async def set_leverage(self, symbol: str, leverage: int) -> SymbolConfiguration:
        """Set ``symbol``'s initial leverage and return its configuration."""
        params = [("symbol", symbol), ("leverage", str(leverage))]
        await self._client.request("POST", LEVERAGE_PATH, params, signed=True)
        return await self.symbol_configuration(symbol)

    async def set_margin_type(self, symbol: str, margin_type: MarginType) -> None:
        """Set ``symbol``'s margin type.

        Raises
        ------
        RequestRejectedError
            With -4046 when it already is ``margin_type``, as Binance answers.
        """
        params = [("symbol", symbol), ("marginType", margin_type.value)]
        await self._client.request("POST", MARGIN_TYPE_PATH, params, signed=True)

    async def set_position_mode(self, mode: PositionMode) -> None:
        """Switch between one-way and hedge mode.

        Raises
        ------
        RequestRejectedError
            With -4059 when the account already is in ``mode``, as Binance answers.
        """
        params = [("dualSidePosition", "true" if mode is PositionMode.HEDGE else "false")]
        await self._client.request("POST", POSITION_MODE_PATH, params, signed=True)

    async def position_mode(self) -> PositionMode:
        """Return the account's position mode."""
        payload = await self._client.request("GET", POSITION_MODE_PATH, signed=True)
        return PositionMode.HEDGE if payload["dualSidePosition"] else PositionMode.ONE_WAY

    async def symbol_configuration(self, symbol: str) -> SymbolConfiguration:
        """Return ``symbol``'s leverage, margin type and largest allowed position."""
        payload = await self._client.request("GET", SYMBOL_CONFIG_PATH, [("symbol", symbol)], signed=True)
        return configuration_from(payload[0])

    async def _client_order_id(self, symbol: str, venue_order_id: str) -> str:
        """Return the client id of a venue order id (Binance's trade list carries only the latter)."""
        key = (symbol, venue_order_id)
        if key not in self._client_ids:
            params = [("symbol", symbol), ("orderId", venue_order_id)]
            payload = await self._client.request("GET", ORDER_PATH, params, signed=True)
            self._client_ids[key] = str(payload["clientOrderId"])
        return self._client_ids[key]

    async def _symbols(self) -> list[str]:
        if self._symbols_traded is not None:
            return sorted(self._symbols_traded)
        if not self._instruments:
            await self.exchange_info()
        return sorted(self._instruments)

    async def account_trades(self, symbol: str | None = None, start_ns: int = 0) -> list[OrderFilled]:
        """Return the account's fills (of ``symbol``, or of every symbol) from ``start_ns`` on, in time order."""
        fills: list[OrderFilled] = []
        for name in [symbol] if symbol is not None else await self._symbols():
            for trade in await self._trades_of(name, start_ns):
                client_id = await self._client_order_id(name, str(trade["orderId"]))
                fills.append(fill_from(trade, client_id, self._now_ns()))
        return sorted(fills, key=lambda f: (f.ts_event, f.symbol, f.trade_id))

    async def _trades_of(self, symbol: str, start_ns: int) -> list[dict[str, Any]]:
        """Return ``symbol``'s trades from ``start_ns`` to now, read 7 days a window (Binance's longest span).

        Binance keeps 6 months of trades: an earlier start is read from 6 months ago.
        """
        trades: list[dict[str, Any]] = []
        seen: set[object] = set()
        now_ms = self._now_ns() // NANOS_PER_MILLI
        window_start = max(_first_ms(start_ns), now_ms - TRADE_HISTORY_MS)
        while True:
            window_end = min(window_start + TRADE_WINDOW_MS - 1, max(now_ms, window_start))
            trades += await self._window_trades(symbol, window_start, window_end, seen)
            if window_end >= now_ms:
                return trades
            window_start = window_end + 1

    async def _window_trades(self, symbol: str, start_ms: int, end_ms: int, seen: set[object]) -> list[dict[str, Any]]:
        """Return the trades of one window not in ``seen``, 1,000 a page; a full page goes on from its last time."""
        trades: list[dict[str, Any]] = []
        while True:
            params = [("symbol", symbol), ("startTime", str(start_ms)), ("endTime", str(end_ms))]
            params.append(("limit", str(MAX_TRADES_PER_REQUEST)))
            page: list[dict[str, Any]] = await self._client.request("GET", USER_TRADES_PATH, params, signed=True)
            new = [trade for trade in page if trade["id"] not in seen]
            trades += new
            seen.update(trade["id"] for trade in new)
            if len(page) < MAX_TRADES_PER_REQUEST or not new:
                return trades
            start_ms = int(page[-1]["time"])

    async def funding_payments(self, start_ns: int = 0) -> list[FundingPaid]:
        """Return the funding payments from ``start_ns`` to now, each joined with its settlement's rate and mark.

        Both ends of the window are sent, the end being Binance's time now
        (the session's clock may trail it): without them Binance lists the
        last 7 days only. It keeps 3 months of income: an earlier start is
        read from 3 months ago.
        """
        clock = self._client.clock
        now_ms = clock.local_ms() + clock.offset_ms
        start = max(_first_ms(start_ns), now_ms - INCOME_HISTORY_MS)
        if start > now_ms:
            return []
        incomes = await self._history(_INCOME, [("incomeType", "FUNDING_FEE")], start, now_ms)
        rates: dict[tuple[str, int], dict[str, Any]] = {}
        for name in sorted({str(i["symbol"]) for i in incomes}):
            settled = await self._history(_FUNDING_RATES, [("symbol", name)], start, now_ms)
            rates.update({(name, int(r["fundingTime"])): r for r in settled})
        payments = []
        for income in incomes:
            rate = rates.get((str(income["symbol"]), int(income["time"])))
            if rate is None:
                raise RetryLaterError(f"no funding settlement published yet for {income['symbol']} at {income['time']}")
            payments.append(funding_from(income, rate, self._now_ns()))
        return payments

    async def _history(
        self, page: _Page, params: list[tuple[str, str]], start_ms: int, end_ms: int
    ) -> list[dict[str, Any]]:
        """Return an oldest-first history's rows from ``start_ms`` to ``end_ms``, ``page.limit`` rows a page.

        A page goes on from the last row's time; rows of that ms already read are told apart by ``page.key``.
        """
        rows: list[dict[str, Any]] = []
        seen: set[object] = set()
        while True:
            query = [*params, ("startTime", str(start_ms)), ("endTime", str(end_ms)), ("limit", str(page.limit))]
            answer: list[dict[str, Any]] = await self._client.request("GET", page.path, query, signed=page.signed)
            new = [row for row in answer if row[page.key] not in seen]
            rows += new
            seen.update(row[page.key] for row in new)
            if len(answer) < page.limit or not new:
                return rows
            start_ms = int(answer[-1][page.time_key])


@dataclass(frozen=True, slots=True)
class _Page:
    """How one of Binance's time-ordered histories pages: its path, page size, row time and row identity."""

    path: str
    limit: int
    time_key: str
    key: str
    signed: bool


_INCOME = _Page(INCOME_PATH, MAX_INCOME_PER_REQUEST, "time", "tranId", signed=True)
_FUNDING_RATES = _Page(FUNDING_RATE_PATH, MAX_FUNDING_RATES_PER_REQUEST, "fundingTime", "fundingTime", signed=False)


def _first_ms(start_ns: int) -> int:
    """Return the first whole ms at or after ``start_ns`` (Binance's history is stamped in ms)."""
    return -(-start_ns // NANOS_PER_MILLI)
