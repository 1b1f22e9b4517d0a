"""SMS through a Twilio-compatible REST API: POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json.

The form carries To, From (or MessagingServiceSid), Body and a StatusCallback URL; Twilio then posts
MessageSid and MessageStatus to `POST /api/v1/notifications/receipts/{channel}`, signed with
X-Twilio-Signature (base64 HMAC-SHA1 of the callback URL followed by the sorted form fields).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import Field, model_validator

from gateway.notify.channel import (
    Channel,
    Duration,
    HttpSupport,
    Message,
    Options,
    PermanentError,
    Receipt,
    ReceiptStatus,
    ReceiptSupport,
    RetryableError,
    SendResult,
    parse_options,
)

RECEIPTS = {"sent": "sent", "delivered": "delivered", "read": "opened", "failed": "failed", "undelivered": "failed"}


class SmsOptions(Options):
    base_url: str = "https://api.twilio.com"
    account_sid: str = Field(min_length=1)
    auth_token: str = Field(min_length=1)
    sender: str | None = Field(None, alias="from")
    messaging_service_sid: str | None = None
    #: Where the provider posts status updates; default: the gateway's own receipts endpoint under public_url.
    status_callback: str | None = None
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _sender(self) -> SmsOptions:
        if (self.sender is None) == (self.messaging_service_sid is None):
            raise ValueError("give exactly one of 'from' and 'messaging_service_sid'")
        return self


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    signed = url + "".join(key + params[key] for key in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()).decode()


class SmsChannel(HttpSupport, Channel, ReceiptSupport):
    address_field = "phone"

    def __init__(self, name: str, options: Mapping[str, Any], *, public_url: str = "") -> None:
        super().__init__(name, options, public_url=public_url)
        self.options = parse_options(SmsOptions, options)
        base = public_url.rstrip("/")
        self.callback_url = self.options.status_callback or (
            f"{base}/api/v1/notifications/receipts/{name}" if base else None
        )

    async def send(self, message: Message) -> SendResult:
        if not message.to:
            raise PermanentError("no phone number")
        options = self.options
        form = {"To": message.to[0], "Body": message.body}
        if options.sender is not None:
            form["From"] = options.sender
        if options.messaging_service_sid is not None:
            form["MessagingServiceSid"] = options.messaging_service_sid
        if self.callback_url:
            form["StatusCallback"] = self.callback_url
        url = f"{options.base_url.rstrip('/')}/2010-04-01/Accounts/{options.account_sid}/Messages.json"
        try:
            response = await self._http().post(url, data=form, auth=(options.account_sid, options.auth_token))
        except httpx.HTTPError as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code in (200, 201):
            return SendResult(provider_id=str(response.json().get("sid") or "") or None)
        detail = f"HTTP {response.status_code}: {response.text[:200]}"
        # 401/403 mean the account or token is wrong: the channel is broken, not the message.
        if response.status_code in (401, 403, 429) or response.status_code >= 500:
            raise RetryableError(detail)
        raise PermanentError(detail)

    def verify_receipt(self, url: str, headers: Mapping[str, str], params: Mapping[str, str]) -> bool:
        given = headers.get("x-twilio-signature", "")
        expected = twilio_signature(self.options.auth_token, self.callback_url or url, params)
        return bool(given) and hmac.compare_digest(given, expected)

    def parse_receipt(self, params: Mapping[str, str]) -> Receipt | None:
        sid, status = params.get("MessageSid"), RECEIPTS.get(params.get("MessageStatus", ""))
        if not sid or status is None:
            return None
        code = params.get("ErrorCode")
        receipt_status: ReceiptStatus = status  # type: ignore[assignment]
        return Receipt(sid, receipt_status, f"provider error {code}" if code else None)

    def http_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.options.timeout)
