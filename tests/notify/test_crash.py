"""A worker that dies mid-delivery: its message is redelivered, and nothing is applied or sent twice."""

from __future__ import annotations

import asyncio
import json

from gateway.notify.models import Job, NotificationRequest
from gateway.notify.queue.base import Received
from gateway.notify.service import NotificationService
from tests.notify.harness import bare_service, gateway_yaml, webhook_channel
from tests.notify.peers import webhook_receiver
from tests.proxy_fixtures import eventually

REQUEST = NotificationRequest(("alice",), "welcome", ("webhook",), {"name": "Alice"}, "high")
KILLABLE = "{lease: 1s, poll_interval: 50ms, tick_interval: 50ms, shutdown_grace: 0s}"


async def _delivery_row(service: NotificationService, notification_id: str) -> dict[str, object]:
    row = await service.store.db.fetchrow(
        "SELECT status, attempts FROM notify_deliveries WHERE notification_id = $1", notification_id
    )
    assert row is not None
    return row


async def test_a_worker_cancelled_before_the_answer_is_redelivered_and_applied_once(engine_yaml: str) -> None:
    async with webhook_receiver(hold=True) as receiver:
        text = gateway_yaml(engine_yaml, channels=webhook_channel(receiver.url), workers=KILLABLE)
        async with bare_service(text) as first:
            notification_id = _id(await first.create(REQUEST, created_by="test"))
            await first.workers.start()
            await asyncio.wait_for(receiver.arrived.wait(), 5)
            # The receiver has the request (and applied it); the worker dies before it hears back.
            await first.workers.aclose()
            assert (await _delivery_row(first, notification_id))["status"] == "sending"

        receiver.release.set()  # the next request is answered at once
        async with bare_service(text, workers=True) as second:

            async def delivered() -> bool:
                return (await _delivery_row(second, notification_id))["status"] == "delivered"

            assert await eventually(delivered, 10)
            row = await _delivery_row(second, notification_id)
    assert row["attempts"] == 2
    assert len(receiver.requests) == 2
    assert receiver.ids()[0] == receiver.ids()[1]  # the same webhook-id both times...
    assert len(receiver.applied) == 1  # ...so the receiver applied it once


async def test_a_redelivered_message_whose_record_says_sent_is_not_sent_again(engine_yaml: str) -> None:
    async with webhook_receiver() as receiver:
        text = gateway_yaml(engine_yaml, channels=webhook_channel(receiver.url), workers=KILLABLE)
        async with bare_service(text) as first:
            notification_id = _id(await first.create(REQUEST, created_by="test"))
            # One worker step by hand, real parts only: receive, claim, send, record... and die before the ack.
            received = await _receive_one(first)
            assert received.job == Job("send", "webhook", notification_id, "alice")
            claim = await first.store.claim(received.job, now=first.now(), lease_s=1.0)
            assert claim is not None
            message = await first.workers._message(received.job, claim)
            result = await first.channels["webhook"].send(message)
            await first.store.finish(received.job, claim, "delivered", now=first.now(), provider_id=result.provider_id)
            assert await first.queue.depth("webhook") == 1  # not acknowledged

        async with bare_service(text, workers=True) as second:

            async def drained() -> bool:
                return await second.queue.depth("webhook") == 0

            assert await eventually(drained, 10)  # redelivered after the lease, then acknowledged
            row = await _delivery_row(second, notification_id)
    assert row == {"status": "delivered", "attempts": 1}
    assert len(receiver.requests) == 1


async def _receive_one(service: NotificationService) -> Received:
    for _ in range(50):
        batch = await service.queue.receive("webhook", limit=1, wait=0.1)
        if batch:
            return batch[0]
    raise AssertionError("nothing to receive")


def _id(response: str) -> str:
    return str(json.loads(response)["notification_id"])
