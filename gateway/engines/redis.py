"""The Redis engine: EVALSHA auto-pipelined, with deadlines that measure Redis, not the gateway's own queue.

Calls made while a round trip is in flight queue up and leave together in the next pipeline, so a busy process
pays one round trip for many decisions while a lone call is sent at once.

What counts as Redis failing (the definition the README gives):

- **The deadline is the wire's.** It starts when a pipeline is written, not when a caller asked: time spent
  queued behind other callers, or in a busy event loop, is backpressure, never evidence of an outage. When it
  passes, the reply is late only if nothing of it has come back: no reply read since the last look and no byte
  waiting on the socket (a reply that arrived while the loop was busy is read, not failed). A reply that has not
  started after `slow_call` is slow.
- **One round trip, one outcome.** The breaker hears once per pipeline (failure, slow, or success), however many
  callers it carried, so one late round trip is one failure, not one per queued caller. (envoyproxy/ratelimit
  and redis-py's socket timeouts define a timeout per connection operation the same way.)
- **Backpressure, then the policy.** While Redis answers, every call waits its turn and is decided. At most
  `max_queue` calls may wait; one more raises EngineOverloaded at once, and the caller applies its policy.

Redis Cluster: the calls of a batch are grouped by the node that owns their keys' slot and each node's
pipeline is sent the same way, concurrently; a MOVED or ASK reply is retried through redis-py's cluster client,
which follows it and refreshes the slot map.
"""

from __future__ import annotations

import asyncio
import math
import select
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any, NamedTuple, Protocol

import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.retry import Retry

from gateway import metrics
from gateway.batching import Coalescer
from gateway.breaker import CircuitBreaker
from gateway.engines.scripts import Script, pack_evalsha
from gateway.exceptions import CircuitOpen, EngineOverloaded, StorageError

DEFAULT_DEADLINE_S = 0.025
DEFAULT_MAX_QUEUE = 10_000
# Bounds one pipeline, so a burst cannot make the first callers wait for thousands of replies.
MAX_BATCH = 512
CONNECT_TIMEOUT_MIN_S = 0.05
#: A deadline that finds the reply arriving is extended this many times at most (a loop blocked for seconds).
MAX_EXTENSIONS = 40

RedisClient = redis.asyncio.Redis | RedisCluster


def create_redis_client(url: str, *, cluster: bool) -> RedisClient:
    """A client for `url`; at most one quick reconnect, as the engine's deadline and breaker do the rest.

    RESP2 and no CLIENT SETINFO: redis-py's default RESP3 sends HELLO on every new connection, and that handshake
    would wait for a stalled Redis under the connect timeout, where a bare connection lets the first pipeline's
    ReplyWatch judge it within the deadline.
    """
    if cluster:
        return RedisCluster.from_url(url, driver_info=None, protocol=2)
    return redis.asyncio.Redis.from_url(url, retry=Retry(NoBackoff(), 1), driver_info=None, protocol=2)


class _Call(NamedTuple):
    script: Script
    keys: Sequence[str | bytes]
    args: Sequence[int | float | str | bytes]
    #: The EVALSHA as sent, when the caller packed it once (`eval_packed`); else packed per round trip.
    packed: bytes | None
    future: asyncio.Future[Any]

    @property
    def command(self) -> bytes:
        return self.packed if self.packed is not None else pack_evalsha(self.script, self.keys, self.args)


class _Node(Protocol):
    """Where one pipeline goes: the standalone pool, or one cluster node."""

    async def acquire(self) -> AbstractConnection: ...

    async def release(self, connection: AbstractConnection) -> None: ...

    async def script_load(self, source: str) -> None: ...


