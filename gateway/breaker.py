"""A circuit breaker per dependency, so the data path stops waiting on something that is down."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal, ParamSpec, TypeAlias, TypeVar

from gateway.exceptions import CircuitOpen

State = Literal["closed", "open", "half_open"]
CLOSED: State = "closed"
OPEN: State = "open"
HALF_OPEN: State = "half_open"

P = ParamSpec("P")
T = TypeVar("T")
#: Which exceptions are of a kind: a tuple of types, or a predicate.
Classifier: TypeAlias = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


class CircuitBreaker:
    """Closed → open after `failures` failures within `window_s` → half-open after a jittered cooldown.

    A failure is an error or a call slower than `slow_call_s`. Half-open lets one probe through at a time; its
    success closes the breaker, its failure opens it again. `allow()` is a plain attribute check while closed,
    and never awaits or locks: the event loop is the only thread that touches it.
    """

    def __init__(
        self,
        name: str,
        *,
        failures: int = 5,
        window_s: float = 10.0,
        cooldown_s: float = 30.0,
        slow_call_s: float | None = None,
        jitter: float = 0.2,
        probe_timeout_s: float | None = None,
        on_change: Callable[[str, State, State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if failures < 1:
            raise ValueError(f"breaker {name!r}: failures must be >= 1, not {failures}")
        self.name = name
        self.failures = failures
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.slow_call_s = slow_call_s
        self.jitter = jitter
        #: A probe that never reports back (its caller vanished) frees the half-open slot after this long.
        self.probe_timeout_s = cooldown_s if probe_timeout_s is None else probe_timeout_s
        self.on_change = on_change
        self.state: State = CLOSED
        #: Monotonic time at which an open breaker lets the next probe through.
        self.open_until = 0.0
        self._clock = clock
        self._rng = rng
        self._recent: deque[float] = deque()
        self._probe_started: float | None = None

    def allow(self) -> bool:
        """May a call go to the dependency now? In half-open, True for one probe at a time."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if self.state == OPEN:
            if now < self.open_until:
                return False
            self._change(HALF_OPEN)
        elif self._probe_started is not None and now - self._probe_started < self.probe_timeout_s:
            return False
        self._probe_started = now
        return True

    def is_open(self) -> bool:
        """Open and still cooling down: a call would be refused. Unlike allow(), never takes the probe slot."""
        return self.state == OPEN and self._clock() < self.open_until

    def record_success(self, elapsed_s: float = 0.0) -> None:
        """Report a call that worked; one slower than `slow_call_s` counts as a failure."""
        if self.slow_call_s is not None and elapsed_s >= self.slow_call_s:
            self.record_failure()
        elif self.state == HALF_OPEN:
            self._recent.clear()
            self._probe_started = None
            self._change(CLOSED)

    def record_failure(self) -> None:
        """Report a failed (or too slow) call."""
        now = self._clock()
        if self.state == HALF_OPEN:
            self._open(now)
        elif self.state == CLOSED:
            recent = self._recent
            recent.append(now)
            while recent and recent[0] <= now - self.window_s:
                recent.popleft()
            if len(recent) >= self.failures:
                self._open(now)
        # While open, late reports from calls let through before it opened change nothing.

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through; 0 unless open."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.open_until - self._clock())

    def release(self) -> None:
        """Forget a probe whose outcome says nothing about the dependency (its caller was cancelled)."""
        self._probe_started = None

    def admit(self) -> bool:
        """`allow()` or raise `CircuitOpen`; True when this call took the half-open probe slot (so it must release
        it if it ends without an outcome)."""
        if not self.allow():
            raise CircuitOpen(self.name, self.retry_after())
        return self.state != CLOSED

    def guard(self, *, failure: Classifier = (Exception,), answer: Classifier = ()) -> Guard:
        """The one way to run a call through the breaker: `async with breaker.guard(...): await dependency()`.

        Refuses with `CircuitOpen` on entry; on exit records a success (with its duration, for `slow_call_s`),
        a success for an `answer` exception (the dependency answered: a unique violation, a permanent rejection),
        a failure for a `failure` exception, and for cancellation or any other exception releases the probe slot.
        """
        return Guard(self, failure, answer)

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await `fn(*args, **kwargs)` through `guard()`: every exception is a failure, cancellation is not."""
        async with self.guard():
            return await fn(*args, **kwargs)

    def _open(self, now: float) -> None:
        # Jitter spreads the probes of many replicas that all saw the same outage.
        self.open_until = now + self.cooldown_s * (1 + self.jitter * self._rng())
        self._recent.clear()
        self._probe_started = None
        self._change(OPEN)

    def _change(self, new: State) -> None:
        old, self.state = self.state, new
        if self.on_change is not None and old != new:
            self.on_change(self.name, old, new)


def _is(kind: Classifier, exc: BaseException) -> bool:
    return isinstance(exc, kind) if isinstance(kind, tuple) else kind(exc)


class Guard:
    """One call's bookkeeping on a breaker; see `CircuitBreaker.guard`. Used once."""

    __slots__ = ("_breaker", "_failure", "_answer", "_probing", "_started")

    def __init__(self, breaker: CircuitBreaker, failure: Classifier, answer: Classifier) -> None:
        self._breaker = breaker
        self._failure = failure
        self._answer = answer
        self._probing = False
        self._started = 0.0

    async def __aenter__(self) -> None:
        breaker = self._breaker
        self._probing = breaker.admit()
        self._started = breaker._clock()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        breaker = self._breaker
        if exc is None or (not isinstance(exc, asyncio.CancelledError) and _is(self._answer, exc)):
            breaker.record_success(breaker._clock() - self._started)
        elif not isinstance(exc, asyncio.CancelledError) and _is(self._failure, exc):
            breaker.record_failure()
        elif self._probing:
            # Cancelled, or failed in a way that says nothing about the dependency: no outcome. Only a probe
            # releases, so a call let through while closed cannot free the slot of a later probe.
            breaker.release()
