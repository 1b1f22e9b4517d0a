"""A call whose caller gave up (cancelled, or past its own deadline) while it waited in the engine's queue is not
sent to Redis: a request that was already answered must not be debited later.

A first call keeps Redis busy (a script that spins for SPIN_MS), so the next calls wait in the queue for the
following pipeline; their callers give up meanwhile. Redis itself tells whether they ran: the keys they would
have incremented, and the number of pipelines the engine sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from gateway.engines.redis import RedisEngine, create_redis_client
from tests.services import RedisServer
from tests.test_engines import make_script

pytestmark = pytest.mark.redis

SPIN_MS = 300
#: INCR KEYS[1], after keeping Redis busy ARGV[1] milliseconds (0: at once).
SLOW_INCR = make_script(
    "slow_incr",
    """
    local wait_us = tonumber(ARGV[1]) * 1000
    local t = redis.call('TIME')
    local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
    while wait_us > 0 do
        t = redis.call('TIME')
        if tonumber(t[1]) * 1000000 + tonumber(t[2]) - start >= wait_us then break end
    end
    return redis.call('INCR', KEYS[1])
    """,
)


@pytest.fixture
async def engine(redis_server: RedisServer) -> AsyncIterator[RedisEngine]:
    # A deadline well past the spin: the busy round trip is slow on purpose, not a failure.
    redis_engine = RedisEngine(create_redis_client(redis_server.url, cluster=False), deadline_s=5.0)
    await redis_engine.ping()
    # Loaded beforehand, so that no NOSCRIPT retry adds a round trip to the ones counted.
    await redis_engine.client.script_load(SLOW_INCR.source)
    yield redis_engine
    await redis_engine.aclose()


@pytest.fixture
async def direct(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def abandoned_while_queued(
    engine: RedisEngine,
    direct: redis.asyncio.Redis,
    give_up: Callable[[Awaitable[Any]], Awaitable[Any]],
) -> None:
    """A busy call on the wire, a call whose caller gives up behind it, one call after: only the first and last run."""
    prefix = f"abandoned:{uuid.uuid4().hex}"
    busy_key, abandoned_key, later_key = f"{prefix}:busy", f"{prefix}:abandoned", f"{prefix}:later"
    sent_before = engine.round_trips
    busy = asyncio.create_task(engine.eval(SLOW_INCR, [busy_key], [SPIN_MS]))
    await until(lambda: engine.round_trips == sent_before + 1)  # its pipeline is on the wire
    await give_up(engine.eval(SLOW_INCR, [abandoned_key], [0]))
    assert not busy.done(), "the busy call ended before the abandoned one gave up: the test proves nothing"
    assert await busy == 1
    # Same drainer, one pipeline after another: once this call is answered, the abandoned one was sent or skipped.
    assert await engine.eval(SLOW_INCR, [later_key], [0]) == 1
    assert await direct.get(abandoned_key) is None, "the abandoned call ran in Redis"
    assert await direct.mget(busy_key, later_key) == [b"1", b"1"]
    assert engine.round_trips == sent_before + 2, "a pipeline was sent for the abandoned call"


async def test_a_call_cancelled_while_queued_is_not_sent(engine: RedisEngine, direct: redis.asyncio.Redis) -> None:
    async def cancel(call: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(call)
        await until(lambda: engine.queued == 1)  # waits behind the busy pipeline
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await abandoned_while_queued(engine, direct, cancel)


async def test_a_call_past_its_callers_deadline_is_not_sent(engine: RedisEngine, direct: redis.asyncio.Redis) -> None:
    async def with_deadline(call: Awaitable[Any]) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):  # well within the busy call's SPIN_MS
                await call

    await abandoned_while_queued(engine, direct, with_deadline)


async def test_only_the_abandoned_calls_of_a_batch_are_skipped(
    engine: RedisEngine, direct: redis.asyncio.Redis
) -> None:
    prefix = f"abandoned:{uuid.uuid4().hex}"
    busy = asyncio.create_task(engine.eval(SLOW_INCR, [f"{prefix}:busy"], [SPIN_MS]))
    await until(lambda: engine.round_trips == 1 and engine.queued == 0)
    queued = [asyncio.create_task(engine.eval(SLOW_INCR, [f"{prefix}:{n}"], [0])) for n in range(10)]
    await until(lambda: engine.queued == 10)
    for task in queued[::2]:
        task.cancel()
    assert not busy.done(), "the busy call ended before the others gave up: the test proves nothing"
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert await busy == 1
    for n, result in enumerate(results):
        if n % 2 == 0:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == 1
    values = await direct.mget([f"{prefix}:{n}" for n in range(10)])
    assert values == [None if n % 2 == 0 else b"1" for n in range(10)]
