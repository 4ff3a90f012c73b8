"""Exchange adapters behind :class:`~keel.core.ports.ExchangePort`.

Holds :class:`SimulatedExchange`, the Binance USD-M venue simulated over
recorded bars, books, prints, mark prices and funding for backtests and paper
trading, and its parts: the account with its margin and liquidation rules
(:mod:`keel.api.account`), Binance's leverage brackets
(:mod:`keel.api.brackets`), the liquidation and break-even formulas
(:mod:`keel.api.margin`), the fill rules (:mod:`keel.api.matching`) and the
venue's order record (:mod:`keel.api.venue_orders`). Each venue transaction
is handed out as a :class:`VenueCommit` before its reports are delivered;
:class:`VenueStore` (:mod:`keel.api.venue_store`) writes them to the venue's
own SQLite file, so a paper venue survives its client being killed, and
:class:`MarketCursor` records the last market event the venue processed. The
Binance Futures adapter (signed REST, WebSocket streams, user-data stream)
comes with live trading. Auto-deleveraging is not modelled.
"""

from keel.api.account import Account
from keel.api.brackets import LeverageSchedule, bracket_for, load_leverage_schedule, maintenance_margin, max_notional
from keel.api.margin import Leg, break_even_price, liquidation_price
from keel.api.simulated_exchange import LIQUIDATION_PREFIX, SimulatedExchange
from keel.api.venue_state import ExchangeState, MarketCursor, VenueCommit, VenueState
from keel.api.venue_store import VenueStore

__all__ = [
    "LIQUIDATION_PREFIX",
    "Account",
    "ExchangeState",
    "Leg",
    "LeverageSchedule",
    "MarketCursor",
    "SimulatedExchange",
    "VenueCommit",
    "VenueState",
    "VenueStore",
    "bracket_for",
    "break_even_price",
    "liquidation_price",
    "load_leverage_schedule",
    "maintenance_margin",
    "max_notional",
]
