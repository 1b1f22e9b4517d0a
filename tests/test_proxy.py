"""The proxy's request and response shape: URLs, headers, forwarding, prefixes, bodies, errors, own endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.proxy_fixtures import (
    UpstreamServer,
    echoed,
    raw_exchange,
    raw_upstream,
    serve_gateway,
    settings_for,
    split_response,
)
from tests.services import free_port
from tests.shipped import shipped_settings
from tests.upstream_app import HEAD_LENGTH, gzip_body

ROOT = Path(__file__).resolve().parent.parent
QUERY = "a=%20b&c&d=%2F&e=1+2&f=%E2%82%AC"
CATCH_ALL = """
- name: all
  match: {path_prefix: /}
  upstream: up
"""
PREFIXES = """
- name: svc
  match: {path_prefix: /svc}
  upstream: up
  strip_prefix: true
- name: pub
  match: {path_prefix: /pub}
  upstream: up
  rewrite_prefix: /v2
- name: plain
  match: {path_prefix: /plain}
  upstream: up
"""


async def test_query_string_passes_byte_for_byte_and_the_path_in_normal_form(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL + PREFIXES, server="allow_encoded_slashes: true")
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        direct = await client.get(f"{base}/echo/a%2fb/%7Euser/sp%20ace/%E2%82%AC?{QUERY}")
        stripped = await client.get(f"{base}/svc/x%2Fy/%7E?{QUERY}")
        bare = await client.get(f"{base}/echo?")

    assert direct.status_code == 200
    # Unreserved escapes decoded, the others kept (hex upper-cased): RFC 3986 §6.2.2 normal form.
    assert direct.json()["raw_path"] == "/echo/a%2Fb/~user/sp%20ace/%E2%82%AC"
    assert direct.json()["query"] == QUERY
    assert stripped.json()["raw_path"] == "/x%2Fy/~"
    assert stripped.json()["query"] == QUERY
    assert bare.json()["query"] == ""


async def test_repeated_headers_survive_both_ways(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    headers = [("X-Multi", "one"), ("X-Multi", "two"), ("Accept", "text/plain"), ("Accept", "application/json")]
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        echo = await client.get(f"{base}/echo", headers=headers)
        cookies = await client.get(f"{base}/cookies")

    assert echoed(echo.json(), "x-multi") == ["one", "two"]
    assert echoed(echo.json(), "accept") == ["text/plain", "application/json"]
    assert cookies.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]


async def test_hop_by_hop_request_headers_never_reach_the_upstream(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    headers = {
        "Connection": "keep-alive, X-Secret",
        "X-Secret": "do not forward",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "Keep-Alive": "timeout=5",
        "Upgrade": "websocket",
        "X-End-To-End": "kept",
    }
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/echo", headers=headers)

    assert response.status_code == 200
    seen = {name for name, _ in response.json()["headers"]}
    assert not seen & {"x-secret", "te", "proxy-authorization", "keep-alive", "upgrade"}
    assert echoed(response.json(), "x-end-to-end") == ["kept"]
    # aiohttp may add its own Connection for the upstream leg, but never the client's tokens.
    assert all("x-secret" not in value.lower() for value in echoed(response.json(), "connection"))


async def test_hop_by_hop_response_headers_never_reach_the_client() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain\r\n"
        b"Connection: X-Hop\r\n"
        b"X-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"Proxy-Authenticate: Basic\r\n"
        b"X-End-To-End: kept\r\n"
        b"Content-Length: 5\r\n"
        b"\r\n"
        b"hello"
    )

    async with raw_upstream(answer) as url, serve_gateway(settings_for(url, CATCH_ALL)) as base:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{base}/anything")

    assert response.status_code == 200
    assert response.content == b"hello"
    assert response.headers["x-end-to-end"] == "kept"
    for name in ("connection", "x-hop", "keep-alive", "proxy-authenticate"):
        assert name not in response.headers, name


async def test_forwarded_headers_are_set_for_an_untrusted_peer(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    spoofed = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "Host": "public.example:8443",
    }
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/echo", headers=spoofed)

    data = response.json()
    assert echoed(data, "x-forwarded-for") == ["127.0.0.1"]
    assert echoed(data, "x-forwarded-proto") == ["http"]
    assert echoed(data, "x-forwarded-host") == ["public.example:8443"]
    assert len(echoed(data, "x-request-id")) == 1


async def test_forwarded_headers_are_appended_for_a_trusted_proxy(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL, server='trusted_proxies: ["127.0.0.1/32"]')
    forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example"}
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/echo", headers=forwarded)
        direct = await client.get(f"{base}/echo")

    data = response.json()
    assert echoed(data, "x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]
    assert echoed(data, "x-forwarded-proto") == ["https"]
    assert echoed(data, "x-forwarded-host") == ["shop.example"]
    assert echoed(direct.json(), "x-forwarded-for") == ["127.0.0.1"]
    assert echoed(direct.json(), "x-forwarded-proto") == ["http"]


@pytest.mark.parametrize(
    "client_id",
    [
        pytest.param("has spaces in it", id="spaces"),
        pytest.param("x" * 200, id="too-long"),
        pytest.param("bad/slash", id="slash"),
    ],
)
async def test_an_invalid_request_id_is_replaced(upstream: UpstreamServer, client_id: str) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/echo", headers={"X-Request-ID": client_id})

    new_id = response.headers["x-request-id"]
    assert new_id != client_id
    assert response.headers.get_list("x-request-id") == [new_id]
    assert echoed(response.json(), "x-request-id") == [new_id]


async def test_a_valid_request_id_is_kept_and_echoed(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    client_id = "req-42.abc:DEF_9"
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/echo", headers={"X-Request-ID": client_id})
        fresh = await client.get(f"{base}/echo")

    assert response.headers.get_list("x-request-id") == [client_id]
    assert echoed(response.json(), "x-request-id") == [client_id]
    generated = fresh.headers["x-request-id"]
    assert generated != client_id
    assert echoed(fresh.json(), "x-request-id") == [generated]


async def test_strip_prefix_and_rewrite_prefix_forward_the_right_path(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, PREFIXES)
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        stripped = await client.get(f"{base}/svc/echo/x")
        stripped_root = await client.get(f"{base}/svc")
        rewritten = await client.get(f"{base}/pub/echo/y")
        plain = await client.get(f"{base}/plain/echo/z")

    assert stripped.json()["path"] == "/echo/x"
    assert stripped_root.json()["path"] == "/"
    assert rewritten.json()["path"] == "/v2/echo/y"
    assert plain.json()["path"] == "/plain/echo/z"


@pytest.mark.parametrize(
    ("request_path", "to", "absolute", "expected"),
    [
        pytest.param("/svc/redirect", "/landing?x=1", False, "/svc/landing?x=1", id="strip-path-absolute"),
        pytest.param("/svc/redirect", "/landing", True, "/svc/landing", id="strip-absolute-to-upstream"),
        pytest.param("/pub/redirect", "/v2/landing", False, "/pub/landing", id="rewrite-path-absolute"),
        pytest.param("/pub/redirect", "/v2/landing#top", True, "/pub/landing#top", id="rewrite-absolute-to-upstream"),
        pytest.param("/pub/redirect", "/outside", False, "/outside", id="rewrite-outside-the-prefix"),
        pytest.param(
            "/svc/redirect",
            "https://elsewhere.example/landing",
            False,
            "https://elsewhere.example/landing",
            id="another-host",
        ),
    ],
)
async def test_location_is_rewritten_back_to_the_public_prefix(
    upstream: UpstreamServer, request_path: str, to: str, absolute: bool, expected: str
) -> None:
    settings = settings_for(upstream.url, PREFIXES)
    params = {"to": to, **({"absolute": "1"} if absolute else {})}
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}{request_path}", params=params)

    assert response.status_code == 302
    assert response.headers["location"] == expected


async def test_location_is_left_alone_without_a_prefix_rewrite(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, PREFIXES)
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        response = await client.get(f"{base}/plain/redirect", params={"to": "/plain/landing", "absolute": "1"})

    assert response.headers["location"] == f"{upstream.url}/plain/landing"


async def test_host_is_the_targets_unless_preserve_host(upstream: UpstreamServer) -> None:
    routes = """
    - name: default-host
      match: {path_prefix: /default}
      upstream: up
    - name: client-host
      match: {path_prefix: /preserve}
      upstream: up
      preserve_host: true
    """
    settings = settings_for(upstream.url, routes)
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        default = await client.get(f"{base}/default/echo", headers={"Host": "public.example"})
        preserved = await client.get(f"{base}/preserve/echo", headers={"Host": "public.example"})

    assert echoed(default.json(), "host") == [f"127.0.0.1:{upstream.port}"]
    assert echoed(default.json(), "x-forwarded-host") == ["public.example"]
    assert echoed(preserved.json(), "host") == ["public.example"]


async def test_a_gzip_body_passes_byte_identical_with_its_content_encoding(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        async with client.stream("GET", f"{base}/gzip", headers={"Accept-Encoding": "gzip"}) as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])

    assert response.headers["content-encoding"] == "gzip"
    assert raw == gzip_body()
    assert response.headers["content-length"] == str(len(gzip_body()))


async def test_a_request_body_passes_as_raw_bytes(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    body = bytes(range(256)) * 1000 + b"\r\n0\r\n\r\n"
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        response = await client.post(
            f"{base}/echo", content=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/x-raw"}
        )

    data = response.json()
    assert data["body_length"] == len(body)
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echoed(data, "content-encoding") == ["gzip"]
    assert echoed(data, "content-type") == ["application/x-raw"]


async def test_head_carries_content_length_and_no_body(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    async with serve_gateway(settings) as base:
        async with httpx.AsyncClient() as client:
            head = await client.head(f"{base}/head")
            # The upstream connection the HEAD used must not then be read as if a body followed the head;
            # a POST is never retried, so it would fail on such a connection.
            post = await client.post(f"{base}/echo", content=b"after head")
            get = await client.get(f"{base}/head")
        raw = await raw_exchange(base, b"HEAD /head HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")

    assert head.status_code == 200
    assert head.headers["content-length"] == str(HEAD_LENGTH)
    assert head.content == b""
    assert post.status_code == 200
    assert post.json()["body_length"] == len(b"after head")
    assert len(get.content) == HEAD_LENGTH
    status, headers, rest = split_response(raw)
    assert status == 200
    assert ("content-length", str(HEAD_LENGTH)) in headers
    assert rest == b""


@pytest.mark.parametrize("code", [204, 304])
async def test_no_body_statuses_have_no_body(upstream: UpstreamServer, code: int) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    async with serve_gateway(settings) as base:
        raw = await raw_exchange(base, f"GET /status/{code} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())

    status, headers, rest = split_response(raw)
    assert status == code
    assert rest == b""
    assert "transfer-encoding" not in dict(headers)


async def _chunks(count: int, size: int, *, pause: float = 0.0) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"u" * size
        await asyncio.sleep(pause)


async def test_error_bodies_are_json(upstream: UpstreamServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    routes = """
    - name: refused
      match: {path_prefix: /refused}
      upstream: dead
    - name: timeout
      match: {path_prefix: /timeout}
      upstream: up
      strip_prefix: true
      timeouts: {read: 300ms}
    - name: small
      match: {path_prefix: /small}
      upstream: up
      strip_prefix: true
      max_body_bytes: 64KiB
    """
    settings = settings_for(upstream.url, routes, upstreams=f'dead: {{targets: ["{dead}"], retries: 0}}')
    token = uuid.uuid4().hex
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        refused = await client.get(f"{base}/refused/x")
        started = asyncio.get_running_loop().time()
        timeout = await client.get(f"{base}/timeout/slow", params={"s": "2"})
        timeout_elapsed = asyncio.get_running_loop().time() - started
        # Sent slowly in small pieces, so that only refusing on the declared length keeps it from the upstream.
        declared = await client.post(
            f"{base}/small/upload",
            content=_chunks(64, 16 * 1024, pause=0.005),
            headers={"X-Test-Token": token, "Content-Length": str(64 * 16 * 1024)},
        )
        chunked = await client.post(f"{base}/small/upload", content=_chunks(16, 16 * 1024))
        fits = await client.post(f"{base}/small/upload", content=b"x" * 60_000, headers={"X-Test-Token": token})
        missing = await client.get(f"{base}/no/such/route")

    expected = [
        (refused, 502, "bad_gateway"),
        (timeout, 504, "gateway_timeout"),
        (declared, 413, "payload_too_large"),
        (chunked, 413, "payload_too_large"),
        (missing, 404, "not_found"),
    ]
    for response, status, error in expected:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"error", "detail", "request_id"}
        assert body["error"] == error
        assert body["detail"]
        assert body["request_id"] == response.headers["x-request-id"]
    assert timeout_elapsed < 1.5
    assert fits.status_code == 200
    # The over-long declared body was refused before anything went upstream; the one that fits did go.
    assert (await upstream.stats())["tokens"].get(token) == 1


async def test_healthz_and_readyz_on_the_embedded_default(upstream: UpstreamServer, tmp_path: Path) -> None:
    settings = shipped_settings(tmp_path, upstream.url)
    assert settings.engine.kind == "embedded"
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        health = await client.get(f"{base}/healthz")
        ready = await client.get(f"{base}/readyz")
        app = await client.get(f"{base}/app/echo")

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    # The embedded default needs no server: its only engine is the local database, and it answers.
    assert ready.json() == {"status": "ready", "engines": {"database": "ok"}}
    assert app.json()["path"] == "/echo"


async def test_a_catch_all_route_does_not_shadow_the_gateways_own_endpoints(upstream: UpstreamServer) -> None:
    settings = settings_for(upstream.url, CATCH_ALL)
    async with serve_gateway(settings) as base, httpx.AsyncClient() as client:
        health = await client.get(f"{base}/healthz")
        ready = await client.get(f"{base}/readyz")
        metrics = await client.get(f"{base}/metrics")
        proxied = await client.get(f"{base}/healthz-not")

    assert health.json() == {"status": "ok"}
    assert ready.json()["status"] == "ready"
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "gateway_requests_total" in metrics.text
    assert proxied.json()["path"] == "/healthz-not"
