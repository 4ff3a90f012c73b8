"""CacheManager: in-process LRU, real Redis (pipelines, TTLs, compression), and Redis down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
import redis

from keel.config import KeelConfig, load_config
from keel.core.bus import EventBus
from keel.core.clock import NANOS_PER_MINUTE, SimulatedClock
from keel.core.messages import Message, SystemHealth, reset_message_ids
from keel.integration.pipeline import build_feed
from keel.integration.system_monitor import SystemMonitor
from keel.market_data.feeds import use_prepared_data
from keel.optimization.cache import (
    DEGRADED,
    HEALTHY,
    CacheManager,
    CacheSettings,
    PreparedDataCache,
    StatusCache,
    backtest_key,
)
from keel.optimization.space import apply_values

RESULT = {"equity": [10000.0 + i for i in range(2000)], "metrics": {"sharpe_ratio": 1.5}}


def test_the_in_process_cache_hits_after_a_set_and_evicts_the_least_recently_used() -> None:
    # Arrange
    cache = CacheManager(settings=CacheSettings(max_entries=2))
    cache.set("a", {"v": 1})
    cache.set("b", {"v": 2})
    cache.get("a")

    # Act
    cache.set("c", {"v": 3})

    # Assert
    assert cache.get_many(["a", "b", "c"]) == [{"v": 1}, None, {"v": 3}]
    metrics = cache.get_performance_metrics()
    assert (metrics["hits"], metrics["misses"], metrics["backend"]) == (3, 1, "memory")


def test_large_values_are_compressed_and_come_back_equal() -> None:
    # Arrange
    cache = CacheManager(settings=CacheSettings(compress_above_bytes=1024))

    # Act
    cache.set("big", RESULT)

    # Assert
    assert cache.get("big") == RESULT
    assert cache.get_performance_metrics()["compression_ratio"] > 2.0


def test_redis_batches_values_with_their_ttl(redis_url: str) -> None:
    # Arrange
    cache = CacheManager(redis_url, CacheSettings(ttl_seconds=120.0), prefix="test:batch:")
    client = redis.Redis.from_url(redis_url)

    # Act
    cache.set_many({"x": RESULT, "y": {"small": True}}, namespace="backtest")
    found = cache.get_many(["x", "y", "z"], namespace="backtest")

    # Assert
    assert found == [RESULT, {"small": True}, None]
    assert 0 < client.pttl("test:batch:backtest:x") <= 120_000
    assert cache.health == HEALTHY and cache.get_performance_metrics()["hit_rate"] == pytest.approx(2 / 3)


def test_two_caches_on_one_redis_share_results(redis_url: str) -> None:
    # Arrange
    writer = CacheManager(redis_url, prefix="test:shared:")
    reader = CacheManager(redis_url, prefix="test:shared:")

    # Act
    writer.set("k", {"n": 1})

    # Assert
    assert reader.get("k") == {"n": 1}


def test_redis_down_keeps_working_uncached_and_reports_degraded() -> None:
    # Arrange
    cache = CacheManager("redis://127.0.0.1:1/0", timeout=0.2)

    # Act
    cache.set("k", {"n": 1})
    value = cache.get("k")

    # Assert
    assert value is None
    assert cache.health == DEGRADED and cache.get_performance_metrics()["errors"] == 2


def test_a_low_hit_rate_lengthens_ttl_and_grows_the_lru() -> None:
    # Arrange
    cache = CacheManager(settings=CacheSettings(ttl_seconds=100.0, max_entries=4))
    cache.get_many(["a", "b", "c"])

    # Act
    settings = asyncio.run(cache.optimize_cache_configuration())

    # Assert
    assert settings["ttl_seconds"] == 200.0 and settings["max_entries"] == 8


def test_the_backtest_key_changes_with_the_configuration_but_not_with_logging() -> None:
    # Arrange
    base = KeelConfig()

    # Act
    same = backtest_key(apply_values(base, {"logging.level": "DEBUG"}))
    other = backtest_key(apply_values(base, {"risk.max_leverage": 2.0}))

    # Assert
    assert same == backtest_key(base) != other


def test_in_process_entries_expire_after_their_ttl() -> None:
    # Arrange
    now = [0.0]
    cache = CacheManager(settings=CacheSettings(ttl_seconds=10.0), clock=lambda: now[0])
    cache.set("k", {"n": 1})

    # Act
    now[0] = 9.0
    fresh = cache.get("k")
    now[0] = 10.5
    expired = cache.get("k")

    # Assert
    assert fresh == {"n": 1} and expired is None


def replayed(feed: Iterable[Message]) -> list[Message]:
    """The feed's events, numbered from the first message id as a backtest numbers them."""
    reset_message_ids()
    return list(feed)


