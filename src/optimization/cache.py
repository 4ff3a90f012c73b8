"""CacheManager: backtest results, prepared data arrays and the latest system status.

Backtest results are keyed by data fingerprint and configuration hash;
regime refits (:class:`RegimeFitCache`) by a digest of everything a refit
depends on (the window's data, the previous fit, the detector's settings, never
a strategy parameter), so the trials of a study fit each window once;
prepared data (:class:`PreparedDataCache`: bar and funding files parsed and
validated into arrays) by file content, so tuning workers parse each file at
most once between them. With a Redis URL the cache is shared by every tuning
worker and API reader (and survives them); without one an in-process LRU
serves the embedded default. Values are JSON or bytes; above a size
threshold they are zstd-compressed. When Redis is
unreachable the cache stops caching (every get misses, every set is dropped),
the caller keeps working, and :attr:`CacheManager.health` says ``DEGRADED``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import structlog
import zstandard

from keel.config import KeelConfig
from keel.market_data.feeds import PreparedFile
from keel.market_data.loaders import BadRow, Gap, LoadReport
from keel.strategy_engine.regime import HmmParameters, RegimeFit

_log = structlog.get_logger("keel.optimization.cache")

_RAW = b"j"
_COMPRESSED = b"z"
_BYTES = b"b"
_COMPRESSED_BYTES = b"y"
HEALTHY = "HEALTHY"
DEGRADED = "DEGRADED"


@dataclass(slots=True)
class CacheSettings:
    """Tunable behaviour of the cache.

    Parameters
    ----------
    ttl_seconds
        Lifetime of an entry (None: no expiry).
    compress_above_bytes
        Values larger than this are zstd-compressed.
    max_entries
        Capacity of the in-process LRU.
    """

    ttl_seconds: float | None = 7 * 24 * 3600.0
    compress_above_bytes: int = 4096
    max_entries: int = 512


@dataclass(slots=True)
class _Counters:
    hits: int = 0
    misses: int = 0
    sets: int = 0
    errors: int = 0
    bytes_stored: int = 0
    bytes_raw: int = 0
    seconds: float = 0.0
    operations: int = 0
    per_namespace: dict[str, list[int]] = field(default_factory=dict)


class _LocalStore:
    """An in-process LRU with per-entry expiry."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        found: list[bytes | None] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None or (entry[1] is not None and entry[1] <= now):
                    self._entries.pop(key, None)
                    found.append(None)
                    continue
                self._entries.move_to_end(key)
                found.append(entry[0])
        return found

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        expiry = None if ttl is None else self._clock() + ttl
        with self._lock:
            for key, value in items:
                self._entries[key] = (value, expiry)
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class _RedisStore:
    """Redis through pipelines: one round trip per batch."""

    def __init__(self, url: str, timeout: float) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return cast(list[bytes | None], self._client.mget(list(keys))) if keys else []

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        pipeline = self._client.pipeline(transaction=False)
        for key, value in items:
            if ttl is None:
                pipeline.set(key, value)
            else:
                pipeline.set(key, value, px=max(int(ttl * 1000), 1))
        pipeline.execute()

    def clear(self, prefix: str) -> None:
        keys = list(self._client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            self._client.delete(*keys)


class CacheManager:
    """Cache JSON-able values (backtest results) in Redis or an in-process LRU.

    Parameters
    ----------
    redis_url
        ``redis://127.0.0.1:6379/0``; None uses the in-process LRU.
    settings
        TTL, compression threshold and LRU size.
    prefix
        Prefix of every key (one cache per prefix).
    timeout
        Seconds a Redis call may take before the cache counts it as down.
    clock
        Seconds for the in-process entries' expiry (``time.monotonic``).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        settings: CacheSettings | None = None,
        *,
        prefix: str = "keel:cache:",
        timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings if settings is not None else CacheSettings()
        self.prefix = prefix
        self.backend = "redis" if redis_url else "memory"
        self._local = _LocalStore(self.settings.max_entries, clock)
        self._redis = _RedisStore(redis_url, timeout) if redis_url else None
        self._counters = _Counters()
        self._compressor = zstandard.ZstdCompressor(level=3)
        self._decompressor = zstandard.ZstdDecompressor()
        self.health = HEALTHY
        self.last_error: str | None = None

    def get(self, key: str, namespace: str = "default") -> Any | None:
        """Return the cached value of ``key``, or None."""
        return self.get_many([key], namespace)[0]

    def set(self, key: str, value: Any, namespace: str = "default") -> None:
        """Cache ``value`` (JSON-able, or bytes) under ``key``."""
        self.set_many({key: value}, namespace)

    def get_many(self, keys: Sequence[str], namespace: str = "default") -> list[Any | None]:
        """Return the cached values of ``keys`` (None where missing), in one round trip."""
        started = time.perf_counter()
        raw = self._call("get_many", [self._full(key, namespace) for key in keys])
        values = [None if blob is None else self._decode(blob) for blob in (raw or [None] * len(keys))]
        hits = sum(value is not None for value in values)
        self._count(namespace, hits, len(keys) - hits, time.perf_counter() - started)
        return values

    def set_many(self, items: Mapping[str, Any], namespace: str = "default") -> None:
        """Cache every ``key -> value`` of ``items`` in one round trip."""
        started = time.perf_counter()
        encoded = [(self._full(key, namespace), self._encode(value)) for key, value in items.items()]
        self._call("set_many", encoded, self.settings.ttl_seconds)
        self._counters.sets += len(encoded)
        self._counters.seconds += time.perf_counter() - started
        self._counters.operations += 1

    def clear(self) -> None:
        """Remove every entry of this cache."""
        if self._redis is not None:
            self._call("clear", self.prefix)
        else:
            self._local.clear()

    def get_performance_metrics(self) -> dict[str, Any]:
        """Return hit rate, lookups, mean latency (ms), bytes stored and compression ratio."""
        c = self._counters
        lookups = c.hits + c.misses
        return {
            "backend": self.backend,
            "health": self.health,
            "hit_rate": c.hits / lookups if lookups else 0.0,
            "hits": c.hits,
            "misses": c.misses,
            "sets": c.sets,
            "errors": c.errors,
            "mean_latency_ms": 1000.0 * c.seconds / c.operations if c.operations else 0.0,
            "bytes_stored": c.bytes_stored,
            "compression_ratio": c.bytes_raw / c.bytes_stored if c.bytes_stored else 1.0,
            "ttl_seconds": self.settings.ttl_seconds,
            "compress_above_bytes": self.settings.compress_above_bytes,
            "max_entries": self.settings.max_entries,
            "hit_rate_by_namespace": {
                name: hits / (hits + misses) if hits + misses else 0.0
                for name, (hits, misses) in sorted(c.per_namespace.items())
            },
        }

    async def optimize_cache_configuration(self) -> dict[str, Any]:
        """Adjust TTL, LRU size and compression threshold from what was observed; return the new settings.

        A low hit rate with entries evicted or expired means the cache forgets
        too soon: TTL and LRU capacity double (up to 30 days and 65,536 entries).
        When compression saves little (ratio under 1.5) the threshold doubles
        (less CPU); when it saves a lot the threshold halves (down to 512 bytes).
        """
        metrics = self.get_performance_metrics()
        settings = self.settings
        if metrics["hits"] + metrics["misses"] and metrics["hit_rate"] < 0.8:
            if settings.ttl_seconds is not None:
                settings.ttl_seconds = min(settings.ttl_seconds * 2, 30 * 24 * 3600.0)
            settings.max_entries = min(settings.max_entries * 2, 65_536)
            self._local.max_entries = settings.max_entries
        if metrics["bytes_stored"]:
            if metrics["compression_ratio"] < 1.5:
                settings.compress_above_bytes = min(settings.compress_above_bytes * 2, 1 << 20)
            elif metrics["compression_ratio"] > 3.0:
                settings.compress_above_bytes = max(settings.compress_above_bytes // 2, 512)
        _log.info("cache configuration adjusted", hit_rate=metrics["hit_rate"], ttl=settings.ttl_seconds)
        return {
            "ttl_seconds": settings.ttl_seconds,
            "compress_above_bytes": settings.compress_above_bytes,
            "max_entries": settings.max_entries,
        }

    def _full(self, key: str, namespace: str) -> str:
        return f"{self.prefix}{namespace}:{key}"

    def _call(self, method: str, *args: Any) -> Any:
        store: Any = self._redis if self._redis is not None else self._local
        try:
            result = getattr(store, method)(*args)
        except Exception as error:  # any Redis failure: keep working uncached
            self._counters.errors += 1
            if self.health != DEGRADED:
                _log.warning("cache unavailable; continuing uncached", backend=self.backend, error=type(error).__name__)
            self.health = DEGRADED
            self.last_error = f"{type(error).__name__}: {error}"
            return None
        self.health = HEALTHY
        return result

    def _count(self, namespace: str, hits: int, misses: int, seconds: float) -> None:
        c = self._counters
        c.hits += hits
        c.misses += misses
        c.seconds += seconds
        c.operations += 1
        row = c.per_namespace.setdefault(namespace, [0, 0])
        row[0] += hits
        row[1] += misses

    def _encode(self, value: Any) -> bytes:
        binary = isinstance(value, bytes)
        raw = value if binary else json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        self._counters.bytes_raw += len(raw)
        if len(raw) > self.settings.compress_above_bytes:
            blob = (_COMPRESSED_BYTES if binary else _COMPRESSED) + self._compressor.compress(raw)
        else:
            blob = (_BYTES if binary else _RAW) + raw
        self._counters.bytes_stored += len(blob)
        return blob

    def _decode(self, blob: bytes) -> Any:
        tag, body = blob[:1], blob[1:]
        if tag in (_COMPRESSED, _COMPRESSED_BYTES):
            body = self._decompressor.decompress(body)
        return body if tag in (_BYTES, _COMPRESSED_BYTES) else json.loads(body)


class PreparedDataCache:
    """Prepared data files held once per process and shared between processes through a :class:`CacheManager`.

    A :class:`~keel.market_data.feeds.PreparedDataStore`: install it with
    :func:`~keel.market_data.feeds.use_prepared_data` and every feed built
    meanwhile takes its files' arrays from here. A file is looked up in this
    process first, then in the cache (Redis: what another worker prepared),
    and only then parsed; the key is the file's content hash, so an edited
    file is parsed again. The arrays are read-only: every feed shares them.

    Parameters
    ----------
    cache
        Where prepared files are shared (namespace ``prepared``).
    """

    def __init__(self, cache: CacheManager) -> None:
        self.cache = cache
        self._held: dict[str, PreparedFile] = {}
        self._lock = threading.Lock()
        self.files_parsed = 0
        self.files_from_cache = 0

    def prepared(self, path: Path, variant: str, prepare: Callable[[], PreparedFile]) -> PreparedFile:
        """Return the prepared ``variant`` of the file at ``path``, parsing it only if no one has yet."""
        key = f"{file_digest(path)[:32]}:{variant}"
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                return held
            blob = self.cache.get(key, "prepared")
            if blob is not None:
                held = decode_prepared(blob)
                self.files_from_cache += 1
            else:
                held = prepare()
                self.files_parsed += 1
                self.cache.set(key, encode_prepared(held), "prepared")
            for array in held.arrays.values():
                array.setflags(write=False)
            self._held[key] = held
            return held


class RegimeFitCache:
    """Regime refits shared by tuning trials: a :class:`~keel.strategy_engine.regime.RegimeFitStore`.

    Install it with :func:`~keel.strategy_engine.regime.use_regime_fit_store`
    and the detectors built meanwhile take a refit whose inputs were fitted
    before from here instead of fitting again; the result is the same fit, so
    the trial's decisions are too. Fits are held in this process (an LRU of
    ``max_entries``) and, when the cache is Redis, shared with every worker
    (namespace ``regime``). The in-process LRU of a Redis-less cache is left to
    the backtest results: a study makes thousands of fits, which would evict them.

    Parameters
    ----------
    cache
        The shared cache.
    max_entries
        Fits held in this process.
    """

    def __init__(self, cache: CacheManager, max_entries: int = 4096) -> None:
        self.cache = cache
        self.max_entries = max_entries
        self._held: OrderedDict[str, RegimeFit] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> RegimeFit | None:
        """Return the refit stored under ``key``, or None."""
        with self._lock:
            fit = self._held.get(key)
            if fit is not None:
                self._held.move_to_end(key)
                self.hits += 1
                return fit
        value = self.cache.get(key, "regime") if self.cache.backend == "redis" else None
        with self._lock:
            if value is None:
                self.misses += 1
                return None
            fit = decode_regime_fit(value)
            self._hold(key, fit)
            self.hits += 1
            return fit

    def put(self, key: str, fit: RegimeFit) -> None:
        """Store ``fit`` under ``key``."""
        with self._lock:
            self._hold(key, fit)
        if self.cache.backend == "redis":
            self.cache.set(key, encode_regime_fit(fit), "regime")

    def metrics(self) -> dict[str, int]:
        """Return hits, misses and the fits held in this process."""
        return {"hits": self.hits, "misses": self.misses, "held": len(self._held)}

    def _hold(self, key: str, fit: RegimeFit) -> None:
        self._held[key] = fit
        self._held.move_to_end(key)
        while len(self._held) > self.max_entries:
            self._held.popitem(last=False)


def encode_regime_fit(fit: RegimeFit) -> dict[str, Any]:
    """Return a refit as JSON-able values (floats round-trip exactly)."""
    return {
        "hmm": None if fit.hmm is None else [array.tolist() for array in fit.hmm],
        "probabilities": None if fit.probabilities is None else list(fit.probabilities),
        "relabeled": fit.relabeled,
        "hmm_error": fit.hmm_error,
        "garch": None if fit.garch is None else list(fit.garch),
        "garch_variance": fit.garch_variance,
        "garch_error": fit.garch_error,
    }


def decode_regime_fit(value: Mapping[str, Any]) -> RegimeFit:
    """Return the refit :func:`encode_regime_fit` encoded."""
    hmm = value["hmm"]
    garch = value["garch"]
    return RegimeFit(
        None if hmm is None else HmmParameters(*(np.asarray(array, dtype=np.float64) for array in hmm)),
        None if value["probabilities"] is None else tuple(value["probabilities"]),
        bool(value["relabeled"]),
        value["hmm_error"],
        None if garch is None else (float(garch[0]), float(garch[1]), float(garch[2])),
        value["garch_variance"],
        value["garch_error"],
    )


def encode_prepared(prepared: PreparedFile) -> bytes:
    """Return a prepared file as bytes: its arrays as ``.npz`` (no pickles) and its report as JSON."""
    report = json.dumps(dataclasses.asdict(prepared.report)).encode()
    buffer = io.BytesIO()
    save: Callable[..., None] = np.savez  # numpy's stubs take any keyword for its allow_pickle flag
    save(buffer, **prepared.arrays, _report=np.frombuffer(report, dtype=np.uint8))
    return buffer.getvalue()


def decode_prepared(blob: bytes) -> PreparedFile:
    """Read what :func:`encode_prepared` wrote."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files if name != "_report"}
        fields = json.loads(stored["_report"].tobytes())
    report = LoadReport(
        **{
            **fields,
            "bad_rows": tuple(BadRow(**row) for row in fields["bad_rows"]),
            "gaps": tuple(Gap(**gap) for gap in fields["gaps"]),
            "symbols": tuple(fields["symbols"]),
            "empty_optional_fields": tuple((name, count) for name, count in fields["empty_optional_fields"]),
        }
    )
    return PreparedFile(arrays, report)


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """Return the SHA-256 of a file's content, remembered per (path, size, mtime)."""
    status = path.stat()
    marker = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    digest = _FILE_HASHES.get(marker)
    if digest is None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        _FILE_HASHES[marker] = digest
    return digest


