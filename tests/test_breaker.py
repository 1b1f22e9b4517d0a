from __future__ import annotations

import asyncio
import time

import pytest

from gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, State
from gateway.config.ratelimit import RateLimitSettings, RuleSettings
from gateway.engines.redis import RedisEngine, create_redis_client
from gateway.exceptions import CircuitOpen, EngineOverloaded
from gateway.identity import Identity
from gateway.ratelimit.service import RateLimitService
from tests.test_engines import PASSTHROUGH


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, changes: list[tuple[str, State, State]] | None = None, **options: float) -> CircuitBreaker:
    def record(name: str, old: State, new: State) -> None:
        if changes is not None:
            changes.append((name, old, new))

    settings: dict[str, float] = {"failures": 3, "window_s": 10.0, "cooldown_s": 30.0, "jitter": 0.0}
    settings.update(options)
    return CircuitBreaker(
        "redis",
        failures=int(settings.pop("failures")),
        on_change=record,
        clock=clock,
        rng=lambda: 1.0,
        **settings,
    )


def test_opens_after_failures_within_the_window() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.record_failure()
    clock.now += 6
    breaker.record_failure()
    clock.now += 6  # the first failure has left the 10s window
    breaker.record_failure()
    assert breaker.state == CLOSED and breaker.allow()
    clock.now += 1
    breaker.record_failure()
    assert breaker.state == OPEN
    assert not breaker.allow()


def test_slow_calls_count_as_failures() -> None:
    clock = FakeClock()
    breaker = make(clock, slow_call_s=0.05)
    for _ in range(2):
        breaker.record_success(0.2)
    breaker.record_success(0.01)
    assert breaker.state == CLOSED
    breaker.record_success(0.05)
    assert breaker.state == OPEN


def test_cooldown_with_jitter_then_one_probe_at_a_time() -> None:
    clock = FakeClock()
    changes: list[tuple[str, State, State]] = []
    breaker = make(clock, changes, jitter=0.5)
    for _ in range(3):
        breaker.record_failure()
    assert breaker.open_until == clock.now + 45  # 30s cooldown, stretched by the jitter (rng gives 1.0)
    clock.now += 44.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert breaker.state == HALF_OPEN
    assert not breaker.allow()
    assert not breaker.allow()
    breaker.record_success(0.001)
    assert breaker.state == CLOSED and breaker.allow()
    assert changes == [("redis", CLOSED, OPEN), ("redis", OPEN, HALF_OPEN), ("redis", HALF_OPEN, CLOSED)]


def test_a_failed_probe_opens_again() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 30
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == OPEN
    assert breaker.open_until == clock.now + 30
    assert not breaker.allow()


def test_a_lost_probe_frees_its_slot_after_the_probe_timeout() -> None:
    clock = FakeClock()
    breaker = make(clock, probe_timeout_s=5.0)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 30
    assert breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_late_reports_while_open_change_nothing() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure()
    until = breaker.open_until
    breaker.record_success(0.001)
    breaker.record_failure()
    assert breaker.state == OPEN and breaker.open_until == until


def test_failures_before_closing_are_forgotten() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 30
    assert breaker.allow()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == CLOSED


def test_invalid_failures() -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker("x", failures=0)


async def test_call_counts_outcomes_and_refuses_while_open() -> None:
    clock = FakeClock()
    breaker = make(clock)
    calls = 0

    async def flaky(fail: bool) -> str:
        nonlocal calls
        calls += 1
        if fail:
            raise ConnectionError("down")
        return "ok"

    assert await breaker.call(flaky, False) == "ok"
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await breaker.call(flaky, True)
    with pytest.raises(CircuitOpen) as refused:
        await breaker.call(flaky, False)
    assert calls == 4
    assert refused.value.name == "redis" and refused.value.retry_after == 30
    clock.now += 30
    assert await breaker.call(flaky, False) == "ok"
    assert breaker.state == CLOSED


async def test_a_cancelled_probe_releases_the_slot() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 30

    task = asyncio.create_task(breaker.call(asyncio.sleep, 10))
    await asyncio.sleep(0)
    assert breaker.state == HALF_OPEN and not breaker.allow()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.allow()


def test_allow_is_cheap() -> None:
    breaker = CircuitBreaker("fast")
    started = time.perf_counter()
    for _ in range(100_000):
        breaker.allow()
    per_call = (time.perf_counter() - started) / 100_000
    # A few hundred nanoseconds in practice; the bound only catches locks, awaits or clock reads sneaking in.
    assert per_call < 2e-6


def test_retry_after_counts_down_while_open() -> None:
    clock = FakeClock()
    breaker = make(clock)
    assert breaker.retry_after() == 0
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    assert breaker.retry_after() == 20
    clock.now += 25
    assert breaker.retry_after() == 0


