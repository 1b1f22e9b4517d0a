"""Where a redirect finds its link: this process's LRU, then the shared Redis cache, then the database.

Unknown codes are cached too (briefly), so a flood of bad codes does not reach the database. Forgetting a code
(delete, or an alias created over a cached "unknown") clears every layer: the local LRU at once, Redis with a
DEL that is repeated a few seconds later (a lookup that read the database just before the change may write the
old entry back), and the LRUs of other replicas through a Redis channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import redis.asyncio

from gateway import metrics
from gateway.engines.base import ScriptEngine
from gateway.engines.scripts import load_script
from gateway.exceptions import StorageError
from gateway.shortener.redis_calls import RedisCalls

KEY_PREFIX = "gw:shortener:url:"
CHANNEL = "gw:shortener:invalidate"
#: A forgotten code is deleted from Redis again after this long, to undo a racing write-back.
SECOND_DELETE_S = 3.0
RETRY_S = 1.0
_NEGATIVE = "-"
logger = logging.getLogger("gateway.shortener")


@dataclass(frozen=True, slots=True)
class Target:
    """What a redirect needs to know about a live link."""

    long_url: str
    expires_at: float | None = None
    max_visits: int | None = None

    def encode(self) -> str:
        expires = repr(self.expires_at) if self.expires_at is not None else ""
        visits = str(self.max_visits) if self.max_visits is not None else ""
        return f"{expires}\t{visits}\t{self.long_url}"

    @classmethod
    def decode(cls, raw: str) -> Target:
        expires, visits, long_url = raw.split("\t", 2)
        return cls(long_url, float(expires) if expires else None, int(visits) if visits else None)


class _Miss:
    """No layer knows the code (as opposed to a cached None: known to be unknown)."""


MISS: Final = _Miss()
Lookup = Target | None | _Miss


class LocalCache:
    """An LRU with a TTL per entry; single-threaded, so no locks."""

    def __init__(self, size: int, ttl_s: float, negative_ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Target | None]] = OrderedDict()

    def get(self, code: str) -> Lookup:
        entry = self._entries.get(code)
        if entry is None:
            return MISS
        if entry[0] <= self._clock():
            del self._entries[code]
            return MISS
        self._entries.move_to_end(code)
        return entry[1]

    def put(self, code: str, target: Target | None) -> None:
        if self.size <= 0:
            return
        ttl = self.ttl_s if target is not None else min(self.ttl_s, self.negative_ttl_s)
        self._entries[code] = (self._clock() + ttl, target)
        self._entries.move_to_end(code)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def discard(self, code: str) -> None:
        self._entries.pop(code, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class SharedCache:
    """Links in Redis for every replica; a failure is a miss (reads) or a retry later (forgets), never an error."""

    def __init__(self, scripts: ScriptEngine, redis: RedisCalls, *, ttl_s: float, negative_ttl_s: float) -> None:
        self.scripts = scripts
        self.redis = redis
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self._get = load_script("url_cache_get")

    async def get(self, code: str) -> Lookup:
        try:
            raw = await self.scripts.eval(self._get, [KEY_PREFIX + code], [])
        except StorageError:  # including CircuitOpen: Redis is skipped, the database answers
            return MISS
        if raw is None:
            return MISS
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return None if text == _NEGATIVE else Target.decode(text)

    async def put(self, code: str, target: Target | None) -> None:
        value, ttl = (target.encode(), self.ttl_s) if target is not None else (_NEGATIVE, self.negative_ttl_s)
        await self.redis.call(lambda client: client.set(KEY_PREFIX + code, value, ex=max(1, int(ttl))))

    async def forget(self, code: str) -> None:
        async def run(client: redis.asyncio.Redis | redis.asyncio.RedisCluster) -> None:
            await client.delete(KEY_PREFIX + code)
            if isinstance(client, redis.asyncio.Redis):
                await client.publish(CHANNEL, code)

        await self.redis.call(run)


class LinkCache:
    """The layers in order, with the `cache_hits{layer}` metric and the invalidation machinery."""

    def __init__(self, local: LocalCache, shared: SharedCache | None) -> None:
        self.local = local
        self.shared = shared
        #: Set once this replica listens for other replicas' invalidations (tests wait on it).
        self.subscribed = asyncio.Event()
        self._generation = 0
        self._pending: dict[str, float] = {}
        self._wakeup = asyncio.Event()
        self._writes: set[asyncio.Task[None]] = set()

    async def lookup(self, code: str, load: Callable[[str], Awaitable[Target | None]]) -> Target | None:
        """The link behind `code`, None if unknown or deleted; StorageError only if the database had to answer."""
        found = self.local.get(code)
        if not isinstance(found, _Miss):
            metrics.SHORTENER_HITS["lru" if found is not None else "negative"].inc()
            return found
        generation = self._generation
        if self.shared is not None:
            found = await self.shared.get(code)
            if not isinstance(found, _Miss):
                metrics.SHORTENER_HITS["redis" if found is not None else "negative"].inc()
                if generation == self._generation:
                    self.local.put(code, found)
                return found
        target = await load(code)
        metrics.SHORTENER_HITS["database"].inc()
        # A forget while we were reading may have made `target` stale: answer with it, but do not cache it.
        if generation == self._generation:
            self.local.put(code, target)
            if self.shared is not None:
                self._write_back(code, target)
        return target

    def _write_back(self, code: str, target: Target | None) -> None:
        assert self.shared is not None
        task = asyncio.get_running_loop().create_task(self._put_quietly(code, target))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put_quietly(self, code: str, target: Target | None) -> None:
        assert self.shared is not None
        try:
            await self.shared.put(code, target)
        except StorageError:
            pass  # the next lookup reads the database again

    def remember(self, code: str, target: Target) -> None:
        """A link just created: the next redirect on this replica needs no lookup."""
        self.local.put(code, target)

    async def forget(self, code: str) -> None:
        """Clear `code` from every layer; what Redis cannot take now is retried in the background."""
        self._generation += 1
        self.local.discard(code)
        if self.shared is None:
            return
        try:
            await self.shared.forget(code)
        except StorageError:
            self._pending[code] = time.monotonic()
        else:
            self._pending[code] = time.monotonic() + SECOND_DELETE_S
        self._wakeup.set()

    async def run_forgets(self) -> None:
        """Background: repeat forgets when due, until Redis has taken them."""
        assert self.shared is not None
        while True:
            now = time.monotonic()
            for code, due in list(self._pending.items()):
                if due > now:
                    continue
                self._generation += 1
                self.local.discard(code)
                try:
                    await self.shared.forget(code)
                except StorageError:
                    self._pending[code] = now + RETRY_S
                else:
                    del self._pending[code]
            wait = min(self._pending.values(), default=now + 60.0) - time.monotonic()
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
            self._wakeup.clear()

    async def run_subscriber(self, client: redis.asyncio.Redis) -> None:
        """Background: drop the codes other replicas forget from this LRU (a plain Redis client only)."""
        while True:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                # Messages sent while nobody listened are lost: start from an empty LRU.
                self.local.clear()
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        data = message["data"]
                        self.local.discard(data.decode() if isinstance(data, bytes) else str(data))
            except (redis.RedisError, OSError):
                self.subscribed.clear()
                await asyncio.sleep(RETRY_S)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)
