from __future__ import annotations

import asyncio
import re

import httpx

from gateway.shortener.codes import ALPHABET
from tests.shortener.conftest import ALICE, BOB, PUBLIC_URL, ROOT, Backend, running


async def test_create_answers_201_with_the_link(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        response = await gateway.create(
            long_url="https://example.com/x?y=1", expires_at="2099-06-01T12:00:00+02:00", max_visits=10
        )
        assert response.status_code == 201, response.text
        body = response.json()
        code = body["short_code"]
        assert len(code) == 7 and set(code) <= set(ALPHABET)
        assert body["short_url"] == f"{PUBLIC_URL}/{code}"
        assert body["long_url"] == "https://example.com/x?y=1"
        assert body["expires_at"] == "2099-06-01T10:00:00.000Z"
        assert body["max_visits"] == 10
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", body["created_at"])
        assert response.headers["location"] == f"/api/v1/urls/{code}"

        meta = await gateway.client.get(f"/api/v1/urls/{code}")
        assert meta.status_code == 200
        assert meta.json() == {
            **body,
            "custom_alias": False,
            "owner": None,
            "state": "active",
            "visits": 0,
            "click_count": 0,
            "clicks_by_day": [],
        }
        await gateway.app.events.flush()
        created = [event for event in gateway.events if event.type == "url.created"]
        assert [event.data["short_code"] for event in created] == [code]
        assert created[0].data["long_url"] == "https://example.com/x?y=1"


async def test_an_alias_is_taken_once(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        first = await gateway.create(long_url="https://example.com/1", custom_alias="my-link")
        assert first.status_code == 201
        assert first.json()["short_code"] == "my-link"
        assert first.json()["short_url"] == f"{PUBLIC_URL}/my-link"
        again = await gateway.create(long_url="https://example.com/2", custom_alias="my-link")
        assert again.status_code == 409
        assert again.json()["error"] == "alias_taken"
        assert again.json()["field"] == "custom_alias"
        # Aliases are case-sensitive codes, like generated ones.
        assert (await gateway.create(long_url="https://example.com/3", custom_alias="My-Link")).status_code == 201
        assert (await gateway.client.get("/my-link")).headers["location"] == "https://example.com/1"


async def test_the_same_alias_from_20_concurrent_clients_is_created_once(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        responses = await asyncio.gather(
            *(gateway.create(long_url=f"https://example.com/{n}", custom_alias="contested") for n in range(20))
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201] + [409] * 19
        winner = next(response for response in responses if response.status_code == 201)
        follow = await gateway.client.get("/contested")
        assert follow.headers["location"] == winner.json()["long_url"]
        assert await gateway.count_links() == 1


async def test_1000_creates_from_50_concurrent_clients_get_1000_distinct_codes(backend: Backend) -> None:
    async with running(backend.settings("key_pool: {min: 300, batch: 100}")) as gateway:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(1000):
            queue.put_nowait(n)
        codes: list[str] = []

        async def client() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                response = await gateway.create(long_url=f"https://example.com/{n}")
                assert response.status_code == 201, response.text
                codes.append(response.json()["short_code"])

        await asyncio.gather(*(client() for _ in range(50)))
        assert len(codes) == 1000
        assert len(set(codes)) == 1000
        assert await gateway.count_links() == 1000


async def test_anonymous_creators_cannot_delete_and_admins_can(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        code = await gateway.code()
        assert (await gateway.client.delete(f"/api/v1/urls/{code}")).status_code == 403
        assert (await gateway.client.delete(f"/api/v1/urls/{code}", headers={"X-API-Key": ALICE})).status_code == 403
        assert (await gateway.client.get(f"/{code}")).status_code == 301
        assert (await gateway.client.delete(f"/api/v1/urls/{code}", headers={"X-API-Key": ROOT})).status_code == 204


async def test_require_api_key_guards_create_read_and_delete(backend: Backend) -> None:
    async with running(backend.settings("require_api_key: true")) as gateway:
        anonymous = await gateway.create(long_url="https://example.com/")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "api_key_required"
        assert await gateway.count_links() == 0
        created = await gateway.create(ALICE, long_url="https://example.com/")
        assert created.status_code == 201
        code = created.json()["short_code"]
        url = f"/api/v1/urls/{code}"
        assert (await gateway.client.get(url)).status_code == 401
        assert (await gateway.client.delete(url)).status_code == 401
        assert (await gateway.client.get(url, headers={"X-API-Key": BOB})).status_code == 403
        assert (await gateway.client.delete(url, headers={"X-API-Key": BOB})).status_code == 403
        meta = await gateway.client.get(url, headers={"X-API-Key": ALICE})
        assert meta.status_code == 200
        assert meta.json()["owner"] == "alice"
        # Redirects stay public.
        assert (await gateway.client.get(f"/{code}")).status_code == 301
        assert (await gateway.client.delete(url, headers={"X-API-Key": ALICE})).status_code == 204


async def test_delete_is_soft_and_final(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        code = await gateway.code(key=ALICE)
        alias = await gateway.code(key=ALICE, custom_alias="gone-soon")
        assert (await gateway.client.get(f"/{code}")).status_code == 301
        for gone in (code, alias):
            deleted = await gateway.client.delete(f"/api/v1/urls/{gone}", headers={"X-API-Key": ALICE})
            assert deleted.status_code == 204
            follow = await gateway.client.get(f"/{gone}")
            assert follow.status_code == 404
            assert follow.json()["error"] == "not_found"
            assert (await gateway.client.get(f"/api/v1/urls/{gone}")).status_code == 404
            again = await gateway.client.delete(f"/api/v1/urls/{gone}", headers={"X-API-Key": ALICE})
            assert again.status_code == 404
        # The row stays, so a printed short link can never be pointed somewhere else.
        assert await gateway.count_links() == 2
        reuse = await gateway.create(long_url="https://example.com/other", custom_alias="gone-soon")
        assert reuse.status_code == 409


async def test_unknown_links_and_methods(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        assert (await gateway.client.get("/api/v1/urls/nothing1")).status_code == 404
        assert (await gateway.client.put("/api/v1/urls/nothing1")).status_code == 405
        big = await gateway.client.post("/api/v1/urls", content=b"{" + b" " * 70_000 + b"}")
        assert big.status_code == 413


async def test_the_api_runs_under_a_real_server(backend: Backend) -> None:
    from tests.proxy_fixtures import serve_gateway

    async with serve_gateway(backend.settings()) as base, httpx.AsyncClient(base_url=base) as client:
        created = await client.post("/api/v1/urls", json={"long_url": "https://example.com/real"})
        assert created.status_code == 201
        follow = await client.get(f"/{created.json()['short_code']}")
        assert (follow.status_code, follow.headers["location"]) == (301, "https://example.com/real")
