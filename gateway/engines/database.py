"""The durable store: PostgreSQL through asyncpg, or SQLite through aiosqlite for the embedded default.

SQL is written once in PostgreSQL style with $1, $2 placeholders; the SQLite side rewrites them to ?.
Stick to types both understand (TEXT, BIGINT, INTEGER, DOUBLE PRECISION, BOOLEAN) and to
`INSERT ... ON CONFLICT`, which both support. Each system owns its migrations (see `Migration`).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import aiosqlite
import asyncpg

from gateway.exceptions import StorageError

Dialect = Literal["postgresql", "sqlite"]
Row = dict[str, Any]
_PLACEHOLDER = re.compile(r"\$(\d+)")
DEFAULT_DEADLINE_S = 5.0


class UniqueViolation(Exception):
    """An insert hit a unique constraint (a taken alias, a replayed idempotency key...): the database answered,
    so this is no StorageError (nothing is unavailable, no breaker counts it)."""


@dataclass(frozen=True)
class Migration:
    """One versioned schema step of one system; `sql` runs on both dialects unless `sqlite` overrides it."""

    system: str
    version: int
    sql: str
    sqlite: str | None = None


class Connection(Protocol):
    async def execute(self, sql: str, *args: Any) -> int: ...
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...


class Database:
    """One pool (PostgreSQL) or one serialised connection (SQLite); every call has a deadline."""

    def __init__(self, url: str, *, deadline_s: float = DEFAULT_DEADLINE_S, pool_size: int = 10) -> None:
        self.url = url
        self.dialect: Dialect = "sqlite" if url.startswith("sqlite:") else "postgresql"
        self.deadline_s = deadline_s
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._sqlite: aiosqlite.Connection | None = None
        self._sqlite_lock = asyncio.Lock()

    async def connect(self) -> None:
        try:
            if self.dialect == "sqlite":
                path = sqlite_path(self.url)
                if path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._sqlite = await aiosqlite.connect(path, isolation_level=None)
                self._sqlite.row_factory = sqlite3.Row
                await self._sqlite.execute("PRAGMA journal_mode=WAL")
                await self._sqlite.execute("PRAGMA synchronous=NORMAL")
                await self._sqlite.execute("PRAGMA busy_timeout=5000")
            else:
                # min_size=0: the pool opens connections on demand, so the gateway starts (and recovers)
                # while PostgreSQL is down, and each call fails fast with StorageError meanwhile.
                async with asyncio.timeout(self.deadline_s):
                    self._pool = await asyncpg.create_pool(
                        self.url,
                        min_size=0,
                        max_size=self.pool_size,
                        command_timeout=self.deadline_s,
                        reset=_no_session_reset,
                    )
        except (OSError, TimeoutError, asyncpg.PostgresError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the database {redact(self.url)}: {exc}") from exc

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._sqlite is not None:
            await self._sqlite.close()
            self._sqlite = None

    async def migrate(self, migrations: Sequence[Migration]) -> None:
        """Apply, in order, the migrations not yet recorded in schema_migrations; each in its own transaction."""
        async with self.transaction() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(system TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (system, version))"
            )
        for migration in sorted(migrations, key=lambda m: (m.system, m.version)):
            async with self.transaction() as conn:
                if self.dialect == "postgresql":  # two replicas starting together must not both migrate
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", migration.system)
                done = await conn.fetchrow(
                    "SELECT 1 AS done FROM schema_migrations WHERE system = $1 AND version = $2",
                    migration.system,
                    migration.version,
                )
                if done:
                    continue
                sql = migration.sqlite if self.dialect == "sqlite" and migration.sqlite else migration.sql
                for statement in (part.strip() for part in sql.split(";")):
                    if statement:
                        await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (system, version) VALUES ($1, $2)",
                    migration.system,
                    migration.version,
                )

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.connection() as conn:
            return await conn.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self.connection() as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def ping(self) -> None:
        await self.fetchrow("SELECT 1 AS ok")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._acquire(transaction=False) as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._acquire(transaction=True) as conn:
            yield conn

    @asynccontextmanager
    async def _acquire(self, *, transaction: bool) -> AsyncIterator[Connection]:
        if self.dialect == "sqlite":
            if self._sqlite is None:
                raise StorageError("the database is not connected")
            # One connection, one writer at a time: SQLite's own model, made explicit.
            raw = self._sqlite
            async with self._sqlite_lock:
                conn = _SqliteConnection(raw, self.deadline_s)
                if transaction:
                    try:
                        await _to_completion(raw.execute("BEGIN IMMEDIATE"))
                    except asyncio.CancelledError:
                        await _to_completion(raw.execute("ROLLBACK"))
                        raise
                try:
                    yield conn
                except BaseException:
                    if transaction:
                        await _to_completion(raw.execute("ROLLBACK"))
                    raise
                else:
                    if transaction:
                        await _to_completion(raw.execute("COMMIT"))
            return
        if self._pool is None:
            raise StorageError("the database is not connected")
        try:
            async with asyncio.timeout(self.deadline_s):
                raw = await self._pool.acquire()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"the database is unavailable: {exc or type(exc).__name__}") from exc
        # A caller cancelled mid-query (its deadline) or a failed wire leaves the connection's state unknown:
        # rolling back or resetting it would be another round trip to a database that may be stalled, spent
        # after the caller's deadline. Such a connection is abandoned (closed locally); the pool opens a new one.
        abandon = False
        tx = raw.transaction() if transaction else None
        try:
            if tx is not None:
                await _pg(tx.start())
            try:
                yield _PostgresConnection(raw)
            except BaseException as exc:
                if tx is not None and not _connection_lost(exc):
                    await _pg(tx.rollback())
                raise
            if tx is not None:
                await _pg(tx.commit())
        except BaseException as exc:
            abandon = _connection_lost(exc)
            raise
        finally:
            if abandon:
                raw.terminate()
            await self._pool.release(raw)


def _connection_lost(exc: BaseException) -> bool:
    """Cancelled mid-call, or the wire failed: the connection's state is unknown."""
    return isinstance(exc, (asyncio.CancelledError, StorageError))


