"""The simulated venue's account: wallets, positions, margin, funding and liquidation.

Binance USD-M rules, in exact decimals:

- one-way mode holds one BOTH position per symbol; hedge mode a LONG and a
  SHORT one;
- a CROSSED position draws on the cross wallet; an ISOLATED one has its own
  wallet: opening moves ``notional / leverage`` into it from the cross wallet,
  its fees, funding and realized P&L are booked in it, and reducing releases
  its share back to the cross wallet;
- initial margin is ``notional at mark / leverage``; maintenance margin comes
  from the symbol's leverage brackets (:mod:`keel.api.brackets`);
- a position is liquidated when its margin balance (isolated wallet plus its
  unrealized P&L) reaches its maintenance margin; cross positions are
  liquidated together when the cross margin balance reaches their summed
  maintenance margin. The liquidation closes at the mark price, charges the
  symbol's liquidation clearance fee (capped at the margin left), and a loss
  beyond the margin is absorbed by the insurance fund: no wallet goes below zero.

Auto-deleveraging (ADL) is not modelled: a liquidation always finds a counterparty.

:class:`AccountHistory` keeps the account's fills and funding payments
(Binance's trade list and funding income).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

import msgspec
from mypy_extensions import mypyc_attr

from keel.api.brackets import LeverageSchedule, maintenance_margin, max_notional
from keel.api.margin import Leg, break_even_price, liquidation_price
from keel.api.venue_state import AccountState, PositionState
from keel.core.accounting import ZERO, Position
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import MalformedDataError, RequestRejectedError
from keel.core.messages import FundingPaid, OrderFilled, next_message_id
from keel.core.ports import LeverageBracket, MarginType, PositionMode, PositionSide

PositionKey = tuple[str, PositionSide]

_FLOAT_SAFETY = 1e-9
"""How far (relative to the amounts involved) a float margin estimate must clear its threshold to be trusted."""
_FLOATS_KEPT = 256
"""Float conversions remembered by :meth:`Account._as_float` before it starts over."""


@mypyc_attr(allow_interpreted_subclasses=True)
class VenuePosition:
    """One position at the venue with the margin and cost basis Binance keeps for it."""

    def __init__(self, key: PositionKey) -> None:
        self.key = key
        self.position = Position(key[0])
        self.isolated_wallet = ZERO
        self.cost = ZERO

    @property
    def quantity(self) -> Decimal:
        """Return the signed quantity."""
        return self.position.quantity

    def unrealized_pnl(self, mark: Decimal) -> Decimal:
        """Return the P&L of the open quantity at ``mark``."""
        return self.position.unrealized_pnl(mark)


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class Liquidation:
    """A position the account must liquidate now, and what closing it at the mark does."""

    key: PositionKey
    margin_type: MarginType
    quantity: Decimal
    mark_price: Decimal


@mypyc_attr(allow_interpreted_subclasses=True)
class Account:
    """A USD-M account in USDT: cross wallet, isolated wallets, positions and settings.

    Parameters
    ----------
    symbols
        The tradable symbols.
    schedule
        Leverage brackets and liquidation fees.
    initial_balance
        Starting cross wallet (USDT).
    leverage
        Starting leverage of every symbol.
    margin_type, position_mode
        Starting margin type of every symbol and the account's position mode.
    """

    def __init__(
        self,
        symbols: list[str],
        schedule: LeverageSchedule,
        initial_balance: Decimal,
        leverage: int,
        margin_type: MarginType = MarginType.CROSSED,
        position_mode: PositionMode = PositionMode.ONE_WAY,
    ) -> None:
        self.schedule = schedule
        for symbol in symbols:
            max_notional(schedule.brackets(symbol), leverage)
        self.cross_wallet = initial_balance
        self.position_mode = position_mode
        self.leverage = dict.fromkeys(symbols, leverage)
        self.margin_types = dict.fromkeys(symbols, margin_type)
        self.marks: dict[str, Decimal] = {}
        self.positions: dict[PositionKey, VenuePosition] = {}
        self._positions_of: dict[str, list[VenuePosition]] = {}
        self._floats: dict[int, tuple[Decimal, float]] = {}
        self._mark_floats: dict[str, tuple[Decimal, float]] = {}
        self._solvency_bound: _SolvencyBound | None = None
        self._float_bracket_cache: dict[
            str, tuple[tuple[LeverageBracket, ...], tuple[float | None, tuple[tuple[float, float], ...]]]
        ] = {}
        self.fees_paid = ZERO
        self.funding_received = ZERO
        self.liquidation_fees = ZERO
        self.insurance_fund_covered = ZERO

    # --- positions ------------------------------------------------------------------------------

    def open_positions(self, symbol: str | None = None) -> Iterator[VenuePosition]:
        """Yield the non-zero positions (of ``symbol``) in the order they were first opened."""
        for venue_position in self.positions.values():
            if venue_position.quantity != 0 and (symbol is None or venue_position.key[0] == symbol):
                yield venue_position

    def holds(self, symbol: str) -> bool:
        """Return whether any position of ``symbol`` is open."""
        # Asked on every bar: by symbol, because a (symbol, side) key's hash calls the enum's Python __hash__.
        for venue_position in self._positions_of.get(symbol, ()):  # noqa: SIM110  (a loop: no generator per bar)
            if venue_position.position.quantity:
                return True
        return False

    def quantity(self, key: PositionKey) -> Decimal:
        """Return the signed quantity of a position (zero when there is none)."""
        venue_position = self.positions.get(key)
        return ZERO if venue_position is None else venue_position.quantity

    def _add_position(self, venue_position: VenuePosition) -> VenuePosition:
        self.positions[venue_position.key] = venue_position
        self._positions_of.setdefault(venue_position.key[0], []).append(venue_position)
        return venue_position

    def apply_fill(self, key: PositionKey, signed_quantity: Decimal, price: Decimal, commission: Decimal) -> Decimal:
        """Book a fill on a position: margin moves, cost basis, commission; return the realized P&L."""
        venue_position = self.positions.get(key)
        if venue_position is None:
            venue_position = self._add_position(VenuePosition(key))
        held = venue_position.quantity
        closing = ZERO
        if held != 0 and (held > 0) != (signed_quantity > 0):
            closing = min(abs(signed_quantity), abs(held)) * (1 if signed_quantity > 0 else -1)
        opening = signed_quantity - closing
        closing_fee = commission * abs(closing) / abs(signed_quantity)
        realized = ZERO
        if closing != 0:
            realized = self._close(venue_position, closing, price, closing_fee)
        if opening != 0:
            self._open(venue_position, opening, price, commission - closing_fee)
        self.fees_paid += commission
        return realized

    def _open(self, venue_position: VenuePosition, signed_quantity: Decimal, price: Decimal, fee: Decimal) -> None:
        symbol = venue_position.key[0]
        venue_position.position.apply_fill(signed_quantity, price)
        venue_position.cost += signed_quantity * price + fee
        if self.margin_types[symbol] is MarginType.ISOLATED:
            margin = abs(signed_quantity) * price / self.leverage[symbol]
            self.cross_wallet -= margin
            venue_position.isolated_wallet += margin - fee
        else:
            self.cross_wallet -= fee

    def _close(self, venue_position: VenuePosition, signed_quantity: Decimal, price: Decimal, fee: Decimal) -> Decimal:
        symbol = venue_position.key[0]
        held = venue_position.quantity
        realized = venue_position.position.apply_fill(signed_quantity, price)
        remaining = venue_position.quantity
        if remaining == 0:
            venue_position.cost = ZERO
        else:
            venue_position.cost += signed_quantity * price + fee
        if self.margin_types[symbol] is MarginType.ISOLATED:
            venue_position.isolated_wallet += realized - fee
            wallet = venue_position.isolated_wallet
            # A full close releases the whole wallet: the pro rata share could leave a rounding residue.
            released = wallet if remaining == 0 else wallet * abs(signed_quantity) / abs(held)
            venue_position.isolated_wallet -= released
            self.cross_wallet += released
        else:
            self.cross_wallet += realized - fee
        return realized

    # --- funding --------------------------------------------------------------------------------

    def settle_funding(self, symbol: str, rate: Decimal, mark_price: Decimal) -> list[tuple[VenuePosition, Decimal]]:
        """Pay or receive one funding settlement on every position of ``symbol``.

        Binance: payment = position size x mark price x rate; longs pay a
        positive rate. Returns each position with the amount credited.
        """
        settled = []
        for venue_position in list(self.open_positions(symbol)):
            amount = venue_position.position.funding_payment(rate, mark_price)
            if self.margin_types[symbol] is MarginType.ISOLATED:
                venue_position.isolated_wallet += amount
            else:
                self.cross_wallet += amount
            self.funding_received += amount
            settled.append((venue_position, amount))
        return settled

    # --- margin ---------------------------------------------------------------------------------

    def mark(self, symbol: str) -> Decimal:
        """Return the mark price of ``symbol``.

        Raises
        ------
        MalformedDataError
            If no price of ``symbol`` has been seen yet.
        """
        mark = self.marks.get(symbol)
        if mark is None:
            raise MalformedDataError(f"no mark price of {symbol} yet")
        return mark

    def notional(self, venue_position: VenuePosition) -> Decimal:
        """Return the absolute value of a position at its mark."""
        return abs(venue_position.quantity) * self.mark(venue_position.key[0])

    def initial_margin(self, venue_position: VenuePosition) -> Decimal:
        """Return ``notional at mark / leverage``."""
        return self.notional(venue_position) / self.leverage[venue_position.key[0]]

    def maintenance_margin(self, venue_position: VenuePosition) -> Decimal:
        """Return the bracket's maintenance margin of a position at its mark."""
        symbol = venue_position.key[0]
        return maintenance_margin(self.schedule.brackets(symbol), self.notional(venue_position))

    def unrealized_pnl(self, venue_position: VenuePosition) -> Decimal:
        """Return a position's unrealized P&L at its mark."""
        return venue_position.unrealized_pnl(self.mark(venue_position.key[0]))

    def is_isolated(self, venue_position: VenuePosition) -> bool:
        """Return whether the position is isolated."""
        return self.margin_types[venue_position.key[0]] is MarginType.ISOLATED

    def wallet_balance(self) -> Decimal:
        """Return the cross wallet plus every isolated wallet."""
        return self.cross_wallet + sum((p.isolated_wallet for p in self.positions.values()), ZERO)

    def cross_margin_balance(self) -> Decimal:
        """Return the cross wallet plus the unrealized P&L of the cross positions."""
        unrealized = sum(
            (self.unrealized_pnl(p) for p in self.open_positions() if not self.is_isolated(p)),
            ZERO,
        )
        return self.cross_wallet + unrealized

    def available_balance(self, order_margin: Decimal) -> Decimal:
        """Return what new orders may use: cross margin balance less cross initial and order margin."""
        cross_initial = sum((self.initial_margin(p) for p in self.open_positions() if not self.is_isolated(p)), ZERO)
        return self.cross_margin_balance() - cross_initial - order_margin

    def liquidation_price(self, venue_position: VenuePosition) -> Decimal | None:
        """Return Binance's liquidation price of a position (shared by a symbol's cross positions)."""
        symbol = venue_position.key[0]
        brackets = self.schedule.brackets(symbol)
        if self.is_isolated(venue_position):
            leg = _leg(venue_position, brackets)
            return liquidation_price([leg], venue_position.isolated_wallet)
        own = [p for p in self.open_positions(symbol)]
        others = [p for p in self.open_positions() if p.key[0] != symbol and not self.is_isolated(p)]
        return liquidation_price(
            [_leg(p, brackets) for p in own],
            self.cross_wallet,
            sum((self.maintenance_margin(p) for p in others), ZERO),
            sum((self.unrealized_pnl(p) for p in others), ZERO),
        )

    def break_even_price(self, venue_position: VenuePosition) -> Decimal | None:
        """Return the position's break-even price (entries, reductions and trading fees)."""
        return break_even_price(venue_position.quantity, venue_position.cost)

    # --- liquidation ----------------------------------------------------------------------------

    def due_liquidations(self) -> list[Liquidation]:
        """Return the positions whose margin has reached their maintenance margin, in a fixed order."""
        return [] if self.clearly_solvent() else self.due_liquidations_exactly()

    def due_liquidations_exactly(self) -> list[Liquidation]:
        """Return :meth:`due_liquidations` from the Decimal margins alone (the reference of the float pre-check)."""
        due: list[Liquidation] = []
        cross = []
        for venue_position in self.open_positions():
            if venue_position.key[0] not in self.marks:
                continue
            if not self.is_isolated(venue_position):
                cross.append(venue_position)
                continue
            margin = venue_position.isolated_wallet + self.unrealized_pnl(venue_position)
            if margin <= self.maintenance_margin(venue_position):
                due.append(self._liquidation(venue_position, MarginType.ISOLATED))
        if cross and all(p.key[0] in self.marks for p in cross):
            maintenance = sum((self.maintenance_margin(p) for p in cross), ZERO)
            if self.cross_margin_balance() <= maintenance:
                due.extend(self._liquidation(p, MarginType.CROSSED) for p in cross)
        return due

    def clearly_solvent(self) -> bool:
        """Return True when a float estimate puts every margin far above its maintenance margin.

        The estimate bounds each maintenance margin from above by the largest
        ``notional * rate - amount`` over the symbol's brackets and trusts a
        difference only beyond a relative ``1e-9`` of the amounts involved;
        False means "not sure": :meth:`due_liquidations` then decides in Decimal.

        While the wallets, positions, margin types and brackets stay as they
        were at the last True of :meth:`clearly_solvent_from_marks`, a move of
        the marks small enough that no margin can have lost half its slack
        since then is True without recomputing (:class:`_SolvencyBound`).
        """
        bound = self._solvency_bound
        if bound is not None and bound.holds(self):
            return True
        return self.clearly_solvent_from_marks()

    def clearly_solvent_from_marks(self) -> bool:
        """Return :meth:`clearly_solvent` computed from every mark (its reference); keep where a True still holds."""
        self._solvency_bound = None
        entries: list[_BoundEntry] = []
        slack = math.inf
        marks = self.marks
        mark_floats = self._mark_floats
        as_float = self._as_float
        cross_balance = as_float(self.cross_wallet)
        cross_maintenance = 0.0
        cross_scale = abs(cross_balance)
        for venue_position in self.positions.values():
            position = venue_position.position
            quantity = position.quantity
            if not quantity:
                continue
            symbol = venue_position.key[0]
            mark = marks.get(symbol)
            if mark is None:
                slack = -math.inf  # no bound: the mark's arrival must be checked
                continue
            lines = self._float_brackets(symbol)
            if lines is None:
                return False
            cap, rates_amounts = lines
            known = mark_floats.get(symbol)
            mark_price = known[1] if known is not None and known[0] is mark else float(mark)
            signed = as_float(quantity)
            notional = abs(signed) * mark_price
            if cap is not None and notional >= cap * (1.0 - _FLOAT_SAFETY):
                return False
            maintenance = -math.inf
            for rate, amount in rates_amounts:
                line = notional * rate - amount
                if line > maintenance:
                    maintenance = line
            unrealized = signed * (mark_price - as_float(position.entry_price))
            margin_type = self.margin_types[symbol]
            entries.append(_BoundEntry.of(venue_position, margin_type, lines, mark_price))
            if margin_type is MarginType.ISOLATED:
                margin = as_float(venue_position.isolated_wallet) + unrealized
                scale = abs(margin) + abs(maintenance) + notional + 1.0
                if margin - maintenance <= _FLOAT_SAFETY * scale:
                    return False
                slack = min(slack, _bound_slack(margin - maintenance, scale))
            else:
                cross_balance += unrealized
                cross_maintenance += maintenance
                cross_scale += abs(unrealized) + abs(maintenance) + notional
        solvent = cross_balance - cross_maintenance > _FLOAT_SAFETY * (cross_scale + 1.0)
        if solvent:
            slack = min(slack, _bound_slack(cross_balance - cross_maintenance, cross_scale + 1.0))
            if slack > 0:
                self._solvency_bound = _SolvencyBound(self.cross_wallet, self.schedule, tuple(entries), slack / 2)
        return solvent

    def note_mark_float(self, symbol: str, mark: Decimal, value: float) -> None:
        """Remember that ``mark`` of ``symbol`` is ``Decimal(repr(value))``: the pre-check then reads ``value``."""
        self._mark_floats[symbol] = (mark, value)

    def _as_float(self, value: Decimal) -> float:
        """Return ``float(value)``, remembered for the few Decimals that stay put between fills (wallets, positions)."""
        floats = self._floats
        known = floats.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        if len(floats) >= _FLOATS_KEPT:
            floats.clear()
        converted = float(value)
        floats[id(value)] = (value, converted)
        return converted

    def _float_brackets(self, symbol: str) -> FloatBrackets | None:
        """Return the last bracket's cap and every bracket's (rate, amount) of ``symbol`` in floats (cached)."""
        brackets = self.schedule.brackets(symbol)
        cached = self._float_bracket_cache.get(symbol)
        if cached is not None and cached[0] is brackets:
            return cached[1]
        if not brackets:
            return None
        cap = brackets[-1].notional_cap
        lines = (
            None if cap is None else float(cap),
            tuple((float(b.maintenance_margin_rate), float(b.maintenance_amount)) for b in brackets),
        )
        self._float_bracket_cache[symbol] = (brackets, lines)
        return lines

    def _liquidation(self, venue_position: VenuePosition, margin_type: MarginType) -> Liquidation:
        return Liquidation(
            key=venue_position.key,
            margin_type=margin_type,
            quantity=venue_position.quantity,
            mark_price=self.mark(venue_position.key[0]),
        )

    def liquidate(self, group: list[Liquidation], prices: list[Decimal]) -> list[tuple[Decimal, Decimal, Decimal]]:
        """Close positions liquidated together; return (realized P&L, clearance fee, insurance-covered loss) of each.

        ``group`` is one isolated position, or every cross position. The
        clearance fee is the symbol's rate times the notional, but never more
        than the margin left after the close (shared pro rata across a cross
        group); a negative margin is reset to zero and the shortfall counted as
        covered by the insurance fund.
        """
        realized = []
        nominal_fees = []
        for liquidation, price in zip(group, prices, strict=True):
            venue_position = self.positions[liquidation.key]
            nominal_fees.append(
                abs(venue_position.quantity) * price * self.schedule.liquidation_fee(liquidation.key[0])
            )
            realized.append(venue_position.position.apply_fill(-venue_position.quantity, price))
            venue_position.cost = ZERO
        isolated = group[0].margin_type is MarginType.ISOLATED
        if isolated:
            venue_position = self.positions[group[0].key]
            left = venue_position.isolated_wallet + realized[0]
            venue_position.isolated_wallet = ZERO
        else:
            left = self.cross_wallet + sum(realized, ZERO)
        fee = min(sum(nominal_fees, ZERO), max(left, ZERO))
        covered = max(-left, ZERO)
        remainder = max(left - fee, ZERO)
        self.cross_wallet = self.cross_wallet + remainder if isolated else remainder
        self.fees_paid += fee
        self.liquidation_fees += fee
        self.insurance_fund_covered += covered
        total_nominal = sum(nominal_fees, ZERO)
        shares = [n / total_nominal if total_nominal > 0 else Decimal(1) / len(group) for n in nominal_fees]
        return [(r, fee * share, covered * share) for r, share in zip(realized, shares, strict=True)]

    # --- settings -------------------------------------------------------------------------------

    def max_notional(self, symbol: str, leverage: int | None = None) -> Decimal | None:
        """Return the largest notional allowed at ``leverage`` (the symbol's current one when None)."""
        return max_notional(self.schedule.brackets(symbol), self.leverage[symbol] if leverage is None else leverage)

    def set_leverage(self, symbol: str, leverage: int, exposure: Decimal) -> None:
        """Change a symbol's leverage after checking it against the brackets and the open exposure.

        Raises
        ------
        RequestRejectedError
            -4028 for a leverage the brackets do not offer, -2027 when the
            exposure exceeds what it allows, -4161 when lowering it under an
            open isolated position.
        """
        cap = max_notional(self.schedule.brackets(symbol), leverage)
        if cap is not None and exposure > cap:
            raise RequestRejectedError(
                f"{symbol} exposure {exposure} > {cap} at {leverage}x: {BinanceErrorCode.MAX_LEVERAGE_RATIO.message}",
                BinanceErrorCode.MAX_LEVERAGE_RATIO,
            )
        isolated_open = self.margin_types[symbol] is MarginType.ISOLATED and any(self.open_positions(symbol))
        if isolated_open and leverage < self.leverage[symbol]:
            code = BinanceErrorCode.ISOLATED_LEVERAGE_REJECT_WITH_POSITION
            raise RequestRejectedError(f"{symbol}: {code.message}", code)
        self.leverage[symbol] = leverage

    # --- snapshot -------------------------------------------------------------------------------

    def state(self) -> AccountState:
        """Return everything the account holds."""
        return AccountState(
            cross_wallet=self.cross_wallet,
            position_mode=self.position_mode,
            leverage=dict(self.leverage),
            margin_types=dict(self.margin_types),
            marks=dict(self.marks),
            positions=[
                PositionState(
                    symbol=key[0],
                    position_side=key[1],
                    quantity=p.quantity,
                    entry_price=p.position.entry_price,
                    realized_pnl=p.position.realized_pnl,
                    isolated_wallet=p.isolated_wallet,
                    cost=p.cost,
                )
                for key, p in self.positions.items()
            ],
            fees_paid=self.fees_paid,
            funding_received=self.funding_received,
            liquidation_fees=self.liquidation_fees,
            insurance_fund_covered=self.insurance_fund_covered,
        )

    def restore(self, state: AccountState) -> None:
        """Replace everything the account holds with ``state``."""
        self.cross_wallet = state.cross_wallet
        self.position_mode = state.position_mode
        self.leverage = dict(state.leverage)
        self.margin_types = dict(state.margin_types)
        self.marks = dict(state.marks)
        self.positions = {}
        self._positions_of = {}
        for saved in state.positions:
            venue_position = VenuePosition((saved.symbol, saved.position_side))
            venue_position.position.quantity = saved.quantity
            venue_position.position.entry_price = saved.entry_price
            venue_position.position.realized_pnl = saved.realized_pnl
            venue_position.isolated_wallet = saved.isolated_wallet
            venue_position.cost = saved.cost
            self._add_position(venue_position)
        self.fees_paid = state.fees_paid
        self.funding_received = state.funding_received
        self.liquidation_fees = state.liquidation_fees
        self.insurance_fund_covered = state.insurance_fund_covered


