"""Gateways sharing one engine, as replicas do: each started as uvicorn's lifespan would, with an ASGI client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx

from gateway.app import create_app
from gateway.settings import parse_settings


@asynccontextmanager
async def replicas(config: str, count: int = 2) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            app = create_app(parse_settings(config, environ={}))
            await app.startup()
            stack.push_async_callback(app.shutdown)
            transport = httpx.ASGITransport(app=app)
            clients.append(
                await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://gw"))
            )
        yield clients
