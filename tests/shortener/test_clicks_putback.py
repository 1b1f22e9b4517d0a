"""Clicks that no storage took are kept in memory and stored by the next flush: none lost, none counted twice.

The storage really fails: the database's `clicks_queue` table is renamed away for one flush (and, on the
distributed stack, the click stream's key holds a string, so XADD gets WRONGTYPE), then put back.
"""

from __future__ import annotations

import asyncio
import time

from gateway.engines.database import Database
from gateway.shortener.clicks import STREAM, ClickPipeline, ClickRecorder
from tests.proxy_fixtures import eventually
from tests.shortener.conftest import Backend, Running, running
from tests.shortener.test_clicks import CHROME, IPHONE


async def break_storage(backend: Backend, admin: Database, gateway: Running) -> None:
    await admin.execute("ALTER TABLE clicks_queue RENAME TO clicks_queue_away")
    if backend.redis_url is not None:
        assert gateway.service.clicks.redis is not None
        await gateway.service.clicks.redis.client.set(STREAM, "not a stream")


async def repair_storage(backend: Backend, admin: Database, gateway: Running) -> None:
    await admin.execute("ALTER TABLE clicks_queue_away RENAME TO clicks_queue")
    if backend.redis_url is not None:
        assert gateway.service.clicks.redis is not None
        await gateway.service.clicks.redis.client.delete(STREAM)


async def test_clicks_no_storage_took_are_stored_by_the_next_flush_exactly_once(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        code = await gateway.code()
        # The gateway's own flusher and aggregator stop, so that this test decides when clicks move.
        gateway.service.clicks.stop()
        recorder = ClickRecorder()
        pipeline = ClickPipeline(
            store=gateway.service.store,
            recorder=recorder,
            events=gateway.app.events,
            redis=gateway.service.clicks.redis,
            consumer="putback-test",
        )
        now = time.time()
        for _ in range(2):
            recorder.record(code, now, None, CHROME.encode())
        recorder.record(code, now, b"https://news.example.com/a", IPHONE.encode())

        admin = Database(backend.database_url)
        await admin.connect()
        try:
            await break_storage(backend, admin, gateway)
            try:
                assert await pipeline.flush() == 0
            finally:
                await repair_storage(backend, admin, gateway)
        finally:
            await admin.aclose()
        assert len(recorder) == 3, "the clicks of the failed flush were dropped"

        # Clicks recorded meanwhile merge with the kept ones; the next flush stores them all.
        recorder.record(code, now + 1, None, CHROME.encode())
        recorder.record(code, now + 1, None, IPHONE.encode())
        assert await pipeline.flush() > 0
        assert len(recorder) == 0

        async def folded() -> bool:
            await pipeline.aggregate()
            return await gateway.click_count(code) >= 5

        await eventually(folded, timeout=5)
        await asyncio.sleep(0.3)  # a second look: nothing folded twice
        await pipeline.aggregate()
        assert await gateway.click_count(code) == 5
        meta = (await gateway.client.get(f"/api/v1/urls/{code}")).json()
        assert meta["click_count"] == 5
        by_agent: dict[str, int] = {}
        for row in meta["clicks_by_day"]:
            by_agent[row["agent"]] = by_agent.get(row["agent"], 0) + row["clicks"]
        assert by_agent == {"desktop": 3, "mobile": 2}
        await gateway.app.events.flush()
        clicked = [
            event.data for event in gateway.events if event.type == "url.clicked" and event.data["short_code"] == code
        ]
        assert sum(event["count"] for event in clicked) == 5  # emitted once, by the flush that stored them
