from __future__ import annotations

import asyncio
import io
import re
import time
from datetime import UTC, datetime

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


async def test_an_owner_lists_their_links_newest_first_page_by_page(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        mine = [
            (await gateway.create(ALICE, long_url=f"https://example.com/{n}")).json()["short_code"] for n in range(5)
        ]
        await gateway.create(BOB, long_url="https://example.com/bob")
        gone = (await gateway.create(ALICE, long_url="https://example.com/gone")).json()["short_code"]
        assert (await gateway.client.delete(f"/api/v1/urls/{gone}", headers={"X-API-Key": ALICE})).status_code == 204
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params = {"owner": "me", "limit": "2", **({"cursor": cursor} if cursor else {})}
            page = await gateway.client.get("/api/v1/urls", params=params, headers={"X-API-Key": ALICE})
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [link["short_code"] for link in body["links"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
            # A link created between two pages appears on no later page and moves nothing.
            if pages == 1:
                await gateway.create(ALICE, long_url="https://example.com/later")
        assert seen == mine[::-1] and pages == 3  # newest first; Bob's and the deleted link are not there
        bobs = await gateway.client.get("/api/v1/urls", params={"owner": "bob"}, headers={"X-API-Key": ALICE})
        assert bobs.status_code == 403
        as_admin = await gateway.client.get("/api/v1/urls", params={"owner": "bob"}, headers={"X-API-Key": ROOT})
        assert [link["long_url"] for link in as_admin.json()["links"]] == ["https://example.com/bob"]
        anonymous = await gateway.client.get("/api/v1/urls")
        assert anonymous.status_code == 403
        bad = await gateway.client.get("/api/v1/urls", params={"cursor": "!!"}, headers={"X-API-Key": ALICE})
        assert bad.status_code == 400 and bad.json()["field"] == "cursor"
        too_many = await gateway.client.get("/api/v1/urls", params={"limit": "101"}, headers={"X-API-Key": ALICE})
        assert too_many.status_code == 400 and too_many.json()["field"] == "limit"


async def test_a_bulk_create_answers_each_link_on_its_own(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        taken = await gateway.code(custom_alias="taken-alias")
        items = [
            *({"long_url": f"https://example.com/bulk/{n}"} for n in range(30)),
            {"long_url": "ftp://example.com/x"},
            {"long_url": "https://example.com/a", "custom_alias": "taken-alias"},
            {"long_url": "https://example.com/b", "custom_alias": "fresh-alias"},
            {"long_url": "https://example.com/c", "custom_alias": "fresh-alias"},
            "not an object",
        ]
        answer = await gateway.client.post("/api/v1/urls/bulk", json={"links": items}, headers={"X-API-Key": ALICE})
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r["status"] for r in results[:30]] == [201] * 30
        assert len({r["link"]["short_code"] for r in results[:30]}) == 30
        assert results[30]["status"] == 400 and results[30]["error"]["field"] == "long_url"
        assert results[31]["status"] == 409 and results[31]["error"]["error"] == "alias_taken"
        assert sorted(r["status"] for r in results[32:34]) == [201, 409]  # one alias, two asks: one wins
        assert results[34]["status"] == 400 and results[34]["error"]["field"] == "body"
        # Each created link is real, and the failed items created nothing.
        for result in results[:30]:
            assert (await gateway.client.get(f"/{result['link']['short_code']}")).status_code in (301, 302)
        assert (await gateway.client.get(f"/{taken}")).headers["location"] == "https://example.com/page"
        listed = await gateway.client.get("/api/v1/urls", params={"limit": "100"}, headers={"X-API-Key": ALICE})
        assert len(listed.json()["links"]) == 31
        too_many = {"links": [{"long_url": "https://example.com/"}] * 101}
        refused = await gateway.client.post("/api/v1/urls/bulk", json=too_many, headers={"X-API-Key": ALICE})
        assert refused.status_code == 400 and refused.json()["field"] == "links"


async def test_links_expired_longer_than_the_retention_are_archived(backend: Backend) -> None:

    async with running(backend.settings("expired_retention: 1s\narchive_interval: 1h\n")) as gateway:
        soon = datetime.fromtimestamp(time.time() + 1.0, UTC).isoformat()
        old = await gateway.code(long_url="https://example.com/old", expires_at=soon)
        kept = await gateway.code(long_url="https://example.com/kept")
        assert (await gateway.client.get(f"/api/v1/urls/{old}")).status_code == 200
        await asyncio.sleep(1.2)
        assert await gateway.service.archive_expired() == 0  # expired, but within its retention
        await asyncio.sleep(1.1)
        assert await gateway.service.archive_expired() == 1
        assert await gateway.service.archive_expired() == 0  # once
        assert (await gateway.client.get(f"/api/v1/urls/{old}")).status_code == 404
        assert (await gateway.client.get(f"/{old}")).status_code == 404
        assert (await gateway.client.get(f"/{kept}")).status_code in (301, 302)
        again = await gateway.create(long_url="https://example.com/x", custom_alias=old)
        assert again.status_code in (400, 409)  # an archived code is never handed out again


async def test_a_links_qr_code_encodes_its_short_url(backend: Backend) -> None:
    import xml.etree.ElementTree as ElementTree

    import segno

    async with running(backend.settings()) as gateway:
        code = (await gateway.create(ALICE, long_url="https://example.com/qr")).json()["short_code"]
        short_url = f"{PUBLIC_URL}/{code}"
        own = {"X-API-Key": ALICE}
        svg = await gateway.client.get(f"/api/v1/urls/{code}/qr", headers=own)
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        assert ElementTree.fromstring(svg.content).tag.endswith("svg")
        png = await gateway.client.get(f"/api/v1/urls/{code}/qr", params={"format": "png", "size": "8"}, headers=own)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
        # The symbol is the short URL's: byte for byte the image of encoding it directly (segno is deterministic).
        expected = io.BytesIO()
        segno.make(short_url, error="m", boost_error=False).save(expected, kind="png", scale=8)
        assert png.content == expected.getvalue()
        other = io.BytesIO()
        segno.make(short_url + "x", error="m", boost_error=False).save(other, kind="png", scale=8)
        assert png.content != other.getvalue()
        assert (await gateway.client.get(f"/api/v1/urls/{code}/qr", headers={"X-API-Key": BOB})).status_code == 403
        bad = await gateway.client.get(f"/api/v1/urls/{code}/qr", params={"format": "gif"}, headers=own)
        assert bad.status_code == 400 and bad.json()["field"] == "format"
        huge = await gateway.client.get(f"/api/v1/urls/{code}/qr", params={"size": "500"}, headers=own)
        assert huge.status_code == 400 and huge.json()["field"] == "size"
        assert (await gateway.client.get("/api/v1/urls/nope/qr", headers=own)).status_code == 404


async def test_tags_are_kept_and_filter_the_list(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        own = {"X-API-Key": ALICE}
        news = await gateway.create(ALICE, long_url="https://example.com/n", tags=["news", "q4-2026", "news"])
        assert news.status_code == 201 and news.json()["tags"] == ["news", "q4-2026"]
        await gateway.create(ALICE, long_url="https://example.com/p", tags=["promo"])
        await gateway.create(ALICE, long_url="https://example.com/none")
        await gateway.create(ALICE, long_url="https://example.com/newsy", tags=["newsy"])  # a prefix is not a match
        tagged = await gateway.client.get("/api/v1/urls", params={"tag": "news"}, headers=own)
        assert [link["long_url"] for link in tagged.json()["links"]] == ["https://example.com/n"]
        meta = await gateway.client.get(f"/api/v1/urls/{news.json()['short_code']}", headers=own)
        assert meta.json()["tags"] == ["news", "q4-2026"]
        for tags in (["News"], ["a_b"], ["x"] * 11, "news", ["%"]):
            refused = await gateway.create(ALICE, long_url="https://example.com/bad", tags=tags)
            assert refused.status_code == 400 and refused.json()["field"] == "tags", tags
        wildcard = await gateway.client.get("/api/v1/urls", params={"tag": "%"}, headers=own)
        assert wildcard.status_code == 400 and wildcard.json()["field"] == "tag"
