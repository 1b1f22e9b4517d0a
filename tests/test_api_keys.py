"""API keys managed through /api/v1/keys, on both engines, with two gateways sharing one database (replicas):
a key is shown once and stored hashed, works on every replica, keeps to its scopes, and a revocation reaches
every replica within `key_refresh`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.notify.harness import TEMPLATES
from tests.proxy_fixtures import eventually
from tests.replicas import replicas as started_replicas

ADMIN = {"X-API-Key": "yaml-admin-key-01"}


def config(engine_yaml: str) -> str:
    templates = "\n".join("    " + line for line in TEMPLATES.splitlines())
    return f"""
server: {{access_log: false, public_url: "http://gw.test"}}
{engine_yaml}
identities:
  key_refresh: 200ms
  api_keys: [{{key: yaml-admin-key-01, user_id: root, tier: premium, admin: true}}]
ratelimit:
  tiers: [anonymous, free, premium]
notifications:
  channels:
    log: {{plugin: log}}
  templates:
{templates}
"""


@pytest.fixture
async def replicas(engine_yaml: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with started_replicas(config(engine_yaml)) as clients:
        yield clients


async def test_a_managed_key_works_on_every_replica_within_its_scopes_until_revoked(
    replicas: list[httpx.AsyncClient],
) -> None:
    first, second = replicas
    wanted = {"user_id": "app", "tier": "free", "scopes": ["links", "read"]}
    made = await first.post("/api/v1/keys", json=wanted, headers=ADMIN)
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert key.startswith("gwk_") and made.json()["scopes"] == ["links", "read"]
    mine = {"X-API-Key": key}

    async def works_on_second() -> bool:
        return (await second.get("/api/v1/rate-limit/status", headers=mine)).status_code == 200

    assert await eventually(works_on_second, 3)  # the other replica reloads it
    status = (await second.get("/api/v1/rate-limit/status", headers=mine)).json()
    assert status["user_id"] == "app" and status["tier"] == "free"
    # Its scopes: links yes, notifications read-only, admin never.
    assert (
        await first.post("/api/v1/urls", json={"long_url": "https://example.com/"}, headers=mine)
    ).status_code == 201
    welcome = {"user_ids": ["a"], "template_id": "welcome", "channels": ["log"], "data": {"name": "A"}}
    refused = await first.post("/api/v1/notifications", json=welcome, headers=mine)
    assert refused.status_code == 403 and "scopes" in refused.json()["detail"]
    assert (await first.get("/api/v1/users/app/preferences", headers=mine)).status_code == 200  # read
    assert (await first.get("/api/v1/keys", headers=mine)).status_code == 403
    assert (await first.get("/api/v1/notifications/event-types", headers=mine)).status_code == 200  # public
    # Listed without its secret; the database holds a digest, not the key.
    listed = (await first.get("/api/v1/keys", headers=ADMIN)).json()["keys"]
    assert [entry["id"] for entry in listed] == [made.json()["id"]] and "key" not in listed[0]
    assert key not in str(listed)
    # Revoked on one replica: refused there at once, and on the other within key_refresh.
    assert (await first.delete(f"/api/v1/keys/{made.json()['id']}", headers=ADMIN)).status_code == 204
    assert (await first.get("/api/v1/rate-limit/status", headers=mine)).status_code == 401

    async def refused_on_second() -> bool:
        return (await second.get("/api/v1/rate-limit/status", headers=mine)).status_code == 401

    assert await eventually(refused_on_second, 3)
    assert (await first.delete(f"/api/v1/keys/{made.json()['id']}", headers=ADMIN)).status_code == 404


async def test_an_admin_scoped_key_is_an_admin_and_bad_requests_name_their_field(
    replicas: list[httpx.AsyncClient],
) -> None:
    first, _ = replicas
    wanted = {"user_id": "ops", "tier": "premium", "scopes": ["admin"]}
    made = await first.post("/api/v1/keys", json=wanted, headers=ADMIN)
    admin_key = {"X-API-Key": made.json()["key"]}
    assert (await first.get("/api/v1/notifications/dlq", headers=admin_key)).status_code == 200
    for body, field in [
        ({"user_id": "x", "tier": "gold", "scopes": ["read"]}, "tier"),
        ({"user_id": "x", "tier": "free", "scopes": ["root"]}, "scopes"),
        ({"user_id": "", "tier": "free", "scopes": ["read"]}, "user_id"),
        ({"user_id": "x", "tier": "free", "scopes": ["read"], "extra": 1}, "extra"),
    ]:
        answer = await first.post("/api/v1/keys", json=body, headers=ADMIN)
        assert answer.status_code == 400 and answer.json()["field"] == field, answer.text
    assert (await first.post("/api/v1/keys", json={}, headers={"X-API-Key": "nope-nope-nope"})).status_code == 401
