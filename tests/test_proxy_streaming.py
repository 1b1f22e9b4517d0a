"""The proxy streams: bounded memory for big bodies, chunked and SSE responses, disconnects, WebSockets."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.proxy_fixtures import (
    UpstreamServer,
    eventually,
    gateway_process,
    gateway_yaml,
    metric,
    raw_upstream,
    scrape,
    serve_gateway,
    settings_for,
)
from tests.upstream_app import CHUNK as UPSTREAM_CHUNK, CHUNKED_PARTS, SSE_GAP_S, SUBPROTOCOL

MiB = 1024 * 1024
BIG = 200 * MiB
#: Far below the 200 MB that passes each way: the gateway must not buffer a body.
MAX_PEAK_RSS = 150 * MiB
#: How long each side of the big transfer stops reading once.
STALL_S = 1.0
CATCH_ALL = """
- name: all
  match: {path_prefix: /}
  upstream: up
"""


async def _repeat(chunk: bytes, times: int) -> AsyncIterator[bytes]:
    for _ in range(times):
        yield chunk


def _sha256_of_repeats(chunk: bytes, times: int) -> str:
    digest = hashlib.sha256()
    for _ in range(times):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
async def test_200mb_each_way_passes_with_bounded_memory(upstream: UpstreamServer, tmp_path: Path) -> None:
    config = gateway_yaml(upstream.url, CATCH_ALL, server="max_body_bytes: 1GiB\nwatch_config: false")
    chunk = bytes(range(256)) * 4096  # 1 MiB, not all one byte, so the hash means something
    with gateway_process(config, tmp_path) as gateway:
        baseline = gateway.status_field("VmRSS")
        timeout = httpx.Timeout(60.0)
        async with httpx.AsyncClient(timeout=timeout) as client:
            # The upstream stops reading for a while: the gateway must hold the client back, not buffer.
            uploaded = await client.post(
                f"{gateway.url}/upload", params={"stall": str(STALL_S)}, content=_repeat(chunk, BIG // len(chunk))
            )

            received = 0
            received_digest = hashlib.sha256()
            async with client.stream("GET", f"{gateway.url}/bytes/{BIG}") as download:
                async for piece in download.aiter_raw():
                    if not received:
                        await asyncio.sleep(STALL_S)  # a slow client: the gateway must hold the upstream back
                    received += len(piece)
                    received_digest.update(piece)
        peak = gateway.status_field("VmHWM")

    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json() == {"body_length": BIG, "body_sha256": _sha256_of_repeats(chunk, BIG // len(chunk))}
    assert download.status_code == 200
    assert download.headers["content-length"] == str(BIG)
    assert received == BIG
    assert received_digest.hexdigest() == _sha256_of_repeats(UPSTREAM_CHUNK, BIG // len(UPSTREAM_CHUNK))
    assert peak < MAX_PEAK_RSS, f"peak RSS {peak / MiB:.0f} MiB (at start {baseline / MiB:.0f} MiB)"


async def test_a_chunked_response_arrives_whole(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/chunked")

    assert response.status_code == 200
    assert response.content == b"".join(CHUNKED_PARTS)
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"


@pytest.mark.parametrize(
    "status_line",
    [pytest.param(b"HTTP/1.1 200 OK", id="http/1.1"), pytest.param(b"HTTP/1.0 200 OK", id="http/1.0")],
)
async def test_a_response_delimited_by_the_close_arrives_whole(status_line: bytes) -> None:
    body = b"".join(b"line %d of a body that ends when the upstream closes\n" % i for i in range(2000))
    answer = status_line + b"\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + body
    async with raw_upstream(answer, close_after=True) as url, serve_gateway(settings_for(url, CATCH_ALL)) as base:
        async with httpx.AsyncClient() as client:
            first = await client.get(f"{base}/one")
            second = await client.get(f"{base}/two")  # the dropped connection is not reused

    assert first.status_code == 200
    assert first.content == body
    assert second.content == body


async def test_a_truncated_body_is_not_passed_off_as_complete() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"t" * 400
    async with raw_upstream(answer, close_after=True) as url, serve_gateway(settings_for(url, CATCH_ALL)) as base:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"{base}/cut")
            text = await scrape(client, base)

    assert metric(text, "gateway_upstream_errors_total", upstream="up", kind="protocol") >= 1


async def test_sse_events_are_flushed_one_by_one(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    arrivals: list[tuple[float, bytes]] = []
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        started = time.monotonic()
        async with client.stream("GET", f"{base}/sse", headers={"Accept": "text/event-stream"}) as response:
            async for chunk in response.aiter_raw():
                arrivals.append((time.monotonic() - started, chunk))

    assert response.headers["content-type"].startswith("text/event-stream")
    body = b"".join(chunk for _, chunk in arrivals)
    assert body == b"event: first\ndata: 1\n\nevent: second\ndata: 2\n\n"
    first_at = next(at for at, _ in arrivals if b"first" in _)
    second_at = next(at for at, chunk in arrivals if b"second" in chunk)
    # The first event is out long before the upstream even produces the second.
    assert first_at < SSE_GAP_S * 0.6
    assert second_at - first_at > SSE_GAP_S * 0.8


async def test_client_disconnect_closes_the_upstream_stream_and_frees_the_pool(upstream: UpstreamServer) -> None:
    settings = settings_for(
        upstream.url,
        """
        - name: narrow
          match: {path_prefix: /}
          upstream: narrow
        """,
        upstreams=f'narrow: {{targets: ["{upstream.url}"], max_connections: 1}}',
    )
    async with serve_gateway(settings) as base:
        for _ in range(5):
            token = uuid.uuid4().hex
            async with httpx.AsyncClient() as client:
                async with client.stream("GET", f"{base}/forever", params={"token": token}) as response:
                    assert response.status_code == 200
                    async for chunk in response.aiter_raw():
                        assert chunk
                        break
                    assert token in (await upstream.stats())["forever_open"]
            # The client is gone; the gateway must close the upstream exchange, not read it forever.
            started = time.monotonic()

            async def stream_closed(token: str = token) -> bool:
                return token not in (await upstream.stats())["forever_open"]

            assert await eventually(stream_closed, timeout=2.0), "the upstream stream is still open"
            assert time.monotonic() - started < 2.0

            # With one connection allowed, a leaked one would make this wait forever.
            async with httpx.AsyncClient(timeout=3.0) as client:
                started = time.monotonic()
                after = await client.get(f"{base}/echo")
                assert after.status_code == 200
                assert time.monotonic() - started < 1.0


WS_ROUTES = """
- name: sockets
  match: {path_prefix: /sock}
  upstream: up
  strip_prefix: true
  websocket: true
- name: plain
  match: {path_prefix: /plain}
  upstream: up
  strip_prefix: true
"""


async def test_websocket_frames_echo_both_ways_with_the_subprotocol(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, WS_ROUTES)
    async with serve_gateway(settings) as base:
        url = base.replace("http://", "ws://") + "/sock/ws"
        async with connect(url, subprotocols=[websockets.Subprotocol(SUBPROTOCOL)]) as ws:
            assert ws.subprotocol == SUBPROTOCOL
            await ws.send("hello, socket")
            assert await ws.recv() == "hello, socket"
            payload = bytes(range(256)) * 300
            await ws.send(payload)
            assert await ws.recv() == payload
            await ws.send("ünïcode ✓")
            assert await ws.recv() == "ünïcode ✓"


async def test_a_route_without_websocket_refuses_the_upgrade(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, WS_ROUTES)
    async with serve_gateway(settings) as base:
        url = base.replace("http://", "ws://") + "/plain/ws"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, subprotocols=[websockets.Subprotocol(SUBPROTOCOL)]):
                pass  # pragma: no cover - the handshake must fail

    assert refused.value.response.status_code == 403
