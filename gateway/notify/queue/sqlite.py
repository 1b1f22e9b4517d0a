"""The embedded queue: a table in the engine's database (the SQLite file by default), so nothing is lost on restart.

Receiving pushes a message's `visible_at` one lease into the future (its visibility timeout); acknowledging
deletes it; a message not acknowledged within its lease becomes visible again. The claiming UPDATE re-checks
`visible_at`, so concurrent workers (other processes, or PostgreSQL if the engine's database is one) never
share a message. Because it is the records' own database, `enqueue` can join the transaction that creates them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from gateway.engines.database import Connection, Database, Migration
from gateway.notify.models import Job
from gateway.notify.queue.base import Queue, Received
from gateway.notify.store import insert_rows

MIGRATIONS = [
    Migration(
        "notify_queue",
        1,
        """
        CREATE TABLE notify_queue (
            id TEXT PRIMARY KEY, channel TEXT NOT NULL, job TEXT NOT NULL,
            visible_at DOUBLE PRECISION NOT NULL, deliveries INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX notify_queue_visible ON notify_queue (channel, visible_at)
        """,
    )
]


class SqliteQueue(Queue):
    name = "sqlite"
    transactional = True

    def __init__(self, database: Database, *, lease_s: float, clock: Callable[[], float] = time.time) -> None:
        self.db = database
        self.lease_s = lease_s
        self._clock = clock
        self._wakeups: dict[str, asyncio.Event] = {}

    async def prepare(self, channels: Iterable[str]) -> None:
        await self.db.migrate(MIGRATIONS)

    async def enqueue(self, jobs: Sequence[tuple[Job, float]], *, conn: Connection | None = None) -> None:
        if not jobs:
            return
        rows = [(uuid.uuid4().hex, job.channel, job.encode(), at) for job, at in jobs]
        await insert_rows(
            conn if conn is not None else self.db, "notify_queue", ("id", "channel", "job", "visible_at"), rows
        )
        if conn is None:
            self.wake(job.channel for job, _ in jobs)

    async def receive(self, channel: str, *, limit: int, wait: float) -> list[Received]:
        wakeup = self._wakeups.setdefault(channel, asyncio.Event())
        deadline = time.monotonic() + wait
        while True:
            wakeup.clear()
            now = self._clock()
            rows = await self.db.fetch(
                "UPDATE notify_queue SET visible_at = $1, deliveries = deliveries + 1 WHERE visible_at <= $2 AND "
                "id IN (SELECT id FROM notify_queue WHERE channel = $3 AND visible_at <= $2 ORDER BY visible_at "
                "LIMIT $4) RETURNING id, job, deliveries",
                now + self.lease_s,
                now,
                channel,
                limit,
            )
            if rows:
                return [Received(Job.decode(r["job"]), r["id"], redelivered=r["deliveries"] > 1) for r in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(wakeup.wait(), remaining)
            except TimeoutError:
                pass

    async def ack(self, received: Received) -> None:
        await self.db.execute("DELETE FROM notify_queue WHERE id = $1", received.handle)

    async def retry(self, received: Received, delay: float) -> None:
        await self.db.execute(
            "UPDATE notify_queue SET visible_at = $1 WHERE id = $2", self._clock() + delay, received.handle
        )

    async def depth(self, channel: str) -> int:
        row = await self.db.fetchrow("SELECT COUNT(*) AS n FROM notify_queue WHERE channel = $1", channel)
        return int(row["n"]) if row else 0

    def wake(self, channels: Iterable[str]) -> None:
        for channel in set(channels):
            event = self._wakeups.get(channel)
            if event is not None:
                event.set()
