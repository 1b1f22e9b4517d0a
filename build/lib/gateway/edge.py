"""What the edge refuses before any other step sees a request, and the one path every later step matches on.

A request is only forwarded if it can be forwarded unambiguously (RFC 9112 §6.1, §6.3, §7.6.1; RFC 9110 §7.6.1):

- `Connection` may not name a header needed to frame or route the request (Content-Length, Transfer-Encoding,
  Host): a proxy that honoured it would strip the framing of a body it still forwards, and one request would
  become two upstream. Such a request is a 400, never "fixed" by ignoring the token.
- Transfer-Encoding must be exactly `chunked` (400 when chunked is not the final coding, 501 for codings the
  gateway does not implement), never beside Content-Length, never in HTTP/1.0; Content-Length is one run of
  digits, given once.
- Exactly one Host in HTTP/1.1, a valid host[:port]: it picks the route.
- The path is normalised once (gateway/paths.py) into `scope["path"]` (decoded, for matching) and
  `scope["raw_path"]` (what the upstream receives); a path that cannot be normalised is a 400.

uvicorn's parser (llhttp) already refuses most malformed framing; these checks hold whatever server runs the app.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.exceptions import InvalidRequest
from gateway.paths import InvalidPath, normalize_path

#: Headers a Connection option may never name: the request's framing and its routing.
_NOT_HOP_BY_HOP = frozenset({b"content-length", b"transfer-encoding", b"host"})
_CHECKED = frozenset({b"content-length", b"transfer-encoding", b"connection", b"host"})
# RFC 3986 host (reg-name, IPv4, or a bracketed IPv6 literal) and an optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{1,5})?")


def check_head(scope: Scope) -> None:
    """Raise InvalidRequest unless the request's framing and routing headers have exactly one meaning."""
    lengths: list[bytes] = []
    codings: list[bytes] = []
    hosts: list[bytes] = []
    for name, value in scope["headers"]:
        if name not in _CHECKED:
            continue
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings.append(value)
        elif name == b"host":
            hosts.append(value)
        else:
            for token in value.split(b","):
                if token.strip().lower() in _NOT_HOP_BY_HOP:
                    raise InvalidRequest(
                        400, "Connection", f"Connection may not name {token.strip().decode('latin-1')!r}"
                    )
    # RFC 9112 §3.2: exactly one Host in HTTP/1.1, and a valid one: it picks the route.
    if len(hosts) > 1:
        raise InvalidRequest(400, "Host", "Host given more than once")
    if hosts and not _HOST.fullmatch(hosts[0]):
        raise InvalidRequest(400, "Host", "Host is not a valid host[:port]")
    if not hosts and scope.get("http_version") == "1.1":
        raise InvalidRequest(400, "Host", "an HTTP/1.1 request needs a Host header")
    if codings:
        if lengths:
            raise InvalidRequest(400, "Transfer-Encoding", "Transfer-Encoding and Content-Length together")
        if scope.get("http_version") == "1.0":
            raise InvalidRequest(400, "Transfer-Encoding", "Transfer-Encoding in an HTTP/1.0 request")
        tokens = [token.strip().lower() for value in codings for token in value.split(b",")]
        if tokens[-1] != b"chunked":
            raise InvalidRequest(400, "Transfer-Encoding", "chunked must be the final transfer coding")
        if len(tokens) > 1:
            raise InvalidRequest(501, "Transfer-Encoding", "only the chunked transfer coding is implemented")
    elif lengths:
        if len(lengths) > 1:
            raise InvalidRequest(400, "Content-Length", "Content-Length given more than once")
        if not lengths[0].isdigit():
            raise InvalidRequest(400, "Content-Length", "Content-Length must be a decimal number")


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, allow_encoded_slashes: bool = False) -> None:
        self.app = app
        self.allow_encoded_slashes = allow_encoded_slashes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # pragma: no cover - lifespan is handled by the Gateway
            await self.app(scope, receive, send)
            return
        try:
            if scope["type"] == "http":
                check_head(scope)
            raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
            path = normalize_path(raw, allow_encoded_slashes=self.allow_encoded_slashes)
        except (InvalidRequest, InvalidPath) as exc:
            if isinstance(exc, InvalidPath):
                exc = InvalidRequest(400, "path", str(exc))
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})
                return
            raise exc from None  # rendered by gateway/observe.py, with Connection: close
        scope["path"] = path.decoded
        scope["raw_path"] = path.encoded
        await self.app(scope, receive, send)
