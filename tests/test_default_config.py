"""The shipped config/gateway.yaml shows all three systems with nothing edited: what README's quick tour does,
against the example upstream and the example webhook receiver (which verifies every signature)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from examples.receiver import create_app as receiver_app
from examples.upstream import app as upstream_app
from gateway.settings import load_settings
from tests.notify.peers import serve_asgi
from tests.proxy_fixtures import serve_gateway
from tests.shipped import SHIPPED_CONFIG, dev_environ


def test_the_shipped_config_needs_its_secrets() -> None:
    from gateway.exceptions import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings(SHIPPED_CONFIG, environ={})
    missing = "\n".join(caught.value.errors)
    for name in ("GATEWAY_DEV_KEY", "SHORTENER_SECRET", "WEBHOOK_SECRET"):
        assert f"environment variable {name} is not set" in missing  # never a fixed secret in the repository


async def test_the_quick_tour(tmp_path: Path) -> None:
    async with serve_asgi(upstream_app) as upstream:
        probe = dev_environ(tmp_path, upstream, "http://unused")
        receiver = receiver_app(probe["WEBHOOK_SECRET"])
        async with serve_asgi(receiver) as receiver_url:
            environ = {**probe, "WEBHOOK_URL": f"{receiver_url}/hook"}
            settings = load_settings(SHIPPED_CONFIG, environ=environ)
            dev = {"X-API-Key": environ["GATEWAY_DEV_KEY"]}
            async with serve_gateway(settings) as base, httpx.AsyncClient(base_url=base) as client:
                # 1. The proxy, and the rate limit an anonymous caller hits on it.
                answers = [await client.get("/app/hello") for _ in range(7)]
                assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
                assert answers[0].text == "Hello, world!\n" and "ratelimit" in answers[0].headers
                assert answers[-1].json()["error"] == "rate_limited" and "retry-after" in answers[-1].headers
                # 2. The caller's own windows.
                windows = (await client.get("/api/v1/rate-limit/status", headers=dev)).json()
                assert windows["user_id"] == "dev" and windows["limits"]
                # 3. A short link, and its redirect.
                created = await client.post("/api/v1/urls", json={"long_url": "https://example.com/docs"}, headers=dev)
                assert created.status_code == 201
                redirect = await client.get(f"/{created.json()['short_code']}")
                assert redirect.status_code == 302 and redirect.headers["location"] == "https://example.com/docs"
                # 4. A notification, delivered to the webhook receiver and the log.
                body = {"user_ids": ["dev"], "template_id": "welcome", "channels": ["webhook"], "data": {"name": "Dev"}}
                accepted = await client.post("/api/v1/notifications", json=body, headers=dev)
                assert accepted.status_code == 202
                status_url = f"/api/v1/notifications/{accepted.json()['notification_id']}/status"
                for _ in range(100):
                    found = (await client.get(status_url, headers=dev)).json()
                    if found["status"] == "completed":
                        break
                    await asyncio.sleep(0.05)
                assert found["status"] == "completed", found
                # 5. The hook: the anonymous caller's 429 became a notification for the developer.
                async with httpx.AsyncClient(base_url=receiver_url) as peek:
                    for _ in range(100):
                        seen = (await peek.get("/")).json()
                        subjects = [item["data"]["subject"] for _, item in seen["last"]]
                        if any("hit the app-anonymous limit" in subject for subject in subjects):
                            break
                        await asyncio.sleep(0.05)
    assert "Welcome, Dev" in subjects
    assert any("hit the app-anonymous limit" in subject for subject in subjects), subjects
    assert seen["refused"] == 0  # every delivery carried a valid signature
