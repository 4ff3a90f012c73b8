"""Market-stream adapter overhead: combined-stream message received -> keel event on the bus.

A ``websockets`` server on 127.0.0.1 sends the real BTCUSDT capture
(``data/orderbook/raw``) as the local Binance plays it: ``depth@100ms`` diffs,
``aggTrade``, ``bookTicker`` and ``kline_1m`` in combined-stream envelopes.
Two receive loops read the same messages in the same run:

* bare: the ``websockets`` library's receive loop, timing each receive from
  the previous one's return;
* keel: the same loop, plus :meth:`BinanceMarketStream.on_message` (parsing,
  order-book sync from the capture's snapshot, ``BookUpdated`` of the top 20
  levels) with ``EventBus.publish`` as the handler; timed from the receive's
  return to the last event of the message queued on the bus. The book's numba
  kernels are compiled before the run (a warm-up on the first 2,000 messages).

Prints one JSON line with p50/p99 in microseconds, overall and for depth
diffs alone. ``--quick`` sends 5,000 messages.
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

from keel.api.binance.local_market import capture_tape
from keel.api.binance.streams import BinanceMarketStream
from keel.core.bus import EventBus

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = ROOT / "data" / "orderbook" / "raw" / "binance_usdm_btcusdt_20240808_ws.jsonl.gz"
MESSAGES = 40_000


async def receive(url: str, n: int, snapshot: str | None) -> tuple[np.ndarray, np.ndarray]:
    bus = EventBus(capacity=4 * n + 10)
    stream = BinanceMarketStream(url, "http://127.0.0.1:1", {"BTCUSDT": Decimal("0.1")}, bus.publish)
    if snapshot is not None:
        stream.state.on_snapshot("BTCUSDT", snapshot, 0)
    timings = np.empty(n, dtype=np.int64)
    depth = np.zeros(n, dtype=bool)
    previous = 0
    async with websockets.connect(url, max_queue=None) as connection:
        for i in range(n):
            message = await connection.recv()
            received = time.perf_counter_ns()
            if snapshot is not None:
                stream.on_message(message)
                timings[i] = time.perf_counter_ns() - received
                depth[i] = "@depth" in message[:40]
            else:
                timings[i] = received - previous
                previous = received
    statistics = stream.statistics
    if snapshot is not None and (statistics.malformed or statistics.gaps or stream.state.wanted_snapshots):
        raise SystemExit(f"the stream did not stay in sync: {stream.health()}")
    return timings[1:], depth[1:]


def percentiles(values: np.ndarray) -> tuple[float, float]:
    return round(float(np.percentile(values, 50)) / 1000, 2), round(float(np.percentile(values, 99)) / 1000, 2)


async def main(n: int) -> dict[str, object]:
    tape = capture_tape(CAPTURE)
    messages = [json.dumps({"stream": m.stream, "data": m.payload}) for m in tape.messages[:n]]
    n = len(messages)
    snapshot = json.dumps(tape.snapshots["BTCUSDT"])

    async def send_all(connection: ServerConnection) -> None:
        for message in messages:
            await connection.send(message)
        await connection.wait_closed()

    # Compile the order book's numba kernels first: the run measures the steady state.
    warm = BinanceMarketStream("ws://127.0.0.1:1", "http://127.0.0.1:1", {"BTCUSDT": Decimal("0.1")}, lambda e: None)
    warm.state.on_snapshot("BTCUSDT", snapshot, 0)
    for message in messages[:2_000]:
        warm.state.on_message(message, 0)

    async with serve(send_all, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}"
        bare, _ = await receive(url, n, None)
        keel, depth = await receive(url, n, snapshot)
    keel_p50, keel_p99 = percentiles(keel)
    depth_p50, depth_p99 = percentiles(keel[depth])
    bare_p50, bare_p99 = percentiles(bare)
    return {
        "benchmark": "binance_market_streams_to_bus",
        "messages": n,
        "depth_messages": int(depth.sum()),
        "keel_overhead_p50_us": keel_p50,
        "keel_overhead_p99_us": keel_p99,
        "keel_depth_overhead_p50_us": depth_p50,
        "keel_depth_overhead_p99_us": depth_p99,
        "bare_receive_p50_us": bare_p50,
        "bare_receive_p99_us": bare_p99,
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="send 5,000 messages")
    arguments = parser.parse_args()
    print(json.dumps(asyncio.run(main(5_000 if arguments.quick else MESSAGES))))
