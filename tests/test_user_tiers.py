"""Tiers stored per user through /api/v1/users/{id}/tier, on both engines, with two gateways sharing one database
(replicas): a stored tier overrides the tier of the user's API key on every replica within `key_refresh`, and
forgetting it brings the key's tier back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.proxy_fixtures import eventually
from tests.replicas import replicas as started_replicas

ADMIN = {"X-API-Key": "yaml-admin-key-01"}
ALICE = {"X-API-Key": "alice-key-00001"}


def config(engine_yaml: str) -> str:
    return f"""
server: {{access_log: false}}
{engine_yaml}
identities:
  key_refresh: 200ms
  api_keys:
    - {{key: yaml-admin-key-01, user_id: root, tier: premium, admin: true}}
    - {{key: alice-key-00001, user_id: alice, tier: free}}
ratelimit:
  tiers: [anonymous, free, premium]
  rules:
    # Only premium callers are held to one listing a minute: a tier change shows as a 429.
    - {{match: /api/v1/urls, methods: [GET], tier: premium, windows: ["1/1m"]}}
"""


@pytest.fixture
async def replicas(engine_yaml: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with started_replicas(config(engine_yaml)) as clients:
        yield clients


async def tier_on(client: httpx.AsyncClient) -> str:
    status = await client.get("/api/v1/rate-limit/status", headers=ALICE)
    assert status.status_code == 200, status.text
    tier: str = status.json()["tier"]
    return tier


async def test_a_stored_tier_overrides_the_keys_tier_on_every_replica_until_forgotten(
    replicas: list[httpx.AsyncClient], engine_yaml: str
) -> None:
    first, second = replicas
    assert await tier_on(first) == "free"
    assert [(await first.get("/api/v1/urls", headers=ALICE)).status_code for _ in range(2)] == [200, 200]

    stored = await first.put("/api/v1/users/alice/tier", json={"tier": "premium"}, headers=ADMIN)
    assert stored.status_code == 200, stored.text
    assert stored.json()["user_id"] == "alice" and stored.json()["tier"] == "premium"
    assert await tier_on(first) == "premium"  # at once where it was set
    assert [(await first.get("/api/v1/urls", headers=ALICE)).status_code for _ in range(2)] == [200, 429]

    async def premium_on_second() -> bool:
        return await tier_on(second) == "premium"

    assert await eventually(premium_on_second, 3)  # within key_refresh on the other replica
    # Redis counters are shared by the replicas; embedded ones are each process's own.
    shared = "kind: redis" in engine_yaml
    assert (await second.get("/api/v1/urls", headers=ALICE)).status_code == (429 if shared else 200)
    read = await second.get("/api/v1/users/alice/tier", headers=ADMIN)
    assert read.status_code == 200 and read.json()["tier"] == "premium"

    assert (await first.delete("/api/v1/users/alice/tier", headers=ADMIN)).status_code == 204
    assert await tier_on(first) == "free"
    assert (await first.get("/api/v1/urls", headers=ALICE)).status_code == 200

    async def free_on_second() -> bool:
        return await tier_on(second) == "free"

    assert await eventually(free_on_second, 3)
    assert (await first.get("/api/v1/users/alice/tier", headers=ADMIN)).status_code == 404
    assert (await first.delete("/api/v1/users/alice/tier", headers=ADMIN)).status_code == 404


async def test_only_an_admin_stores_a_declared_tier_and_bad_requests_name_their_field(
    replicas: list[httpx.AsyncClient],
) -> None:
    first, _ = replicas
    assert (await first.put("/api/v1/users/alice/tier", json={"tier": "premium"}, headers=ALICE)).status_code == 403
    assert (await first.get("/api/v1/users/alice/tier", headers=ALICE)).status_code == 403
    for body, field in [({"tier": "gold"}, "tier"), ({"tier": "free", "extra": 1}, "extra"), ({}, "tier")]:
        answer = await first.put("/api/v1/users/alice/tier", json=body, headers=ADMIN)
        assert answer.status_code == 400 and answer.json()["field"] == field, (body, answer.text)
    assert await tier_on(first) == "free"  # nothing was stored