class _PoolNode:
    """The standalone pool. Pipelines leave one at a time (the Coalescer drains in order), so the engine keeps
    the connection of the last one for the next instead of taking it from the pool and handing it back each
    round trip; one that was disconnected (a failure, a cancelled read) goes back to the pool to reconnect."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.pool = client.connection_pool
        self._held: AbstractConnection | None = None

    async def acquire(self) -> AbstractConnection:
        held, self._held = self._held, None
        if held is not None:
            if held.is_connected:
                return held
            await self.pool.release(held)
        connection: AbstractConnection = await self.pool.get_connection()  # type: ignore[no-untyped-call]
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        if connection.is_connected and self._held is None:
            self._held = connection
            return
        await self.pool.release(connection)

    async def script_load(self, source: str) -> None:
        await self.client.script_load(source)


class _ClusterNode:
    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    async def acquire(self) -> AbstractConnection:
        return self.node.acquire_connection()

    async def release(self, connection: AbstractConnection) -> None:
        self.node.release(connection)  # type: ignore[arg-type]  # acquired from this node: a Connection

    async def script_load(self, source: str) -> None:
        connection = self.node.acquire_connection()
        try:
            await connection.send_command("SCRIPT", "LOAD", source)
            await connection.read_response()
        finally:
            self.node.release(connection)


class _Late(Exception):
    """The round trip's reply did not start within the deadline."""


class _NodeFailure(NamedTuple):
    """In place of the replies of a cluster node whose pipeline failed."""

    error: BaseException

    def storage_error(self, deadline_s: float) -> StorageError:
        """A new error for each caller: one instance raised in many tasks would pile up their tracebacks."""
        if isinstance(self.error, _Late | TimeoutError):
            error = StorageError(f"redis did not answer within {deadline_s * 1000:g}ms")
        else:
            error = StorageError(f"redis: {self.error or type(self.error).__name__}")
        error.__cause__ = self.error
        return error


