"""Group commit on both engines: concurrent acceptances share one transaction and one enqueue, every one is
stored with its deliveries and its job, and a conflict in one (an idempotency twin) fails only that one."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from gateway.engines.database import Connection, UniqueViolation
from gateway.notify.models import Preferences, parse_request
from gateway.notify.service import NotificationService
from tests.notify.harness import bare_service, gateway_yaml, webhook_channel

BODY = {"user_ids": ["alice", "bob"], "template_id": "welcome", "channels": ["webhook"], "data": {"name": "Al"}}


def counting_transactions(service: NotificationService) -> list[int]:
    """Patch the store's database so each transaction it opens is counted; returns the counter."""
    database = service.store.db
    opened = [0]
    original = database.transaction

    @contextlib.asynccontextmanager
    async def transaction() -> AsyncIterator[Connection]:
        opened[0] += 1
        async with original() as conn:
            yield conn

    database.transaction = transaction  # type: ignore[method-assign]
    return opened


async def create(service: NotificationService, key: str | None = None) -> Any:
    request = parse_request(BODY, service.channels, max_recipients=100)
    return await service.create(request, created_by="app", idempotency=(key, "fp") if key else None)


async def test_concurrent_acceptances_share_commits_and_each_is_stored_and_queued(engine_yaml: str) -> None:
    text = gateway_yaml(engine_yaml, channels=webhook_channel("http://127.0.0.1:9/hook"))
    async with bare_service(text) as service:
        opened = counting_transactions(service)
        answers = await asyncio.gather(*(create(service) for _ in range(40)))
        # One transaction each before; now the ones that arrive together commit together.
        assert opened[0] <= 10, f"{opened[0]} transactions for 40 acceptances"
        ids = {json.loads(answer)["notification_id"] for answer in answers}
        assert len(ids) == 40
        for notification_id in ids:
            status = await service.status(notification_id)
            assert status is not None
            assert sorted(d["user_id"] for d in status["recipients"]) == ["alice", "bob"]
            assert {d["status"] for d in status["recipients"]} == {"queued"}
        jobs = await service.queue.receive("webhook", limit=200, wait=0.5)
        assert sorted({(job.job.notification_id, job.job.user_id) for job in jobs}) == sorted(
            (notification_id, user) for notification_id in ids for user in ("alice", "bob")
        )


async def test_a_conflict_in_a_shared_commit_fails_only_its_own_acceptance(engine_yaml: str) -> None:
    text = gateway_yaml(engine_yaml, channels=webhook_channel("http://127.0.0.1:9/hook"))
    async with bare_service(text) as service:
        await create(service, key="taken")
        opened = counting_transactions(service)
        outcomes = await asyncio.gather(
            *(create(service, key="taken" if i == 5 else None) for i in range(12)), return_exceptions=True
        )
        assert isinstance(outcomes[5], UniqueViolation)
        stored = [outcome for i, outcome in enumerate(outcomes) if i != 5 and isinstance(outcome, str)]
        assert len(stored) == 11, outcomes
        assert opened[0] >= 2  # the shared one, rolled back, then each again alone
        for answer in stored:
            status = await service.status(json.loads(answer)["notification_id"])
            assert status is not None and len(status["recipients"]) == 2


async def test_a_lone_acceptance_is_written_at_once(engine_yaml: str) -> None:
    text = gateway_yaml(engine_yaml, channels=webhook_channel("http://127.0.0.1:9/hook"))
    async with bare_service(text) as service:
        opened = counting_transactions(service)
        await asyncio.wait_for(create(service), 5)
        assert opened[0] == 1


async def test_concurrent_preference_lookups_share_a_select_and_each_gets_its_own(engine_yaml: str) -> None:
    text = gateway_yaml(engine_yaml, channels=webhook_channel("http://127.0.0.1:9/hook"))
    async with bare_service(text) as service:
        users = [f"user-{i}" for i in range(30)]
        for user in users[::3]:
            await service.store.put_preferences(Preferences(user, channels=(), stored=True), now=1.0)
        database = service.store.db
        selects = [0]
        fetch = database.fetch

        async def counting_fetch(sql: str, *args: Any) -> Any:
            selects[0] += "notify_preferences" in sql
            return await fetch(sql, *args)

        database.fetch = counting_fetch  # type: ignore[method-assign]
        found = await asyncio.gather(*(service.store.preferences([user]) for user in users))
        assert selects[0] <= 5, f"{selects[0]} SELECTs for 30 lookups"
        for user, answer in zip(users, found, strict=True):
            assert set(answer) == ({user} if user in users[::3] else set())
            if answer:
                assert answer[user].channels == () and answer[user].user_id == user