@mypyc_attr(allow_interpreted_subclasses=True)
class AccountHistory:
    """The account's fills and funding payments in the order they happened, and which are not committed yet.

    Binance's ``GET /fapi/v1/userTrades`` and ``GET /fapi/v1/income?incomeType=FUNDING_FEE``:
    every fill of the account (the venue's own liquidation fills too) as the
    :class:`~keel.core.messages.OrderFilled` the venue reported, and every
    :class:`~keel.core.messages.FundingPaid`. The records carry message id 0
    (a message id belongs to one process, so a snapshot must not hold it);
    each query answers with copies under fresh message ids, as a venue's
    REST response would.

    Parameters
    ----------
    trades, funding
        The history so far (from a snapshot), all of it committed.
    """

    def __init__(self, trades: Sequence[OrderFilled] = (), funding: Sequence[FundingPaid] = ()) -> None:
        self.trades = list(trades)
        self.funding = list(funding)
        self._committed_trades = len(self.trades)
        self._committed_funding = len(self.funding)

    def record_trade(self, fill: OrderFilled) -> None:
        """Add a fill the venue reported."""
        self.trades.append(msgspec.structs.replace(fill, id=0))

    def record_funding(self, payment: FundingPaid) -> None:
        """Add a funding payment the venue reported."""
        self.funding.append(msgspec.structs.replace(payment, id=0))

    def trades_since(self, symbol: str | None, start_ns: int) -> list[OrderFilled]:
        """Return the fills (of ``symbol``, or of every symbol) with ``ts_event >= start_ns``."""
        return [
            msgspec.structs.replace(t, id=next_message_id())
            for t in self.trades
            if t.ts_event >= start_ns and (symbol is None or t.symbol == symbol)
        ]

    def funding_since(self, start_ns: int) -> list[FundingPaid]:
        """Return the funding payments with ``ts_event >= start_ns``."""
        return [msgspec.structs.replace(f, id=next_message_id()) for f in self.funding if f.ts_event >= start_ns]

    def uncommitted(self) -> tuple[list[OrderFilled], list[FundingPaid]]:
        """Return the fills and funding payments added since the last :meth:`mark_committed`."""
        return self.trades[self._committed_trades :], self.funding[self._committed_funding :]

    def mark_committed(self) -> None:
        """Mark the whole history as committed."""
        self._committed_trades = len(self.trades)
        self._committed_funding = len(self.funding)


