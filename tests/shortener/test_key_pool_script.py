"""lua/key_pool_pop.lua on both engines: the same file, the same replies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from gateway.engines.embedded import EmbeddedEngine
from gateway.engines.redis import RedisEngine, create_redis_client
from gateway.engines.scripts import load_script
from gateway.shortener.keypool import POOL_KEY
from tests.services import RedisServer


class Engine:
    def __init__(self, eval_engine: EmbeddedEngine | RedisEngine, client: redis.asyncio.Redis | None) -> None:
        self.engine = eval_engine
        self.client = client

    async def rpush(self, *codes: str) -> None:
        if self.client is None:
            assert isinstance(self.engine, EmbeddedEngine)
            self.engine.command("RPUSH", POOL_KEY, *codes)
        else:
            await self.client.rpush(POOL_KEY, *codes)

    async def pop(self, count: int = 1) -> Any:
        return await self.engine.eval(load_script("key_pool_pop"), [POOL_KEY], [count])


@pytest.fixture(params=["embedded", "redis"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    if request.param == "embedded":
        yield Engine(EmbeddedEngine(), None)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = create_redis_client(server.url, cluster=False)
    assert isinstance(client, redis.asyncio.Redis)
    await client.delete(POOL_KEY)
    yield Engine(RedisEngine(client, deadline_s=1.0), client)
    await client.delete(POOL_KEY)
    await client.aclose()


async def test_pops_in_order_and_reports_what_is_left(engine: Engine) -> None:
    await engine.rpush("aaaaaaa", "bbbbbbb", "ccccccc", "ddddddd", "eeeeeee")
    assert await engine.pop() == [4, b"aaaaaaa"]
    assert await engine.pop(2) == [2, b"bbbbbbb", b"ccccccc"]
    await engine.rpush("fffffff")
    assert await engine.pop(10) == [0, b"ddddddd", b"eeeeeee", b"fffffff"]


async def test_an_empty_pool_answers_no_code(engine: Engine) -> None:
    assert await engine.pop() == [0]
    assert await engine.pop(5) == [0]
