"""Provider receipts: `POST /api/v1/notifications/receipts/{channel}` moves a sent delivery to delivered,
opened or failed (never backwards).

A channel with ReceiptSupport (sms: Twilio's status callback, form fields MessageSid and MessageStatus) verifies
the provider's signature and parses its fields. Any channel also takes a JSON body
{"provider_id", "status": "delivered"|"opened"|"failed", "error"?} from a caller holding an admin API key.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from starlette.requests import Request

from gateway.access import caller, is_admin
from gateway.exceptions import Forbidden, InvalidField, UnsupportedMediaType
from gateway.notify.channel import Channel, Receipt, ReceiptSupport
from gateway.request_body import is_json, parse_json

STATUSES = ("delivered", "opened", "failed")


NOT_SIGNED = "a receipt needs the provider's signature or an admin API key"


async def read_receipt(request: Request, channel: Channel, public_url: str) -> Receipt | None:
    """The receipt in the request, or None when it reports nothing that changes a status."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    admin = is_admin(caller(request))
    if content_type.startswith("application/x-www-form-urlencoded"):
        params = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        if not isinstance(channel, ReceiptSupport):
            raise InvalidField("channel", f"channel {channel.name!r} takes no provider callbacks")
        url = public_url.rstrip("/") + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if not (admin or channel.verify_receipt(url, _lower(request.headers), params)):
            raise Forbidden(NOT_SIGNED)
        return channel.parse_receipt(params)
    if not admin:
        raise Forbidden(NOT_SIGNED)
    if raw and not is_json(request):
        raise UnsupportedMediaType("a receipt is a form (the provider's callback) or JSON")
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidField("body", "the body must be a JSON object")
    provider_id, status, error = body.get("provider_id"), body.get("status"), body.get("error")
    if not isinstance(provider_id, str) or not provider_id:
        raise InvalidField("provider_id", "provider_id must be a non-empty string")
    if status not in STATUSES:
        raise InvalidField("status", f"status must be one of {list(STATUSES)}")
    if error is not None and not isinstance(error, str):
        raise InvalidField("error", "error must be a string")
    return Receipt(provider_id, status, error)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}
