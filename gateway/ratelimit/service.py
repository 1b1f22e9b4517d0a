"""Where a request is rate limited: rule lookup, the engine call behind its breaker, and the failure policy.

While the engine is unavailable (an error, a missed deadline, or the breaker open), each rule applies its
`on_failure` policy without waiting: `open` allows and counts, `closed` refuses with 503, and `local` runs
the same Lua script on an in-process engine with the limit divided by the number of replicas. The same policy
applies, counted apart (`overloaded`, `overloaded_closed`), to a decision shed because the engine's queue is full.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal, NamedTuple

from prometheus_client import Counter

from gateway import metrics
from gateway.breaker import CircuitBreaker
from gateway.config.ratelimit import RateLimitSettings, RuleSettings
from gateway.config.windows import Window
from gateway.engines.base import ScriptEngine
from gateway.engines.embedded import EmbeddedEngine
from gateway.events import EventBus, RateLimitExceeded
from gateway.exceptions import CircuitOpen, EngineOverloaded, StorageError
from gateway.identity import Identity
from gateway.ratelimit.limiter import Decision, SlidingWindowLimiter
from gateway.ratelimit.rules import Rule, RuleSet

Result = Literal[
    "allowed",
    "refused",
    "shadow_refused",
    "failed_open",
    "failed_closed",
    "local_allowed",
    "local_refused",
    "overloaded",
    "overloaded_closed",
]
REFUSED: frozenset[str] = frozenset({"refused", "failed_closed", "local_refused", "overloaded_closed"})
NEAR_LIMIT_RATIO = 0.8
logger = logging.getLogger("gateway.ratelimit")


class Verdict(NamedTuple):
    """The outcome of one decision (a NamedTuple: one is built per limited request)."""

    rule: Rule
    result: Result
    #: The figures for the headers; None when the engine could not be asked.
    decision: Decision | None
    #: Seconds a refused client should wait.
    retry_after: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.result not in REFUSED


class RateLimitService:
    def __init__(
        self,
        settings: RateLimitSettings,
        engine: ScriptEngine,
        *,
        breaker: CircuitBreaker | None = None,
        events: EventBus | None = None,
        local_engine: ScriptEngine | None = None,
    ) -> None:
        self.settings = settings
        self.rules = RuleSet(settings.rules)
        self.engine = engine
        self.limiter = SlidingWindowLimiter(engine)
        self.breaker = breaker
        self.events = events
        self.local = SlidingWindowLimiter(local_engine or EmbeddedEngine())
        self._local_windows: dict[str, tuple[Window, ...]] = {}
        self._decisions: dict[tuple[str, str, str], Counter] = {}
        self._near_limit: dict[tuple[str, str], Counter] = {}
        # How long a decision waited for a remote engine, its queue included (the embedded one answers inline,
        # and timing it would cost a good part of the decision).
        self._engine_seconds = (
            metrics.RATELIMIT_ENGINE_SECONDS.labels(engine.name) if engine.name != EmbeddedEngine.name else None
        )
        self._last_fail_open_log = -math.inf

    def use_managed_rules(self, rules: Sequence[RuleSettings]) -> None:
        """Match the YAML's rules and these (from the admin API) from now on; one assignment, so a request sees
        either the old set or the new one."""
        self.rules = RuleSet(self.settings.rules, rules)

    async def check(self, identity: Identity, path: str, method: str) -> Verdict | None:
        """Decide one request and spend its cost; None when no rule applies."""
        rule = self.rules.match(identity.tier, path, method)
        if rule is None:
            return None
        return await self.decide(identity, rule, rule.cost, path=path)

    async def decide(self, identity: Identity, rule: Rule, cost: int, *, path: str = "") -> Verdict:
        # The engine asks the breaker before each call and reports each round trip's outcome to it, measured on
        # the wire (gateway/engines/redis.py); here an open breaker only skips the call, in microseconds.
        if self.breaker is not None and self.breaker.is_open():
            return await self._unavailable(identity, rule, cost, path, None)
        timer = self._engine_seconds
        start = time.perf_counter() if timer is not None else 0.0
        try:
            decision = await self.limiter.hit(identity.key, rule.id, rule.windows, cost)
        except EngineOverloaded:
            return await self._overloaded(identity, rule, cost, path)
        except StorageError as exc:
            return await self._unavailable(identity, rule, cost, path, exc)
        if timer is not None:
            timer.observe(time.perf_counter() - start)
        return self._verdict(identity, rule, decision, path, local=False)

    async def peek(self, identity: Identity, rule: Rule) -> Decision | None:
        """The rule's windows for `identity` without spending; None if the engine cannot be asked."""
        if self.breaker is not None and self.breaker.is_open():
            return None
        try:
            return await self.limiter.peek(identity.key, rule.id, rule.windows)
        except StorageError:
            return None

    async def _overloaded(self, identity: Identity, rule: Rule, cost: int, path: str) -> Verdict:
        """More decisions wait for the engine than its queue holds: the rule's policy, counted as shed."""
        policy = rule.on_failure
        if policy == "local":
            decision = await self.local.hit(identity.key, rule.id, self._divided(rule), cost)
            return self._verdict(identity, rule, decision, path, local=True)
        if policy == "closed":
            self._count(rule, identity.tier, "overloaded_closed")
            return Verdict(rule, "overloaded_closed", None, retry_after=1.0)
        self._count(rule, identity.tier, "overloaded")
        return Verdict(rule, "overloaded", None)

    async def _unavailable(
        self, identity: Identity, rule: Rule, cost: int, path: str, error: StorageError | None
    ) -> Verdict:
        policy = rule.on_failure
        if policy == "local":
            decision = await self.local.hit(identity.key, rule.id, self._divided(rule), cost)
            return self._verdict(identity, rule, decision, path, local=True)
        if policy == "closed":
            self._count(rule, identity.tier, "failed_closed")
            return Verdict(rule, "failed_closed", None, retry_after=self._engine_retry_after())
        self._count(rule, identity.tier, "failed_open")
        now = time.monotonic()
        if now - self._last_fail_open_log >= self.settings.log_interval:
            self._last_fail_open_log = now
            if error is None or isinstance(error, CircuitOpen):
                reason = "its circuit breaker is open"
            else:
                reason = f"{type(error).__name__}: {error}"
            logger.warning("rate-limit engine %s unavailable (%s): failing open", self.engine.name, reason)
        return Verdict(rule, "failed_open", None)

    def _verdict(self, identity: Identity, rule: Rule, decision: Decision, path: str, *, local: bool) -> Verdict:
        tier = identity.tier
        if decision.allowed:
            self._count(rule, tier, "local_allowed" if local else "allowed")
            tightest = decision.tightest
            if tightest.limit and tightest.remaining < tightest.limit * (1 - NEAR_LIMIT_RATIO):
                key = (rule.name, tier)
                near = self._near_limit.get(key)
                if near is None:
                    near = self._near_limit[key] = metrics.RATELIMIT_NEAR_LIMIT.labels(*key)
                near.inc()
            return Verdict(rule, "local_allowed" if local else "allowed", decision)
        if rule.shadow:
            self._count(rule, tier, "shadow_refused")
            return Verdict(rule, "shadow_refused", decision)
        result: Result = "local_refused" if local else "refused"
        self._count(rule, tier, result)
        if self.events is not None:
            tightest = decision.tightest
            self.events.emit(
                RateLimitExceeded(
                    user_id=identity.user_id,
                    identity_kind=identity.kind,
                    tier=tier,
                    rule=rule.name,
                    path=path,
                    limit=tightest.limit,
                    window=tightest.window.name,
                    retry_after=decision.retry_after,
                )
            )
        return Verdict(rule, result, decision, retry_after=decision.retry_after)

    def _divided(self, rule: Rule) -> tuple[Window, ...]:
        windows = self._local_windows.get(rule.id)
        if windows is None:
            replicas = self.settings.replicas
            windows = tuple(replace(w, limit=max(1, w.limit // replicas)) for w in rule.windows)
            self._local_windows[rule.id] = windows
        return windows

    def _engine_retry_after(self) -> float:
        breaker = self.breaker
        if breaker is None or breaker.state == "closed":
            return 1.0
        return max(1.0, breaker.open_until - time.monotonic())

    def _count(self, rule: Rule, tier: str, result: Result) -> None:
        # The labelled child is cached: .labels() costs more than the increment on this path.
        key = (rule.name, tier, result)
        child = self._decisions.get(key)
        if child is None:
            child = self._decisions[key] = metrics.RATELIMIT_DECISIONS.labels(*key)
        child.inc()
