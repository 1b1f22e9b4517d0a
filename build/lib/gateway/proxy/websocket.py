"""WebSocket pass-through: the handshake goes upstream first, then frames flow both ways until either side closes."""

from __future__ import annotations

import asyncio

import aiohttp
from starlette.types import Receive, Scope, Send

from gateway import metrics
from gateway.proxy.headers import Headers
from gateway.proxy.upstream import Upstream

# aiohttp negotiates these itself for the upstream leg.
_HANDSHAKE = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol", b"host"}
)


async def forward_websocket(
    scope: Scope, receive: Receive, send: Send, upstream: Upstream, headers: Headers, path: str
) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    target = upstream.pick()
    url = "ws" + target.url.removeprefix("http") + path
    try:
        ws = await upstream.session.ws_connect(
            url,
            headers=[
                (name.decode("latin-1"), value.decode("latin-1")) for name, value in headers if name not in _HANDSHAKE
            ],
            protocols=tuple(scope.get("subprotocols", ())),
            autoping=True,
        )
    except (aiohttp.ClientError, TimeoutError):
        upstream.mark_failed(target)
        metrics.UPSTREAM_ERRORS.labels(upstream.name, "connect").inc()
        await send({"type": "websocket.close", "code": 1011, "reason": "upstream unavailable"})
        return
    async with ws:
        await send({"type": "websocket.accept", "subprotocol": ws.protocol})
        to_upstream = asyncio.ensure_future(_client_to_upstream(receive, ws))
        to_client = asyncio.ensure_future(_upstream_to_client(ws, send))
        done, pending = await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if to_client in done and not to_client.cancelled() and to_client.exception() is None:
            # The upstream closed: close the client with the same code.
            code = ws.close_code or 1000
            await send({"type": "websocket.close", "code": code})


async def _client_to_upstream(receive: Receive, ws: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.receive":
            if message.get("bytes") is not None:
                await ws.send_bytes(message["bytes"])
            else:
                await ws.send_str(message.get("text") or "")
        elif message["type"] == "websocket.disconnect":
            await ws.close(code=message.get("code", 1000))
            return


async def _upstream_to_client(ws: aiohttp.ClientWebSocketResponse, send: Send) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            await send({"type": "websocket.send", "text": message.data})
        elif message.type == aiohttp.WSMsgType.BINARY:
            await send({"type": "websocket.send", "bytes": message.data})
        elif message.type == aiohttp.WSMsgType.ERROR:
            break
