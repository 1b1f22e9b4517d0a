"""Where a notification is sent and retried: one consumer loop per channel queue, plus a periodic tick.

For each job: the channel's breaker must allow a call (else the job waits in its queue); the delivery record
is claimed (else it was sent already, or a live worker holds it); then the channel sends. A retryable failure
is retried after the configured schedule's delay (or an exponential backoff), and never sooner than the
provider's Retry-After; a permanent failure, or the last attempt, marks the delivery failed and dead-letters
the job. The tick flushes due digests, moves due delayed
messages, re-enqueues deliveries whose message was lost (Redis engine only) and updates the gauges.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from gateway import metrics
from gateway.breaker import CircuitBreaker, State
from gateway.config.notifications import NotificationSettings, RetrySettings
from gateway.config.windows import parse_windows
from gateway.engines.base import ScriptEngine
from gateway.exceptions import StorageError
from gateway.notify import digest, dlq
from gateway.notify.channel import Channel, ChannelError, Message, PermanentError, RetryableError, redact_urls
from gateway.notify.models import Job, JobKind
from gateway.notify.queue.base import Queue, Received
from gateway.notify.store import Claim, NotificationStore, atomically
from gateway.notify.templates import Templates
from gateway.ratelimit.limiter import SlidingWindowLimiter

if TYPE_CHECKING:
    from gateway.engines.database import Connection, Row

logger = logging.getLogger("gateway.notify")
PURGE_EVERY_TICKS = 60
DESTINATION_BREAKERS = 10_000


def public_error(exc: BaseException) -> str:
    """What a delivery's status, the DLQ and the log may say of a failure: URLs lose their userinfo and query."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) and not isinstance(exc, ChannelError) else str(exc)
    return redact_urls(text or type(exc).__name__)


class DestinationBreakers:
    """One breaker per (channel, user destination), with the channel's settings; the least recently used are
    forgotten past `size`, so a stream of distinct URLs cannot grow memory."""

    def __init__(self, settings: Mapping[str, CircuitBreaker], size: int = DESTINATION_BREAKERS) -> None:
        self._channels = settings
        self._size = size
        self._breakers: OrderedDict[tuple[str, str], CircuitBreaker] = OrderedDict()

    def get(self, channel: str, destination: str) -> CircuitBreaker:
        key = (channel, destination)
        breaker = self._breakers.get(key)
        if breaker is None:
            template = self._channels[channel]
            breaker = CircuitBreaker(
                f"notify:{channel}:destination",
                failures=template.failures,
                window_s=template.window_s,
                cooldown_s=template.cooldown_s,
                slow_call_s=template.slow_call_s,
                jitter=template.jitter,
                probe_timeout_s=template.probe_timeout_s,
                on_change=_count_destination_open,
            )
            self._breakers[key] = breaker
            if len(self._breakers) > self._size:
                self._breakers.popitem(last=False)
        else:
            self._breakers.move_to_end(key)
        return breaker


def _count_destination_open(name: str, old: State, new: State) -> None:
    if new == "open":
        metrics.NOTIFY_DESTINATION_BREAKER_OPENED.labels(name.split(":")[1]).inc()


#: The longest a provider's Retry-After is honoured: past it, the schedule's delay.
MAX_RETRY_AFTER_S = 86_400.0


