"""Upstream faults: slow, hanging, resetting and truncating upstreams get the documented 502/504, a request is
never replayed beyond what the README promises, and no connection or file descriptor is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from gateway.config import Settings
from gateway.settings import parse_settings
from tests.proxy_fixtures import gateway_yaml, metric, scrape, serve_gateway, settings_for

pytestmark = pytest.mark.faults
ROUTES = "- {name: all, match: {path_prefix: /}, upstream: up}"

#: What the fake upstream does with one request head: it may answer, stall, reset or close.
Behaviour = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class FaultyUpstream:
    behaviour: Behaviour
    url: str = ""
    #: Every request head received, in order (one per request that reached the upstream).
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = _content_length(head)
                if length:
                    await reader.readexactly(length)
                await self.behaviour(head, reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def count(self, start: bytes) -> int:
        return sum(1 for head in self.heads if head.startswith(start))


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@contextlib.asynccontextmanager
async def faulty_upstream(behaviour: Behaviour) -> AsyncIterator[FaultyUpstream]:
    upstream = FaultyUpstream(behaviour)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield upstream
    finally:
        server.close()
        await server.wait_closed()


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def slow_gets_then_silent_close(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if head.startswith(b"GET /slow"):
        await asyncio.sleep(0.3)
        writer.write(OK)
        await writer.drain()
    else:  # reads the request, then closes without a byte of answer
        writer.close()


def with_retries(url: str, retries: int) -> Settings:
    text = gateway_yaml(url, ROUTES).replace(f'targets: ["{url}"]', f'targets: ["{url}"]\n    retries: {retries}')
    return parse_settings(text, environ={})


def open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


@pytest.mark.parametrize(
    ("method", "body"),
    [
        pytest.param("POST", b"", id="POST-empty"),
        pytest.param("POST", b"payload", id="POST"),
        pytest.param("PATCH", b"", id="PATCH-empty"),
    ],
)
async def test_a_non_idempotent_request_is_never_replayed_on_pooled_connections(method: str, body: bytes) -> None:
    async with faulty_upstream(slow_gets_then_silent_close) as upstream:
        settings = settings_for(upstream.url, ROUTES)
        async with serve_gateway(settings) as base, httpx.AsyncClient(timeout=10) as client:
            # Ten slow GETs at once leave ten kept-alive connections in the pool.
            warm = await asyncio.gather(*(client.get(f"{base}/slow/{i}") for i in range(10)))
            assert [r.status_code for r in warm] == [200] * 10
            before = metric(await scrape(client, base), "gateway_upstream_retries_total", upstream="up")
            answer = await client.request(method, f"{base}/write", content=body)
            after = metric(await scrape(client, base), "gateway_upstream_retries_total", upstream="up")

    assert answer.status_code == 502
    assert upstream.count(method.encode() + b" /write") == 1  # sent once: the upstream may have acted on it
    assert after == before


async def test_an_idempotent_request_is_retried_at_most_retries_times() -> None:
    async with faulty_upstream(slow_gets_then_silent_close) as upstream:
        settings = with_retries(upstream.url, 1)
        async with serve_gateway(settings) as base, httpx.AsyncClient(timeout=10) as client:
            warm = await asyncio.gather(*(client.get(f"{base}/slow/{i}") for i in range(10)))
            assert [r.status_code for r in warm] == [200] * 10
            answer = await client.get(f"{base}/reset-me")
            retried = metric(await scrape(client, base), "gateway_upstream_retries_total", upstream="up")

    assert answer.status_code == 502
    # One attempt, plus `retries` (1) more: never once per idle pooled connection.
    assert upstream.count(b"GET /reset-me") == 2
    assert retried >= 1


async def _answer_after(delay: float) -> Behaviour:
    async def behave(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        writer.write(OK)
        await writer.drain()

    return behave


async def hang(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Never answers; its socket goes when the gateway drops the connection (fds here are counted for everyone).
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(reader.read(), 30)
    writer.close()


async def reset_in_head(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-le")
    await writer.drain()
    writer.transport.abort()


async def reset_in_body(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 1000)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()


async def truncated_body(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly-this")
    await writer.drain()
    writer.close()


async def close_without_answer(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


FAULTS = [
    pytest.param("slow", 504, id="slow"),  # slower than the route's read timeout
    pytest.param("hang", 504, id="hang"),
    pytest.param("reset_in_head", 502, id="reset-in-head"),
    pytest.param("close_without_answer", 502, id="close-without-answer"),
    pytest.param("reset_in_body", None, id="reset-in-body"),  # headers sent: the client's connection is broken
    pytest.param("truncated_body", None, id="truncated-body"),
]


@pytest.mark.parametrize(("fault", "status"), FAULTS)
async def test_upstream_faults_get_their_answer_and_leave_nothing_behind(fault: str, status: int | None) -> None:
    behaviour = await _answer_after(1.0) if fault == "slow" else globals()[fault]
    async with faulty_upstream(behaviour) as upstream:
        text = gateway_yaml(upstream.url, ROUTES.replace("upstream: up}", "upstream: up, timeouts: {read: 300ms}}"))
        text = text.replace(f'targets: ["{upstream.url}"]', f'targets: ["{upstream.url}"]\n    retries: 0')
        async with serve_gateway(parse_settings(text, environ={})) as base:
            async with httpx.AsyncClient(timeout=10) as client:
                await client.get(f"{base}/healthz")
                fds_before = open_fds()
                outcomes: list[int | str] = []
                for _ in range(10):
                    try:
                        outcomes.append((await client.post(f"{base}/fault", content=b"body")).status_code)
                    except httpx.HTTPError as exc:
                        outcomes.append(type(exc).__name__)
            await asyncio.sleep(0.5)  # closes settle
            fds_after = open_fds()

    if status is not None:
        assert outcomes == [status] * 10
    else:
        # The status line was out before the fault: the only honest signal left is the broken connection.
        assert all(outcome in ("RemoteProtocolError", "ReadError") for outcome in outcomes), outcomes
    assert upstream.count(b"POST /fault") == 10  # one each: never replayed
    assert fds_after <= fds_before, (fds_before, fds_after)  # the client's connections are closed too
