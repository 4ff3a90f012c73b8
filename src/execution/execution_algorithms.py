"""Execution algorithms a user paces: TWAP set by a market analysis, ADAPTIVE steered by market signals.

:class:`ExecutionAlgorithms` works a user's order (a MARKET ``SubmitOrder`` or
a mapping with ``symbol``, ``side`` and ``quantity``, see
:func:`keel.execution.router.order_terms`) through a
:class:`~keel.execution.router.SmartOrderRouter` and returns the parent's
transaction-cost analysis once it finished::

    result = await algorithms.execute_dynamic_twap(order, {"urgency": 0.8})
    result = await algorithms.execute_adaptive(order, {"urgency": 0.3})

The keys each understands are checked before anything is sent: an unknown
key, or a value that is not a finite number in its range, is a ValueError
naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from keel.core.messages import ExecutionCompleted, SubmitOrder
from keel.execution.algorithms import ExecutionStyle
from keel.execution.router import SmartOrderRouter, checked_horizon, checked_urgency, order_terms

# The pace of a dynamic TWAP: urgency u spans the configured horizon times (1.5 - u), from 1.5x (u=0) to 0.5x (u=1).
_PATIENT_SPAN = 1.5
_CHECKS: dict[str, Callable[[object], float]] = {"urgency": checked_urgency, "horizon_seconds": checked_horizon}
_OWN_SIGNALS = ("spread_bps", "imbalance", "vpin", "impact_bps")


class ExecutionAlgorithms:
    """TWAP paced by the caller's market analysis and ADAPTIVE driven by the caller's urgency, over a router.

    Parameters
    ----------
    router
        The smart order router that works the orders (its ``settings.twap_horizon_seconds``
        is the TWAP horizon at the middle urgency 0.5).
    """

    def __init__(self, router: SmartOrderRouter) -> None:
        self.router = router

    async def execute_dynamic_twap(
        self, order: SubmitOrder | Mapping[str, object], market_analysis: Mapping[str, object]
    ) -> ExecutionCompleted:
        """Work ``order`` as TWAP over a horizon set by ``market_analysis``; return its ``ExecutionCompleted``.

        Parameters
        ----------
        order
            A MARKET SubmitOrder, or a mapping with ``symbol``, ``side``, ``quantity``
            and optionally ``reduce_only``, ``strategy`` and ``urgency``.
        market_analysis
            ``urgency`` in [0, 1] (0 patient, 1 immediate): the schedule spans the
            router's TWAP horizon times ``1.5 - urgency`` (the configured horizon
            at 0.5, half of it at 1); or ``horizon_seconds`` (> 0), the span
            itself. Without either, the order's urgency sets the span, else it is
            the configured horizon.

        Raises
        ------
        TypeError, ValueError
            For an order that is not one, an unknown key, a value that is not a
            finite number in its range, or both keys at once: nothing is sent.
        """
        pace = _read(market_analysis, "market_analysis", "execute_dynamic_twap")
        terms = order_terms(order)
        if "urgency" in pace and "horizon_seconds" in pace:
            raise ValueError("market_analysis: give urgency or horizon_seconds, not both (urgency sets the horizon)")
        urgency = pace.get("urgency", terms.urgency)
        horizon = pace.get("horizon_seconds")
        if horizon is None and urgency is not None:
            horizon = self.router.settings.twap_horizon_seconds * (_PATIENT_SPAN - urgency)
        parent = self.router.execute(
            terms.symbol, terms.side, terms.quantity, ExecutionStyle.TWAP, reduce_only=terms.reduce_only,
            strategy=terms.strategy, urgency=urgency, horizon_seconds=horizon,
        )  # fmt: skip
        return await parent

    async def execute_adaptive(
        self, order: SubmitOrder | Mapping[str, object], market_signals: Mapping[str, object]
    ) -> ExecutionCompleted:
        """Work ``order`` ADAPTIVE with the urgency of ``market_signals``; return its ``ExecutionCompleted``.

        The router chooses between taking, posting and TWAP from the urgency and
        its own microstructure (spread, book imbalance, VPIN, impact estimate),
        and keeps re-deciding as that changes.

        Parameters
        ----------
        order
            A MARKET SubmitOrder, or a mapping with ``symbol``, ``side``, ``quantity``
            and optionally ``reduce_only``, ``strategy`` and ``urgency``.
        market_signals
            ``urgency`` in [0, 1] (replacing the order's; the router's configured
            urgency without either) and ``horizon_seconds`` (> 0), the span of
            the schedule when it chooses TWAP.

        Raises
        ------
        TypeError, ValueError
            For an order that is not one, an unknown key (spread, imbalance,
            VPIN and impact are the router's own), or a value that is not a
            finite number in its range: nothing is sent.
        """
        signals = _read(market_signals, "market_signals", "execute_adaptive")
        terms = order_terms(order)
        parent = self.router.execute(
            terms.symbol, terms.side, terms.quantity, ExecutionStyle.ADAPTIVE, reduce_only=terms.reduce_only,
            strategy=terms.strategy, urgency=signals.get("urgency", terms.urgency),
            horizon_seconds=signals.get("horizon_seconds"),
        )  # fmt: skip
        return await parent


def _read(values: Mapping[str, object], name: str, method: str) -> dict[str, float]:
    """Return the checked ``urgency`` and ``horizon_seconds`` of a caller's mapping.

    Raises
    ------
    TypeError
        If ``values`` is not a mapping.
    ValueError
        For a key other than those two (named), or a value out of its range.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"{name} is a mapping (e.g. {{'urgency': 0.5}}), got {type(values).__name__}")
    unknown = sorted(str(key) for key in values if key not in _CHECKS)
    if unknown:
        own = [key for key in unknown if key in _OWN_SIGNALS]
        hint = f"; {', '.join(own)}: the router reads these from its own microstructure snapshots" if own else ""
        raise ValueError(f"{name}: {method} reads urgency and horizon_seconds, not {unknown}{hint}; nothing was sent")
    try:
        return {key: _CHECKS[key](value) for key, value in values.items()}
    except ValueError as error:
        raise ValueError(f"{name}: {error}; nothing was sent") from None
