"""Microseconds per order of keel's full pre-trade approval, against a plain Decimal implementation.

Setup: a PositionManager and a RiskController on one bus, the 10 symbols'
real 1m bars of the bundled data fed through it (1,440 minutes, so the VaR
window, the cached covariance, volatilities and ATRs are full), a view from
one strategy on every symbol, and positions opened by a first allocation.
Then allocations of 10 target weights alternate between two real weight
vectors, so every allocation sizes and checks 10 orders: trading state,
instrument and price, the sizer's Kelly / ATR / VaR-budget / liquidation
limits, the per-position and per-order notional, step rounding, minimum
notional, the order rate, gross and net leverage and the incremental daily
VaR, then the OrderApproved or OrderDenied event. Timed: ``on_allocation``
per order (the bus is drained outside the timing).

Reference, in the same run and on the same allocations: the same
projection, sizing and leverage checks written plainly in Decimal with
``Instrument.round_quantity`` and ``Instrument.check_order``, and the VaR
as a full quadratic form per order (what the walking skeleton's Decimal
style costs).

Prints one JSON line: {"keel_us_per_order", "decimal_reference_us_per_order", "speedup", ...}.
``--quick`` runs 200 allocations once.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MILLI, SimulatedClock
from keel.core.instruments import Instrument, load_instruments
from keel.core.messages import AllocationProposed, BarClosed, OrderApproved, SignalAction, SignalGenerated
from keel.market_data.loaders import load_ohlcv
from keel.risk_management.limits import RiskLimits
from keel.risk_management.position_manager import PositionManager
from keel.risk_management.risk_controller import RiskController

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = (
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "LINKUSDT",
    "LTCUSDT",
    "BCHUSDT",
    "AVAXUSDT",
    "SUIUSDT",
)
MINUTES = 1440
CAPITAL = Decimal(1_000_000)


def load_bars() -> list[list[BarClosed]]:
    frames = {
        s: load_ohlcv(ROOT / "data/ohlcv/binance_usdm_1m_2025-05" / f"{s}_1m.csv.gz").frame.set_index("open_time_ms")
        for s in SYMBOLS
    }
    times = pd.concat([f["close"].rename(s) for s, f in frames.items()], axis=1, join="inner").index[:MINUTES]
    minutes = []
    for open_ms in times:
        row = []
        for symbol in SYMBOLS:
            bar = frames[symbol].loc[open_ms]
            ts = (int(open_ms) + 60_000) * NANOS_PER_MILLI
            row.append(
                BarClosed(
                    symbol=symbol,
                    interval="1m",
                    open_time=int(open_ms) * NANOS_PER_MILLI,
                    open=float(bar.open),
                    high=float(bar.high),
                    low=float(bar.low),
                    close=float(bar.close),
                    volume=float(bar.volume),
                    ts_event=ts,
                    ts_init=ts,
                )
            )
        minutes.append(row)
    return minutes


def weight_vectors() -> tuple[dict[str, float], dict[str, float]]:
    """Two real long/short weight vectors: each symbol's sign of its first-day return, scaled to gross 2."""
    signs = np.array([1, -1, 1, -1, 1, -1, 1, -1, 1, -1], dtype=float)
    first = {s: 0.2 * float(x) for s, x in zip(SYMBOLS, signs, strict=True)}
    second = {s: -0.15 * float(x) for s, x in zip(SYMBOLS, signs, strict=True)}
    return first, second


def build(minutes: list[list[BarClosed]]) -> tuple[EventBus, SimulatedClock, PositionManager, RiskController]:
    clock = SimulatedClock(minutes[0][0].ts_event)
    bus = EventBus(measure_latency=False)
    positions = PositionManager(CAPITAL, bus, clock)
    limits = RiskLimits(
        max_order_notional=5e6,
        max_position_notional=1e7,
        max_leverage=5.0,
        max_net_leverage=5.0,
        var_daily_pct=0.5,
        max_orders_per_window=10**9,
    )
    risk = RiskController(
        load_instruments(ROOT / "config/instruments.yaml"),
        positions,
        limits=limits,
        symbols=SYMBOLS,
        bus=bus,
        clock=clock,
    )
    positions.start()
    risk.start()
    for row in minutes:
        clock.advance_to(row[0].ts_event)
        for bar in row:
            bus.publish(bar)
        bus.drain()
    now = clock.timestamp_ns()
    for index, symbol in enumerate(SYMBOLS):
        action = SignalAction.BUY if index % 2 == 0 else SignalAction.SELL
        bus.publish(
            SignalGenerated(
                strategy="trend", symbol=symbol, action=action, strength=1.0, confidence=0.8, ts_event=now, ts_init=now
            )
        )
    bus.drain()
    return bus, clock, positions, risk


