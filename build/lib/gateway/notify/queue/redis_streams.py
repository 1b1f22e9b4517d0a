"""The Redis queue: a stream per channel read by one consumer group, plus a sorted set per channel for delays.

XREADGROUP hands a message to one consumer; XACK + XDEL finish it. A consumer that dies leaves its messages
pending: every half lease, XAUTOCLAIM moves messages idle for longer than the lease to a live consumer.
Retries and scheduled sends wait in the channel's delayed set (score: due time) and move to the stream when
due (lua/notify_promote.lua); a retry leaves the stream and enters the set in one script (notify_requeue.lua).
Every key carries the `{notify}` hash tag, so a Redis Cluster keeps them on one node.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from gateway.engines.database import Connection
from gateway.engines.redis import RedisClient
from gateway.engines.scripts import load_script
from gateway.engines.streams import ensure_group, missing_group
from gateway.notify.models import Job
from gateway.notify.queue.base import Queue, Received

logger = logging.getLogger("gateway.notify")
GROUP = "workers"
PROMOTE_BATCH = 500
#: Consumers idle this many leases with nothing pending are removed from the group.
STALE_CONSUMER_LEASES = 20


def stream_key(channel: str) -> str:
    return f"{{notify}}:q:{channel}"


def delayed_key(channel: str) -> str:
    return f"{{notify}}:delayed:{channel}"


class RedisStreamQueue(Queue):
    name = "redis"

    def __init__(self, client: RedisClient, *, lease_s: float, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.lease_s = lease_s
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._claimed_at: dict[str, float] = {}
        self._cleaned_at = 0.0
        self._requeue = client.register_script(load_script("notify_requeue").source)
        self._promote = client.register_script(load_script("notify_promote").source)

    async def prepare(self, channels: Iterable[str]) -> None:
        for channel in channels:
            await ensure_group(self.client, stream_key(channel), GROUP)

    async def enqueue(self, jobs: Sequence[tuple[Job, float]], *, conn: Connection | None = None) -> None:
        if not jobs:
            return
        now = self._clock()
        pipe = self.client.pipeline(transaction=False)
        for job, at in jobs:
            if at > now:
                pipe.zadd(delayed_key(job.channel), {f"{uuid.uuid4().hex}|{job.encode()}": int(at * 1000)})
            else:
                pipe.xadd(stream_key(job.channel), {"job": job.encode()})
        await pipe.execute()

    async def receive(self, channel: str, *, limit: int, wait: float) -> list[Received]:
        try:
            return await self._receive(channel, limit=limit, wait=wait)
        except ResponseError as exc:
            if not missing_group(exc):
                raise
            # Redis came back empty (restarted without persistence): make the group again and go on. What it
            # held is gone; the worker tick re-enqueues deliveries left waiting (recover_after).
            logger.warning("notify queue %s: its stream or group was gone (an empty Redis): made again", channel)
            await ensure_group(self.client, stream_key(channel), GROUP)
            return []

    async def _receive(self, channel: str, *, limit: int, wait: float) -> list[Received]:
        stream = stream_key(channel)
        now = time.monotonic()
        if now - self._claimed_at.get(channel, 0.0) >= self.lease_s / 2:
            self._claimed_at[channel] = now
            autoclaimed: Any = await self.client.xautoclaim(
                stream, GROUP, self.consumer, min_idle_time=int(self.lease_s * 1000), start_id="0-0", count=limit
            )
            claimed = await self._decode(stream, autoclaimed[1], redelivered=True)
            if claimed:
                return claimed
        read: Any = await self.client.xreadgroup(
            GROUP, self.consumer, {stream: ">"}, count=limit, block=max(1, int(wait * 1000))
        )
        entries: list[Any] = read[0][1] if read else []
        return await self._decode(stream, entries, redelivered=False)

    async def _decode(self, stream: str, entries: list[Any], *, redelivered: bool) -> list[Received]:
        received = []
        for entry_id, fields in entries:
            handle = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            payload = (fields or {}).get(b"job")
            if payload is None:  # trimmed or deleted under us: nothing to do but forget it
                await self.client.xack(stream, GROUP, handle)
                continue
            received.append(Received(Job.decode(payload), handle, redelivered=redelivered))
        return received

    async def ack(self, received: Received) -> None:
        stream = stream_key(received.job.channel)
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(stream, GROUP, received.handle)
        pipe.xdel(stream, received.handle)
        await pipe.execute()

    async def retry(self, received: Received, delay: float) -> None:
        job = received.job
        due_ms = int((self._clock() + delay) * 1000)
        await self._requeue(
            keys=[stream_key(job.channel), delayed_key(job.channel)],
            args=[GROUP, received.handle, due_ms, f"{uuid.uuid4().hex}|{job.encode()}"],
        )

    async def depth(self, channel: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        pipe.xlen(stream_key(channel))
        pipe.zcard(delayed_key(channel))
        waiting, delayed = await pipe.execute()
        return int(waiting) + int(delayed)

    async def tick(self, channels: Iterable[str]) -> None:
        now_ms = int(self._clock() * 1000)
        for channel in channels:
            while await self._promote(keys=[delayed_key(channel), stream_key(channel)], args=[now_ms, PROMOTE_BATCH]):
                pass
        if time.monotonic() - self._cleaned_at > self.lease_s * STALE_CONSUMER_LEASES / 4:
            self._cleaned_at = time.monotonic()
            await self._forget_dead_consumers(channels)

    async def _forget_dead_consumers(self, channels: Iterable[str]) -> None:
        idle_ms = self.lease_s * STALE_CONSUMER_LEASES * 1000
        for channel in channels:
            try:
                consumers = await self.client.xinfo_consumers(stream_key(channel), GROUP)
            except ResponseError as exc:
                if not missing_group(exc):
                    raise
                continue  # receive() makes it again
            for consumer in consumers:
                if consumer["pending"] == 0 and consumer["idle"] > idle_ms:
                    await self.client.xgroup_delconsumer(stream_key(channel), GROUP, consumer["name"])
