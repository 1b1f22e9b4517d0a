"""The sliding-window script's math, run on both engines so that they cannot drift."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Sequence
from fractions import Fraction

import pytest
from redis.crc import key_slot

from gateway.config.windows import Window, parse_window, parse_windows
from gateway.engines.base import ScriptEngine
from gateway.engines.embedded import EmbeddedEngine
from gateway.engines.redis import RedisEngine, create_redis_client
from gateway.ratelimit.limiter import SlidingWindowLimiter, window_keys
from tests.services import RedisServer

# Aligned to a day, so minute and day windows all start here.
T0 = 1_700_006_400.0
MINUTE_10 = parse_window("10/1m")


@pytest.fixture(params=["embedded", "embedded-lua51", pytest.param("redis", marks=pytest.mark.redis)])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[ScriptEngine]:
    """Redis, and the embedded engine on both runtimes: LuaJIT (the default) and Lua 5.1, the dialect of Redis."""
    if request.param == "embedded":
        yield EmbeddedEngine()
        return
    if request.param == "embedded-lua51":
        yield EmbeddedEngine(runtime="lua51")
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = create_redis_client(server.url, cluster=False)
    await client.flushdb()
    redis_engine = RedisEngine(client, deadline_s=2.0)
    yield redis_engine
    await redis_engine.aclose()


@pytest.fixture
def limiter(engine: ScriptEngine) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(engine)


async def existing(engine: ScriptEngine, keys: Sequence[str]) -> int:
    if isinstance(engine, EmbeddedEngine):
        return int(engine.command("EXISTS", *keys))
    assert isinstance(engine, RedisEngine)
    return int(await engine.client.exists(*keys))


def reference(limit: int, window_ms: int, times_ms: Sequence[int]) -> list[bool]:
    """An independent model of the sliding-window counter, in exact fractions."""
    counts: dict[int, int] = {}
    verdicts = []
    for t in times_ms:
        index, elapsed = divmod(t, window_ms)
        weighted = Fraction(counts.get(index - 1, 0) * (window_ms - elapsed), window_ms) + counts.get(index, 0)
        allowed = weighted + 1 <= limit
        if allowed:
            counts[index] = counts.get(index, 0) + 1
        verdicts.append(allowed)
    return verdicts


async def test_concurrent_hits_allow_exactly_the_limit(limiter: SlidingWindowLimiter) -> None:
    windows = [parse_window("100/1h")]
    decisions = await asyncio.gather(*(limiter.hit("alice", "r1", windows) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 100
    assert sorted(d.windows[0].remaining for d in decisions if d.allowed) == list(range(100))


async def test_bursts_across_a_window_boundary_follow_the_weighted_count(limiter: SlidingWindowLimiter) -> None:
    window = parse_window("100/1m")
    times_ms = [round((T0 + 59) * 1000) + 5 * i for i in range(100)]
    times_ms += [round((T0 + 61) * 1000) + 5 * i for i in range(100)]
    verdicts = [(await limiter.hit("bob", "r1", [window], now=t / 1000)).allowed for t in times_ms]
    expected = reference(100, 60_000, times_ms)
    assert verdicts == expected
    assert sum(verdicts[:100]) == 100
    # After the boundary the first 100 weigh 100 * (60 - elapsed) / 60: 98.3 at 61s lets one in, and a second
    # once they weigh 98 (61.2s); the burst is over (61.495s) before a third would fit at 62.4s.
    assert sum(verdicts[100:]) == 2


async def test_remaining_reset_and_retry_after(limiter: SlidingWindowLimiter) -> None:
    now = T0 + 15
    remaining = [(await limiter.hit("carol", "r1", [MINUTE_10], now=now)).windows[0].remaining for _ in range(10)]
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    refused = await limiter.hit("carol", "r1", [MINUTE_10], now=now)
    assert not refused.allowed
    state = refused.windows[0]
    assert (state.limit, state.remaining, state.reset_at) == (10, 0, T0 + 60)
    # Next window: the 10 weigh 10 * (1 - s/60) and a request fits once that is <= 9, at s = 6.
    assert refused.retry_after == state.retry_after == pytest.approx(51.0)
    assert not (await limiter.hit("carol", "r1", [MINUTE_10], now=now + 50.999)).allowed
    assert (await limiter.hit("carol", "r1", [MINUTE_10], now=now + 51)).allowed


async def test_retry_after_within_the_current_window(limiter: SlidingWindowLimiter) -> None:
    for _ in range(10):
        assert (await limiter.hit("dave", "r1", [MINUTE_10], now=T0 - 30)).allowed
    # At +15s the previous 10 weigh 7.5: two fit (9.5), the third must wait until they weigh 7 (3s later).
    verdicts = [(await limiter.hit("dave", "r1", [MINUTE_10], now=T0 + 15)).allowed for _ in range(3)]
    assert verdicts == [True, True, False]
    refused = await limiter.hit("dave", "r1", [MINUTE_10], now=T0 + 15)
    assert refused.retry_after == pytest.approx(3.0)
    assert not (await limiter.hit("dave", "r1", [MINUTE_10], now=T0 + 17.999)).allowed
    assert (await limiter.hit("dave", "r1", [MINUTE_10], now=T0 + 18)).allowed


@pytest.mark.parametrize("spec", ["7/10s", "50/1m", "3/1h"])
@pytest.mark.parametrize("offset", [0.0, 0.25, 0.9])
async def test_retry_after_is_exact(limiter: SlidingWindowLimiter, spec: str, offset: float) -> None:
    window = parse_window(spec)
    start = T0 + window.seconds * offset
    while (await limiter.hit("erin", spec, [window], now=start)).allowed:
        pass
    refused = await limiter.peek("erin", spec, [window], now=start)
    assert not refused.allowed and refused.retry_after > 0
    just_before = start + refused.retry_after - 0.001
    assert not (await limiter.peek("erin", spec, [window], now=just_before)).allowed
    assert (await limiter.hit("erin", spec, [window], now=start + refused.retry_after)).allowed


async def test_a_refusal_by_one_window_debits_no_other(limiter: SlidingWindowLimiter) -> None:
    windows = parse_windows("10/1m; 15/1d")
    for _ in range(10):
        assert (await limiter.hit("frank", "r1", windows, now=T0 + 1)).allowed
    assert not (await limiter.hit("frank", "r1", windows, now=T0 + 1)).allowed
    later = T0 + 180
    for _ in range(5):
        assert (await limiter.hit("frank", "r1", windows, now=later)).allowed
    refused = await limiter.hit("frank", "r1", windows, now=later)
    minute, day = refused.windows
    assert not refused.allowed
    assert (minute.remaining, minute.retry_after) == (5, 0)
    assert day.remaining == 0
    assert day.retry_after == pytest.approx(86_400 - 180 + 86_400 / 15)
    assert refused.retry_after == day.retry_after
    assert refused.tightest is day
    after = await limiter.peek("frank", "r1", windows, now=later)
    assert after.windows[0].remaining == 5


async def test_peek_spends_nothing(limiter: SlidingWindowLimiter) -> None:
    for _ in range(20):
        peeked = await limiter.peek("gina", "r1", [MINUTE_10], now=T0)
        assert peeked.allowed and peeked.windows[0].remaining == 10
    for _ in range(10):
        await limiter.hit("gina", "r1", [MINUTE_10], now=T0)
    exhausted = await limiter.peek("gina", "r1", [MINUTE_10], now=T0)
    assert not exhausted.allowed
    assert exhausted.retry_after == pytest.approx(66.0)


async def test_cost(limiter: SlidingWindowLimiter) -> None:
    assert (await limiter.hit("hank", "r1", [MINUTE_10], cost=4, now=T0)).windows[0].remaining == 6
    assert (await limiter.hit("hank", "r1", [MINUTE_10], cost=6, now=T0)).windows[0].remaining == 0
    refused = await limiter.hit("hank", "r1", [MINUTE_10], cost=11, now=T0 + 120)
    assert not refused.allowed and refused.retry_after == math.inf


async def test_rules_and_identities_do_not_share_counters(limiter: SlidingWindowLimiter) -> None:
    for _ in range(10):
        await limiter.hit("ivy", "r1", [MINUTE_10], now=T0)
    assert not (await limiter.hit("ivy", "r1", [MINUTE_10], now=T0)).allowed
    assert (await limiter.hit("ivy", "r2", [MINUTE_10], now=T0)).allowed
    assert (await limiter.hit("jack", "r1", [MINUTE_10], now=T0)).allowed


async def test_server_time_is_used_without_now(limiter: SlidingWindowLimiter) -> None:
    import time

    before = time.time()
    decision = await limiter.hit("kim", "r1", [MINUTE_10])
    reset = decision.windows[0].reset_at
    assert decision.allowed
    assert before < reset <= before + 60.5
    assert math.floor(reset) % 60 in (59, 0)


async def test_the_keys_of_a_decision_share_one_slot(limiter: SlidingWindowLimiter) -> None:
    windows = parse_windows(["5/1s", "100/1m", "1000/1h", "10000/1d"])
    keys = window_keys("lena@example.com", "r1", windows)
    assert len({key_slot(key.encode()) for key in keys}) == 1
    assert all(key.startswith("rl:{") and "lena" not in key for key in keys)
    assert await existing(limiter.engine, keys) == 0
    await limiter.hit("lena@example.com", "r1", windows)
    assert await existing(limiter.engine, keys) == len(keys)


async def test_a_window_of_limit_zero_refuses_everything(limiter: SlidingWindowLimiter) -> None:
    decision = await limiter.hit("max", "r1", [Window(limit=0, seconds=60, name="1m")], now=T0)
    assert not decision.allowed and decision.retry_after == math.inf


@pytest.mark.parametrize(
    ("text", "limit", "seconds", "name"),
    [
        pytest.param("100/1m", 100, 60, "1m", id="short"),
        pytest.param("100/minute", 100, 60, "1m", id="word"),
        pytest.param(" 5 / 30s ", 5, 30, "30s", id="spaces"),
        pytest.param("1000 per hour", 1000, 3600, "1h", id="per"),
        pytest.param("10000/1d", 10000, 86400, "1d", id="day"),
        pytest.param("7/2days", 7, 172800, "2d", id="plural"),
    ],
)
def test_parse_window(text: str, limit: int, seconds: float, name: str) -> None:
    assert parse_window(text) == Window(limit=limit, seconds=seconds, name=name)


@pytest.mark.parametrize("text", ["", "100", "100/", "x/1m", "100/1w", "100/5ms", "-1/1m", "100/0s", "100/1m/2"])
def test_parse_window_names_the_bad_string(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_window(text)


def test_parse_windows() -> None:
    assert [w.name for w in parse_windows("100/1m; 1000/1h,10000/1d")] == ["1m", "1h", "1d"]
    with pytest.raises(ValueError, match="repeat a duration"):
        parse_windows(["100/1m", "1000/60s"])
    with pytest.raises(ValueError, match="at least one"):
        parse_windows(" ; ")


async def test_hit_validates_its_arguments() -> None:
    limiter = SlidingWindowLimiter(EmbeddedEngine())
    with pytest.raises(ValueError, match="at least one window"):
        await limiter.hit("a", "r", [])
    with pytest.raises(ValueError, match="cost"):
        await limiter.hit("a", "r", [MINUTE_10], cost=-1)
