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
    UNPARSED_BROWSER,
    ClickRecorder,
    agent_class,
    browser_family,
    decode_clicks,
    encode_clicks,
    group,
    referrer_host,
)
from gateway.shortener.store import Click
from tests.proxy_fixtures import eventually
from tests.shortener.conftest import ALICE, BOB, ROOT, Backend, running

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
    assert sorted(clicks, key=lambda c: (c.agent, c.browser)) == [
        Click("abc", 10.0, None, "desktop", 3, "Chrome"),
        Click("abc", 13.0, None, "desktop", 1, "Firefox"),
        Click("abc", 14.0, "t.co", "mobile", 1, "Mobile Safari UI/WKWebView"),
    ]
    assert len(recorder) == 0
    assert decode_clicks(encode_clicks(clicks)) == clicks


@pytest.mark.parametrize(
    ("agent", "family"),
    [
        (CHROME, "Chrome"),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", "Firefox"),
        (GOOGLEBOT, "Googlebot"),
        ("curl/8.5.0", "curl"),
        ("SomethingElse/1.0", "Other"),
        (None, "Other"),
        ("", "Other"),
    ],
)
def test_browser_families_come_from_uap_core(agent: str | None, family: str) -> None:
    assert browser_family(agent) == family


def test_a_flood_of_new_user_agents_is_parsed_within_a_budget_and_still_counted() -> None:
    recorder = ClickRecorder()
    for n in range(400):  # more new agents in one flush than PARSE_BUDGET (256)
        recorder.record("abc", 10.0, None, f"Mozilla/5.0 Firefox/{n}.0".encode())
    clicks = group(recorder.take())
    assert sum(click.count for click in clicks) == 400  # none lost
    by_browser = {click.browser: click.count for click in clicks}
    assert by_browser == {"Firefox": 256, UNPARSED_BROWSER: 144}
    # The next flush has its own budget, and what was parsed is remembered.
    recorder.record("abc", 11.0, None, b"Mozilla/5.0 Firefox/399.0")
    recorder.record("abc", 11.0, None, b"Mozilla/5.0 Firefox/0.0")
    assert {click.browser: click.count for click in group(recorder.take())} == {"Firefox": 2}


def test_stream_entries_of_an_older_gateway_still_decode() -> None:
    # Five fields, no browser: written before browsers were counted (a rolling upgrade shares the stream).
    assert decode_clicks("abc\t10.0\tt.co\tmobile\t3") == [Click("abc", 10.0, "t.co", "mobile", 3, "Other")]


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


async def test_link_statistics_by_day_device_referrer_and_browser(backend: Backend) -> None:
    async with running(backend.settings()) as gateway:
        code = (await gateway.create(ALICE, long_url="https://example.com/stats")).json()["short_code"]
        for agent, referer in [
            (CHROME, "https://news.example.com/x"),
            (CHROME, "https://news.example.com/y"),
            (CHROME, None),
            (IPHONE, "https://t.co/abc"),
            (GOOGLEBOT, None),
        ]:
            headers = {"User-Agent": agent, **({"Referer": referer} if referer else {})}
            assert (await gateway.client.get(f"/{code}", headers=headers)).status_code == 301

        async def counted() -> bool:
            return await gateway.click_count(code) == 5

        assert await eventually(counted, timeout=5)
        own = {"X-API-Key": ALICE}
        today = time.strftime("%Y-%m-%d", time.gmtime())
        answer = await gateway.client.get(f"/api/v1/urls/{code}/stats", headers=own)
        assert answer.status_code == 200, answer.text
        stats = answer.json()
        assert stats["short_code"] == code and stats["to"] == today and stats["clicks"] == 5
        assert stats["by_day"] == [{"day": today, "clicks": 5}]
        assert stats["by_device"] == [
            {"device": "desktop", "clicks": 3},
            {"device": "bot", "clicks": 1},
            {"device": "mobile", "clicks": 1},
        ]
        assert stats["by_referrer"] == [
            {"referrer": "(direct)", "clicks": 2},
            {"referrer": "news.example.com", "clicks": 2},
            {"referrer": "t.co", "clicks": 1},
        ]
        assert stats["by_browser"] == [
            {"browser": "Chrome", "clicks": 3},
            {"browser": "Googlebot", "clicks": 1},
            {"browser": "Mobile Safari UI/WKWebView", "clicks": 1},
        ]
        # A range that ends before today holds none of them.
        before = await gateway.client.get(
            f"/api/v1/urls/{code}/stats", params={"from": "2020-01-01", "to": "2020-01-31"}, headers=own
        )
        assert before.json()["clicks"] == 0 and before.json()["by_browser"] == []
        # Another user may not read them; an admin may.
        assert (await gateway.client.get(f"/api/v1/urls/{code}/stats", headers={"X-API-Key": BOB})).status_code == 403
        assert (await gateway.client.get(f"/api/v1/urls/{code}/stats", headers={"X-API-Key": ROOT})).json() == stats


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2030-02-30"}, "to"),
        ({"from": "2030-01-02", "to": "2030-01-01"}, "from"),
        ({"from": "2020-01-01", "to": "2030-01-01"}, "from"),
    ],
)
async def test_bad_statistics_ranges_are_400_naming_the_field(params: dict[str, str], field: str) -> None:
    async with running(Backend("embedded", "sqlite:///:memory:").settings()) as gateway:
        code = (await gateway.create(ALICE, long_url="https://example.com/stats")).json()["short_code"]
        answer = await gateway.client.get(f"/api/v1/urls/{code}/stats", params=params, headers={"X-API-Key": ALICE})
    assert answer.status_code == 400
    assert answer.json()["field"] == field


async def test_distinct_referrers_of_a_link_and_day_are_capped_and_none_is_lost(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.shortener import store as store_module

    monkeypatch.setattr(store_module, "FACET_VALUES_MAX", 4)
    async with running(backend.settings()) as gateway:
        code = (await gateway.create(ALICE, long_url="https://example.com/capped")).json()["short_code"]
        store = gateway.service.store
        now = time.time()
        # A client controls its Referer: six hosts, where the cap keeps three and "(other)".
        await store.add_counts([Click(code, now, f"h{i}.example", "desktop", 1, "Chrome") for i in range(6)])
        await store.add_counts(
            [Click(code, now, "h0.example", "desktop", 5, "Chrome"), Click(code, now, "new.example", "desktop", 2)]
        )
        today = time.strftime("%Y-%m-%d", time.gmtime(now))
        _, facets = await store.click_stats(code, today, today)
    referrers = {row["value"]: int(row["clicks"]) for row in facets if row["facet"] == "referrer"}
    # A host already kept still counts as itself; new ones past the cap go to "(other)".
    assert referrers == {"h0.example": 6, "h1.example": 1, "h2.example": 1, "(other)": 5}
    assert sum(referrers.values()) == 13
