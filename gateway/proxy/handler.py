"""Forwards a routed HTTP request to its upstream, streaming the body both ways with bounded memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.types import Message, Receive, Scope, Send

from gateway import metrics
from gateway.client_ip import TrustedProxies
from gateway.events import EventBus, UpstreamFailed
from gateway.exceptions import (
    BodyTooLarge,
    GatewayError,
    InvalidRequest,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.identity import IdentityResolver
from gateway.proxy.headers import FORWARDED, Headers, dropping, rewrite_location, strip_hop_by_hop
from gateway.proxy.http1 import ConnectError, ProtocolError, RequestRefused, Response, StaleConnection
from gateway.proxy.upstream import Target, Upstream
from gateway.proxy.websocket import forward_websocket
from gateway.routing import Route

WATCH_DELAY_S = 0.05
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_NO_BODY_STATUS = frozenset({204, 304})
# Dropped on the way upstream: hop-by-hop ones, ours to set, Expect (uvicorn answers 100-continue itself), and
# Content-Length: the proxy frames every upstream request itself, from the body it really forwards.
_DROP_REQUEST = FORWARDED | {b"host", b"expect", b"content-length"}
# The gateway sets its own X-Request-ID on every response.
_DROP_RESPONSE = dropping({b"x-request-id"})


class ClientDisconnected(Exception):
    """The client went away while its request body was being read."""


class _RequestBody:
    """The client's body as an async iterator, with a size cap; tells when it is finished or broken."""

    def __init__(self, receive: Receive, limit: int, on_done: Callable[[], None]) -> None:
        self._receive = receive
        self._limit = limit
        self._on_done = on_done
        self.started = False
        self.too_large = False
        self.disconnected = False

    async def stream(self) -> AsyncIterator[bytes]:
        self.started = True
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                self.too_large = True
                raise BodyTooLarge(f"request body is over {self._limit} bytes")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self._on_done()
                return


