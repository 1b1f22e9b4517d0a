"""Delivery through a running gateway on both engines: retries, the dead-letter queue, breakers, restarts."""

from __future__ import annotations

import asyncio

import httpx

from tests.notify.harness import (
    ADMIN_KEY,
    delivery,
    gateway_yaml,
    notify,
    settings,
    status_of,
    wait_for_status,
    webhook_channel,
)
from tests.notify.peers import webhook_receiver
from tests.proxy_fixtures import eventually, serve_gateway

WELCOME = {"user_ids": ["alice"], "template_id": "welcome", "channels": ["webhook"], "data": {"name": "Alice"}}


async def test_a_receiver_failing_twice_gets_the_message_on_attempt_3(engine_yaml: str) -> None:
    async with webhook_receiver(lambda n: 503 if n <= 2 else 200) as receiver:
        config = settings(gateway_yaml(engine_yaml, channels=webhook_channel(receiver.url)))
        async with serve_gateway(config) as base, httpx.AsyncClient() as client:
            accepted = await notify(client, base, WELCOME)
            assert accepted.status_code == 202, accepted.text
            body = accepted.json()
            assert body["status"] == "queued" and body["recipient_count"] == 1
            found = await wait_for_status(client, base, body["notification_id"], "delivered")
    entry = delivery(found, "alice", "webhook")
    assert entry["attempts"] == 3
    assert entry["last_error"] is None and entry["delivered_at"] is not None
    assert found["status"] == "completed" and found["summary"]["delivered"] == 1
    # Three requests for one message: the same webhook-id every time, applied once.
    assert len(receiver.requests) == 3 and len(set(receiver.ids())) == 1
    assert len(receiver.applied) == 1


async def test_an_always_failing_receiver_dead_letters_then_a_replay_delivers(engine_yaml: str) -> None:
    healthy = False
    async with webhook_receiver(lambda n: 200 if healthy else 500) as receiver:
        config = settings(gateway_yaml(engine_yaml, channels=webhook_channel(receiver.url)))
        async with serve_gateway(config) as base, httpx.AsyncClient() as client:
            notification_id = (await notify(client, base, WELCOME)).json()["notification_id"]
            failed = await wait_for_status(client, base, notification_id, "failed")
            assert failed["status"] == "failed"
            assert delivery(failed, "alice", "webhook")["attempts"] == 3
            assert "HTTP 500" in delivery(failed, "alice", "webhook")["last_error"]
            assert len(receiver.requests) == 3

            admin = {"X-API-Key": ADMIN_KEY}
            assert (await client.get(f"{base}/api/v1/notifications/dlq")).status_code == 403
            entries = (await client.get(f"{base}/api/v1/notifications/dlq", headers=admin)).json()["entries"]
            assert [(e["notification_id"], e["user_id"], e["attempts"]) for e in entries] == [
                (notification_id, "alice", 3)
            ]

            healthy = True
            replay = await client.post(f"{base}/api/v1/notifications/dlq/{entries[0]['id']}/replay", headers=admin)
            assert replay.status_code == 202
            delivered = await wait_for_status(client, base, notification_id, "delivered")
            assert delivery(delivered, "alice", "webhook")["attempts"] == 1  # a replay starts again from 1
            assert (await client.get(f"{base}/api/v1/notifications/dlq", headers=admin)).json()["entries"] == []
            again = await client.post(f"{base}/api/v1/notifications/dlq/{entries[0]['id']}/replay", headers=admin)
            assert again.status_code == 404
    assert len(receiver.applied) == 1


