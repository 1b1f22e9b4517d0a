"""The dead-letter queue: jobs that failed permanently or ran out of attempts, kept until someone replays them.

It is a table in the durable database on both engines, so it can be listed, and a replay survives restarts.
Replaying resets the job's deliveries to a fresh start (attempts 0) and enqueues the job again.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.engines.database import Connection, Database, Row
from gateway.notify.models import Job
from gateway.notify.queue.base import Jobs, Queue, commit_then_enqueue
from gateway.notify.store import key_clause
from gateway.timestamps import format_optional


async def add(conn: Connection, job: Job, *, error: str, attempts: int, now: float) -> str:
    entry_id = uuid.uuid4().hex
    await conn.execute(
        "INSERT INTO notify_dlq (id, channel, job, error, attempts, failed_at) VALUES ($1, $2, $3, $4, $5, $6)",
        entry_id,
        job.channel,
        job.encode(),
        error,
        attempts,
        now,
    )
    return entry_id


async def entries(database: Database, *, limit: int = 100) -> list[Row]:
    return await database.fetch("SELECT * FROM notify_dlq WHERE replayed_at IS NULL ORDER BY failed_at LIMIT $1", limit)


async def size(database: Database) -> int:
    row = await database.fetchrow("SELECT COUNT(*) AS n FROM notify_dlq WHERE replayed_at IS NULL")
    return int(row["n"]) if row else 0


def describe(row: Row) -> dict[str, Any]:
    job = Job.decode(row["job"])
    return {
        "id": row["id"],
        "channel": row["channel"],
        "kind": job.kind,
        "notification_id": job.notification_id or None,
        "user_id": job.user_id or None,
        "digest_id": job.digest_id or None,
        "error": row["error"],
        "attempts": row["attempts"],
        "failed_at": format_optional(row["failed_at"]),
    }


async def replay(database: Database, queue: Queue, entry_id: str, *, now: float) -> Job | None:
    """Send the entry's job again from attempt 1; None if there is no such entry waiting."""

    async def work(conn: Connection) -> tuple[Job | None, Jobs]:
        row = await conn.fetchrow("SELECT job FROM notify_dlq WHERE id = $1 AND replayed_at IS NULL", entry_id)
        if row is None:
            return None, []
        job = Job.decode(row["job"])
        await conn.execute("UPDATE notify_dlq SET replayed_at = $1 WHERE id = $2", now, entry_id)
        where, args = key_clause(job, 3)
        # `queued` / `digest` rather than `retrying`: if the enqueue below is lost, the recovery sweep finds them.
        await conn.execute(
            f"UPDATE notify_deliveries SET status = $1, attempts = 0, lease_until = NULL, due_at = $2, "
            f"updated_at = $2 WHERE {where} AND status = 'failed'",
            "digest" if job.kind == "digest" else "queued",
            now,
            *args,
        )
        return job, [(job, 0.0)]

    return await commit_then_enqueue(database, queue, work)
