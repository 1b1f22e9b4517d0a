"""The rate limiter inside the gateway, on both engines: tiers, rules, headers, APIs, events and failure policies."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.app import Gateway, create_app
from gateway.config.ratelimit import RateLimitSettings, RuleSettings
from gateway.engines.embedded import EmbeddedEngine
from gateway.events import Event
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.ratelimit.service import RateLimitService
from gateway.settings import parse_settings
from tests import services
from tests.proxy_fixtures import UpstreamServer, metric

ADMIN = {"X-API-Key": "admin-key-0001"}
ALICE = {"X-API-Key": "alice-key-0001"}


def yaml_for(upstream_url: str, rules: str, engine: str = "", ratelimit: str = "") -> str:
    return f"""
server: {{access_log: false, trusted_proxies: ["10.0.0.0/8"]}}
{engine}
upstreams:
  up: {{targets: ["{upstream_url}"]}}
routes:
  - {{name: app, match: {{path_prefix: /app}}, upstream: up, strip_prefix: true}}
identities:
  api_keys:
    - {{key: admin-key-0001, user_id: ops, tier: enterprise, admin: true}}
    - {{key: alice-key-0001, user_id: alice, tier: premium}}
ratelimit:
{ratelimit}
  rules:
{rules}
"""


@pytest.fixture(params=["embedded", "redis"])
def engine_yaml(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "embedded":
        yield "engine: {kind: embedded, database: {url: 'sqlite:///:memory:'}}"
        return
    server: services.RedisServer = request.getfixturevalue("redis_server")
    redis.Redis.from_url(server.url).flushall()
    yield f"engine: {{kind: redis, redis: {{url: '{server.url}', deadline: 200ms}}, database: {{url: 'sqlite:///:memory:'}}}}"


@contextlib.asynccontextmanager
async def running(yaml_text: str, client_ip: str = "127.0.0.1") -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    app = create_app(parse_settings(yaml_text))
    await app.startup()
    transport = httpx.ASGITransport(app=app, client=(client_ip, 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield app, client
    finally:
        await app.shutdown()


async def token_hits(upstream: UpstreamServer, token: str) -> int:
    return int((await upstream.stats())["tokens"].get(token, 0))


async def test_refused_requests_get_429_and_never_reach_the_upstream(
    upstream: UpstreamServer, engine_yaml: str
) -> None:
    rules = '    - {tier: anonymous, match: "/app/*", windows: ["3/1m", "100/1d"]}'
    token = f"rl-{time.monotonic_ns()}"
    async with running(yaml_for(upstream.url, rules, engine_yaml)) as (_, client):
        responses = [await client.get("/app/echo", headers={"X-Test-Token": token}) for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert await token_hits(upstream, token) == 3
    allowed, refused = responses[2], responses[3]
    assert allowed.headers["x-ratelimit-limit"] == "3" and allowed.headers["x-ratelimit-remaining"] == "0"
    assert allowed.headers["ratelimit-policy"] == '"1m";q=3;w=60, "1d";q=100;w=86400'
    assert allowed.headers["ratelimit"].startswith('"1m";r=0;t=')
    body = refused.json()
    assert body["error"] == "rate_limited" and body["limit"] == 3 and body["remaining"] == 0
    # The weighted previous window can keep refusing into the next one: up to two windows.
    assert 1 <= body["retry_after"] <= 120 and refused.headers["retry-after"] == str(body["retry_after"])
    assert body["reset_at"].endswith("Z") and body["request_id"] == refused.headers["x-request-id"]


async def test_tiers_and_identities(upstream: UpstreamServer, engine_yaml: str) -> None:
    rules = """\
    - {tier: anonymous, match: "/app/*", windows: ["1/1m"]}
    - {tier: premium, match: "/app/*", windows: ["3/1m"]}
    - {tier: free, match: "/app/*", windows: ["2/1m"]}"""
    async with running(yaml_for(upstream.url, rules, engine_yaml), client_ip="10.1.2.3") as (_, client):
        anonymous = [(await client.get("/app/hello")).status_code for _ in range(2)]
        premium = [(await client.get("/app/hello", headers=ALICE)).status_code for _ in range(4)]
        # The peer 10.1.2.3 is a trusted proxy: its user header is believed, with the default tier (free).
        by_header = [(await client.get("/app/hello", headers={"X-User-ID": "bob"})).status_code for _ in range(3)]
        unknown_key = await client.get("/app/hello", headers={"X-API-Key": "nobody-key-1"})
    assert anonymous == [200, 429]
    assert premium == [200, 200, 200, 429]
    assert by_header == [200, 200, 429]
    assert unknown_key.status_code == 401 and unknown_key.json()["error"] == "invalid_api_key"


async def test_user_header_from_an_untrusted_peer_is_ignored(upstream: UpstreamServer, engine_yaml: str) -> None:
    rules = '    - {tier: anonymous, match: "/app/*", windows: ["1/1m"]}'
    async with running(yaml_for(upstream.url, rules, engine_yaml), client_ip="192.0.2.7") as (_, client):
        first = await client.get("/app/hello", headers={"X-User-ID": "bob", "X-User-Tier": "enterprise"})
        second = await client.get("/app/hello", headers={"X-User-ID": "carol"})
    assert (first.status_code, second.status_code) == (200, 429)  # both counted as the anonymous address


async def test_most_specific_rule_wins_and_exempt_paths(upstream: UpstreamServer, engine_yaml: str) -> None:
    rules = """\
    - {match: "/*", windows: ["100/1m"]}
    - {match: "/app/*", windows: ["5/1m"]}
    - {match: "/app/hello", methods: [GET], windows: ["1/1m"]}"""
    async with running(yaml_for(upstream.url, rules, engine_yaml)) as (_, client):
        exact = [(await client.get("/app/hello")).status_code for _ in range(2)]
        prefix = [(await client.get("/app/echo")).status_code for _ in range(6)]
        health = [(await client.get("/healthz")).status_code for _ in range(3)]
    assert exact == [200, 429]
    assert prefix == [200] * 5 + [429]
    assert health == [200, 200, 200]


async def test_shadow_rules_count_but_never_refuse(upstream: UpstreamServer, engine_yaml: str) -> None:
    rules = '    - {name: shadowed, match: "/app/*", windows: ["2/1m"], shadow: true}'
    async with running(yaml_for(upstream.url, rules, engine_yaml)) as (_, client):
        before = metric(
            (await client.get("/metrics")).text,
            "gateway_ratelimit_decisions_total",
            rule="shadowed",
            result="shadow_refused",
        )
        statuses = [(await client.get("/app/hello")).status_code for _ in range(4)]
        after = metric(
            (await client.get("/metrics")).text,
            "gateway_ratelimit_decisions_total",
            rule="shadowed",
            result="shadow_refused",
        )
    assert statuses == [200] * 4
    assert after - before == 2


async def test_status_api_reports_without_spending(upstream: UpstreamServer, engine_yaml: str) -> None:
    rules = '    - {tier: premium, match: "/app/*", windows: ["10/1m", "1000/1d"]}'
    async with running(yaml_for(upstream.url, rules, engine_yaml)) as (_, client):
        await client.get("/app/hello", headers=ALICE)
        first = (await client.get("/api/v1/rate-limit/status", headers=ALICE)).json()
        second = (await client.get("/api/v1/rate-limit/status", headers=ALICE)).json()
    assert first == second
    assert first["user_id"] == "alice"
    assert [(w["window"], w["limit"], w["remaining"]) for w in first["limits"]] == [("1m", 10, 9), ("1d", 1000, 999)]


async def test_status_api_is_never_limited_and_costs_nothing(upstream: UpstreamServer, engine_yaml: str) -> None:
    # The API rule covers the status path too: reading one's windows must neither spend nor be refused.
    rules = '    - {tier: premium, match: "/api/v1/*", windows: ["2/1m"]}'
    async with running(yaml_for(upstream.url, rules, engine_yaml)) as (_, client):
        statuses = [await client.get("/api/v1/rate-limit/status", headers=ALICE) for _ in range(5)]
        spend = [(await client.get("/api/v1/urls/nope", headers=ALICE)).status_code for _ in range(3)]
        after = await client.get("/api/v1/rate-limit/status", headers=ALICE)
    assert [s.status_code for s in statuses] == [200] * 5
    assert [w["remaining"] for w in statuses[-1].json()["limits"]] == [2]
    assert spend == [404, 404, 429]
    assert after.status_code == 200 and [w["remaining"] for w in after.json()["limits"]] == [0]


async def test_check_api_answers_the_designs_shape(upstream: UpstreamServer, engine_yaml: str) -> None:
    rules = '    - {tier: premium, match: "/app/*", windows: ["1/1m"]}'
    body = {"user_id": "bob", "endpoint": "/app/x", "tier": "premium"}
    async with running(yaml_for(upstream.url, rules, engine_yaml)) as (_, client):
        before = time.time()
        allowed = (await client.post("/api/v1/rate-limit/check", json=body, headers=ADMIN)).json()
        refused = (await client.post("/api/v1/rate-limit/check", json=body, headers=ADMIN)).json()
        unruled = (await client.post("/api/v1/rate-limit/check", json={**body, "endpoint": "/x"}, headers=ADMIN)).json()
    for answer in (allowed, refused):
        assert {"allowed", "remaining", "limit", "reset_at", "retry_after"} <= set(answer)
        assert isinstance(answer["reset_at"], int) and before < answer["reset_at"] <= before + 61
    assert (allowed["allowed"], allowed["remaining"], allowed["limit"], allowed["retry_after"]) == (True, 0, 1, None)
    assert refused["allowed"] is False and isinstance(refused["retry_after"], int) and refused["retry_after"] >= 1
    assert unruled["allowed"] is True and unruled["retry_after"] is None and unruled["reset_at"] is None


async def test_check_api_is_admin_only_and_shares_the_users_counters(
    upstream: UpstreamServer, engine_yaml: str
) -> None:
    rules = '    - {tier: premium, match: "/app/*", windows: ["3/1m"]}'
    async with running(yaml_for(upstream.url, rules, engine_yaml)) as (_, client):
        forbidden = await client.post(
            "/api/v1/rate-limit/check", json={"user_id": "alice", "endpoint": "/app/x"}, headers=ALICE
        )
        checks = [
            (
                await client.post(
                    "/api/v1/rate-limit/check", json={"user_id": "alice", "endpoint": "/app/x"}, headers=ADMIN
                )
            ).json()
            for _ in range(2)
        ]
        # The check spent two of alice's three requests: her third request passes, the fourth is refused.
        statuses = [(await client.get("/app/hello", headers=ALICE)).status_code for _ in range(2)]
        refused = (
            await client.post(
                "/api/v1/rate-limit/check", json={"user_id": "alice", "endpoint": "/app/x"}, headers=ADMIN
            )
        ).json()
        bad = await client.post(
            "/api/v1/rate-limit/check", json={"user_id": "alice", "endpoint": "/x", "cost": 0}, headers=ADMIN
        )
    assert forbidden.status_code == 403
    assert [c["allowed"] for c in checks] == [True, True] and checks[1]["remaining"] == 1
    assert statuses == [200, 429]
    assert refused["allowed"] is False and refused["retry_after"] >= 1 and refused["remaining"] == 0
    assert bad.status_code == 400 and bad.json()["field"] == "cost"


async def test_every_refusal_emits_an_event(upstream: UpstreamServer, engine_yaml: str) -> None:
    rules = '    - {tier: anonymous, match: "/app/*", windows: ["1/1m"]}'
    seen: list[Event] = []

    async def collect(event: Event) -> None:
        seen.append(event)

    async with running(yaml_for(upstream.url, rules, engine_yaml)) as (app, client):
        app.events.subscribe(collect)
        for _ in range(3):
            await client.get("/app/hello")
        await app.events.flush()
    exceeded = [event for event in seen if event.type == "ratelimit.exceeded"]
    assert len(exceeded) == 2
    assert exceeded[0].data["user_id"] == "127.0.0.1" and exceeded[0].data["tier"] == "anonymous"
    assert exceeded[0].data["limit"] == 1 and exceeded[0].data["path"] == "/app/hello"


async def test_changed_rule_starts_new_counters(upstream: UpstreamServer, engine_yaml: str) -> None:
    async with running(yaml_for(upstream.url, '    - {match: "/app/*", windows: ["1/1m"]}', engine_yaml)) as (app, c):
        assert [(await c.get("/app/hello")).status_code for _ in range(2)] == [200, 429]
        # The same engines with an edited rule: its hash is part of the key, so nothing stale is inherited.
        edited = parse_settings(yaml_for(upstream.url, '    - {match: "/app/*", windows: ["2/1m"]}', engine_yaml))
        service = RateLimitService(edited.ratelimit, app.engines.scripts)
        rule = service.rules.rules[0]
        identity = app.runtime.identities.resolve({"headers": [], "client": ("127.0.0.1", 1), "type": "http"})
        decision = await service.peek(identity, rule)
    assert decision is not None and decision.windows[0].remaining == 2


async def test_proxied_response_keeps_the_upstreams_own_headers(upstream: UpstreamServer, engine_yaml: str) -> None:
    async with running(yaml_for(upstream.url, '    - {match: "/app/*", windows: ["5/1m"]}', engine_yaml)) as (_, c):
        response = await c.get("/app/own-ratelimit")
    assert response.status_code == 200
    # Added once, by the gateway's outermost step; a name the upstream sent itself is left to the upstream.
    assert response.headers.get_list("x-ratelimit-limit") == ["upstream-owned"]
    assert response.headers.get_list("x-ratelimit-remaining") == ["4"]
    assert len(response.headers.get_list("ratelimit")) == 1 and response.headers["ratelimit"].startswith('"1m";r=4;')
    assert len(response.headers.get_list("x-request-id")) == 1


async def test_middleware_works_in_a_plain_starlette_app() -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi", headers={"x-ratelimit-limit": "app-owned"})

    settings = RateLimitSettings(rules=(RuleSettings(match="/*", windows=("2/1m",)),))
    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(RateLimitMiddleware, service=RateLimitService(settings, EmbeddedEngine()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        responses = [await client.get("/") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["x-ratelimit-limit"] == "app-owned"  # the app's own header is not clobbered
    assert responses[0].headers["ratelimit"].startswith('"1m";r=1;')


# -- failure policies against a Redis that goes away ------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[services.RedisServer]:
    with services.redis_server() as server:
        yield server


def failing_yaml(upstream_url: str, server: services.RedisServer, policy: str) -> str:
    engine = (
        f"engine: {{kind: redis, database: {{url: 'sqlite:///:memory:'}}, redis: {{url: '{server.url}', "
        "deadline: 50ms, breaker: {failures: 2, window: 10s, cooldown: 500ms, slow_call: 1s}}}"
    )
    rule = f'    - {{tier: anonymous, match: "/app/*", windows: ["2/1m"], on_failure: {policy}}}'
    return yaml_for(upstream_url, rule, engine, ratelimit="  replicas: 2")


async def statuses(client: httpx.AsyncClient, count: int) -> list[int]:
    return [(await client.get("/app/hello")).status_code for _ in range(count)]


async def test_fail_open_keeps_requests_flowing_then_limits_again(
    upstream: UpstreamServer, own_redis: services.RedisServer
) -> None:
    events: list[str] = []

    async def collect(event: Event) -> None:
        events.append(event.type)

    async with running(failing_yaml(upstream.url, own_redis, "open")) as (app, client):
        app.events.subscribe(collect)
        assert await statuses(client, 3) == [200, 200, 429]
        own_redis.stop()
        started = time.monotonic()
        assert await statuses(client, 6) == [200] * 6
        assert time.monotonic() - started < 2.0  # each decision gave up within its deadline, then the breaker
        assert app.engines.breaker is not None and app.engines.breaker.state == "open"
        own_redis.start()
        await asyncio.sleep(0.8)  # cooldown (500 ms + jitter) before the half-open probe
        # Counters were lost with the Redis process: a fresh window applies the limit again.
        assert await statuses(client, 3) == [200, 200, 429]
        assert str(app.engines.breaker.state) == "closed"
        await app.events.flush()
        text = (await client.get("/metrics")).text
    assert "circuit.opened" in events and "circuit.closed" in events
    assert metric(text, "gateway_ratelimit_decisions_total", result="failed_open") >= 6


async def test_fail_closed_answers_503_with_retry_after(
    upstream: UpstreamServer, own_redis: services.RedisServer
) -> None:
    async with running(failing_yaml(upstream.url, own_redis, "closed")) as (_, client):
        own_redis.stop()
        responses = [await client.get("/app/hello") for _ in range(4)]
    assert [r.status_code for r in responses] == [503] * 4
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses)
    assert responses[-1].json()["error"] == "rate_limit_unavailable"


async def test_local_policy_applies_the_divided_limit_in_process(
    upstream: UpstreamServer, own_redis: services.RedisServer
) -> None:
    async with running(failing_yaml(upstream.url, own_redis, "local")) as (_, client):
        own_redis.stop()
        # 2 per minute over 2 replicas: 1 per minute for this replica while Redis is away.
        assert await statuses(client, 3) == [200, 429, 429]


async def test_script_flush_is_survived(upstream: UpstreamServer, own_redis: services.RedisServer) -> None:
    async with running(failing_yaml(upstream.url, own_redis, "closed")) as (_, client):
        assert await statuses(client, 1) == [200]
        redis.Redis.from_url(own_redis.url).script_flush()
        assert await statuses(client, 2) == [200, 429]


async def test_a_cost_over_the_limit_is_refused_without_retry_after(upstream: UpstreamServer, engine_yaml: str) -> None:
    rules = '    - {match: "/app/*", windows: ["3/1m"], cost: 5}'
    async with running(yaml_for(upstream.url, rules, engine_yaml)) as (_, client):
        response = await client.get("/app/hello")
    assert response.status_code == 429
    assert "retry-after" not in response.headers
    assert response.json()["retry_after"] is None