async def _to_completion(step: Awaitable[Any]) -> None:
    """Finish a transaction step under the lock even if the caller is cancelled meanwhile (aiosqlite would
    still run a cancelled statement later, in its thread, inside the next caller's transaction)."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's session reset: no `RESET ALL; UNLISTEN *; CLOSE ALL` and advisory
    unlock round trip on every release (a tenth of the notification API's CPU under load).

    The gateway keeps no session state (no SET, LISTEN, cursor or session lock: the migration's lock is the
    transaction's). asyncpg still rolls back a transaction left open before it calls this.
    """
    del conn


class _PostgresConnection:
    def __init__(self, raw: asyncpg.Connection) -> None:
        self._raw = raw

    async def execute(self, sql: str, *args: Any) -> int:
        status = await _pg(self._raw.execute(sql, *args))
        # "INSERT 0 1", "UPDATE 3", "DELETE 0": the row count is the last word.
        last = str(status).rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(record) for record in await _pg(self._raw.fetch(sql, *args))]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        record = await _pg(self._raw.fetchrow(sql, *args))
        return dict(record) if record is not None else None


async def _pg(awaitable: Any) -> Any:
    try:
        return await awaitable
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(str(exc)) from exc
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageError(f"database error: {exc or type(exc).__name__}") from exc


class _SqliteConnection:
    def __init__(self, raw: aiosqlite.Connection, deadline_s: float) -> None:
        self._raw = raw
        self._deadline_s = deadline_s

    async def _run(self, sql: str, args: Sequence[Any]) -> aiosqlite.Cursor:
        try:
            async with asyncio.timeout(self._deadline_s):
                return await self._raw.execute(_PLACEHOLDER.sub("?", sql), _ordered(sql, args))
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise UniqueViolation(str(exc)) from exc
            raise StorageError(f"database error: {exc}") from exc
        except (sqlite3.Error, TimeoutError) as exc:
            raise StorageError(f"database error: {exc or type(exc).__name__}") from exc

    async def execute(self, sql: str, *args: Any) -> int:
        cursor = await self._run(sql, args)
        return cursor.rowcount

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        cursor = await self._run(sql, args)
        return [dict(row) for row in await cursor.fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        cursor = await self._run(sql, args)
        row = await cursor.fetchone()
        return dict(row) if row is not None else None


def _ordered(sql: str, args: Sequence[Any]) -> list[Any]:
    """Arguments in the order the $n placeholders appear (PostgreSQL lets $1 repeat; ? cannot)."""
    return [args[int(number) - 1] for number in _PLACEHOLDER.findall(sql)]


def sqlite_path(url: str) -> str:
    """sqlite:///relative.db → relative.db; sqlite:////abs/path.db → /abs/path.db; sqlite:///:memory:."""
    return url.removeprefix("sqlite://").removeprefix("/") or ":memory:"


def redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
