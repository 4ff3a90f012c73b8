"""RiskLimits: validation and changes by name."""

from __future__ import annotations

import pytest

from keel.risk_management.limits import RiskLimits


def test_updated_replaces_named_limits_and_keeps_the_rest() -> None:
    # Arrange
    limits = RiskLimits()

    # Act
    changed = limits.updated(
        {"max_drawdown_pct": 0.10, "var_daily_pct": 0.015, "max_leverage": 8, "max_orders_per_window": 30.0}
    )

    # Assert
    assert (changed.max_drawdown_pct, changed.var_daily_pct, changed.max_leverage) == (0.10, 0.015, 8.0)
    assert changed.max_orders_per_window == 30 and isinstance(changed.max_orders_per_window, int)
    assert changed.max_order_notional == limits.max_order_notional
    assert changed.as_dict()["max_leverage"] == 8.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"leverage": 2.0}, "unknown risk limit leverage"),
        ({"max_orders_per_window": 2.5}, "whole number"),
        ({"var_confidence": 0.3}, "var_confidence"),
        ({"max_order_notional": float("inf")}, "positive finite"),
        ({"halt_drawdown_pct": 0.1}, "halt_drawdown_pct"),
        ({"max_leverage": True}, "max_leverage must be a number, got True"),
        ({"max_leverage": "3"}, "max_leverage must be a number, got '3'"),
        ({"max_orders_per_window": "30"}, "max_orders_per_window must be a number, got '30'"),
        ({"max_leverage": 200}, "max_leverage .* at most 125"),
        ({"max_net_leverage": 126.0}, "max_net_leverage .* at most 125"),
    ],
)
def test_bad_limits_are_refused_naming_them(changes: dict, message: str) -> None:
    # Act / Assert
    with pytest.raises(ValueError, match=message):
        RiskLimits().updated(changes)
