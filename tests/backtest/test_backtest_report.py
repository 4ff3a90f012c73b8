"""report.html of a real backtest, opened offline in a real browser (headless Debian Chromium, Playwright)."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from keel.backtest import BacktestEngine
from keel.backtest.engine import BacktestResult
from keel.backtest.report import render_report
from keel.config import load_config
from keel.strategy_engine import BaseStrategy, StrategySignal

REPO = Path(__file__).resolve().parents[2]
SECTIONS = (
    "Equity",
    "Drawdown",
    "Gross exposure",
    "Profit and loss: gross, costs, net",
    "Turnover",
    "Monthly returns",
    "Regimes",
    "Attribution (Brinson-Fachler, linked over the run)",
    "Transaction costs (per parent order)",
    "Trades",
)


@functools.cache
def week() -> BacktestResult:
    """A week of the default pipeline on three bundled symbols, the cost rule off and trend following's
    windows of before they were doubled, so that it trades and each strategy has fills."""
    overrides = {
        "portfolio": {"no_trade_band": False},
        "strategy": {
            "parameters": {
                "trend_following": {"fast_period": 40, "slow_period": 160, "channel_period": 160, "atr_period": 60}
            }
        },
    }
    return BacktestEngine(load_config("backtest", overrides=overrides)).run(
        symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], start="2025-05-05", end="2025-05-12"
    )


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed: run the test command (make test), which installs it")
    return path


def test_the_same_run_writes_the_same_report() -> None:
    # Act
    first, second = render_report(week()), render_report(week())

    # Assert
    assert first == second


def test_report_opens_offline_and_every_section_renders(tmp_path: Path) -> None:
    # Arrange
    folder = week().write(tmp_path / "run")
    requests: list[str] = []

    # Act
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--headless=new", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((folder / "report.html").as_uri())
        headings = page.locator("h2").all_inner_texts()
        charts = page.locator("svg")
        sizes = [charts.nth(i).bounding_box() for i in range(charts.count())]
        polylines = page.locator("polyline").count()
        regime_bars = page.locator("svg[aria-label=regimes] rect").count()
        trade_rows = page.locator("section:has(h2:text-is('Trades')) tbody tr").count()
        strategies = page.locator("section:has(h2:text-is('Profit and loss: gross, costs, net')) td").all_inner_texts()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()

    # Assert
    assert requests == [(folder / "report.html").as_uri()]  # nothing but the file itself
    assert errors == []
    assert tuple(headings) == SECTIONS
    assert polylines == 3 and all(box is not None and box["width"] > 500 for box in sizes)
    assert regime_bars >= 3
    assert trade_rows == len(week().pipeline.recorder.fills) > 0
    assert "trend_following" in strategies


class _AlwaysLong(BaseStrategy):
    def __init__(self) -> None:
        super().__init__("always_long")

    def generate_signal(self, market_data: Mapping[str, Any], current_index: int) -> StrategySignal | None:
        return StrategySignal(market_data["symbol"], "BUY", strength=1.0, confidence=0.5)


class _Raising(BaseStrategy):
    def __init__(self) -> None:
        super().__init__("raising")

    def generate_signal(self, market_data: Mapping[str, Any], current_index: int) -> StrategySignal | None:
        raise ZeroDivisionError("a bug")


@pytest.mark.parametrize(
    ("strategy", "note"),
    [
        (_AlwaysLong, "No order: "),
        (_Raising, "The strategies raised 20 times (raising off for BTCUSDT)."),
    ],
)
def test_a_run_without_orders_says_why_at_the_top(strategy: type[BaseStrategy], note: str) -> None:
    # Arrange
    engine = BacktestEngine(load_config("backtest"))
    result = engine.run(strategy(), symbols=["BTCUSDT"], start="2025-05-05", end="2025-05-06")

    # Act
    html = render_report(result)

    # Assert: among the notes under the headline cards
    assert f'<p class="note">{note}' in html
    assert html.index(f'<p class="note">{note}') < html.index("<h2>")


def test_a_run_too_short_for_the_optimizers_history_says_so_at_the_top() -> None:
    # Arrange
    config = load_config("backtest", overrides={"data": {"bar_interval": "1d", "resample_from": "1m"}})
    result = BacktestEngine(config).run(symbols=["BTCUSDT", "ETHUSDT"])

    # Act
    html = render_report(result)

    # Assert
    note = '<p class="note">No order: '
    assert note in html and "portfolio.min_history_bars (60)" in html
    assert html.index(note) < html.index("<h2>")


def test_a_strategy_the_run_gave_too_few_bars_is_named_at_the_top() -> None:
    # Arrange: two weeks of hourly bars without warm-up, shorter than range_trading's 1441-bar channel
    config = load_config(
        "backtest",
        overrides={"data": {"bar_interval": "1h", "resample_from": "1m"}, "strategy": {"warmup_bars": 0}},
    )
    result = BacktestEngine(config).run(symbols=["BTCUSDT"], start="2025-05-05", end="2025-05-19")

    # Act
    html = render_report(result)

    # Assert
    note = '<p class="note">range_trading never formed a view: it needs 1441 bars of a symbol, the run gave at most 336'
    assert note in html and html.index(note) < html.index("<h2>")
