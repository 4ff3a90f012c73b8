"""A local Binance on 127.0.0.1 playing a tape of real market data, and a paper/live session run until it is played."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from keel.api.binance.local_binance import LocalBinance
from keel.api.binance.local_market import LocalMarket, Tape
from keel.api.brackets import load_leverage_schedule
from keel.api.simulated_exchange import SimulatedExchange
from keel.core.clock import NANOS_PER_MILLI, Clock, SimulatedClock
from keel.core.instruments import Instrument, load_instruments
from keel.integration.paper import PaperSession

ROOT = Path(__file__).resolve().parents[2]


def ns(text: str) -> int:
    """Nanoseconds since the epoch of an ISO time without zone (UTC)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


async def start_local_binance(
    tape: Tape,
    symbols: list[str],
    *,
    position: int = 0,
    key: str = "key",
    secret: str = "secret",
    balance: Decimal = Decimal("100000"),
    request_clock: Clock | None = None,
    instruments: Mapping[str, Instrument] | None = None,
) -> tuple[LocalBinance, LocalMarket]:
    """Start a local Binance playing ``tape`` from ``position`` (the klines before it are the market's past).

    Its venue follows the tape's time; signed requests are checked against
    ``request_clock`` (the tape's time when None; a live session needs the
    wall clock, as Binance checks it). It trades and publishes ``instruments``
    (the bundled ones when None).
    """
    instruments = instruments or load_instruments(ROOT / "config" / "instruments.yaml")
    clock = SimulatedClock(tape.messages[position].ts_ms * NANOS_PER_MILLI)
    exchange = SimulatedExchange(
        instruments,
        clock,
        initial_balance=balance,
        schedule=load_leverage_schedule(ROOT / "config" / "leverage_brackets.yaml"),
    )
    market = LocalMarket(tape, {s: instruments[s].tick_size for s in symbols}, exchange, clock)
    if position:
        market.start_at(position)
    server = LocalBinance(exchange, request_clock or clock, key, secret, market=market)
    await server.start()
    return server, market


async def run_until_played(session: PaperSession, market: LocalMarket) -> dict[str, Any]:
    """Run the session while the local Binance plays its tape; stop once keel handled all of it."""
    expected = len(market.tape.messages) - market.position

    def stop_when_done(_status: dict[str, Any]) -> None:
        stream = session.market_stream
        if (
            market.finished.is_set()
            and stream is not None
            and stream.statistics.messages >= expected
            and session.events + session.warmup.get("overlap_dropped", 0) == stream.statistics.events
        ):
            session.request_stop("tape played")

    session._on_status = stop_when_done
    playing = asyncio.create_task(market.run())
    try:
        return await session.run()
    finally:
        playing.cancel()
        await asyncio.gather(playing, return_exceptions=True)
