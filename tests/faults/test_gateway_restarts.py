"""The gateway itself killed or stopped: what a graceful stop and a crash (SIGKILL) may lose, on both engines.

The guarantees (README, "Short links" and "Notifications"): a graceful stop loses no click; a crash loses at
most the clicks of the last flush interval (FLUSH_INTERVAL_S, 0.25 s); every accepted notification is delivered
after a crash, duplicates only under the same webhook-id.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.shortener.clicks import FLUSH_INTERVAL_S
from tests import services
from tests.faults.load import steady_load
from tests.notify.harness import ADMIN_KEY, SECRET, TEMPLATES
from tests.notify.peers import webhook_receiver
from tests.proxy_fixtures import UpstreamServer, gateway_process

pytestmark = [pytest.mark.faults, pytest.mark.slow]
REDIRECTS = 500


@pytest.fixture(params=["embedded", "redis"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    database = f'database: {{url: "sqlite:///{tmp_path}/gw.db"}}'
    if request.param == "embedded":
        yield f"engine: {{kind: embedded, {database}}}"
        return
    with services.redis_server() as redis_server:
        yield f'engine: {{kind: redis, redis: {{url: "{redis_server.url}"}}, {database}}}'


def restart_yaml(engine: str, receiver: str = "http://127.0.0.1:9/unused") -> str:
    templates = "\n".join("    " + line for line in TEMPLATES.splitlines())
    return f"""
server: {{access_log: false, drain_timeout: 2s, public_url: "http://gw.test", watch_config: false}}
{engine}
identities:
  api_keys:
    - {{key: {ADMIN_KEY}, user_id: root, tier: premium, admin: true}}
shortener: {{redirect_status: 302}}
notifications:
  channels:
    webhook: {{plugin: webhook, url: "{receiver}", secret: "{SECRET}", timeout: 5s}}
  templates:
{templates}
  workers: {{lease: 2s, poll_interval: 100ms, tick_interval: 200ms, shutdown_grace: 0s, recover_after: 3s}}
"""


async def _redirect_many(base: str, code: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for start in range(0, REDIRECTS, 50):
            answers = await asyncio.gather(*(client.get(f"/{code}") for _ in range(min(50, REDIRECTS - start))))
            assert {answer.status_code for answer in answers} == {302}


async def _clicks(base: str, code: str) -> int:
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": ADMIN_KEY}) as client:
        for _ in range(100):
            response = await client.get(f"/api/v1/urls/{code}")
            if response.status_code == 200 and response.json()["click_count"] >= REDIRECTS:
                break
            await asyncio.sleep(0.1)
        return int(response.json()["click_count"])


@pytest.mark.parametrize("stop", ["graceful", "crash-after-a-flush"])
async def test_clicks_survive_a_stop(engine: str, tmp_path: Path, stop: str) -> None:
    text = restart_yaml(engine)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    with gateway_process(text, first_dir) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": ADMIN_KEY}) as client:
            code = (await client.post("/api/v1/urls", json={"long_url": "https://example.com/c"})).json()["short_code"]
        await _redirect_many(gateway.url, code)
        if stop == "graceful":
            gateway.process.send_signal(signal.SIGTERM)  # at once: the clicks are still in memory
            assert await gateway.wait_exit(10) == 0
        else:
            await asyncio.sleep(3 * FLUSH_INTERVAL_S)  # one flush has run since the last redirect
            gateway.process.send_signal(signal.SIGKILL)
            await gateway.wait_exit(10)
    with gateway_process(text, second_dir) as restarted:
        assert await _clicks(restarted.url, code) == REDIRECTS


async def test_every_accepted_notification_is_delivered_after_a_crash_mid_delivery(engine: str, tmp_path: Path) -> None:
    async with webhook_receiver(hold=True) as receiver:
        text = restart_yaml(engine, receiver.url)
        first_dir, second_dir = tmp_path / "first", tmp_path / "second"
        first_dir.mkdir()
        second_dir.mkdir()
        body = {"template_id": "welcome", "channels": ["webhook"], "data": {"name": "A"}, "priority": "high"}
        with gateway_process(text, first_dir) as gateway:
            async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": ADMIN_KEY}) as client:
                for index in range(20):
                    answer = await client.post("/api/v1/notifications", json={**body, "user_ids": [f"u{index}"]})
                    assert answer.status_code == 202
            await asyncio.wait_for(receiver.arrived.wait(), 10)  # deliveries are in flight, held by the receiver
            gateway.process.send_signal(signal.SIGKILL)
            await gateway.wait_exit(10)
        receiver.hold = False
        receiver.release.set()
        with gateway_process(text, second_dir):
            for _ in range(300):
                if len(receiver.applied) == 20:
                    break
                await asyncio.sleep(0.1)
    assert len(receiver.applied) == 20  # every accepted notification, each applied once...
    assert len(set(receiver.ids())) == 20  # ...and any duplicate send carried the same webhook-id


async def test_a_graceful_shutdown_under_load(upstream: UpstreamServer, tmp_path: Path) -> None:
    text = f"""
server: {{access_log: false, drain_timeout: 3s, watch_config: false}}
engine: {{database: {{url: "sqlite:///{tmp_path}/gw.db"}}}}
upstreams:
  up: {{targets: ["{upstream.url}"]}}
routes:
  - {{name: app, match: {{path_prefix: /app}}, upstream: up, strip_prefix: true}}
"""
    with gateway_process(text, tmp_path) as gateway:
        async with steady_load(gateway.url, ["/app/hello"], clients=8) as load:
            await asyncio.sleep(1.0)
            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            code = await gateway.wait_exit(10)
            exited = time.monotonic() - signalled
    # Every answer that came was a success: requests in flight finished, new connections were refused.
    assert {sample.status for sample in load.samples} == {200}
    assert all(error.endswith(("ConnectError", "RemoteProtocolError", "ReadError")) for error in load.errors)
    # The load was real (a count, not a rate: this test must pass on a slow host too)...
    assert len(load.samples) > 20
    # ...and requests in flight when the signal came were answered, not cut.
    assert any(sample.at < signalled < sample.at + sample.latency for sample in load.samples)
    assert code == 0 and exited < 3.0, (code, exited)
