from __future__ import annotations

import asyncio
import time

import pytest

from gateway.shortener.redirect import prefers_html
from gateway.shortener.store import Link
from tests.services import free_port
from tests.shortener.conftest import Backend, running

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.mark.parametrize(
    ("status", "cache_control"),
    [(301, "private, max-age=120"), (302, None), (307, None), (308, "private, max-age=120")],
)
async def test_the_configured_status_and_its_cache_header(
    backend: Backend, status: int, cache_control: str | None
) -> None:
    async with running(backend.settings(f"redirect_status: {status}\ncache_max_age: 2m")) as gateway:
        code = await gateway.code("https://example.com/target?a=1")
        for method in ("GET", "HEAD"):
            response = await gateway.client.request(method, f"/{code}")
            assert response.status_code == status
            assert response.headers["location"] == "https://example.com/target?a=1"
            assert response.headers.get("cache-control") == cache_control
            assert response.content == b""


async def test_unknown_codes_are_404_in_json_or_html(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        api = await gateway.client.get("/nosuchcode")
        assert api.status_code == 404
        assert api.headers["content-type"] == "application/json"
        assert set(api.json()) == {"error", "detail", "request_id"}
        assert api.json()["error"] == "not_found"
        page = await gateway.client.get("/nosuchcode", headers=HTML)
        assert page.status_code == 404
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<h1>Not found</h1>" in page.text


async def test_expired_links_are_410(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        expires = time.time() + 1.2
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expires)) + f".{int(expires % 1 * 1000):03d}Z"
        code = await gateway.code(expires_at=stamp)
        early = await gateway.client.get(f"/{code}")
        assert early.status_code == 301
        # Browsers must not cache it past its expiry.
        assert early.headers["cache-control"] in ("private, max-age=0", "private, max-age=1")
        await asyncio.sleep(max(0.0, expires - time.time()) + 0.05)
        late = await gateway.client.get(f"/{code}")
        assert late.status_code == 410
        assert late.json()["error"] == "expired"
        page = await gateway.client.get(f"/{code}", headers=HTML)
        assert (page.status_code, page.headers["content-type"]) == (410, "text/html; charset=utf-8")
        assert (await gateway.client.get(f"/api/v1/urls/{code}")).json()["state"] == "expired"


async def test_max_visits_is_exact_under_concurrency(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        code = await gateway.code(max_visits=5)
        for _ in range(3):  # a HEAD looks without spending a visit
            assert (await gateway.client.head(f"/{code}")).status_code == 301
        responses = await asyncio.gather(*(gateway.client.get(f"/{code}") for _ in range(20)))
        assert sorted(response.status_code for response in responses) == [301] * 5 + [410] * 15
        granted = [response for response in responses if response.status_code == 301]
        assert all(response.headers["cache-control"] == "private, max-age=0" for response in granted)
        refused = next(response for response in responses if response.status_code == 410)
        assert refused.json()["error"] == "visit_limit_reached"
        meta = (await gateway.client.get(f"/api/v1/urls/{code}")).json()
        assert (meta["visits"], meta["state"]) == (5, "visit_limit_reached")
        assert (await gateway.client.head(f"/{code}")).status_code == 410


async def test_own_paths_and_routes_come_before_short_codes(backend: Backend) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    extra = f"""
    upstreams:
      shop: {{targets: ["{dead}"], retries: 0}}
    routes:
      - {{name: promo, match: {{path: /promo}}, upstream: shop}}
    """
    async with running(backend.settings(extra=extra)) as gateway:
        # As if "promo" had been an alias before the route was configured: the route still wins.
        for code in ("promo", "healthz", "metrics"):
            await gateway.service.store.insert(Link(code, "https://example.com/", True, None, time.time()))
        assert (await gateway.client.get("/promo")).status_code == 502
        assert (await gateway.client.get("/healthz")).json() == {"status": "ok"}
        assert (await gateway.client.get("/metrics")).status_code == 200
        refused = await gateway.create(long_url="https://example.com/", custom_alias="promo")
        assert (refused.status_code, refused.json()["field"]) == (400, "custom_alias")


@pytest.mark.parametrize("path", ["/a.b", "/ab", "/x/y", "/" + "a" * 65, "/with%20space"])
async def test_paths_outside_the_code_alphabet_fall_through_to_the_gateway_404(backend: Backend, path: str) -> None:
    async with running(backend.settings()) as gateway:
        response = await gateway.client.get(path)
        assert response.status_code == 404
        assert response.json()["detail"].startswith("no route for GET")


async def test_only_get_and_head_redirect(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        code = await gateway.code()
        response = await gateway.client.post(f"/{code}")
        assert response.status_code == 404
        assert response.json()["detail"] == f"no route for POST /{code}"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("text/html", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.5, application/json;q=0.4", True),
        ("text/*", True),
    ],
)
def test_html_only_when_preferred(accept: str | None, html: bool) -> None:
    headers = [(b"accept", accept.encode())] if accept is not None else []
    assert prefers_html({"headers": headers}) is html
