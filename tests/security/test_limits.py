"""What a client can make the gateway hold: request heads, slow heads, connections, and bodies for its own API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest

from gateway.settings import parse_settings
from tests.notify.harness import ADMIN_KEY, gateway_yaml
from tests.proxy_fixtures import serve_gateway
from tests.security.conftest import gateway_before, json_of, send_raw, status_of

LIMITS = """
limits:
  max_request_line: 1KiB
  max_header_line: 1KiB
  max_header_bytes: 4KiB
  max_headers: 20
  header_timeout: 1s
"""


@pytest.mark.parametrize(
    ("head", "status", "error"),
    [
        pytest.param(b"GET /app/" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "uri_too_long", id="line"),
        pytest.param(
            b"GET /app/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 2000 + b"\r\n\r\n",
            431,
            "request_header_fields_too_large",
            id="one-header-line",
        ),
        pytest.param(
            b"GET /app/x HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(30)) + b"\r\n",
            431,
            "request_header_fields_too_large",
            id="header-count",
        ),
        pytest.param(
            b"GET /app/x HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 900) for i in range(8)),
            431,
            "request_header_fields_too_large",
            id="head-total",
        ),
    ],
)
async def test_request_heads_over_the_limits_are_refused_before_the_pipeline(
    head: bytes, status: int, error: str
) -> None:
    async with gateway_before(server=LIMITS) as (base, upstream):
        response = await send_raw(base, head)

    assert status_of(response) == status, response[:300]
    body = json_of(response)
    assert isinstance(body, dict) and body["error"] == error and body["request_id"]
    assert upstream.bytes_received == b""


async def test_a_64_mib_header_line_is_cut_off_after_the_head_limit() -> None:
    async with gateway_before() as (base, upstream):
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        sent = 0
        started = time.monotonic()

        async def write() -> None:
            nonlocal sent
            writer.write(b"GET /app/x HTTP/1.1\r\nHost: a\r\nX-Huge: ")
            chunk = b"h" * (1024 * 1024)
            with contextlib.suppress(ConnectionError):
                for _ in range(64):
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)

        writing = asyncio.ensure_future(write())
        async with asyncio.timeout(10):
            response = await reader.read(65536)
        elapsed = time.monotonic() - started
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await writing
        writer.close()

    assert status_of(response) == 431
    # The default 32 KiB head limit: refused long before 64 MiB were read (socket buffers hold a few MiB).
    assert sent < 16 * 1024 * 1024, sent
    assert elapsed < 5
    assert upstream.bytes_received == b""


async def test_twenty_thousand_headers_are_refused() -> None:
    head = b"GET /app/x HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(20_000)) + b"\r\n"
    async with gateway_before() as (base, upstream):
        response = await send_raw(base, head)

    assert status_of(response) == 431
    assert upstream.bytes_received == b""


async def test_slow_heads_are_timed_out_and_silent_connections_closed() -> None:
    async with gateway_before(server=LIMITS) as (base, upstream):
        host, port = base.removeprefix("http://").split(":")
        dribblers = [await asyncio.open_connection(host, int(port)) for _ in range(200)]
        silent = [await asyncio.open_connection(host, int(port)) for _ in range(20)]
        started = time.monotonic()

        async def dribble(writer: asyncio.StreamWriter) -> None:
            writer.write(b"GET /app/x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            with contextlib.suppress(ConnectionError):
                for _ in range(40):  # one header byte every 0.1 s: a 4 s head, were it allowed
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        feeding = [asyncio.ensure_future(dribble(writer)) for _, writer in dribblers]
        async with asyncio.timeout(5):
            answers = await asyncio.gather(*(reader.read() for reader, _ in dribblers))
            quiet = await asyncio.gather(*(reader.read() for reader, _ in silent))
        elapsed = time.monotonic() - started
        for task in feeding:
            task.cancel()
        await asyncio.gather(*feeding, return_exceptions=True)
        for _, writer in dribblers + silent:
            writer.close()

    assert elapsed < 3, elapsed  # header_timeout 1s, not the 4 s the clients wanted
    assert {status_of(answer) for answer in answers} == {408}
    assert all(json_of(answer)["error"] == "request_timeout" for answer in answers)  # type: ignore[index]
    assert quiet == [b""] * 20  # nothing sent, nothing answered: closed quietly
    assert upstream.bytes_received == b""


async def test_connections_per_client_address_are_capped() -> None:
    server = "limits: {max_connections_per_ip: 5}"
    async with gateway_before(server=server) as (base, upstream):
        host, port = base.removeprefix("http://").split(":")
        held = [await asyncio.open_connection(host, int(port)) for _ in range(5)]
        await asyncio.sleep(0.05)
        refused = await send_raw(base, b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n")
        held[0][1].close()
        await held[0][1].wait_closed()
        await asyncio.sleep(0.1)
        admitted = await send_raw(base, b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n")
        for _, writer in held[1:]:
            writer.close()

    assert status_of(refused) == 429
    assert json_of(refused)["error"] == "too_many_connections"  # type: ignore[index]
    assert status_of(admitted) == 200
    assert len(upstream.requests) == 1


@contextlib.asynccontextmanager
async def notifying_gateway(server: str = "") -> AsyncIterator[str]:
    text = gateway_yaml('engine: {database: {url: "sqlite:///:memory:"}}\n', channels="log: {plugin: log}")
    text = text.replace("server: {access_log: false,", "server: {" + server + " access_log: false,")
    async with serve_gateway(parse_settings(text, environ={})) as base:
        yield base


OWN_ENDPOINTS = [
    pytest.param("POST /api/v1/notifications/receipts/log", id="receipts"),
    pytest.param("POST /api/v1/notifications", id="notifications"),
    pytest.param("PUT /api/v1/users/alice/preferences", id="preferences"),
    pytest.param("POST /api/v1/rate-limit/check", id="ratelimit-check"),
    pytest.param("POST /api/v1/urls", id="urls"),
]


@pytest.mark.parametrize("endpoint", OWN_ENDPOINTS)
async def test_an_oversized_body_to_the_own_api_is_a_413_before_reading_and_before_authentication(
    endpoint: str,
) -> None:
    method, path = endpoint.split()
    head = f"{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n".encode()
    async with notifying_gateway() as base:
        started = time.monotonic()
        # 100 MiB declared, none sent, and no API key: the answer cannot wait for the body or look at who it is.
        declared = await send_raw(base, head + b"Content-Length: 104857600\r\n\r\n", idle=0.2)
        elapsed = time.monotonic() - started
        # Undeclared (chunked) and never ending; with an admin key, so the endpoint goes on to read it.
        piece = b"9c40\r\n" + b"x" * 40_000 + b"\r\n"
        admin = f"X-API-Key: {ADMIN_KEY}\r\n".encode()
        chunked = await send_raw(base, head + admin + b"Transfer-Encoding: chunked\r\n\r\n" + piece * 2, idle=0.3)

    assert status_of(declared) == 413 and elapsed < 1
    assert json_of(declared)["error"] == "payload_too_large"  # type: ignore[index]
    assert status_of(chunked) == 413


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        pytest.param(b"[" * 5000 + b"]" * 5000, "application/json", 400, "invalid_body", id="5000-levels"),
        pytest.param(b'{"a":' * 100 + b"1" + b"}" * 100, "application/json", 400, "invalid_body", id="100-levels"),
        pytest.param(b'{"user_ids": NaN}', "application/json", 400, "invalid_body", id="NaN"),
        pytest.param(b'{"user_ids": Infinity}', "application/json", 400, "invalid_body", id="Infinity"),
        pytest.param(
            b'{"user_ids": ["a"], "user_ids": ["b"]}', "application/json", 400, "invalid_body", id="duplicate-keys"
        ),
        pytest.param(b'{"user_ids": "\xff"}', "application/json", 400, "invalid_body", id="not-utf-8"),
        pytest.param(b'{"user_ids": ["a"]}', "text/plain", 415, "unsupported_media_type", id="wrong-type"),
    ],
)
async def test_bodies_that_are_not_strict_json_are_a_clear_4xx(
    body: bytes, content_type: str, status: int, error: str
) -> None:
    async with notifying_gateway() as base:
        head = (
            f"POST /api/v1/notifications HTTP/1.1\r\nHost: a\r\nX-API-Key: {ADMIN_KEY}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        response = await send_raw(base, head.encode() + body)

    assert status_of(response) == status, response[:300]
    answer = json.loads(response.partition(b"\r\n\r\n")[2])
    assert answer["error"] == error
    if status == 400:
        assert answer["field"] == "body"
