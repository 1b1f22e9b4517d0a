from __future__ import annotations

import asyncio
import time

import redis.asyncio
from prometheus_client import REGISTRY

from gateway.shortener.cache import KEY_PREFIX, MISS, LinkCache, LocalCache, Target
from gateway.shortener.store import Link
from tests.proxy_fixtures import eventually
from tests.shortener.conftest import ROOT, Backend, Running, running


def hits(layer: str) -> float:
    return REGISTRY.get_sample_value("gateway_shortener_cache_hits_total", {"layer": layer}) or 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_lru_evicts_the_least_recently_used_and_expires_entries() -> None:
    clock = Clock()
    cache = LocalCache(2, ttl_s=60, negative_ttl_s=5, clock=clock)
    cache.put("aaa", Target("https://a.example/"))
    cache.put("bbb", Target("https://b.example/"))
    assert cache.get("aaa") == Target("https://a.example/")  # now the most recent
    cache.put("ccc", None)
    assert cache.get("bbb") is MISS
    assert cache.get("ccc") is None
    clock.now += 6
    assert cache.get("ccc") is MISS  # unknown codes are remembered briefly
    assert cache.get("aaa") == Target("https://a.example/")
    clock.now += 60
    assert cache.get("aaa") is MISS
    assert len(cache) == 0
    assert Target.decode(Target("https://x/\ty", 12.5, 3).encode()) == Target("https://x/\ty", 12.5, 3)


async def test_a_lookup_that_raced_a_forget_answers_but_is_not_cached() -> None:
    cache = LinkCache(LocalCache(10, ttl_s=60, negative_ttl_s=5), None)
    reading = asyncio.Event()
    release = asyncio.Event()
    loads = 0

    async def load(code: str) -> Target | None:
        nonlocal loads
        loads += 1
        reading.set()
        await release.wait()
        return Target("https://stale.example/")

    lookup = asyncio.ensure_future(cache.lookup("abc", load))
    await reading.wait()
    await cache.forget("abc")  # e.g. a delete committed while the database read was in flight
    release.set()
    assert await lookup == Target("https://stale.example/")
    assert cache.local.get("abc") is MISS
    await cache.lookup("abc", load)
    assert loads == 2


async def test_layers_in_order_lru_then_database_and_negative(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        await gateway.service.store.insert(Link("direct1", "https://example.com/d", False, None, time.time()))
        before = {layer: hits(layer) for layer in ("lru", "redis", "database", "negative")}
        assert (await gateway.client.get("/direct1")).status_code == 301
        assert (await gateway.client.get("/direct1")).status_code == 301
        assert (await gateway.client.get("/unknown1")).status_code == 404
        assert (await gateway.client.get("/unknown1")).status_code == 404
        after = {layer: hits(layer) - before[layer] for layer in before}
        assert after == {"lru": 1, "redis": 0, "database": 2, "negative": 1}


async def test_the_shared_redis_layer_serves_what_the_database_answered(backend: Backend) -> None:
    if backend.redis_url is None:
        return  # the embedded engine has no shared cache
    async with running(backend.settings("local_cache: {size: 0}")) as gateway:
        await gateway.service.store.insert(Link("shared1", "https://example.com/s", False, None, time.time()))
        client = redis.asyncio.Redis.from_url(backend.redis_url)
        before = {layer: hits(layer) for layer in ("lru", "redis", "database", "negative")}
        assert (await gateway.client.get("/shared1")).status_code == 301
        assert (await gateway.client.get("/nothere1")).status_code == 404

        async def written() -> bool:
            return bool(await client.exists(KEY_PREFIX + "shared1", KEY_PREFIX + "nothere1") == 2)

        assert await eventually(written, timeout=2)
        assert 3600 < await client.ttl(KEY_PREFIX + "shared1") <= 86_400
        assert 0 < await client.ttl(KEY_PREFIX + "nothere1") <= 30
        assert (await gateway.client.get("/shared1")).headers["location"] == "https://example.com/s"
        assert (await gateway.client.get("/nothere1")).status_code == 404
        after = {layer: hits(layer) - before[layer] for layer in before}
        assert after == {"lru": 0, "redis": 1, "database": 2, "negative": 1}
        await client.aclose()


async def test_creating_an_alias_clears_a_cached_unknown(backend: Backend) -> None:
    async with running(backend.settings()) as first, running(backend.settings()) as second:
        replicas = [first, second] if backend.redis_url else [first]
        for replica in replicas:
            await eventually(lambda r=replica: _subscribed(r), timeout=2)
            assert (await replica.client.get("/fresh-alias")).status_code == 404
            assert (await replica.client.get("/fresh-alias")).status_code == 404  # now from the negative cache
        await first.code("https://example.com/fresh", custom_alias="fresh-alias")
        for replica in replicas:

            async def redirects(r: Running = replica) -> bool:
                return (await r.client.get("/fresh-alias")).status_code == 301

            assert await eventually(redirects, timeout=2)


async def test_delete_clears_every_layer_on_every_replica(backend: Backend) -> None:
    if backend.redis_url is None:
        return  # one process: covered by test_api's deletes
    async with running(backend.settings()) as first, running(backend.settings()) as second:
        await eventually(lambda: _subscribed(second), timeout=2)
        code = await first.code("https://example.com/doomed")
        for replica in (first, second, second):
            assert (await replica.client.get(f"/{code}")).status_code == 301
        client = redis.asyncio.Redis.from_url(backend.redis_url)
        assert await eventually(lambda: client.exists(KEY_PREFIX + code), timeout=2)
        deleted = await first.client.delete(f"/api/v1/urls/{code}", headers={"X-API-Key": ROOT})
        assert deleted.status_code == 204

        async def gone() -> bool:
            return (await second.client.get(f"/{code}")).status_code == 404

        assert await eventually(gone, timeout=1)
        cached = await client.get(KEY_PREFIX + code)
        assert cached in (None, b"-")
        await client.aclose()


async def _subscribed(replica: Running) -> bool:
    cache = replica.service.cache
    return cache.shared is None or cache.subscribed.is_set()
