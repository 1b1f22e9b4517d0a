from __future__ import annotations

import pytest

from gateway.routing import Router, request_host
from gateway.settings import parse_settings

ROUTES = """\
upstreams:
  u: {targets: ["http://127.0.0.1:1"]}
routes:
  - {name: catch-all, match: {path_prefix: /}, upstream: u}
  - {name: api, match: {path_prefix: /api}, upstream: u}
  - {name: api-v2, match: {path_prefix: /api/v2}, upstream: u}
  - {name: api-v2-posts, match: {path_prefix: /api/v2, methods: [POST]}, upstream: u}
  - {name: user-orders, match: {path: /api/v2/users/*/orders}, upstream: u}
  - {name: exact, match: {path: /api/v2/users/me/orders}, upstream: u}
  - {name: wildcard-host, match: {host: "*.example.com", path_prefix: /api}, upstream: u}
  - {name: exact-host, match: {host: admin.example.com, path_prefix: /api}, upstream: u}
"""


@pytest.fixture
def router() -> Router:
    return Router(parse_settings(ROUTES).routes)


@pytest.mark.parametrize(
    ("host", "path", "method", "expected"),
    [
        pytest.param("x", "/", "GET", "catch-all", id="root"),
        pytest.param("x", "/apiary", "GET", "catch-all", id="prefix-is-segment-aware"),
        pytest.param("x", "/api", "GET", "api", id="prefix-itself"),
        pytest.param("x", "/api/v1/x", "GET", "api", id="longest-prefix"),
        pytest.param("x", "/api/v2/x", "GET", "api-v2", id="longer-prefix"),
        pytest.param("x", "/api/v2/x", "POST", "api-v2-posts", id="methods-more-specific"),
        pytest.param("x", "/api/v2/users/42/orders", "GET", "user-orders", id="pattern-beats-prefix"),
        pytest.param("x", "/api/v2/users/42/orders/7", "GET", "api-v2", id="pattern-is-whole-path"),
        pytest.param("x", "/api/v2/users/me/orders", "GET", "exact", id="exact-beats-pattern"),
        pytest.param("shop.example.com", "/api/v2/x", "GET", "wildcard-host", id="host-beats-path"),
        pytest.param("admin.example.com", "/api", "GET", "exact-host", id="exact-host-beats-wildcard"),
    ],
)
def test_most_specific_route_wins(router: Router, host: str, path: str, method: str, expected: str) -> None:
    route = router.match(host, path, method)
    assert route is not None and route.name == expected


def test_no_match_without_catch_all() -> None:
    router = Router(parse_settings(ROUTES).routes[1:])
    assert router.match("x", "/other", "GET") is None


def test_strip_and_rewrite_prefix() -> None:
    settings = parse_settings(
        """\
upstreams: {u: {targets: ["http://127.0.0.1:1"]}}
routes:
  - {name: s, match: {path_prefix: /app/}, upstream: u, strip_prefix: true}
  - {name: r, match: {path_prefix: /old}, upstream: u, rewrite_prefix: /new/v2}
"""
    )
    router = Router(settings.routes)
    strip = router.match("x", "/app/a/b", "GET")
    rewrite = router.match("x", "/old/a", "GET")
    assert strip is not None and strip.upstream_path("/app/a/b") == "/a/b" and strip.upstream_path("/app") == "/"
    assert rewrite is not None and rewrite.upstream_path("/old/a") == "/new/v2/a"


def test_request_host_strips_port_but_keeps_ipv6_literal() -> None:
    assert request_host([(b"host", b"Example.COM:8080")]) == "example.com"
    assert request_host([(b"host", b"[::1]:8080")]) == "[::1]"
