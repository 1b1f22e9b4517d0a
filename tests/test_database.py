from __future__ import annotations

import pytest

from gateway.engines.database import Database, Migration, UniqueViolation, redact, sqlite_path
from gateway.exceptions import StorageError

MIGRATIONS = [
    Migration("things", 1, "CREATE TABLE things (id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE)"),
    Migration("things", 2, "ALTER TABLE things ADD COLUMN score DOUBLE PRECISION NOT NULL DEFAULT 0"),
]


async def test_migrations_apply_once_in_order(database: Database) -> None:
    await database.migrate(MIGRATIONS)
    await database.migrate(MIGRATIONS)  # again: nothing to do, no error
    rows = await database.fetch("SELECT version FROM schema_migrations WHERE system = $1 ORDER BY version", "things")
    assert [row["version"] for row in rows] == [1, 2]


async def test_placeholders_repeat_and_reorder(database: Database) -> None:
    await database.migrate(MIGRATIONS)
    assert await database.execute("INSERT INTO things (id, name, score) VALUES ($2, $1, $3)", "a", 1, 0.5) == 1
    row = await database.fetchrow("SELECT id, name, score FROM things WHERE name = $1 OR id = $2 OR name = $1", "a", 9)
    assert row == {"id": 1, "name": "a", "score": 0.5}


async def test_unique_violation_is_its_own_error(database: Database) -> None:
    await database.migrate(MIGRATIONS)
    await database.execute("INSERT INTO things (id, name) VALUES ($1, $2)", 1, "a")
    with pytest.raises(UniqueViolation):
        await database.execute("INSERT INTO things (id, name) VALUES ($1, $2)", 2, "a")


async def test_a_failed_transaction_rolls_back(database: Database) -> None:
    await database.migrate(MIGRATIONS)
    with pytest.raises(RuntimeError):
        async with database.transaction() as conn:
            await conn.execute("INSERT INTO things (id, name) VALUES ($1, $2)", 1, "a")
            raise RuntimeError("boom")
    assert await database.fetch("SELECT * FROM things") == []


async def test_on_conflict_works_on_both_dialects(database: Database) -> None:
    await database.migrate(MIGRATIONS)
    sql = "INSERT INTO things (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING"
    assert await database.execute(sql, 1, "a") == 1
    assert await database.execute(sql, 1, "b") == 0


async def test_postgres_down_is_a_storage_error_not_a_crash() -> None:
    db = Database("postgresql://nobody@127.0.0.1:1/none", deadline_s=1)
    await db.connect()  # lazy: the gateway starts while PostgreSQL is down
    with pytest.raises(StorageError):
        await db.fetchrow("SELECT 1")
    await db.aclose()


def test_urls() -> None:
    assert sqlite_path("sqlite:///./var/gateway.db") == "./var/gateway.db"
    assert sqlite_path("sqlite:////abs/gateway.db") == "/abs/gateway.db"
    assert redact("postgresql://user:secret@host/db") == "postgresql://user:***@host/db"


async def test_a_connection_left_inside_a_transaction_is_rolled_back_before_its_next_caller(database: Database) -> None:
    # The pool skips asyncpg's session reset on release; a transaction left open must still not leak.
    if database.dialect != "postgresql":
        pytest.skip("SQLite has one connection, and its transactions are always ended by the lock holder")
    await database.migrate(MIGRATIONS)
    database.pool_size = 1
    await database.aclose()
    await database.connect()
    async with database.connection() as conn:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO things (id, name) VALUES ($1, $2)", 1, "uncommitted")
    async with database.connection() as conn:
        assert await conn.fetch("SELECT * FROM things") == []
        await conn.execute("INSERT INTO things (id, name) VALUES ($1, $2)", 2, "kept")
    assert [row["name"] for row in await database.fetch("SELECT name FROM things")] == ["kept"]