def data_fingerprint(config: KeelConfig) -> str:
    """Return a hash of the content of every data file a backtest of ``config`` reads."""
    data = config.data
    folder = data.root / data.bars
    source = data.resample_from or data.bar_interval
    paths: Iterable[Path] = [folder / f"{symbol}_{source}.csv.gz" for symbol in data.symbols]
    if data.funding is not None:
        paths = [*paths, data.root / data.funding]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}:{file_digest(path) if path.is_file() else 'missing'};".encode())
    return digest.hexdigest()


def config_hash(config: KeelConfig) -> str:
    """Return a hash of everything in ``config`` that can change a backtest (secrets, logging, web excluded)."""
    dumped = config.model_dump(
        mode="json", exclude={"secrets", "logging", "web", "monitor", "paper", "live", "performance"}
    )
    dumped["run"].pop("output_dir", None)
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()


def backtest_key(config: KeelConfig) -> str:
    """Return the cache key of a backtest: data fingerprint and configuration hash."""
    return f"{data_fingerprint(config)[:32]}:{config_hash(config)[:32]}"


class StatusCache:
    """The latest system status in a cache, for API readers in other processes, written off the trading loop.

    :meth:`offer` only hands the status to a writer thread (no I/O on the
    caller's loop); the thread writes the newest status it has, so a slow or
    unreachable Redis never delays trading and never builds a backlog. While
    the cache is unreachable, :meth:`problem` says why (for the system
    monitor's health) and readers find the last status written, or nothing
    once its TTL ran out.

    Parameters
    ----------
    cache
        Where the status is written (namespace ``status``, key ``latest``).
    """

    def __init__(self, cache: CacheManager) -> None:
        self.cache = cache
        self._pending: dict[str, Any] | None = None
        self._offered = 0
        self._written = 0
        self._closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._write_newest, name="status-cache", daemon=True)
        self._thread.start()

    def offer(self, status: Mapping[str, Any]) -> None:
        """Hand ``status`` (JSON-able) to the writer thread; replaces one not yet written."""
        with self._condition:
            self._pending = dict(status)
            self._offered += 1
            self._condition.notify_all()

    def flush(self, timeout_seconds: float = 5.0) -> bool:
        """Wait until everything offered so far was written (or failed); return False on timeout."""
        with self._condition:
            target = self._offered
            return self._condition.wait_for(lambda: self._written >= target, timeout_seconds)

    def latest(self) -> Any | None:
        """Return the last status written (what an API reader sees), or None."""
        return self.cache.get("latest", "status")

    def problem(self) -> str | None:
        """Return why the cache cannot be written (None while it can)."""
        if self.cache.health == HEALTHY:
            return None
        return f"status cache ({self.cache.backend}) unreachable, status not published: {self.cache.last_error}"

    def close(self) -> None:
        """Write what is pending, then stop the writer thread."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join()

    def _write_newest(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                status, sequence, self._pending = self._pending, self._offered, None
            self.cache.set("latest", status, "status")
            with self._condition:
                self._written = sequence
                self._condition.notify_all()