def one_day_feed_config() -> KeelConfig:
    return apply_values(
        load_config("backtest"),
        {"data.symbols": ("BTCUSDT", "ETHUSDT"), "data.start": "2025-05-10", "data.end": "2025-05-11"},
    )


def test_feeds_built_over_prepared_data_parse_each_file_once_and_replay_the_same_events() -> None:
    # Arrange
    config = one_day_feed_config()
    expected = replayed(build_feed(config))
    prepared = PreparedDataCache(CacheManager())

    # Act
    with use_prepared_data(prepared):
        first = build_feed(config)
        second = build_feed(apply_values(config, {"data.start": "2025-05-10T12:00"}))

    # Assert
    assert replayed(first) == expected
    assert prepared.files_parsed == 3  # two bar files and the funding file
    later = [(e.ts_event, type(e)) for e in expected if e.ts_event > second.summary.first_ns]
    assert [(e.ts_event, type(e)) for e in replayed(second)] == later
    assert [r.rows_kept for r in first.reports] == [r.rows_kept for r in build_feed(config).reports]


def test_a_second_worker_takes_the_prepared_arrays_from_redis_without_parsing(redis_url: str) -> None:
    # Arrange
    config = one_day_feed_config()
    first_worker = PreparedDataCache(CacheManager(redis_url, prefix="test:prepared:"))
    with use_prepared_data(first_worker):
        expected = build_feed(config)
    second_worker = PreparedDataCache(CacheManager(redis_url, prefix="test:prepared:"))

    # Act
    with use_prepared_data(second_worker):
        shared = build_feed(config)

    # Assert
    assert (second_worker.files_parsed, second_worker.files_from_cache) == (0, 3)
    assert replayed(shared) == replayed(expected)
    assert shared.reports == expected.reports


def test_prepared_arrays_are_read_only() -> None:
    # Arrange
    config = one_day_feed_config()
    prepared = PreparedDataCache(CacheManager())
    with use_prepared_data(prepared):
        build_feed(config)
    path = config.data.root / config.data.bars / "BTCUSDT_1m.csv.gz"
    held = prepared.prepared(path, "bars:BTCUSDT:1m:1m", lambda: pytest.fail("parsed again"))

    # Act / Assert
    with pytest.raises(ValueError, match="read-only"):
        held.arrays["close"][0] = 0.0


def test_the_newest_status_offered_is_what_a_reader_on_the_same_redis_finds(redis_url: str) -> None:
    # Arrange
    publisher = StatusCache(CacheManager(redis_url, prefix="test:status:"))
    reader = StatusCache(CacheManager(redis_url, prefix="test:status:"))

    # Act
    publisher.offer({"health": "HEALTHY", "equity": 10_000.0})
    publisher.offer({"health": "HEALTHY", "equity": 10_012.5})
    written = publisher.flush()
    publisher.close()

    # Assert
    assert written and reader.latest() == {"health": "HEALTHY", "equity": 10_012.5}
    reader.close()


def test_redis_down_degrades_system_health_with_the_reason_and_clears_when_it_is_back(redis_server) -> None:
    # Arrange: a system monitor watching the status cache, on a simulated clock
    bus, clock = EventBus(), SimulatedClock(0)
    monitor = SystemMonitor(bus, clock, check_interval_ns=NANOS_PER_MINUTE)
    status = StatusCache(CacheManager(redis_server.url, prefix="test:down:", timeout=0.5))
    monitor.watch_dependency("status cache", status.problem)
    monitor.start()
    bus.drain()
    status.offer({"equity": 1.0})
    status.flush()

    # Act: Redis goes away while the system runs
    redis_server.stop()
    status.offer({"equity": 2.0})
    status.flush()
    clock.advance_to(NANOS_PER_MINUTE)
    bus.drain()
    during = (monitor.health, monitor.reasons())
    redis_server.start()
    status.offer({"equity": 3.0})
    status.flush()
    clock.advance_to(2 * NANOS_PER_MINUTE)
    bus.drain()

    # Assert
    assert during[0] is SystemHealth.DEGRADED
    assert during[1][0].startswith("status cache (redis) unreachable, status not published: ConnectionError")
    assert monitor.health is SystemHealth.HEALTHY
    assert status.latest() == {"equity": 3.0}
    status.close()
