"""RateLimitMiddleware: a pure ASGI middleware that any Starlette or FastAPI app can add on its own.

    app.add_middleware(RateLimitMiddleware, service=RateLimitService(settings, EmbeddedEngine()))

Refused requests get 429 (or 503 under the fail-closed policy) and never reach the app; allowed ones get
the rate-limit headers of the tightest window, added to the app's response without clobbering its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config.ratelimit import ANONYMOUS_TIER, HeaderStyle
from gateway.identity import Identity
from gateway.ratelimit.headers import rate_limit_headers
from gateway.ratelimit.service import RateLimitService, Verdict
from gateway.responses import RESPONSE_HEADERS, send_error
from gateway.timestamps import format_reset


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        service: RateLimitService,
        exempt_paths: Iterable[str] = (),
        header_styles: Iterable[HeaderStyle] | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.exempt_paths = frozenset(exempt_paths) | frozenset(service.settings.exempt_paths)
        self.header_styles = tuple(header_styles if header_styles is not None else service.settings.headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exempt_paths or not self.service.rules:
            await self.app(scope, receive, send)
            return
        identity: Identity | None = scope.get("gateway.identity")
        if identity is None:  # used on its own, without the gateway's identity middleware
            client = scope.get("client")
            identity = Identity(client[0] if client else "unknown", ANONYMOUS_TIER, "ip")
        verdict = await self.service.check(identity, scope["path"], scope.get("method", "GET"))
        if verdict is None:
            await self.app(scope, receive, send)
            return
        scope["gateway.ratelimit"] = verdict
        if not verdict.allowed:
            await self._refuse(scope, send, verdict)
            return
        if verdict.decision is None or verdict.result == "shadow_refused" or not self.header_styles:
            await self.app(scope, receive, send)
            return
        headers = rate_limit_headers(verdict.decision, self.header_styles, policy=_policy(verdict))
        response_headers: list[tuple[bytes, bytes]] | None = scope.get(RESPONSE_HEADERS)
        if response_headers is not None:  # in the gateway: its outermost step adds them
            response_headers += headers
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = message.get("headers", ())
                # Headers the app set itself win (ASGI response header names are lower-case, Starlette's too).
                present = {name for name, _ in own}
                message["headers"] = [*own, *(header for header in headers if header[0] not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse(self, scope: Scope, send: Send, verdict: Verdict) -> None:
        request_id = scope.get("gateway.request_id")
        # A request whose cost is over the limit can never pass: no Retry-After, and null in the body.
        retry_after = None if math.isinf(verdict.retry_after) else max(1, math.ceil(verdict.retry_after))
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013, "reason": "rate limited"})
            return
        if verdict.decision is None:  # fail-closed: the engine is unavailable, or overloaded
            reason = "overloaded" if verdict.result == "overloaded_closed" else "unavailable"
            await send_error(
                send,
                503,
                "rate_limit_unavailable",
                f"the rate limiter is {reason} and this rule fails closed",
                request_id,
                [(b"retry-after", str(retry_after or 1).encode())],
                retry_after=retry_after,
            )
            return
        headers = rate_limit_headers(verdict.decision, self.header_styles, refused=True, policy=_policy(verdict))
        tightest = verdict.decision.tightest
        await send_error(
            send,
            429,
            "rate_limited",
            f"rule {verdict.rule.name!r}: {tightest.limit} requests per {tightest.window.name}",
            request_id,
            headers,
            limit=tightest.limit,
            remaining=tightest.remaining,
            reset_at=format_reset(tightest.reset_at),
            retry_after=retry_after,
        )


def _policy(verdict: Verdict) -> bytes | None:
    """The rule's prebuilt RateLimit-Policy; a local decision's (divided limits) is built from its own windows."""
    return None if verdict.result.startswith("local") else verdict.rule.policy
