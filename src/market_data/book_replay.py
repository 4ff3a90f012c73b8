"""Check a rebuilt order book against the venue's own best bid and offer.

:func:`replay_book` rebuilds the local book of a recorded session from its
snapshot and diffs by Binance's rules and, after each applied diff event,
compares the rebuilt best bid and ask (price and quantity) with the recorded
``bookTicker`` update that has the same update id. The two streams are
independent outputs of the venue, so agreement shows the synchronization and
the level arithmetic are right. ``keel data replay-book DIR`` prints the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from keel.market_data.order_book import DiffResult, OrderBook
from keel.market_data.sessions import RecordedSession, load_session


@dataclass(frozen=True, slots=True)
class BookReplayReport:
    """The outcome of a book rebuild checked against ``bookTicker``.

    Attributes
    ----------
    compared
        Applied diff events that have a ``bookTicker`` with the same update id.
    matched
        Of those, how many agree on best bid and ask price and quantity.
    price_matched
        How many agree on the best bid and ask prices.
    first_mismatch_update_id
        Update id of the first disagreement, or None.
    """

    session: str
    symbol: str
    tick_size: str
    diff_events: int
    applied: int
    dropped: int
    gaps: int
    malformed: int
    crossed: int
    compared: int
    matched: int
    price_matched: int
    first_mismatch_update_id: int | None

    @property
    def match_rate(self) -> float:
        """Return matched / compared (0.0 when nothing was compared)."""
        return self.matched / self.compared if self.compared else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict, with ``match_rate`` and ``price_match_rate``."""
        document = asdict(self)
        document["match_rate"] = self.match_rate
        document["price_match_rate"] = self.price_matched / self.compared if self.compared else 0.0
        return document


def replay_book(session_dir: str | Path, tick_size: Decimal | None = None) -> BookReplayReport:
    """Rebuild a recorded session's book and compare it with its ``bookTicker`` stream.

    Parameters
    ----------
    session_dir
        A session folder of ``data/SOURCES.md``.
    tick_size
        The price grid; inferred from the recorded prices when None.

    Raises
    ------
    MalformedDataError
        If the folder or its files are unusable.
    """
    session = load_session(session_dir, tick_size=tick_size)
    return compare_with_book_ticker(session, str(session_dir))


def compare_with_book_ticker(session: RecordedSession, name: str) -> BookReplayReport:
    """Replay ``session``'s diffs in update-id order and compare with its ``bookTicker`` (see module doc)."""
    ticker = session.book_ticker
    recorded = dict(
        zip(
            ticker["update_id"].tolist(),
            zip(
                ticker["bid_price"].tolist(),
                ticker["bid_qty"].tolist(),
                ticker["ask_price"].tolist(),
                ticker["ask_qty"].tolist(),
                strict=True,
            ),
            strict=True,
        )
    )
    book = OrderBook(session.symbol, session.tick_size)
    snapshot = session.snapshot
    book.apply_snapshot_ticks(
        snapshot.last_update_id,
        snapshot.bid_ticks,
        snapshot.bid_quantities,
        snapshot.ask_ticks,
        snapshot.ask_quantities,
    )
    diffs = session.diffs
    previous = diffs.previous_update_id.tolist() if session.has_previous_update_id else None
    starts, asks = diffs.bid_start.tolist(), diffs.ask_start.tolist()
    compared = matched = price_matched = crossed = malformed = 0
    first_mismatch: int | None = None
    for index, (first, last) in enumerate(
        zip(diffs.first_update_id.tolist(), diffs.last_update_id.tolist(), strict=True)
    ):
        if diffs.malformed[index]:
            malformed += 1
            continue
        begin, middle, end = starts[index], asks[index], starts[index + 1]
        result = book.apply_diff_ticks(
            first,
            last,
            None if previous is None else previous[index],
            diffs.ticks[begin:middle],
            diffs.quantities[begin:middle],
            diffs.ticks[middle:end],
            diffs.quantities[middle:end],
        )
        if result is not DiffResult.APPLIED:
            continue
        if book.is_crossed():
            crossed += 1
        expected = recorded.get(last)
        if expected is None:
            continue
        compared += 1
        rebuilt = _top(book)
        prices_agree = rebuilt[0] == expected[0] and rebuilt[2] == expected[2]
        price_matched += prices_agree
        if prices_agree and rebuilt[1] == expected[1] and rebuilt[3] == expected[3]:
            matched += 1
        elif first_mismatch is None:
            first_mismatch = last
    return BookReplayReport(
        session=name,
        symbol=session.symbol,
        tick_size=str(session.tick_size),
        diff_events=len(diffs),
        applied=book.applied,
        dropped=book.dropped,
        gaps=book.gaps,
        malformed=malformed,
        crossed=crossed,
        compared=compared,
        matched=matched,
        price_matched=price_matched,
        first_mismatch_update_id=first_mismatch,
    )


def _top(book: OrderBook) -> tuple[float | None, float | None, float | None, float | None]:
    top = book.top_ticks(1)
    bid = book.ticks_to_floats(top.bid_ticks).tolist()
    ask = book.ticks_to_floats(top.ask_ticks).tolist()
    return (
        bid[0] if bid else None,
        float(top.bid_quantities[0]) if bid else None,
        ask[0] if ask else None,
        float(top.ask_quantities[0]) if ask else None,
    )
