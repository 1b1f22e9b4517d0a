"""The durable record of notifications: one row per notification, one per (notification, user, channel) delivery.

A delivery row is also the send's idempotency record. A worker claims it with a conditional UPDATE that
sets `sending` and a lease; only the claimant sends, and only while its lease (the fencing token) is the
row's. A redelivered job whose row is already finished is acknowledged without sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.batching import Coalescer, settle, settle_all
from gateway.engines.database import Connection, Database, Migration, Row
from gateway.exceptions import StorageError
from gateway.notify.models import Job, Preferences

MIGRATIONS = [
    Migration(
        "notify",
        1,
        """
        CREATE TABLE notify_notifications (
            id TEXT PRIMARY KEY, template_id TEXT NOT NULL, priority TEXT NOT NULL, channels TEXT NOT NULL,
            data TEXT NOT NULL, contents TEXT NOT NULL, created_by TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, scheduled_at DOUBLE PRECISION, recipient_count INTEGER NOT NULL);
        CREATE TABLE notify_deliveries (
            notification_id TEXT NOT NULL, user_id TEXT NOT NULL, channel TEXT NOT NULL, status TEXT NOT NULL,
            reason TEXT, address TEXT NOT NULL DEFAULT '[]', attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
            provider_id TEXT, digest_id TEXT, due_at DOUBLE PRECISION NOT NULL, lease_until DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
            sent_at DOUBLE PRECISION, delivered_at DOUBLE PRECISION,
            PRIMARY KEY (notification_id, user_id, channel));
        CREATE INDEX notify_deliveries_digest ON notify_deliveries (digest_id);
        CREATE INDEX notify_deliveries_provider ON notify_deliveries (channel, provider_id);
        CREATE INDEX notify_deliveries_due ON notify_deliveries (status, due_at);
        CREATE TABLE notify_preferences (
            user_id TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
        CREATE TABLE notify_idempotency (
            key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, notification_id TEXT NOT NULL, response TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL);
        CREATE INDEX notify_idempotency_created ON notify_idempotency (created_at);
        CREATE TABLE notify_digests (
            user_id TEXT NOT NULL, channel TEXT NOT NULL, digest_id TEXT NOT NULL UNIQUE,
            due_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (user_id, channel));
        CREATE TABLE notify_dlq (
            id TEXT PRIMARY KEY, channel TEXT NOT NULL, job TEXT NOT NULL, error TEXT, attempts INTEGER NOT NULL,
            failed_at DOUBLE PRECISION NOT NULL, replayed_at DOUBLE PRECISION);
        CREATE INDEX notify_dlq_failed ON notify_dlq (replayed_at, failed_at)
        """,
    ),
    # A user's notifications, newest first (GET /api/v1/users/{id}/notifications): the design's user_notifications.
    Migration("notify", 2, "CREATE INDEX notify_deliveries_user ON notify_deliveries (user_id, created_at)"),
]
DELIVERY_COLUMNS = (
    "notification_id", "user_id", "channel", "status", "reason", "address", "digest_id", "due_at", "created_at",
    "updated_at",
)  # fmt: skip
NOTIFICATION_COLUMNS = (
    "id", "template_id", "priority", "channels", "data", "contents", "created_by", "created_at", "scheduled_at",
    "recipient_count",
)  # fmt: skip
IDEMPOTENCY_COLUMNS = ("key", "fingerprint", "notification_id", "response", "created_at")
#: Parameters per multi-row INSERT, within both dialects' limits (SQLite's is 32,766 since 3.32).
INSERT_PARAMETERS_MAX = 5000
#: Preference lookups of at most this many users share a SELECT with the lookups waiting beside them, up to
#: SHARED_READS_MAX lookups a statement.
SHARED_READ_USERS_MAX = 50
SHARED_READS_MAX = 64
#: Besides `retrying` (and `sending` with an expired lease), the statuses a job may claim.
CLAIMABLE = {"send": ("queued", "scheduled"), "digest": ("digest", "digest"), "attach": ("scheduled", "scheduled")}
#: Receipt status → the statuses it may move a delivery from (a receipt never moves one backwards).
RECEIPT_FROM = {"delivered": ("sent",), "opened": ("sent", "delivered"), "failed": ("sent",)}


T = TypeVar("T")
#: How long a cancelled caller still waits for its transaction to end.
CANCELLED_TRANSACTION_WAIT_S = 5.0


async def atomically(database: Database, work: Callable[[Connection], Awaitable[T]]) -> T:
    """Run `work` in one transaction that cancelling the caller cannot cut short.

    Workers are cancelled on shutdown and reload; a task cancelled while the SQLite path awaits its BEGIN would
    leave the shared connection inside an open transaction. The transaction runs in a task of its own instead.
    """

    async def run() -> T:
        async with database.transaction() as conn:
            return await work(conn)

    task = asyncio.ensure_future(run())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(task), CANCELLED_TRANSACTION_WAIT_S)
        raise


@dataclass(frozen=True, slots=True)
class Claim:
    """Deliveries a worker now owns for one job; `lease` is the fencing token of every later update."""

    rows: list[Row]
    lease: float
    attempts: int


def placeholders(start: int, count: int) -> str:
    return ", ".join(f"${n}" for n in range(start, start + count))


def key_clause(job: Job, start: int = 1) -> tuple[str, list[Any]]:
    """The WHERE clause for the deliveries a job is about, with its arguments numbered from `start`."""
    if job.kind == "digest":
        return f"digest_id = ${start}", [job.digest_id]
    return (
        f"notification_id = ${start} AND user_id = ${start + 1} AND channel = ${start + 2}",
        [job.notification_id, job.user_id, job.channel],
    )


async def insert_rows(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows of values, in `columns`' order, in as few multi-row INSERTs as the parameter limit allows."""
    width = len(columns)
    per_statement = INSERT_PARAMETERS_MAX // width
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = ", ".join(f"({placeholders(1 + i * width, width)})" for i in range(len(chunk)))
        args = [value for row in chunk for value in row]
        await conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}", *args)