class _DisconnectWatch:
    """Once the request body is read, waits for http.disconnect and cancels the handler's task.

    Most exchanges finish in a few milliseconds, so the watching task is only created if the exchange is
    still running after WATCH_DELAY_S: a timer handle costs far less than a task per request.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._owner = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self.disconnected = False

    def start(self) -> None:
        if self._timer is None and self._task is None:
            self._timer = asyncio.get_running_loop().call_later(WATCH_DELAY_S, self._spawn)

    def _spawn(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                if self._owner is not None:
                    self._owner.cancel()
                return

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


class ProxyHandler:
    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        *,
        trusted: TrustedProxies,
        max_body_bytes: int,
        events: EventBus | None = None,
        identities: IdentityResolver | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.trusted = trusted
        self.max_body_bytes = max_body_bytes
        self.events = events
        self.identities = identities
        own = identities.upstream_header_names if identities is not None else frozenset()
        client = identities.client_headers if identities is not None else frozenset()
        self._drop = dropping(_DROP_REQUEST, own, client)
        #: For routes with forward_identity_headers: the client's identity headers pass, the gateway's never do.
        self._drop_forwarding = dropping(_DROP_REQUEST, own)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: Route = scope["gateway.route"]
        upstream = self.upstreams[route.settings.upstream]
        if scope["type"] == "websocket":
            headers = self._request_headers(scope, route)
            target = self._upstream_target(scope, route).decode("ascii")
            await forward_websocket(scope, receive, send, upstream, headers, target)
            return
        watch = _DisconnectWatch(receive)
        try:
            await self._forward(scope, receive, send, route, upstream, watch)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if watch.disconnected and task is not None and task.uncancel() == 0:
                metrics.CLIENT_DISCONNECTS.labels(route.name).inc()
                return  # the client is gone; the upstream response was closed on the way out
            raise
        finally:
            watch.stop()

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, route: Route, upstream: Upstream, watch: _DisconnectWatch
    ) -> None:
        method: str = scope["method"]
        limit = route.settings.max_body_bytes if route.settings.max_body_bytes is not None else self.max_body_bytes
        body, length = self._request_body(scope, receive, limit, watch)
        if body is None:
            watch.start()
        timeouts = route.settings.timeouts or upstream.settings.timeouts
        read_timeout = timeouts.read or None
        headers = self._request_headers(scope, route)
        if length is not None:
            headers.append((b"content-length", b"%d" % length))
        chunked = body is not None and length is None
        request_target = self._upstream_target(scope, route)
        attempts = 1 + upstream.settings.retries if method in IDEMPOTENT else 1
        fresh = False
        for attempt in range(attempts):
            target = upstream.pick()
            scope["gateway.upstream"] = target.url
            try:
                async with asyncio.timeout(timeouts.total or None):
                    response = await target.pool.request(
                        method.encode(),
                        target.base_path.encode() + request_target,
                        self._with_host(headers, route, target),
                        body.stream() if body is not None else None,
                        chunked=chunked,
                        read_timeout=read_timeout,
                        fresh=fresh,
                    )
                break
            except StaleConnection as exc:
                # Idempotent (or attempts would be 1): sent again within the same `retries` budget, on a new
                # connection, since the other kept-alive ones may be just as stale.
                if attempt + 1 < attempts:
                    metrics.UPSTREAM_RETRIES.labels(upstream.name).inc()
                    fresh = True
                    continue
                raise self._failure(scope, upstream, exc, body) from exc
            except ConnectError as exc:
                upstream.mark_failed(target)
                if attempt + 1 < attempts and (body is None or not body.started):
                    metrics.UPSTREAM_RETRIES.labels(upstream.name).inc()
                    continue
                self._upstream_error(scope, upstream, "connect", exc)
                raise UpstreamConnectError(f"cannot connect to the upstream: {exc}") from exc
            except RequestRefused as exc:
                raise InvalidRequest(400, "headers", f"the request cannot be forwarded: {exc}") from exc
            except (ProtocolError, TimeoutError, ClientDisconnected, BodyTooLarge) as exc:
                if body is not None and body.disconnected:
                    return  # the client is gone: nobody to answer
                raise self._failure(scope, upstream, exc, body) from exc
        await self._respond(scope, send, route, upstream, target, response, read_timeout)

    async def _respond(
        self,
        scope: Scope,
        send: Send,
        route: Route,
        upstream: Upstream,
        target: Target,
        response: Response,
        read_timeout: float | None,
    ) -> None:
        try:
            headers = strip_hop_by_hop(response.headers, _DROP_RESPONSE)
            if route.public_prefix is not None:
                headers = self._rewrite_locations(headers, route, target)
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            if scope["method"] == "HEAD" or response.status in _NO_BODY_STATUS:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            try:
                while True:
                    chunk = await response.read(read_timeout)
                    done = response.at_eof
                    message: Message = {"type": "http.response.body", "body": chunk, "more_body": not done}
                    await send(message)
                    if done:
                        return
            except (ProtocolError, TimeoutError) as exc:
                # Headers are out: the only honest signal left is to break the connection.
                raise self._failure(scope, upstream, exc, None) from exc
        finally:
            # Synchronous: cannot be interrupted by cancellation, so the pool never leaks a connection.
            response.close()

    def _failure(self, scope: Scope, upstream: Upstream, exc: BaseException, body: _RequestBody | None) -> GatewayError:
        if body is not None and body.too_large or isinstance(exc, BodyTooLarge):
            return BodyTooLarge(f"request body is over the limit of {body._limit if body else 0} bytes")
        if isinstance(exc, TimeoutError):
            self._upstream_error(scope, upstream, "timeout", exc)
            return UpstreamTimeout("the upstream did not answer in time")
        self._upstream_error(scope, upstream, "protocol", exc)
        return UpstreamError(f"the upstream broke the exchange: {exc}")

    def _upstream_error(self, scope: Scope, upstream: Upstream, kind: str, exc: BaseException) -> None:
        metrics.UPSTREAM_ERRORS.labels(upstream.name, kind).inc()
        if self.events is not None:
            route: Route = scope["gateway.route"]
            self.events.emit(
                UpstreamFailed(
                    upstream=upstream.name,
                    route=route.name,
                    kind=kind,
                    target=scope.get("gateway.upstream"),
                    detail=str(exc)[:200],
                    request_id=scope["gateway.request_id"],
                )
            )

    def _request_body(
        self, scope: Scope, receive: Receive, limit: int, watch: _DisconnectWatch
    ) -> tuple[_RequestBody | None, int | None]:
        """The body to stream (None: there is none) and the client's Content-Length (None: none, or chunked).

        gateway/edge.py has refused every ambiguous framing, so Transfer-Encoding here means exactly chunked.
        """
        length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None and length > limit:
            raise BodyTooLarge(f"request body of {length} bytes is over the limit of {limit} bytes")
        if not chunked and not length:
            return None, length
        return _RequestBody(receive, limit, watch.start), length

    def _request_headers(self, scope: Scope, route: Route | None = None) -> Headers:
        incoming = scope["headers"]
        peer = scope["client"][0] if scope.get("client") else ""
        trusted = self.trusted.is_trusted(peer)
        forwarded_for = forwarded_proto = forwarded_host = host = None
        for name, value in incoming:
            if name == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            elif name == b"x-forwarded-proto":
                forwarded_proto = value
            elif name == b"x-forwarded-host":
                forwarded_host = value
            elif name == b"host":
                host = value
        forwarding = route is not None and route.settings.forward_identity_headers
        headers = strip_hop_by_hop(incoming, self._drop_forwarding if forwarding else self._drop)
        peer_bytes = peer.encode()
        headers.append(
            (b"x-forwarded-for", forwarded_for + b", " + peer_bytes if trusted and forwarded_for else peer_bytes)
        )
        headers.append(
            (b"x-forwarded-proto", forwarded_proto if trusted and forwarded_proto else scope["scheme"].encode())
        )
        original_host = forwarded_host if trusted and forwarded_host else host
        if original_host:
            headers.append((b"x-forwarded-host", original_host))
        headers.append((b"x-request-id", scope["gateway.request_id"].encode()))
        identity = scope.get("gateway.identity")
        if identity is not None and self.identities is not None:
            headers.extend(self.identities.upstream_headers(identity))
        if host is not None:
            headers.append((b"host", host))  # replaced by the target's in _with_host unless preserve_host
        return headers

    @staticmethod
    def _with_host(headers: Headers, route: Route, target: Target) -> Headers:
        if route.settings.preserve_host:
            return headers
        return [(name, value) for name, value in headers if name != b"host"] + [(b"host", target.netloc.encode())]

    @staticmethod
    def _upstream_target(scope: Scope, route: Route) -> bytes:
        """The request target, from the normalised raw path (gateway/edge.py): never a decoded byte."""
        path: bytes = scope["raw_path"]
        prefix = route.public_prefix
        if prefix is not None:
            encoded_prefix = prefix.encode("ascii")
            if not path.startswith(encoded_prefix):
                # Only a prefix with characters the client escaped differently; the bytes cannot be rewritten.
                raise InvalidRequest(400, "path", f"the path does not start with the route's prefix {prefix!r}")
            path = route.upstream_path(path.decode("ascii")).encode("ascii")
        query: bytes = scope.get("query_string", b"")
        return path + b"?" + query if query else path

    @staticmethod
    def _rewrite_locations(headers: Headers, route: Route, target: Target) -> Headers:
        assert route.public_prefix is not None
        upstream_prefix = target.base_path + route.upstream_path(route.public_prefix)
        result = []
        for name, value in headers:
            if name in (b"location", b"content-location"):
                location = rewrite_location(
                    value.decode("latin-1"), route.public_prefix, upstream_prefix, target.netloc
                )
                value = location.encode("latin-1")
            result.append((name, value))
        return result
