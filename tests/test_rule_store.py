"""Rate-limit rules managed through /api/v1/rate-limit/rules, on both engines, with two gateways sharing one
database (replicas): a rule added on one replica limits there at once and on the other within `rule_refresh`; an
edit counts afresh; a removal lifts it; names are unique across the YAML's rules and the managed ones."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import create_app
from gateway.ratelimit.rule_store import parse_rule
from gateway.settings import parse_settings
from tests.proxy_fixtures import eventually
from tests.replicas import replicas as started_replicas

ADMIN = {"X-API-Key": "yaml-admin-key-01"}
ALICE = {"X-API-Key": "alice-key-00001"}
RULES = "/api/v1/rate-limit/rules"


def config(engine_yaml: str) -> str:
    return f"""
server: {{access_log: false}}
{engine_yaml}
identities:
  api_keys:
    - {{key: yaml-admin-key-01, user_id: root, tier: premium, admin: true}}
    - {{key: alice-key-00001, user_id: alice, tier: free}}
ratelimit:
  tiers: [anonymous, free, premium]
  rule_refresh: 200ms
  rules:
    - {{name: api, match: "/api/v1/**", windows: ["1000/1m"]}}
"""


@pytest.fixture
async def replicas(engine_yaml: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with started_replicas(config(engine_yaml)) as clients:
        yield clients


async def listings(client: httpx.AsyncClient, count: int) -> list[int]:
    return [(await client.get("/api/v1/urls", headers=ALICE)).status_code for _ in range(count)]


async def test_a_managed_rule_limits_every_replica_until_removed(replicas: list[httpx.AsyncClient]) -> None:
    first, second = replicas
    assert await listings(first, 3) == [200, 200, 200]
    wanted = {"name": "listing", "tier": "free", "match": "/api/v1/urls", "methods": ["GET"], "windows": ["2/1m"]}
    made = await first.post(RULES, json=wanted, headers=ADMIN)
    assert made.status_code == 201, made.text
    rule = made.json()
    assert rule["id"].startswith("rl_") and rule["source"] == "api" and rule["windows"] == ["2/1m"]
    # More specific than the YAML's /api/v1/**: it decides, at once where it was made.
    assert await listings(first, 3) == [200, 200, 429]
    refused = await first.get("/api/v1/urls", headers=ALICE)
    assert refused.headers["ratelimit-policy"] == '"1m";q=2;w=60'

    async def limited_on_second() -> bool:
        return (await second.get("/api/v1/urls", headers=ALICE)).status_code == 429

    # Within rule_refresh on the other replica (with Redis its counters are the same ones, already spent).
    assert await eventually(limited_on_second, 3)
    names = [(entry["source"], entry["name"]) for entry in (await second.get(RULES, headers=ADMIN)).json()["rules"]]
    assert names == [("config", "api"), ("api", "listing")]

    # An edit is a new rule meaning: its counters start afresh.
    edited = await first.put(f"{RULES}/{rule['id']}", json={**wanted, "windows": ["3/1m"]}, headers=ADMIN)
    assert edited.status_code == 200 and edited.json()["windows"] == ["3/1m"]
    assert await listings(first, 4) == [200, 200, 200, 429]

    assert (await first.delete(f"{RULES}/{rule['id']}", headers=ADMIN)).status_code == 204
    assert await listings(first, 2) == [200, 200]

    async def lifted_on_second() -> bool:
        return (await second.get("/api/v1/urls", headers=ALICE)).status_code == 200

    assert await eventually(lifted_on_second, 3)
    assert (await first.delete(f"{RULES}/{rule['id']}", headers=ADMIN)).status_code == 404
    assert (await first.put(f"{RULES}/{rule['id']}", json=wanted, headers=ADMIN)).status_code == 404


async def test_rules_are_an_admins_and_bad_ones_are_refused_naming_their_field(
    replicas: list[httpx.AsyncClient],
) -> None:
    first, _ = replicas
    ok = {"match": "/api/v1/urls", "windows": "5/1m"}
    assert (await first.post(RULES, json=ok, headers=ALICE)).status_code == 403
    assert (await first.get(RULES, headers=ALICE)).status_code == 403
    for body, field in [
        ({"match": "no-slash", "windows": "5/1m"}, "match"),
        ({"match": "/x", "windows": "5 per fortnight"}, "windows"),
        ({"match": "/x", "windows": ["5/1m", "6/1m"]}, "windows"),
        ({"match": "/x", "windows": "5/1m", "tier": "gold"}, "tier"),
        ({"match": "/x", "windows": "5/1m", "cost": 0}, "cost"),
        ({"match": "/x", "windows": "5/1m", "limit": 3}, "limit"),
        ({"windows": "5/1m"}, "match"),
    ]:
        answer = await first.post(RULES, json=body, headers=ADMIN)
        assert answer.status_code == 400 and answer.json()["field"] == field, (body, answer.text)
    # A name is unique across the YAML's rules and the managed ones.
    taken = await first.post(RULES, json={**ok, "name": "api"}, headers=ADMIN)
    assert taken.status_code == 409 and taken.json()["field"] == "name"
    assert (await first.post(RULES, json={**ok, "name": "mine"}, headers=ADMIN)).status_code == 201
    assert (await first.post(RULES, json={**ok, "name": "mine"}, headers=ADMIN)).status_code == 409
    assert [entry["name"] for entry in (await first.get(RULES, headers=ADMIN)).json()["rules"]] == ["api", "mine"]


async def test_a_stored_rule_this_gateway_cannot_read_is_left_out_and_the_others_apply(engine_yaml: str) -> None:
    app = create_app(parse_settings(config(engine_yaml), environ={}))
    await app.startup()
    try:
        store = app.runtime.rule_store
        await store.create(parse_rule({"name": "good", "match": "/api/v1/urls", "windows": "1/1m"}, ("free",)))
        await store.database.execute(
            "INSERT INTO rate_limit_rules (id, name, spec, created_at, updated_at) VALUES ('rl_bad', 'bad', "
            '\'{"match": "/x", "windows": "5 per fortnight"}\', 1, 1)'
        )
        await store.start()  # a reload, as every rule_refresh
        assert [rule.id for rule in store.rules if rule.id == "rl_bad"] == []
        assert [rule.name for rule in app.runtime.ratelimit.rules.rules if rule.name in ("good", "bad")] == ["good"]
    finally:
        await app.shutdown()
