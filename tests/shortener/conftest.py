"""The two stacks every shortener rule runs on, and a gateway started in-process against one of them."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.app import Gateway, create_app
from gateway.config import Settings
from gateway.engines.database import Database
from gateway.events import Event
from gateway.settings import parse_settings
from gateway.shortener.service import ShortenerService
from tests import services

PUBLIC_URL = "http://sho.rt"
ALICE, BOB, ROOT = "alice-key-0001", "bob-key-00002", "root-key-0003"
IDENTITIES = f"""\
identities:
  api_keys:
    - {{key: {ALICE}, user_id: alice, tier: free}}
    - {{key: {BOB}, user_id: bob, tier: free}}
    - {{key: {ROOT}, user_id: root, tier: free, admin: true}}
"""


@dataclass
class Backend:
    """embedded: SQLite + the in-process engine; distributed: PostgreSQL + Redis."""

    kind: str
    database_url: str
    redis_url: str | None = None

    def yaml(self, shortener: str = "", extra: str = "", redis_url: str | None = None) -> str:
        redis_url = redis_url or self.redis_url
        engine = f"engine:\n  kind: {'redis' if redis_url else 'embedded'}\n"
        if redis_url:
            engine += f'  redis: {{url: "{redis_url}", breaker: {{cooldown: 0.5s}}}}\n'
        engine += f'  database: {{url: "{self.database_url}"}}\n'
        text = f"server:\n  public_url: {PUBLIC_URL}\n  access_log: false\n{engine}{IDENTITIES}"
        if shortener:
            text += "shortener:\n" + textwrap.indent(textwrap.dedent(shortener).strip("\n"), "  ") + "\n"
        return text + textwrap.dedent(extra)

    def settings(self, shortener: str = "", extra: str = "", redis_url: str | None = None) -> Settings:
        return parse_settings(self.yaml(shortener, extra, redis_url))


async def fresh_postgres_database(server: services.PostgresServer) -> tuple[str, Database]:
    """A new database on `server`: its URL, and an admin connection that can drop it later."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = Database(server.url)
    await admin.connect()
    await admin.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}", admin


@pytest.fixture(params=["embedded", "distributed"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "embedded":
        yield Backend("embedded", f"sqlite:///{tmp_path}/gateway.db")
        return
    postgres: services.PostgresServer = request.getfixturevalue("postgres_server")
    redis_server: services.RedisServer = request.getfixturevalue("redis_server")
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    url, admin = await fresh_postgres_database(postgres)
    yield Backend("distributed", url, redis_server.url)
    await admin.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")
    await admin.aclose()


@dataclass
class Running:
    app: Gateway
    client: httpx.AsyncClient
    events: list[Event]

    @property
    def service(self) -> ShortenerService:
        return self.app.runtime.shortener

    async def create(self, key: str | None = None, **body: Any) -> httpx.Response:
        headers = {"X-API-Key": key} if key else {}
        return await self.client.post("/api/v1/urls", json=body, headers=headers)

    async def code(self, long_url: str = "https://example.com/page", **body: Any) -> str:
        response = await self.create(long_url=long_url, **body)
        assert response.status_code == 201, response.text
        code: str = response.json()["short_code"]
        return code

    async def count_links(self) -> int:
        row = await self.service.store.database.fetchrow("SELECT COUNT(*) AS n FROM urls")
        assert row is not None
        return int(row["n"])

    async def click_count(self, code: str) -> int:
        row = await self.service.store.database.fetchrow("SELECT click_count FROM urls WHERE short_code = $1", code)
        assert row is not None
        return int(row["click_count"])


@asynccontextmanager
async def running(settings: Settings, *, start: bool = True) -> AsyncIterator[Running]:
    """The whole gateway in this event loop, started as uvicorn's lifespan would, with an ASGI client."""
    app = create_app(settings)
    events: list[Event] = []

    async def collect(event: Event) -> None:
        events.append(event)

    app.events.subscribe(collect)
    if start:
        await app.startup()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL)
    try:
        yield Running(app, client, events)
    finally:
        await client.aclose()
        await app.shutdown()
