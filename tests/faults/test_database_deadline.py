"""A stalled PostgreSQL (SIGSTOP) costs a database call its deadline and no more: the caller's own deadline (or
the pool's) cancels the query, and the connection it held is abandoned, not cleaned up over the stalled wire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.engines.database import Database
from gateway.exceptions import StorageError
from tests import services

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.postgres]
DEADLINE_S = 0.5
SLACK_S = 0.25


@pytest.fixture
async def stalled() -> AsyncIterator[Database]:
    with services.postgres_server() as server:
        database = Database(server.url, deadline_s=DEADLINE_S, pool_size=4)
        await database.connect()
        try:
            await asyncio.gather(*(database.ping() for _ in range(4)))  # warm pooled connections
            server.pause()
            try:
                yield database
            finally:
                server.resume()
            # And it recovers without a restart (the first call may still meet a connection lost in the stall).
            for _ in range(30):
                try:
                    await database.ping()
                    break
                except StorageError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the database did not answer within 3 s of resuming")
        finally:
            await database.aclose()


@pytest.mark.parametrize("transaction", [False, True])
async def test_a_callers_deadline_is_all_a_stalled_database_costs(stalled: Database, transaction: bool) -> None:
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(DEADLINE_S):
                if transaction:
                    async with stalled.transaction() as conn:
                        await conn.fetchrow("SELECT 1 AS ok")
                else:
                    await stalled.fetchrow("SELECT 1 AS ok")
        elapsed = time.monotonic() - started
        assert elapsed < DEADLINE_S + SLACK_S, f"{elapsed:.2f}s"


async def test_the_pools_own_deadline_is_all_a_stalled_database_costs(stalled: Database) -> None:
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(StorageError):
            await stalled.fetchrow("SELECT 1 AS ok")
        elapsed = time.monotonic() - started
        assert elapsed < DEADLINE_S + SLACK_S, f"{elapsed:.2f}s"
