"""The engines: the embedded `redis.call` bridge against real Redis, NOSCRIPT, pipelining, deadlines, Cluster."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from gateway.config.windows import parse_window
from gateway.engines.embedded import SWEEP_EVERY, EmbeddedEngine
from gateway.engines.redis import RedisEngine, create_redis_client
from gateway.engines.scripts import LUA_DIR_ENV, Script, load_script, lua_dir
from gateway.exceptions import StorageError
from gateway.ratelimit.limiter import SlidingWindowLimiter
from tests.services import RedisServer


def make_script(name: str, source: str) -> Script:
    return Script(name=name, source=source, sha1=hashlib.sha1(source.encode()).hexdigest())


PASSTHROUGH = make_script("passthrough", "return redis.call(unpack(ARGV))")


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis_engine(redis_server: RedisServer) -> AsyncIterator[RedisEngine]:
    client = create_redis_client(redis_server.url, cluster=False)
    await client.flushdb()
    engine = RedisEngine(client, deadline_s=2.0)
    yield engine
    await engine.aclose()


# A command sequence whose replies must be identical on the embedded engine and on real Redis.
SEQUENCE: list[tuple[Any, ...]] = [
    ("SET", "s", "v"),
    ("GET", "s"),
    ("SET", "s", "w", "NX"),
    ("SET", "s", "w", "XX"),
    ("GET", "s"),
    ("SET", "fresh", "x", "XX"),
    ("SET", "n", 5),
    ("INCRBY", "n", 3),
    ("DECRBY", "n", 10),
    ("EXISTS", "s", "n", "nope"),
    ("DEL", "s", "nope"),
    ("GET", "s"),
    ("HSET", "h", "a", 1, "b", 2),
    ("HSET", "h", "a", 3),
    ("HGET", "h", "a"),
    ("HMGET", "h", "a", "zz", "b"),
    ("HINCRBY", "h", "b", 5),
    ("HINCRBY", "h2", "new", -4),
    ("HDEL", "h", "a", "zz"),
    ("HGET", "h", "a"),
    ("HGETALL", "h"),
    ("HGETALL", "nope"),
    ("RPUSH", "l", "a", "b", "c"),
    ("LPUSH", "l", "z", "y"),
    ("LRANGE", "l", 0, -1),
    ("LRANGE", "l", 1, 2),
    ("LRANGE", "l", -2, 100),
    ("LRANGE", "l", 7, 9),
    ("LPOP", "l"),
    ("RPOP", "l", 2),
    ("LLEN", "l"),
    ("LPOP", "l", 5),
    ("LLEN", "l"),
    ("EXISTS", "l"),
    ("LPOP", "l"),
    ("PTTL", "n"),
    ("TTL", "n"),
    ("PTTL", "nope"),
    ("EXPIRE", "nope", 10),
    ("SET", "t", "1", "EX", 100),
    ("PEXPIRE", "n", 0),
    ("EXISTS", "n"),
]


@pytest.mark.redis
async def test_embedded_replies_match_real_redis(redis_engine: RedisEngine) -> None:
    embedded = EmbeddedEngine()
    for command in SEQUENCE:
        expected = await redis_engine.eval(PASSTHROUGH, [], command)
        got = await embedded.eval(PASSTHROUGH, [], command)
        if command[0] == "HGETALL":
            expected, got = (
                sorted(zip(expected[::2], expected[1::2], strict=True)),
                sorted(zip(got[::2], got[1::2], strict=True)),
            )
        assert got == expected, command


@pytest.mark.redis
@pytest.mark.parametrize(
    ("setup", "command", "message"),
    [
        pytest.param(("SET", "s", "v"), ("HGET", "s", "f"), "WRONGTYPE", id="wrongtype"),
        pytest.param(("SET", "s", "v"), ("INCRBY", "s", 1), "not an integer", id="not-an-integer"),
        pytest.param(("HSET", "h", "f", "v"), ("HINCRBY", "h", "f", 1), "not an integer", id="hash-not-an-integer"),
    ],
)
async def test_embedded_errors_match_real_redis(
    redis_engine: RedisEngine, setup: tuple[Any, ...], command: tuple[Any, ...], message: str
) -> None:
    embedded = EmbeddedEngine()
    for engine in (redis_engine, embedded):
        await engine.eval(PASSTHROUGH, [], setup)
        with pytest.raises(StorageError, match=message):
            await engine.eval(PASSTHROUGH, [], command)


def test_embedded_expiry_follows_the_injected_clock() -> None:
    clock = FakeClock()
    engine = EmbeddedEngine(clock=clock)
    assert engine.command("SET", "a", "1", "PX", 1500) == b"OK"
    assert engine.command("SET", "b", "1", "EX", 2) == b"OK"
    assert engine.command("HSET", "h", "f", "v") == 1
    assert engine.command("EXPIRE", "h", 1) == 1
    clock.now += 1.0
    assert engine.command("PTTL", "a") == 500
    assert engine.command("TTL", "b") == 1
    assert engine.command("HGET", "h", "f") is None
    assert engine.command("SET", "b", "2", "KEEPTTL") == b"OK"
    clock.now += 0.5
    assert engine.command("GET", "a") is None
    assert engine.command("GET", "b") == b"2"
    clock.now += 0.5
    assert engine.command("EXISTS", "a", "b") == 0
    assert engine.command("SET", "a", "new", "NX") == b"OK"
    assert engine.command("PTTL", "a") == -1
    assert engine.command("TIME") == [b"1700000002", b"0"]


def test_embedded_sweep_drops_expired_keys_nobody_reads() -> None:
    clock = FakeClock()
    engine = EmbeddedEngine(clock=clock)
    for i in range(1000):
        engine.command("SET", f"k{i}", "v", "PX", 10)
    engine.command("SET", "forever", "v")
    assert engine.stored_keys() == 1001
    clock.now += 1
    assert engine.dbsize() == 1
    for _ in range(SWEEP_EVERY * 10):
        engine.command("GET", "forever")
    assert engine.stored_keys() == 1


def test_embedded_script_replies_convert_like_redis_py() -> None:
    engine = EmbeddedEngine()
    cases: list[tuple[str, Any]] = [
        ("return 3.9", 3),
        ("return -3.9", -3),
        ("return 'x'", b"x"),
        ("return true", 1),
        ("return false", None),
        ("return nil", None),
        ("return {1, 'a', false, 2.5, {3, {'b'}}}", [1, b"a", None, 2, [3, [b"b"]]]),
        ("return {}", []),
        ("return redis.status_reply('QUEUED')", b"QUEUED"),
        ("return redis.pcall('NOPE')['err'] ~= nil", 1),
        ("return {KEYS[1], ARGV[1], ARGV[2], ARGV[3], #ARGV}", [b"k", b"7", b"1.5", b"s", 3]),
    ]
    for source, expected in cases:
        assert engine.run(make_script(source, source), ["k"], [7, 1.5, "s"]) == expected, source


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param(
            "return redis.call('ZADD', 'z', 1, 'a')", "does not support the redis command 'ZADD'", id="unknown"
        ),
        pytest.param("return redis.error_reply('boom')", "boom", id="error-reply"),
        pytest.param("x = 1", "create global variable x", id="global"),
        pytest.param("return (", "cannot compile", id="syntax"),
        pytest.param("return os.time()", "os", id="sandbox"),
    ],
)
def test_embedded_script_errors_are_storage_errors(source: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        EmbeddedEngine().run(make_script(source, source), [], [])


async def test_embedded_engine_is_an_engine() -> None:
    engine = EmbeddedEngine()
    await engine.ping()
    assert await engine.eval(PASSTHROUGH, [], ["SET", "a", "b"]) == b"OK"
    engine.flush()
    assert engine.dbsize() == 0
    await engine.aclose()


@pytest.mark.redis
async def test_noscript_after_script_flush_is_reloaded(redis_engine: RedisEngine) -> None:
    limiter = SlidingWindowLimiter(redis_engine)
    window = parse_window("10/1m")
    assert (await limiter.hit("a", "r", [window])).windows[0].remaining == 9
    await redis_engine.client.script_flush()
    assert await redis_engine.client.script_exists(load_script("sliding_window").sha1) == [False]
    decisions = await asyncio.gather(*(limiter.hit("a", "r", [window]) for _ in range(3)))
    assert sorted(d.windows[0].remaining for d in decisions) == [6, 7, 8]
    assert await redis_engine.client.script_exists(load_script("sliding_window").sha1) == [True]


@pytest.mark.redis
async def test_concurrent_calls_share_round_trips(redis_engine: RedisEngine) -> None:
    limiter = SlidingWindowLimiter(redis_engine)
    window = parse_window("1000/1m")
    await limiter.hit("warm-up", "r", [window])
    before = redis_engine.round_trips
    decisions = await asyncio.gather(*(limiter.hit(f"user{i}", "r", [window]) for i in range(100)))
    assert all(d.allowed for d in decisions)
    assert redis_engine.round_trips - before <= 3


@pytest.mark.redis
async def test_a_lone_call_is_sent_at_once(redis_engine: RedisEngine) -> None:
    limiter = SlidingWindowLimiter(redis_engine)
    window = parse_window("1000/1m")
    await limiter.hit("warm-up", "r", [window])
    before = redis_engine.round_trips
    started = time.perf_counter()
    for _ in range(20):
        await limiter.hit("solo", "r", [window])
    elapsed = time.perf_counter() - started
    assert redis_engine.round_trips - before == 20
    assert elapsed < 20 * 0.010


@pytest.mark.redis
async def test_script_errors_become_storage_errors(redis_engine: RedisEngine) -> None:
    broken = make_script("broken", "return redis.call('NOPE')")
    with pytest.raises(StorageError, match="redis:") as caught:
        await redis_engine.eval(broken, [], [])
    assert isinstance(caught.value.__cause__, redis.exceptions.ResponseError)
    assert await redis_engine.eval(PASSTHROUGH, [], ["SET", "still", "works"]) == b"OK"


@pytest.mark.redis
async def test_a_stopped_redis_fails_fast_and_recovers(redis_server: RedisServer) -> None:
    engine = RedisEngine(create_redis_client(redis_server.url, cluster=False), deadline_s=0.05)
    await engine.ping()
    redis_server.stop()
    try:
        for _ in range(3):
            started = time.perf_counter()
            with pytest.raises(StorageError) as caught:
                await engine.eval(PASSTHROUGH, [], ["GET", "x"])
            assert time.perf_counter() - started < 0.5
            assert caught.value.__cause__ is not None
        with pytest.raises(StorageError):
            await engine.ping()
    finally:
        redis_server.start()
    assert await engine.eval(PASSTHROUGH, [], ["SET", "x", "back"]) == b"OK"
    await engine.aclose()


@pytest.mark.redis
async def test_a_frozen_redis_misses_the_deadline(redis_server: RedisServer) -> None:
    engine = RedisEngine(create_redis_client(redis_server.url, cluster=False), deadline_s=0.05)
    await engine.ping()
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(engine.eval(PASSTHROUGH, [], ["GET", "x"]) for _ in range(10)), return_exceptions=True
        )
        assert time.perf_counter() - started < 0.5
        assert all(isinstance(r, StorageError) and "within 50ms" in str(r) for r in results)
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    for _ in range(3):
        try:
            assert await engine.eval(PASSTHROUGH, [], ["SET", "x", "thawed"]) == b"OK"
            break
        except StorageError:  # pragma: no cover - the first call may still land on the stale connection
            await asyncio.sleep(0.05)
    else:  # pragma: no cover
        pytest.fail("redis did not recover after SIGCONT")
    await engine.aclose()


async def wait_until_every_node_is_ok(servers: list[RedisServer]) -> None:
    """The fixture waits for the first node only; the others may still answer CLUSTERDOWN for a moment."""
    for server in servers:
        node = redis.asyncio.Redis.from_url(server.url)
        for _ in range(200):
            info = await node.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
            if "cluster_state:ok" in str(info):
                break
            await asyncio.sleep(0.05)
        await node.aclose()


@pytest.mark.redis
async def test_cluster_decisions(redis_cluster: list[RedisServer]) -> None:
    await wait_until_every_node_is_ok(redis_cluster)
    engine = RedisEngine(create_redis_client(redis_cluster[0].url, cluster=True), deadline_s=2.0)
    limiter = SlidingWindowLimiter(engine)
    windows = [parse_window("10/1m"), parse_window("1000/1d")]
    identities = [f"user{i}" for i in range(30)]
    # Its own rule id: the cluster is the session's, and other tests' keys may still be there.
    rule = f"r{uuid.uuid4().hex[:8]}"
    decisions = await asyncio.gather(*(limiter.hit(who, rule, windows) for who in identities for _ in range(12)))
    assert sum(d.allowed for d in decisions) == 10 * len(identities)
    # The identities spread over the three masters, and each node answered from one pipeline per batch.
    sizes = []
    for server in redis_cluster:
        node = redis.asyncio.Redis.from_url(server.url)
        sizes.append(len([key async for key in node.scan_iter(match=f"rl:*:{rule}:*", count=1000)]))
        await node.script_flush()
        await node.aclose()
    assert sum(sizes) == 2 * len(identities) and all(size > 0 for size in sizes)
    # One pipeline per node per batch, and one more per node after its NOSCRIPT reload.
    assert engine.round_trips <= 2 * len(redis_cluster)
    # After SCRIPT FLUSH on every node the script is reloaded everywhere it is needed.
    again = await asyncio.gather(*(limiter.peek(who, rule, windows) for who in identities))
    assert not any(d.allowed for d in again)
    await engine.aclose()


def test_scripts_are_loaded_once_from_the_lua_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_script("sliding_window") is load_script("sliding_window")
    assert load_script("sliding_window").sha1 == hashlib.sha1(load_script("sliding_window").source.encode()).hexdigest()
    (tmp_path / "answer.lua").write_text("return 42")
    monkeypatch.setenv(LUA_DIR_ENV, str(tmp_path))
    lua_dir.cache_clear()
    load_script.cache_clear()
    try:
        assert lua_dir() == tmp_path
        assert EmbeddedEngine().run(load_script("answer"), [], []) == 42
        with pytest.raises(FileNotFoundError, match="nope.lua"):
            load_script("nope")
    finally:
        monkeypatch.delenv(LUA_DIR_ENV)
        lua_dir.cache_clear()
        load_script.cache_clear()
    assert lua_dir().name == "lua" and (lua_dir() / "sliding_window.lua").exists()


async def test_redis_decisions_go_pre_packed_per_identity_rule_and_cost(redis_engine: RedisEngine) -> None:
    limiter = SlidingWindowLimiter(redis_engine)
    windows = (parse_window("3/1m"),)
    identity = f"packed-{uuid.uuid4().hex}"
    assert [(await limiter.hit(identity, "r1", windows)).allowed for _ in range(2)] == [True, True]
    # A peek (cost 0) is a command of its own: sent as the cost-1 one, it would spend.
    for _ in range(2):
        assert (await limiter.peek(identity, "r1", windows)).windows[0].remaining == 1
    assert [(await limiter.hit(identity, "r1", windows)).allowed for _ in range(2)] == [True, False]
    # One packed command per (identity, rule, cost), reused; another identity's counters are its own.
    assert sorted(cost for (who, _, cost) in limiter._packed if who == identity) == [0, 1]
    assert (await limiter.hit(identity + "-other", "r1", windows)).windows[0].remaining == 2


async def test_the_engine_keeps_its_connection_between_round_trips_and_replaces_a_broken_one(
    redis_engine: RedisEngine,
) -> None:
    limiter = SlidingWindowLimiter(redis_engine)
    windows = (parse_window("100/1m"),)
    identity = f"held-{uuid.uuid4().hex}"
    await limiter.hit(identity, "r1", windows)
    node = redis_engine._node
    assert node is not None
    held = node._held  # type: ignore[attr-defined]
    assert held is not None and held.is_connected
    await limiter.hit(identity, "r1", windows)
    assert node._held is held  # type: ignore[attr-defined]  # the same connection, not the pool's round trip
    await held.disconnect()  # Redis closed it, say: the next round trip takes a working one from the pool
    assert (await limiter.hit(identity, "r1", windows)).windows[0].remaining == 97
    assert node._held is not None and node._held.is_connected  # type: ignore[attr-defined]
