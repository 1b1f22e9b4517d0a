"""The Redis engine: EVALSHA with a deadline, auto-pipelined so concurrent calls share round trips."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.retry import Retry

from gateway.engines.scripts import Script, encode_arg
from gateway.exceptions import StorageError

DEFAULT_DEADLINE_S = 0.010
# Bounds one pipeline, so a burst cannot make the first callers wait for thousands of replies.
MAX_BATCH = 512

RedisClient = redis.asyncio.Redis | RedisCluster


def create_redis_client(url: str, *, cluster: bool) -> RedisClient:
    """A client for `url`; at most one quick reconnect, as the caller's deadline and breaker do the rest."""
    if cluster:
        return RedisCluster.from_url(url)
    return redis.asyncio.Redis.from_url(url, retry=Retry(NoBackoff(), 1))


class _Call(NamedTuple):
    script: Script
    keys: Sequence[str]
    args: Sequence[int | float | str]
    future: asyncio.Future[Any]


def _expire(future: asyncio.Future[Any], deadline_s: float) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"redis did not answer within {deadline_s * 1000:g}ms"))


def pack_evalsha(script: Script, keys: Sequence[str], args: Sequence[int | float | str]) -> bytes:
    """One EVALSHA in RESP, encoded as redis-py would encode it, without its generic per-command overhead."""
    items = [b"%d" % len(keys), *[key.encode() for key in keys], *[encode_arg(arg) for arg in args]]
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (len(items) + 2, script.sha1.encode())
    return head + b"".join([b"$%d\r\n%s\r\n" % (len(item), item) for item in items])


class RedisEngine:
    """Scripts on Redis or Redis Cluster.

    Calls made while a round trip is in flight queue up and leave together in the next pipeline, so a busy
    process pays one round trip for many decisions while a lone call is sent at once. Every call has its own
    deadline, counted from when it was made; a call whose caller gave up is not sent.
    """

    name = "redis"

    def __init__(self, client: RedisClient, *, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        self.client = client
        self.deadline_s = deadline_s
        #: Pipelines sent so far (NOSCRIPT retries included): calls / round_trips is the batching factor.
        self.round_trips = 0
        self._queue: list[_Call] = []
        self._drainer: asyncio.Task[None] | None = None
        self._pool = client.connection_pool if isinstance(client, redis.asyncio.Redis) else None

    async def eval(self, script: Script, keys: Sequence[str], args: Sequence[int | float | str]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Call(script, keys, args, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        # A timer handle rather than asyncio.timeout(): cheaper, and it never cancels the caller's task.
        timer = loop.call_later(self.deadline_s, _expire, future, self.deadline_s)
        try:
            return await future
        except TimeoutError as exc:
            raise StorageError(str(exc) or f"redis did not answer within {self.deadline_s * 1000:g}ms") from exc
        except Exception as exc:
            # Whatever the client raised (RedisError, RedisClusterException, OSError): the engine failed.
            raise StorageError(f"redis: {exc}") from exc
        finally:
            timer.cancel()

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self.deadline_s):
                await self.client.ping()
        except TimeoutError as exc:
            raise StorageError(f"redis did not answer PING within {self.deadline_s * 1000:g}ms") from exc
        except Exception as exc:
            raise StorageError(f"redis: {exc}") from exc

    async def aclose(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
        for call in self._queue:
            if not call.future.done():
                call.future.set_exception(RedisError("the engine was closed"))
        self._queue = []
        await self.client.aclose()

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                # Callers that already gave up are not sent: their requests must not be debited late.
                batch = [call for call in batch if not call.future.done()]
                if batch:
                    await self._send(batch)
        finally:
            self._drainer = None

    async def _send(self, batch: list[_Call]) -> None:
        try:
            async with asyncio.timeout(self.deadline_s):
                replies = await self._pipeline(batch)
                missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if missing:
                    # SCRIPT FLUSH or a failover emptied the script cache: load and retry once.
                    for script in {batch[i].script.sha1: batch[i].script for i in missing}.values():
                        await self.client.script_load(script.source)
                    retried = await self._pipeline([batch[i] for i in missing])
                    for i, reply in zip(missing, retried, strict=True):
                        replies[i] = reply
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else RedisError("the engine was closed")
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for call, reply in zip(batch, replies, strict=True):
            if not call.future.done():
                if isinstance(reply, Exception):
                    call.future.set_exception(reply)
                else:
                    call.future.set_result(reply)

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        self.round_trips += 1
        pool = self._pool
        if pool is None:
            return await self._cluster_pipeline(batch)
        # One connection, one write, then the replies in order; a ResponseError is read whole, so the stream
        # stays in step and it belongs to its own call only.
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(b"".join([pack_evalsha(*call[:3]) for call in batch]))
            replies: list[Any] = []
            for _ in batch:
                try:
                    # No per-read socket timeout: the batch's own deadline bounds the whole exchange.
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)

    async def _cluster_pipeline(self, batch: list[_Call]) -> list[Any]:
        # ClusterPipeline splits the batch per node and runs the node pipelines concurrently.
        pipe = self.client.pipeline(transaction=False)
        for call in batch:
            # execute_command, because ClusterPipeline refuses its evalsha() helper (it routes EVALSHA by key fine).
            pipe.execute_command("EVALSHA", call.script.sha1, len(call.keys), *call.keys, *call.args)
        return list(await pipe.execute(raise_on_error=False))
