"""Each channel plugin against a real peer on loopback, and the plugin loader."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import time
from typing import Any

import pytest

from gateway.config.notifications import ChannelSettings
from gateway.notify.channel import (
    Channel,
    Message,
    PermanentError,
    PluginError,
    RetryableError,
    SendResult,
    load_channel,
)
from tests.notify.harness import SECRET, SECRET_KEY, Collecting
from tests.notify.peers import provider_server, smtp_server, webhook_receiver
from tests.services import free_port

MESSAGE = Message(
    id="msg_abc123",
    channel="x",
    user_id="alice",
    to=(),
    subject="Hello",
    body="Hello, Alice!",
    notification_id="n1",
    template_id="welcome",
    data={"name": "Alice", "count": 3},
)


def channel(name: str, **options: Any) -> Channel:
    return load_channel(name, ChannelSettings.model_validate(options), public_url="http://gw.test")


def message(**changes: Any) -> Message:
    return dataclasses.replace(MESSAGE, **changes)


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """An independent check of the Standard Webhooks scheme: HMAC-SHA256 over "{id}.{timestamp}.{body}"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = headers["webhook-id"].encode() + b"." + headers["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [part.split(",", 1) for part in headers["webhook-signature"].split(" ")]
    return any(version == "v1" and hmac.compare_digest(value, expected) for version, value in given)


async def test_webhooks_carry_a_standard_webhooks_signature_that_verifies_independently() -> None:
    assert SECRET == "whsec_" + base64.b64encode(SECRET_KEY).decode()
    async with webhook_receiver() as receiver:
        webhook = channel("hooks", plugin="webhook", url=receiver.url, secret=SECRET)
        result = await webhook.send(message())
        await webhook.aclose()
    assert result == SendResult(provider_id="msg_abc123", delivered=True)
    request = receiver.requests[0]
    assert request.headers["webhook-id"] == "msg_abc123"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5
    assert verify_standard_webhook(SECRET, request.headers, request.body)
    tampered = request.body.replace(b"Alice", b"Mallory")
    assert not verify_standard_webhook(SECRET, request.headers, tampered)
    assert request.json == {
        "type": "notification",
        "timestamp": int(request.headers["webhook-timestamp"]),
        "data": {"user_id": "alice", "subject": "Hello", "body": "Hello, Alice!", "notification_id": "n1",
                 "template_id": "welcome", "priority": "normal", "data": {"name": "Alice", "count": 3}},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("status", "error"),
    [
        pytest.param(503, RetryableError, id="5xx-retry"),
        pytest.param(429, RetryableError, id="429-retry"),
        pytest.param(410, PermanentError, id="410-permanent"),
        pytest.param(400, PermanentError, id="400-permanent"),
    ],
)
async def test_webhook_errors_are_retryable_or_permanent_by_status(status: int, error: type[Exception]) -> None:
    async with webhook_receiver(lambda n: status) as receiver:
        webhook = channel("hooks", plugin="webhook", url=receiver.url, secret=SECRET)
        with pytest.raises(error, match=f"HTTP {status}"):
            await webhook.send(message())
        await webhook.aclose()


async def test_an_unreachable_webhook_is_retryable_and_a_users_own_url_wins() -> None:
    # The user's receiver is on loopback: the operator opens it to users' URLs (tests/security covers the refusal).
    webhook = channel(
        "hooks",
        plugin="webhook",
        url=f"http://127.0.0.1:{free_port()}/x",
        secret=SECRET,
        allow_networks=["127.0.0.0/8"],
    )
    with pytest.raises(RetryableError):
        await webhook.send(message())
    async with webhook_receiver() as receiver:
        await webhook.send(message(to=(receiver.url,)))
    await webhook.aclose()
    assert len(receiver.requests) == 1


async def test_email_goes_through_a_real_smtp_server() -> None:
    with smtp_server() as smtp:
        email = channel("email", plugin="email", host="127.0.0.1", port=smtp.port, sender="gw@example.com")
        result = await email.send(message(to=("alice@example.com",)))
    envelope = smtp.mailbox.messages[0]
    assert envelope.mail_from == "gw@example.com" and envelope.rcpt_tos == ["alice@example.com"]
    assert b"Subject: Hello" in envelope.content and b"Hello, Alice!" in envelope.content
    assert result.provider_id == "<msg_abc123@example.com>" and not result.delivered
    assert b"Message-ID: <msg_abc123@example.com>" in envelope.content


async def test_email_to_a_down_server_is_retryable() -> None:
    email = channel("email", plugin="email", host="127.0.0.1", port=free_port(), sender="gw@example.com", timeout=1)
    with pytest.raises(RetryableError):
        await email.send(message(to=("alice@example.com",)))


async def test_sms_speaks_twilios_messages_api() -> None:
    async with provider_server() as provider:
        sms = channel(
            "sms", plugin="sms", base_url=provider.url, account_sid="AC123", auth_token="twilio-token",
            **{"from": "+15005550006"},
        )  # fmt: skip
        result = await sms.send(message(to=("+14155550100",)))
        with pytest.raises(PermanentError, match="21211"):
            await sms.send(message(to=("+15005550001",)))
        wrong_token = channel(
            "sms", plugin="sms", base_url=provider.url, account_sid="AC123", auth_token="nope", **{"from": "+1500"}
        )
        with pytest.raises(RetryableError, match="401"):  # the channel is misconfigured, not the message
            await wrong_token.send(message(to=("+14155550100",)))
        await sms.aclose()
        await wrong_token.aclose()
    assert result.provider_id == "SM" + "1".zfill(32)
    assert provider.sms == [
        {"To": "+14155550100", "Body": "Hello, Alice!", "From": "+15005550006",
         "StatusCallback": "http://gw.test/api/v1/notifications/receipts/sms"}
    ]  # fmt: skip


async def test_push_speaks_fcm_v1_per_device_token() -> None:
    async with provider_server() as provider:
        push = channel("push", plugin="push", base_url=provider.url, project="demo", access_token="fcm-token")
        result = await push.send(message(to=("device-1", "unregistered", "device-2")))
        with pytest.raises(PermanentError, match="UNREGISTERED"):
            await push.send(message(to=("unregistered",)))
        await push.aclose()
    assert result.provider_id == "projects/demo/messages/1,projects/demo/messages/2"
    assert [p["token"] for p in provider.pushes] == ["device-1", "device-2"]
    assert provider.pushes[0]["notification"] == {"title": "Hello", "body": "Hello, Alice!"}
    assert provider.pushes[0]["data"] == {"message_id": "msg_abc123", "name": "Alice", "count": "3"}


async def test_plugins_load_by_short_name_or_dotted_path_and_refuse_bad_options() -> None:
    custom = channel("mine", plugin="tests.notify.harness:Collecting")
    assert isinstance(custom, Collecting)
    await custom.send(message())
    assert Collecting.sent[-1].id == "msg_abc123"
    with pytest.raises(PluginError, match="unknown plugin"):
        channel("x", plugin="carrier-pigeon")
    with pytest.raises(PluginError, match="cannot load"):
        channel("x", plugin="no.such.module:Thing")
    with pytest.raises(PluginError, match="not a gateway.notify.channel.Channel"):
        channel("x", plugin="tests.notify.harness:settings")
    with pytest.raises(PluginError) as caught:
        channel("x", plugin="webhook", url="http://h/", secret="plain-secret-value")
    assert caught.value.problems == [(("secret",), "must start with 'whsec_'")]
