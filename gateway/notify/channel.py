"""The channel plugin interface: what a delivery channel implements, and how YAML names one.

A channel is a class deriving from `Channel`, named in YAML by a built-in short name (`plugin: webhook`) or a
dotted path (`plugin: mypkg.module:Class`). It is built once per configuration as `Class(name, options,
public_url=...)`, where `options` are the channel's YAML keys other than `plugin` and `breaker`. The constructor
only validates and stores (the configuration check builds channels too); connections open on first use.

`send()` hands one message to the provider. It raises `RetryableError` when trying again later may work
(timeouts, 5xx, 429) and `PermanentError` when it cannot (a refused address, a 4xx): the worker retries the
first with backoff and dead-letters the second at once. Any other exception counts as retryable.
A channel that understands provider status callbacks also implements `ReceiptSupport`.
Plugins import from this module only: `Options` (the base of an options model: immutable, unknown keys refused)
and `Duration` (a field type reading "500ms", "10s") are here for their options. A channel that speaks HTTP
mixes in `HttpSupport` for one pooled httpx client, closed with the channel.
A channel that sends to URLs users choose checks them with `PublicAddresses` (gateway.notify.destinations, re-exported
here): only public addresses, checked on the resolved address when sending.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from gateway.config.base import Model as Options
from gateway.config.units import Duration
from gateway.notify.destinations import DestinationError, PublicAddresses, networks, origin, redact_url, redact_urls

BUILTIN_PLUGINS = {
    "webhook": "gateway.plugins.webhook:WebhookChannel",
    "email": "gateway.plugins.email:EmailChannel",
    "sms": "gateway.plugins.sms:SmsChannel",
    "push": "gateway.plugins.push:PushChannel",
    "log": "gateway.plugins.log:LogChannel",
}
__all__ = [
    "Channel",
    "ChannelError",
    "DestinationError",
    "Duration",
    "HttpSupport",
    "Message",
    "Options",
    "PermanentError",
    "PublicAddresses",
    "Receipt",
    "ReceiptSupport",
    "RetryableError",
    "SendResult",
    "networks",
    "origin",
    "parse_options",
    "redact_url",
    "redact_urls",
]
ReceiptStatus = Literal["sent", "delivered", "opened", "failed"]
OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Message:
    """What one send carries. `id` is stable across retries and redeliveries: receivers dedupe on it."""

    id: str
    channel: str
    user_id: str
    #: The user's addresses for this channel (one email, one phone, the device tokens...); empty if none needed.
    to: tuple[str, ...]
    subject: str | None
    body: str
    priority: str = "normal"
    notification_id: str | None = None
    template_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    #: A digest combines several notifications: each item has notification_id, template_id, subject, body, data.
    items: tuple[Mapping[str, Any], ...] = ()

    @property
    def is_digest(self) -> bool:
        return bool(self.items)


@dataclass(frozen=True, slots=True)
class SendResult:
    #: The provider's id for the message (Twilio SID, FCM name...); receipts refer to it.
    provider_id: str | None = None
    #: True when the provider's acceptance already means delivered (a webhook's 2xx).
    delivered: bool = False


@dataclass(frozen=True, slots=True)
class Receipt:
    provider_id: str
    status: ReceiptStatus
    error: str | None = None


class ChannelError(Exception):
    """A send failed; `retryable` says whether trying again later may work."""

    retryable: bool = True


class RetryableError(ChannelError):
    """A transient failure: a timeout, a refused connection, 5xx, 429. `retry_after`: the seconds the provider
    asked for (its Retry-After), which the next try waits at least."""

    def __init__(self, detail: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class PermanentError(ChannelError):
    """The provider refused the message itself: retrying cannot help."""

    retryable = False


class PluginError(Exception):
    """A channel plugin cannot be loaded or refuses its options; `problems` are (location, message) pairs."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


class Channel(ABC):
    #: The user-preference field that holds this channel's address; None when the channel needs none.
    address_field: ClassVar[str | None] = None
    #: Template parts every message on this channel needs.
    parts: ClassVar[frozenset[str]] = frozenset({"body"})

    def __init__(self, name: str, options: Mapping[str, Any], *, public_url: str = "") -> None:
        self.name = name
        self.public_url = public_url

    def default_address(self) -> str | None:
        """Where a message goes when the user gave no address (the webhook channel's configured URL)."""
        return None

    def validate_address(self, address: str) -> None:
        """Raise ValueError, with a message safe to show the user, if `address` cannot be a destination here.
        Called when a user stores it in their preferences."""
        return None

    def destination(self, message: Message) -> str | None:
        """A key naming the user's own destination when the message goes there (a webhook URL of theirs): it gets
        a circuit breaker of its own, so one user's dead endpoint never holds back everyone else's messages.
        None when the message goes through the channel's shared provider (the channel's breaker)."""
        return None

    @abstractmethod
    async def send(self, message: Message) -> SendResult:
        """Hand `message` to the provider; raise RetryableError or PermanentError when it fails."""

    async def aclose(self) -> None:
        """Release connections; the channel is not used afterwards."""
        return None


class HttpSupport:
    """A channel that speaks HTTP: one keep-alive httpx client, opened on first use and closed with the channel.

    List it before `Channel` in the bases, so its `aclose` is the one that runs.
    """

    _client: httpx.AsyncClient | None = None

    def http_timeout(self) -> httpx.Timeout:
        raise NotImplementedError

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.http_timeout(), follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class ReceiptSupport(ABC):
    """A channel whose provider reports delivery through `POST /api/v1/notifications/receipts/{channel}`."""

    @abstractmethod
    def verify_receipt(self, url: str, headers: Mapping[str, str], params: Mapping[str, str]) -> bool:
        """Whether the callback really comes from the provider (a signature check)."""

    @abstractmethod
    def parse_receipt(self, params: Mapping[str, str]) -> Receipt | None:
        """The receipt in a callback's form fields; None for statuses that change nothing."""


def parse_options(model: type[OptionsT], options: Mapping[str, Any]) -> OptionsT:
    """Validate plugin options with a pydantic model; errors become a PluginError naming each field."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for error in exc.errors(include_url=False):
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append((tuple(error["loc"]), message.removeprefix("Value error, ")))
        raise PluginError(problems) from None


class ChannelSpec(Protocol):
    """What building a channel needs of its YAML settings (gateway.config.notifications.ChannelSettings)."""

    @property
    def plugin(self) -> str: ...

    @property
    def options(self) -> Mapping[str, Any]: ...


def load_channel(name: str, settings: ChannelSpec, *, public_url: str = "") -> Channel:
    """Build the channel `name` from its YAML settings."""
    cls = plugin_class(settings.plugin)
    try:
        return cls(name, settings.options, public_url=public_url)
    except PluginError:
        raise
    except (TypeError, ValueError) as exc:
        raise PluginError([((), f"plugin {settings.plugin!r} refused its options: {exc}")]) from exc


def plugin_class(spec: str) -> type[Channel]:
    path = BUILTIN_PLUGINS.get(spec, spec)
    module_name, _, attribute = path.partition(":")
    if not attribute:
        known = ", ".join(BUILTIN_PLUGINS)
        raise PluginError([(("plugin",), f"unknown plugin {spec!r} (built in: {known}; or 'package.module:Class')")])
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise PluginError([(("plugin",), f"cannot load plugin {spec!r}: {exc}")]) from None
    if not (isinstance(found, type) and issubclass(found, Channel)):
        raise PluginError([(("plugin",), f"plugin {spec!r} is not a gateway.notify.channel.Channel subclass")])
    return found
