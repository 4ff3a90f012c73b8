"""ExecutionAlgorithms: TWAP paced by the caller's market analysis, ADAPTIVE by the caller's signals, on real bars."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from test_router_orders import BARS, BTC, SECOND, OrderDesk

from keel.core.messages import ExecutionCompleted
from keel.core.orders import OrderSide
from keel.execution import ExecutionAlgorithms
from keel.execution.router import RouterSettings

ORDER = {"symbol": BTC, "side": "BUY", "quantity": "0.040"}
UNPACED = RouterSettings(twap_horizon_seconds=240, twap_slices=4, size_jitter=0, time_jitter=0)


def work(desk: OrderDesk, call) -> tuple[list[int], float, ExecutionCompleted]:
    """Start ``call`` (an algorithm's coroutine), note its parent's schedule (s from start) and urgency, finish it."""

    async def operator() -> tuple[list[int], float, ExecutionCompleted]:
        waiting = asyncio.ensure_future(call)
        await asyncio.sleep(0)  # the algorithm starts its parent and awaits it
        (parent,) = desk.router.parents.values()
        offsets = [(s.ts - parent.start_ns) // SECOND for s in parent.schedule]
        desk.feed(*BARS[1:12])
        return offsets, parent.urgency, await waiting

    return asyncio.run(operator())


@pytest.mark.parametrize(
    ("market_analysis", "offsets"),
    [
        ({"urgency": 1.0}, [0, 30, 60, 90]),  # half the configured 240 s
        ({"urgency": 0.5}, [0, 60, 120, 180]),  # the configured horizon
        ({"urgency": 0.0}, [0, 90, 180, 270]),  # one and a half times it
        ({"horizon_seconds": 80}, [0, 20, 40, 60]),
    ],
)
def test_a_dynamic_twap_spans_the_horizon_its_market_analysis_sets_and_returns_its_analysis(market_analysis, offsets):
    # Arrange
    desk = OrderDesk(UNPACED)
    algorithms = ExecutionAlgorithms(desk.router)

    # Act
    schedule, _, result = work(desk, algorithms.execute_dynamic_twap(ORDER, market_analysis))

    # Assert
    assert schedule == offsets
    assert (result.style, result.symbol, result.side) == ("TWAP", BTC, OrderSide.BUY)
    assert result.filled_quantity == Decimal("0.040") and result.reason == "filled"


def test_a_dynamic_twap_without_a_pace_takes_the_order_urgency_else_the_configured_horizon():
    # Arrange
    urgent, plain = OrderDesk(UNPACED), OrderDesk(UNPACED)

    # Act
    urgent_schedule, _, _ = work(
        urgent, ExecutionAlgorithms(urgent.router).execute_dynamic_twap({**ORDER, "urgency": 1}, {})
    )
    plain_schedule, _, _ = work(plain, ExecutionAlgorithms(plain.router).execute_dynamic_twap(ORDER, {}))

    # Assert
    assert urgent_schedule == [0, 30, 60, 90]
    assert plain_schedule == [0, 60, 120, 180]


def test_adaptive_works_the_order_with_the_urgency_of_its_signals():
    # Arrange: an urgent signal takes at once, whatever the order said
    desk = OrderDesk()
    algorithms = ExecutionAlgorithms(desk.router)

    # Act
    _, urgency, result = work(
        desk, algorithms.execute_adaptive({**ORDER, "side": "SELL", "urgency": 0.1}, {"urgency": 0.9})
    )

    # Assert
    assert urgency == 0.9
    assert (result.style, result.side, result.filled_quantity) == ("ADAPTIVE", OrderSide.SELL, Decimal("0.040"))
    assert result.child_orders == 1


@pytest.mark.parametrize(
    ("method", "values", "named"),
    [
        ("execute_dynamic_twap", {"volatility": 0.02}, "volatility"),
        ("execute_dynamic_twap", {"urgency": 1.5}, "urgency"),
        ("execute_dynamic_twap", {"urgency": float("nan")}, "urgency"),
        ("execute_dynamic_twap", {"urgency": True}, "urgency"),
        ("execute_dynamic_twap", {"urgency": "high"}, "urgency"),
        ("execute_dynamic_twap", {"horizon_seconds": float("inf")}, "horizon_seconds"),
        ("execute_dynamic_twap", {"horizon_seconds": -60}, "horizon_seconds"),
        ("execute_dynamic_twap", {"urgency": 0.5, "horizon_seconds": 60}, "not both"),
        ("execute_adaptive", {"vpin": 0.7, "spread_bps": 1.0}, "own microstructure snapshots"),
        ("execute_adaptive", {"urgency": -0.1}, "urgency"),
        ("execute_adaptive", {"horizon_seconds": 0}, "horizon_seconds"),
    ],
)
def test_a_key_not_understood_or_a_value_out_of_range_is_refused_naming_it_and_nothing_is_sent(method, values, named):
    # Arrange
    desk = OrderDesk()
    algorithms = ExecutionAlgorithms(desk.router)

    # Act
    with pytest.raises(ValueError, match=named):
        asyncio.run(getattr(algorithms, method)(ORDER, values))

    # Assert
    assert desk.nothing_sent()


def test_an_order_that_is_not_one_is_refused_before_anything_is_sent():
    # Arrange
    desk = OrderDesk()
    algorithms = ExecutionAlgorithms(desk.router)

    # Act / Assert
    with pytest.raises(TypeError, match="Decimal"):
        asyncio.run(algorithms.execute_adaptive({**ORDER, "quantity": 0.04}, {"urgency": 0.5}))
    with pytest.raises(TypeError, match="market_signals is a mapping"):
        asyncio.run(algorithms.execute_adaptive(ORDER, [("urgency", 0.5)]))
    assert desk.nothing_sent()
