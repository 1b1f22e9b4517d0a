"""JSON bodies for the gateway's own answers: every error is {"error", "detail", "request_id"}."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from gateway.exceptions import GatewayError, InvalidRequest, MethodNotAllowed, NotFound, ShuttingDown

JSON = b"application/json"
Headers = list[tuple[bytes, bytes]]
#: The scope key of the headers that every response to the request gets, whoever answers it: the outermost step
#: (gateway/observe.py) adds them, so that a step in between need not wrap `send` for it.
RESPONSE_HEADERS = "gateway.response_headers"


def error_body(error: str, detail: str, request_id: str | None, **extra: Any) -> bytes:
    """The one error body: {"error", "detail", "request_id", ...context}."""
    return json.dumps(
        {"error": error, "detail": detail, "request_id": request_id, **extra}, separators=(",", ":")
    ).encode()


async def send_body(send: Send, status: int, payload: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", JSON), (b"content-length", str(len(payload)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_json(send: Send, status: int, body: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send_body(send, status, json.dumps(body, separators=(",", ":")).encode(), headers)


async def send_error(
    send: Send,
    status: int,
    error: str,
    detail: str,
    request_id: str | None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> None:
    await send_body(send, status, error_body(error, detail, request_id, **extra), headers)


def error_parts(exc: GatewayError) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    """The extra JSON fields and the headers of the error response for `exc`: one rule for every endpoint."""
    fields: dict[str, Any] = {"field": exc.field} if exc.field is not None else {}
    fields.update(exc.extra)
    headers: list[tuple[bytes, bytes]] = []
    retry_after = exc.retry_after_s()
    if retry_after is not None:
        headers.append((b"retry-after", b"%d" % retry_after))
    if isinstance(exc, (ShuttingDown, InvalidRequest)):
        # Draining: this connection ends. Invalid framing: never parse what follows it as the next request. (A
        # body over its limit is well framed: the server reads and discards the rest, the client reads the 413.)
        headers.append((b"connection", b"close"))
    return fields, headers


async def send_gateway_error(send: Send, exc: GatewayError, request_id: str | None) -> None:
    fields, headers = error_parts(exc)
    await send_error(send, exc.status, exc.error, str(exc), request_id, headers, **fields)


class ErrorResponse(Response):
    """A GatewayError as a Starlette response, for exception handlers."""

    media_type = "application/json"

    def __init__(self, exc: GatewayError, request_id: str | None) -> None:
        fields, headers = error_parts(exc)
        super().__init__(error_body(exc.error, str(exc), request_id, **fields), exc.status)
        self.raw_headers.extend(headers)


async def handle_gateway_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: the own API's endpoints raise, this renders."""
    assert isinstance(exc, GatewayError)
    return ErrorResponse(exc, request.scope.get("gateway.request_id"))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method the route lacks), in the same body."""
    assert isinstance(exc, HTTPException)
    kind = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code)
    if kind is not None:
        mapped: GatewayError = kind(exc.detail)
    else:
        mapped = GatewayError(exc.detail)
        mapped.status, mapped.error = exc.status_code, "http_error"
    response = ErrorResponse(mapped, request.scope.get("gateway.request_id"))
    response.headers.update(exc.headers or {})  # Allow, on a 405
    return response
