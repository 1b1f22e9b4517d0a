"""Low-priority notifications wait in their user's digest and go out as ONE message per digest interval.

The first low-priority item for a (user, channel) opens a batch due one interval later; later items join it.
When it is due, the flusher deletes the batch row (only one replica can) and enqueues one `digest` job; an
item that arrives after that opens the next batch. Joining takes the batch row's lock (INSERT ... ON CONFLICT
DO UPDATE), so an item is never attached to a batch that is being flushed without being part of it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.engines.database import Connection, Database, Row
from gateway.notify.models import Job
from gateway.notify.queue.base import Jobs, Queue, commit_then_enqueue
from gateway.notify.store import atomically, key_clause
from gateway.notify.templates import Content, Templates

logger = logging.getLogger("gateway.notify")
FLUSH_BATCH = 200


async def join(conn: Connection, user_id: str, channel: str, *, now: float, interval: float) -> str:
    """The id of the user's open digest on `channel`, opening one due in `interval` seconds if there is none."""
    row = await conn.fetchrow(
        "INSERT INTO notify_digests (user_id, channel, digest_id, due_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (user_id, channel) DO UPDATE SET due_at = notify_digests.due_at RETURNING digest_id",
        user_id,
        channel,
        uuid.uuid4().hex,
        now + interval,
    )
    assert row is not None
    return str(row["digest_id"])


async def attach(database: Database, job: Job, *, now: float, interval: float) -> bool:
    """A scheduled low-priority delivery came due: put it in its user's digest. False if it was already."""
    where, args = key_clause(job, 3)

    async def work(conn: Connection) -> int:
        digest_id = await join(conn, job.user_id, job.channel, now=now, interval=interval)
        return await conn.execute(
            f"UPDATE notify_deliveries SET status = 'digest', digest_id = $1, updated_at = $2 "
            f"WHERE {where} AND status = 'scheduled'",
            digest_id,
            now,
            *args,
        )

    return await atomically(database, work) > 0


async def flush_due(database: Database, queue: Queue, *, now: float) -> int:
    """Enqueue one `digest` job per due batch; returns how many."""
    due = await database.fetch(
        "SELECT user_id, channel, digest_id FROM notify_digests WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
        now,
        FLUSH_BATCH,
    )
    flushed = 0
    for batch in due:
        job = Job("digest", batch["channel"], user_id=batch["user_id"], digest_id=batch["digest_id"])

        async def take(conn: Connection, job: Job = job) -> tuple[int, Jobs]:
            taken = await conn.execute(
                "DELETE FROM notify_digests WHERE digest_id = $1 AND due_at <= $2", job.digest_id, now
            )
            # Enqueue failing after the commit leaves the items in `digest` with no batch: the recovery sweep
            # enqueues them again.
            return taken, [(job, 0.0)] if taken else []

        if await commit_then_enqueue(database, queue, take):
            flushed += 1
    return flushed


def render(items: Sequence[Mapping[str, Any]], channel: str, templates: Templates, template_id: str | None) -> Content:
    """The combined message: the configured digest template (given `items` and `count`), or a plain list."""
    if template_id is not None:
        return templates.render(template_id, channel, {"items": list(items), "count": len(items)})
    count = len(items)
    subject = f"{count} new notification{'s' if count != 1 else ''}"
    parts = [f"{item['subject']}\n{item['body']}" if item.get("subject") else str(item["body"]) for item in items]
    return Content(subject, "\n\n".join(parts))


def items_of(rows: Sequence[Row], contents: Mapping[str, Row], channel: str) -> list[dict[str, Any]]:
    """The digest's items, oldest first, each with what the template rendered for `channel` when it was accepted."""
    items = []
    for row in rows:
        notification = contents.get(row["notification_id"])
        if notification is None:
            continue
        rendered = json.loads(notification["contents"]).get(channel, {})
        items.append(
            {
                "notification_id": notification["id"],
                "template_id": notification["template_id"],
                "subject": rendered.get("subject"),
                "body": rendered.get("body", ""),
                "data": json.loads(notification["data"]),
                "created_at": notification["created_at"],
            }
        )
    items.sort(key=lambda item: item["created_at"])
    return items
