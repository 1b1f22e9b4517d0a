"""Direct Redis calls of the shortener (fills, cache writes, the click stream) behind the engine's breaker.

Scripts on the request path go through the ScriptEngine; these are the calls that need other commands.
Each has a deadline, reports to the same breaker as the scripts, and fails as StorageError.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.breaker import CircuitBreaker
from gateway.engines.redis import RedisClient
from gateway.exceptions import StorageError

T = TypeVar("T")
DEFAULT_DEADLINE_S = 2.0


class RedisCalls:
    def __init__(self, client: RedisClient, breaker: CircuitBreaker | None, deadline_s: float = DEFAULT_DEADLINE_S):
        self.client = client
        self.breaker = breaker
        self.deadline_s = deadline_s

    async def call(self, operation: Callable[[RedisClient], Awaitable[T]], deadline_s: float | None = None) -> T:
        guard = self.breaker.guard() if self.breaker is not None else contextlib.nullcontext()
        async with guard:
            try:
                async with asyncio.timeout(deadline_s or self.deadline_s):
                    return await operation(self.client)
            except Exception as exc:
                raise StorageError(f"redis: {exc or type(exc).__name__}") from exc
