from __future__ import annotations

from pathlib import Path

import httpx

from gateway.app import create_app
from tests.proxy_fixtures import eventually
from tests.shortener.conftest import PUBLIC_URL, Backend


async def test_a_reload_builds_a_new_shortener_and_stops_the_old_ones_work(backend: Backend, tmp_path: Path) -> None:
    def config(status: int) -> str:
        text = backend.yaml(f"redirect_status: {status}")
        return text.replace(
            "  access_log: false\n", "  access_log: false\n  drain_timeout: 0s\n  watch_config: false\n"
        )

    path = tmp_path / "gateway.yaml"
    path.write_text(config(301))
    app = create_app(config_path=path)
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as client:
            created = await client.post("/api/v1/urls", json={"long_url": "https://example.com/kept"})
            code = created.json()["short_code"]
            assert (await client.get(f"/{code}")).status_code == 301
            old = app.runtime.shortener
            path.write_text(config(302))
            assert await app.reload()
            assert app.runtime.shortener is not old
            follow = await client.get(f"/{code}")
            assert (follow.status_code, follow.headers["location"]) == (302, "https://example.com/kept")

            async def old_work_stopped() -> bool:
                return all(task.done() for task in [*old._graceful, *old._tasks])

            assert await eventually(old_work_stopped, timeout=5)

            async def both_clicks_counted() -> bool:
                link = await app.runtime.shortener.store.get(code)
                return link is not None and link.click_count == 2

            assert await eventually(both_clicks_counted, timeout=5)
    finally:
        await app.shutdown()
