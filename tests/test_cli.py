"""The keel command, run as a user runs it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from keel.cli import main
from keel.config import load_config
from keel.core.errors import OperatorActionRequiredError
from keel.integration.venues import SimulatedVenue
from keel.persistence import Database, Journal
from keel.strategy_engine import TrendFollowingStrategy

REPO = Path(__file__).resolve().parents[1]


def keel(
    *arguments: str, environment: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *arguments],
        cwd=cwd,
        env={**os.environ, **(environment or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_bad_config_file_exits_2_with_one_line_naming_file_and_key(tmp_path: Path) -> None:
    # Arrange
    bad = tmp_path / "bad.yaml"
    bad.write_text("risk:\n  max_leverage: -1\n")

    # Act
    completed = keel("backtest", "--config", str(bad), "--output", str(tmp_path / "out"))

    # Assert
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(bad) in lines[0] and "risk.max_leverage" in lines[0]


def test_an_unknown_key_exits_2(tmp_path: Path) -> None:
    # Arrange
    bad = tmp_path / "typo.yaml"
    bad.write_text("risk:\n  max_levrage: 2\n")

    # Act
    completed = keel("run", "--mode", "paper", "--config", str(bad))

    # Assert
    assert completed.returncode == 2
    assert "risk.max_levrage" in completed.stderr


def test_a_bad_environment_override_exits_2_naming_the_variable(tmp_path: Path) -> None:
    # Act
    completed = keel("backtest", "--output", str(tmp_path), environment={"KEEL_BUS__CAPACITY": "zero"})

    # Assert
    assert completed.returncode == 2
    assert "KEEL_BUS__CAPACITY" in completed.stderr


def test_live_mode_without_confirmation_is_refused() -> None:
    # Act
    completed = keel("run", "--mode", "live")

    # Assert
    assert completed.returncode == 2
    assert "live" in completed.stderr


def test_backtest_command_writes_the_result_files(tmp_path: Path) -> None:
    # Act
    completed = keel(
        "backtest",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--start",
        "2025-05-05",
        "--end",
        "2025-05-06",
        "--output",
        str(tmp_path / "out"),
    )

    # Assert
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.splitlines()[0])
    assert summary["bars_processed"] == 2 * 24 * 60
    for name in ("metrics.json", "equity.csv", "trades.csv", "orders.csv"):
        assert (tmp_path / "out" / name).exists()


def test_data_inspect_reports_bad_rows_and_gaps_of_a_corrupted_copy(tmp_path: Path) -> None:
    # Arrange: the real BTCUSDT 1m file with a negative volume and 30 bars cut out
    real = REPO / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz"
    lines = gzip.decompress(real.read_bytes()).decode().splitlines()
    fields = lines[10].split(",")
    fields[5] = "-1"
    lines[10] = ",".join(fields)
    del lines[100:130]
    corrupted = tmp_path / "BTCUSDT_1m.csv.gz"
    corrupted.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))

    # Act
    completed = keel("data", "inspect", str(corrupted))

    # Assert
    assert completed.returncode == 0, completed.stderr
    assert ":11:" in completed.stdout and "volume" in completed.stdout
    assert "1 bad rows, 2 gaps" in completed.stdout


def test_data_inspect_reports_a_file_it_cannot_read_and_goes_on(tmp_path: Path) -> None:
    # Arrange: a folder with a real bar file and a file of no known format
    real = REPO / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz"
    (tmp_path / "BTCUSDT_1m.csv.gz").write_bytes(real.read_bytes())
    (tmp_path / "AAA_notes.csv.gz").write_bytes(gzip.compress(b"when,what\nmonday,lunch\n"))

    # Act
    completed = keel("data", "inspect", str(tmp_path))

    # Assert
    assert completed.returncode == 1
    assert f"cannot read {(tmp_path / 'AAA_notes.csv.gz').resolve()}:" in completed.stderr
    assert str(tmp_path / "BTCUSDT_1m.csv.gz") in completed.stdout
    assert "1 files" in completed.stdout and "1 unreadable" in completed.stdout


def _bar_data_copy(root: Path, keep_every: int) -> None:
    real = REPO / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz"
    lines = gzip.decompress(real.read_bytes()).decode().splitlines()
    kept = [lines[0], *lines[1:3000:keep_every]]
    bars = root / "ohlcv" / "mine"
    bars.mkdir(parents=True)
    (bars / "BTCUSDT_1m.csv.gz").write_bytes(gzip.compress(("\n".join(kept) + "\n").encode()))
    (root / "funding").mkdir()
    funding = "funding/binance_usdm_funding_2025-03_06.csv.gz"
    (root / funding).write_bytes((REPO / "data" / funding).read_bytes())


def _user_config(folder: Path, root: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "user.yaml"
    config.write_text(
        f"data:\n  root: {root}\n  bars: ohlcv/mine\n  symbols: [BTCUSDT]\n"
        "  start: 2025-05-05T00:00:00Z\n  end: 2025-05-06T00:00:00Z\n"
    )
    return config


def test_five_minute_bars_given_as_one_minute_exit_2_naming_the_file(tmp_path: Path) -> None:
    # Arrange: every fifth 1m bar, written under a 1m name
    _bar_data_copy(tmp_path / "recorded", keep_every=5)
    config = _user_config(tmp_path / "site", "../recorded")

    # Act
    completed = keel("backtest", "--config", str(config), "--output", str(tmp_path / "out"))

    # Assert
    assert completed.returncode == 2
    errors = [line for line in completed.stderr.splitlines() if line.startswith("keel:")]
    assert len(errors) == 1
    assert str(tmp_path / "recorded/ohlcv/mine/BTCUSDT_1m.csv.gz") in errors[0]
    assert "5m apart, not 1m" in errors[0] and "data.bar_interval" in errors[0]


def test_backtest_from_another_folder_reads_the_data_the_config_file_names(tmp_path: Path) -> None:
    # Arrange: a config file naming data relative to itself; run from an unrelated folder
    _bar_data_copy(tmp_path / "site" / "recorded", keep_every=1)
    config = _user_config(tmp_path / "site", "recorded")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # Act
    completed = keel("backtest", "--config", str(config), "--output", str(tmp_path / "out"), cwd=elsewhere)

    # Assert
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "out" / "metrics.json").exists()


def test_a_missing_data_folder_is_named_by_its_absolute_path(tmp_path: Path) -> None:
    config = _user_config(tmp_path / "site", "nowhere")

    completed = keel("backtest", "--config", str(config), "--output", str(tmp_path / "out"), cwd=tmp_path)

    assert completed.returncode == 1
    assert str(tmp_path / "site" / "nowhere" / "ohlcv" / "mine" / "BTCUSDT_1m.csv.gz") in completed.stderr


def test_data_inspect_of_the_bundled_data_finds_no_problem() -> None:
    # Act
    completed = keel("data", "inspect", "data/ohlcv", "data/funding")

    # Assert
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().endswith("0 bad rows, 0 gaps, 0 unreadable")


def test_run_recovers_an_unfinished_paper_session_unless_fresh_is_asked_for(tmp_path: Path) -> None:
    # Arrange: a paper run stopped by its duration long before its data ends
    environment = {"KEEL_RUN__OUTPUT_DIR": str(tmp_path)}
    options = ("run", "--mode", "paper", "--no-web", "--speed", "1000000", "--duration", "1", "--symbols")
    first = keel(*options, "BTCUSDT", environment=environment)

    # Act
    again = keel(*options, "BTCUSDT", environment=environment)
    fresh = keel(*options, "BTCUSDT", "--fresh", environment=environment)
    other_symbol = keel(*options, "ETHUSDT", environment=environment)

    # Assert
    assert first.returncode == again.returncode == fresh.returncode == 0, fresh.stderr
    assert "(fresh paper account)" in first.stdout
    assert "(recovering session 1)" in again.stdout
    assert "(fresh paper account)" in fresh.stdout
    assert other_symbol.returncode == 1
    assert "paper-venue.db does not fit this venue" in other_symbol.stderr
    assert "keel run --fresh" in other_symbol.stderr


def test_a_recovery_on_other_symbols_is_refused_when_the_session_is_planned_before_any_replay(tmp_path: Path) -> None:
    # Arrange: a paper run on BTCUSDT stopped by its duration, its venue stored
    environment = {"KEEL_RUN__OUTPUT_DIR": str(tmp_path)}
    options = ("run", "--mode", "paper", "--no-web", "--speed", "1000000", "--duration", "1", "--symbols", "BTCUSDT")
    assert keel(*options, environment=environment).returncode == 0
    config = load_config(
        "paper", environ={}, overrides={"run": {"output_dir": str(tmp_path)}, "data": {"symbols": ["ETHUSDT"]}}
    )
    journal = Journal(Database(f"sqlite:///{tmp_path / 'keel.db'}"))

    # Act: the first step of a start, before the history replay and the restore
    with pytest.raises(OperatorActionRequiredError) as raised:
        SimulatedVenue(config).plan(journal, resume=True)

    # Assert
    assert "trading ['BTCUSDT'], this one trades ['ETHUSDT']" in str(raised.value)


def test_data_download_writes_keel_data_and_a_config_layer_backtest_runs_as_it_is(tmp_path: Path) -> None:
    # Arrange
    sys.path.insert(0, str(REPO / "tests" / "market_data"))
    from archive_server import real_archive, serve

    folder = tmp_path / "research"

    # Act
    with serve(real_archive()) as url:
        downloaded = keel(
            "data", "download", "--symbols", "BTCUSDT", "--interval", "1m", "--start", "2025-05", "--end", "2025-06",
            "--kinds", "klines,funding,mark_price", "--mark-interval", "8h", "--to", str(folder), "--base-url", url,
        )  # fmt: skip
    backtest = keel(
        "backtest", "--config", str(folder / "data.yaml"), "--start", "2025-05-10", "--end", "2025-05-11",
        "--output", str(tmp_path / "bt"),
        environment={"KEEL_DATA__RESAMPLE_FROM": "1m", "KEEL_DATA__BAR_INTERVAL": "5m"},
    )  # fmt: skip

    # Assert
    assert downloaded.returncode == 0, downloaded.stderr
    summary = json.loads(downloaded.stdout.splitlines()[0])
    assert summary["downloaded"] == 6 and summary["failed"] == 0 and summary["missing"] == 0
    assert backtest.returncode == 0, backtest.stderr
    metrics = json.loads((tmp_path / "bt" / "metrics.json").read_text())
    assert metrics["symbols"] == ["BTCUSDT"] and metrics["bar_interval"] == "5m"
    assert metrics["bars_processed"] == 288 and metrics["data_gaps"] == 0


def test_data_import_converts_archive_files_a_user_already_has(tmp_path: Path) -> None:
    # Arrange
    sys.path.insert(0, str(REPO / "tests" / "market_data"))
    from archive_server import real_archive

    served = real_archive()
    source = tmp_path / "zips"
    for path, body in served.files.items():
        if "/klines/" in path and path.endswith(".zip"):
            (source / Path(path).name).parent.mkdir(parents=True, exist_ok=True)
            (source / Path(path).name).write_bytes(body)

    # Act
    completed = keel("data", "import", str(source), "--to", str(tmp_path / "out"))

    # Assert
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "out" / "ohlcv" / "BTCUSDT_1m.csv.gz").exists()
    assert "bar_interval: 1m" in (tmp_path / "out" / "data.yaml").read_text()


def test_data_import_reports_the_malformed_rows_it_wrote(tmp_path: Path) -> None:
    # Arrange: ten real BTCUSDT minutes in Binance's archive layout, one volume unreadable, one open missing
    with gzip.open(REPO / "data/ohlcv/binance_usdm_1m_2025-05/BTCUSDT_1m.csv.gz", "rt") as recorded:
        rows = [line.strip().split(",") for line in recorded.readlines()[1:11]]
    lines = [f"{t},{o},{h},{lo},{c},{v},{int(t) + 59_999},0,0,0,0,0" for t, o, h, lo, c, v in rows]
    lines[3] = lines[3].replace(f",{rows[3][5]},", ",abc,", 1)
    lines[5] = lines[5].replace(f",{rows[5][1]},", ",,", 1)
    source = tmp_path / "BTCUSDT-1m-2025-05.csv"
    source.write_text("\n".join(lines) + "\n")

    # Act
    completed = keel("data", "import", str(source), "--to", str(tmp_path / "out"))

    # Assert: said, and kept as they were (the loaders count and skip them)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.splitlines()[0])
    assert summary["bad_rows"] == 2
    assert "BTCUSDT_1m.csv.gz: 2 malformed rows, written as they were" in completed.stderr


def test_an_unknown_symbol_exits_2_naming_the_instruments_file_and_the_command(tmp_path: Path) -> None:
    # Act
    completed = keel("backtest", "--symbols", "DOGEUSDT", "--output", str(tmp_path))

    # Assert
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(REPO / "config" / "instruments.yaml") in lines[0] and "keel data instruments" in lines[0]


def test_data_instruments_adds_a_symbol_from_a_saved_exchange_info(tmp_path: Path) -> None:
    # Arrange
    instruments = tmp_path / "instruments.yaml"
    instruments.write_text((REPO / "config" / "instruments.yaml").read_text())
    layer = tmp_path / "layer.yaml"
    layer.write_text(f"exchange:\n  instruments: {instruments}\n")
    fixture = REPO / "tests" / "market_data" / "fixtures" / "exchange_info.json"

    # Act
    completed = keel("data", "instruments", "--from", str(fixture), "--symbols", "DOGEUSDT", "--config", str(layer))

    # Assert
    assert completed.returncode == 0, completed.stderr
    from keel.core.instruments import load_instruments

    loaded = load_instruments(instruments)
    assert "DOGEUSDT" in loaded and "BTCUSDT" in loaded


def test_backup_create_list_verify_restore_and_a_corrupted_backup_refused(tmp_path: Path) -> None:
    # Arrange: an account with a stopped paper session
    environment = {"KEEL_RUN__OUTPUT_DIR": str(tmp_path)}
    keel("run", "--mode", "paper", "--no-web", "--speed", "1000000", "--duration", "1", environment=environment)

    # Act
    none_yet = keel("backup", "list", environment=environment)
    created = keel("backup", "create", "--keep", "1", environment=environment)
    listed = keel("backup", "list", environment=environment)
    name = listed.stdout.split()[0]
    verified = keel("backup", "verify", name, environment=environment)
    restored = keel("backup", "restore", name, environment=environment)
    (tmp_path / "backups" / name / "config.json").write_text("{}")
    refused = keel("backup", "restore", name, environment=environment)

    # Assert
    assert created.returncode == listed.returncode == verified.returncode == restored.returncode == 0, created.stderr
    assert none_yet.returncode == 0 and none_yet.stdout == ""
    assert none_yet.stderr.strip() == f"no backups in {tmp_path / 'backups'}"
    assert len(listed.stdout.strip().splitlines()) == 1
    assert refused.returncode == 1
    assert "config.json does not match its SHA-256" in refused.stderr


def test_bars_of_another_interval_than_configured_exit_2_naming_the_file(tmp_path: Path) -> None:
    # Arrange: the real 1h BTCUSDT file presented as 1m bars
    folder = tmp_path / "bars"
    folder.mkdir()
    real = REPO / "data/ohlcv/binance_usdm_1h_2025-03/BTCUSDT_1h.csv.gz"
    (folder / "BTCUSDT_1m.csv.gz").write_bytes(real.read_bytes())
    layer = tmp_path / "layer.yaml"
    layer.write_text(f"data:\n  root: {tmp_path}\n  bars: bars\n  funding: none\n")

    # Act
    completed = keel("backtest", "--config", str(layer), "--symbols", "BTCUSDT", "--output", str(tmp_path / "out"))

    # Assert
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(folder / "BTCUSDT_1m.csv.gz") in lines[0] and "1h apart, not 1m" in lines[0]


def test_data_instruments_downloads_exchange_info_from_the_configured_binance(tmp_path: Path) -> None:
    # Arrange: the saved exchangeInfo answer served on 127.0.0.1 as Binance serves it
    import http.server
    import threading

    body = (REPO / "tests" / "market_data" / "fixtures" / "exchange_info.json").read_bytes()

    class ExchangeInfo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/fapi/v1/exchangeInfo" else 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if status == 200 else 0))
            self.end_headers()
            if status == 200:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ExchangeInfo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    instruments = tmp_path / "instruments.yaml"
    instruments.write_text((REPO / "config" / "instruments.yaml").read_text())
    layer = tmp_path / "layer.yaml"
    layer.write_text(f"exchange:\n  instruments: {instruments}\n")

    # Act
    try:
        completed = keel(
            "data", "instruments", "--download", "--symbols", "DOGEUSDT", "--config", str(layer),
            environment={"KEEL_BINANCE__REST_URL": f"http://127.0.0.1:{server.server_address[1]}"},
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()

    # Assert
    assert completed.returncode == 0, completed.stderr
    from keel.core.instruments import load_instruments

    assert "DOGEUSDT" in load_instruments(instruments)


def test_a_paper_run_publishes_its_status_to_the_status_cache_for_readers_elsewhere(
    tmp_path: Path, redis_url: str
) -> None:
    # Arrange
    from keel.optimization.cache import CacheManager, StatusCache

    environment = {"KEEL_RUN__OUTPUT_DIR": str(tmp_path), "KEEL_WEB__STATUS_CACHE_URL": redis_url}

    # Act
    completed = keel(
        "run", "--mode", "paper", "--no-web", "--speed", "1000000", "--duration", "2", "--symbols", "BTCUSDT",
        environment=environment,
    )  # fmt: skip

    # Assert: the last status readers get is the stopped run's final one
    assert completed.returncode == 0, completed.stderr
    reader = StatusCache(CacheManager(redis_url))
    published = reader.latest()
    reader.close()
    assert published["mode"] == "paper" and published["health"] in ("HEALTHY", "DEGRADED")
    assert published["running"] is False and published["session"]["number"] == 1
    assert set(published["components"].values()) == {"STOPPED"}


def test_a_paper_run_without_the_web_app_notifies_fills_and_answers_status_on_telegram(tmp_path: Path) -> None:
    # Arrange: a fake Bot API on 127.0.0.1 holding a /status from the allowed chat and one from a foreign chat;
    # scheduled DCA buys within the first simulated hours
    import asyncio

    from kit.fake_bot_api import ALLOWED, FOREIGN, TOKEN, fake_api, message

    async def scenario() -> tuple[list[dict[str, object]], str, str, int]:
        async with fake_api() as (api, url):
            api.updates = [message(1, ALLOWED, "/status"), message(2, FOREIGN, "/status")]
            layer = tmp_path / "telegram.yaml"
            layer.write_text(
                f"telegram:\n  enabled: true\n  chat_ids: [{ALLOWED}]\n  base_url: {url}\n  min_interval_seconds: 0.2\n"
                "strategy:\n  strategies: [scheduled_dca]\n"
            )
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "keel.cli", "run", "--mode", "paper", "--no-web", "--speed", "1000000",
                "--duration", "10", "--symbols", "BTCUSDT,ETHUSDT", "--config", str(layer),
                cwd=REPO, env={**os.environ, "KEEL_RUN__OUTPUT_DIR": str(tmp_path), "KEEL_TELEGRAM_TOKEN": TOKEN},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=300)
            return api.sent, stdout.decode(), stderr.decode(), process.returncode or 0

    # Act
    sent, stdout, stderr, returncode = asyncio.run(scenario())

    # Assert
    assert returncode == 0, stderr
    assert f"telegram: notifying and obeying chats {ALLOWED}" in stdout
    assert {m["chat"] for m in sent} == {ALLOWED}  # the foreign chat's /status got no answer
    texts = [str(m["text"]) for m in sent]
    assert any(t.startswith("health ") and ", equity " in t for t in texts)
    fills = [line for t in texts for line in t.splitlines() if line.startswith("fill ")]
    assert fills and all(line.split()[1] in ("BTCUSDT", "ETHUSDT") for line in fills), texts
    assert TOKEN not in stdout and TOKEN not in stderr


def test_a_backtest_whose_strategy_raised_says_so_and_where_it_was_switched_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: a bug in the trend-following strategy, run in this process (the fit worker would not have it)
    def step(*_: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(TrendFollowingStrategy, "step", step)
    environment = {"KEEL_STRATEGY__STRATEGIES": "trend_following", "KEEL_RUN__REGIME_FIT_WORKER": "false"}
    arguments = ["backtest", "--symbols", "BTCUSDT", "--start", "2025-05-05", "--end", "2025-05-06"]

    # Act
    completed = CliRunner().invoke(main, [*arguments, "--output", str(tmp_path / "out")], env=environment)

    # Assert: ten errors in a row switch it off, in the warm-up on the day before and again in the run
    assert completed.exit_code == 0, completed.output
    assert "the strategies raised 20 times (trend_following off for BTCUSDT)" in completed.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["strategies_disabled"] == {"trend_following": ["BTCUSDT"]}


def test_a_bad_command_line_value_exits_2_naming_the_key_not_every_option(tmp_path: Path) -> None:
    # Act
    completed = keel(
        "backtest", "--symbols", "BTCUSDT", "--start", "2025-05-10", "--end", "2025-05-09", "--output", str(tmp_path)
    )

    # Assert: one line, the key at fault and why, no validator internals
    assert completed.returncode == 2
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith("keel: configuration error: command line: data.end: end (2025-05-09")
    assert "input_value" not in line and "data.symbols" not in line


def test_a_fresh_run_starts_from_the_configured_risk_limits_not_the_last_sessions_operator_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: sessions run in this process through the CLI; the first one's operator lowers max_leverage,
    # as PUT /api/v1/risk/limits does
    from keel.config import load_config
    from keel.integration import paper

    configured = load_config().risk.max_leverage
    started_with: list[float] = []
    operator_limits: dict[str, float] = {}

    class OperatedSession(paper.PaperSession):
        def __init__(self, *arguments: Any, **options: Any) -> None:
            super().__init__(*arguments, **options)
            started_with.append(self.pipeline.risk.limits.max_leverage)
            if operator_limits:
                self.orchestrator.set_risk_limits(operator_limits)

    monkeypatch.setattr(paper, "PaperSession", OperatedSession)
    environment = {"KEEL_RUN__OUTPUT_DIR": str(tmp_path), "KEEL_RUN__REGIME_FIT_WORKER": "false"}
    options = ["run", "--mode", "paper", "--no-web", "--speed", "1000000", "--duration", "1", "--symbols", "BTCUSDT"]

    def run(*extra: str) -> None:
        completed = CliRunner().invoke(main, [*options, *extra], env=environment)
        assert completed.exit_code == 0, completed.output

    operator_limits["max_leverage"] = configured / 2
    run()
    operator_limits.clear()

    # Act
    run()  # recovers the session: the operator's limit is the session's
    run("--fresh")
    run()  # recovers the fresh session

    # Assert
    assert started_with == [configured, configured / 2, configured, configured]
