"""Slippage control: realized slippage against the arrival price, and the limits that restrain an algorithm."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum


class SlippageAction(Enum):
    """What a breached slippage limit makes the router do, mildest first."""

    NONE = "none"
    SLOW_DOWN = "slow_down"
    GO_PASSIVE = "go_passive"
    PAUSE = "pause"


def slippage_bps(side_sign: int, arrival_price: Decimal, price: Decimal) -> float:
    """Return the slippage of ``price`` against the arrival price in bps (positive: it cost)."""
    return float(side_sign * (price - arrival_price) / arrival_price * 10_000)


@dataclass(frozen=True, slots=True)
class SlippageLimits:
    """Parent slippage (bps) beyond which the router slows down, switches to passive, then pauses."""

    slow_down_bps: float = 3.0
    passive_bps: float = 6.0
    pause_bps: float = 12.0

    def __post_init__(self) -> None:
        if not 0 < self.slow_down_bps <= self.passive_bps <= self.pause_bps:
            raise ValueError(
                "slippage limits must satisfy 0 < slow_down_bps <= passive_bps <= pause_bps, got "
                f"{self.slow_down_bps}, {self.passive_bps}, {self.pause_bps}"
            )


class SlippageController:
    """Track realized slippage per fill and per parent order, and say what its limits require.

    Parameters
    ----------
    limits
        The thresholds.
    """

    def __init__(self, limits: SlippageLimits | None = None) -> None:
        self.limits = limits or SlippageLimits()
        self.fill_slippage_bps: list[tuple[str, float]] = []
        self._notional: dict[str, Decimal] = {}
        self._quantity: dict[str, Decimal] = {}
        self._arrival: dict[str, tuple[int, Decimal]] = {}

    def start(self, parent_order_id: str, side_sign: int, arrival_price: Decimal) -> None:
        """Begin tracking a parent at its arrival price (its benchmark)."""
        if not arrival_price.is_finite() or arrival_price <= 0:
            raise ValueError(f"parent {parent_order_id}: arrival price must be positive, got {arrival_price}")
        self._arrival[parent_order_id] = (side_sign, arrival_price)
        self._notional[parent_order_id] = Decimal(0)
        self._quantity[parent_order_id] = Decimal(0)

    def record_fill(self, parent_order_id: str, quantity: Decimal, price: Decimal) -> float:
        """Record one child fill; return its slippage in bps."""
        side_sign, arrival = self._arrival[parent_order_id]
        self._notional[parent_order_id] += quantity * price
        self._quantity[parent_order_id] += quantity
        bps = slippage_bps(side_sign, arrival, price)
        self.fill_slippage_bps.append((parent_order_id, bps))
        return bps

    def parent_slippage_bps(self, parent_order_id: str) -> float:
        """Return the parent's quantity-weighted slippage so far (0 before any fill)."""
        quantity = self._quantity[parent_order_id]
        if quantity == 0:
            return 0.0
        side_sign, arrival = self._arrival[parent_order_id]
        return slippage_bps(side_sign, arrival, self._notional[parent_order_id] / quantity)

    def action(self, parent_order_id: str) -> tuple[SlippageAction, float]:
        """Return what the limits require for the parent now, and the limit that was crossed (0 if none)."""
        realized = self.parent_slippage_bps(parent_order_id)
        limits = self.limits
        for threshold, action in (
            (limits.pause_bps, SlippageAction.PAUSE),
            (limits.passive_bps, SlippageAction.GO_PASSIVE),
            (limits.slow_down_bps, SlippageAction.SLOW_DOWN),
        ):
            if realized > threshold:
                return action, threshold
        return SlippageAction.NONE, 0.0

    def finish(self, parent_order_id: str) -> None:
        """Forget a finished parent (its per-fill history stays)."""
        for table in (self._arrival, self._notional, self._quantity):
            table.pop(parent_order_id, None)
