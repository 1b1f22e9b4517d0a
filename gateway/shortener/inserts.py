"""Concurrent creations share INSERT statements: one round trip (or one SQLite thread hop) for many links.

Creations that arrive while a statement is in flight leave together in the next one, as the Redis engine
pipelines scripts. If a shared statement hits a unique violation, its links are inserted again one by one, so
that only the creation whose code or alias is taken fails, and the others succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from gateway.batching import Coalescer, settle, settle_all
from gateway.engines.database import UniqueViolation
from gateway.exceptions import StorageError

#: A row to insert (a Link): the batcher only carries it to the writers.
Row = TypeVar("Row")

#: Links per statement: 8 parameters each stays under SQLite's 999-variable floor.
MAX_BATCH = 100


class InsertBatcher(Generic[Row]):
    def __init__(
        self,
        write_many: Callable[[Sequence[Row]], Awaitable[None]],
        write_one: Callable[[Row], Awaitable[None]],
    ) -> None:
        self._write_many = write_many
        self._write_one = write_one
        self._rows: Coalescer[Row] = Coalescer(
            self._write, max_batch=MAX_BATCH, closing_error=lambda: StorageError("the link store is closing")
        )

    async def insert(self, link: Row) -> None:
        """Store `link`; raises UniqueViolation when its code is taken, StorageError when the database fails."""
        await self._rows.submit(link)

    async def _write(self, batch: list[tuple[Row, asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                await self._write_one(batch[0][0])
            else:
                await self._write_many([link for link, _future in batch])
        except UniqueViolation as exc:
            if len(batch) == 1:
                settle(batch[0][1], exc)
                return
            for link, future in batch:
                try:
                    await self._write_one(link)
                except Exception as one:
                    settle(future, one)
                else:
                    settle(future, None)
            return
        except Exception as exc:
            settle_all(batch, exc)
            return
        for _link, future in batch:
            settle(future, None)
