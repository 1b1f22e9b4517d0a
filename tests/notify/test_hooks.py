"""Hooks: gateway events, filtered and throttled, become notifications."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config.notifications import parse_throttle
from gateway.engines.embedded import EmbeddedEngine
from gateway.events import RateLimitExceeded, UrlClicked, UrlCreated, payload_fields
from gateway.notify.hooks import HookPipeline, matches, recipients
from gateway.notify.models import NotificationRequest
from gateway.timestamps import format_time
from tests.notify.harness import bare_service, gateway_yaml, settings, webhook_channel
from tests.notify.peers import webhook_receiver
from tests.proxy_fixtures import eventually, metric, serve_gateway

RATE_LIMITED = """\
ratelimit:
  rules:
    - {name: api, tier: free, match: "/api/v1/*", windows: ["1/1m"]}
hooks:
  - name: limits
    on: ratelimit.exceeded
    when: {tier: [free, anonymous]}
    throttle: "1/10m per user_id"
    notify: {users: [ops, "$user_id"], template: limit_hit, channels: [webhook], priority: high}
  - name: premium-only
    on: ratelimit.exceeded
    when: {tier: premium}
    notify: {users: [ops], template: limit_hit, channels: [webhook]}
"""


async def test_a_ratelimit_event_creates_a_notification_and_the_throttle_holds_the_next_back(
    engine_yaml: str,
) -> None:
    async with webhook_receiver() as receiver:
        channels = webhook_channel(receiver.url)
        text = gateway_yaml(engine_yaml, channels=channels, extra=RATE_LIMITED, anonymous_tier="free")
        async with serve_gateway(settings(text)) as base, httpx.AsyncClient() as client:
            # Any limited API path (not the status API: it is never limited); the first answer is the link's 404.
            statuses = [(await client.get(f"{base}/api/v1/urls/nope")).status_code for _ in range(4)]
            assert statuses == [404, 429, 429, 429]

            async def notified() -> bool:
                return len(receiver.requests) == 2

            assert await eventually(notified, 5)
            await asyncio.sleep(0.3)  # give a wrongly unthrottled second notification time to arrive
            metrics = (await client.get(f"{base}/metrics")).text
    assert len(receiver.requests) == 2  # one notification, to ops and to the limited user
    bodies = sorted((r.json["data"]["user_id"], r.json["data"]["body"]) for r in receiver.requests)
    assert bodies == [
        ("127.0.0.1", "127.0.0.1 (free) was refused on /api/v1/urls/nope"),
        ("ops", "127.0.0.1 (free) was refused on /api/v1/urls/nope"),
    ]
    assert metric(metrics, "gateway_notify_hooks_total", hook="limits", result="created") >= 1
    assert metric(metrics, "gateway_notify_hooks_total", hook="limits", result="throttled") >= 2
    assert metric(metrics, "gateway_notify_hooks_total", hook="premium-only", result="created") == 0


async def test_a_channel_breaker_opening_notifies_through_a_hook(sqlite_yaml: str) -> None:
    async with webhook_receiver(lambda n: 503) as broken, webhook_receiver() as ops:
        channels = webhook_channel(broken.url, breaker="{failures: 1, cooldown: 10s}") + webhook_channel(
            ops.url
        ).replace("webhook:", "ops:", 1)
        hooks = """\
        hooks:
          - on: [circuit.opened]
            when: {breaker: ["notify:webhook", "redis"]}
            notify: {users: [oncall], template: circuit, channels: [ops], priority: high}
        """
        async with bare_service(gateway_yaml(sqlite_yaml, channels=channels, extra=hooks), workers=True) as service:
            request = NotificationRequest(("alice",), "welcome", ("webhook",), {"name": "A"}, "high")
            await service.create(request, created_by="test")

            async def alerted() -> bool:
                return len(ops.requests) == 1

            assert await eventually(alerted, 5)
    assert ops.requests[0].json["data"]["body"] == "breaker notify:webhook is open (circuit.opened)"
    assert len(broken.requests) == 1  # the open breaker holds the retries back


def test_when_fields_match_by_equality_and_lists_mean_any_of() -> None:
    event = {"tier": "free", "rule": "api", "limit": 10}
    assert matches({}, event)
    assert matches({"tier": "free", "limit": 10}, event)
    assert matches({"tier": ["premium", "free"]}, event)
    assert not matches({"tier": "premium"}, event)
    assert not matches({"tier": ["premium"]}, event)
    assert not matches({"missing": "x"}, event)


def test_recipients_take_user_ids_from_event_fields() -> None:
    assert recipients(["ops", "$user_id", "ops"], {"user_id": "alice"}) == ("ops", "alice")
    assert recipients(["$user_id"], {}) == ()


@pytest.mark.parametrize(
    ("text", "limit", "window", "per"),
    [("1/10m per user_id", 1, 600.0, "user_id"), ("5 / 1h", 5, 3600.0, None), ("3/500ms per rule", 3, 0.5, "rule")],
)
def test_throttles_parse(text: str, limit: int, window: float, per: str | None) -> None:
    throttle = parse_throttle(text)
    assert (throttle.limit, throttle.window, throttle.per) == (limit, window, per)


def test_a_bad_throttle_is_refused() -> None:
    with pytest.raises(ValueError, match="not a throttle"):
        parse_throttle("often")


async def test_a_reloaded_configuration_replaces_the_hooks_rather_than_doubling_them(
    sqlite_yaml: str, tmp_path: Path
) -> None:
    hooks = """\
    hooks:
      - {name: limits, on: ratelimit.exceeded, notify: {users: [ops], template: limit_hit, channels: [log]}}
    """
    text = gateway_yaml(sqlite_yaml, channels="log: {plugin: log}\n", extra=hooks)
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    gateway = create_app(config_path=path)
    await gateway.startup()
    try:
        database = gateway.engines.database
        gateway.events.emit(refusal())
        await gateway.events.flush()
        path.write_text(text.replace("channels: [log]}}", "channels: [log], priority: low}}"))
        assert await gateway.reload()
        gateway.events.emit(refusal())
        await gateway.events.flush()
        rows = await database.fetch("SELECT priority FROM notify_notifications ORDER BY created_at")
    finally:
        await gateway.shutdown()
    assert [row["priority"] for row in rows] == ["normal", "low"]  # one per event, from the current hooks


def refusal(**fields: Any) -> RateLimitExceeded:
    defaults: dict[str, Any] = {
        "user_id": "u1",
        "identity_kind": "api_key",
        "tier": "free",
        "rule": "api",
        "path": "/x",
        "limit": 1,
        "window": "1m",
        "retry_after": 60.0,
    }
    return RateLimitExceeded(**{**defaults, **fields})


class Recorder:
    """A Notifier that keeps what the hooks create."""

    ready = True

    def __init__(self) -> None:
        self.created: list[tuple[NotificationRequest, str]] = []

    async def create(self, request: NotificationRequest, *, created_by: str) -> str:
        self.created.append((request, created_by))
        return "{}"


def pipeline(yaml: str, service: Recorder) -> HookPipeline:
    text = "notifications:\n  channels: {log: {plugin: log}}\n  templates: {t: {default: {body: x}}}\n" + yaml
    engine = EmbeddedEngine()
    return HookPipeline(settings(text).hooks, service, engine, engine)


async def test_a_typed_events_fields_reach_the_template_data_as_before() -> None:
    service = Recorder()
    hooks = pipeline(
        "hooks:\n"
        "  - {name: clicks, on: url.clicked, when: {agent: bot}, notify: {users: [ops], template: t, channels: [log],"
        " data: {team: core, count: 0}}}\n",
        service,
    )
    clicked = UrlClicked(short_code="abc", at=1700000000.5, referrer="example.com", agent="bot", count=3)
    await hooks(clicked)
    await hooks(UrlClicked(short_code="abc", at=1.0, referrer=None, agent="desktop", count=1))  # `when` fails
    [(request, created_by)] = service.created
    assert created_by == "hook:clicks" and request.user_ids == ("ops",)
    # The hook's `data`, then every payload field by name (the event's own win), then `event`.
    assert request.data == {
        "team": "core",
        "short_code": "abc",
        "at": 1700000000.5,
        "referrer": "example.com",
        "agent": "bot",
        "count": 3,
        "event": {"type": "url.clicked", "id": clicked.id, "at": format_time(clicked.emitted_at)},
    }


async def test_recipients_and_when_read_the_typed_fields() -> None:
    service = Recorder()
    hooks = pipeline(
        "hooks:\n"
        "  - {on: ratelimit.exceeded, when: {tier: [free, anonymous], limit: 1},"
        " notify: {users: [$user_id], template: t, channels: [log]}}\n",
        service,
    )
    await hooks(refusal(user_id="alice"))
    await hooks(refusal(user_id="bob", tier="premium"))
    await hooks(UrlCreated(**dict.fromkeys(payload_fields(UrlCreated), None)))  # type: ignore[arg-type]
    assert [request.user_ids for request, _ in service.created] == [("alice",)]
    assert refusal().data == {
        "user_id": "u1",
        "identity_kind": "api_key",
        "tier": "free",
        "rule": "api",
        "path": "/x",
        "limit": 1,
        "window": "1m",
        "retry_after": 60.0,
    }


async def test_after_a_reload_one_pipeline_listens_and_an_event_notifies_once(tmp_path: Path) -> None:
    async with webhook_receiver() as receiver:
        engine = f'engine: {{database: {{url: "sqlite:///{tmp_path}/g.db"}}}}\n'
        unthrottled = RATE_LIMITED.replace('    throttle: "1/10m per user_id"\n', "")  # a throttle would hide a double
        assert unthrottled != RATE_LIMITED
        text = gateway_yaml(engine, channels=webhook_channel(receiver.url), extra=unthrottled, anonymous_tier="free")
        path = tmp_path / "gateway.yaml"
        path.write_text(text)
        app = create_app(config_path=path)
        await app.startup()
        try:
            assert await app.reload() and await app.reload()  # two swaps: three pipelines have existed
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
                statuses = [(await client.get("/api/v1/urls/nope")).status_code for _ in range(2)]
            assert statuses == [404, 429]

            async def notified() -> bool:
                return len(receiver.requests) >= 2

            assert await eventually(notified, 5)
            await asyncio.sleep(0.5)  # time for a doubled notification to arrive
        finally:
            await app.shutdown()
    assert len(receiver.requests) == 2  # ops and the limited user, once each
