"""Dependencies going away: PostgreSQL stopped, Redis stopped and started again. Distributed stack only."""

from __future__ import annotations

import time
from contextlib import ExitStack

import redis.asyncio
from prometheus_client import REGISTRY

from gateway.shortener.keypool import POOL_KEY
from tests import services
from tests.proxy_fixtures import eventually
from tests.shortener.conftest import Backend, fresh_postgres_database, running

PG_DOWN = "database_deadline: 500ms\ndatabase_cooldown: 1s\nkey_pool: {min: 0}"


async def test_postgres_down_cached_codes_redirect_creates_503_and_the_gateway_stays_up(
    redis_server: services.RedisServer,
) -> None:
    flush = redis.asyncio.Redis.from_url(redis_server.url)
    await flush.flushdb()
    await flush.aclose()
    stack = ExitStack()
    try:
        postgres = stack.enter_context(services.postgres_server())
        settings = Backend("distributed", postgres.url, redis_server.url).settings(PG_DOWN)
        async with running(settings) as first, running(settings) as second:
            code = await first.code("https://example.com/survives")
            # The second replica reads the database once and leaves the link in the shared cache.
            assert (await second.client.get(f"/{code}")).status_code == 301
            stack.close()  # PostgreSQL is gone

            assert (await first.client.get(f"/{code}")).headers["location"] == "https://example.com/survives"
            async with running(settings) as late:  # starts while PostgreSQL is down; its LRU is empty
                follow = await late.client.get(f"/{code}")
                assert (follow.status_code, follow.headers["location"]) == (301, "https://example.com/survives")
                assert (await late.create(long_url="https://example.com/new")).status_code == 503

            started = time.monotonic()
            refused = await first.create(long_url="https://example.com/new")
            assert time.monotonic() - started < 1.0
            assert refused.status_code == 503
            assert refused.json()["error"] == "storage_unavailable"
            assert int(refused.headers["retry-after"]) >= 1
            unknown = await first.client.get("/notcached")
            assert (unknown.status_code, unknown.json()["error"]) == (503, "storage_unavailable")
            assert "retry-after" in unknown.headers
            for _ in range(5):
                await first.create(long_url="https://example.com/new")
            # The database breaker is open: refusals no longer wait for the database at all.
            assert REGISTRY.get_sample_value("gateway_breaker_state", {"breaker": "shortener_database"}) == 2
            assert (await first.client.get("/healthz")).status_code == 200
            assert (await first.client.get("/readyz")).status_code == 503
            assert (await first.client.get(f"/{code}")).status_code == 301
    finally:
        stack.close()


async def test_redis_down_creates_still_work_and_redirects_read_the_database(
    postgres_server: services.PostgresServer,
) -> None:
    url, admin = await fresh_postgres_database(postgres_server)
    try:
        with services.redis_server() as redis_server:
            backend = Backend("distributed", url, redis_server.url)
            settings = backend.settings("local_cache: {size: 0}\nkey_pool: {min: 20, batch: 20}")
            async with running(settings) as gateway:
                # One code per pop, so that no code taken before the outage is left in this process.
                gateway.service.keypool.pop_batch = 1
                client = redis.asyncio.Redis.from_url(redis_server.url)
                assert await eventually(lambda: client.llen(POOL_KEY), timeout=3)
                before = await gateway.code("https://example.com/before")
                redis_server.stop()
                from_database = REGISTRY.get_sample_value("gateway_shortener_codes_total", {"source": "database"})
                during = [await gateway.code(f"https://example.com/during/{n}") for n in range(3)]
                assert len({before, *during}) == 4
                codes_total = REGISTRY.get_sample_value("gateway_shortener_codes_total", {"source": "database"})
                assert codes_total == (from_database or 0) + 3
                for code in (before, *during):
                    assert (await gateway.client.get(f"/{code}")).status_code == 301

                async def counted() -> bool:
                    return await gateway.click_count(during[0]) == 1

                assert await eventually(counted, timeout=5)  # through the database's local queue

                redis_server.start()
                await client.aclose()
                client = redis.asyncio.Redis.from_url(redis_server.url)
                assert await eventually(lambda: client.llen(POOL_KEY), timeout=5)  # the filler is back
                after = await gateway.code("https://example.com/after")
                assert (await gateway.client.get(f"/{after}")).status_code == 301

                async def counted_after() -> bool:
                    return await gateway.click_count(after) == 1

                assert await eventually(counted_after, timeout=5)
                assert await client.exists("gw:shortener:clicks")  # through the stream again
                await client.aclose()
    finally:
        await admin.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")
        await admin.aclose()
