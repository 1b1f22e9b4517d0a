from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio

from gateway.engines.database import Database
from tests import services
from tests.proxy_fixtures import upstream  # noqa: F401  (the session's test upstream, for every module)


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI time limit, `timeout`) ends the session as Ctrl-C does, so the fixtures' finally blocks
    stop every Redis, PostgreSQL and gateway the tests started; the default SIGTERM would leave them running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[services.RedisServer]:
    """One real redis-server for the whole session; tests that share it use their own key prefixes or flush."""
    with services.redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[services.PostgresServer]:
    with services.postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[list[services.RedisServer]]:
    with services.redis_cluster() as servers:
        yield servers


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh, connected database on each dialect: SQLite in a temp file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path}/gateway.db")
        await db.connect()
        yield db
        await db.aclose()
        return
    server: services.PostgresServer = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = Database(server.url)
    await admin.connect()
    await admin.execute(f"CREATE DATABASE {name}")
    db = Database(server.url.rsplit("/", 1)[0] + f"/{name}")
    await db.connect()
    yield db
    await db.aclose()
    await admin.execute(f"DROP DATABASE {name}")
    await admin.aclose()


@pytest.fixture(params=["embedded", "redis"])
async def engine_yaml(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The `engine:` section of both engines: embedded (lupa + a SQLite file and queue), and distributed (Redis
    Streams + PostgreSQL, each test on a flushed Redis and a new database)."""
    if request.param == "embedded":
        yield f"engine:\n  kind: embedded\n  database: {{url: 'sqlite:///{tmp_path}/gateway.db'}}\n"
        return
    redis_server: services.RedisServer = request.getfixturevalue("redis_server")
    postgres: services.PostgresServer = request.getfixturevalue("postgres_server")
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    name = f"n_{uuid.uuid4().hex[:12]}"
    admin = Database(postgres.url)
    await admin.connect()
    await admin.execute(f"CREATE DATABASE {name}")
    url = postgres.url.rsplit("/", 1)[0] + f"/{name}"
    yield (
        "engine:\n  kind: redis\n"
        f"  redis: {{url: '{redis_server.url}', deadline: 500ms}}\n"
        f"  database: {{url: '{url}'}}\n"
    )
    await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    await admin.aclose()
