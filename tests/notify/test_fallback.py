"""Channel fallback (notifications.fallback) through a running gateway on both engines: a notification that none
of its requested channels can take now goes to the first fallback channel the user can get, and its status says
which channel and why."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY

from tests.notify.harness import (
    SECRET,
    delivery,
    gateway_yaml,
    notify,
    put_preferences,
    settings,
    status_of,
    wait_for_status,
)
from tests.notify.peers import webhook_receiver
from tests.proxy_fixtures import eventually, serve_gateway


def fallbacks() -> float:
    return REGISTRY.get_sample_value("gateway_notify_fallbacks_total", {"channel": "backup"}) or 0.0


WELCOME = {"user_ids": ["alice"], "template_id": "welcome", "channels": ["webhook"], "data": {"name": "Alice"}}


def two_webhooks(primary: str, backup: str) -> str:
    hook = f"secret: '{SECRET}', timeout: 2s"
    breaker = "breaker: {failures: 1, window: 10s, cooldown: 60s}"
    webhook = f"webhook: {{plugin: webhook, url: '{primary}', {hook}, {breaker}}}\n"
    return webhook + f"backup: {{plugin: webhook, url: '{backup}', {hook}}}\n"


def config(engine_yaml: str, primary: str, backup: str, fallback: str = "fallback: [backup]") -> str:
    return gateway_yaml(
        engine_yaml,
        channels=two_webhooks(primary, backup),
        retries="{max_attempts: 2, base_delay: 10ms, max_delay: 20ms}",
        notifications=fallback,
    )


async def test_an_open_breaker_sends_the_next_notification_to_the_fallback_channel(engine_yaml: str) -> None:
    async with webhook_receiver(lambda n: 503) as down, webhook_receiver() as up:
        async with serve_gateway(settings(config(engine_yaml, down.url, up.url))) as base, httpx.AsyncClient() as c:
            first = (await notify(c, base, WELCOME)).json()["notification_id"]

            async def breaker_open() -> bool:
                metrics = (await c.get(f"{base}/metrics")).text
                return 'gateway_breaker_state{breaker="notify:webhook"} 2.0' in metrics  # open

            assert await eventually(breaker_open, 10)
            # The first one was queued before the breaker opened: it stays on its channel and waits.
            assert delivery(await status_of(c, base, first), "alice", "webhook")["reason"] is None

            before = fallbacks()
            second = (await notify(c, base, {**WELCOME, "data": {"name": "Again"}})).json()["notification_id"]
            found = await wait_for_status(c, base, second, "delivered")
    assert delivery(found, "alice", "webhook")["status"] == "skipped"
    assert delivery(found, "alice", "webhook")["reason"] == "breaker_open"
    assert delivery(found, "alice", "backup")["reason"] == "fallback:webhook"
    assert found["status"] == "completed"
    assert [request.json["data"]["body"] for request in up.requests] == ["Welcome, Again!"]
    assert fallbacks() - before == 1


async def test_an_opted_out_channel_falls_back_only_to_a_channel_the_user_opted_into(engine_yaml: str) -> None:
    async with webhook_receiver() as primary, webhook_receiver() as backup:
        async with (
            serve_gateway(settings(config(engine_yaml, primary.url, backup.url))) as base,
            httpx.AsyncClient() as c,
        ):
            assert (await put_preferences(c, base, "alice", {"channels": ["backup"]})).status_code == 200
            assert (await put_preferences(c, base, "bob", {"channels": []})).status_code == 200
            body = {**WELCOME, "user_ids": ["alice", "bob"]}
            found = await wait_for_status(c, base, (await notify(c, base, body)).json()["notification_id"], "delivered")
    assert delivery(found, "alice", "webhook")["reason"] == "opted_out"
    assert delivery(found, "alice", "backup")["status"] == "delivered"
    assert delivery(found, "alice", "backup")["reason"] == "fallback:webhook"
    # Bob opted out of everything: no fallback overrides that.
    assert [(e["channel"], e["status"], e["reason"]) for e in found["recipients"] if e["user_id"] == "bob"] == [
        ("webhook", "skipped", "opted_out")
    ]
    assert len(backup.requests) == 1 and primary.requests == []


async def test_without_a_fallback_an_opted_out_channel_is_only_skipped(engine_yaml: str) -> None:
    async with webhook_receiver() as primary, webhook_receiver() as backup:
        text = config(engine_yaml, primary.url, backup.url, fallback="")
        async with serve_gateway(settings(text)) as base, httpx.AsyncClient() as c:
            assert (await put_preferences(c, base, "alice", {"channels": ["backup"]})).status_code == 200
            found = await status_of(c, base, (await notify(c, base, WELCOME)).json()["notification_id"])
    assert [(e["channel"], e["status"], e["reason"]) for e in found["recipients"]] == [
        ("webhook", "skipped", "opted_out")
    ]