FloatBrackets = tuple[float | None, tuple[tuple[float, float], ...]]
"""A symbol's last bracket cap and every bracket's (rate, amount), in floats."""


def _bound_slack(difference: float, scale: float) -> float:
    """Return how far a margin's float ``difference`` over its maintenance may fall before the pre-check doubts it.

    The pre-check trusts a difference above ``1e-9 x scale``; the bound keeps
    as much again for the float error of the estimate itself.
    """
    return difference - 2.0 * _FLOAT_SAFETY * scale


@dataclass(frozen=True)
class _BoundEntry:
    """One open position as the pre-check saw it: what it depends on, its mark then, and how fast its margin moves."""

    venue_position: VenuePosition
    quantity: Decimal
    entry_price: Decimal
    isolated_wallet: Decimal
    margin_type: MarginType
    lines: FloatBrackets
    mark: float
    # An upper bound of how much the pre-check's margin minus maintenance (less its safety) moves per unit
    # of mark: the P&L moves |q|, the maintenance at most |q| x the largest rate, the safety scale 1e-9 of both.
    weight: float
    # The highest mark below the last bracket's cap (beyond it the pre-check is never sure).
    highest_mark: float

    @classmethod
    def of(
        cls, venue_position: VenuePosition, margin_type: MarginType, lines: FloatBrackets, mark: float
    ) -> _BoundEntry:
        position = venue_position.position
        size = abs(float(position.quantity))
        cap, rates_amounts = lines
        steepest = max((abs(rate) for rate, _ in rates_amounts), default=0.0)
        highest = math.inf if cap is None else cap * (1.0 - _FLOAT_SAFETY) / size * (1.0 - 1e-12)
        return cls(
            venue_position,
            position.quantity,
            position.entry_price,
            venue_position.isolated_wallet,
            margin_type,
            lines,
            mark,
            2.0 * size * (1.0 + steepest),
            highest,
        )


