"""Sends each request to its handler: own endpoints first, then the most specific route, then the fallback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.responses import send_error
from gateway.routing import Router, request_host

#: Called when nothing else matched (the short-code redirect); returns False, having sent nothing, to decline.
Fallback = Callable[[Scope, Receive, Send], Awaitable[bool]]


class Dispatcher:
    def __init__(
        self,
        *,
        router: Router,
        proxy: ASGIApp,
        own_paths: Mapping[str, str],
        own_prefixes: Mapping[str, str],
        own: ASGIApp,
        fallback: Fallback | None = None,
    ) -> None:
        self.router = router
        self.proxy = proxy
        #: Exact paths and prefixes the gateway answers itself, each with its metrics label.
        self.own_paths = dict(own_paths)
        self.own_prefixes = tuple(own_prefixes.items())
        self.own = own
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        label = self.own_paths.get(path)
        if label is None:
            for prefix, prefix_label in self.own_prefixes:
                if path.startswith(prefix):
                    label = prefix_label
                    break
        if label is not None:
            scope["gateway.handler"] = label
            await self.own(scope, receive, send)
            return
        method = scope.get("method", "GET")
        route = self.router.match(request_host(scope["headers"]), path, method)
        if route is None or (scope["type"] == "websocket" and not route.settings.websocket):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "no route"})
                return
            if self.fallback is not None and await self.fallback(scope, receive, send):
                return
            await send_error(send, 404, "not_found", f"no route for {method} {path}", scope["gateway.request_id"])
            return
        scope["gateway.route"] = route
        await self.proxy(scope, receive, send)