class ReplyWatch:
    """Tells, when a round trip's time is up, whether Redis is late or only the gateway's loop is.

    Its timer callback does not decide at once: it looks again from `call_soon`, after whatever the loop already
    had ready (a reply read just now wakes its reader ahead of that look). Then the reply counts as arriving if
    replies were read since the last look, or bytes wait on the socket; if so the deadline is extended.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        reader: asyncio.Task[Any],
        fd: int | None,
        deadline_s: float,
        slow_call_s: float | None,
    ) -> None:
        self.loop = loop
        #: The task reading the replies: cancelled when they are late.
        self.reader = reader
        self.fd = fd
        self.deadline_s = deadline_s
        #: Replies read so far; the reader counts them.
        self.progress = 0
        self.slow = False
        self.late = False
        self._seen = 0
        self._extensions = 0
        self._deadline_at = loop.time() + deadline_s
        self._slow_at = None if slow_call_s is None or slow_call_s >= deadline_s else loop.time() + slow_call_s
        first = slow_call_s if self._slow_at is not None and slow_call_s is not None else deadline_s
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = loop.call_later(first, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = self.loop.call_soon(self._look)

    def _arriving(self) -> bool:
        moved = self.progress > self._seen
        self._seen = self.progress
        if moved:
            return True
        if self.fd is None:
            return False
        try:
            return bool(select.select([self.fd], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _look(self) -> None:
        self._handle = None
        arriving = self._arriving()
        if self._slow_at is not None:
            self._slow_at = None
            self.slow = not arriving and self.progress == 0
            self._handle = self.loop.call_at(self._deadline_at, self._tick)
            return
        if arriving and self._extensions < MAX_EXTENSIONS:
            self._extensions += 1
            self._handle = self.loop.call_later(self.deadline_s, self._tick)
            return
        self.late = True
        self.reader.cancel()


def _socket_fd(connection: AbstractConnection) -> int | None:
    writer = getattr(connection, "_writer", None)
    sock = writer.get_extra_info("socket") if writer is not None else None
    try:
        return int(sock.fileno()) if sock is not None else None
    except (OSError, ValueError, AttributeError):  # pragma: no cover - a transport without a socket
        return None


class RedisEngine:
    """Scripts on Redis or Redis Cluster; see the module docstring for what counts as a failure."""

    name = "redis"

    def __init__(
        self,
        client: RedisClient,
        *,
        deadline_s: float = DEFAULT_DEADLINE_S,
        slow_call_s: float | None = None,
        breaker: CircuitBreaker | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.client = client
        self.deadline_s = deadline_s
        self.slow_call_s = slow_call_s
        self.breaker = breaker
        self.max_queue = max_queue
        #: Pipelines sent so far (NOSCRIPT retries included): calls / round_trips is the batching factor.
        self.round_trips = 0
        self._calls: Coalescer[
            tuple[Script, Sequence[str | bytes], Sequence[int | float | str | bytes], bytes | None]
        ] = Coalescer(
            self._round_trip,
            max_batch=MAX_BATCH,
            after_batch=self._fail_fast_while_open,
            closing_error=lambda: StorageError("the redis engine was closed"),
        )
        self._node: _Node | None = _PoolNode(client) if isinstance(client, redis.asyncio.Redis) else None
        self._round_trip_seconds = metrics.REDIS_ROUND_TRIP_SECONDS
        self._closed = False

    @property
    def queued(self) -> int:
        return len(self._calls)

    async def eval(self, script: Script, keys: Sequence[str | bytes], args: Sequence[int | float | str | bytes]) -> Any:
        return await self._submit(script, keys, args, None)

    async def eval_packed(self, script: Script, keys: Sequence[bytes], args: Sequence[bytes], packed: bytes) -> Any:
        """`eval` for callers that send the same call often and pack it once: `packed` is
        `pack_evalsha(script, keys, args)` (the limiter's hot path, where it cost a tenth of the decision)."""
        return await self._submit(script, keys, args, packed)

    async def _submit(
        self,
        script: Script,
        keys: Sequence[str | bytes],
        args: Sequence[int | float | str | bytes],
        packed: bytes | None,
    ) -> Any:
        # Not breaker.guard(): the outcome is the round trip's, recorded once per pipeline by _round_trip.
        breaker = self.breaker
        probing = breaker.admit() if breaker is not None else False
        if len(self._calls) >= self.max_queue:
            if probing and breaker is not None:
                breaker.release()  # shed before it was sent: it says nothing about Redis
            metrics.ENGINE_OVERLOADED.inc()
            raise EngineOverloaded(f"{len(self._calls)} calls already wait for redis (engine.redis.max_queue)")
        try:
            return await self._calls.submit((script, keys, args, packed))
        except asyncio.CancelledError:
            if probing and breaker is not None:
                breaker.release()  # the half-open probe's caller left; its call may never be sent
            raise

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(max(self.deadline_s, 1.0)):
                await self.client.ping()
        except TimeoutError as exc:
            raise StorageError("redis did not answer PING in time") from exc
        except Exception as exc:
            raise StorageError(f"redis: {exc}") from exc

    async def aclose(self) -> None:
        self._closed = True
        self._calls.close()
        await self.client.aclose()

    def _fail_fast_while_open(self) -> None:
        if self.breaker is not None and self.breaker.state == "open":
            # Redis is down: the calls still queued learn it now, not one deadline each.
            self._calls.fail_queued(partial(CircuitOpen, self.breaker.name, self.breaker.retry_after()))

    async def _round_trip(self, pending: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        # Callers that gave up are already out of `pending` (the Coalescer): never debited late.
        batch = [_Call(item[0], item[1], item[2], item[3], future) for item, future in pending]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            replies, slow = await self._send(batch)
        except asyncio.CancelledError as exc:
            self._deliver_failure(batch, _NodeFailure(exc), self.deadline_s)
            raise
        except Exception as exc:
            self._record(failed=True)
            self._deliver_failure(batch, _NodeFailure(exc), self.deadline_s)
            return
        self._round_trip_seconds.observe(loop.time() - started)
        failures = [reply for reply in replies if isinstance(reply, _NodeFailure)]
        self._record(failed=slow or bool(failures))
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():
                continue
            if isinstance(reply, _NodeFailure):
                call.future.set_exception(reply.storage_error(self.deadline_s))
            elif isinstance(reply, Exception):
                # Redis answered: a script error is the call's, not the engine's.
                error = StorageError(f"redis: {reply}")
                error.__cause__ = reply
                call.future.set_exception(error)
            else:
                call.future.set_result(reply)

    def _record(self, *, failed: bool) -> None:
        breaker = self.breaker
        if breaker is None:
            return
        if failed:
            breaker.record_failure()
        else:
            breaker.record_success()  # no duration: slowness was judged on the wire, and is in `failed`

    @staticmethod
    def _deliver_failure(batch: list[_Call], failure: _NodeFailure, deadline_s: float) -> None:
        for call in batch:
            if not call.future.done():
                call.future.set_exception(failure.storage_error(deadline_s))

    async def _send(self, batch: list[_Call]) -> tuple[list[Any], bool]:
        """Every call's reply (a ResponseError for a script error) and whether the round trip was slow."""
        if self._node is not None:
            return await self._node_pipeline(self._node, batch)
        return await self._cluster_pipeline(batch)

    async def _node_pipeline(self, node: _Node, batch: list[_Call]) -> tuple[list[Any], bool]:
        replies, slow = await self._pipeline(node, batch)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # SCRIPT FLUSH or a failover emptied the script cache: load and retry once.
            async with asyncio.timeout(max(self.deadline_s, 1.0)):
                for script in {batch[i].script.sha1: batch[i].script for i in missing}.values():
                    await node.script_load(script.source)
            retried, slow_again = await self._pipeline(node, [batch[i] for i in missing])
            for i, reply in zip(missing, retried, strict=True):
                replies[i] = reply
            slow = slow or slow_again
        return replies, slow

    async def _pipeline(self, node: _Node, batch: list[_Call]) -> tuple[list[Any], bool]:
        """One connection, one write, then the replies in order, watched by a ReplyWatch from the write on."""
        self.round_trips += 1
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        # Acquiring may connect (a TCP handshake, and AUTH/SELECT when the URL asks): Redis's time too.
        async with asyncio.timeout(max(4 * self.deadline_s, CONNECT_TIMEOUT_MIN_S)):
            connection = await node.acquire()
            if not connection.is_connected:
                await connection.connect()  # type: ignore[no-untyped-call]
        watch: ReplyWatch | None = None
        try:
            await connection.send_packed_command(b"".join([call.command for call in batch]), False)
            watch = ReplyWatch(loop, task, _socket_fd(connection), self.deadline_s, self.slow_call_s)
            replies: list[Any] = []
            for _ in batch:
                try:
                    # No per-read socket timeout: the watch bounds the exchange.
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as exc:
                    # Read whole, so the stream stays in step; it belongs to its own call only.
                    replies.append(exc)
                watch.progress += 1
            return replies, watch.slow
        except asyncio.CancelledError:
            await connection.disconnect(nowait=True)
            if watch is not None and watch.late and task.uncancel() == 0:
                raise _Late() from None
            raise
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            if watch is not None:
                watch.stop()
            await node.release(connection)

    async def _cluster_pipeline(self, batch: list[_Call]) -> tuple[list[Any], bool]:
        client = self.client
        assert isinstance(client, RedisCluster)
        await client.initialize()
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        for index, call in enumerate(batch):
            found = client.get_node_from_key(_text(call.keys[0])) if call.keys else client.get_random_node()
            if found is None:  # pragma: no cover - a slot no node owns: CLUSTERDOWN
                raise RedisError("no cluster node owns the slot")
            by_node.setdefault(found.name, (found, []))[1].append(index)
        groups = list(by_node.values())
        outcomes = await asyncio.gather(
            *(self._node_pipeline(_ClusterNode(node), [batch[i] for i in indexes]) for node, indexes in groups),
            return_exceptions=True,
        )
        replies: list[Any] = [None] * len(batch)
        slow = False
        for (_, indexes), outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                # One node failed: its calls fail, the other nodes' are decided.
                for i in indexes:
                    replies[i] = _NodeFailure(outcome)
                continue
            node_replies, node_slow = outcome
            slow = slow or node_slow
            for i, reply in zip(indexes, node_replies, strict=True):
                replies[i] = reply
        moved = [i for i, reply in enumerate(replies) if isinstance(reply, ResponseError) and _redirected(reply)]
        if moved:
            # The slot map changed under us: the cluster client follows the redirection and refreshes it.
            async with asyncio.timeout(max(self.deadline_s, 1.0)):
                for i in moved:
                    replies[i] = await _through_cluster(client, batch[i])
        return replies, slow


def _text(key: str | bytes) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _redirected(error: ResponseError) -> bool:
    return str(error).startswith(("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"))


async def _through_cluster(client: RedisCluster, call: _Call) -> Any:
    try:
        command: Awaitable[Any] = client.execute_command(
            "EVALSHA", call.script.sha1, len(call.keys), *call.keys, *call.args
        )
        return await command
    except NoScriptError:
        return await client.execute_command("EVAL", call.script.source, len(call.keys), *call.keys, *call.args)
    except ResponseError as exc:
        return exc
