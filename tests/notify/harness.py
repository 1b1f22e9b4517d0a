"""Building a gateway (or a bare NotificationService) for the notification tests, and talking to its API."""

from __future__ import annotations

import base64
import contextlib
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from gateway.config import Settings
from gateway.notify.channel import Channel, Message, SendResult
from gateway.notify.commands import notification_service
from gateway.notify.service import NotificationService
from gateway.settings import parse_settings
from tests.proxy_fixtures import eventually

API_KEY = "app-key-0001"
ADMIN_KEY = "admin-key-0001"
SECRET_KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(SECRET_KEY).decode()
FAST_WORKERS = "{lease: 1s, poll_interval: 50ms, tick_interval: 50ms, shutdown_grace: 1s}"
TEMPLATES = """\
welcome:
  default: {subject: "Hi {{ name }}", body: "Welcome, {{ name }}!"}
order_shipped:
  default: {subject: "Order {{ order_id }} shipped", body: "Track it: {{ tracking_url }}"}
limit_hit:
  default: {subject: "{{ user_id }} hit {{ rule }}", body: "{{ user_id }} ({{ tier }}) was refused on {{ path }}"}
circuit:
  default: {body: "breaker {{ breaker }} is open ({{ event.type }})"}
"""


def gateway_yaml(
    engine: str,
    *,
    channels: str,
    retries: str = "{max_attempts: 3, base_delay: 10ms, max_delay: 50ms}",
    workers: str = FAST_WORKERS,
    extra: str = "",
    notifications: str = "",
    anonymous_tier: str = "anonymous",
) -> str:
    """A whole config: `engine` is an `engine:` section; `channels` the YAML under notifications.channels."""
    return (
        "server: {access_log: false, drain_timeout: 1s, public_url: 'http://gw.test'}\n"
        + engine
        + f"identities:\n  anonymous_tier: {anonymous_tier}\n  api_keys:\n"
        + f"    - {{key: {API_KEY}, user_id: app, tier: premium}}\n"
        + f"    - {{key: {ADMIN_KEY}, user_id: root, tier: premium, admin: true}}\n"
        + "notifications:\n  channels:\n"
        + textwrap.indent(textwrap.dedent(channels).strip("\n"), "    ")
        + "\n  templates:\n"
        + textwrap.indent(TEMPLATES, "    ")
        + f"  retries: {retries}\n  workers: {workers}\n"
        + textwrap.indent(textwrap.dedent(notifications).strip("\n"), "  ")
        + "\n"
        + textwrap.dedent(extra)
    )


def webhook_channel(url: str, **options: Any) -> str:
    extra = "".join(f", {key}: {value}" for key, value in options.items())
    return f"webhook: {{plugin: webhook, url: '{url}', secret: '{SECRET}', timeout: 2s{extra}}}\n"


def settings(text: str) -> Settings:
    return parse_settings(text, environ={})


@contextlib.asynccontextmanager
async def bare_service(text: str, *, workers: bool = False) -> AsyncIterator[NotificationService]:
    """A NotificationService on its own engines and event bus, exactly as `gateway worker` runs it."""
    async with notification_service(settings(text), workers=workers) as service:
        yield service


async def notify(
    client: httpx.AsyncClient,
    base_url: str,
    body: dict[str, Any],
    *,
    key: str = API_KEY,
    idempotency_key: str | None = None,
) -> httpx.Response:
    headers = {"X-API-Key": key}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return await client.post(f"{base_url}/api/v1/notifications", json=body, headers=headers)


async def status_of(client: httpx.AsyncClient, base_url: str, notification_id: str) -> dict[str, Any]:
    response = await client.get(
        f"{base_url}/api/v1/notifications/{notification_id}/status", headers={"X-API-Key": ADMIN_KEY}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_for_status(
    client: httpx.AsyncClient, base_url: str, notification_id: str, wanted: str | set[str], timeout: float = 10.0
) -> dict[str, Any]:
    """Poll the status API until every non-skipped delivery has status `wanted` (or one of them)."""
    accepted = {wanted} if isinstance(wanted, str) else wanted

    async def check() -> dict[str, Any] | None:
        found = await status_of(client, base_url, notification_id)
        statuses = [entry["status"] for entry in found["recipients"] if entry["status"] != "skipped"]
        return found if statuses and all(s in accepted for s in statuses) else None

    result: dict[str, Any] | None = await eventually(check, timeout)
    if result is None:
        raise AssertionError(f"not all {wanted}: {await status_of(client, base_url, notification_id)}")
    return result


def delivery(found: dict[str, Any], user_id: str, channel: str) -> dict[str, Any]:
    for entry in found["recipients"]:
        if entry["user_id"] == user_id and entry["channel"] == channel:
            return dict(entry)
    raise KeyError((user_id, channel))


async def put_preferences(client: httpx.AsyncClient, base_url: str, user_id: str, body: Any) -> httpx.Response:
    return await client.put(
        f"{base_url}/api/v1/users/{user_id}/preferences", json=body, headers={"X-API-Key": ADMIN_KEY}
    )


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


class Collecting(Channel):
    """A channel plugin defined outside the package, loaded by dotted path: it keeps what it is sent."""

    sent: list[Message] = []

    async def send(self, message: Message) -> SendResult:
        self.sent.append(message)
        return SendResult(delivered=True)