def _values(rows: Sequence[Row], columns: Sequence[str]) -> list[list[Any]]:
    return [[row[column] for column in columns] for row in rows]


class NotificationStore:
    def __init__(self, database: Database) -> None:
        self.db = database
        self._preference_reads: Coalescer[tuple[str, ...]] = Coalescer(
            self._read_shared,
            max_batch=SHARED_READS_MAX,
            closing_error=lambda: StorageError("the notification store is closing"),
        )

    def close(self) -> None:
        self._preference_reads.close()

    async def migrate(self) -> None:
        await self.db.migrate(MIGRATIONS)

    async def insert_notifications(
        self, conn: Connection, notifications: Sequence[Row], deliveries: Sequence[Row], idempotency: Sequence[Row]
    ) -> None:
        """Notifications with their deliveries and idempotency keys, each table in as few statements as the
        parameter limits allow (one acceptance, or a group commit of many)."""
        for table, columns, rows in (
            ("notify_idempotency", IDEMPOTENCY_COLUMNS, idempotency),
            ("notify_notifications", NOTIFICATION_COLUMNS, notifications),
            ("notify_deliveries", DELIVERY_COLUMNS, deliveries),
        ):
            await insert_rows(conn, table, columns, _values(rows, columns))

    async def notification(self, notification_id: str) -> Row | None:
        return await self.db.fetchrow("SELECT * FROM notify_notifications WHERE id = $1", notification_id)

    async def deliveries(self, notification_id: str) -> list[Row]:
        return await self.db.fetch(
            "SELECT * FROM notify_deliveries WHERE notification_id = $1 ORDER BY user_id, channel", notification_id
        )

    async def user_notifications(
        self,
        user_id: str,
        *,
        since: float | None,
        until: float | None,
        statuses: Sequence[str] | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> list[tuple[Row, list[Row]]]:
        """`user_id`'s notifications created in [since, until), newest first, each with its deliveries to that user
        (only those in `statuses`, when given), from just after the (created_at, notification_id) `after`."""
        args: list[Any] = [user_id]
        where = "user_id = $1"
        if since is not None:
            args.append(since)
            where += f" AND created_at >= ${len(args)}"
        if until is not None:
            args.append(until)
            where += f" AND created_at < ${len(args)}"
        if statuses:
            where += f" AND status IN ({placeholders(len(args) + 1, len(statuses))})"
            args += statuses
        if after is not None:
            n = len(args)
            where += f" AND (created_at < ${n + 1} OR (created_at = ${n + 1} AND notification_id < ${n + 2}))"
            args += after
        picked = await self.db.fetch(
            f"SELECT notification_id, MAX(created_at) AS created_at FROM notify_deliveries WHERE {where} "
            f"GROUP BY notification_id ORDER BY MAX(created_at) DESC, notification_id DESC LIMIT ${len(args) + 1}",
            *args,
            limit,
        )
        if not picked:
            return []
        ids = [row["notification_id"] for row in picked]
        marks = placeholders(2, len(ids))
        found = await self.db.fetch(
            f"SELECT id, template_id, priority, created_at FROM notify_notifications "
            f"WHERE id IN ({placeholders(1, len(ids))})",
            *ids,
        )
        notifications = {row["id"]: row for row in found}
        deliveries: dict[str, list[Row]] = {}
        status_clause = ""
        extra: list[Any] = []
        if statuses:
            status_clause = f" AND status IN ({placeholders(2 + len(ids), len(statuses))})"
            extra = list(statuses)
        for row in await self.db.fetch(
            f"SELECT * FROM notify_deliveries WHERE user_id = $1 AND notification_id IN ({marks}){status_clause} "
            "ORDER BY channel",
            user_id,
            *ids,
            *extra,
        ):
            deliveries.setdefault(row["notification_id"], []).append(row)
        return [(notifications[i], deliveries.get(i, [])) for i in ids if i in notifications]

    async def claim(self, job: Job, *, now: float, lease_s: float) -> Claim | None:
        """Take the job's deliveries for sending; None if they are finished or a live worker holds them."""
        where, args = key_clause(job, 5)
        lease = now + lease_s
        rows = await self.db.fetch(
            "UPDATE notify_deliveries SET status = 'sending', attempts = attempts + 1, lease_until = $1, "
            f"updated_at = $2 WHERE {where} AND (status IN ($3, $4, 'retrying') OR "
            "(status = 'sending' AND lease_until < $2)) RETURNING notification_id, user_id, channel, address, attempts",
            lease,
            now,
            *CLAIMABLE[job.kind],
            *args,
        )
        if not rows:
            return None
        return Claim(rows, lease, max(row["attempts"] for row in rows))

    async def state(self, job: Job) -> Row | None:
        where, args = key_clause(job)
        return await self.db.fetchrow(
            f"SELECT status, lease_until, attempts FROM notify_deliveries WHERE {where} LIMIT 1", *args
        )

    async def contents(self, notification_ids: Sequence[str]) -> dict[str, Row]:
        ids = list(dict.fromkeys(notification_ids))
        rows = await self.db.fetch(
            "SELECT id, template_id, priority, data, contents, created_at FROM notify_notifications "
            f"WHERE id IN ({placeholders(1, len(ids))})",
            *ids,
        )
        return {row["id"]: row for row in rows}

    async def finish(
        self,
        job: Job,
        claim: Claim,
        status: str,
        *,
        now: float,
        error: str | None = None,
        provider_id: str | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Record the outcome of a claimed send; 0 rows means the lease was lost to another worker."""
        where, args = key_clause(job, 8)
        sql = (
            "UPDATE notify_deliveries SET status = $1, last_error = $2, provider_id = COALESCE($3, provider_id), "
            "updated_at = $4, lease_until = NULL, sent_at = CASE WHEN $5 THEN $4 ELSE sent_at END, "
            "delivered_at = CASE WHEN $6 THEN $4 ELSE delivered_at END "
            f"WHERE status = 'sending' AND lease_until = $7 AND {where}"
        )
        sent = status in ("sent", "delivered")
        values = (status, error, provider_id, now, sent, status == "delivered", claim.lease, *args)
        if conn is not None:
            return await conn.execute(sql, *values)
        return await self.db.execute(sql, *values)

    async def release(self, job: Job, claim: Claim, *, now: float) -> None:
        """Give a claim back untried (the channel's breaker opened meanwhile): no attempt is spent."""
        where, args = key_clause(job, 4)
        status = "digest" if job.kind == "digest" else "queued"
        await self.db.execute(
            "UPDATE notify_deliveries SET status = CASE WHEN attempts > 1 THEN 'retrying' ELSE $1 END, "
            f"attempts = attempts - 1, lease_until = NULL, updated_at = $2 "
            f"WHERE status = 'sending' AND lease_until = $3 AND {where}",
            status,
            now,
            claim.lease,
            *args,
        )

    async def apply_receipt(self, channel: str, provider_id: str, status: str, error: str | None, now: float) -> int:
        previous = RECEIPT_FROM.get(status)
        if previous is None:
            return 0
        delivered = status in ("delivered", "opened")
        return await self.db.execute(
            "UPDATE notify_deliveries SET status = $1, last_error = COALESCE($2, last_error), updated_at = $3, "
            "delivered_at = CASE WHEN $4 AND delivered_at IS NULL THEN $3 ELSE delivered_at END "
            f"WHERE channel = $5 AND provider_id = $6 AND status IN ({placeholders(7, len(previous))})",
            status,
            error,
            now,
            delivered,
            channel,
            provider_id,
            *previous,
        )

    async def preferences(self, user_ids: Sequence[str]) -> dict[str, Preferences]:
        """The stored preferences of `user_ids` (a user without any is absent). Concurrent lookups of a few users
        share one SELECT: under load, each accepted notification would otherwise pay a round trip for it."""
        if len(user_ids) > SHARED_READ_USERS_MAX:
            return await self._read_preferences(user_ids)
        found: dict[str, Preferences] = await self._preference_reads.submit(tuple(user_ids))
        return found

    async def _read_shared(self, batch: list[tuple[tuple[str, ...], asyncio.Future[Any]]]) -> None:
        try:
            found = await self._read_preferences(sorted({user for users, _future in batch for user in users}))
        except Exception as exc:
            settle_all(batch, exc)
            return
        for users, future in batch:
            settle(future, None, {user: found[user] for user in users if user in found})

    async def _read_preferences(self, user_ids: Sequence[str]) -> dict[str, Preferences]:
        found: dict[str, Preferences] = {}
        for start in range(0, len(user_ids), 500):
            chunk = list(user_ids[start : start + 500])
            rows = await self.db.fetch(
                f"SELECT user_id, body FROM notify_preferences WHERE user_id IN ({placeholders(1, len(chunk))})",
                *chunk,
            )
            for row in rows:
                found[row["user_id"]] = Preferences.from_json(row["user_id"], json.loads(row["body"]))
        return found

    async def put_preferences(self, preferences: Preferences, now: float) -> None:
        await self.db.execute(
            "INSERT INTO notify_preferences (user_id, body, updated_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (user_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            preferences.user_id,
            json.dumps(preferences.to_json()),
            now,
        )

    async def idempotency(self, key: str) -> Row | None:
        return await self.db.fetchrow(
            "SELECT fingerprint, notification_id, response FROM notify_idempotency WHERE key = $1", key
        )

    async def purge_idempotency(self, before: float) -> int:
        return await self.db.execute("DELETE FROM notify_idempotency WHERE created_at < $1", before)

    async def stale(self, channel: str, *, before: float, limit: int = 500) -> list[Row]:
        """Deliveries on `channel` waiting since before `before` that a queued message should be carrying."""
        return await self.db.fetch(
            "SELECT d.notification_id, d.user_id, d.status, d.digest_id, n.priority "
            "FROM notify_deliveries d JOIN notify_notifications n ON n.id = d.notification_id "
            "WHERE d.channel = $1 AND d.updated_at < $2 AND d.due_at < $2 AND ("
            "d.status IN ('queued', 'scheduled', 'retrying') OR (d.status = 'sending' AND d.lease_until < $2) OR "
            "(d.status = 'digest' AND NOT EXISTS (SELECT 1 FROM notify_digests b WHERE b.digest_id = d.digest_id))) "
            "LIMIT $3",
            channel,
            before,
            limit,
        )

    async def touch(self, job: Job, now: float) -> None:
        where, args = key_clause(job, 2)
        await self.db.execute(
            f"UPDATE notify_deliveries SET due_at = $1, updated_at = $1 WHERE {where} AND status IN "
            "('queued', 'scheduled', 'digest', 'retrying', 'sending')",
            now,
            *args,
        )
