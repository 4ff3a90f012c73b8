"""A live session on Binance's live market streams (``keel run --mode live``'s default feed), on a local Binance.

The local Binance plays six hours of the bundled real 1m bars as live klines
and mark prices and matches on the prices it streams; keel trades that account
through the REST adapter and the user-data stream, as it would Binance.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from keel.api.binance.local_market import Tape, bar_tape
from keel.config import KeelConfig, load_config
from keel.core.clock import NANOS_PER_MILLI, LiveClock
from keel.integration.live import BinanceVenue
from keel.integration.paper import RECONCILING, PaperSession
from kit.local_binance import ROOT, ns, run_until_played, start_local_binance

KEY, SECRET = "live-market-test-key-51c2", "live-market-test-secret-9ad4e7"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def live_market_config(tmp_path: Path, base_url: str) -> KeelConfig:
    sections: dict[str, dict[str, Any]] = {
        "live": {"confirm": True},
        "binance": {"rest_url": base_url, "ws_url": base_url.replace("http://", "ws://")},
        "data": {"symbols": SYMBOLS},
        "strategy": {"name": "moving_average_cross", "fast_period": 5, "slow_period": 20, "warmup_bars": 60},
        "paper": {"status_interval_seconds": 0.05, "duration_seconds": 300},
        "run": {"output_dir": str(tmp_path)},
        "web": {"enabled": False},
    }
    return load_config(
        "live", environ={"KEEL_BINANCE_API_KEY": KEY, "KEEL_BINANCE_API_SECRET": SECRET}, overrides=sections
    )


def live_tape() -> Tape:
    """Six hours of real 1m bars (through the 08:00 funding) as live klines and mark prices, shifted to now."""
    return bar_tape(
        ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05",
        SYMBOLS,
        ROOT / "data" / "funding" / "binance_usdm_funding_2025-03_06.csv.gz",
        ns("2025-05-05T04:00:00"),
        ns("2025-05-05T10:00:00"),
    ).starting_from(time.time_ns() // NANOS_PER_MILLI)


def test_live_on_the_market_streams_trades_the_account_and_ends_with_its_positions(tmp_path: Path) -> None:
    # Arrange
    async def scenario() -> dict[str, Any]:
        # The venue follows the tape's time; signed requests are checked against the wall clock, as Binance does.
        server, market = await start_local_binance(
            live_tape(), SYMBOLS, key=KEY, secret=SECRET, balance=Decimal("50000"), request_clock=LiveClock()
        )
        try:
            config = live_market_config(tmp_path, server.base_url)
            session = PaperSession(config, tmp_path / "live", venue=BinanceVenue(config, live_feed=True))
            states = session.pipeline.recorder.trading_states

            # Act
            final = await run_until_played(session, market)
            account = {p.symbol: p.quantity for p in await server.exchange.positions() if p.quantity}
            kept = {s: p.quantity for s, p in session.pipeline.positions.positions.items() if p.quantity}
            return {
                "final": final,
                "account": account,
                "kept": kept,
                "states": [(s.state.value, s.reason) for s in states],
                "fills": len(await server.exchange.account_trades()),
            }
        finally:
            await server.stop()

    result = asyncio.run(scenario())

    # Assert: REDUCING until reconciled, then ACTIVE; bars from the streams; keel's books equal the account's
    final = result["final"]
    assert result["states"][:2] == [("REDUCING", RECONCILING), ("ACTIVE", "live: reconciled with the venue")]
    assert final["stop_reason"] == "tape played"
    assert final["bars"] == len(SYMBOLS) * 6 * 60
    assert final["handler_errors"] == 0
    assert final["market_stream"]["malformed"] == 0
    assert result["fills"] > 0 and final["fills"] == result["fills"]
    assert result["kept"] == result["account"]
