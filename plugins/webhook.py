"""HTTP POST of a JSON body, signed as the Standard Webhooks spec says (standardwebhooks.com).

Headers: `webhook-id` (stable across retries, so receivers drop duplicates), `webhook-timestamp` (Unix seconds)
and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the base64 part of
a `whsec_...` secret. A 2xx counts as delivered; 408, 425, 429, 5xx and network errors are retried; any other
status is permanent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import Field, field_validator

from gateway.config.base import Model
from gateway.config.units import Duration
from gateway.notify.channel import (
    Channel,
    HttpSupport,
    Message,
    PermanentError,
    RetryableError,
    SendResult,
    parse_options,
)

SECRET_PREFIX = "whsec_"
RETRYABLE_STATUS = frozenset({408, 425, 429})


class WebhookOptions(Model):
    #: Where messages go when the user's preferences name no webhook_url.
    url: str | None = None
    #: whsec_<base64 key>, as the Standard Webhooks libraries generate it.
    secret: str = Field(min_length=len(SECRET_PREFIX) + 4)
    connect_timeout: Duration = 2.0
    timeout: Duration = 10.0
    headers: dict[str, str] = {}

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        signing_key(value)
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value


def signing_key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("must start with 'whsec_'")
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("the part after 'whsec_' must be base64") from None


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def payload(message: Message, timestamp: int) -> dict[str, Any]:
    data: dict[str, Any] = {"user_id": message.user_id, "subject": message.subject, "body": message.body}
    if message.is_digest:
        data.update(count=len(message.items), items=[dict(item) for item in message.items])
        kind = "notification.digest"
    else:
        data.update(
            notification_id=message.notification_id,
            template_id=message.template_id,
            priority=message.priority,
            data=dict(message.data),
        )
        kind = "notification"
    return {"type": kind, "timestamp": timestamp, "data": data}


class WebhookChannel(HttpSupport, Channel):
    address_field = "webhook_url"

    def __init__(self, name: str, options: Mapping[str, Any], *, public_url: str = "") -> None:
        super().__init__(name, options, public_url=public_url)
        self.options = parse_options(WebhookOptions, options)
        self._key = signing_key(self.options.secret)

    def default_address(self) -> str | None:
        return self.options.url

    async def send(self, message: Message) -> SendResult:
        url = message.to[0] if message.to else self.options.url
        if not url:
            raise PermanentError("no webhook URL")
        timestamp = int(time.time())
        body = json.dumps(payload(message, timestamp), separators=(",", ":")).encode()
        headers = {
            **self.options.headers,
            "content-type": "application/json",
            "webhook-id": message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, message.id, timestamp, body),
        }
        try:
            response = await self._http().post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(provider_id=message.id, delivered=True)
        detail = f"HTTP {status} from {url}"
        if status in RETRYABLE_STATUS or status >= 500:
            raise RetryableError(detail)
        raise PermanentError(detail)

    def http_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.options.timeout, connect=self.options.connect_timeout)
