"""The key pool: codes made ahead of time, so a creation costs one atomic pop instead of a counter round trip.

A background filler reserves blocks of the database sequence, permutes them into codes and appends them to a
list (in Redis, or in the embedded engine). `take()` pops with `lua/key_pool_pop.lua`; an empty or unreachable
pool falls back to values of the same sequence through the same permutation, so it is never an error.
Against Redis each pop (or fallback) takes a few codes at once (`pop_batch`) and keeps the rest in this process,
so most creations cost no round trip at all; the codes a stopped process still held are simply never used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from gateway import metrics
from gateway.engines.base import ScriptEngine
from gateway.engines.embedded import EmbeddedEngine
from gateway.engines.scripts import load_script
from gateway.exceptions import StorageError
from gateway.shortener.codes import CodeGenerator
from gateway.shortener.redis_calls import RedisCalls
from gateway.shortener.store import UrlStore

POOL_KEY = "gw:shortener:pool"
#: The filler looks at the pool this often even when no pop asked it to.
REFILL_INTERVAL_S = 2.0
#: Codes permuted between two yields to the event loop (about 8 µs each).
PERMUTE_SLICE = 200
#: Codes per pop from a Redis pool (the embedded pool is in-process: one at a time).
REDIS_POP_BATCH = 32
#: Codes per RPUSH (the embedded engine's Lua stack holds a few thousand arguments at most).
PUSH_SLICE = 500
LOG_INTERVAL_S = 60.0
logger = logging.getLogger("gateway.shortener")


class KeyPool:
    def __init__(
        self,
        *,
        store: UrlStore,
        codes: CodeGenerator,
        scripts: ScriptEngine,
        redis: RedisCalls | None,
        embedded: EmbeddedEngine,
        min_size: int,
        batch: int,
        pop_batch: int = 1,
    ) -> None:
        self.store = store
        self.codes = codes
        self.scripts = scripts
        self.redis = redis
        self.embedded = embedded
        self.min_size = min_size
        self.batch = batch
        self.pop_batch = pop_batch
        self._pop = load_script("key_pool_pop")
        #: Codes this process took (from the pool, or from the sequence) and has not handed out yet, with their source.
        self._taken: deque[tuple[str, str]] = deque()
        self._popping = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._last_log = -LOG_INTERVAL_S

    async def take(self) -> str:
        """A code no other creation got; raises StorageError only if the database sequence is unreachable too."""
        if not self._taken:
            async with self._popping:  # one pop in flight; the callers queued behind it share its codes
                if not self._taken:
                    await self._take_more()
        code, source = self._taken.popleft()
        metrics.SHORTENER_CODES.labels(source).inc()
        return code

    async def _take_more(self) -> None:
        if self.min_size > 0:
            codes = await self._pop_codes()
            if codes:
                self._taken.extend((code, "pool") for code in codes)
                return
        counters = await self.store.reserve(self.pop_batch)
        self._taken.extend((self.codes.code(counter), "database") for counter in counters)

    async def _pop_codes(self) -> list[str]:
        try:
            remaining, *codes = await self.scripts.eval(self._pop, [POOL_KEY], [self.pop_batch])
        except StorageError:  # including CircuitOpen: codes come from the database sequence instead
            return []
        metrics.SHORTENER_KEY_POOL_SIZE.set(remaining)
        if remaining < self.min_size:
            self._wakeup.set()
        return [code.decode() if isinstance(code, bytes) else str(code) for code in codes]

    async def run(self) -> None:
        """The filler: tops the pool up to `min_size` when woken by a pop, and every REFILL_INTERVAL_S."""
        while not self._stopping:
            try:
                await self.fill()
            except StorageError as exc:
                now = time.monotonic()
                if now - self._last_log >= LOG_INTERVAL_S:
                    self._last_log = now
                    logger.warning("key pool not refilled (creations use the database sequence): %s", exc)
            try:
                async with asyncio.timeout(REFILL_INTERVAL_S):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()

    def stop(self) -> None:
        """Ends `run()` after the round in progress (never cancelled inside a database transaction)."""
        self._stopping = True
        self._wakeup.set()

    async def fill(self) -> int:
        """Append batches until the pool holds at least `min_size` codes; returns how many were added."""
        added = 0
        size = await self._length()
        while size < self.min_size and not self._stopping:
            counters = await self.store.reserve(self.batch)
            codes = []
            for index, counter in enumerate(counters, 1):
                codes.append(self.codes.code(counter))
                if index % PERMUTE_SLICE == 0:
                    await asyncio.sleep(0)
            size = await self._push(codes)
            added += len(codes)
        metrics.SHORTENER_KEY_POOL_SIZE.set(size)
        return added

    async def _length(self) -> int:
        if self.redis is None:
            return int(self.embedded.command("LLEN", POOL_KEY))
        return int(await self.redis.call(lambda client: client.llen(POOL_KEY)))

    async def _push(self, codes: list[str]) -> int:
        size = 0
        for start in range(0, len(codes), PUSH_SLICE):
            size = await self._push_slice(codes[start : start + PUSH_SLICE])
        return size

    async def _push_slice(self, codes: list[str]) -> int:
        if self.redis is None:
            return int(self.embedded.command("RPUSH", POOL_KEY, *codes))
        return int(await self.redis.call(lambda client: client.rpush(POOL_KEY, *codes)))
