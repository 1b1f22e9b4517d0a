"""One coalescing batcher: callers that arrive while a batch is in flight leave together in the next one.

The Redis engine pipelines script calls with it (one round trip for many decisions). `SharedWrites` builds on it
for writes that can share one statement or one transaction: the link store's INSERTs, and the notification
API's acceptances (one commit for many). A caller whose future is already done when its batch leaves (it was
cancelled, or gave up at its deadline) is left out: its work must not be done late. `flush` settles every
future it is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Pending = tuple[Item, "asyncio.Future[Any]"]


class Coalescer(Generic[Item]):
    def __init__(
        self,
        flush: Callable[[list[tuple[Item, asyncio.Future[Any]]]], Awaitable[None]],
        *,
        max_batch: int,
        after_batch: Callable[[], None] | None = None,
        closing_error: Callable[[], BaseException],
    ) -> None:
        self._flush = flush
        self.max_batch = max_batch
        #: Runs after each batch: a chance to fail what is still queued (an open breaker) at once.
        self._after_batch = after_batch
        self._closing_error = closing_error
        self._queue: list[tuple[Item, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def submit(self, item: Item) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((item, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return future

    def fail_queued(self, error: Callable[[], BaseException]) -> None:
        """Settle every queued (not yet sent) caller with a fresh `error()`."""
        for _item, future in self._queue:
            if not future.done():
                future.set_exception(error())
        self._queue = []

    def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
        self.fail_queued(self._closing_error)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                batch = [(item, future) for item, future in batch if not future.done()]
                if batch:
                    try:
                        await self._flush(batch)
                    except BaseException:
                        settle_all(batch, self._closing_error())
                        raise
                if self._after_batch is not None:
                    self._after_batch()
        except BaseException:
            self.fail_queued(self._closing_error)
            raise
        finally:
            self._drainer = None


def settle(future: asyncio.Future[Any], error: BaseException | None, result: Any = None) -> None:
    """Set a future's outcome unless its caller already left."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def settle_all(batch: list[tuple[Any, asyncio.Future[Any]]], error: BaseException) -> None:
    for _item, future in batch:
        settle(future, error)


class SharedWrites(Generic[Item]):
    """Writes that arrive together leave together through `write_many`; a lone one goes through `write_one`.

    If a shared write fails with one of `split_on` (a unique violation: one item's conflict), its items are
    written again one by one, so that only the item at fault fails and the others succeed. Any other error fails
    every item of the batch (the dependency is down: each caller gets it).
    """

    def __init__(
        self,
        write_many: Callable[[Sequence[Item]], Awaitable[None]],
        write_one: Callable[[Item], Awaitable[None]],
        *,
        max_batch: int,
        split_on: tuple[type[BaseException], ...],
        closing_error: Callable[[], BaseException],
    ) -> None:
        self._write_many = write_many
        self._write_one = write_one
        self._split_on = split_on
        self._items: Coalescer[Item] = Coalescer(self._write, max_batch=max_batch, closing_error=closing_error)

    async def write(self, item: Item) -> None:
        """Write `item`, alone or with others; raises what writing it alone would."""
        await self._items.submit(item)

    def close(self) -> None:
        self._items.close()

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                await self._write_one(batch[0][0])
            else:
                await self._write_many([item for item, _future in batch])
        except self._split_on as exc:
            if len(batch) == 1:
                settle(batch[0][1], exc)
                return
            for item, future in batch:
                try:
                    await self._write_one(item)
                except Exception as one:
                    settle(future, one)
                else:
                    settle(future, None)
            return
        except Exception as exc:
            settle_all(batch, exc)
            return
        for _item, future in batch:
            settle(future, None)
