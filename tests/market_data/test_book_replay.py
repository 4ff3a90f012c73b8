"""The book rebuilt from the real sessions against the venue's recorded bookTicker, and `keel data replay-book`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from keel.cli import main
from keel.market_data.book_replay import replay_book

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.parametrize(
    ("session", "compared"),
    [
        ("binance_usdm_BTCUSDT_2024-08-08", 629),
        ("binance_usdm_ETHUSDT_2024-08-08", 551),
        ("binance_usdm_BTCUSDT_2023-04-04", 1_565),
    ],
)
def test_the_rebuilt_best_levels_equal_the_book_ticker_at_every_shared_update_id(session: str, compared: int) -> None:
    # Act
    report = replay_book(DATA / "orderbook" / session)

    # Assert
    assert report.compared == compared
    assert report.match_rate == 1.0 and report.matched == report.price_matched == compared
    assert report.gaps == report.crossed == report.malformed == 0
    assert report.applied + report.dropped == report.diff_events
    assert report.first_mismatch_update_id is None


def test_a_wrong_quantity_in_one_diff_row_is_caught(copy_with_edit, set_field) -> None:  # type: ignore[no-untyped-def]
    # Arrange: line 82870 sets the best bid 61802.00 to 0.799 at an update id the bookTicker also has
    source = DATA / "orderbook/binance_usdm_BTCUSDT_2024-08-08"
    diffs = copy_with_edit(
        source / "depth_diff.csv.gz",
        lambda lines: [*lines[:82869], set_field(lines[82869], 8, "0.800"), *lines[82870:]],
    )
    for name in ("snapshot.csv.gz", "bbo.csv.gz"):
        copy_with_edit(source / name, lambda lines: lines)

    # Act
    report = replay_book(diffs.parent)

    # Assert
    assert report.compared == report.price_matched == 629
    assert 0 < report.matched < 629
    assert report.first_mismatch_update_id is not None


def test_the_command_prints_one_json_line_with_the_match_rate() -> None:
    # Act
    result = CliRunner().invoke(main, ["data", "replay-book", str(DATA / "orderbook/binance_usdm_BTCUSDT_2024-08-08")])

    # Assert
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    document = json.loads(lines[0])
    assert (document["compared"], document["match_rate"], document["symbol"]) == (629, 1.0, "BTCUSDT")


def test_the_command_exits_1_naming_a_folder_that_is_no_session(tmp_path: Path) -> None:
    # Act
    result = CliRunner().invoke(main, ["data", "replay-book", str(tmp_path)])

    # Assert
    assert result.exit_code == 1
    assert "must be named" in result.output
