"""The local Binance playing the real BTCUSDT capture, for the public-stream facades' tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from keel.api.binance.local_binance import LocalBinance
from keel.api.binance.local_market import LocalMarket, Tape, capture_tape
from keel.api.brackets import load_leverage_schedule
from keel.api.simulated_exchange import SimulatedExchange
from keel.core.clock import SimulatedClock
from keel.core.instruments import load_instruments

ROOT = Path(__file__).resolve().parents[3]
CAPTURE = ROOT / "data" / "orderbook" / "raw" / "binance_usdm_btcusdt_20240808_ws.jsonl.gz"
INSTRUMENTS = load_instruments(ROOT / "config" / "instruments.yaml")


@lru_cache(maxsize=1)
def real_capture() -> Tape:
    return capture_tape(CAPTURE)


@dataclass
class Binance:
    market: LocalMarket
    server: LocalBinance
    url: str


async def started_binance() -> Binance:
    tape = real_capture()
    clock = SimulatedClock(tape.messages[0].ts_ms * 1_000_000)
    exchange = SimulatedExchange(
        INSTRUMENTS,
        clock,
        initial_balance=Decimal("100000"),
        schedule=load_leverage_schedule(ROOT / "config" / "leverage_brackets.yaml"),
    )
    market = LocalMarket(tape, {"BTCUSDT": INSTRUMENTS["BTCUSDT"].tick_size}, exchange, clock)
    server = LocalBinance(exchange, clock, "key", "secret", market=market)
    url = await server.start()
    return Binance(market, server, url)


async def play_until(binance: Binance, done: asyncio.Future[object], batch: int = 200) -> None:
    """Play the capture in batches, letting keel's side run between them, until ``done``."""
    while not done.done():
        if not await binance.market.play(batch):
            break
        await asyncio.sleep(0)
