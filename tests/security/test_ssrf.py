"""Users' webhook URLs cannot reach inside (SSRF), one user's failures stay theirs, and secrets stay out of sight."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config.notifications import ChannelSettings
from gateway.notify.channel import Message, PermanentError, RetryableError, load_channel
from tests.notify.harness import (
    ADMIN_KEY,
    SECRET,
    delivery,
    gateway_yaml,
    notify,
    put_preferences,
    settings,
    status_of,
    wait_for_status,
    webhook_channel,
)
from tests.notify.peers import webhook_receiver
from tests.proxy_fixtures import metric, scrape, serve_gateway
from tests.services import free_port

OPENED = "gateway_notify_destination_breaker_opened_total"
WELCOME = {"template_id": "welcome", "channels": ["webhook"], "data": {"name": "A"}, "priority": "high"}


def engine(tmp_path: Path) -> str:
    return f'engine: {{database: {{url: "sqlite:///{tmp_path}/gw.db"}}}}\n'


INTERNAL = [
    "http://localhost:9000/hook",
    "http://app.localhost/hook",
    "http://127.0.0.1/hook",
    "http://127.1/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://0177.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://[64:ff9b::a00:1]/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    "http://224.0.0.1/hook",
    "http://255.255.255.255/hook",
]
MALFORMED = [
    "ftp://example.com/hook",
    "http:///hook",
    "http://user:secret@example.com/hook",
    "https://example.com/" + "x" * 2100,
    "https://example.com/a b",
    "https://example.com/\nx",
    "https://example.com:0/",
    "https://example.com:99999/",
]


async def test_a_users_webhook_url_may_not_point_inside_in_any_spelling(tmp_path: Path) -> None:
    config = settings(gateway_yaml(engine(tmp_path), channels=webhook_channel("http://127.0.0.1:9/ops")))
    async with serve_gateway(config) as base, httpx.AsyncClient() as client:
        answers = {url: await put_preferences(client, base, "mallory", {"channels": ["webhook"], "webhook_url": url})
                   for url in INTERNAL + MALFORMED}  # fmt: skip
        public = await put_preferences(
            client, base, "alice", {"channels": ["webhook"], "webhook_url": "https://hooks.example.com/in?t=1"}
        )

    refused = {url: (r.status_code, r.json().get("field")) for url, r in answers.items()}
    assert refused == dict.fromkeys(INTERNAL + MALFORMED, (400, "webhook_url"))
    assert public.status_code == 200


async def test_an_operator_can_open_internal_networks_to_users() -> None:
    channel = load_channel(
        "webhook",
        ChannelSettings.model_validate({"plugin": "webhook", "secret": SECRET, "allow_networks": ["127.0.0.0/8"]}),
    )
    channel.validate_address("http://127.0.0.1:9100/hook")
    with pytest.raises(ValueError, match="internal"):
        channel.validate_address("http://10.0.0.1/hook")
    await channel.aclose()


def _message(url: str) -> Message:
    return Message(id="msg_1", channel="webhook", user_id="mallory", to=(url,), subject="s", body="b")


def _webhook(**options: Any) -> Any:
    return load_channel("webhook", ChannelSettings.model_validate({"plugin": "webhook", "secret": SECRET, **options}))


async def test_the_resolved_address_is_checked_when_sending_so_dns_rebinding_gains_nothing() -> None:
    async with webhook_receiver() as receiver:
        port = int(receiver.url.split(":")[2].split("/")[0])
        channel = _webhook()
        url = f"http://rebind.example.com:{port}/hook"
        channel.validate_address(url)  # a public name when stored: nothing to refuse yet
        # What the name resolves to is the one part stood in for: no resolver here can be pointed at will.
        for answer in (["127.0.0.1"], ["93.184.216.34", "127.0.0.1"], ["::ffff:10.0.0.1"]):

            async def resolve(host: str, port: int, answer: list[str] = answer) -> list[str]:
                return answer

            channel.policy.resolver = resolve
            with pytest.raises(PermanentError, match="internal"):
                await channel.send(_message(url))
        await channel.aclose()
    assert receiver.requests == []


async def test_the_checked_address_is_the_one_connected_to() -> None:
    async with webhook_receiver() as receiver:
        port = int(receiver.url.split(":")[2].split("/")[0])
        channel = _webhook(allow_networks=["127.0.0.0/8"])

        async def resolve(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        channel.policy.resolver = resolve
        result = await channel.send(_message(f"http://receiver.example.com:{port}/hook?k=v"))
        await channel.aclose()
    assert result.delivered
    assert receiver.requests[0].headers["host"] == f"receiver.example.com:{port}"


async def test_redirects_are_never_followed() -> None:
    async with webhook_receiver() as internal:
        inner = internal.url

        async def redirect(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 307, "headers": [(b"location", inner.encode())]})
            await send({"type": "http.response.body", "body": b""})

        from tests.notify.peers import serve_asgi

        async with serve_asgi(redirect) as outer:
            channel = _webhook(allow_networks=["127.0.0.0/8"])
            with pytest.raises(PermanentError, match="HTTP 307"):
                await channel.send(_message(f"{outer}/hook"))
            await channel.aclose()
    assert internal.requests == []


async def test_a_delivery_error_shows_no_network_details() -> None:
    port = free_port()
    channel = _webhook(allow_networks=["127.0.0.0/8"], connect_timeout="500ms")
    with pytest.raises(RetryableError) as caught:
        await channel.send(_message(f"http://127.0.0.1:{port}/hook"))
    await channel.aclose()
    text = str(caught.value)
    assert "127.0.0.1" not in text and str(port) not in text and "Errno" not in text


async def test_one_users_dead_webhook_does_not_hold_back_everyone_elses(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/gone"
    async with webhook_receiver() as receiver:
        channels = webhook_channel(
            receiver.url, allow_networks='["127.0.0.0/8"]', breaker="{failures: 2, window: 30s, cooldown: 30s}",
            connect_timeout="200ms",
        )  # fmt: skip
        text = gateway_yaml(engine(tmp_path), channels=channels, retries="{max_attempts: 5, base_delay: 10ms}")
        async with serve_gateway(settings(text)) as base, httpx.AsyncClient() as client:
            await put_preferences(client, base, "mallory", {"channels": ["webhook"], "webhook_url": dead})
            opened_before = metric(await scrape(client, base), OPENED, channel="webhook")
            bad = [await notify(client, base, {**WELCOME, "user_ids": ["mallory"]}) for _ in range(5)]
            await asyncio.sleep(1.0)  # mallory's endpoint fails: its own breaker opens
            good = [await notify(client, base, {**WELCOME, "user_ids": [f"user{i}"]}) for i in range(5)]
            for answer in good:
                await wait_for_status(client, base, answer.json()["notification_id"], "delivered", timeout=5)
            text_metrics = await scrape(client, base)
            stuck = await status_of(client, base, bad[-1].json()["notification_id"])

    # Delivered within seconds: the channel's breaker (30 s cooldown) never opened for mallory's failures.
    assert len(receiver.requests) == 5
    assert metric(text_metrics, OPENED, channel="webhook") > opened_before
    assert delivery(stuck, "mallory", "webhook")["status"] in ("retrying", "queued", "failed")


async def test_a_message_that_cannot_be_built_fails_alone(tmp_path: Path) -> None:
    async with webhook_receiver() as receiver:
        channels = webhook_channel(receiver.url, breaker="{failures: 1, window: 30s, cooldown: 30s}")
        async with serve_gateway(settings(gateway_yaml(engine(tmp_path), channels=channels))) as base:
            async with httpx.AsyncClient() as client:
                later = {**WELCOME, "user_ids": ["alice"], "scheduled_at": "2099-01-01T00:00:00Z"}
                broken = (await notify(client, base, later)).json()["notification_id"]
                # Its rendered text goes missing (a bad migration, a hand edit): this one message cannot be built.
                with sqlite3.connect(tmp_path / "gw.db") as db:
                    db.execute("UPDATE notify_notifications SET contents = '{}' WHERE id = ?", (broken,))
                    db.execute("UPDATE notify_queue SET visible_at = 0")
                await wait_for_status(client, base, broken, "failed", timeout=10)
                fine = (await notify(client, base, {**WELCOME, "user_ids": ["bob"]})).json()["notification_id"]
                await wait_for_status(client, base, fine, "delivered", timeout=5)
    # Delivered within seconds: with failures: 1, one failure counted against the channel would have opened it.
    assert len(receiver.requests) == 1


async def test_a_subject_with_a_line_break_is_refused_at_accept_time(tmp_path: Path) -> None:
    config = settings(gateway_yaml(engine(tmp_path), channels="log: {plugin: log}"))
    async with serve_gateway(config) as base, httpx.AsyncClient() as client:
        body = {"user_ids": ["a"], "template_id": "welcome", "channels": ["log"]}
        injected = await notify(client, base, {**body, "data": {"name": "x\r\nBcc: victim@example.com"}})
        fine = await notify(client, base, {**body, "data": {"name": "x"}})
    assert injected.status_code == 400
    assert injected.json()["error"] == "template_error" and "line break" in injected.json()["detail"]
    assert fine.status_code == 202


async def test_channel_urls_with_tokens_never_reach_a_status_the_dlq_or_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with webhook_receiver(lambda n: 500) as receiver:
        url = receiver.url.replace("http://", "http://ops:hunter2@") + "?token=SECRET-TOKEN"
        text = gateway_yaml(
            engine(tmp_path), channels=webhook_channel(url), retries="{max_attempts: 2, base_delay: 10ms}"
        )
        async with serve_gateway(settings(text)) as base, httpx.AsyncClient() as client:
            sent = (await notify(client, base, {**WELCOME, "user_ids": ["alice"]})).json()["notification_id"]
            found = await wait_for_status(client, base, sent, "failed")
            dlq = (await client.get(f"{base}/api/v1/notifications/dlq", headers={"X-API-Key": ADMIN_KEY})).text

    error = delivery(found, "alice", "webhook")["last_error"]
    assert "HTTP 500" in error
    # The gateway's own log (httpx's request log is kept at WARNING by `gateway run`: see gateway/cli.py).
    logged = "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("gateway"))
    assert "dead-lettered" in logged
    for secret in ("SECRET-TOKEN", "hunter2"):
        assert secret not in error and secret not in dlq and secret not in logged


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("email", "alice@example.com\n", id="email-trailing-newline"),
        pytest.param("email", "alice@example.com\nBcc: x@example.com", id="email-header"),
        pytest.param("email", "a@b", id="email-no-dot"),
        pytest.param("email", "a" * 250 + "@example.com", id="email-too-long"),
        pytest.param("phone", "+14155550100\n", id="phone-trailing-newline"),
        pytest.param("device_tokens", ["tok\nen"], id="token-control"),
    ],
)
async def test_addresses_are_validated_whole(tmp_path: Path, field: str, value: object) -> None:
    config = settings(gateway_yaml(engine(tmp_path), channels="log: {plugin: log}"))
    async with serve_gateway(config) as base, httpx.AsyncClient() as client:
        answer = await put_preferences(client, base, "alice", {"channels": ["log"], field: value})
    assert answer.status_code == 400 and answer.json()["field"] == field


async def test_public_addresses_policy_refuses_what_a_resolver_returns_inside() -> None:
    from gateway.notify.destinations import PublicAddresses

    async def internal(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    policy = PublicAddresses(resolver=internal)
    with pytest.raises(ValueError, match="internal"):
        await policy.pin("https://intranet.example.com/")
