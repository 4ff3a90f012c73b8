"""Ladder risk: level accounting (property tests) and the approval of level orders at real BTCUSDT marks.

The position book is marked by the first real BTCUSDT 1m bar of the bundled
month (close 95502.7, 2025-05-04 15:34 UTC).
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.bus import EventBus
from keel.core.clock import SimulatedClock
from keel.core.fsm import TradingState
from keel.core.instruments import load_instruments
from keel.core.messages import (
    LadderProposed,
    LevelOrderApproved,
    LevelOrderProposed,
    OrderDenied,
    SetTradingState,
)
from keel.core.orders import OrderSide
from keel.risk_management.ladder_risk import LadderLedger
from keel.risk_management.position_manager import PositionManager
from keel.risk_management.risk_controller import DenialReason, RiskController
from kit import ROOT, real_bars

BTC = "BTCUSDT"
BAR = real_bars(BTC, 1)[0]

# --- level accounting ---------------------------------------------------------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(["approve", "submit", "fill", "close"]),
        st.sampled_from([1, -1]),
        st.integers(min_value=1, max_value=5),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops=operations, cap=st.integers(min_value=1, max_value=4))
def test_approving_only_within_the_room_never_takes_the_inventory_beyond_the_cap(
    ops: list[tuple[str, int, int]], cap: int
) -> None:
    # Arrange: every level order (each at its own level) is 5 steps of 0.001; fills take 1 to 5 steps of the
    # oldest working order
    ledger = LadderLedger(1, BTC, cap)
    step = Decimal("0.001")
    fills = Decimal(0)
    next_id = iter(range(1, 10_000))

    # Act / Assert after every operation
    for kind, sign, steps in ops:
        if kind == "approve" and ledger.room(sign) >= 1.0:
            approval = next(next_id)
            ledger.approve(approval, level=approval, sign=sign, quantity=5 * step)
        elif kind == "submit" and ledger.unsent:
            approval = next(iter(ledger.unsent))
            ledger.submit(approval, f"order-{approval}")
        elif kind == "fill" and ledger.working:
            client_order_id, order = next(iter(ledger.working.items()))
            quantity = min(steps * step, order.quantity - order.filled)
            ledger.fill(client_order_id, steps * step)
            fills += quantity * order.sign
        elif kind == "close" and ledger.working:
            ledger.close(next(iter(ledger.working)))
        working = sum(((o.quantity - o.filled) * o.sign for o in ledger.working.values()), Decimal(0))
        assert ledger.inventory == fills
        assert abs(ledger.inventory_levels - float(fills / (5 * step))) < 1e-9
        assert ledger.reserved() == fills + working
        assert abs(ledger.inventory_levels) <= cap + 1e-9


def test_an_ended_ledger_releases_its_fills_and_keeps_its_working_orders() -> None:
    # Arrange
    ledger = LadderLedger(1, BTC, 2)
    ledger.approve(10, level=1, sign=1, quantity=Decimal("0.005"))
    ledger.approve(11, level=3, sign=-1, quantity=Decimal("0.005"))
    ledger.submit(10, "buy")
    ledger.submit(11, "sell")
    ledger.fill("buy", Decimal("0.005"))

    # Act
    ledger.ended = True

    # Assert
    assert ledger.inventory == Decimal("0.005")
    assert ledger.reserved() == Decimal("-0.005")


# --- approvals ----------------------------------------------------------------------------------------------


class LadderDesk:
    """PositionManager + RiskController on one bus, marked by a real bar; level answers collected."""

    def __init__(self) -> None:
        self.clock = SimulatedClock(BAR.ts_event)
        self.bus = EventBus()
        self.positions = PositionManager(Decimal("10000"), self.bus, self.clock)
        instruments = load_instruments(ROOT / "config" / "instruments.yaml")
        self.risk = RiskController(instruments, self.positions, symbols=(BTC,), bus=self.bus, clock=self.clock)
        self.positions.start()
        self.risk.start()
        self.approved: list[LevelOrderApproved] = []
        self.denied: list[OrderDenied] = []
        self.bus.subscribe(LevelOrderApproved, self.approved.append, name="test.approved")
        self.bus.subscribe(OrderDenied, self.denied.append, name="test.denied")
        self.bus.publish(BAR)
        self.bus.drain()
        self.ladder_id = 0

    def ladder(self, notional: float = 500.0, cap: int = 2) -> None:
        message = LadderProposed(
            strategy="grid_trading",
            symbol=BTC,
            prices=(95400.05, 95450.05, 95500.0, 95550.05, 95600.05),
            sides=(OrderSide.BUY, OrderSide.BUY, None, OrderSide.SELL, OrderSide.SELL),
            level_notional=notional,
            max_inventory_levels=cap,
            reason="test",
            ts_event=BAR.ts_event,
            ts_init=BAR.ts_event,
        )
        self.ladder_id = message.id
        self.bus.publish(message)
        self.bus.drain()

    def propose(self, level: int, side: OrderSide, price: float, notional: float = 500.0) -> None:
        self.bus.publish(
            LevelOrderProposed(
                strategy="grid_trading",
                symbol=BTC,
                ladder_id=self.ladder_id,
                level=level,
                side=side,
                price=price,
                notional=notional,
                ts_event=BAR.ts_event,
                ts_init=BAR.ts_event,
            )
        )
        self.bus.drain()


def test_a_level_order_is_priced_on_the_tick_grid_on_its_passive_side_and_sized_from_its_notional() -> None:
    # Arrange
    desk = LadderDesk()
    desk.ladder()

    # Act
    desk.propose(1, OrderSide.BUY, 95450.05)
    desk.propose(3, OrderSide.SELL, 95550.05)

    # Assert: 500 USDT at ~95500 is 0.00523 BTC -> 0.005
    assert [(a.side, a.price, a.quantity, a.level) for a in desk.approved] == [
        (OrderSide.BUY, Decimal("95450.0"), Decimal("0.005"), 1),
        (OrderSide.SELL, Decimal("95550.1"), Decimal("0.005"), 3),
    ]


def test_orders_beyond_the_ladders_cap_are_denied() -> None:
    # Arrange: a cap of one level either way
    desk = LadderDesk()
    desk.ladder(cap=1)

    # Act
    desk.propose(1, OrderSide.BUY, 95450.05)
    desk.propose(0, OrderSide.BUY, 95400.05)

    # Assert
    assert len(desk.approved) == 1
    (denied,) = desk.denied
    assert (denied.reason_code, denied.strategy) == (DenialReason.INVENTORY_CAP.value, "grid_trading")


def test_halted_denies_level_orders_and_a_level_below_the_minimum_notional_is_denied() -> None:
    # Arrange
    desk = LadderDesk()
    desk.ladder(notional=50.0)

    # Act
    desk.propose(1, OrderSide.BUY, 95450.05, notional=50.0)
    desk.bus.publish(
        SetTradingState(state=TradingState.HALTED, reason="operator", ts_event=BAR.ts_event, ts_init=BAR.ts_event)
    )
    desk.bus.drain()
    desk.propose(1, OrderSide.BUY, 95450.05)

    # Assert
    assert desk.approved == []
    assert [d.reason_code for d in desk.denied] == [
        DenialReason.BELOW_MIN_NOTIONAL.value,
        DenialReason.TRADING_HALTED.value,
    ]


def test_a_proposal_for_an_ended_ladder_gets_no_answer() -> None:
    # Arrange
    desk = LadderDesk()
    desk.ladder()
    stale = desk.ladder_id
    desk.ladder()

    # Act
    desk.ladder_id = stale
    desk.propose(1, OrderSide.BUY, 95450.05)

    # Assert
    assert desk.approved == [] and desk.denied == []


def test_a_new_approval_of_a_level_replaces_the_one_never_sent() -> None:
    # Arrange
    ledger = LadderLedger(1, BTC, 2)
    ledger.approve(10, level=1, sign=1, quantity=Decimal("0.005"))

    # Act: the execution layer dropped approval 10 and proposed the level again
    ledger.approve(11, level=1, sign=1, quantity=Decimal("0.005"))

    # Assert: one level on its way, not two
    assert ledger.room(1) == 1.0
