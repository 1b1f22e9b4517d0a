"""The plain data of notifications: requests, preferences, queue jobs, and the validation of API input."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from gateway.config.notifications import Priority
from gateway.exceptions import InvalidField
from gateway.notify.destinations import parse_http_url
from gateway.timestamps import parse_time

if TYPE_CHECKING:
    from gateway.notify.channel import Channel

JobKind = Literal["send", "digest", "attach"]
#: Not yet handed to the channel.
PENDING: frozenset[str] = frozenset({"scheduled", "queued", "digest", "sending", "retrying"})
PRIORITIES: tuple[str, ...] = get_args(Priority)
# Matched with fullmatch: `$` would also match before a trailing newline. Local part and domain as RFC 5321
# allows them in practice (no quoted local parts), at most 254 characters in all.
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")
MAX_EMAIL_LENGTH = 254
MAX_DEVICE_TOKEN_LENGTH = 4096
MAX_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Preferences:
    user_id: str
    #: Opted-in channels; None = the configured defaults (a user who never stored preferences).
    channels: tuple[str, ...] | None = None
    primary_channel: str | None = None
    digest_channel: str | None = None
    email: str | None = None
    phone: str | None = None
    device_tokens: tuple[str, ...] = ()
    webhook_url: str | None = None
    stored: bool = False

    def addresses(self, address_field: str | None) -> tuple[str, ...]:
        if address_field is None:
            return ()
        value = getattr(self, address_field, None)
        if isinstance(value, tuple):
            return value
        return (value,) if value else ()

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["channels"] = list(self.channels) if self.channels is not None else None
        body["device_tokens"] = list(self.device_tokens)
        del body["stored"]
        return body

    @classmethod
    def from_json(cls, user_id: str, body: Mapping[str, Any], *, stored: bool = True) -> Preferences:
        channels = body.get("channels")
        return cls(
            user_id=user_id,
            channels=tuple(channels) if channels is not None else None,
            primary_channel=body.get("primary_channel"),
            digest_channel=body.get("digest_channel"),
            email=body.get("email"),
            phone=body.get("phone"),
            device_tokens=tuple(body.get("device_tokens") or ()),
            webhook_url=body.get("webhook_url"),
            stored=stored,
        )


def parse_preferences(user_id: str, body: Any, channels: Mapping[str, Channel]) -> Preferences:
    """Validate a PUT body; every problem raises InvalidField naming the field."""
    if not isinstance(body, dict):
        raise InvalidField("body", "the body must be a JSON object")
    known = {"channels", "primary_channel", "digest_channel", "email", "phone", "device_tokens", "webhook_url"}
    for key in body:
        if key not in known:
            raise InvalidField(key, f"unknown field {key!r} (known: {', '.join(sorted(known))})")
    opted = body.get("channels")
    if not isinstance(opted, list) or not all(isinstance(name, str) for name in opted):
        raise InvalidField("channels", "channels must be a list of channel names")
    for name in opted:
        if name not in channels:
            raise InvalidField("channels", f"unknown channel {name!r} (configured: {', '.join(channels)})")
    for key in ("primary_channel", "digest_channel"):
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or value not in opted):
            raise InvalidField(key, f"{key} must be one of the opted-in channels {opted}")
    email, phone, url = body.get("email"), body.get("phone"), body.get("webhook_url")
    if email is not None and (
        not isinstance(email, str) or len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email)
    ):
        raise InvalidField("email", "email must be an address such as name@example.com")
    if phone is not None and (not isinstance(phone, str) or not _PHONE.fullmatch(phone)):
        raise InvalidField("phone", "phone must be in E.164 form, such as +14155550100")
    if url is not None:
        if not isinstance(url, str):
            raise InvalidField("webhook_url", "webhook_url must be an http:// or https:// URL")
        try:
            parse_http_url(url)
            for channel in channels.values():
                if channel.address_field == "webhook_url":
                    channel.validate_address(url)
        except ValueError as exc:
            raise InvalidField("webhook_url", f"webhook_url {exc}") from None
    tokens = body.get("device_tokens", [])
    if (
        not isinstance(tokens, list)
        or len(tokens) > 100
        or not all(isinstance(t, str) and 0 < len(t) <= MAX_DEVICE_TOKEN_LENGTH and t.isprintable() for t in tokens)
    ):
        raise InvalidField("device_tokens", "device_tokens must be a list of at most 100 non-empty printable strings")
    return Preferences.from_json(user_id, {**body, "channels": opted, "device_tokens": tokens})


@dataclass(frozen=True, slots=True)
class NotificationRequest:
    user_ids: tuple[str, ...]
    template_id: str
    channels: tuple[str, ...]
    data: Mapping[str, Any] = field(default_factory=dict)
    priority: Priority = "normal"
    #: Epoch seconds; None = now.
    scheduled_at: float | None = None


def parse_request(body: Any, channels: Collection[str], *, max_recipients: int) -> NotificationRequest:
    if not isinstance(body, dict):
        raise InvalidField("body", "the body must be a JSON object")
    known = {"user_ids", "template_id", "channels", "data", "priority", "scheduled_at"}
    for key in body:
        if key not in known:
            raise InvalidField(key, f"unknown field {key!r}")
    user_ids = body.get("user_ids")
    if not isinstance(user_ids, list) or not user_ids or len(user_ids) > max_recipients:
        raise InvalidField("user_ids", f"user_ids must be a list of 1 to {max_recipients} user ids")
    if not all(isinstance(u, str) and 0 < len(u) <= MAX_ID_LENGTH for u in user_ids):
        raise InvalidField("user_ids", f"every user id must be a non-empty string of at most {MAX_ID_LENGTH} chars")
    template_id = body.get("template_id")
    if not isinstance(template_id, str) or not template_id:
        raise InvalidField("template_id", "template_id must be a non-empty string")
    requested = body.get("channels")
    if not isinstance(requested, list) or not requested or not all(isinstance(c, str) for c in requested):
        raise InvalidField("channels", "channels must be a non-empty list of channel names")
    for name in requested:
        if name not in channels:
            raise InvalidField("channels", f"unknown channel {name!r} (configured: {', '.join(channels)})")
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise InvalidField("data", "data must be a JSON object")
    priority = body.get("priority", "normal")
    if priority not in PRIORITIES:
        raise InvalidField("priority", f"priority must be one of {list(PRIORITIES)}")
    scheduled = body.get("scheduled_at")
    return NotificationRequest(
        user_ids=tuple(dict.fromkeys(user_ids)),
        template_id=template_id,
        channels=tuple(dict.fromkeys(requested)),
        data=data,
        priority=priority,
        scheduled_at=None if scheduled is None else parse_time("scheduled_at", scheduled),
    )


@dataclass(frozen=True, slots=True)
class Job:
    """One queue message. `send`: one delivery; `digest`: one combined low-priority message;
    `attach`: a scheduled low-priority delivery joining its user's digest when it comes due."""

    kind: JobKind
    channel: str
    notification_id: str = ""
    user_id: str = ""
    digest_id: str = ""

    def encode(self) -> str:
        return json.dumps([self.kind, self.channel, self.notification_id, self.user_id, self.digest_id])

    @classmethod
    def decode(cls, text: str | bytes) -> Job:
        kind, channel, notification_id, user_id, digest_id = json.loads(text)
        return cls(kind, channel, notification_id, user_id, digest_id)

    @property
    def message_id(self) -> str:
        """Stable per (notification, user, channel), or per digest: the webhook-id receivers dedupe on."""
        if self.kind == "digest":
            return f"msg_{self.digest_id}"
        key = f"{self.notification_id}\x00{self.user_id}\x00{self.channel}".encode()
        return "msg_" + hashlib.sha256(key).hexdigest()[:32]
