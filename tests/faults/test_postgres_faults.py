"""PostgreSQL faults against a real `gateway run`: a stalled database (SIGSTOP) and a stopped one. Cached links
still redirect; what needs the database answers 503 with Retry-After within its deadline; nothing accepted is
lost, and everything resumes without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.notify.harness import ADMIN_KEY, SECRET, TEMPLATES
from tests.notify.peers import webhook_receiver
from tests.proxy_fixtures import gateway_process

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.postgres]
DEADLINE_S = 1.0
#: What a request may take beyond the deadline here (two shared cores, a Python client in the same machine).
SLACK_S = 0.6
WELCOME = {"user_ids": ["alice"], "template_id": "welcome", "channels": ["webhook"], "data": {"name": "A"}}


@pytest.fixture
def own_postgres() -> Iterator[services.PostgresServer]:
    with services.postgres_server() as server:
        yield server


def pg_yaml(postgres: str, redis_url: str, receiver: str) -> str:
    templates = "\n".join("    " + line for line in TEMPLATES.splitlines())
    return f"""
server: {{access_log: false, drain_timeout: 1s, public_url: "http://gw.test"}}
engine:
  kind: redis
  redis: {{url: "{redis_url}"}}
  database: {{url: "{postgres}", deadline: {DEADLINE_S}s}}
identities:
  api_keys:
    - {{key: {ADMIN_KEY}, user_id: root, tier: premium, admin: true}}
shortener: {{redirect_status: 302, database_deadline: {DEADLINE_S}s, database_cooldown: 1s}}
notifications:
  channels:
    webhook: {{plugin: webhook, url: "{receiver}", secret: "{SECRET}", timeout: 2s}}
  templates:
{templates}
  retries: {{max_attempts: 8, base_delay: 200ms, max_delay: 1s}}
  workers: {{lease: 2s, poll_interval: 100ms, tick_interval: 200ms}}
"""


async def timed(call: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call  # type: ignore[misc]
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, elapsed: float, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text}"
    assert int(response.headers["retry-after"]) >= 1, what
    assert elapsed <= DEADLINE_S + SLACK_S, f"{what} took {elapsed:.2f}s"


@pytest.mark.parametrize("fault", ["stall", "stop"])
async def test_a_database_fault_costs_a_request_no_more_than_its_deadline(
    own_postgres: services.PostgresServer, tmp_path: Path, fault: str
) -> None:
    async with webhook_receiver() as receiver:
        with (
            services.redis_server() as redis_server,
            gateway_process(pg_yaml(own_postgres.url, redis_server.url, receiver.url), tmp_path) as gateway,
        ):
            admin = {"X-API-Key": ADMIN_KEY}
            async with httpx.AsyncClient(base_url=gateway.url, headers=admin, timeout=10) as client:
                created = await client.post("/api/v1/urls", json={"long_url": "https://example.com/cached"})
                assert created.status_code == 201, created.text
                code = created.json()["short_code"]
                assert (await client.get(f"/{code}")).status_code == 302  # now cached (LRU and Redis)
                before = (await client.post("/api/v1/notifications", json=WELCOME)).json()["notification_id"]

                if fault == "stall":
                    own_postgres.pause()
                else:
                    own_postgres.stop()
                try:
                    await asyncio.sleep(0.2)
                    cached, cached_s = await timed(client.get(f"/{code}"))
                    uncached, uncached_s = await timed(client.get("/zzzzzzz"))
                    create, create_s = await timed(
                        client.post("/api/v1/urls", json={"long_url": "https://example.com/new"})
                    )
                    notify, notify_s = await timed(client.post("/api/v1/notifications", json=WELCOME))
                    status, status_s = await timed(client.get(f"/api/v1/notifications/{before}/status"))
                    again, again_s = await timed(client.post("/api/v1/notifications", json=WELCOME))
                finally:
                    if fault == "stall":
                        own_postgres.resume()
                    else:
                        own_postgres.start()

                assert cached.status_code == 302 and cached_s < 0.5
                assert_unavailable(uncached, uncached_s, "an uncached redirect")
                assert_unavailable(create, create_s, "a create")
                assert_unavailable(notify, notify_s, "a notification")
                assert_unavailable(status, status_s, "a status read")
                assert_unavailable(again, again_s, "a second notification")

                # Back, without a restart: creates, notifications, and the one accepted before the fault.
                async def works() -> bool:
                    response = await client.post("/api/v1/urls", json={"long_url": "https://example.com/back"})
                    return response.status_code == 201

                for _ in range(100):
                    if await works():
                        break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail(f"creates did not come back\n{gateway.stderr()[-2000:]}")
                after = await client.post("/api/v1/notifications", json=WELCOME)
                assert after.status_code == 202
                for _ in range(150):
                    if len(receiver.applied) >= 2:
                        break
                    await asyncio.sleep(0.1)
    assert len(receiver.applied) == 2, gateway.stderr()[-2000:]
