"""The notification API on a running gateway: validation, idempotency, preferences, routing, receipts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.notify.harness import (
    ADMIN_KEY,
    API_KEY,
    delivery,
    gateway_yaml,
    notify,
    put_preferences,
    settings,
    wait_for_status,
    webhook_channel,
)
from tests.notify.peers import provider_server, smtp_server, webhook_receiver
from tests.proxy_fixtures import serve_gateway

WELCOME: dict[str, Any] = {
    "user_ids": ["alice"],
    "template_id": "welcome",
    "channels": ["webhook"],
    "data": {"name": "Alice"},
}


async def test_creating_needs_an_api_key_and_valid_fields(sqlite_yaml: str) -> None:
    async with webhook_receiver() as receiver:
        config = settings(gateway_yaml(sqlite_yaml, channels=webhook_channel(receiver.url)))
        async with serve_gateway(config) as base, httpx.AsyncClient() as client:
            anonymous = await client.post(f"{base}/api/v1/notifications", json=WELCOME)
            assert anonymous.status_code == 403 and anonymous.json()["error"] == "forbidden"
            assert (await notify(client, base, WELCOME, key="no-such-key-at-all")).status_code == 401
            cases = {
                "user_ids": {**WELCOME, "user_ids": []},
                "channels": {**WELCOME, "channels": ["pigeon"]},
                "priority": {**WELCOME, "priority": "urgent"},
                "scheduled_at": {**WELCOME, "scheduled_at": "next tuesday"},
                "template_id": {**WELCOME, "template_id": "nope"},
                "data": {**WELCOME, "data": [1, 2]},
            }
            for field, body in cases.items():
                response = await notify(client, base, body)
                assert response.status_code == 400, (field, response.text)
                assert response.json()["field"] == field and response.json()["request_id"]
    assert receiver.requests == []


async def test_a_missing_template_variable_is_a_400_naming_it_and_nothing_is_sent(sqlite_yaml: str) -> None:
    async with webhook_receiver() as receiver:
        config = settings(gateway_yaml(sqlite_yaml, channels=webhook_channel(receiver.url)))
        async with serve_gateway(config) as base, httpx.AsyncClient() as client:
            body = {**WELCOME, "template_id": "order_shipped", "data": {"order_id": 42}}
            response = await notify(client, base, body)
            assert response.status_code == 400
            error = response.json()
            assert error["error"] == "template_error"
            assert error["variables"] == ["tracking_url"] and error["template_id"] == "order_shipped"
            assert "tracking_url" in error["detail"] and "order_shipped" in error["detail"]
            fixed = await notify(client, base, {**body, "data": {"order_id": 42, "tracking_url": "https://t/1"}})
            await wait_for_status(client, base, fixed.json()["notification_id"], "delivered")
    assert [request.json["data"]["subject"] for request in receiver.requests] == ["Order 42 shipped"]


async def test_an_idempotency_key_replays_the_first_answer_and_sends_once(engine_yaml: str) -> None:
    async with webhook_receiver() as receiver:
        config = settings(gateway_yaml(engine_yaml, channels=webhook_channel(receiver.url)))
        async with serve_gateway(config) as base, httpx.AsyncClient() as client:
            first = await notify(client, base, WELCOME, idempotency_key="order-7")
            again = await notify(client, base, dict(reversed(WELCOME.items())), idempotency_key="order-7")
            assert first.status_code == again.status_code == 202
            assert again.content == first.content
            assert again.headers["idempotent-replay"] == "true" and "idempotent-replay" not in first.headers
            changed = await notify(client, base, {**WELCOME, "data": {"name": "Bob"}}, idempotency_key="order-7")
            assert changed.status_code == 422 and changed.json()["error"] == "idempotency_key_reused"
            # Keys belong to their caller: another API key may use the same one.
            other = await notify(client, base, WELCOME, key=ADMIN_KEY, idempotency_key="order-7")
            assert other.status_code == 202 and other.json() != first.json()
            # A burst of retries racing each other: one notification, every 202 the same answer.
            burst = await asyncio.gather(*(notify(client, base, WELCOME, idempotency_key="race") for _ in range(6)))
            accepted = {r.json()["notification_id"] for r in burst if r.status_code == 202}
            assert len(accepted) == 1 and all(r.status_code in (202, 409) for r in burst)
            for notification_id in (first.json()["notification_id"], other.json()["notification_id"], *accepted):
                await wait_for_status(client, base, notification_id, "delivered")
    assert len(receiver.requests) == 3


async def test_preferences_are_validated_field_by_field_and_only_by_their_owner(sqlite_yaml: str) -> None:
    async with webhook_receiver() as receiver:
        channels = webhook_channel(receiver.url) + "log: {plugin: log}\n"
        config = settings(gateway_yaml(sqlite_yaml, channels=channels))
        async with serve_gateway(config) as base, httpx.AsyncClient() as client:
            good = {"channels": ["webhook", "log"], "primary_channel": "log", "email": "a@example.com"}
            bad = {
                "channels": {**good, "channels": ["fax"]},
                "primary_channel": {**good, "primary_channel": "sms"},
                "digest_channel": {**good, "digest_channel": 3},
                "email": {**good, "email": "not-an-address"},
                "phone": {**good, "phone": "555-0100"},
                "device_tokens": {**good, "device_tokens": "abc"},
                "webhook_url": {**good, "webhook_url": "ftp://x"},
                "colour": {**good, "colour": "blue"},
            }
            for field, body in bad.items():
                response = await put_preferences(client, base, "alice", body)
                assert response.status_code == 400 and response.json()["field"] == field, (field, response.text)
            url = f"{base}/api/v1/users/alice/preferences"
            default = (await client.get(url, headers={"X-API-Key": ADMIN_KEY})).json()
            assert default["stored"] is False and default["channels"] == ["webhook", "log"]
            assert (await put_preferences(client, base, "alice", good)).status_code == 200
            stored = (await client.get(url, headers={"X-API-Key": ADMIN_KEY})).json()
            assert (
                stored["stored"] is True and stored["primary_channel"] == "log" and stored["email"] == "a@example.com"
            )
            assert (await client.get(url, headers={"X-API-Key": API_KEY})).status_code == 403  # "app" is not alice
            own = await client.put(f"{base}/api/v1/users/app/preferences", json=good, headers={"X-API-Key": API_KEY})
            assert own.status_code == 200


async def test_routing_follows_priority_and_preferences_and_skips_are_not_failures(sqlite_yaml: str) -> None:
    with smtp_server() as smtp:
        async with webhook_receiver() as receiver:
            channels = (
                webhook_channel(receiver.url)
                + "log: {plugin: log}\n"
                + f"email: {{plugin: email, host: 127.0.0.1, port: {smtp.port}, sender: gw@example.com}}\n"
            )
            config = settings(gateway_yaml(sqlite_yaml, channels=channels))
            async with serve_gateway(config) as base, httpx.AsyncClient() as client:
                await put_preferences(client, base, "alice", {"channels": ["webhook", "log"], "primary_channel": "log"})
                await put_preferences(client, base, "bob", {"channels": ["log"]})
                await put_preferences(client, base, "carol", {"channels": ["email", "log"]})
                await put_preferences(client, base, "erin", {"channels": ["email"], "email": "erin@example.com"})
                body = {**WELCOME, "user_ids": ["alice", "bob", "carol", "dave", "erin"],
                        "channels": ["webhook", "email", "log"]}  # fmt: skip
                normal = await notify(client, base, body)
                found = await wait_for_status(client, base, normal.json()["notification_id"], {"delivered", "sent"})
                high = await notify(client, base, {**body, "user_ids": ["alice"], "priority": "high"})
                both = await wait_for_status(client, base, high.json()["notification_id"], "delivered")
                erin = await notify(client, base, {**body, "user_ids": ["erin"]})
                mailed = await wait_for_status(client, base, erin.json()["notification_id"], "sent")

    routed = {(entry["user_id"], entry["channel"]): (entry["status"], entry["reason"]) for entry in found["recipients"]}
    assert routed == {
        ("alice", "log"): ("delivered", None),  # normal: the primary channel only
        ("alice", "email"): ("skipped", "opted_out"),
        ("bob", "webhook"): ("skipped", "opted_out"),
        ("bob", "email"): ("skipped", "opted_out"),
        ("bob", "log"): ("delivered", None),
        ("carol", "webhook"): ("skipped", "opted_out"),
        ("carol", "email"): ("skipped", "no_address"),
        ("carol", "log"): ("delivered", None),
        ("dave", "email"): ("skipped", "no_address"),  # no preferences: every channel, but no address
        ("dave", "webhook"): ("delivered", None),  # no primary: the first requested channel
        ("erin", "webhook"): ("skipped", "opted_out"),
        ("erin", "log"): ("skipped", "opted_out"),
        ("erin", "email"): ("sent", None),  # SMTP acceptance is "sent"; only a receipt says delivered
    }
    assert found["status"] == "completed"  # skipped recipients never make a notification fail
    assert found["summary"]["skipped"] == 8 and found["summary"]["failed"] == 0
    high_routes = {entry["channel"]: entry["status"] for entry in both["recipients"] if entry["user_id"] == "alice"}
    assert high_routes == {"webhook": "delivered", "log": "delivered", "email": "skipped"}  # high: every channel
    assert delivery(mailed, "erin", "email")["provider_id"].endswith("@example.com>")
    assert [m.rcpt_tos for m in smtp.mailbox.messages] == [["erin@example.com"], ["erin@example.com"]]
    assert b"Subject: Hi Alice" in smtp.mailbox.messages[0].content
    assert len(receiver.requests) == 2  # dave (normal) and alice (high)


async def test_sms_receipts_need_twilios_signature_and_move_the_status_forward(sqlite_yaml: str) -> None:
    async with provider_server() as provider:
        channels = (
            f"sms: {{plugin: sms, base_url: '{provider.url}', account_sid: {provider.account_sid}, "
            f"auth_token: {provider.auth_token}, from: '+15005550006'}}\n"
        )
        config = settings(gateway_yaml(sqlite_yaml, channels=channels))
        async with serve_gateway(config) as base, httpx.AsyncClient() as client:
            await put_preferences(client, base, "alice", {"channels": ["sms"], "phone": "+14155550100"})
            accepted = await notify(client, base, {**WELCOME, "channels": ["sms"]})
            notification_id = accepted.json()["notification_id"]
            sent = delivery(await wait_for_status(client, base, notification_id, "sent"), "alice", "sms")
            assert provider.sms[0]["To"] == "+14155550100" and provider.sms[0]["Body"] == "Welcome, Alice!"
            callback = provider.sms[0]["StatusCallback"]
            assert callback == "http://gw.test/api/v1/notifications/receipts/sms"

            form = {"MessageSid": sent["provider_id"], "MessageStatus": "delivered", "AccountSid": "AC123"}
            receipts = f"{base}/api/v1/notifications/receipts/sms"
            form_type = {"content-type": "application/x-www-form-urlencoded"}
            forged = await client.post(receipts, content=urlencode(form), headers=form_type)
            assert forged.status_code == 403
            # Twilio's scheme, computed here independently: base64 HMAC-SHA1 of the URL and the sorted fields.
            signed = callback + "".join(key + form[key] for key in sorted(form))
            digest = hmac.new(provider.auth_token.encode(), signed.encode(), hashlib.sha1).digest()
            headers = {**form_type, "X-Twilio-Signature": base64.b64encode(digest).decode()}
            applied = await client.post(receipts, content=urlencode(form), headers=headers)
            assert applied.status_code == 200 and applied.json() == {"updated": 1}
            await wait_for_status(client, base, notification_id, "delivered")

            opened = {"provider_id": sent["provider_id"], "status": "opened"}
            assert (await client.post(receipts, json=opened, headers={"X-API-Key": API_KEY})).status_code == 403
            admin = await client.post(receipts, json=opened, headers={"X-API-Key": ADMIN_KEY})
            assert admin.json() == {"updated": 1}
            await wait_for_status(client, base, notification_id, "opened")
            backwards = {"provider_id": sent["provider_id"], "status": "delivered"}
            assert (await client.post(receipts, json=backwards, headers={"X-API-Key": ADMIN_KEY})).json() == {
                "updated": 0
            }


async def test_a_users_notifications_newest_first_by_page_and_filter(engine_yaml: str) -> None:
    text = gateway_yaml(engine_yaml, channels="log: {plugin: log}\n")
    async with serve_gateway(settings(text)) as base, httpx.AsyncClient() as client:
        ids = []
        for name in ("one", "two", "three"):
            body = {"user_ids": ["alice", "bob"], "template_id": "welcome", "channels": ["log"], "data": {"name": name}}
            ids.append((await notify(client, base, body)).json()["notification_id"])
            await asyncio.sleep(0.01)
        later = {"user_ids": ["bob"], "template_id": "welcome", "channels": ["log"], "data": {"name": "b"}}
        await notify(client, base, later)
        for notification_id in ids:
            await wait_for_status(client, base, notification_id, "delivered")
        admin = {"X-API-Key": ADMIN_KEY}
        url = f"{base}/api/v1/users/alice/notifications"
        first = (await client.get(url, params={"limit": "2"}, headers=admin)).json()
        second = (await client.get(url, params={"limit": "2", "cursor": first["next_cursor"]}, headers=admin)).json()
        listed = [entry["notification_id"] for entry in first["notifications"] + second["notifications"]]
        assert listed == ids[::-1] and second["next_cursor"] is None
        entry = first["notifications"][0]
        assert entry["template_id"] == "welcome" and [d["channel"] for d in entry["deliveries"]] == ["log"]
        assert {d["user_id"] for e in first["notifications"] for d in e["deliveries"]} == {"alice"}
        delivered = (await client.get(url, params={"status": "delivered"}, headers=admin)).json()
        assert len(delivered["notifications"]) == 3
        pending = (await client.get(url, params={"status": "pending,failed"}, headers=admin)).json()
        assert pending["notifications"] == []
        since = entry["created_at"]
        recent = (await client.get(url, params={"from": since}, headers=admin)).json()
        assert [e["notification_id"] for e in recent["notifications"]] == [ids[-1]]
        stranger = await client.get(url, headers={"X-API-Key": API_KEY})
        assert stranger.status_code == 403
        bad = await client.get(url, params={"status": "lost"}, headers=admin)
        assert bad.status_code == 400 and bad.json()["field"] == "status"
        no_offset = await client.get(url, params={"from": "2030-01-01T00:00:00"}, headers=admin)
        assert no_offset.status_code == 400 and no_offset.json()["field"] == "from"
