"""The upstream the proxy tests put behind the gateway: echoes, odd statuses, streams, uploads and a WebSocket.

    python -m uvicorn tests.upstream_app:app --port 9001

Every request that carries an X-Test-Token header is counted under that token, so a test can tell whether a
request reached the upstream at all (GET /stats).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CHUNK = bytes(range(256)) * 256  # 64 KiB
HEAD_LENGTH = 12345
SUBPROTOCOL = "echo.v1"
SSE_GAP_S = 0.5
CHUNKED_PARTS = [b"first part,", b"second part,", b"third and last part"]

#: Counters read through GET /stats.
STATS: Counter[str] = Counter()
#: Requests seen per X-Test-Token header.
TOKENS: Counter[str] = Counter()
#: Tokens of the /forever streams that are running now.
FOREVER_OPEN: set[str] = set()
#: Tokens of the /slow requests that are waiting now.
SLOW_OPEN: set[str] = set()


def gzip_body() -> bytes:
    """The exact bytes /gzip sends: fixed mtime, so a test can compare them byte for byte."""
    return gzip.compress(b"compressed payload " * 500, mtime=0)


async def _digest(request: Request, stall: float = 0.0) -> tuple[int, str]:
    """Length and sha256 of the request body, read chunk by chunk and never held whole.

    With `stall`, stop reading for that many seconds after the first chunk: a slow consumer.
    """
    length = 0
    digest = hashlib.sha256()
    async for chunk in request.stream():
        if stall and length == 0:
            await asyncio.sleep(stall)
        length += len(chunk)
        digest.update(chunk)
    return length, digest.hexdigest()


async def echo(request: Request) -> Response:
    length, sha256 = await _digest(request)
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "raw_path": request.scope["raw_path"].decode("latin-1"),
            "query": request.scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            "body_length": length,
            "body_sha256": sha256,
        },
        headers={"x-request-id": "made-by-the-upstream"},  # the gateway's own must replace it
    )


async def upload(request: Request) -> Response:
    length, sha256 = await _digest(request, float(request.query_params.get("stall", "0")))
    STATS["uploads"] += 1
    return JSONResponse({"body_length": length, "body_sha256": sha256})


async def cookies(request: Request) -> Response:
    response = PlainTextResponse("two cookies\n")
    response.headers.append("set-cookie", "a=1; Path=/")
    response.headers.append("set-cookie", "b=2; Path=/; HttpOnly")
    return response


async def own_ratelimit(request: Request) -> Response:
    # An upstream that limits on its own: the gateway must not clobber (or repeat) its header.
    return PlainTextResponse("limited upstream\n", headers={"x-ratelimit-limit": "upstream-owned"})


async def status(request: Request) -> Response:
    return Response(status_code=request.path_params["code"])


async def head_aware(request: Request) -> Response:
    headers = {"content-length": str(HEAD_LENGTH), "content-type": "application/octet-stream"}
    if request.method == "HEAD":
        return Response(headers=headers)
    return Response(b"h" * HEAD_LENGTH, headers=headers)


async def gzipped(request: Request) -> Response:
    return Response(gzip_body(), headers={"content-encoding": "gzip", "content-type": "text/plain"})


async def chunked(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for part in CHUNKED_PARTS:
            await asyncio.sleep(0.02)
            yield part

    return StreamingResponse(parts(), media_type="text/plain")  # no Content-Length: sent chunked


async def sse(request: Request) -> Response:
    async def events() -> AsyncIterator[bytes]:
        yield b"event: first\ndata: 1\n\n"
        await asyncio.sleep(SSE_GAP_S)
        yield b"event: second\ndata: 2\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


async def stream_bytes(request: Request) -> Response:
    n: int = request.path_params["n"]

    async def chunks() -> AsyncIterator[bytes]:
        left = n
        while left > 0:
            size = min(left, len(CHUNK))
            yield CHUNK if size == len(CHUNK) else CHUNK[:size]
            left -= size

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={"content-length": str(n)})


async def _endless(token: str) -> AsyncGenerator[bytes, None]:
    FOREVER_OPEN.add(token)
    STATS["forever_started"] += 1
    try:
        while True:
            yield CHUNK[:1024]
            await asyncio.sleep(0.02)
    finally:
        FOREVER_OPEN.discard(token)
        STATS["forever_closed"] += 1


class Forever:
    """Streams until the client goes away, then closes its generator (counted in /stats)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = Request(scope).query_params.get("token", "")
        chunks = _endless(token)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})

        async def pump() -> None:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        pumping = asyncio.ensure_future(pump())
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)
            await chunks.aclose()


async def stats(request: Request) -> Response:
    return JSONResponse(
        {
            "counters": dict(STATS),
            "tokens": dict(TOKENS),
            "forever_open": sorted(FOREVER_OPEN),
            "slow_open": sorted(SLOW_OPEN),
        }
    )


async def slow(request: Request) -> Response:
    seconds = float(request.query_params.get("s", "1"))
    token = request.query_params.get("token", "")
    SLOW_OPEN.add(token)
    try:
        await asyncio.sleep(seconds)
    finally:
        SLOW_OPEN.discard(token)
    return PlainTextResponse(f"slept {seconds}s\n")


async def redirect(request: Request) -> Response:
    """302 to ?to=; with ?absolute=1 the Location names this server itself (scheme://host:port)."""
    location = request.query_params["to"]
    if request.query_params.get("absolute"):
        host, port = request.scope["server"]
        location = f"http://{host}:{port}{location}"
    return Response(status_code=302, headers={"location": location})


async def websocket_echo(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
            else:
                await websocket.send_text(message["text"])
    except WebSocketDisconnect:
        return


class CountTokens:
    """Counts every request under its X-Test-Token header before the app sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-token":
                    TOKENS[value.decode("latin-1")] += 1
        await self.app(scope, receive, send)


app = CountTokens(
    Starlette(
        routes=[
            Route("/stats", stats),
            Route("/upload", upload, methods=["POST", "PUT"]),
            Route("/cookies", cookies),
            Route("/own-ratelimit", own_ratelimit),
            Route("/status/{code:int}", status, methods=ALL_METHODS),
            Route("/head", head_aware, methods=["GET", "HEAD"]),
            Route("/gzip", gzipped),
            Route("/chunked", chunked),
            Route("/sse", sse),
            Route("/bytes/{n:int}", stream_bytes),
            Route("/forever", Forever()),
            Route("/slow", slow),
            Route("/redirect", redirect),
            Route("/{base:path}/redirect", redirect),
            WebSocketRoute("/ws", websocket_echo),
            WebSocketRoute("/{base:path}/ws", websocket_echo),
            Route("/{rest:path}", echo, methods=ALL_METHODS),
        ]
    )
)
