"""The proxies a user would write by hand with Starlette, one per HTTP client: the baselines of bench/proxy.py.

Each reads the whole upstream body and returns it in one `Response`, with one client shared through the lifespan:

    UPSTREAM_URL=http://127.0.0.1:9000 python -m uvicorn bench.naive_proxies:aiohttp_app --port 8001
    ... bench.naive_proxies:httpx_app
    ... bench.naive_proxies:httpx_aiohttp_app   (needs the httpx-aiohttp package)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aiohttp
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:9000").rstrip("/")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Without dropping these the naive proxy sends invalid framing (both chunked and a length): users learn this first.
SKIPPED_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)


def _forwardable(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in SKIPPED_HEADERS}


def _target(request: Request) -> str:
    query = request.url.query
    return f"{UPSTREAM_URL}{request.url.path}" + (f"?{query}" if query else "")


def _aiohttp_app() -> Starlette:
    session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        async with aiohttp.ClientSession() as session:
            yield

    async def proxy(request: Request) -> Response:
        assert session is not None
        async with session.request(
            request.method,
            _target(request),
            headers=_forwardable(request.headers),
            data=await request.body(),
            allow_redirects=False,
        ) as resp:
            return Response(content=await resp.read(), status_code=resp.status, headers=_forwardable(resp.headers))

    return _catch_all(proxy, lifespan)


def _httpx_app(transport: Callable[[], httpx.AsyncBaseTransport] | None = None) -> Starlette:
    client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal client
        async with httpx.AsyncClient(transport=transport() if transport else None) as client:
            yield

    async def proxy(request: Request) -> Response:
        assert client is not None
        resp = await client.request(
            request.method, _target(request), headers=_forwardable(request.headers), content=await request.body()
        )
        return Response(content=resp.content, status_code=resp.status_code, headers=_forwardable(resp.headers))

    return _catch_all(proxy, lifespan)


def _httpx_aiohttp_app() -> Starlette:
    from httpx_aiohttp import AiohttpTransport

    return _httpx_app(AiohttpTransport)


def _catch_all(
    endpoint: Callable[[Request], object], lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]]
) -> Starlette:
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=METHODS)], lifespan=lifespan)


aiohttp_app = _aiohttp_app()
httpx_app = _httpx_app()


def __getattr__(name: str) -> Starlette:
    # Built on first use so that importing the module does not need the optional httpx-aiohttp package.
    if name == "httpx_aiohttp_app":
        return _httpx_aiohttp_app()
    raise AttributeError(name)
