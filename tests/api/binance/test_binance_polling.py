"""The circuit breaker in front of REST polling, MARGIN_CALL mapping, polled order ends, rate-limit use."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from keel.api.binance.polling import BreakerState, CircuitBreaker
from keel.api.binance.rest import RateLimiter
from keel.api.binance.user_stream import UserEventMapper
from keel.core.messages import MarginCalled, OrderCanceled, OrderExpired
from keel.core.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from keel.core.ports import OrderStatusReport

STEPS = st.lists(
    st.one_of(st.just(("fail", 0)), st.just(("succeed", 0)), st.tuples(st.just("wait"), st.integers(0, 40_000))),
    max_size=60,
)


class ReferenceBreaker:
    """The breaker's rules written as plainly as possible."""

    def __init__(self, threshold: int, pause_ms: int) -> None:
        self.threshold, self.pause_ms = threshold, pause_ms
        self.failures, self.opened_at, self.now = 0, None, 0

    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        return BreakerState.HALF_OPEN if self.now - self.opened_at >= self.pause_ms else BreakerState.OPEN

    def fail(self) -> None:
        trial = self.state() is BreakerState.HALF_OPEN
        self.failures += 1
        if trial or self.failures >= self.threshold:
            self.opened_at = self.now

    def succeed(self) -> None:
        self.failures, self.opened_at = 0, None


@given(steps=STEPS, threshold=st.integers(1, 4))
def test_the_breaker_follows_its_rules_for_any_sequence_of_outcomes(
    steps: list[tuple[str, int]], threshold: int
) -> None:
    # Arrange
    now = [0]
    breaker = CircuitBreaker(lambda: now[0], threshold, 30_000)
    reference = ReferenceBreaker(threshold, 30_000)

    for action, amount in steps:
        # Act: only calls the breaker allows are made
        if action == "wait":
            now[0] += amount
            reference.now = now[0]
        elif breaker.allows():
            (breaker.failed if action == "fail" else breaker.succeeded)()
            (reference.fail if action == "fail" else reference.succeed)()

        # Assert
        assert breaker.state is reference.state()
        assert breaker.allows() == (reference.state() is not BreakerState.OPEN)


def test_the_breaker_opens_after_the_threshold_and_a_failed_trial_reopens_it() -> None:
    # Arrange
    now = [0]
    breaker = CircuitBreaker(lambda: now[0], 2, 1_000)

    # Act / Assert
    breaker.failed()
    assert breaker.state is BreakerState.CLOSED
    breaker.failed()
    assert breaker.state is BreakerState.OPEN and not breaker.allows()
    now[0] = 1_000
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allows()
    breaker.failed()
    assert breaker.state is BreakerState.OPEN
    now[0] = 2_000
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED and breaker.openings == 1


def test_a_margin_call_payload_maps_to_margin_called() -> None:
    # Arrange: Binance's documented example
    payload = {
        "e": "MARGIN_CALL",
        "E": 1587727187525,
        "cw": "3.16812045",
        "p": [
            {
                "s": "ETHUSDT",
                "ps": "LONG",
                "pa": "1.327",
                "mt": "CROSSED",
                "iw": "0",
                "mp": "187.17127",
                "up": "-1.166074",
                "mm": "1.614445",
            }
        ],
    }

    # Act
    (event,) = UserEventMapper().map(payload, now_ns=5)

    # Assert
    assert isinstance(event, MarginCalled)
    assert event.cross_wallet_balance == Decimal("3.16812045")
    assert event.positions == (("ETHUSDT", "LONG", Decimal("1.327"), Decimal("187.17127"), Decimal("1.614445")),)
    assert event.ts_event == 1587727187525 * 1_000_000


def _report(client_order_id: str, status: OrderStatus) -> OrderStatusReport:
    return OrderStatusReport(
        client_order_id=client_order_id,
        venue_order_id="7",
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        time_in_force=TimeInForce.GTC,
        status=status,
        quantity=Decimal("0.010"),
        price=Decimal("90000"),
        filled_quantity=Decimal(0),
        average_price=None,
        reduce_only=False,
        ts_last=42,
    )


def test_polled_order_ends_are_reported_once_and_not_again_from_the_stream() -> None:
    # Arrange
    mapper = UserEventMapper()
    canceled = {"e": "ORDER_TRADE_UPDATE", "E": 1, "T": 1, "o": {"s": "BTCUSDT", "c": "a", "x": "CANCELED", "i": 7}}

    # Act
    first = mapper.status_events(_report("a", OrderStatus.CANCELED), 9)
    again = mapper.status_events(_report("a", OrderStatus.CANCELED), 9)
    from_stream = mapper.map(canceled, 9)
    expired = mapper.status_events(_report("b", OrderStatus.EXPIRED), 9)
    working = mapper.status_events(_report("c", OrderStatus.ACCEPTED), 9)

    # Assert
    assert [type(e) for e in first] == [OrderCanceled] and again == [] and from_stream == []
    assert [type(e) for e in expired] == [OrderExpired] and working == []


def test_rate_limit_usage_is_the_share_of_binances_limits_reported_in_the_headers() -> None:
    # Arrange
    async def no_wait(seconds: float) -> None:
        return None

    limiter = RateLimiter(lambda: 61_000, no_wait)

    # Act
    limiter.observe({"X-MBX-USED-WEIGHT-1M": "1200", "X-MBX-ORDER-COUNT-10S": "30", "X-MBX-ORDER-COUNT-1M": "120"})

    # Assert
    assert limiter.usage() == {"request_weight_1m": 0.5, "orders_10s": 0.1, "orders_1m": 0.1}
