"""Concurrent creations share INSERT statements: one round trip (or one SQLite thread hop) for many links.

Creations that arrive while a statement is in flight leave together in the next one, as the Redis engine
pipelines scripts. If a shared statement hits a unique violation, its links are inserted again one by one, so
that only the creation whose code or alias is taken fails, and the others succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from gateway.engines.database import UniqueViolation
from gateway.exceptions import StorageError

#: A row to insert (a Link): the batcher only carries it to the writers.
Row = TypeVar("Row")

#: Links per statement: 7 parameters each stays under SQLite's 999-variable floor.
MAX_BATCH = 100


class InsertBatcher(Generic[Row]):
    def __init__(
        self,
        write_many: Callable[[Sequence[Row]], Awaitable[None]],
        write_one: Callable[[Row], Awaitable[None]],
    ) -> None:
        self._write_many = write_many
        self._write_one = write_one
        self._queue: list[tuple[Row, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def insert(self, link: Row) -> None:
        """Store `link`; raises UniqueViolation when its code is taken, StorageError when the database fails."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append((link, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                # A caller that gave up (its client went away) is not inserted late.
                batch = [(link, future) for link, future in batch if not future.done()]
                if batch:
                    await self._write(batch)
        except BaseException:
            for _link, future in self._queue:
                _settle(future, StorageError("the link store is closing"))
            self._queue = []
            raise
        finally:
            self._drainer = None

    async def _write(self, batch: list[tuple[Row, asyncio.Future[None]]]) -> None:
        try:
            if len(batch) == 1:
                await self._write_one(batch[0][0])
            else:
                await self._write_many([link for link, _future in batch])
        except UniqueViolation as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for link, future in batch:
                try:
                    await self._write_one(link)
                except Exception as one:
                    _settle(future, one)
                else:
                    _settle(future, None)
            return
        except Exception as exc:
            for _link, future in batch:
                _settle(future, exc)
            return
        except BaseException:
            for _link, future in batch:
                _settle(future, StorageError("the link store is closing"))
            raise
        for _link, future in batch:
            _settle(future, None)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
