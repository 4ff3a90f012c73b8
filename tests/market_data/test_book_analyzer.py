"""OrderBookAnalyzer on the real session: streaming, compiled and batch agree; no look-ahead."""

from __future__ import annotations

import numpy as np
import pytest

from keel.core.messages import BookUpdated
from keel.market_data.book_analyzer import BookMetrics, OrderBookAnalyzer, book_metrics_batch, books_to_arrays

FIELDS = [name for name in BookMetrics._fields if name not in ("update_id", "ts_event")]


def _as_array(metrics: list[BookMetrics], name: str) -> np.ndarray:
    return np.array([np.nan if getattr(m, name) is None else getattr(m, name) for m in metrics], dtype=float)


def test_streaming_metrics_equal_the_batch_reference_on_every_real_book(btc_books: list[BookUpdated]) -> None:
    # Arrange
    analyzer = OrderBookAnalyzer()

    # Act
    streamed = [analyzer.update(book) for book in btc_books]
    batch = book_metrics_batch(*books_to_arrays(btc_books, 20))

    # Assert
    for name in FIELDS:
        np.testing.assert_allclose(_as_array(streamed, name), batch[name], rtol=1e-12, atol=1e-12, err_msg=name)
    assert sum(m.bid_wall_price is not None for m in streamed) > 100


def test_the_compiled_path_gives_the_same_metrics(btc_books: list[BookUpdated]) -> None:
    # Arrange
    python_path, compiled_path = OrderBookAnalyzer(), OrderBookAnalyzer()

    # Act
    expected = [python_path.update(book) for book in btc_books]
    arrays = [tuple(np.array(side, dtype=float).T) for book in btc_books for side in (book.bids, book.asks)]
    got = [
        compiled_path.update_arrays(book.update_id, book.ts_event, *arrays[2 * i], *arrays[2 * i + 1])
        for i, book in enumerate(btc_books)
    ]

    # Assert
    for name in FIELDS:
        np.testing.assert_allclose(
            _as_array(got, name), _as_array(expected, name), rtol=1e-12, atol=1e-12, err_msg=name
        )


def test_the_real_metrics_are_sensible(btc_books: list[BookUpdated]) -> None:
    # Act
    metrics = [OrderBookAnalyzer().update(book) for book in btc_books]

    # Assert: BTCUSDT trades at a one-tick spread almost always; every value lies in its range
    spreads = np.array([m.spread for m in metrics])
    assert np.mean(np.isclose(spreads, 0.1)) > 0.9
    for m in metrics:
        assert m.bid_wall_price is None or m.bid_wall_price < m.mid_price
        assert -1 <= m.imbalance_5 <= 1 and -1 <= m.book_pressure <= 1
        assert m.mid_price - m.spread / 2 <= m.microprice <= m.mid_price + m.spread / 2
        assert 0 <= m.bid_depth <= m.bid_visible_quantity and 0 <= m.ask_depth <= m.ask_visible_quantity


def test_lookahead_metrics_up_to_a_book_ignore_later_books(btc_books: list[BookUpdated]) -> None:
    # Arrange: the run stops at book 3000, or goes on with every later book perturbed
    cut = 3000
    perturbed = [
        BookUpdated(
            symbol=b.symbol,
            update_id=b.update_id,
            bids=tuple((p, q * 3) for p, q in b.bids),
            asks=b.asks,
            ts_event=b.ts_event,
            ts_init=b.ts_init,
        )
        for b in btc_books[cut:]
    ]

    # Act
    stopped = [OrderBookAnalyzer().update(b) for b in btc_books[:cut]]
    analyzer = OrderBookAnalyzer()
    continued = [analyzer.update(b) for b in [*btc_books[:cut], *perturbed]]

    # Assert
    assert continued[:cut] == stopped
    assert continued[cut:] != [OrderBookAnalyzer().update(b) for b in btc_books[cut:]]


def test_a_crossed_or_one_sided_book_is_refused(btc_books: list[BookUpdated]) -> None:
    book = btc_books[0]
    crossed = BookUpdated(symbol="BTCUSDT", update_id=1, bids=book.asks, asks=book.bids, ts_event=1, ts_init=1)
    one_sided = BookUpdated(symbol="BTCUSDT", update_id=2, bids=book.bids, asks=(), ts_event=1, ts_init=1)

    with pytest.raises(ValueError, match="crossed"):
        OrderBookAnalyzer().update(crossed)
    with pytest.raises(ValueError, match="empty side"):
        OrderBookAnalyzer().update(one_sided)


def test_the_compiled_path_refuses_a_crossed_or_one_sided_book(btc_books: list[BookUpdated]) -> None:
    # Arrange
    bid_prices, bid_quantities = (np.array(column) for column in zip(*btc_books[0].bids, strict=True))
    ask_prices, ask_quantities = (np.array(column) for column in zip(*btc_books[0].asks, strict=True))
    analyzer = OrderBookAnalyzer()

    # Act / Assert
    with pytest.raises(ValueError, match="crossed"):
        analyzer.update_arrays(1, 1, ask_prices, ask_quantities, bid_prices, bid_quantities)
    with pytest.raises(ValueError, match="empty side"):
        analyzer.update_arrays(2, 1, bid_prices, bid_quantities, np.zeros(0), np.zeros(0))
    assert analyzer.last is None