def backoff(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
    return float(rng() * min(cap, base * 2 ** (attempt - 1)))


def retry_delay(
    retries: RetrySettings, attempt: int, retry_after: float | None = None, rng: Callable[[], float] = random.random
) -> float:
    """Seconds before retry `attempt` (1 = the first retry): the schedule's entry jittered by up to 10% either way,
    or the exponential backoff; never less than what the provider asked for (Retry-After, capped at a day)."""
    if retries.schedule is not None:
        delay = retries.schedule[min(attempt, len(retries.schedule)) - 1] * (0.9 + 0.2 * rng())
    else:
        delay = backoff(attempt, retries.base_delay, retries.max_delay, rng)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


class WorkerPool:
    def __init__(
        self,
        settings: NotificationSettings,
        *,
        store: NotificationStore,
        queue: Queue,
        channels: Mapping[str, Channel],
        breakers: Mapping[str, CircuitBreaker],
        templates: Templates,
        clock: Callable[[], float] = time.time,
        scripts: ScriptEngine | None = None,
    ) -> None:
        self.settings = settings
        self.workers = settings.workers
        #: Per-destination send limits (channels[].rate_limit), counted by the gateway's own sliding window.
        self._limiter = SlidingWindowLimiter(scripts) if scripts is not None else None
        self._throttles = {
            name: (hashlib.blake2b(f"{name}:{channel.rate_limit}".encode(), digest_size=4).hexdigest(),
                   parse_windows(channel.rate_limit))
            for name, channel in settings.channels.items() if channel.rate_limit
        }  # fmt: skip
        self.store = store
        self.queue = queue
        self.channels = channels
        self.breakers = breakers
        self.destinations = DestinationBreakers(breakers)
        self.templates = templates
        self._clock = clock
        self._loops: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._ticks = 0

    @property
    def running(self) -> bool:
        return bool(self._loops)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._consume(name), name=f"notify:{name}") for name in self.channels]
        self._loops.append(loop.create_task(self._tick_forever(), name="notify:tick"))

    async def aclose(self) -> None:
        """Stop receiving; sends in flight get `shutdown_grace` to finish, the rest are redelivered later."""
        self._stopping = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=self.workers.shutdown_grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _consume(self, name: str) -> None:
        breaker = self.breakers[name]
        mine: set[asyncio.Task[None]] = set()
        poll = self.workers.poll_interval
        while not self._stopping:
            if breaker.state == "open" and breaker.retry_after() > 0:
                await asyncio.sleep(min(breaker.retry_after(), poll))
                continue
            # While the breaker probes (half-open), one send at a time.
            free = (self.workers.concurrency if breaker.state == "closed" else 1) - len(mine)
            if free <= 0:
                await asyncio.wait(mine, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                batch = await self.queue.receive(name, limit=free, wait=poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("notify queue %s: receive failed: %s", name, exc)
                await asyncio.sleep(poll)
                continue
            for received in batch:
                task = asyncio.get_running_loop().create_task(self.process(received))
                for tasks in (mine, self._inflight):
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

    async def process(self, received: Received) -> None:
        """Handle one received job; any failure leaves it to be redelivered when its lease runs out."""
        job = received.job
        try:
            if job.kind == "attach":
                interval = self.settings.digest_interval
                await digest.attach(self.store.db, job, now=self._clock(), interval=interval)
                await self.queue.ack(received)
                return
            breaker = self.breakers[job.channel]
            # Only a look: the probe slot is taken by the send itself, so a claim or a message that fails
            # first has no slot to give back.
            if breaker.is_open():
                metrics.NOTIFY_DELIVERIES.labels(job.channel, "deferred").inc()
                await self.queue.retry(received, max(breaker.retry_after(), self.workers.poll_interval))
                return
            now = self._clock()
            claim = await self.store.claim(job, now=now, lease_s=self.workers.lease)
            if claim is None:
                await self._unclaimable(received, now)
                return
            await self._send(received, claim, breaker)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("notify job %s on %s failed; it is redelivered after its lease", job.kind, job.channel)

    async def _unclaimable(self, received: Received, now: float) -> None:
        state = await self.store.state(received.job)
        if state is not None and state["status"] == "sending" and (state["lease_until"] or 0) >= now:
            # Another worker holds it: look again once its lease has run out, in case that worker died.
            await self.queue.retry(received, state["lease_until"] - now + self.workers.poll_interval)
            return
        metrics.NOTIFY_DELIVERIES.labels(received.job.channel, "duplicate").inc()
        await self.queue.ack(received)

    async def _send(self, received: Received, claim: Claim, breaker: CircuitBreaker) -> None:
        job = received.job
        channel = self.channels[job.channel]
        try:
            message = await self._message(job, claim)
            destination = channel.destination(message)
        except Exception as exc:
            # This message cannot be built (or has nowhere to go): its own failure, never the channel's.
            await self._dead_letter(received, claim, f"permanent: {public_error(exc)}")
            return
        if destination is not None:
            # The user's own endpoint: this send says nothing about the channel's shared provider.
            breaker = self.destinations.get(job.channel, destination)
        wait = await self._throttled(job.channel, destination)
        if wait is not None:
            await self.store.release(job, claim, now=self._clock())
            await self.queue.retry(received, max(wait, self.workers.poll_interval))
            metrics.NOTIFY_DELIVERIES.labels(job.channel, "throttled").inc()
            return
        attempted = False
        try:
            # The provider answering "never" (PermanentError) is the channel working; this message cannot.
            async with breaker.guard(answer=(PermanentError,)):
                attempted = True
                metrics.NOTIFY_ATTEMPTS.labels(job.channel).inc()
                async with asyncio.timeout(self.workers.lease / 2):
                    result = await channel.send(message)
        except PermanentError as exc:
            await self._dead_letter(received, claim, f"permanent: {public_error(exc)}")
            return
        except Exception as exc:
            if not attempted:  # the guard refused (CircuitOpen): the claim goes back untried
                await self.store.release(job, claim, now=self._clock())
                await self.queue.retry(received, max(breaker.retry_after(), self.workers.poll_interval))
                metrics.NOTIFY_DELIVERIES.labels(job.channel, "deferred").inc()
                return
            error = public_error(exc)
            retries = self.settings.retries
            if claim.attempts >= retries.attempts:
                await self._dead_letter(received, claim, error)
                return
            await self.store.finish(job, claim, "retrying", now=self._clock(), error=error[:1000])
            asked = exc.retry_after if isinstance(exc, RetryableError) else None
            await self.queue.retry(received, retry_delay(retries, claim.attempts, asked))
            metrics.NOTIFY_DELIVERIES.labels(job.channel, "retry").inc()
            return
        status = "delivered" if result.delivered else "sent"
        await self.store.finish(job, claim, status, now=self._clock(), provider_id=result.provider_id)
        await self.queue.ack(received)
        metrics.NOTIFY_DELIVERIES.labels(job.channel, status).inc(len(claim.rows))

    async def _throttled(self, channel: str, destination: str | None) -> float | None:
        """Seconds to wait when the destination's send limit is spent, else None (and the send is counted). An
        unavailable engine lets the send through: a limit on sending never loses a message."""
        throttle = self._throttles.get(channel)
        if throttle is None or self._limiter is None:
            return None
        rule_id, windows = throttle
        try:
            decision = await self._limiter.hit(f"dest:{channel}:{destination or ''}", rule_id, windows)
        except StorageError:
            return None
        return None if decision.allowed else decision.retry_after

    async def _dead_letter(self, received: Received, claim: Claim, error: str) -> None:
        job = received.job

        async def record(conn: Connection) -> None:
            if await self.store.finish(job, claim, "failed", now=self._clock(), error=error[:1000], conn=conn):
                await dlq.add(conn, job, error=error[:1000], attempts=claim.attempts, now=self._clock())

        await atomically(self.store.db, record)
        await self.queue.ack(received)
        metrics.NOTIFY_DELIVERIES.labels(job.channel, "failed").inc(len(claim.rows))
        logger.warning("notify %s to %s on %s dead-lettered: %s", job.kind, job.user_id, job.channel, error)

    async def _message(self, job: Job, claim: Claim) -> Message:
        rows = claim.rows
        contents = await self.store.contents([row["notification_id"] for row in rows])
        to = tuple(json.loads(rows[-1]["address"]))
        if job.kind == "digest":
            items = digest.items_of(rows, contents, job.channel)
            if not items:
                raise PermanentError("the digest has no items")
            rendered = digest.render(items, job.channel, self.templates, self.settings.digest_template)
            return Message(
                id=job.message_id, channel=job.channel, user_id=job.user_id, to=to, subject=rendered.subject,
                body=rendered.body, priority="low", items=tuple(items),
            )  # fmt: skip
        notification: Row = contents[job.notification_id]
        rendered_part = json.loads(notification["contents"])[job.channel]
        return Message(
            id=job.message_id, channel=job.channel, user_id=job.user_id, to=to, subject=rendered_part.get("subject"),
            body=rendered_part["body"], priority=notification["priority"], notification_id=job.notification_id,
            template_id=notification["template_id"], data=json.loads(notification["data"]),
        )  # fmt: skip

    async def _tick_forever(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("notify tick failed: %s", exc)
            await asyncio.sleep(self.workers.tick_interval)

    async def tick(self) -> None:
        now = self._clock()
        await self.queue.tick(self.channels)
        flushed = await digest.flush_due(self.store.db, self.queue, now=now)
        metrics.NOTIFY_DIGESTS.inc(flushed)
        depths = {name: await self.queue.depth(name) for name in self.channels}
        for name, depth in depths.items():
            metrics.NOTIFY_QUEUE_DEPTH.labels(name).set(depth)
        if not self.queue.transactional:
            await self._recover([name for name, depth in depths.items() if depth == 0], now)
        metrics.NOTIFY_DLQ_SIZE.set(await dlq.size(self.store.db))
        self._ticks += 1
        if self._ticks % PURGE_EVERY_TICKS == 1:
            await self.store.purge_idempotency(now - self.settings.idempotency_ttl)

    async def _recover(self, idle_channels: list[str], now: float) -> None:
        """Redis engine: deliveries left waiting on a channel whose queue is empty lost their message (an enqueue
        that failed after its commit): enqueue them again. An empty queue makes this exact; duplicates are harmless."""
        for name in idle_channels:
            rows = await self.store.stale(name, before=now - self.workers.recover_after)
            jobs: dict[Job, float] = {}
            for row in rows:
                if row["digest_id"] and row["status"] != "scheduled":
                    job = Job("digest", name, user_id=row["user_id"], digest_id=row["digest_id"])
                else:
                    kind: JobKind = "attach" if row["status"] == "scheduled" and row["priority"] == "low" else "send"
                    job = Job(kind, name, row["notification_id"], row["user_id"])
                jobs[job] = 0.0
            if jobs:
                logger.warning("notify: re-enqueueing %d lost job(s) on %s", len(jobs), name)
                await self.queue.enqueue(list(jobs.items()))
                for job in jobs:
                    await self.store.touch(job, now)
