"""CacheManager: in-process LRU, real Redis (pipelines, TTLs, compression), and Redis down."""

from __future__ import annotations

import asyncio

import pytest
import redis

from keel.config import KeelConfig
from keel.optimization.cache import DEGRADED, HEALTHY, CacheManager, CacheSettings, backtest_key
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
