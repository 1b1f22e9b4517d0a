"""The queue interface the workers use; `redis_streams.py` and `sqlite.py` implement it.

At-least-once: a received message stays the worker's for a lease; if the worker neither acknowledges nor
retries it within the lease (it crashed, or was cancelled), the message is handed out again. Consumers
therefore make their work idempotent (see gateway.notify.store: the delivery record).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gateway.engines.database import Connection, Database
from gateway.notify.models import Job
from gateway.notify.store import atomically

logger = logging.getLogger("gateway.notify")


@dataclass(frozen=True, slots=True)
class Received:
    job: Job
    #: The queue's own handle on the message (a stream entry id, a row id).
    handle: str
    #: True when the message was handed out before (its previous lease ran out).
    redelivered: bool = False


class Queue(ABC):
    name: str
    #: `enqueue(conn=...)` joins a database transaction: the queue lives in the same database as the records.
    transactional: bool = False

    @abstractmethod
    async def prepare(self, channels: Iterable[str]) -> None:
        """Create what the queues need (tables, consumer groups); safe to repeat."""

    @abstractmethod
    async def enqueue(self, jobs: Sequence[tuple[Job, float]], *, conn: Connection | None = None) -> None:
        """Add (job, not_before) pairs; not_before is epoch seconds (0 or the past: at once)."""

    @abstractmethod
    async def receive(self, channel: str, *, limit: int, wait: float) -> list[Received]:
        """Up to `limit` messages of `channel`, waiting at most `wait` seconds for the first."""

    @abstractmethod
    async def ack(self, received: Received) -> None:
        """The message is done with: it is removed."""

    @abstractmethod
    async def retry(self, received: Received, delay: float) -> None:
        """Acknowledge the message and hand it out again after `delay` seconds, as one step."""

    @abstractmethod
    async def depth(self, channel: str) -> int:
        """Messages waiting or in flight on `channel`."""

    async def tick(self, channels: Iterable[str]) -> None:
        """Periodic housekeeping (moving due delayed messages); nothing by default."""
        return None

    def wake(self, channels: Iterable[str]) -> None:
        """New messages were committed for `channels`: wake local receivers now rather than at their next poll."""
        return None


T = TypeVar("T")
#: The jobs a transaction's work wants sent once it commits, with when each is due (epoch seconds, 0 = now).
Jobs = list[tuple[Job, float]]


async def commit_then_enqueue(
    database: Database, queue: Queue, work: Callable[[Connection], Awaitable[tuple[T, Jobs]]]
) -> T:
    """Run `work` in one transaction and enqueue the jobs it returns, never before the records they point to
    exist: inside the same transaction when the queue lives in the database, else right after the commit.

    A job whose enqueue fails after the commit is not lost: its deliveries are recorded as queued (or in a
    digest), and the worker tick's recovery sweep enqueues them again after `recover_after`.
    """
    sent: Jobs = []

    async def run(conn: Connection) -> T:
        result, jobs = await work(conn)
        if jobs and queue.transactional:
            await queue.enqueue(jobs, conn=conn)
        sent[:] = jobs
        return result

    result = await atomically(database, run)
    if sent and queue.transactional:
        queue.wake(job.channel for job, _ in sent)
    elif sent:
        try:
            await queue.enqueue(sent)
        except Exception as exc:
            logger.warning("%d job(s) recorded, enqueue failed (the worker tick recovers them): %s", len(sent), exc)
    return result
