"""The outermost middleware: request id, client address, metrics, the access log, and the error safety net.

Whatever happens further in, the client gets a JSON error body with a status, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.client_ip import TrustedProxies
from gateway.exceptions import GatewayError, ShuttingDown
from gateway.proxy.headers import request_id_from
from gateway.responses import RESPONSE_HEADERS, Headers, send_error, send_gateway_error

access_logger = logging.getLogger("gateway.access")
logger = logging.getLogger("gateway")


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, *, trusted: TrustedProxies, access_log: bool = True) -> None:
        self.app = app
        self.trusted = trusted
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # pragma: no cover - lifespan is handled by the Gateway
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        # The path as the client sent it, for the log: later steps see the normalised one (gateway/edge.py).
        raw_path: bytes | None = scope.get("raw_path")
        headers = scope["headers"]
        request_id = request_id_from(headers)
        peer = scope["client"][0] if scope.get("client") else ""
        forwarded_for = None
        if self.trusted.networks:
            for name, value in headers:
                if name == b"x-forwarded-for":
                    forwarded_for = value.decode("latin-1")
        scope["gateway.request_id"] = request_id
        scope["gateway.client_ip"] = self.trusted.client_ip(peer, forwarded_for)
        status = 0
        request_id_header = (b"x-request-id", request_id.encode())
        # Headers later steps add to the response (the rate limiter's), here rather than in a send wrapper each.
        extra: Headers = []
        scope[RESPONSE_HEADERS] = extra

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                own = message.get("headers", ())
                if extra:
                    # Headers the app set itself win (ASGI response header names are lower-case, Starlette's too).
                    present = {name for name, _ in own}
                    message["headers"] = [*own, *(item for item in extra if item[0] not in present), request_id_header]
                else:
                    message["headers"] = [*own, request_id_header]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_observed)
        except GatewayError as exc:
            if status:
                # The response has started: breaking the connection is the only signal left. Returning with the
                # response unfinished makes the server close it (a traceback would say nothing more).
                logger.warning("request %s broken after its response started: %s", request_id, exc)
                return
            status = exc.status
            await send_gateway_error(send_observed, exc, request_id)
        except asyncio.CancelledError:
            # The server cancels what still runs at the end of the drain (server.drain_timeout): answer it in the
            # gateway's own words rather than leave it to the server's plain-text 500 and a traceback.
            task = asyncio.current_task()
            if task is None or scope["type"] != "http":  # pragma: no cover - always a task under a server
                raise
            task.uncancel()
            if not status:
                status = 503
                await send_gateway_error(send_observed, ShuttingDown("the gateway is shutting down"), request_id)
        except Exception:
            logger.exception("unhandled error for request %s", request_id)
            if status:
                raise
            status = 500
            await send_error(send_observed, 500, "internal_error", "the gateway failed; see its log", request_id)
        finally:
            metrics.IN_FLIGHT.dec()
            duration = time.perf_counter() - start
            route = scope.get("gateway.route")
            route_name = route.name if route is not None else scope.get("gateway.handler", "unmatched")
            if scope["type"] == "http":
                metrics.observe_request(route_name, scope["method"], status or 499, duration)
            if self.access_log:
                log_access(
                    request_id=request_id,
                    client=scope["gateway.client_ip"],
                    method=scope.get("method", "WS"),
                    path=raw_path.decode("latin-1") if raw_path is not None else scope["path"],
                    route=route_name,
                    status=status or 499,
                    duration_ms=round(duration * 1000, 3),
                    upstream=scope.get("gateway.upstream"),
                )


def log_access(**fields: object) -> None:
    """One JSON line on the access log; json.dumps escapes whatever bytes a client put in a field."""
    access_logger.info(json.dumps({"ts": round(time.time(), 3), **fields}, separators=(",", ":")))
