"""The shortener of one configuration: built by the Runtime, started and closed with it.

The Runtime is rebuilt on a configuration reload while the Engines (Redis, the database, the embedded store
and so the embedded key pool) carry over; everything this service starts in the background stops in aclose().
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio

from gateway import metrics
from gateway.breaker import CircuitBreaker
from gateway.config.models import Settings
from gateway.config.shortener import shortener_active
from gateway.engines import Engines, breaker_events
from gateway.engines.database import Row, UniqueViolation
from gateway.events import EventBus, UrlCreated
from gateway.exceptions import Conflict, StorageError
from gateway.openapi import DOCS_PATH, OPENAPI_PATH
from gateway.shortener.cache import LinkCache, LocalCache, SharedCache, Target
from gateway.shortener.clicks import ClickPipeline, ClickRecorder
from gateway.shortener.codes import CodeGenerator
from gateway.shortener.keypool import REDIS_POP_BATCH, KeyPool
from gateway.shortener.redirect import RedirectHandler
from gateway.shortener.redis_calls import RedisCalls
from gateway.shortener.store import Link, UrlStore
from gateway.shortener.validation import CreateRequest, UrlRules, reserved_segments
from gateway.timestamps import format_optional, format_time

#: Generated codes tried before a creation gives up (each retry means an alias had taken the code).
MAX_CODE_ATTEMPTS = 5
#: Links archived per statement round.
ARCHIVE_BATCH = 1000
MIGRATE_RETRY_S = 2.0
STOP_TIMEOUT_S = 5.0
logger = logging.getLogger("gateway.shortener")


class ShortenerService:
    def __init__(self, settings: Settings, engines: Engines, events: EventBus) -> None:
        config = self.config = settings.shortener
        self.enabled = shortener_active(config, settings.routes)
        self.events = events
        server = settings.server
        self.public_url = server.public_url.rstrip("/")
        public = urlsplit(server.public_url)
        own_paths = [server.health_path, server.ready_path, server.metrics_path, OPENAPI_PATH, DOCS_PATH, "/api/"]
        route_paths = [route.match.path_prefix or route.match.path or "" for route in settings.routes]
        self.rules = UrlRules(
            own_host=(public.hostname or "").lower(),
            own_port=_port(public.scheme, public.netloc),
            blocked_domains=config.blocked_domains,
            reserved=reserved_segments([*own_paths, *route_paths], config.reserved_aliases),
        )
        self.breaker = CircuitBreaker(
            "shortener_database",
            failures=5,
            window_s=10.0,
            cooldown_s=config.database_cooldown,
            on_change=breaker_events(events),
        )
        self.store = UrlStore(engines.database, breaker=self.breaker, deadline_s=config.database_deadline)
        self.codes = CodeGenerator(config.code_secret)
        redis_calls = RedisCalls(engines.redis, engines.breaker) if engines.redis is not None else None
        self.keypool = KeyPool(
            store=self.store,
            codes=self.codes,
            scripts=engines.scripts,
            redis=redis_calls,
            embedded=engines.embedded,
            min_size=config.key_pool.min,
            batch=config.key_pool.batch,
            pop_batch=REDIS_POP_BATCH if redis_calls is not None else 1,
        )
        metrics.SHORTENER_KEY_POOL_MIN.set(config.key_pool.min)
        shared = None
        if redis_calls is not None:
            shared = SharedCache(
                engines.scripts, redis_calls, ttl_s=config.shared_cache_ttl, negative_ttl_s=config.negative_ttl
            )
        local = LocalCache(config.local_cache.size, config.local_cache.ttl, config.negative_ttl)
        self.cache = LinkCache(local, shared)
        self._subscriber_client = engines.redis if isinstance(engines.redis, redis.asyncio.Redis) else None
        self.recorder = ClickRecorder()
        self.clicks = ClickPipeline(store=self.store, recorder=self.recorder, events=events, redis=redis_calls)
        #: The Dispatcher's fallback; None when the shortener is off.
        self.redirect: RedirectHandler | None = None
        if self.enabled:
            self.redirect = RedirectHandler(
                resolve=self.resolve,
                grant_visit=self.store.grant_visit,
                recorder=self.recorder,
                status=config.redirect_status,
                cache_max_age=config.cache_max_age,
            )
        self.ready = False
        #: Cancelled at close; `_graceful` ones are asked to stop, as they may be inside a database transaction.
        self._tasks: list[asyncio.Task[None]] = []
        self._graceful: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()

    async def start(self) -> None:
        if not self.enabled:
            return
        try:
            await self.store.migrate()
        except StorageError as exc:
            logger.warning("short links unavailable until the database answers: %s", exc)
            self._graceful.append(self._task(self._migrate_then_run()))
            return
        self._run()

    async def _migrate_then_run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(MIGRATE_RETRY_S):
                    await self._closing.wait()
                return
            except TimeoutError:
                pass
            try:
                await self.store.migrate()
            except StorageError:
                continue
            logger.info("short links available: the database answers again")
            self._run()
            return

    def _run(self) -> None:
        if self._closing.is_set():
            return
        self.ready = True
        if self.config.key_pool.min > 0:
            self._graceful.append(self._task(self.keypool.run()))
        if self.cache.shared is not None:
            self._spawn(self.cache.run_forgets())
        if self._subscriber_client is not None:
            self._spawn(self.cache.run_subscriber(self._subscriber_client))
        if self.config.expired_retention is not None:
            self._spawn(self._archive_forever())
        # The aggregator's first pass drains what the last run left in the local queue.
        self._graceful += [self._task(self.clicks.run_flusher()), self._task(self.clicks.run_aggregator())]

    async def archive_expired(self) -> int:
        """One pass: archive every link expired for longer than `expired_retention`; returns how many."""
        retention = self.config.expired_retention
        if retention is None:
            return 0
        total = 0
        while True:
            now = time.time()
            codes = await self.store.archive_expired(now - retention, now)
            for code in codes:
                await self.cache.forget(code)
            total += len(codes)
            metrics.SHORTENER_ARCHIVED.inc(len(codes))
            if len(codes) < ARCHIVE_BATCH:
                return total

    async def _archive_forever(self) -> None:
        while True:
            try:
                await self.archive_expired()
            except StorageError as exc:
                logger.warning("archiving expired links failed, trying again later: %s", exc)
            await asyncio.sleep(self.config.archive_interval)

    def _task(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coroutine)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(self._task(coroutine))

    async def aclose(self) -> None:
        """Stop the background work, then store the clicks still in memory and fold what can be folded."""
        self._closing.set()
        self.keypool.stop()
        self.clicks.stop()
        if self._graceful:
            _done, pending = await asyncio.wait(self._graceful, timeout=STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._graceful, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.cache.aclose()
        if self.ready:
            try:
                await self.clicks.flush()
                await self.clicks.aggregate()
            except StorageError as exc:
                logger.warning("clicks not folded at shutdown (the next start does it): %s", exc)
            except Exception:
                logger.exception("clicks not folded at shutdown (the next start does it)")
            if len(self.recorder):
                logger.error("%d clicks lost at shutdown: no storage took them", len(self.recorder))

    async def resolve(self, code: str) -> Target | None:
        return await self.cache.lookup(code, self._load)

    async def _load(self, code: str) -> Target | None:
        self._check_ready()
        link = await self.store.get(code)
        if link is None or link.deleted_at is not None:
            return None
        return Target(link.long_url, link.expires_at, link.max_visits)

    def _check_ready(self) -> None:
        if not self.ready:
            raise StorageError("the link store is not ready: its database has not answered yet")

    async def create(self, wanted: CreateRequest, owner: str | None) -> Link:
        """Store a link under its alias or a generated code; Conflict (alias_taken), or StorageError."""
        self._check_ready()
        now = time.time()
        if wanted.custom_alias is not None:
            link = Link(
                wanted.custom_alias, wanted.long_url, True, owner, now, wanted.expires_at, wanted.max_visits,
                tags=wanted.tags,
            )  # fmt: skip
            try:
                await self.store.insert(link)
            except UniqueViolation:
                # A deleted link's alias too: codes are never reused.
                detail = f"the alias '{wanted.custom_alias}' is taken"
                raise Conflict("alias_taken", detail, field="custom_alias") from None
            # The alias may have been looked up (and remembered as unknown) before it existed.
            await self.cache.forget(link.short_code)
            metrics.SHORTENER_CREATED.labels("alias").inc()
        else:
            for _ in range(MAX_CODE_ATTEMPTS):
                code = await self.keypool.take()
                link = Link(
                    code, wanted.long_url, False, owner, now, wanted.expires_at, wanted.max_visits, tags=wanted.tags
                )
                try:
                    await self.store.insert(link)
                    break
                except UniqueViolation:
                    metrics.SHORTENER_CODE_COLLISIONS.inc()
            else:
                raise StorageError(f"no free short code after {MAX_CODE_ATTEMPTS} attempts")
            metrics.SHORTENER_CREATED.labels("generated").inc()
        self.cache.remember(link.short_code, Target(link.long_url, link.expires_at, link.max_visits))
        self.events.emit(
            UrlCreated(
                short_code=link.short_code,
                short_url=self.short_url(link.short_code),
                long_url=link.long_url,
                owner=owner,
                custom_alias=link.custom_alias,
                expires_at=link.expires_at,
                max_visits=link.max_visits,
            )
        )
        return link

    async def delete(self, link: Link) -> None:
        await self.store.delete(link.short_code, time.time())
        await self.cache.forget(link.short_code)

    def short_url(self, code: str) -> str:
        return f"{self.public_url}/{code}"

    def describe(self, link: Link, *, daily: list[Row] | None = None) -> dict[str, Any]:
        """The creation answer; with `daily`, the metadata answer (counts and state) too."""
        body = {
            "short_url": self.short_url(link.short_code),
            "short_code": link.short_code,
            "long_url": link.long_url,
            "created_at": format_time(link.created_at),
            "expires_at": format_optional(link.expires_at),
            "max_visits": link.max_visits,
            "tags": list(link.tags),
        }
        if daily is None:
            return body
        now = time.time()
        state = "active"
        if link.expires_at is not None and link.expires_at <= now:
            state = "expired"
        elif link.max_visits is not None and link.visits >= link.max_visits:
            state = "visit_limit_reached"
        return {
            **body,
            "custom_alias": link.custom_alias,
            "owner": link.owner,
            "state": state,
            "visits": link.visits,
            "click_count": link.click_count,
            "clicks_by_day": [{"day": row["day"], "agent": row["agent"], "clicks": row["clicks"]} for row in daily],
        }


def _port(scheme: str, netloc: str) -> int:
    try:
        port = urlsplit(f"{scheme}://{netloc}").port
    except ValueError:
        port = None
    return port or (443 if scheme == "https" else 80)
