"""Fixtures shared across layers: the bundled real data as keel objects, and real servers on loopback."""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import signal
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


class PostgresServer:
    """A throwaway PostgreSQL server on 127.0.0.1 in its own folder, started and stopped on demand."""

    def __init__(self, root: Path) -> None:
        self.binaries = _postgres_bin()
        self.root = root
        self.data, sockets = root / "data", root / "sockets"
        sockets.mkdir()
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            for path in (root, sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
            os.chmod(root.parent, 0o755)
            os.chmod(root.parent.parent, 0o755)
        subprocess.run(
            _as_postgres_user(
                [str(self.binaries / "initdb"), "-D", str(self.data), "-U", "keel", "--auth=trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        self.port = _free_port()
        self._options = f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.running = False
        self.paused = False

    @property
    def url(self) -> str:
        """The URL of the server's ``postgres`` database."""
        return f"postgresql+psycopg://keel@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        subprocess.run(
            _as_postgres_user(
                [
                    str(self.binaries / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    self._options,
                    "-l",
                    str(self.root / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as if it crashed) and wait until it is down."""
        subprocess.run(
            _as_postgres_user([str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )
        self.running = False

    def pause(self) -> None:
        """Freeze every process of the server (SIGSTOP): connections hang instead of failing."""
        self._signal_all(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        self._signal_all(signal.SIGCONT)
        self.paused = False

    def _signal_all(self, signum: signal.Signals) -> None:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        for pid in [postmaster, *_children(postmaster)]:
            os.kill(pid, signum)


def _children(parent: int) -> list[int]:
    """The ids of a process's children (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a throwaway PostgreSQL server on 127.0.0.1 for the session; yield its URL."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _dedicated_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres-controlled"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_server(_dedicated_postgres: PostgresServer) -> Iterator[PostgresServer]:
    """A PostgreSQL server of its own that a test may stop, start, pause and resume (running again after the test)."""
    if not _dedicated_postgres.running:
        _dedicated_postgres.start()
    yield _dedicated_postgres
    if _dedicated_postgres.paused:
        _dedicated_postgres.resume()
    if not _dedicated_postgres.running:
        _dedicated_postgres.start()


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 (no persistence) that a test may stop and start on the same port."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run scripts/ensure-system-packages")
        self.port = _free_port()
        self._command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._command += ["--dir", str(folder)]
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        """The URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._process = subprocess.Popen(self._command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if "Ready to accept connections" in line:
                return
        raise RuntimeError(f"redis-server exited with code {self._process.wait()}")

    def stop(self) -> None:
        """Stop the server and wait until it is gone."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait()
            self._process = None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a throwaway redis-server on 127.0.0.1 for the session (no persistence); yield its URL."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the test's own, running, that the test may stop and start again."""
    server = RedisServer(tmp_path_factory.mktemp("redis-controlled"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
