"""Rate-limit engines: embedded µs per decision, then the Redis engine against the `limits` library.

    .venv/bin/python -m bench.ratelimit_engine                       # 50 callers, 5 s per row, uvloop
    .venv/bin/python -m bench.ratelimit_engine --callers 100 --duration 10 --repeat 3 --loop asyncio

The baseline is `limits.aio.strategies.SlidingWindowCounterRateLimiter` over `async+redis://` storage with
its default async client (coredis), one window per hit; a second `limits` row uses redis-py, the gateway's own
client. The gateway row decides the same single window through `SlidingWindowLimiter` + `RedisEngine`
(auto-pipelined EVALSHA, the default wire deadline); another adds a day window, checked in the same script call. Every
caller hits its own identity with a limit high enough that every request is allowed, so all rows do the same
work. A local redis-server is started for the run (tests/services.py). The target is ≥ 3× the baseline's
decisions/s. redis-py parses replies in pure Python unless `hiredis` is installed, which the first line says.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.utils import HIREDIS_AVAILABLE

from gateway.config.windows import parse_window
from gateway.engines.embedded import EmbeddedEngine
from gateway.engines.redis import RedisEngine, create_redis_client
from gateway.engines.scripts import load_script
from gateway.exceptions import StorageError
from gateway.ratelimit.limiter import SlidingWindowLimiter
from tests.services import redis_server

TARGET_RATIO = 3.0
BIG = 1_000_000_000


@dataclass
class Row:
    name: str
    decisions: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.decisions / self.seconds

    @property
    def p99_ms(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98] * 1000

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000


def embedded_us(rounds: int, repeat: int) -> tuple[float, float]:
    """Best µs per decision (2 windows): the engine call alone, and the whole `SlidingWindowLimiter.hit`."""
    engine = EmbeddedEngine()
    script = load_script("sliding_window")
    keys = ["rl:{0123456789abcdef}:r:60", "rl:{0123456789abcdef}:r:86400"]
    args = [0, 1, BIG, 60_000, BIG, 86_400_000]
    engine_best = limiter_best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(rounds):
            engine.run(script, keys, args)
        engine_best = min(engine_best, (time.perf_counter() - started) / rounds * 1e6)

    limiter = SlidingWindowLimiter(engine)
    windows = [parse_window(f"{BIG}/1m"), parse_window(f"{BIG}/1d")]

    async def loop() -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            await limiter.hit("alice", "r", windows)
        return (time.perf_counter() - started) / rounds * 1e6

    for _ in range(repeat):
        limiter_best = min(limiter_best, asyncio.run(loop()))
    return engine_best, limiter_best


def breaker_open_us(rounds: int) -> dict[str, float]:
    """µs per `RateLimitService.decide` while the Redis breaker is open, for each failure policy.

    Redis points at a closed port and the breaker is opened first, so no call leaves the process: this is the
    cost a request pays during an outage (the `local` policy runs the embedded script instead).
    """
    from gateway.breaker import CircuitBreaker
    from gateway.config.ratelimit import RateLimitSettings, RuleSettings
    from gateway.identity import Identity
    from gateway.ratelimit.rules import Rule
    from gateway.ratelimit.service import RateLimitService

    results: dict[str, float] = {}
    identity = Identity("alice", "free", "api_key")
    for policy in ("open", "closed", "local"):
        rule = RuleSettings(match="/**", windows=(f"{BIG}/1m", f"{BIG}/1d"), on_failure=policy)
        breaker = CircuitBreaker("bench", failures=1, cooldown_s=3600)
        breaker.record_failure()
        engine = RedisEngine(create_redis_client("redis://127.0.0.1:1/0", cluster=False))
        service = RateLimitService(
            RateLimitSettings(rules=(rule,), log_interval=3600), engine, breaker=breaker, local_engine=EmbeddedEngine()
        )
        compiled = service.rules.rules[0]

        async def loop(service: RateLimitService = service, compiled: Rule = compiled) -> float:
            started = time.perf_counter()
            for _ in range(rounds):
                await service.decide(identity, compiled, 1)
            return (time.perf_counter() - started) / rounds * 1e6

        results[policy] = min(asyncio.run(loop()) for _ in range(3))
    return results


async def drive(name: str, decide: Callable[[str], Awaitable[object]], callers: int, duration: float) -> Row:
    """`callers` tasks deciding back to back for `duration` seconds, after a 1 s warm-up."""
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.perf_counter() + 1.0 + duration

    async def caller(identity: str) -> None:
        nonlocal errors
        while (now := time.perf_counter()) < stop_at:
            try:
                await decide(identity)
            except StorageError:
                errors += 1
                continue
            if measuring:
                latencies.append(time.perf_counter() - now)

    async def flip() -> None:
        nonlocal measuring
        await asyncio.sleep(1.0)
        measuring = True

    await asyncio.gather(flip(), *(caller(f"user{i}") for i in range(callers)))
    return Row(name, len(latencies), errors, duration, latencies)


async def redis_rows(url: str, callers: int, duration: float) -> list[Row]:
    from limits import parse
    from limits.aio.strategies import SlidingWindowCounterRateLimiter
    from limits.storage import storage_from_string

    rows = []
    item = parse(f"{BIG}/minute")
    for implementation in ("coredis", "redispy"):
        storage = storage_from_string(f"async+{url}", implementation=implementation)
        baseline = SlidingWindowCounterRateLimiter(storage)

        async def limits_hit(identity: str, baseline: SlidingWindowCounterRateLimiter = baseline) -> object:
            return await baseline.hit(item, identity)

        rows.append(await drive(f"limits, {implementation} (1 window)", limits_hit, callers, duration))

    engine = RedisEngine(create_redis_client(url, cluster=False))
    limiter = SlidingWindowLimiter(engine)
    one = [parse_window(f"{BIG}/1m")]
    two = [parse_window(f"{BIG}/1m"), parse_window(f"{BIG}/1d")]

    # A rule id per set of windows, as the limiter requires (it keeps each identity's encoded call per rule id).
    async def gateway_one(identity: str) -> object:
        return await limiter.hit(identity, "bench-1", one)

    async def gateway_two(identity: str) -> object:
        return await limiter.hit(identity, "bench-2", two)

    before = engine.round_trips
    rows.append(await drive("gateway RedisEngine (1 window)", gateway_one, callers, duration))
    batching = (rows[-1].decisions + rows[-1].errors) / max(1, engine.round_trips - before)
    rows.append(await drive("gateway RedisEngine (2 windows)", gateway_two, callers, duration))
    await engine.aclose()
    print(f"  (gateway, 1 window: about {batching:.0f} decisions per round trip)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per row (after 1 s warm-up)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the Redis rows; the best of each is kept")
    parser.add_argument("--rounds", type=int, default=50_000, help="decisions per embedded timing run")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    options = parser.parse_args()

    parser_name = "hiredis" if HIREDIS_AVAILABLE else "pure Python (install hiredis for a faster redis-py parser)"
    print(
        f"python {platform.python_version()}, {platform.machine()}, loop {options.loop}, redis-py parser {parser_name}"
    )
    engine_us, limiter_us = embedded_us(options.rounds, 5)
    print(f"embedded engine, 2 windows: {engine_us:.1f} µs/decision (engine.run); {limiter_us:.1f} µs (limiter.hit)")
    open_us = breaker_open_us(options.rounds // 5)
    print(
        "breaker open, µs per decision by policy: "
        + ", ".join(f"{policy} {us:.1f}" for policy, us in open_us.items())
        + f" (healthy embedded decision: {limiter_us:.1f})"
    )

    runner: Callable[[Awaitable[list[Row]]], list[Row]] = asyncio.run  # type: ignore[assignment]
    if options.loop == "uvloop":
        import uvloop

        runner = uvloop.run  # type: ignore[assignment]

    best: dict[str, Row] = {}
    with redis_server() as server:
        for _ in range(options.repeat):
            for row in runner(redis_rows(server.url, options.callers, options.duration)):
                if row.name not in best or row.rate > best[row.name].rate:
                    best[row.name] = row

    rows = list(best.values())
    baseline = rows[0]
    print(f"\n{options.callers} concurrent callers, {options.duration:g} s per row, local redis-server")
    print(f"{'':42} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs baseline':>12}")
    for row in rows:
        if row.errors:
            # A decision that failed was not made: a figure that counts it as work done is no figure.
            print(f"{row.name:42} INVALID: {row.errors} decisions failed ({row.rate:,.0f}/s were made)")
            continue
        ratio = row.rate / baseline.rate
        print(f"{row.name:42} {row.rate:12,.0f} {row.p50_ms:8.2f} {row.p99_ms:8.2f} {row.errors:7d} {ratio:11.2f}×")
    gateway = best["gateway RedisEngine (1 window)"]
    valid = gateway.errors == 0 and baseline.errors == 0
    verdict = "invalid run" if not valid else "meets" if gateway.rate >= TARGET_RATIO * baseline.rate else "misses"
    print(f"\ntarget ≥ {TARGET_RATIO:g}× the baseline (same single window): {verdict} it")


if __name__ == "__main__":
    main()
