"""A real browser on the dashboard of a running paper session (headless Debian Chromium, Playwright)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import FakeClock
from playwright.sync_api import expect, sync_playwright

from conftest import TOKEN, session_config
from keel.integration.paper import PaperSession
from keel.web import SnapshotPublisher, SnapshotService, ThreadedServer, create_app

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "runs" / "screenshots"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed: run the test command (make test), which installs it")
    return path


def start_paper_run(run_dir: Path) -> tuple[subprocess.Popen[str], str]:
    environment = {
        **os.environ,
        "KEEL_API_TOKEN": TOKEN,
        "KEEL_RUN__OUTPUT_DIR": str(run_dir),
        "KEEL_STRATEGY__NAME": "moving_average_cross",
        "KEEL_STRATEGY__FAST_PERIOD": "3",
        "KEEL_STRATEGY__SLOW_PERIOD": "8",
        "KEEL_WEB__DASHBOARD_INTERVAL_SECONDS": "0.2",
    }
    command = [
        sys.executable,
        "-m",
        "keel.cli",
        "run",
        "--mode",
        "paper",
        "--speed",
        "300",
        "--port",
        "0",
        "--symbols",
        "BTCUSDT,ETHUSDT,SOLUSDT",
    ]
    process = subprocess.Popen(
        command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        found = re.search(r"dashboard: (http://\S+/dashboard)", line)
        if found:
            return process, found.group(1)
    process.kill()
    pytest.fail("keel run never printed its dashboard address")


def test_dashboard_shows_live_equity_and_the_emergency_stop_halts_trading(tmp_path: Path) -> None:
    # Arrange
    process, url = start_paper_run(tmp_path)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            expect(page.locator("#connection")).to_have_text("connected", timeout=20_000)
            expect(page.locator("#trading-state")).to_have_text("ACTIVE")
            expect(page.locator("#session")).to_have_text("session 1")
            first_equity = page.locator("#equity").inner_text()

            # Act: wait for the equity to move, then stop with the token
            expect(page.locator("#equity")).not_to_have_text(first_equity, timeout=30_000)
            page.click("#emergency-stop")
            page.fill("#stop-token", TOKEN)
            page.fill("#stop-reason", "browser test")
            page.click("#stop-confirm")

            # Assert
            expect(page.locator("#trading-state")).to_have_text("HALTED", timeout=10_000)
            page.screenshot(path=str(SCREENSHOTS / "dashboard-halted.png"), full_page=True)
            browser.close()
    finally:
        process.send_signal(2)
        process.communicate(timeout=60)
    assert process.returncode == 0
    assert (SCREENSHOTS / "dashboard-halted.png").stat().st_size > 10_000


def test_dashboard_shows_its_data_is_stale_when_the_latest_snapshot_is_too_old(tmp_path: Path) -> None:
    # Arrange: a snapshot 30 s old on the app's clock (a trading loop that stopped publishing)
    session = PaperSession(session_config(tmp_path), tmp_path)
    publisher = SnapshotPublisher(session.orchestrator)
    trading_loop = asyncio.new_event_loop()
    app = create_app(
        SnapshotService(publisher, trading_loop),
        api_token=TOKEN,
        audit=lambda *_: None,
        max_snapshot_age_seconds=10.0,
        clock=FakeClock(publisher.latest.published_monotonic + 30.0),
    )
    server = ThreadedServer(app, "127.0.0.1", 0)
    server.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page()

            # Act
            page.goto(f"http://127.0.0.1:{server.port}/dashboard")

            # Assert
            expect(page.locator("#stale")).to_be_visible(timeout=20_000)
            expect(page.locator("#stale")).to_have_text("stale: data 30 s old")
            browser.close()
    finally:
        server.stop()
        trading_loop.close()
        session.database.dispose()
