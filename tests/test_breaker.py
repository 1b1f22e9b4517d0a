from __future__ import annotations

import asyncio
import time

import pytest

from gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, State
from gateway.exceptions import CircuitOpen


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
