"""Throughput of keel's event bus against a bare asyncio.Queue producer/consumer pair.

Both run in this process on the same messages: real BTCUSDT 1m bars from the
bundled data, published as ``BarClosed`` events. keel's bus uses its market-data
lane with latency metrics on and one trivial handler; the producer awaits
``bus.put`` (backpressure), so every message is delivered, none conflated. The
reference is ``asyncio.Queue(10000)`` with one producer and one consumer task.

Prints one JSON line: {"keel_bus_msgs_per_s", "asyncio_queue_msgs_per_s", "ratio", ...}.
``--quick`` runs 20,000 messages once (a smoke test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from keel.core.bus import EventBus
from keel.core.messages import BarClosed
from keel.market_data.loaders import load_ohlcv

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = 400_000
REPEATS = 5


def make_messages(n: int) -> list[BarClosed]:
    frame = load_ohlcv(ROOT / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz").frame
    rows = list(frame.itertuples(index=False))
    messages = []
    for i in range(n):
        row = rows[i % len(rows)]
        close_ns = (int(row.open_time_ms) + 60_000) * 1_000_000
        messages.append(
            BarClosed(
                symbol="BTCUSDT",
                interval="1m",
                open_time=int(row.open_time_ms) * 1_000_000,
                open=row.open,
                high=row.high,
                low=row.low,
                close=row.close,
                volume=row.volume,
                ts_event=close_ns,
                ts_init=close_ns,
            )
        )
    return messages


async def run_keel(messages: list[BarClosed]) -> float:
    bus = EventBus(capacity=10_000, measure_latency=True)
    received = 0

    def handler(message: BarClosed) -> None:
        nonlocal received
        received += 1

    bus.subscribe(BarClosed, handler, name="counter")
    loop_task = asyncio.create_task(bus.run())
    started = time.perf_counter()
    put = bus.put
    for message in messages:
        await put(message)
    while bus.depth:
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    bus.stop()
    await loop_task
    assert received == len(messages), (received, len(messages))
    assert bus.conflated == 0
    return len(messages) / elapsed


async def run_queue(messages: list[BarClosed]) -> float:
    queue: asyncio.Queue[BarClosed | None] = asyncio.Queue(10_000)
    received = 0

    async def consumer() -> None:
        nonlocal received
        while True:
            message = await queue.get()
            if message is None:
                return
            received += 1

    task = asyncio.create_task(consumer())
    started = time.perf_counter()
    for message in messages:
        await queue.put(message)
    await queue.put(None)
    await task
    elapsed = time.perf_counter() - started
    assert received == len(messages)
    return len(messages) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 messages, one repeat")
    args = parser.parse_args()
    count, repeats = (20_000, 1) if args.quick else (MESSAGES, REPEATS)
    messages = make_messages(count)
    keel_rates, queue_rates = [], []
    for _ in range(repeats):
        keel_rates.append(asyncio.run(run_keel(messages)))
        queue_rates.append(asyncio.run(run_queue(messages)))
    keel_rate = statistics.median(keel_rates)
    queue_rate = statistics.median(queue_rates)
    print(
        json.dumps(
            {
                "benchmark": "bus",
                "messages": count,
                "repeats": repeats,
                "keel_bus_msgs_per_s": round(keel_rate),
                "asyncio_queue_msgs_per_s": round(queue_rate),
                "ratio": round(keel_rate / queue_rate, 3),
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
