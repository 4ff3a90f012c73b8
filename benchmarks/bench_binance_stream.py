"""Adapter overhead of a Binance market stream: message received -> keel event on the bus.

A ``websockets`` server on 127.0.0.1 sends ``aggTrade`` payloads built from the
bundled real BTCUSDT 1m bars (price = close, quantity = volume / 1000). Two
receive loops read the same messages in the same run:

* bare: the ``websockets`` library's ``async for message in connection`` loop,
  timing each receive from the previous one's return;
* keel: the same loop, plus :class:`BinanceUsdmNormalizer` parsing and
  ``EventBus.publish``; its overhead is timed from the receive's return to the
  event queued on the bus.

Prints one JSON line with p50/p99 in microseconds. ``--quick`` sends 5,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import websockets
from websockets.asyncio.server import ServerConnection, serve

from keel.core.bus import EventBus
from keel.core.messages import Message
from keel.market_data.loaders import load_ohlcv
from keel.market_data.normalization import BinanceUsdmNormalizer

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = 50_000


def make_payloads(n: int) -> list[str]:
    frame = load_ohlcv(ROOT / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz").frame
    rows = list(frame.itertuples(index=False))
    payloads = []
    for i in range(n):
        row = rows[i % len(rows)]
        ts = int(row.open_time_ms) + 60_000 + i
        payloads.append(
            json.dumps(
                {
                    "e": "aggTrade",
                    "E": ts,
                    "s": "BTCUSDT",
                    "a": i + 1,
                    "p": f"{row.close:.1f}",
                    "q": f"{max(row.volume / 1000, 0.001):.3f}",
                    "f": i + 1,
                    "l": i + 1,
                    "T": ts,
                    "m": i % 2 == 0,
                }
            )
        )
    return payloads


async def receive(url: str, n: int, keel: bool) -> np.ndarray:
    normalizer = BinanceUsdmNormalizer({"BTCUSDT": Decimal("0.1")})
    bus = EventBus(capacity=n + 10)
    timings = np.empty(n, dtype=np.int64)
    previous = 0
    async with websockets.connect(url, max_queue=None) as connection:
        for i in range(n):
            message = await connection.recv()
            received = time.perf_counter_ns()
            if keel:
                parsed = normalizer.parse(message, received)
                if isinstance(parsed, Message):
                    bus.publish(parsed)
                timings[i] = time.perf_counter_ns() - received
            else:
                timings[i] = received - previous
                previous = received
    if keel and normalizer.rejected:
        raise SystemExit(f"normalizer rejected payloads: {dict(normalizer.rejected)}")
    return timings[1:]


async def main(n: int) -> dict[str, object]:
    payloads = make_payloads(n)

    async def send_all(connection: ServerConnection) -> None:
        for payload in payloads:
            await connection.send(payload)
        await connection.wait_closed()

    async with serve(send_all, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}"
        bare = await receive(url, n, keel=False)
        keel = await receive(url, n, keel=True)
    return {
        "benchmark": "binance_stream_to_bus",
        "messages": n,
        "keel_overhead_p50_us": round(float(np.percentile(keel, 50)) / 1000, 2),
        "keel_overhead_p99_us": round(float(np.percentile(keel, 99)) / 1000, 2),
        "bare_receive_p50_us": round(float(np.percentile(bare, 50)) / 1000, 2),
        "bare_receive_p99_us": round(float(np.percentile(bare, 99)) / 1000, 2),
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="send 5,000 messages")
    arguments = parser.parse_args()
    print(json.dumps(asyncio.run(main(5_000 if arguments.quick else MESSAGES))))
