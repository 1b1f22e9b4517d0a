"""The links table and the counter behind generated codes, on PostgreSQL or SQLite, behind a breaker.

Every call has a deadline and goes through the database's circuit breaker, so an unreachable database costs
a request milliseconds, not the pool's connect timeout. A unique violation is an answer, not a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.batching import SharedWrites
from gateway.breaker import CircuitBreaker
from gateway.engines.database import Connection, Database, Migration, Row, UniqueViolation
from gateway.exceptions import StorageError
from gateway.timestamps import format_day

T = TypeVar("T")
SYSTEM = "shortener"
#: Rows per multi-row INSERT: 6 parameters each stays under SQLite's 999-variable floor.
INSERT_CHUNK = 160
#: Links per shared INSERT: 8 parameters each stays under SQLite's 999-variable floor.
MAX_INSERT_BATCH = 100

# The tables both dialects share; only the code counter and the queue's key differ.
_TABLES = """
CREATE TABLE urls (
    short_code TEXT PRIMARY KEY,
    long_url TEXT NOT NULL,
    custom_alias BOOLEAN NOT NULL DEFAULT FALSE,
    owner TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    max_visits BIGINT,
    visits BIGINT NOT NULL DEFAULT 0,
    deleted_at DOUBLE PRECISION,
    click_count BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX urls_owner_created ON urls (owner, created_at);
CREATE INDEX urls_expires_at ON urls (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE url_clicks_daily (
    short_code TEXT NOT NULL,
    day TEXT NOT NULL,
    agent TEXT NOT NULL,
    clicks BIGINT NOT NULL,
    PRIMARY KEY (short_code, day, agent)
);
CREATE TABLE clicks_queue (
    id {queue_id},
    short_code TEXT NOT NULL,
    clicked_at DOUBLE PRECISION NOT NULL,
    referrer TEXT,
    agent TEXT NOT NULL,
    -- one queued row stands for the identical clicks of one flush window
    clicks BIGINT NOT NULL DEFAULT 1
)
"""
MIGRATIONS = [
    Migration(
        SYSTEM,
        1,
        sql="CREATE SEQUENCE shortener_code_seq START 1;" + _TABLES.format(queue_id="BIGSERIAL PRIMARY KEY"),
        sqlite=(
            "CREATE TABLE shortener_counter (name TEXT PRIMARY KEY, value BIGINT NOT NULL);"
            "INSERT INTO shortener_counter (name, value) VALUES ('codes', 0);"
            + _TABLES.format(queue_id="INTEGER PRIMARY KEY AUTOINCREMENT")
        ),
    ),
    # Tags, stored as ",a,b," so that one tag matches as `LIKE '%,a,%'` (a tag has no LIKE wildcard).
    Migration(SYSTEM, 2, sql="ALTER TABLE urls ADD COLUMN tags TEXT NOT NULL DEFAULT ''"),
    # Clicks by referrer host and by browser family, per day: one row per (code, day, facet, value).
    Migration(
        SYSTEM,
        3,
        sql="ALTER TABLE clicks_queue ADD COLUMN browser TEXT NOT NULL DEFAULT 'Other';"
        "CREATE TABLE url_click_facets ("
        " short_code TEXT NOT NULL, day TEXT NOT NULL, facet TEXT NOT NULL, value TEXT NOT NULL,"
        " clicks BIGINT NOT NULL, PRIMARY KEY (short_code, day, facet, value))",
    ),
]
#: What url_click_facets holds, and the value that stands for "no Referer".
FACETS = ("referrer", "browser")
DIRECT = "(direct)"
#: Distinct values kept per link, day and facet; past them, new values count together as OTHER.
FACET_VALUES_MAX = 1000
OTHER = "(other)"
_COLUMNS = (
    "short_code, long_url, custom_alias, owner, created_at, expires_at, max_visits, visits, deleted_at, click_count, "
    "tags"
)


@dataclass(frozen=True, slots=True)
class Link:
    short_code: str
    long_url: str
    custom_alias: bool
    owner: str | None
    created_at: float
    expires_at: float | None = None
    max_visits: int | None = None
    visits: int = 0
    deleted_at: float | None = None
    click_count: int = 0
    tags: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Row) -> Link:
        tags = tuple(tag for tag in str(row.get("tags") or "").split(",") if tag)
        return cls(**{**row, "custom_alias": bool(row["custom_alias"]), "tags": tags})


@dataclass(frozen=True, slots=True)
class Click:
    """`count` redirects to one code with one referrer host, agent class (bot/mobile/desktop/other) and browser
    family, the first of them at `at`: what the aggregator folds."""

    short_code: str
    at: float
    referrer: str | None
    agent: str
    count: int = 1
    browser: str = "Other"


class UrlStore:
    def __init__(self, database: Database, *, breaker: CircuitBreaker, deadline_s: float) -> None:
        self.database = database
        self.breaker = breaker
        self.deadline_s = deadline_s
        # Concurrent creations share INSERT statements: one round trip (or one SQLite thread hop) for many links.
        self._inserts: SharedWrites[Link] = SharedWrites(
            self._insert_many,
            self._insert_one,
            max_batch=MAX_INSERT_BATCH,
            split_on=(UniqueViolation,),
            closing_error=lambda: StorageError("the link store is closing"),
        )

    async def _call(self, operation: Callable[[], Awaitable[T]], deadline_s: float | None = None) -> T:
        # SQLite is a local file with a deadline per statement already; cancelling one of its transactions
        # between BEGIN and the first statement would leave the shared connection inside that transaction.
        deadline = None if self.database.dialect == "sqlite" else (deadline_s or self.deadline_s)
        # A unique violation is the database answering; anything but a StorageError is the caller's own.
        async with self.breaker.guard(failure=(StorageError,), answer=(UniqueViolation,)):
            try:
                async with asyncio.timeout(deadline):
                    return await operation()
            except TimeoutError as exc:
                raise StorageError(f"the database did not answer within {deadline or self.deadline_s:g}s") from exc

    async def migrate(self) -> None:
        await self._call(lambda: self.database.migrate(MIGRATIONS), deadline_s=30.0)

    async def reserve(self, count: int) -> list[int]:
        """`count` fresh values of the counter, never handed out before (by any process)."""

        async def run() -> list[int]:
            if self.database.dialect == "postgresql":
                rows = await self.database.fetch(
                    "SELECT nextval('shortener_code_seq') AS value FROM generate_series(1, $1)", count
                )
                return [int(row["value"]) for row in rows]
            async with self.database.transaction() as conn:
                row = await conn.fetchrow(
                    "UPDATE shortener_counter SET value = value + $1 WHERE name = 'codes' RETURNING value", count
                )
            assert row is not None
            last = int(row["value"])
            return list(range(last - count + 1, last + 1))

        return await self._call(run, deadline_s=max(self.deadline_s, 5.0) if count > 1 else None)

    async def insert(self, link: Link) -> None:
        """Store a new link; raises UniqueViolation when its code is taken (even by a deleted link)."""
        await self._inserts.write(link)

    async def _insert_many(self, links: Sequence[Link]) -> None:
        rows = ", ".join(
            "(" + ", ".join(f"${i * 8 + column}" for column in range(1, 9)) + ")" for i in range(len(links))
        )
        args: list[Any] = []
        for link in links:
            args += [
                link.short_code,
                link.long_url,
                link.custom_alias,
                link.owner,
                float(link.created_at),
                float(link.expires_at) if link.expires_at is not None else None,
                link.max_visits,
                "," + ",".join(link.tags) + "," if link.tags else "",
            ]
        columns = "short_code, long_url, custom_alias, owner, created_at, expires_at, max_visits, tags"
        sql = f"INSERT INTO urls ({columns}) VALUES {rows}"
        await self._call(lambda: self.database.execute(sql, *args))

    async def _insert_one(self, link: Link) -> None:
        await self._insert_many([link])

    async def get(self, code: str) -> Link | None:
        row = await self._call(
            lambda: self.database.fetchrow(f"SELECT {_COLUMNS} FROM urls WHERE short_code = $1", code)
        )
        return Link.from_row(row) if row is not None else None

    async def owned_by(
        self, owner: str, *, after: tuple[float, str] | None, limit: int, tag: str | None = None
    ) -> list[Link]:
        """`owner`'s links (deleted ones not; with `tag`, only those tagged so), newest first, from just after the
        (created_at, short_code) `after`: keyset paging on the (owner, created_at) index, stable while links are
        added."""
        args: list[object] = [owner]
        where = "owner = $1 AND deleted_at IS NULL"
        if tag is not None:
            args.append(f"%,{tag},%")
            where += f" AND tags LIKE ${len(args)}"
        if after is not None:
            args += after
            where += (
                f" AND (created_at < ${len(args) - 1} OR (created_at = ${len(args) - 1} AND short_code < ${len(args)}))"
            )
        args.append(limit)
        sql = f"SELECT {_COLUMNS} FROM urls WHERE {where} ORDER BY created_at DESC, short_code DESC LIMIT ${len(args)}"
        rows = await self._call(lambda: self.database.fetch(sql, *args))
        return [Link.from_row(row) for row in rows]

    async def archive_expired(self, before: float, at: float, *, limit: int = 1000) -> list[str]:
        """Delete (softly) up to `limit` links that expired before `before`; returns their codes. On the
        expires_at index; a code two replicas archive at once is archived once."""
        rows = await self._call(
            lambda: self.database.fetch(
                "SELECT short_code FROM urls WHERE expires_at IS NOT NULL AND expires_at < $1 AND deleted_at IS NULL "
                "ORDER BY expires_at LIMIT $2",
                float(before),
                limit,
            )
        )
        archived = []
        for row in rows:
            if await self.delete(row["short_code"], at):
                archived.append(row["short_code"])
        return archived

    async def delete(self, code: str, at: float) -> bool:
        """Soft delete: the row stays, so the code is never handed out again."""
        count = await self._call(
            lambda: self.database.execute(
                "UPDATE urls SET deleted_at = $2 WHERE short_code = $1 AND deleted_at IS NULL", code, float(at)
            )
        )
        return count == 1

    async def grant_visit(self, code: str, *, spend: bool = True) -> bool:
        """Count one visit of a link with max_visits, atomically; False once they are used up.
        With `spend=False`, only tell whether one is left (HEAD requests look without visiting)."""
        if not spend:
            row = await self._call(
                lambda: self.database.fetchrow(
                    "SELECT 1 AS remaining FROM urls "
                    "WHERE short_code = $1 AND deleted_at IS NULL AND (max_visits IS NULL OR visits < max_visits)",
                    code,
                )
            )
            return row is not None
        count = await self._call(
            lambda: self.database.execute(
                "UPDATE urls SET visits = visits + 1 "
                "WHERE short_code = $1 AND deleted_at IS NULL AND (max_visits IS NULL OR visits < max_visits)",
                code,
            )
        )
        return count == 1

    async def clicks_by_day(self, code: str, days: int = 30) -> list[Row]:
        return await self._call(
            lambda: self.database.fetch(
                "SELECT day, agent, clicks FROM url_clicks_daily WHERE short_code = $1 AND day >= $2 "
                "ORDER BY day DESC, agent",
                code,
                format_day(time.time() - days * 86400),
            )
        )

    async def click_stats(self, code: str, first_day: str, last_day: str) -> tuple[list[Row], list[Row]]:
        """Clicks per (day, agent) and per (facet, value) for the days from `first_day` to `last_day` (inclusive)."""

        async def run() -> tuple[list[Row], list[Row]]:
            daily = await self.database.fetch(
                "SELECT day, agent, clicks FROM url_clicks_daily WHERE short_code = $1 AND day >= $2 AND day <= $3",
                code,
                first_day,
                last_day,
            )
            facets = await self.database.fetch(
                "SELECT facet, value, SUM(clicks) AS clicks FROM url_click_facets "
                "WHERE short_code = $1 AND day >= $2 AND day <= $3 GROUP BY facet, value",
                code,
                first_day,
                last_day,
            )
            return daily, facets

        return await self._call(run)

    async def enqueue(self, clicks: Sequence[Click]) -> None:
        """Append clicks to the durable local queue (the embedded engine, or Redis unreachable)."""

        async def run() -> None:
            async with self.database.transaction() as conn:
                for start in range(0, len(clicks), INSERT_CHUNK):
                    chunk = clicks[start : start + INSERT_CHUNK]
                    values = ", ".join(
                        "(" + ", ".join(f"${i * 6 + column}" for column in range(1, 7)) + ")" for i in range(len(chunk))
                    )
                    args: list[Any] = []
                    for click in chunk:
                        args += [click.short_code, float(click.at), click.referrer, click.agent, click.count]
                        args.append(click.browser)
                    await conn.execute(
                        "INSERT INTO clicks_queue (short_code, clicked_at, referrer, agent, clicks, browser) "
                        f"VALUES {values}",
                        *args,
                    )

        await self._call(run, deadline_s=max(self.deadline_s, 5.0))

    async def fold_queue(self, limit: int) -> list[Click]:
        """Take up to `limit` clicks off the local queue and add them to the counts, in one transaction."""
        lock = " FOR UPDATE SKIP LOCKED" if self.database.dialect == "postgresql" else ""

        async def run() -> list[Click]:
            async with self.database.transaction() as conn:
                rows = await conn.fetch(
                    "DELETE FROM clicks_queue WHERE id IN "
                    f"(SELECT id FROM clicks_queue ORDER BY id LIMIT $1{lock}) "
                    "RETURNING short_code, clicked_at, referrer, agent, clicks, browser",
                    limit,
                )
                clicks = [
                    Click(
                        row["short_code"],
                        row["clicked_at"],
                        row["referrer"],
                        row["agent"],
                        int(row["clicks"]),
                        row["browser"],
                    )
                    for row in rows
                ]
                await _add_counts(conn, clicks)
            return clicks

        return await self._call(run, deadline_s=max(self.deadline_s, 10.0))

    async def add_counts(self, clicks: Sequence[Click]) -> None:
        """Fold clicks read from elsewhere (the Redis stream) into the counts, in one transaction."""

        async def run() -> None:
            async with self.database.transaction() as conn:
                await _add_counts(conn, clicks)

        await self._call(run, deadline_s=max(self.deadline_s, 10.0))


async def _add_counts(conn: Connection, clicks: Sequence[Click]) -> None:
    totals: Counter[str] = Counter()
    daily: Counter[tuple[str, str, str]] = Counter()
    facets: Counter[tuple[str, str, str, str]] = Counter()
    for click in clicks:
        code, day = click.short_code, format_day(click.at)
        totals[code] += click.count
        daily[code, day, click.agent] += click.count
        facets[code, day, "referrer", click.referrer or DIRECT] += click.count
        facets[code, day, "browser", click.browser] += click.count
    # Sorted, so that two aggregators updating overlapping codes take their row locks in the same order.
    for code, count in sorted(totals.items()):
        await conn.execute("UPDATE urls SET click_count = click_count + $2 WHERE short_code = $1", code, count)
    for (code, day, agent), count in sorted(daily.items()):
        await conn.execute(
            "INSERT INTO url_clicks_daily (short_code, day, agent, clicks) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (short_code, day, agent) DO UPDATE SET clicks = url_clicks_daily.clicks + excluded.clicks",
            code,
            day,
            agent,
            count,
        )
    # Referrer hosts and some browser families come from the client: distinct values of one link, day and facet
    # are capped, and past the cap new ones count together as OTHER (clicks are never dropped).
    known: dict[tuple[str, str, str], int] = {}
    for (code, day, facet, value), count in sorted(facets.items()):
        updated = await conn.execute(
            "UPDATE url_click_facets SET clicks = clicks + $5 "
            "WHERE short_code = $1 AND day = $2 AND facet = $3 AND value = $4",
            code,
            day,
            facet,
            value,
            count,
        )
        if updated:
            continue
        group = (code, day, facet)
        if group not in known:
            row = await conn.fetchrow(
                "SELECT COUNT(*) AS n FROM url_click_facets WHERE short_code = $1 AND day = $2 AND facet = $3", *group
            )
            known[group] = int(row["n"]) if row is not None else 0
        if known[group] >= FACET_VALUES_MAX - 1:  # the last place is OTHER's
            value = OTHER
        else:
            known[group] += 1
        await conn.execute(
            "INSERT INTO url_click_facets (short_code, day, facet, value, clicks) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (short_code, day, facet, value) "
            "DO UPDATE SET clicks = url_click_facets.clicks + excluded.clicks",
            code,
            day,
            facet,
            value,
            count,
        )