class Answer(Exception):
    """The dependency answered "no" (a unique violation, a permanent rejection): it works."""


def opened_then_due(clock: FakeClock, **options: float) -> CircuitBreaker:
    """A breaker whose cooldown is over: the next call is the half-open probe."""
    breaker = make(clock, None, **options)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 30
    return breaker


async def test_a_cancelled_guarded_probe_releases_the_slot_and_stays_half_open() -> None:
    clock = FakeClock()
    breaker = opened_then_due(clock, probe_timeout_s=600.0)

    async def probe() -> None:
        async with breaker.guard():
            await asyncio.sleep(10)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0)
    assert breaker.state == HALF_OPEN and not breaker.allow()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Neither success nor failure: the next caller probes at once, not after probe_timeout_s.
    assert breaker.state == HALF_OPEN
    assert breaker.allow()


async def test_answers_are_not_failures() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(5):
        with pytest.raises(Answer):
            async with breaker.guard(failure=(Exception,), answer=(Answer,)):
                raise Answer("taken")
    assert breaker.state == CLOSED
    breaker = opened_then_due(clock)
    with pytest.raises(Answer):
        async with breaker.guard(answer=(Answer,)):
            raise Answer("taken")
    assert breaker.state == CLOSED  # an answer is a successful probe


async def test_classified_failures_open_it_and_other_errors_only_release() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(5):
        with pytest.raises(ValueError):
            async with breaker.guard(failure=lambda exc: isinstance(exc, ConnectionError)):
                raise ValueError("the caller's own bug")
    assert breaker.state == CLOSED
    for _ in range(3):
        with pytest.raises(ConnectionError):
            async with breaker.guard(failure=(ConnectionError,)):
                raise ConnectionError("down")
    assert breaker.state == OPEN
    clock.now += 30
    with pytest.raises(ValueError):
        async with breaker.guard(failure=(ConnectionError,)):
            raise ValueError("the caller's own bug")
    assert breaker.state == HALF_OPEN and breaker.allow()  # released, not failed


async def test_a_refusal_is_circuit_open_with_retry_after_and_never_runs_the_body() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 12
    ran = False
    with pytest.raises(CircuitOpen) as refused:
        async with breaker.guard():
            ran = True
    assert not ran
    assert refused.value.name == "redis" and refused.value.retry_after == 18


async def test_a_guarded_call_slower_than_slow_call_s_is_a_failure() -> None:
    clock = FakeClock()
    breaker = make(clock, slow_call_s=0.5)
    for _ in range(3):
        async with breaker.guard():
            clock.now += 0.6
    assert breaker.state == OPEN


async def test_a_call_let_through_while_closed_never_frees_a_later_probes_slot() -> None:
    clock = FakeClock()
    breaker = make(clock)

    async def early() -> None:
        async with breaker.guard():
            await asyncio.sleep(10)

    task = asyncio.create_task(early())
    await asyncio.sleep(0)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 30
    assert breaker.allow()  # the probe
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not breaker.allow()  # still the probe's slot


async def test_a_cancelled_half_open_decision_frees_the_probe_at_once() -> None:
    # The rate limiter's decide path, on a Redis that accepts connections and never answers.

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    breaker = CircuitBreaker("redis", failures=1, cooldown_s=0.01, jitter=0.0, probe_timeout_s=600.0)
    engine = RedisEngine(
        create_redis_client(f"redis://127.0.0.1:{port}", cluster=False), deadline_s=30.0, breaker=breaker
    )
    settings = RateLimitSettings(rules=(RuleSettings(match="/*", windows=("2/1m",)),))
    service = RateLimitService(settings, engine, breaker=breaker)
    try:
        breaker.record_failure()
        await asyncio.sleep(0.02)
        decision = asyncio.create_task(service.decide(Identity("u", "free", "api_key"), service.rules.rules[0], 1))
        await asyncio.sleep(0.05)
        assert breaker.state == HALF_OPEN and not breaker.allow()
        decision.cancel()
        await asyncio.gather(decision, return_exceptions=True)
        assert breaker.state == HALF_OPEN
        assert breaker.allow()
    finally:
        await engine.aclose()
        server.close()


async def test_a_half_open_probe_shed_by_a_full_queue_frees_its_slot() -> None:

    clock = FakeClock()
    breaker = opened_then_due(clock, probe_timeout_s=600.0)
    engine = RedisEngine(create_redis_client("redis://127.0.0.1:1", cluster=False), breaker=breaker, max_queue=0)
    try:
        with pytest.raises(EngineOverloaded):
            await engine.eval(PASSTHROUGH, [], ["PING"])
        assert breaker.state == HALF_OPEN and breaker.allow()
    finally:
        await engine.aclose()
