"""Several gateways on one Redis (and PostgreSQL): `--workers 2`, and two separate processes. One global limit
stays exact, and a link created or deleted through one is seen by the other within the documented time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from tests import services
from tests.notify.harness import ADMIN_KEY
from tests.proxy_fixtures import UpstreamServer, gateway_process
from tests.test_ratelimit_load import burst

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]
#: What the README promises: a delete reaches other replicas' caches through Redis pub/sub at once.
INVALIDATION_S = 1.0


def replica_yaml(upstream: str, redis_url: str, postgres_url: str, path: str, workers: int = 1) -> str:
    return f"""
server: {{access_log: false, workers: {workers}, watch_config: false, limits: {{max_connections_per_ip: 0}}}}
engine:
  kind: redis
  redis: {{url: "{redis_url}"}}
  database: {{url: "{postgres_url}"}}
upstreams:
  up: {{targets: ["{upstream}"]}}
routes:
  - {{name: app, match: {{path_prefix: /app}}, upstream: up, strip_prefix: true}}
identities:
  api_keys:
    - {{key: {ADMIN_KEY}, user_id: root, tier: premium, admin: true}}
shortener: {{redirect_status: 302}}
ratelimit:
  rules:
    - {{name: burst, match: "{path}", windows: ["100/1m"]}}
"""


async def test_two_workers_share_one_exact_limit(
    upstream: UpstreamServer, redis_server: services.RedisServer, postgres_server: services.PostgresServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    redis.Redis.from_url(redis_server.url).flushall()
    for run in range(3):
        path = f"/app/workers-{uuid.uuid4().hex[:8]}"
        directory = tmp_path / str(run)
        directory.mkdir()
        text = replica_yaml(upstream.url, redis_server.url, postgres_server.url, path, workers=2)
        with gateway_process(text, directory) as gateway:
            statuses = await burst([gateway.port], path, 300)
        assert statuses == Counter({200: 100, 429: 200}), f"run {run}"


async def test_links_and_deletes_reach_the_other_replica(
    upstream: UpstreamServer, redis_server: services.RedisServer, postgres_server: services.PostgresServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    text = replica_yaml(upstream.url, redis_server.url, postgres_server.url, "/app/none")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    with gateway_process(text, one) as first, gateway_process(text, two) as second:
        admin = {"X-API-Key": ADMIN_KEY}
        async with httpx.AsyncClient(headers=admin) as client:
            created = await client.post(f"{first.url}/api/v1/urls", json={"long_url": "https://example.com/r"})
            code = created.json()["short_code"]
            # Seen at once by the other replica, and cached there (LRU and Redis).
            assert (await client.get(f"{second.url}/{code}")).status_code == 302
            assert (await client.get(f"{second.url}/{code}")).status_code == 302
            deleted = await client.delete(f"{first.url}/api/v1/urls/{code}")
            assert deleted.status_code == 204
            started = time.monotonic()
            while (await client.get(f"{second.url}/{code}")).status_code == 302:
                assert time.monotonic() - started < INVALIDATION_S, "the other replica still redirects"
                await asyncio.sleep(0.02)
            assert (await client.get(f"{second.url}/{code}")).status_code == 404