@dataclass(frozen=True)
class _SolvencyBound:
    """Where a True of the float pre-check still holds without recomputing it.

    It holds while the cross wallet, the bracket schedule and every open
    position (quantity, entry, isolated wallet, margin type) are the very
    objects they were,
    no position opened or closed, no mark reached its last bracket's cap, and
    the marks moved, weighted by each position's :attr:`_BoundEntry.weight`,
    by at most ``budget`` in total: half the smallest slack the pre-check
    found above its own safety margin, so the margins it would compute now are
    still above theirs.
    """

    cross_wallet: Decimal
    schedule: LeverageSchedule
    entries: tuple[_BoundEntry, ...]
    budget: float

    def holds(self, account: Account) -> bool:
        """Return whether ``account`` at its current marks is still within the bound."""
        # A schedule's brackets never change (the bracket lines of each entry hold while the schedule does).
        if account.cross_wallet is not self.cross_wallet or account.schedule is not self.schedule:
            return False
        entries = self.entries
        count = len(entries)
        marks, mark_floats, margin_types = account.marks, account._mark_floats, account.margin_types
        held = 0
        moved = 0.0
        for venue_position in account.positions.values():
            position = venue_position.position
            quantity = position.quantity
            if not quantity:
                continue
            if held == count:
                return False
            entry = entries[held]
            held += 1
            symbol = venue_position.key[0]
            if (
                entry.venue_position is not venue_position
                or entry.quantity is not quantity
                or entry.entry_price is not position.entry_price
                or entry.isolated_wallet is not venue_position.isolated_wallet
                or entry.margin_type is not margin_types[symbol]
            ):
                return False
            mark = marks.get(symbol)
            if mark is None:
                return False
            known = mark_floats.get(symbol)
            price = known[1] if known is not None and known[0] is mark else float(mark)
            if not price < entry.highest_mark:
                return False
            moved += entry.weight * abs(price - entry.mark)
        return held == count and moved <= self.budget


def _leg(venue_position: VenuePosition, brackets: Sequence[LeverageBracket]) -> Leg:
    quantity = venue_position.quantity
    return Leg(
        direction=1 if quantity > 0 else -1,
        size=abs(quantity),
        entry_price=venue_position.position.entry_price,
        brackets=brackets,
    )
