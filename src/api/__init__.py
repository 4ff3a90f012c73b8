"""Exchange adapters behind :class:`~keel.core.ports.ExchangePort`.

Holds :class:`SimulatedExchange`, the Binance USD-M venue simulated over
recorded data for backtests and paper trading. The Binance Futures adapter
(signed REST, WebSocket streams, user-data stream) comes with live trading.
"""

from keel.api.simulated_exchange import SimulatedExchange

__all__ = ["SimulatedExchange"]
