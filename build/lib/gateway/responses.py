"""JSON bodies for the gateway's own answers: every error is {"error", "detail", "request_id"}."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from gateway.exceptions import CircuitOpen, GatewayError, InvalidRequest, ShuttingDown, StorageError

JSON = b"application/json"
#: Retry-After of an unavailable store whose breaker cannot say when it will be back.
STORAGE_RETRY_AFTER_S = 5


async def send_json(send: Send, status: int, body: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", JSON), (b"content-length", str(len(payload)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_error(
    send: Send,
    status: int,
    error: str,
    detail: str,
    request_id: str | None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> None:
    await send_json(send, status, {"error": error, "detail": detail, "request_id": request_id, **extra}, headers)


def error_parts(exc: GatewayError) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    """The extra JSON fields and the headers of the error response for `exc`: one rule for every endpoint."""
    fields: dict[str, Any] = {"field": exc.field} if exc.field is not None else {}
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(exc, StorageError):
        seconds = max(1, math.ceil(exc.retry_after)) if isinstance(exc, CircuitOpen) else STORAGE_RETRY_AFTER_S
        headers.append((b"retry-after", b"%d" % seconds))
    if isinstance(exc, ShuttingDown):
        headers += [(b"retry-after", b"1"), (b"connection", b"close")]
    if isinstance(exc, InvalidRequest):
        # The request's framing cannot be trusted: never parse what follows it as the next request. (A body over
        # its limit is well framed: the server reads and discards the rest, and the client can read the 413.)
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
        body = {"error": exc.error, "detail": str(exc), "request_id": request_id, **fields}
        super().__init__(json.dumps(body, separators=(",", ":")), exc.status)
        self.raw_headers.extend(headers)


async def handle_gateway_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: the own API's endpoints raise, this renders."""
    assert isinstance(exc, GatewayError)
    return ErrorResponse(exc, request.scope.get("gateway.request_id"))


def iso_time(epoch: float) -> str:
    """RFC 3339 UTC, rounded up to the second (a reset never reads earlier than it is)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(epoch)))
