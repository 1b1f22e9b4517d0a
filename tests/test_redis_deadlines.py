"""What counts as Redis failing: the deadline measures the round trip on the wire, one outcome per round trip,
backpressure before any policy, and the breaker's probe finding Redis back within about a second."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import pytest

from gateway.breaker import CircuitBreaker
from gateway.engines.redis import RedisEngine, create_redis_client
from gateway.exceptions import CircuitOpen, EngineOverloaded, StorageError
from tests.services import RedisServer
from tests.test_engines import PASSTHROUGH, make_script

pytestmark = pytest.mark.redis


def state(breaker: CircuitBreaker) -> str:
    """Read anew each time (mypy would otherwise keep an attribute narrowed across awaits)."""
    return breaker.state


class CountingBreaker(CircuitBreaker):
    def __init__(self, **options: float) -> None:
        super().__init__("redis", **options)  # type: ignore[arg-type]
        self.failures_seen = 0
        self.successes_seen = 0

    def record_failure(self) -> None:
        self.failures_seen += 1
        super().record_failure()

    def record_success(self, elapsed_s: float = 0.0) -> None:
        self.successes_seen += 1
        super().record_success(elapsed_s)


@pytest.fixture
async def engine(redis_server: RedisServer) -> AsyncIterator[tuple[RedisEngine, CountingBreaker]]:
    breaker = CountingBreaker(failures=3, window_s=10, cooldown_s=0.5)
    engine = RedisEngine(
        create_redis_client(redis_server.url, cluster=False), deadline_s=0.010, slow_call_s=0.005, breaker=breaker
    )
    await engine.ping()
    yield engine, breaker
    await engine.aclose()


async def test_a_busy_event_loop_is_not_a_redis_outage(engine: tuple[RedisEngine, CountingBreaker]) -> None:
    redis_engine, breaker = engine

    async def hog() -> None:
        # Holds the loop 30 ms, three deadlines: the replies arrive meanwhile and wait, unread.
        await asyncio.sleep(0)
        time.sleep(0.030)

    for _ in range(5):
        calls = [redis_engine.eval(PASSTHROUGH, [], ["PING"]) for _ in range(200)]
        results = await asyncio.gather(hog(), *calls)
        assert results[1:] == [b"PONG"] * 200
    assert breaker.failures_seen == 0 and breaker.state == "closed"


async def test_a_burst_of_callers_queued_behind_each_other_is_decided(
    engine: tuple[RedisEngine, CountingBreaker],
) -> None:
    redis_engine, breaker = engine
    results = await asyncio.gather(*(redis_engine.eval(PASSTHROUGH, [], ["INCR", "burst"]) for _ in range(5000)))
    assert sorted(results) == list(range(1, 5001))
    assert breaker.failures_seen == 0


async def test_a_late_round_trip_is_one_failure_however_many_callers_it_carried(
    engine: tuple[RedisEngine, CountingBreaker], redis_server: RedisServer
) -> None:
    redis_engine, breaker = engine
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(redis_engine.eval(PASSTHROUGH, [], ["GET", "x"]) for _ in range(100)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert all(isinstance(result, StorageError) for result in results)
    assert breaker.failures_seen == 1  # one pipeline, one failure: not 100
    assert breaker.state == "closed"
    assert elapsed < 0.2


async def test_a_stopped_redis_opens_the_breaker_fast_then_calls_take_microseconds(
    engine: tuple[RedisEngine, CountingBreaker], redis_server: RedisServer
) -> None:
    redis_engine, breaker = engine
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        started = time.perf_counter()
        while breaker.state != "open":
            with pytest.raises(StorageError):
                await redis_engine.eval(PASSTHROUGH, [], ["GET", "x"])
            assert time.perf_counter() - started < 1.0
        fast = time.perf_counter()
        for _ in range(1000):
            with pytest.raises(CircuitOpen):
                await redis_engine.eval(PASSTHROUGH, [], ["GET", "x"])
        per_call = (time.perf_counter() - fast) / 1000
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert per_call < 0.0002
    # Back: the next probe after the 0.5 s cooldown (jittered) closes the breaker.
    deadline = time.monotonic() + 3
    while state(breaker) != "closed" and time.monotonic() < deadline:
        try:
            await redis_engine.eval(PASSTHROUGH, [], ["PING"])
        except StorageError:
            await asyncio.sleep(0.02)
    assert state(breaker) == "closed"
    assert time.monotonic() < deadline


async def test_a_slow_reply_counts_against_the_breaker(redis_server: RedisServer) -> None:
    breaker = CountingBreaker(failures=3, window_s=10, cooldown_s=0.5)
    redis_engine = RedisEngine(
        create_redis_client(redis_server.url, cluster=False), deadline_s=1.0, slow_call_s=0.020, breaker=breaker
    )
    # Busy-waits 50 ms inside Redis: an answer within the deadline, but a slow one.
    slow = make_script(
        "slow",
        "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] "
        "repeat local n = redis.call('TIME') until n[1] * 1e6 + n[2] - s > 50000 return 1",
    )
    assert await redis_engine.eval(slow, [], []) == 1  # answered within the deadline...
    assert breaker.failures_seen == 1  # ...but 50 ms in: slow
    assert await redis_engine.eval(PASSTHROUGH, [], ["PING"]) == b"PONG"
    assert breaker.successes_seen >= 1
    await redis_engine.aclose()


async def test_past_the_queue_bound_calls_are_shed_at_once(redis_server: RedisServer) -> None:
    redis_engine = RedisEngine(create_redis_client(redis_server.url, cluster=False), max_queue=10)
    results = await asyncio.gather(
        *(redis_engine.eval(PASSTHROUGH, [], ["PING"]) for _ in range(100)), return_exceptions=True
    )
    shed = [result for result in results if isinstance(result, EngineOverloaded)]
    assert len(shed) == 90 and results.count(b"PONG") == 10
    await redis_engine.aclose()


async def test_callers_that_gave_up_are_never_sent(redis_server: RedisServer) -> None:
    client = create_redis_client(redis_server.url, cluster=False)
    await client.delete("given-up")
    redis_engine = RedisEngine(client)
    tasks = [asyncio.ensure_future(redis_engine.eval(PASSTHROUGH, [], ["INCR", "given-up"])) for _ in range(50)]
    await asyncio.sleep(0)  # every call queued; the drainer has not sent them yet
    for task in tasks[10:]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert int(await client.get("given-up") or 0) == 10
    await redis_engine.aclose()


async def test_a_cancelled_half_open_probe_frees_its_slot(redis_server: RedisServer) -> None:
    breaker = CountingBreaker(failures=1, window_s=10, cooldown_s=0.05, probe_timeout_s=30)
    redis_engine = RedisEngine(create_redis_client(redis_server.url, cluster=False), breaker=breaker)
    breaker.record_failure()
    await asyncio.sleep(0.1)  # cooldown over: the next call is the probe
    probe = asyncio.ensure_future(redis_engine.eval(PASSTHROUGH, [], ["PING"]))
    await asyncio.sleep(0)
    assert breaker.state == "half_open"
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)
    # Without the release, allow() would stay False for probe_timeout_s (the cooldown, here long after).
    assert await redis_engine.eval(PASSTHROUGH, [], ["PING"]) == b"PONG"
    assert state(breaker) == "closed"
    await redis_engine.aclose()
