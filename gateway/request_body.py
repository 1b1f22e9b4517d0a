"""Bodies sent to the gateway's own API: capped before they are read, parsed strictly.

`BodyLimitMiddleware` wraps the own API: a declared Content-Length over `server.limits.max_api_body` is a 413
before any endpoint runs (so before authentication, and without reading a byte), and a chunked body is cut off
at the same size. `read_json()` is the one JSON reader every endpoint uses: the body must be declared JSON
(415 otherwise) and parse as strict JSON: no NaN or Infinity, no duplicate keys, no nesting deeper than
MAX_DEPTH, valid UTF-8 (400 naming `body` otherwise).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.exceptions import BodyTooLarge, InvalidBody, InvalidField, UnsupportedMediaType
from gateway.responses import send_gateway_error

MAX_DEPTH = 64


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - the own API takes no WebSockets
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope["headers"]:
            if name == b"content-length" and int(value) > limit:
                # Answered before a byte is read; the server discards the rest, so the client can read this.
                error = BodyTooLarge(f"the body is over {limit} bytes")
                await send_gateway_error(send, error, scope.get("gateway.request_id"))
                return
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"the body is over {limit} bytes")
            return message

        await self.app(scope, capped, send)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r} appears twice in one object")
            seen.add(key)
    return result


def parse_json(raw: bytes) -> Any:
    """Strict JSON from bytes; raises InvalidBody."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise InvalidBody("the body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidBody(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise InvalidBody(f"the body is not valid JSON: {exc}") from None
    if _depth(value) > MAX_DEPTH:
        raise InvalidBody(f"the body is nested more than {MAX_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    # Iterative, so a deep value cannot exhaust the stack here either.
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


async def read_json(request: Request) -> Any:
    """The request's JSON body (None when empty); raises UnsupportedMediaType or InvalidBody."""
    raw = await request.body()
    if raw and not is_json(request):
        raise UnsupportedMediaType("the body must be sent as Content-Type: application/json")
    return parse_json(raw)


async def read_fields(request: Request, known: tuple[str, ...]) -> dict[str, Any]:
    """`read_json()` of a body that must be a JSON object with no field outside `known` (400 naming one)."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidBody("the body must be a JSON object")
    unknown = set(body) - set(known)
    if unknown:
        raise InvalidField(sorted(unknown)[0], f"unknown field (expected {', '.join(known)})")
    return body
