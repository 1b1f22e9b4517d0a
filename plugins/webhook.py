"""HTTP POST of a JSON body, signed as the Standard Webhooks spec says (standardwebhooks.com).

Headers: `webhook-id` (stable across retries, so receivers drop duplicates), `webhook-timestamp` (Unix seconds)
and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the base64 part of
a `whsec_...` secret. A 2xx counts as delivered; 408, 425, 429, 5xx and network errors are retried; any other
status (a redirect included: redirects are never followed) is permanent. A 429 or 503 with Retry-After (seconds or
an HTTP-date) is retried no sooner than it asks, up to a day.

A URL from a user's preferences (`webhook_url`) is a destination the user chose, so it may only reach public
addresses (gateway.notify.destinations: checked when stored and again, on the resolved address, when sending),
has a circuit breaker of its own, and its errors never carry network details. `allow_networks` lets an operator
open internal networks to user URLs. The channel's configured `url` is the operator's and is trusted.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import Field, field_validator

from gateway.notify.channel import (
    Channel,
    DestinationError,
    Duration,
    HttpSupport,
    Message,
    Options,
    PermanentError,
    PublicAddresses,
    RetryableError,
    SendResult,
    networks,
    origin,
    parse_options,
    redact_url,
)

SECRET_PREFIX = "whsec_"
RETRYABLE_STATUS = frozenset({408, 425, 429})


class WebhookOptions(Options):
    #: Where messages go when the user's preferences name no webhook_url.
    url: str | None = None
    #: whsec_<base64 key>, as the Standard Webhooks libraries generate it.
    secret: str = Field(min_length=len(SECRET_PREFIX) + 4)
    connect_timeout: Duration = 2.0
    timeout: Duration = 10.0
    headers: dict[str, str] = {}
    #: Networks users' own webhook URLs may reach besides public addresses (e.g. ["10.20.0.0/16"]).
    allow_networks: tuple[str, ...] = ()

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        networks(value)
        return value

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
        self.policy = PublicAddresses(networks(self.options.allow_networks))
        self._user_client: httpx.AsyncClient | None = None

    def default_address(self) -> str | None:
        return self.options.url

    def validate_address(self, address: str) -> None:
        self.policy.check_url(address)

    def destination(self, message: Message) -> str | None:
        url = self._url(message)
        if url == self.options.url:
            return None
        return origin(url)

    def _url(self, message: Message) -> str:
        url = message.to[0] if message.to else self.options.url
        if not url:
            raise PermanentError("no webhook URL")
        return url

    async def send(self, message: Message) -> SendResult:
        url = self._url(message)
        own = url != self.options.url
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
            if own:
                response = await self._post_to_user_url(url, body, headers)
            else:
                response = await self._http().post(url, content=body, headers=headers)
        except DestinationError as exc:
            raise PermanentError(f"the webhook URL is refused: {exc}") from exc
        except httpx.HTTPError as exc:
            if own:  # the user sees this: no addresses or ports, whatever the exception says
                raise RetryableError(f"the webhook URL could not be reached ({type(exc).__name__})") from exc
            raise RetryableError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(provider_id=message.id, delivered=True)
        detail = f"HTTP {status} from {redact_url(url)}"
        if status in RETRYABLE_STATUS or status >= 500:
            raise RetryableError(detail, retry_after=retry_after(response.headers.get("retry-after")))
        raise PermanentError(detail)

    async def _post_to_user_url(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        pinned = await self.policy.pin(url)
        if self._user_client is None:
            # No kept-alive connections: a connection is made for, and verified against, one name only.
            self._user_client = httpx.AsyncClient(
                timeout=self.http_timeout(),
                follow_redirects=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        extensions = {"sni_hostname": pinned.sni_hostname} if pinned.sni_hostname else None
        return await self._user_client.post(
            pinned.url, content=body, headers={**headers, "host": pinned.host_header}, extensions=extensions
        )

    def http_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.options.timeout, connect=self.options.connect_timeout)

    async def aclose(self) -> None:
        await super().aclose()
        if self._user_client is not None:
            await self._user_client.aclose()
            self._user_client = None


def retry_after(value: str | None) -> float | None:
    """A Retry-After header (RFC 9110 10.2.3: delay-seconds or an HTTP-date) in seconds from now; None if absent
    or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - time.time())
