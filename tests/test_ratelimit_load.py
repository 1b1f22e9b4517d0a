"""The limiter under the load it exists for: bursts against real `gateway run` processes on a healthy Redis (and
Redis Cluster) must be decided exactly, every decision made, however many callers queue in the gateway."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from tests import services
from tests.proxy_fixtures import GatewayProcess, UpstreamServer, gateway_process, metric, scrape

pytestmark = [pytest.mark.redis, pytest.mark.slow]
RESULTS = ("allowed", "refused", "failed_open", "failed_closed", "overloaded", "overloaded_closed")


def load_yaml(upstream: str, redis_url: str, path: str, *, limit: int, cluster: bool = False, extra: str = "") -> str:
    return f"""
server:
  access_log: false
  limits: {{max_connections_per_ip: 0}}
engine:
  kind: redis
  redis: {{url: "{redis_url}", cluster: {str(cluster).lower()}{extra}}}
  database: {{url: "sqlite:///:memory:"}}
upstreams:
  up: {{targets: ["{upstream}"]}}
routes:
  - {{name: app, match: {{path_prefix: /app}}, upstream: up, strip_prefix: true}}
ratelimit:
  rules:
    - {{name: burst, match: "{path}", windows: ["{limit}/1m"]}}
"""


async def _one(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        line = await reader.readline()
        return int(line.split()[1])
    finally:
        writer.close()


async def burst(ports: list[int], path: str, count: int) -> Counter[int]:
    """`count` requests at once, each on its own connection, spread round robin over the gateways."""
    request = f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode()
    statuses = await asyncio.gather(*(_one(ports[i % len(ports)], request) for i in range(count)))
    return Counter(statuses)


async def decisions(gateway: GatewayProcess) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = await scrape(client, gateway.url)
    return {
        result: metric(text, "gateway_ratelimit_decisions_total", rule="burst", result=result) for result in RESULTS
    }


def _fresh(server: services.RedisServer) -> None:
    redis.Redis.from_url(server.url).flushall()


async def test_a_2000_request_burst_on_one_gateway_is_decided_exactly(
    upstream: UpstreamServer, redis_server: services.RedisServer, tmp_path: Path
) -> None:
    _fresh(redis_server)
    path = f"/app/burst-{uuid.uuid4().hex[:8]}"
    with gateway_process(load_yaml(upstream.url, redis_server.url, path, limit=100), tmp_path) as gateway:
        statuses = await burst([gateway.port], path, 2000)
        counted = await decisions(gateway)

    assert statuses == Counter({200: 100, 429: 1900})
    assert counted == {**dict.fromkeys(RESULTS, 0.0), "allowed": 100.0, "refused": 1900.0}


async def test_two_gateways_on_one_redis_share_one_exact_limit(
    upstream: UpstreamServer, redis_server: services.RedisServer, tmp_path: Path
) -> None:
    _fresh(redis_server)
    for run in range(5):
        path = f"/app/shared-{uuid.uuid4().hex[:8]}"
        text = load_yaml(upstream.url, redis_server.url, path, limit=100)
        (tmp_path / f"a{run}").mkdir()
        (tmp_path / f"b{run}").mkdir()
        with (
            gateway_process(text, tmp_path / f"a{run}") as first,
            gateway_process(text, tmp_path / f"b{run}") as second,
        ):
            statuses = await burst([first.port, second.port], path, 200)
            counted = [await decisions(first), await decisions(second)]
        assert statuses == Counter({200: 100, 429: 100}), f"run {run}"
        assert sum(c["allowed"] for c in counted) == 100
        assert all(c["failed_open"] == 0 and c["overloaded"] == 0 for c in counted)


async def test_a_burst_on_redis_cluster_is_decided_exactly(
    upstream: UpstreamServer, redis_cluster: list[services.RedisServer], tmp_path: Path
) -> None:
    from tests.test_engines import wait_until_every_node_is_ok

    await wait_until_every_node_is_ok(redis_cluster)
    path = f"/app/cluster-{uuid.uuid4().hex[:8]}"
    text = load_yaml(upstream.url, redis_cluster[0].url, path, limit=100, cluster=True)
    with gateway_process(text, tmp_path) as gateway:
        statuses = await burst([gateway.port], path, 2000)
        counted = await decisions(gateway)

    assert statuses == Counter({200: 100, 429: 1900})
    assert counted["failed_open"] == 0 and counted["overloaded"] == 0


async def test_past_the_queue_bound_the_rules_policy_applies_and_is_counted_apart(
    upstream: UpstreamServer, redis_server: services.RedisServer, tmp_path: Path
) -> None:
    _fresh(redis_server)
    path = f"/app/shed-{uuid.uuid4().hex[:8]}"
    text = load_yaml(upstream.url, redis_server.url, path, limit=10_000, extra=", max_queue: 5")
    with gateway_process(text, tmp_path) as gateway:
        statuses = await burst([gateway.port], path, 1000)
        counted = await decisions(gateway)

    assert statuses == Counter({200: 1000})  # the rule fails open: shed decisions are allowed...
    assert counted["overloaded"] > 0  # ...and counted as shed, not as an outage
    assert counted["failed_open"] == 0
    assert counted["allowed"] + counted["overloaded"] == 1000
