from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from gateway.engines.database import Database
from tests import services


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


@pytest.fixture
def sqlite_yaml(tmp_path: Path) -> str:
    return f"engine:\n  kind: embedded\n  database: {{url: 'sqlite:///{tmp_path}/gateway.db'}}\n"
