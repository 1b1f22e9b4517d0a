from __future__ import annotations

import redis.asyncio
from prometheus_client import REGISTRY

from gateway.shortener.codes import CodeGenerator
from gateway.shortener.keypool import POOL_KEY, REDIS_POP_BATCH
from tests.proxy_fixtures import eventually
from tests.shortener.conftest import Backend, Running, running

SECRET = "pool-test-secret"


async def pool(gateway: Running) -> list[str]:
    redis_client = gateway.app.engines.redis
    if redis_client is None:
        codes = gateway.app.engines.embedded.command("LRANGE", POOL_KEY, 0, -1)
    else:
        assert isinstance(redis_client, redis.asyncio.Redis)
        codes = await redis_client.lrange(POOL_KEY, 0, -1)
    return [code.decode() for code in codes]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_pool_holds_permuted_values_of_the_database_sequence(backend: Backend) -> None:
    settings = backend.settings(f"code_secret: {SECRET}\nkey_pool: {{min: 50, batch: 20}}")
    generator = CodeGenerator(SECRET)
    async with running(settings) as gateway:
        assert await eventually(lambda: _at_least(gateway, 50), timeout=3)
        codes = await pool(gateway)
        assert codes == [generator.code(n) for n in range(1, 61)]
        assert metric("gateway_shortener_key_pool_size") == 60
        pooled = metric("gateway_shortener_codes_total", source="pool")
        created = await gateway.code()
        assert created == codes[0]
        # Against Redis one pop takes a few codes for this process, so that most creations need no round trip.
        taken = 1 if backend.redis_url is None else REDIS_POP_BATCH
        assert (await pool(gateway))[0] == codes[taken]
        for n in range(1, 16):
            assert await gateway.code() == codes[n]
        assert metric("gateway_shortener_codes_total", source="pool") == pooled + 16
        # Below the minimum, a pop woke the filler, which appended the next values of the same sequence.
        assert await eventually(lambda: _at_least(gateway, 50), timeout=3)
        counters = [generator.counter(code) for code in await pool(gateway)]
        assert counters == list(range(max(16, taken) + 1, counters[-1] + 1))
        assert counters[-1] % 20 == 0


async def _at_least(gateway: Running, size: int) -> bool:
    return len(await pool(gateway)) >= size


async def test_without_a_pool_codes_come_straight_from_the_sequence(backend: Backend) -> None:
    settings = backend.settings(f"code_secret: {SECRET}\nkey_pool: {{min: 0}}")
    generator = CodeGenerator(SECRET)
    async with running(settings) as gateway:
        from_database = metric("gateway_shortener_codes_total", source="database")
        assert [await gateway.code() for _ in range(3)] == [generator.code(n) for n in (1, 2, 3)]
        assert metric("gateway_shortener_codes_total", source="database") == from_database + 3
        assert await pool(gateway) == []


async def test_a_code_taken_by_an_alias_is_skipped_not_a_500(backend: Backend) -> None:
    settings = backend.settings(f"code_secret: {SECRET}\nkey_pool: {{min: 0}}")
    generator = CodeGenerator(SECRET)
    async with running(settings) as gateway:
        squatted = generator.code(1)
        assert await gateway.code("https://example.com/alias", custom_alias=squatted) == squatted
        collisions = metric("gateway_shortener_code_collisions_total")
        assert await gateway.code("https://example.com/generated") == generator.code(2)
        assert metric("gateway_shortener_code_collisions_total") == collisions + 1
        assert (await gateway.client.get(f"/{squatted}")).headers["location"] == "https://example.com/alias"


async def test_changing_the_secret_changes_future_codes_only(backend: Backend) -> None:
    async with running(backend.settings("code_secret: first-secret\nkey_pool: {min: 0}")) as gateway:
        old = await gateway.code("https://example.com/old")
    async with running(backend.settings("code_secret: other-secret\nkey_pool: {min: 0}")) as gateway:
        new = await gateway.code("https://example.com/new")
        # Made by the new key from a small value of the same sequence (a code from another key would invert to
        # an arbitrary number among 62^7).
        assert CodeGenerator("first-secret").counter(old) == 1
        assert 1 < CodeGenerator("other-secret").counter(new) <= 1 + REDIS_POP_BATCH
        assert (await gateway.client.get(f"/{old}")).headers["location"] == "https://example.com/old"
