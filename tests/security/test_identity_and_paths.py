"""Who the upstream is told the caller is, and the one path every rule and route matches on."""

from __future__ import annotations

import pytest

from tests.security.conftest import gateway_before, send_raw, status_of

KEYED = """
identities:
  api_keys:
    - {key: alice-key-0001, user_id: alice, tier: premium}
"""
RULES = """
ratelimit:
  rules:
    - {name: limited, match: /app/limited, windows: ["1/1m"]}
    - {name: head, match: /app/head, methods: [GET], windows: ["1/1m"]}
"""
LIMITED_ROUTES = """
- {name: app, match: {path_prefix: /app}, upstream: up}
- {name: all, match: {path_prefix: /}, upstream: up}
"""


async def test_identity_headers_stop_at_the_gateway_and_its_own_say_who_the_caller_is() -> None:
    routes = """
    - {name: app, match: {path_prefix: /app}, upstream: up}
    - {name: trusting, match: {path_prefix: /trusting}, upstream: up, forward_identity_headers: true}
    """
    head = (
        b"Host: a\r\nX-API-Key: alice-key-0001\r\nX-User-ID: root\r\nX_User_ID: root\r\nX-User-Tier: enterprise\r\n"
        b"X-Gateway-User-ID: root\r\nX_Gateway_Tier: enterprise\r\nx-gateway-identity: admin\r\n"
        b"X_Forwarded_For: 10.9.9.9\r\nX-Forwarded-For: 10.8.8.8\r\n\r\n"
    )
    async with gateway_before(routes=routes, extra=KEYED) as (base, upstream):
        plain = await send_raw(base, b"GET /app/x HTTP/1.1\r\n" + head)
        trusting = await send_raw(base, b"GET /trusting/x HTTP/1.1\r\n" + head)

    assert status_of(plain) == 200 and status_of(trusting) == 200
    first, second = upstream.requests
    for dropped in (b"x-api-key", b"x-user-id", b"x_user_id", b"x-user-tier", b"x_gateway_tier", b"x_forwarded_for"):
        assert first.headers(dropped) == [], dropped
    assert first.headers(b"x-gateway-user-id") == [b"alice"]
    assert first.headers(b"x-gateway-tier") == [b"premium"]
    assert first.headers(b"x-gateway-identity") == [b"api_key"]
    assert first.headers(b"x-forwarded-for") == [b"127.0.0.1"]  # the peer is not a trusted proxy
    # A route that opts in passes the client's identity headers; the gateway's own are still only its own.
    assert second.headers(b"x-api-key") == [b"alice-key-0001"] and second.headers(b"x-user-id") == [b"root"]
    assert second.headers(b"x-gateway-user-id") == [b"alice"] and second.headers(b"x_gateway_tier") == []


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(b"/app/./limited", id="dot"),
        pytest.param(b"/app//limited", id="double-slash"),
        pytest.param(b"/app/x/%2e%2e/limited", id="encoded-dot-dot"),
        pytest.param(b"/app/x/../limited", id="dot-dot"),
        pytest.param(b"/%61pp/limite%64", id="encoded-letters"),
        pytest.param(b"/app/limited/.", id="trailing-dot"),
    ],
)
async def test_a_rule_cannot_be_escaped_by_spelling_the_path_differently(spelling: bytes) -> None:
    async with gateway_before(routes=LIMITED_ROUTES, extra=RULES) as (base, upstream):
        first = await send_raw(base, b"GET /app/limited HTTP/1.1\r\nHost: a\r\n\r\n")
        again = await send_raw(base, b"GET " + spelling + b" HTTP/1.1\r\nHost: a\r\n\r\n")

    assert status_of(first) == 200
    assert status_of(again) == 429, again[:300]
    assert [r.target for r in upstream.requests] == [b"/app/limited"]


async def test_an_encoded_slash_cannot_take_a_request_past_its_rule_to_a_catch_all_route() -> None:
    async with gateway_before(routes=LIMITED_ROUTES, extra=RULES) as (base, upstream):
        first = await send_raw(base, b"GET /app/limited HTTP/1.1\r\nHost: a\r\n\r\n")
        sneaky = await send_raw(base, b"GET /app%2Flimited HTTP/1.1\r\nHost: a\r\n\r\n")

    assert status_of(first) == 200 and status_of(sneaky) == 400
    assert len(upstream.requests) == 1


async def test_head_is_limited_by_a_get_rule() -> None:
    async with gateway_before(routes=LIMITED_ROUTES, extra=RULES) as (base, upstream):
        get = await send_raw(base, b"GET /app/head HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await send_raw(base, b"HEAD /app/head HTTP/1.1\r\nHost: a\r\n\r\n")

    assert status_of(get) == 200 and status_of(head) == 429
    assert len(upstream.requests) == 1


async def test_the_trailing_slash_redirect_never_builds_location_from_the_clients_host() -> None:
    async with gateway_before(routes="- {name: app, match: {path_prefix: /app}, upstream: up}") as (base, _):
        response = await send_raw(base, b"GET /api/v1/urls/ HTTP/1.1\r\nHost: evil.example\r\n\r\n")

    assert b"evil.example" not in response
    assert status_of(response) in (404, 405)
