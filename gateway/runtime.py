"""Everything built from one configuration. A reload builds a new Runtime and swaps it in whole."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Route

from gateway import apikeys, health, openapi, user_tiers
from gateway.access import ScopeMiddleware
from gateway.apikeys import KeyRing
from gateway.client_ip import TrustedProxies
from gateway.config.models import Settings
from gateway.dispatch import Dispatcher
from gateway.edge import EdgeMiddleware
from gateway.engines import Engines
from gateway.events import EventBus
from gateway.exceptions import GatewayError, StorageError
from gateway.identity import IdentityMiddleware, IdentityResolver
from gateway.notify import api as notify_api
from gateway.notify.service import NotificationService
from gateway.observe import ObserveMiddleware
from gateway.proxy.handler import ProxyHandler
from gateway.proxy.upstream import Upstream
from gateway.ratelimit import api as ratelimit_api
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.ratelimit.rule_store import RuleStore
from gateway.ratelimit.service import RateLimitService
from gateway.request_body import BodyLimitMiddleware
from gateway.responses import handle_gateway_error, handle_http_exception
from gateway.routing import Router
from gateway.shortener import api as shortener_api
from gateway.shortener.service import ShortenerService
from gateway.user_tiers import TierStore

logger = logging.getLogger("gateway")
API_PREFIX = "/api/"


class Runtime:
    """The request pipeline: observe → edge checks → identity → rate limit → dispatch (own API, proxy routes)."""

    def __init__(
        self, settings: Settings, engines: Engines, events: EventBus, *, draining: Callable[[], bool] = lambda: False
    ) -> None:
        self.settings = settings
        self.draining = draining
        self.engines = engines
        self.events = events
        server = settings.server
        self.trusted = TrustedProxies(server.trusted_proxies)
        self.upstreams = {name: Upstream(name, upstream) for name, upstream in settings.upstreams.items()}
        self.router = Router(settings.routes)
        self.readiness: dict[str, health.ReadinessCheck] = dict(engines.readiness)
        self.identities = IdentityResolver(settings.identities, settings.ratelimit.tiers, self.trusted)
        self._jwks: asyncio.Task[None] | None = None
        self.keyring = KeyRing(engines.database, refresh_s=settings.identities.key_refresh)
        self.identities.keyring = self.keyring
        self.user_tiers = TierStore(engines.database)
        self.identities.user_tiers = self.user_tiers
        self._key_reloads: asyncio.Task[None] | None = None
        self.ratelimit = RateLimitService(
            settings.ratelimit, engines.scripts, breaker=engines.breaker, events=events, local_engine=engines.embedded
        )
        self.rule_store = RuleStore(engines.database, self.ratelimit)
        self._rule_reloads: asyncio.Task[None] | None = None
        self.shortener = ShortenerService(settings, engines, events)
        self.notifications = NotificationService(settings, engines, events)
        self.proxy = ProxyHandler(
            self.upstreams,
            trusted=self.trusted,
            max_body_bytes=server.max_body_bytes,
            events=events,
            identities=self.identities,
        )
        self.own = Starlette(
            routes=self._own_routes(),
            exception_handlers={HTTPException: handle_http_exception, GatewayError: handle_gateway_error},
        )
        # The endpoints are module-level functions (gateway/*/api.py); they find their service here.
        self.own.state.ratelimit = self.ratelimit
        self.own.state.identities = self.identities
        self.own.state.notifications = self.notifications
        self.own.state.shortener = self.shortener
        self.own.state.keyring = self.keyring
        self.own.state.user_tiers = self.user_tiers
        self.own.state.rule_store = self.rule_store
        # Starlette's trailing-slash redirect builds Location from the client's Host header: a 404 is safer.
        self.own.router.redirect_slashes = False
        own_paths = {
            server.health_path: "_healthz",
            server.ready_path: "_readyz",
            server.metrics_path: "_metrics",
            openapi.OPENAPI_PATH: "_openapi",
            openapi.DOCS_PATH: "_docs",
        }
        dispatcher = Dispatcher(
            router=self.router,
            proxy=self.proxy,
            own_paths=own_paths,
            own_prefixes={API_PREFIX: "_api"},
            own=BodyLimitMiddleware(ScopeMiddleware(self.own), limit=server.limits.max_api_body),
            fallback=self.shortener.redirect,
        )
        # Health, metrics, the API's description and a caller's own rate-limit status are never limited (the
        # status spends nothing).
        exempt = [*own_paths, ratelimit_api.STATUS_PATH]
        limited = RateLimitMiddleware(dispatcher, service=self.ratelimit, exempt_paths=exempt)
        identified = IdentityMiddleware(limited, resolver=self.identities)
        checked = EdgeMiddleware(identified, allow_encoded_slashes=server.allow_encoded_slashes)
        self.app = ObserveMiddleware(checked, trusted=self.trusted, access_log=server.access_log)

    def _own_routes(self) -> list[BaseRoute]:
        server = self.settings.server
        described = openapi.ApiDescription(
            openapi.document(
                health_path=server.health_path,
                ready_path=server.ready_path,
                metrics_path=server.metrics_path,
                notifications=self.notifications.enabled,
                channels=list(self.settings.notifications.channels),
                templates=list(self.settings.notifications.templates),
            )
        )
        return [
            Route(openapi.OPENAPI_PATH, described.openapi, methods=["GET", "HEAD"]),
            Route(openapi.DOCS_PATH, described.docs, methods=["GET", "HEAD"]),
            Route(server.health_path, health.healthz, methods=["GET", "HEAD"]),
            Route(server.ready_path, health.readyz(self.readiness, self.draining), methods=["GET", "HEAD"]),
            Route(server.metrics_path, health.metrics_endpoint, methods=["GET"]),
            *ratelimit_api.ROUTES,
            *apikeys.ROUTES,
            *user_tiers.ROUTES,
            *(notify_api.ROUTES if self.notifications.enabled else []),
            *(shortener_api.ROUTES if self.shortener.enabled else []),
        ]

    async def startup(self) -> None:
        """Opens what needs the event loop; called before the runtime serves its first request."""
        await self.notifications.start()
        await self.shortener.start()
        try:
            await self._load_identities()
        except StorageError as exc:  # the YAML's keys work meanwhile; the reload loop tries again
            logger.warning("managed API keys and stored tiers unavailable until the database answers: %s", exc)
        self._key_reloads = asyncio.get_running_loop().create_task(
            reload_forever(self._load_identities, self.keyring.refresh_s, "API keys and stored tiers"), name="api-keys"
        )
        try:
            await self.rule_store.start()
        except StorageError as exc:  # the YAML's rules apply meanwhile
            logger.warning("managed rate-limit rules unavailable until the database answers: %s", exc)
        self._rule_reloads = asyncio.get_running_loop().create_task(
            reload_forever(self.rule_store.start, self.settings.ratelimit.rule_refresh, "rate-limit rules"),
            name="rate-limit-rules",
        )
        tokens = self.identities.tokens
        if tokens is not None and tokens.fetches_keys:
            self._jwks = asyncio.get_running_loop().create_task(tokens.refresh_forever(), name="jwks")

    async def _load_identities(self) -> None:
        # Each migrates too, for a database that was down at start.
        await self.keyring.start()
        await self.user_tiers.start()

    async def aclose(self) -> None:
        for reloads in (self._key_reloads, self._rule_reloads):
            if reloads is not None:
                reloads.cancel()
                await asyncio.gather(reloads, return_exceptions=True)
        if self._jwks is not None:
            self._jwks.cancel()
            await asyncio.gather(self._jwks, return_exceptions=True)
        await self.notifications.aclose()
        await self.shortener.aclose()
        await asyncio.gather(*(upstream.aclose() for upstream in self.upstreams.values()))


async def reload_forever(load: Callable[[], Awaitable[None]], interval_s: float, what: str) -> None:
    """`load` every `interval_s`; while the database fails, what was loaded before stays (and it migrates on each
    load, for a database that was down at start)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await load()
        except StorageError as exc:
            logger.warning("%s not reloaded (the ones loaded before stay): %s", what, exc)
