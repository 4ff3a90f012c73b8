"""The dashboard of a paper run shows why the backtest gate holds a strategy, and when a scheduled one fires next."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from test_dashboard_browser import CHROMIUM_ARGS, REPO, chromium


def test_the_strategies_panel_shows_the_gates_reason(tmp_path: Path) -> None:
    # Arrange: trend following must show a Sharpe ratio no strategy has; scheduled DCA runs beside them
    environment = {
        **os.environ,
        "KEEL_STRATEGY__STRATEGIES": '["trend_following", "mean_reversion", "scheduled_dca"]',
        "KEEL_RUN__OUTPUT_DIR": str(tmp_path),
        "KEEL_STRATEGY__GATES": '{"trend_following": {"min_sharpe": 100, "window_days": 2}}',
        "KEEL_WEB__DASHBOARD_INTERVAL_SECONDS": "0.2",
    }
    command = [sys.executable, "-m", "keel.cli", "run", "--mode", "paper", "--speed", "300", "--port", "0",
               "--symbols", "BTCUSDT", "--fresh"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    url = None
    deadline = time.monotonic() + 120
    while url is None and time.monotonic() < deadline:
        found = re.search(r"dashboard: (http://\S+/dashboard)", process.stdout.readline())
        url = found.group(1) if found else None
    try:
        if url is None:
            pytest.fail("keel run never printed its dashboard address")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page()

            # Act
            page.goto(url)
            row = page.locator("#strategy-rows tr", has_text="trend_following")

            # Assert
            expect(row).to_contain_text("held", timeout=20_000)
            expect(row).to_contain_text("backtest gate over the last 2 days failed: Sharpe")
            expect(page.locator("#strategy-rows tr", has_text="mean_reversion")).to_contain_text("passed or none")
            # The replay's clock is May 2025; DCA fires every 4 hours on the epoch's grid.
            dca = page.locator("#strategy-rows tr", has_text="scheduled_dca")
            expect(dca).to_contain_text(re.compile(r"2025-05-\d\dT(00|04|08|12|16|20):00:00Z"))
            browser.close()
    finally:
        process.send_signal(2)
        process.communicate(timeout=60)
    assert process.returncode == 0
