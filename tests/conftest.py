"""Fixtures shared across layers: the bundled real data as keel objects, and real servers on loopback."""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.core.clock import NANOS_PER_MILLI
from keel.core.instruments import Instrument, load_instruments
from keel.core.messages import BarClosed
from keel.market_data.loaders import load_ohlcv

ROOT = Path(__file__).resolve().parents[1]
BARS_1M = ROOT / "data" / "ohlcv" / "binance_usdm_1m_2025-05"
INSTRUMENTS_FILE = ROOT / "config" / "instruments.yaml"
MINUTE_NS = 60_000 * NANOS_PER_MILLI


class RealData:
    """The bundled real data of ``data/SOURCES.md`` as keel objects, each file read once per session."""

    @staticmethod
    @functools.cache
    def instruments() -> dict[str, Instrument]:
        """The instruments of config/instruments.yaml."""
        return load_instruments(INSTRUMENTS_FILE)

    @staticmethod
    @functools.cache
    def bars(symbol: str, count: int, start: int = 0) -> tuple[BarClosed, ...]:
        """``count`` real 1m bars of ``symbol`` (May 2025) from row ``start``, closed at their close time."""
        frame = load_ohlcv(BARS_1M / f"{symbol}_1m.csv.gz").frame.iloc[start : start + count]
        return tuple(
            BarClosed(
                symbol=symbol,
                interval="1m",
                open_time=int(row.open_time_ms) * NANOS_PER_MILLI,
                open=float(row.open),
                high=float(row.high),
                low=float(row.low),
                close=float(row.close),
                volume=float(row.volume),
                ts_event=int(row.open_time_ms) * NANOS_PER_MILLI + MINUTE_NS,
                ts_init=int(row.open_time_ms) * NANOS_PER_MILLI + MINUTE_NS,
            )
            for row in frame.itertuples(index=False)
        )


@pytest.fixture(scope="session")
def real_data() -> RealData:
    """The bundled real data: ``real_data.bars(symbol, count, start=0)``, ``real_data.instruments()``."""
    return RealData()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _postgres_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    pytest.fail("PostgreSQL is not installed: run the test command (make test), which installs it")


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the 'postgres' user when we are root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a throwaway PostgreSQL server on 127.0.0.1 for the session; yield its URL."""
    binaries = _postgres_bin()
    root = tmp_path_factory.mktemp("postgres")
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
        os.chmod(root.parent, 0o755)
        os.chmod(root.parent.parent, 0o755)
    subprocess.run(
        _as_postgres_user([str(binaries / "initdb"), "-D", str(data), "-U", "keel", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres_user(
            [str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://keel@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
        )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a throwaway redis-server on 127.0.0.1 for the session (no persistence); yield its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; run scripts/ensure-system-packages")
    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen([*command, "--dir", str(folder)], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    for line in server.stdout:
        if "Ready to accept connections" in line:
            break
    else:
        raise RuntimeError(f"redis-server exited with code {server.wait()}")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait()