async def test_while_the_breaker_is_open_messages_wait_and_none_is_dropped(engine_yaml: str) -> None:
    async with webhook_receiver(lambda n: 503 if n <= 3 else 200) as receiver:
        channel = webhook_channel(receiver.url, breaker="{failures: 3, window: 10s, cooldown: 700ms}")
        workers = "{concurrency: 1, lease: 1s, poll_interval: 50ms, tick_interval: 50ms}"
        text = gateway_yaml(
            engine_yaml, channels=channel, retries="{max_attempts: 10, base_delay: 10ms}", workers=workers
        )
        config = settings(text)
        async with serve_gateway(config) as base, httpx.AsyncClient() as client:
            ids = [(await notify(client, base, {**WELCOME, "user_ids": [f"u{i}"]})).json() for i in range(5)]
            for accepted in ids:
                await wait_for_status(client, base, accepted["notification_id"], "delivered", timeout=15)
            metrics = (await client.get(f"{base}/metrics")).text
    times = [request.at for request in receiver.requests]
    # Three failures opened the breaker; nothing was sent until the cooldown let a probe through.
    assert times[3] - times[2] >= 0.6
    assert len(receiver.applied) == 5
    assert 'gateway_breaker_state{breaker="notify:webhook"} 0.0' in metrics


async def test_messages_queued_across_a_restart_are_all_delivered(engine_yaml: str) -> None:
    healthy = False
    async with webhook_receiver(lambda n: 200 if healthy else 503) as receiver:
        text = gateway_yaml(
            engine_yaml,
            channels=webhook_channel(receiver.url, breaker="{failures: 1000}"),
            retries="{max_attempts: 100, base_delay: 20ms, max_delay: 100ms}",
        )
        config = settings(text)
        async with httpx.AsyncClient() as client:
            async with serve_gateway(config) as base:
                accepted = [
                    (await notify(client, base, {**WELCOME, "user_ids": [f"user{i}"]})).json()["notification_id"]
                    for i in range(20)
                ]

                async def all_tried() -> bool:
                    return len(receiver.requests) >= 20

                assert await eventually(all_tried, 10)
            # Stopped with every message still undelivered: some queued, some waiting for a retry, maybe one in flight.
            assert receiver.applied == {}
            healthy = True
            await asyncio.sleep(0.1)
            async with serve_gateway(config) as base:
                for notification_id in accepted:
                    found = await wait_for_status(client, base, notification_id, "delivered", timeout=15)
                    assert found["summary"]["delivered"] == 1
                statuses = [await status_of(client, base, n) for n in accepted]
    assert len(receiver.applied) == 20
    assert all(s["status"] == "completed" for s in statuses)


async def test_a_receivers_retry_after_is_waited_for_before_the_next_try(engine_yaml: str) -> None:
    first_refused = webhook_receiver(lambda n: 503 if n == 1 else 200, retry_after=lambda n: "1" if n == 1 else None)
    async with first_refused as receiver:
        text = gateway_yaml(engine_yaml, channels=webhook_channel(receiver.url), retries="{schedule: [50ms, 50ms]}")
        async with serve_gateway(settings(text)) as base, httpx.AsyncClient() as client:
            accepted = await notify(client, base, WELCOME)
            found = await wait_for_status(client, base, accepted.json()["notification_id"], "delivered")
    assert delivery(found, "alice", "webhook")["attempts"] == 2
    first, second = receiver.requests
    assert second.at - first.at >= 0.95  # the schedule said 50 ms; the receiver asked for 1 s


async def test_a_destinations_send_limit_holds_messages_back_without_spending_attempts(engine_yaml: str) -> None:
    async with webhook_receiver() as receiver:
        channel = webhook_channel(receiver.url, rate_limit='"2/1s"')
        text = gateway_yaml(engine_yaml, channels=channel, retries="{max_attempts: 1, base_delay: 10ms}")
        async with serve_gateway(settings(text)) as base, httpx.AsyncClient() as client:
            ids = [(await notify(client, base, WELCOME)).json()["notification_id"] for _ in range(5)]
            await asyncio.sleep(0.4)
            early = len(receiver.requests)
            found = [await wait_for_status(client, base, nid, "delivered", timeout=10) for nid in ids]
    assert early <= 2  # the limit held the rest back
    assert len(receiver.requests) == 5 and len(set(receiver.ids())) == 5  # each sent once, none lost
    # Held back is not a failed attempt: with max_attempts 1, a counted attempt would have dead-lettered it.
    assert all(delivery(entry, "alice", "webhook")["attempts"] == 1 for entry in found)
    assert receiver.requests[-1].at - receiver.requests[0].at >= 0.9
