"""Low priority goes out as one digest per interval; scheduled_at holds a notification back until its time."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx

from tests.notify.harness import gateway_yaml, notify, settings, status_of, wait_for_status, webhook_channel
from tests.notify.peers import webhook_receiver
from tests.proxy_fixtures import eventually, serve_gateway

WELCOME = {"user_ids": ["alice"], "template_id": "welcome", "channels": ["webhook"], "data": {"name": "Alice"}}


async def test_low_priority_items_are_combined_into_one_digest_per_interval(engine_yaml: str) -> None:
    async with webhook_receiver() as receiver:
        text = gateway_yaml(engine_yaml, channels=webhook_channel(receiver.url), notifications="digest_interval: 600ms")
        async with serve_gateway(settings(text)) as base, httpx.AsyncClient() as client:
            started = time.monotonic()
            low = [
                (await notify(client, base, {**WELCOME, "priority": "low", "data": {"name": name}})).json()
                for name in ("A", "B", "C")
            ]
            other_user = await notify(client, base, {**WELCOME, "user_ids": ["bob"], "priority": "low"})
            await asyncio.sleep(0.3)
            assert receiver.requests == []  # waiting for the interval
            assert (await status_of(client, base, low[0]["notification_id"]))["summary"]["pending"] == 1
            for accepted in low:
                await wait_for_status(client, base, accepted["notification_id"], "delivered")
            first_at = time.monotonic()
            late = await notify(client, base, {**WELCOME, "priority": "low", "data": {"name": "D"}})
            await wait_for_status(client, base, late.json()["notification_id"], "delivered")
            await wait_for_status(client, base, other_user.json()["notification_id"], "delivered")
    assert first_at - started >= 0.55
    digests = [request.json for request in receiver.requests]
    assert all(digest["type"] == "notification.digest" for digest in digests)
    by_user: dict[str, list[list[str]]] = {}
    for digest in digests:
        by_user.setdefault(digest["data"]["user_id"], []).append([item["body"] for item in digest["data"]["items"]])
    # alice: one message with the three, then the late one on its own in the next interval; bob: his own digest.
    assert by_user == {
        "alice": [["Welcome, A!", "Welcome, B!", "Welcome, C!"], ["Welcome, D!"]],
        "bob": [["Welcome, Alice!"]],
    }
    alice = [request for request in receiver.requests if request.json["data"]["user_id"] == "alice"]
    assert alice[1].at - alice[0].at >= 0.55  # once per interval
    assert digests[0]["data"]["subject"] in ("3 new notifications", "1 new notification")


async def test_scheduled_notifications_wait_for_their_time(engine_yaml: str) -> None:
    async with webhook_receiver() as receiver:
        async with serve_gateway(settings(gateway_yaml(engine_yaml, channels=webhook_channel(receiver.url)))) as base:
            async with httpx.AsyncClient() as client:
                due = time.time() + 1.0
                at = datetime.fromtimestamp(due, UTC).isoformat().replace("+00:00", "Z")
                accepted = await notify(client, base, {**WELCOME, "scheduled_at": at})
                assert accepted.status_code == 202
                notification_id = accepted.json()["notification_id"]
                found = await status_of(client, base, notification_id)
                assert found["recipients"][0]["status"] == "scheduled"
                assert found["scheduled_at"] is not None
                past = await notify(client, base, {**WELCOME, "scheduled_at": "2001-01-01T00:00:00Z"})
                await wait_for_status(client, base, past.json()["notification_id"], "delivered")
                await asyncio.sleep(0.5)
                assert len(receiver.requests) == 1  # only the one scheduled in the past
                await wait_for_status(client, base, notification_id, "delivered")

                async def both() -> bool:
                    return len(receiver.requests) == 2

                assert await eventually(both, 2)
    assert receiver.requests[1].at >= receiver.requests[0].at
    assert time.time() >= due
    assert receiver.requests[1].json["data"]["notification_id"] == notification_id


async def test_a_scheduled_low_priority_notification_joins_the_digest_when_due(sqlite_yaml: str) -> None:
    async with webhook_receiver() as receiver:
        text = gateway_yaml(sqlite_yaml, channels=webhook_channel(receiver.url), notifications="digest_interval: 300ms")
        async with serve_gateway(settings(text)) as base, httpx.AsyncClient() as client:
            at = datetime.fromtimestamp(time.time() + 0.5, UTC).isoformat()
            accepted = await notify(client, base, {**WELCOME, "priority": "low", "scheduled_at": at})
            notification_id = accepted.json()["notification_id"]
            assert (await status_of(client, base, notification_id))["recipients"][0]["status"] == ("scheduled")
            await wait_for_status(client, base, notification_id, "digest")
            assert receiver.requests == []
            await wait_for_status(client, base, notification_id, "delivered")
    assert [request.json["type"] for request in receiver.requests] == ["notification.digest"]
