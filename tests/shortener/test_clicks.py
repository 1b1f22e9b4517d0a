from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY
from redis.exceptions import ResponseError

from gateway.engines.database import Database
from gateway.shortener.clicks import (
    GROUP,
    STREAM,
    ClickRecorder,
    agent_class,
    decode_clicks,
    encode_clicks,
    group,
    referrer_host,
)
from gateway.shortener.store import Click
from tests.proxy_fixtures import eventually
from tests.shortener.conftest import Backend, running

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.mark.parametrize(
    ("agent", "kind"),
    [
        (CHROME, "desktop"),
        (IPHONE, "mobile"),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/120.0 Mobile Safari/537.36", "mobile"),
        (GOOGLEBOT, "bot"),
        ("curl/8.5.0", "bot"),
        ("python-httpx/0.28.1", "bot"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Safari/605.1.15", "desktop"),
        ("SomethingElse/1.0", "other"),
        (None, "other"),
    ],
)
def test_user_agent_classes(agent: str | None, kind: str) -> None:
    assert agent_class(agent) == kind


def test_referrer_hosts() -> None:
    assert referrer_host("https://News.Example.com/a?b=c") == "news.example.com"
    assert referrer_host("android-app://com.slack") == "com.slack"
    assert referrer_host("not a url") is None
    assert referrer_host(None) is None


def test_identical_clicks_share_one_entry_and_group_by_class() -> None:
    recorder = ClickRecorder(limit=3)
    for at in (10.0, 11.0, 12.0):
        recorder.record("abc", at, None, CHROME.encode())
    recorder.record("abc", 13.0, None, b"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0")
    recorder.record("abc", 14.0, b"https://t.co/x", IPHONE.encode())
    recorder.record("xyz", 15.0, None, None)  # over the limit of 3 distinct entries: dropped
    assert len(recorder) == 5
    clicks = group(recorder.take())
    assert sorted(clicks, key=lambda c: c.agent) == [
        Click("abc", 10.0, None, "desktop", 4),
        Click("abc", 14.0, "t.co", "mobile", 1),
    ]
    assert len(recorder) == 0
    assert decode_clicks(encode_clicks(clicks)) == clicks


def test_clicks_put_back_merge_with_newer_ones() -> None:
    recorder = ClickRecorder()
    recorder.record("abc", 10.0, None, None)
    taken = recorder.take()
    recorder.record("abc", 20.0, None, None)
    recorder.put_back(taken)
    assert recorder.pending == {("abc", None, None): [10.0, 2]}


def lag_count() -> float:
    return REGISTRY.get_sample_value("gateway_shortener_click_lag_seconds_count") or 0.0


async def test_clicks_are_counted_within_seconds_by_day_and_agent(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        code = await gateway.code()
        lag_before = lag_count()
        started = time.monotonic()
        for agent, referer in [
            (CHROME, "https://news.example.com/x"),
            (CHROME, None),
            (IPHONE, None),
            (GOOGLEBOT, None),
        ]:
            headers = {"User-Agent": agent, **({"Referer": referer} if referer else {})}
            assert (await gateway.client.get(f"/{code}", headers=headers)).status_code == 301
            assert (await gateway.client.head(f"/{code}", headers=headers)).status_code == 301  # not a click

        async def counted() -> bool:
            return await gateway.click_count(code) == 4

        assert await eventually(counted, timeout=5)
        assert time.monotonic() - started < 5
        assert lag_count() - lag_before == 4
        meta = (await gateway.client.get(f"/api/v1/urls/{code}")).json()
        assert meta["click_count"] == 4
        by_agent = {row["agent"]: row["clicks"] for row in meta["clicks_by_day"]}
        assert by_agent == {"desktop": 2, "mobile": 1, "bot": 1}
        assert {row["day"] for row in meta["clicks_by_day"]} == {time.strftime("%Y-%m-%d", time.gmtime())}
        await gateway.app.events.flush()
        clicked = [event.data for event in gateway.events if event.type == "url.clicked"]
        assert len(clicked) == 4
        assert {(event["short_code"], event["referrer"], event["agent"]) for event in clicked} >= {
            (code, "news.example.com", "desktop"),
            (code, None, "bot"),
        }


async def test_no_click_is_lost_across_a_restart(backend: Backend) -> None:
    settings = backend.settings()
    async with running(settings) as gateway:
        code = await gateway.code()
        for _ in range(7):
            assert (await gateway.client.get(f"/{code}")).status_code == 301
        # Stopped at once: the clicks are still in memory, and the shutdown must keep them.
    # What a process killed mid-way leaves: rows in the local queue and, with Redis, unacknowledged entries.
    database = Database(backend.database_url)
    await database.connect()
    for _ in range(2):
        await database.execute(
            "INSERT INTO clicks_queue (short_code, clicked_at, referrer, agent) VALUES ($1, $2, NULL, 'other')",
            code,
            time.time(),
        )
    await database.aclose()
    expected = 9
    if backend.redis_url is not None:
        client = redis.asyncio.Redis.from_url(backend.redis_url)
        with contextlib.suppress(ResponseError):  # BUSYGROUP: the first gateway made it
            await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        await client.xadd(STREAM, {"clicks": encode_clicks([Click(code, time.time(), None, "other", 3)])})
        # A consumer that read them and died before acknowledging them.
        read: Any = await client.xreadgroup(GROUP, "dead-consumer", {STREAM: ">"})
        assert len(read[0][1]) >= 1
        await client.aclose()
        expected += 3
    async with running(settings, start=False) as restarted:
        restarted.service.clicks.reclaim_idle_s = 0.1
        await restarted.app.startup()

        async def all_counted() -> bool:
            return await restarted.click_count(code) == expected

        assert await eventually(all_counted, timeout=5), await restarted.click_count(code)