def time_keel(risk: RiskController, bus: EventBus, allocations: list[AllocationProposed]) -> tuple[float, int]:
    elapsed, orders = 0.0, 0
    for allocation in allocations:
        before = risk.approved + risk.denied
        started = time.perf_counter()
        risk.on_allocation(allocation)
        elapsed += time.perf_counter() - started
        orders += risk.approved + risk.denied - before
        bus.drain()
    return elapsed, orders


class DecimalReference:
    """The same approval written plainly in Decimal (the walking skeleton's style), with a full VaR form."""

    def __init__(self, risk: RiskController, positions: PositionManager, instruments: dict[str, Instrument]) -> None:
        self.risk = risk
        self.positions = positions
        self.instruments = instruments
        self.covariance = risk._covariance
        self.z = 2.3263478740408408
        self.held: dict[str, Decimal] = {s: positions.quantity(s) for s in SYMBOLS}

    def approve(self, weights: dict[str, float]) -> int:
        limits = self.risk.limits
        marks = self.positions.marks
        equity = self.positions.equity()
        orders = 0
        for symbol, weight in weights.items():
            instrument = self.instruments[symbol]
            price = marks[symbol]
            target = Decimal(repr(weight)) * equity / price
            cap = Decimal(repr(limits.max_position_notional)) / price
            target = max(-cap, min(cap, target))
            held = self.held[symbol]
            delta = target - held
            if delta == 0:
                continue
            quantity = instrument.round_quantity(
                min(abs(delta), Decimal(repr(limits.max_order_notional)) / price), market=True
            )
            if quantity <= 0:
                continue
            side = "BUY" if delta > 0 else "SELL"
            after = held + (quantity if delta > 0 else -quantity)
            orders += 1
            if (
                instrument.check_order(
                    side=side, price=None, quantity=quantity, reference_price=price, market=True, reduce_only=False
                )
                is not None
            ):
                continue
            projected = dict(self.held)
            projected[symbol] = after
            gross = sum(abs(q) * marks[s] for s, q in projected.items())
            net = sum(q * marks[s] for s, q in projected.items())
            if (
                gross > Decimal(repr(limits.max_leverage)) * equity
                or abs(net) > Decimal(repr(limits.max_net_leverage)) * equity
            ):
                continue
            exposure = np.array([float(projected[s] * marks[s]) for s in SYMBOLS])
            daily = math.sqrt(max(0.0, float(exposure @ self.covariance @ exposure)) * 1440.0) * self.z
            if daily > limits.var_daily_pct * float(equity):
                continue
            self.held[symbol] = after
        return orders


def time_reference(reference: DecimalReference, allocations: list[AllocationProposed]) -> tuple[float, int]:
    elapsed, orders = 0.0, 0
    for allocation in allocations:
        started = time.perf_counter()
        orders += reference.approve(allocation.weights)
        elapsed += time.perf_counter() - started
    return elapsed, orders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 allocations once (a smoke test)")
    args = parser.parse_args()
    count, repeats = (200, 1) if args.quick else (2000, 5)
    minutes = load_bars()
    bus, clock, positions, risk = build(minutes)
    first, second = weight_vectors()
    now = clock.timestamp_ns()
    allocations = [
        AllocationProposed(weights=first if i % 2 == 0 else second, reason="bench", ts_event=now, ts_init=now)
        for i in range(count)
    ]
    approved: list[OrderApproved] = []
    bus.subscribe(OrderApproved, approved.append)
    keel_runs, reference_runs = [], []
    orders = reference_orders = 0
    for _ in range(repeats):
        elapsed, orders = time_keel(risk, bus, allocations)
        keel_runs.append(elapsed / orders * 1e6)
        reference = DecimalReference(risk, positions, load_instruments(ROOT / "config/instruments.yaml"))
        elapsed, reference_orders = time_reference(reference, allocations)
        reference_runs.append(elapsed / reference_orders * 1e6)
    keel, plain = statistics.median(keel_runs), statistics.median(reference_runs)
    print(
        json.dumps(
            {
                "benchmark": "risk_pre_trade_approval",
                "keel_us_per_order": round(keel, 2),
                "decimal_reference_us_per_order": round(plain, 2),
                "speedup": round(plain / keel, 2),
                "orders_per_run": orders,
                "reference_orders_per_run": reference_orders,
                "approved_share": round(len(approved) / (orders * repeats), 3),
                "repeats": repeats,
                "symbols": len(SYMBOLS),
                "var_observations": len(risk._window),
            }
        )
    )


if __name__ == "__main__":
    main()
