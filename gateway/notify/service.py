"""NotificationService: accepts notifications and wires the parts (store, queue, channels, breakers, workers, hooks).

Accepting renders every template part first (a missing variable is the caller's 400, not a send-time failure),
routes each user, then writes the notification, its delivery rows and the idempotency record in one
transaction. With the embedded queue the jobs join that transaction; with Redis they are added right after
it, and the worker tick re-enqueues any whose XADD was lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway import metrics
from gateway.batching import SharedWrites
from gateway.breaker import CircuitBreaker
from gateway.engines import Engines, breaker_events
from gateway.engines.database import Connection, Row, UniqueViolation
from gateway.events import EventBus
from gateway.exceptions import StorageError
from gateway.notify import digest
from gateway.notify.channel import Channel, load_channel
from gateway.notify.hooks import HookPipeline
from gateway.notify.idempotency import Idempotency
from gateway.notify.models import PENDING, Job, JobKind, NotificationRequest, Preferences
from gateway.notify.queue.base import Jobs, Queue, commit_then_enqueue
from gateway.notify.queue.redis_streams import RedisStreamQueue
from gateway.notify.queue.sqlite import SqliteQueue
from gateway.notify.router import ChannelRouter
from gateway.notify.store import NotificationStore
from gateway.notify.templates import Content, TemplateDataError, Templates
from gateway.notify.worker import WorkerPool
from gateway.timestamps import format_optional, format_time

if TYPE_CHECKING:
    from gateway.config.models import Settings

logger = logging.getLogger("gateway.notify")
PREPARE_RETRY_S = 5.0
#: Acceptances that share one transaction at most (group commit).
COMMIT_BATCH = 64


@dataclass(slots=True)
class Acceptance:
    """What accepting one notification writes: its row, its deliveries, its jobs, its idempotency key (if any)."""

    notification: Row
    deliveries: list[Row]
    jobs: Jobs
    idempotency: list[Row]


class NotificationService:
    def __init__(
        self, settings: Settings, engines: Engines, events: EventBus, *, clock: Callable[[], float] = time.time
    ):
        config = self.settings = settings.notifications
        self.engines = engines
        self.enabled = bool(config.channels)
        self._clock = clock
        self.store = NotificationStore(engines.database)
        self.templates = Templates(config.templates)
        public_url = self.public_url = settings.server.public_url
        self.channels: dict[str, Channel] = {
            name: load_channel(name, channel, public_url=public_url) for name, channel in config.channels.items()
        }
        on_change = breaker_events(events)
        self.breakers = {
            name: CircuitBreaker(
                f"notify:{name}",
                failures=channel.breaker.failures,
                window_s=channel.breaker.window,
                cooldown_s=channel.breaker.cooldown,
                on_change=on_change,
            )
            for name, channel in config.channels.items()
        }
        self.router = ChannelRouter(self.channels, config.default_channels, config.fallback)
        lease = config.workers.lease
        self.queue: Queue = (
            RedisStreamQueue(engines.redis, lease_s=lease)
            if engines.redis is not None
            else SqliteQueue(engines.database, lease_s=lease)
        )
        self.idempotency = Idempotency(engines.scripts, self.store)
        # Group commit: acceptances that arrive while one is being written share the next transaction and its
        # enqueue (one XADD pipeline), so a busy API pays one commit for many. A 202 still means stored.
        self._commits: SharedWrites[Acceptance] = SharedWrites(
            self._commit,
            self._commit_one,
            max_batch=COMMIT_BATCH,
            split_on=(UniqueViolation,),
            closing_error=lambda: StorageError("notifications are closing"),
        )
        self.workers = WorkerPool(
            config,
            store=self.store,
            queue=self.queue,
            channels=self.channels,
            breakers=self.breakers,
            templates=self.templates,
            clock=clock,
            scripts=engines.scripts,
        )
        self.hooks = HookPipeline(settings.hooks, self, engines.scripts, engines.embedded)
        self.ready = False
        self._preparing: asyncio.Task[None] | None = None

    async def start(self, *, workers: bool | None = None) -> None:
        """Migrate and create the queues, then start the workers; if the database or Redis is down, keep trying
        in the background (the API answers 503 meanwhile) rather than refuse to start the gateway."""
        if not self.enabled:
            return
        run_workers = self.settings.workers.in_process if workers is None else workers
        try:
            await self._prepare(run_workers)
        except Exception as exc:
            logger.error("notifications not ready (retrying every %gs): %s", PREPARE_RETRY_S, exc)
            self._preparing = asyncio.get_running_loop().create_task(self._prepare_until_ready(run_workers))

    async def _prepare(self, run_workers: bool) -> None:
        await self.store.migrate()
        await self.queue.prepare(self.channels)
        self.ready = True
        if run_workers:
            await self.workers.start()

    async def _prepare_until_ready(self, run_workers: bool) -> None:
        while not self.ready:
            await asyncio.sleep(PREPARE_RETRY_S)
            try:
                await self._prepare(run_workers)
            except Exception as exc:
                logger.warning("notifications still not ready: %s", exc)

    async def aclose(self) -> None:
        if self._preparing is not None:
            self._preparing.cancel()
        self._commits.close()
        self.store.close()
        await self.workers.aclose()
        await asyncio.gather(*(channel.aclose() for channel in self.channels.values()))

    def now(self) -> float:
        return self._clock()

    def _available(self, channel: str) -> bool:
        """The channel's breaker lets sends through now (closed, or due for a probe)."""
        return not self.breakers[channel].is_open()

    def render(self, request: NotificationRequest) -> dict[str, Content]:
        """Every requested channel's text; raises TemplateDataError naming what is missing."""
        return {
            name: self.templates.render(request.template_id, name, request.data, self.channels[name].parts)
            for name in request.channels
        }

    async def create(
        self,
        request: NotificationRequest,
        *,
        created_by: str,
        idempotency: tuple[str, str] | None = None,
        contents: dict[str, Content] | None = None,
    ) -> str:
        """Record and enqueue a notification; returns the 202 body as JSON text. `idempotency` is (key,
        fingerprint): its row joins the transaction, so a concurrent twin raises UniqueViolation."""
        contents = contents if contents is not None else self.render(request)
        now = self._clock()
        notification_id = uuid.uuid4().hex
        due = max(now, request.scheduled_at or now)
        later = due > now
        stored = await self.store.preferences(request.user_ids)
        deliveries: list[dict[str, Any]] = []
        jobs: list[tuple[Job, float]] = []
        joins: list[dict[str, Any]] = []

        def row(user_id: str, channel: str, status: str, reason: str | None = None, to: tuple[str, ...] = ()) -> None:
            deliveries.append(
                {"notification_id": notification_id, "user_id": user_id, "channel": channel, "status": status,
                 "reason": reason, "address": json.dumps(list(to)), "digest_id": None, "due_at": due,
                 "created_at": now, "updated_at": now}
            )  # fmt: skip

        def renders(channel: str) -> bool:
            # A fallback channel's text is rendered when first chosen; one the template cannot fill is passed over.
            if channel not in contents:
                try:
                    contents[channel] = self.templates.render(
                        request.template_id, channel, request.data, self.channels[channel].parts
                    )
                except TemplateDataError:
                    return False
            return True

        for user_id in request.user_ids:
            plan = self.router.plan(
                stored.get(user_id) or Preferences(user_id),
                request.channels,
                request.priority,
                available=self._available,
                renders=renders,
            )
            for channel, reason in plan.skipped:
                row(user_id, channel, "skipped", reason)
            for route in plan.routes:
                if route.reason is not None:
                    metrics.NOTIFY_FALLBACKS.labels(route.channel).inc()
                if plan.digest and not later:
                    row(user_id, route.channel, "digest", to=route.to)
                    joins.append(deliveries[-1])
                    continue
                row(user_id, route.channel, "scheduled" if later else "queued", route.reason, route.to)
                kind: JobKind = "attach" if plan.digest else "send"
                jobs.append((Job(kind, route.channel, notification_id, user_id), due))
        response = json.dumps(
            {"notification_id": notification_id, "status": "queued", "recipient_count": len(request.user_ids),
             "created_at": format_time(now)},
            separators=(",", ":"),
        )  # fmt: skip
        notification = {
            "id": notification_id, "template_id": request.template_id, "priority": request.priority,
            "channels": json.dumps(list(request.channels)), "data": json.dumps(request.data, default=str),
            "contents": json.dumps({name: {"subject": c.subject, "body": c.body} for name, c in contents.items()}),
            "created_by": created_by, "created_at": now, "scheduled_at": request.scheduled_at,
            "recipient_count": len(request.user_ids),
        }  # fmt: skip

        accepted = Acceptance(notification, deliveries, jobs, [])
        if idempotency is not None:
            accepted.idempotency.append(
                {"key": idempotency[0], "fingerprint": idempotency[1], "notification_id": notification_id,
                 "response": response, "created_at": now}
            )  # fmt: skip
        if joins:  # it locks digest rows, in its own order: a transaction of its own, so no deadlock

            async def write(conn: Connection) -> tuple[None, Jobs]:
                # Sorted, so concurrent requests lock digest rows in one order (no deadlock on PostgreSQL).
                for delivery in sorted(joins, key=lambda d: (d["user_id"], d["channel"])):
                    delivery["digest_id"] = await digest.join(
                        conn, delivery["user_id"], delivery["channel"], now=now, interval=self.settings.digest_interval
                    )
                await self._insert(conn, [accepted])
                return None, jobs

            await commit_then_enqueue(self.store.db, self.queue, write)
        else:
            await self._commits.write(accepted)
        metrics.NOTIFY_ACCEPTED.labels(request.priority).inc()
        for delivery in deliveries:
            if delivery["status"] == "skipped":
                metrics.NOTIFY_DELIVERIES.labels(delivery["channel"], "skipped").inc()
        return response

    async def _commit(self, accepted: Sequence[Acceptance]) -> None:
        async def write(conn: Connection) -> tuple[None, Jobs]:
            await self._insert(conn, accepted)
            return None, [job for one in accepted for job in one.jobs]

        await commit_then_enqueue(self.store.db, self.queue, write)

    async def _commit_one(self, accepted: Acceptance) -> None:
        await self._commit([accepted])

    async def _insert(self, conn: Connection, accepted: Sequence[Acceptance]) -> None:
        await self.store.insert_notifications(
            conn,
            [one.notification for one in accepted],
            [delivery for one in accepted for delivery in one.deliveries],
            [row for one in accepted for row in one.idempotency],
        )

    async def status(self, notification_id: str) -> dict[str, Any] | None:
        notification = await self.store.notification(notification_id)
        if notification is None:
            return None
        rows = await self.store.deliveries(notification_id)
        summary = dict.fromkeys(("total", "sent", "delivered", "opened", "failed", "pending", "skipped"), 0)
        summary["total"] = len(rows)
        recipients = []
        for row in rows:
            status = row["status"]
            bucket = "pending" if status in PENDING else status
            summary[bucket] += 1
            recipients.append(delivery_view(row))
        return {
            "notification_id": notification_id,
            "status": _overall(summary),
            "template_id": notification["template_id"],
            "priority": notification["priority"],
            "created_at": format_time(notification["created_at"]),
            "scheduled_at": format_optional(notification["scheduled_at"]),
            "created_by": notification["created_by"],
            "summary": summary,
            # The design's flat list: one entry per recipient and channel.
            "recipients": recipients,
        }

    async def preferences(self, user_id: str) -> Preferences:
        stored = await self.store.preferences([user_id])
        return stored.get(user_id) or Preferences(user_id, channels=self.router.default_channels)


def delivery_view(row: dict[str, Any]) -> dict[str, Any]:
    """One delivery (a user and a channel) as the API shows it."""
    keys = ("user_id", "channel", "status", "reason", "attempts", "last_error", "provider_id")
    view = {key: row[key] for key in keys}
    for key in ("created_at", "updated_at", "sent_at", "delivered_at"):
        view[key] = format_optional(row[key])
    return view


def _overall(summary: dict[str, int]) -> str:
    """queued/processing while anything is pending; then failed (nothing got through), partial, or completed.
    Skipped recipients never make a notification fail."""
    if summary["pending"]:
        return "queued" if summary["pending"] == summary["total"] - summary["skipped"] else "processing"
    reached = summary["sent"] + summary["delivered"] + summary["opened"]
    if summary["failed"]:
        return "partial" if reached else "failed"
    return "completed"
