"""Request smuggling and request-line injection: what reaches the upstream is one request, framed once, from the
raw path only. Every test talks raw bytes to the gateway and reads the raw bytes the upstream received."""

from __future__ import annotations

import asyncio

import pytest

from tests.security.conftest import gateway_before, json_of, send_raw, status_of

#: Requests whose framing has more than one reading. Each must be a 400 (or 501) with nothing sent upstream.
AMBIGUOUS = [
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 44\r\n\r\n"
        b"GET /admin HTTP/1.1\r\nHost: a\r\nX-Smuggled: 1\r\n\r\n",
        id="connection-names-content-length",
    ),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        id="connection-names-transfer-encoding",
    ),
    pytest.param(b"GET /app/x HTTP/1.1\r\nHost: a\r\nConnection: close, Host\r\n\r\n", id="connection-names-host"),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        id="CL.TE",
    ),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n"
        b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n0\r\n\r\n",
        id="TE.CL",
    ),
    pytest.param(b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", id="TE-xchunked"),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        id="TE-chunked-not-final",
    ),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", id="TE-unknown-coding"
    ),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", id="TE-space-before-colon"
    ),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", id="TE-vertical-tab"
    ),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"
        b"0\r\n\r\n",
        id="TE-twice",
    ),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", id="TE-obs-fold"
    ),
    pytest.param(b"GET /app/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", id="obs-fold"),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", id="CL-twice"
    ),
    pytest.param(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", id="CL-twice-equal"
    ),
    pytest.param(b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nabcd", id="CL-list"),
    pytest.param(b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd", id="CL-sign"),
    pytest.param(b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\nabcd", id="CL-hex"),
    pytest.param(b"GET /app/x HTTP/1.1\nHost: a\n\n", id="bare-LF"),
    pytest.param(b"GET /app/x HTTP/1.1\r\nHost: a\rX-B: c\r\n\r\n", id="bare-CR"),
    pytest.param(b"GET /app/x HTTP/1.1\r\nHost: a\r\nX-B: c\x00d\r\n\r\n", id="NUL-in-value"),
    pytest.param(b"GET /app/x HTTP/1.1\r\nHost: a\r\nX B: c\r\n\r\n", id="space-in-name"),
    pytest.param(
        b"POST /app/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="TE-in-HTTP/1.0"
    ),
    pytest.param(b"GET /app/x HTTP/1.1 extra\r\nHost: a\r\n\r\n", id="junk-after-version"),
]


@pytest.mark.parametrize("request_bytes", AMBIGUOUS)
async def test_ambiguous_framing_is_refused_and_nothing_reaches_the_upstream(request_bytes: bytes) -> None:
    async with gateway_before() as (base, upstream):
        response = await send_raw(base, request_bytes)
        await asyncio.sleep(0.1)

    assert status_of(response) in (400, 501), response[:300]
    body = json_of(response)
    assert isinstance(body, dict) and body["error"] and "request_id" in body
    assert upstream.bytes_received == b"", upstream.bytes_received
    assert b"connection: close" in response.lower()


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(b"/%61pp/x%20HTTP/1.1%0d%0aX-Injected:%201%0d%0a%0d%0aGET%20/y", id="encoded-CRLF-on-a-prefix"),
        pytest.param(b"/app/x%0aX-Injected:%201", id="encoded-LF"),
        pytest.param(b"/app/x%00", id="encoded-NUL"),
        pytest.param(b"/app/x%2F..%2F..%2Fadmin", id="encoded-slash"),
        pytest.param(b"/app/x%5C..%5Cadmin", id="encoded-backslash"),
        pytest.param(b"/app/x%zz", id="malformed-escape"),
    ],
)
async def test_paths_that_cannot_be_forwarded_byte_for_byte_are_a_json_400(target: bytes) -> None:
    async with gateway_before() as (base, upstream):
        response = await send_raw(base, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")

    assert status_of(response) == 400, response[:300]
    body = json_of(response)
    assert isinstance(body, dict) and body["field"] == "path"
    assert upstream.bytes_received == b""


async def test_the_upstream_target_is_built_from_the_raw_path_only() -> None:
    async with gateway_before() as (base, upstream):
        stripped = await send_raw(base, b"GET /%61pp/x%20y?q=%0d%0a HTTP/1.1\r\nHost: a\r\n\r\n")
        rewritten = await send_raw(base, b"GET /pub/a%3Fb%23c HTTP/1.1\r\nHost: a\r\n\r\n")
        euro = await send_raw(base, b"GET /%61pp/%E2%82%AC HTTP/1.1\r\nHost: a\r\n\r\n")
        plain_euro = await send_raw(base, b"GET /caf%C3%A9 HTTP/1.1\r\nHost: a\r\n\r\n")

    assert [status_of(r) for r in (stripped, rewritten, euro, plain_euro)] == [200, 200, 200, 200]
    assert upstream.errors == []
    # One request each, with the escapes still escaped: a decoded %20, %3F or %0d%0a never reaches the line.
    assert [r.target for r in upstream.requests] == [
        b"/x%20y?q=%0d%0a",
        b"/v2/a%3Fb%23c",
        b"/%E2%82%AC",
        b"/caf%C3%A9",
    ]


async def test_a_non_latin_1_path_never_gives_a_500() -> None:
    routes = "- {name: app, match: {path_prefix: /app}, upstream: up, strip_prefix: true}"
    async with gateway_before(routes=routes) as (base, upstream):
        # The prefix spelled differently from the route's: once decoded, and '€' cannot be latin-1.
        proxied = await send_raw(base, b"GET /%61pp/%E2%82%AC HTTP/1.1\r\nHost: a\r\n\r\n")
        short_code = await send_raw(base, b"GET /%E2%82%AC%F0%9F%98%80 HTTP/1.1\r\nHost: a\r\n\r\n")
        api = await send_raw(base, b"GET /api/v1/urls/%E2%82%AC HTTP/1.1\r\nHost: a\r\n\r\n")

    assert status_of(proxied) == 200
    assert status_of(short_code) == 404 and status_of(api) == 404
    assert upstream.requests[0].target == b"/%E2%82%AC"


async def test_every_upstream_request_is_framed_exactly_once() -> None:
    async with gateway_before() as (base, upstream):
        sized = await send_raw(
            base, b"POST /app/a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
        )
        chunked = await send_raw(
            base,
            b"POST /app/b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        empty = await send_raw(base, b"POST /app/c HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        bodiless = await send_raw(base, b"GET /app/d HTTP/1.1\r\nHost: a\r\n\r\n")

    assert [status_of(r) for r in (sized, chunked, empty, bodiless)] == [200, 200, 200, 200]
    assert upstream.errors == []
    a, b, c, d = upstream.requests
    assert (a.headers(b"content-length"), a.headers(b"transfer-encoding"), a.body) == ([b"5"], [], b"hello")
    assert (b.headers(b"content-length"), b.headers(b"transfer-encoding"), b.body) == ([], [b"chunked"], b"hello world")
    assert (c.headers(b"content-length"), c.headers(b"transfer-encoding"), c.body) == ([b"0"], [], b"")
    assert (d.headers(b"content-length"), d.headers(b"transfer-encoding"), d.body) == ([], [], b"")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            id="CL-and-TE",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello", id="CL-twice"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello", id="TE-not-chunked"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nhello", id="TE-chunked-not-final"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="TE-twice",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 5\r\n\r\nhello", id="obs-fold"),
        pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", id="bare-LF"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\nContent-Length: 5\r\n\r\nhello", id="head-over-64KiB"
        ),
    ],
)
async def test_a_response_the_upstream_frames_ambiguously_is_a_502(answer: bytes) -> None:
    from tests.proxy_fixtures import raw_upstream, serve_gateway, settings_for

    async with raw_upstream(answer) as url:
        settings = settings_for(url, "- {name: all, match: {path_prefix: /}, upstream: up}")
        async with serve_gateway(settings) as base:
            response = await send_raw(base, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")

    assert status_of(response) == 502, response[:300]
    assert b"hello" not in response
