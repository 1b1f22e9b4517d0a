"""State engines: where atomic scripts run (Redis, Redis Cluster, or in-process Lua), and `Engines`, the ones of
this process: the script engine, the Redis client, the database.

They belong to the process, not to a configuration: a reload that leaves `engine:` unchanged keeps them,
so the embedded engine's counters and the connection pools survive it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway import metrics
from gateway.breaker import CircuitBreaker, State
from gateway.config.models import EngineSettings
from gateway.engines.base import ScriptEngine
from gateway.engines.database import Database
from gateway.engines.embedded import EmbeddedEngine
from gateway.engines.redis import RedisClient, RedisEngine, create_redis_client
from gateway.events import CircuitClosed, CircuitOpened, EventBus
from gateway.health import ReadinessCheck

logger = logging.getLogger("gateway")
_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def breaker_events(events: EventBus) -> Callable[[str, State, State], None]:
    """Breaker state changes become a gauge, a log line and `circuit.opened` / `circuit.closed` events."""

    def on_change(name: str, old: State, new: State) -> None:
        metrics.BREAKER_STATE.labels(name).set(_STATE_VALUES[new])
        if new == "open":
            logger.warning("circuit breaker %s opened", name)
            events.emit(CircuitOpened(breaker=name, previous=old))
        elif new == "closed":
            logger.info("circuit breaker %s closed", name)
            events.emit(CircuitClosed(breaker=name, previous=old))

    return on_change


class Engines:
    def __init__(self, settings: EngineSettings, events: EventBus) -> None:
        self.settings = settings
        self.events = events
        #: Always present: the embedded default, and the `local` rate-limit fallback when Redis is down.
        self.embedded = EmbeddedEngine()
        self.redis: RedisClient | None = None
        self.breaker: CircuitBreaker | None = None
        self.scripts: ScriptEngine = self.embedded
        if settings.kind == "redis":
            redis_settings = settings.redis
            self.redis = create_redis_client(redis_settings.url, cluster=redis_settings.cluster)
            breaker = redis_settings.breaker
            # Slow calls are judged by the engine, on the wire: the breaker only hears its verdict.
            self.breaker = CircuitBreaker(
                "redis",
                failures=breaker.failures,
                window_s=breaker.window,
                cooldown_s=breaker.cooldown,
                on_change=breaker_events(events),
            )
            self.scripts = RedisEngine(
                self.redis,
                deadline_s=redis_settings.deadline,
                slow_call_s=breaker.slow_call,
                breaker=self.breaker,
                max_queue=redis_settings.max_queue,
            )
            metrics.BREAKER_STATE.labels("redis").set(0)
        self.database = Database(settings.database.url, deadline_s=settings.database.deadline)

    async def start(self) -> None:
        await self.database.connect()

    async def aclose(self) -> None:
        await self.scripts.aclose()
        await self.database.aclose()

    @property
    def readiness(self) -> dict[str, ReadinessCheck]:
        checks: dict[str, ReadinessCheck] = {"database": self.database.ping}
        if self.settings.kind == "redis":
            checks["redis"] = self.scripts.ping
        return checks
