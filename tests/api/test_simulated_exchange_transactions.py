"""Venue transactions, commits, the market cursor and the account history of the simulated venue.

On the real BTCUSDT 1m bars of 2025-05-04 (bar 0 opens at 15:33 UTC) and the
real funding file: the 16:00 UTC settlement falls after bar 26.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from venue_harness import Harness, HarnessFactory, money, real_bars, real_session, strip_ids, with_funding

from keel.api.venue_state import MarketCursor, VenueCommit
from keel.core.error_codes import BinanceErrorCode
from keel.core.errors import RequestRejectedError
from keel.core.messages import (
    BarClosed,
    BookUpdated,
    Event,
    FundingPaid,
    FundingRateUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    TradeTick,
)
from keel.core.orders import OrderSide, OrderStatus

BTC = "BTCUSDT"
BARS = real_bars(BTC)


class RecordingCommits:
    """A commit handler that records each commit with the reports delivered before it."""

    def __init__(self, venue: Harness) -> None:
        self.venue = venue
        self.commits: list[VenueCommit] = []
        self.delivered_before: list[int] = []

    def __call__(self, commit: VenueCommit) -> None:
        self.commits.append(commit)
        self.delivered_before.append(len(self.venue.reports))


def recorded(venue: Harness) -> RecordingCommits:
    recording = RecordingCommits(venue)
    venue.exchange.set_commit_handler(recording)
    return recording


def fill_ids(events: list[Event]) -> list[str]:
    return [e.trade_id for e in events if isinstance(e, OrderFilled)]


# --- transactions ----------------------------------------------------------------------------------------


def test_reports_are_delivered_only_after_the_commit_of_their_transaction(bar_venue: HarnessFactory) -> None:
    # Arrange: a market order and a resting bid that bar 1 fills, a cancel, bars through the 16:00 settlement
    venue = bar_venue()
    commits = recorded(venue)
    venue.feed(BARS[0])
    venue.submit(OrderSide.BUY, "0.100")
    venue.limit(OrderSide.BUY, "0.050", "95480.0")
    away = venue.limit(OrderSide.BUY, "0.050", "94000.0")
    operations = [
        lambda: venue.feed(BARS[1]),
        lambda: venue.run(venue.exchange.cancel_order(BTC, away.client_order_id)),
        *[lambda event=event: venue.feed(event) for event in with_funding(BARS[2:28])],
    ]

    # Act / Assert: each operation is one commit, made before any of its reports was delivered
    for operation in operations:
        before, seen = len(venue.reports), len(commits.commits)
        operation()
        (commit,) = commits.commits[seen:]
        delivered = venue.reports[before:]
        assert commits.delivered_before[-1] == before
        assert fill_ids(delivered) == [t.trade_id for t in commit.trades]
        assert strip_ids(r for r in delivered if isinstance(r, FundingPaid)) == strip_ids(commit.funding)
    assert len(venue.of_type(OrderFilled)) == 2 and len(venue.of_type(FundingPaid)) == 1
    assert len(venue.of_type(OrderCanceled)) == 1


def test_a_commit_carries_the_orders_it_closed_and_every_working_order(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue()
    commits = recorded(venue)
    venue.feed(BARS[0])
    rest = venue.limit(OrderSide.BUY, "0.050", "94000.0", client_order_id="rest")
    market = venue.submit(OrderSide.BUY, "0.010", client_order_id="market")

    # Act
    venue.feed(BARS[1])
    filled_in = commits.commits[-1]
    venue.feed(BARS[2])
    after = commits.commits[-1]

    # Assert
    assert [o.command.client_order_id for o in filled_in.orders] == [rest.client_order_id, market.client_order_id]
    assert [o.command.client_order_id for o in after.orders] == [rest.client_order_id]
    assert commits.commits[0].baseline and not filled_in.baseline


def test_an_operation_that_changes_nothing_is_not_committed(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue()
    venue.feed(BARS[0])
    commits = recorded(venue)

    # Act
    with pytest.raises(RequestRejectedError) as refused:
        venue.run(venue.exchange.cancel_order(BTC, "never-sent"))
    venue.run(venue.exchange.open_orders())
    venue.run(venue.exchange.positions())

    # Assert
    assert refused.value.code == BinanceErrorCode.CANCEL_REJECTED
    assert len(commits.commits) == 1 and commits.commits[0].baseline


def test_a_report_handler_calling_back_into_the_venue_starts_a_transaction_of_its_own(
    bar_venue: HarnessFactory,
) -> None:
    # Arrange: two market buys fill in bar 1; the first fill's handler sends a closing sell at once
    venue = bar_venue()
    commits = recorded(venue)
    venue.feed(BARS[0])
    first = venue.submit(OrderSide.BUY, "0.010", client_order_id="first")
    venue.submit(OrderSide.BUY, "0.020", client_order_id="second")
    closing = venue.order(OrderSide.SELL, "0.010", client_order_id="closing")
    delivered: list[Event] = []

    def react(report: Event) -> None:
        delivered.append(report)
        if isinstance(report, OrderFilled) and report.client_order_id == first.client_order_id:
            venue.exchange.submit(closing)

    venue.exchange.set_report_handler(react)

    # Act
    venue.feed(BARS[1])
    venue.feed(BARS[2])

    # Assert: the nested submit is committed on its own and its report follows the bar's reports
    kinds = [(type(r).__name__, r.client_order_id) for r in delivered]  # type: ignore[attr-defined]
    assert kinds == [
        ("OrderFilled", "first"),
        ("OrderFilled", "second"),
        ("OrderAccepted", "closing"),
        ("OrderFilled", "closing"),
    ]
    bar_commit, submit_commit = commits.commits[-3:-1]
    assert [t.client_order_id for t in bar_commit.trades] == ["first", "second"]
    assert "closing" in submit_commit.state.working and submit_commit.trades == []
    (position,) = venue.run(venue.exchange.positions())
    assert position.quantity == Decimal("0.020")


def test_a_failed_commit_holds_the_reports_back_until_a_commit_succeeds(bar_venue: HarnessFactory) -> None:
    # Arrange: a commit handler that fails once, on the bar that fills the order
    venue = bar_venue()
    venue.feed(BARS[0])
    venue.submit(OrderSide.BUY, "0.010", client_order_id="entry")
    written: list[VenueCommit] = []
    failures = iter([True])

    def flaky(commit: VenueCommit) -> None:
        if commit.trades and next(failures, False):
            raise OSError("disk full")
        written.append(commit)

    venue.exchange.set_commit_handler(flaky)
    delivered_before = len(venue.reports)

    # Act
    with pytest.raises(OSError, match="disk full"):
        venue.feed(BARS[1])
    held_back = venue.reports[delivered_before:]
    venue.feed(BARS[2])

    # Assert
    assert held_back == []
    assert [t.client_order_id for t in written[-1].trades] == ["entry"]
    assert [o.command.client_order_id for o in written[-1].orders] == ["entry"]
    assert fill_ids(venue.reports[delivered_before:]) == [written[-1].trades[0].trade_id]


def test_commit_payload_does_not_grow_with_the_closed_orders(bar_venue: HarnessFactory) -> None:
    # Arrange: one resting bid throughout; market orders open and close a position bar after bar
    venue = bar_venue()
    commits = recorded(venue)
    venue.feed(BARS[0])
    venue.limit(OrderSide.BUY, "0.010", "90000.0", client_order_id="rest")

    def trade_then_idle(bars: tuple[BarClosed, ...], idle: BarClosed) -> VenueCommit:
        for bar in bars:
            flat = venue.run(venue.exchange.positions()) == []
            venue.submit(OrderSide.BUY if flat else OrderSide.SELL, "0.010")
            venue.feed(bar)
        venue.feed(idle)
        return commits.commits[-1]

    # Act: a bar that fills nothing after 4 closed orders, then after 104
    early = trade_then_idle(BARS[1:5], BARS[5])
    late = trade_then_idle(BARS[6:106], BARS[106])

    # Assert
    closed = next(o for c in commits.commits for o in c.orders if o.status is OrderStatus.FILLED)
    assert len(venue.run(venue.exchange.account_trades())) == 104
    assert [o.command.client_order_id for o in early.orders] == [o.command.client_order_id for o in late.orders]
    assert [o.command.client_order_id for o in late.orders] == ["rest"] and late.trades == []
    assert abs(len(msgspec.json.encode(late)) - len(msgspec.json.encode(early))) < len(msgspec.json.encode(closed)) // 4


# --- market cursor ------------------------------------------------------------------------------------


def test_the_cursor_is_the_last_market_event_processed(book_venue: HarnessFactory) -> None:
    # Arrange
    venue = book_venue()
    events = real_session()[:50]
    book = next(e for e in events if isinstance(e, BookUpdated))
    trade = next(e for e in events if isinstance(e, TradeTick))

    # Act
    before = venue.exchange.cursor
    venue.feed(book)
    after_book = venue.exchange.cursor
    venue.feed(trade)

    # Assert
    assert before is None
    assert after_book == MarketCursor(book.ts_event, "book", BTC) == MarketCursor.of(book)
    assert venue.exchange.cursor == MarketCursor(trade.ts_event, "trade", BTC)


def test_the_cursor_moves_with_events_of_other_symbols_and_funding(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue()
    funding = next(e for e in with_funding(BARS[:30]) if isinstance(e, FundingRateUpdated))
    eth = real_bars("ETHUSDT")[0]

    # Act
    venue.feed(BARS[0], eth)
    after_eth = venue.exchange.cursor
    venue.feed(funding)

    # Assert
    assert after_eth == MarketCursor(eth.ts_event, "bar", "ETHUSDT")
    assert venue.exchange.cursor == MarketCursor(funding.ts_event, "funding", BTC)
    with pytest.raises(ValueError, match="OrderAccepted"):
        MarketCursor.of(OrderAccepted(client_order_id="x", venue_order_id="1", symbol=BTC, ts_event=0, ts_init=0))  # type: ignore[arg-type]


# --- account history ----------------------------------------------------------------------------------


def test_account_history_holds_every_fill_and_funding_payment_and_survives_a_snapshot(
    bar_venue: HarnessFactory,
) -> None:
    # Arrange: BTC and ETH longs held through the 16:00 settlement, the BTC one partly closed
    venue = bar_venue()
    eth = real_bars("ETHUSDT")
    venue.feed(BARS[0], eth[0])
    venue.submit(OrderSide.BUY, "0.100")
    venue.submit(OrderSide.BUY, "1.00", symbol="ETHUSDT")
    events = with_funding([*BARS[1:30], *eth[1:30]])
    venue.feed(*events[:20])
    venue.submit(OrderSide.SELL, "0.040")
    venue.feed(*events[20:])

    # Act
    trades = venue.run(venue.exchange.account_trades())
    btc = venue.run(venue.exchange.account_trades(BTC))
    later = venue.run(venue.exchange.account_trades(start_ns=btc[1].ts_event))
    funding = venue.run(venue.exchange.funding_payments())
    restored = Harness(BARS[0].open_time)
    restored.exchange.restore(venue.exchange.snapshot())

    # Assert
    assert strip_ids(trades) == strip_ids(venue.of_type(OrderFilled))
    assert [t.symbol for t in btc] == [BTC, BTC] and btc[1].last_quantity == Decimal("0.040")
    assert strip_ids(later) == strip_ids(t for t in trades if t.ts_event >= btc[1].ts_event)
    assert sorted(f.symbol for f in funding) == [BTC, "ETHUSDT"]
    assert strip_ids(funding) == strip_ids(venue.of_type(FundingPaid))
    assert venue.run(venue.exchange.funding_payments(start_ns=funding[0].ts_event + 1)) == []
    assert strip_ids(restored.run(restored.exchange.account_trades())) == strip_ids(trades)
    assert strip_ids(restored.run(restored.exchange.funding_payments())) == strip_ids(funding)
    assert not {t.id for t in trades} & {f.id for f in venue.of_type(OrderFilled)}


def test_a_snapshot_written_before_the_history_existed_still_restores(bar_venue: HarnessFactory) -> None:
    # Arrange: a snapshot without the cursor and history fields
    venue = bar_venue()
    venue.feed(BARS[0])
    venue.submit(OrderSide.BUY, "0.010")
    venue.feed(BARS[1])
    old = msgspec.json.decode(venue.exchange.snapshot())
    for field in ("cursor", "trades", "funding"):
        del old[field]
    restored = bar_venue()

    # Act
    restored.exchange.restore(msgspec.json.encode(old))

    # Assert
    assert restored.exchange.cursor is None
    assert restored.run(restored.exchange.account_trades()) == []
    (position,) = restored.run(restored.exchange.positions())
    assert position.quantity == Decimal("0.010")


def test_a_snapshot_of_a_venue_trading_other_symbols_is_refused(bar_venue: HarnessFactory) -> None:
    # Arrange
    venue = bar_venue()
    venue.feed(BARS[0])
    only_btc = bar_venue(instruments={BTC: venue.run(venue.exchange.exchange_info())[BTC]})

    # Act / Assert
    with pytest.raises(ValueError, match="this one trades"):
        only_btc.exchange.restore(venue.exchange.snapshot())


def test_commits_leave_the_reports_unchanged(bar_venue: HarnessFactory) -> None:
    # Arrange: market orders, bids under the close and cancels, with latency and jitter
    def run(commit: bool) -> list[dict[str, object]]:
        venue = bar_venue(latency_ns=2_000_000_000, latency_jitter_ns=900_000_000, seed=3)
        if commit:
            recorded(venue)
        for index, event in enumerate(with_funding(BARS[:60])):
            venue.feed(event)
            if not isinstance(event, BarClosed):
                continue
            if index % 9 == 0:
                venue.submit(OrderSide.BUY if index % 18 else OrderSide.SELL, "0.010")
            if index % 13 == 0:
                venue.limit(OrderSide.BUY, "0.010", money(event.close) - Decimal("5.0"))
            if index % 13 == 7:
                venue.run(venue.exchange.cancel_all_orders(BTC))
        return strip_ids(venue.reports)

    # Act
    plain, committed = run(False), run(True)

    # Assert
    assert plain == committed
    assert {"OrderAccepted", "OrderFilled", "OrderCanceled"} <= {str(r["type"]) for r in plain}
