"""Config sections for notifications (channels, templates, retries, workers) and the event hooks that create them."""

from __future__ import annotations

import re
from typing import Any, Literal

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import ConfigDict, Field, field_validator, model_validator

from gateway.config.base import Model
from gateway.config.units import Duration, parse_duration
from gateway.config.windows import WindowTexts
from gateway.events import EVENT_CLASSES, EVENT_TYPES, payload_fields

Priority = Literal["high", "normal", "low"]
DEFAULT_TEMPLATE_PART = "default"
DEFAULT_DIGEST_INTERVAL_S = 3600.0
DEFAULT_IDEMPOTENCY_TTL_S = 86400.0
DEFAULT_LEASE_S = 30.0
_THROTTLE = re.compile(r"^\s*(\d+)\s*/\s*([0-9.]+\s*(?:ms|s|m|h|d)?)\s*(?:per\s+([A-Za-z_][A-Za-z0-9_.]*))?\s*$")
Location = tuple[str | int, ...]


class ChannelBreakerSettings(Model):
    #: Send failures (retryable errors) within `window` that open the channel's breaker.
    failures: int = Field(5, ge=1)
    window: Duration = 30.0
    cooldown: Duration = 30.0


class ChannelSettings(Model):
    """`plugin` names the Channel class; every other key is the plugin's own option (checked by the plugin)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    plugin: str = Field(min_length=1)
    breaker: ChannelBreakerSettings = ChannelBreakerSettings()
    #: Sends per destination (a user's webhook URL, else the channel's provider), as rate-limit windows such as
    #: ["50/1s", "1000/1m"]; past them a message waits in its queue, it is not an attempt. null: no limit.
    rate_limit: WindowTexts | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TemplatePart(Model):
    """One channel's rendering of a template: Jinja2 (sandboxed, strict about undefined variables)."""

    subject: str | None = None
    body: str

    @field_validator("subject", "body")
    @classmethod
    def _syntax(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                SandboxedEnvironment().parse(value)
            except TemplateSyntaxError as exc:
                raise ValueError(f"invalid template (line {exc.lineno}): {exc.message}") from None
        return value


#: The default retry schedule, Svix's: a receiver down for hours still gets its messages (8 sends over ~28 h).
DEFAULT_SCHEDULE: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class RetrySettings(Model):
    """When a failed send is tried again: a `schedule` (the delay before each retry; the message goes to the
    dead-letter queue after the last), or an exponential backoff (`max_attempts`, `base_delay`, `max_delay`).
    Giving neither means the default schedule."""

    #: The delay before retry 1, 2, ...; each is jittered by up to 10% either way. Sends = len(schedule) + 1.
    schedule: tuple[Duration, ...] | None = None
    #: Sends of one message before it goes to the dead-letter queue (exponential backoff).
    max_attempts: int = Field(3, ge=1, le=100)
    #: Backoff before retry n is uniform in [0, min(max_delay, base_delay * 2^(n-1))] ("full jitter").
    base_delay: Duration = 1.0
    max_delay: Duration = 300.0

    @model_validator(mode="after")
    def _one_policy(self) -> RetrySettings:
        exponential = {"max_attempts", "base_delay", "max_delay"} & self.model_fields_set
        if self.schedule is not None and exponential:
            raise ValueError(f"give either schedule or {', '.join(sorted(exponential))}, not both")
        if self.schedule is None and not exponential:
            object.__setattr__(self, "schedule", DEFAULT_SCHEDULE)
        if self.schedule is not None and len(self.schedule) > 99:
            raise ValueError("schedule: at most 99 retries")
        return self

    @property
    def attempts(self) -> int:
        """Sends of one message before it goes to the dead-letter queue."""
        return len(self.schedule) + 1 if self.schedule is not None else self.max_attempts


class WorkerSettings(Model):
    #: Run the delivery workers inside the gateway; false leaves them to `gateway worker` processes.
    in_process: bool = True
    #: Sends in flight per channel per process.
    concurrency: int = Field(8, ge=1, le=1000)
    #: A received message (and its delivery record) belongs to its worker this long; then it is redelivered.
    lease: Duration = DEFAULT_LEASE_S
    #: How long a worker waits for new messages per read (the Redis BLOCK time, the SQLite poll).
    poll_interval: Duration = 1.0
    #: Digests, delayed messages, queue gauges and clean-up run this often.
    tick_interval: Duration = 1.0
    #: Redis engine: a delivery still `queued` this long after it was due is enqueued again (lost XADD).
    recover_after: Duration = 300.0
    #: On shutdown, sends in flight get this long to finish before they are cancelled (and redelivered later).
    shutdown_grace: Duration = 5.0


class NotificationSettings(Model):
    channels: dict[str, ChannelSettings] = {}
    #: template id → channel name (or "default") → {subject, body}.
    templates: dict[str, dict[str, TemplatePart]] = {}
    retries: RetrySettings = RetrySettings()
    #: Low-priority notifications of one user reach their digest channel at most once per interval, combined.
    digest_interval: Duration = DEFAULT_DIGEST_INTERVAL_S
    #: A template rendered with `items` and `count` for digests; omitted = a built-in plain-text list.
    digest_template: str | None = None
    #: The channels of a user with no stored preferences; omitted = every configured channel.
    default_channels: tuple[str, ...] | None = None
    #: Channels, in order, that take a notification none of its requested channels can take now (opted out, no
    #: address, breaker open): the first the user opted into and can be reached on (gateway/notify/router.py).
    fallback: tuple[str, ...] = ()
    max_recipients: int = Field(1000, ge=1)
    #: How long an Idempotency-Key answers with its first response.
    idempotency_ttl: Duration = DEFAULT_IDEMPOTENCY_TTL_S
    workers: WorkerSettings = WorkerSettings()

    @field_validator("channels")
    @classmethod
    def _names(cls, value: dict[str, ChannelSettings]) -> dict[str, ChannelSettings]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name == DEFAULT_TEMPLATE_PART:
                raise ValueError(f"channel name {name!r}: use letters, digits, '_' or '-' (and not 'default')")
        return value


class Throttle(Model):
    limit: int
    window: float
    per: str | None


def parse_throttle(text: str) -> Throttle:
    """ "1/10m per user_id" → at most 1 per 10 minutes per value of the event field user_id."""
    match = _THROTTLE.match(text)
    if match is None:
        raise ValueError(f"not a throttle: {text!r} (use e.g. '1/10m per user_id' or '5/1h')")
    limit, window = int(match.group(1)), parse_duration(match.group(2).replace(" ", ""))
    if limit < 1 or window <= 0:
        raise ValueError(f"a throttle needs a positive count and window: {text!r}")
    return Throttle(limit=limit, window=window, per=match.group(3))


class HookNotify(Model):
    #: User ids; "$field" takes the user id from that event field (e.g. "$user_id").
    users: tuple[str, ...] = Field(min_length=1)
    template: str
    channels: tuple[str, ...] = Field(min_length=1)
    priority: Priority = "normal"
    #: Extra template data, beside the event's own fields.
    data: dict[str, Any] = {}


Scalar = str | int | float | bool | None


class HookSettings(Model):
    name: str | None = None
    #: Event type(s) the hook listens to.
    on: tuple[str, ...]
    #: Event field → value, or a list meaning "any of"; every field must match.
    when: dict[str, Scalar | list[Scalar]] = {}
    #: "N/window per field": at most N notifications per window per value of an event field (omit `per`: overall).
    throttle: str | None = None
    notify: HookNotify

    @model_validator(mode="before")
    @classmethod
    def _bare_on(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true, which the loader turns into "True".
        if isinstance(data, dict) and "True" in data and "on" not in data:
            data = dict(data)
            data["on"] = data.pop("True")
        return data

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("on")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [event for event in value if event not in EVENT_TYPES]
        if unknown or not value:
            raise ValueError(f"unknown event type(s) {unknown} (known: {', '.join(EVENT_TYPES)})")
        return value

    @field_validator("throttle")
    @classmethod
    def _throttle(cls, value: str | None) -> str | None:
        if value is not None:
            parse_throttle(value)
        return value


def notification_errors(settings: NotificationSettings, hooks: tuple[HookSettings, ...]) -> list[tuple[Location, str]]:
    """Cross-references within the file: templates, default channels and hooks naming channels and templates that
    exist, and hooks' `when` naming fields of their events. What the channel plugins make of their options and
    which template parts they need is theirs to check (gateway.notify.checks)."""
    errors: list[tuple[Location, str]] = []
    for template_id, template in settings.templates.items():
        for key in template:
            if key != DEFAULT_TEMPLATE_PART and key not in settings.channels:
                errors.append(
                    (
                        ("notifications", "templates", template_id, key),
                        f"unknown channel '{key}' (declared: {', '.join(settings.channels)})",
                    )
                )
    for section, listed in (("default_channels", settings.default_channels or ()), ("fallback", settings.fallback)):
        for index, name in enumerate(listed):
            if name not in settings.channels:
                errors.append((("notifications", section, index), f"unknown channel '{name}'"))
    if settings.digest_template is not None and settings.digest_template not in settings.templates:
        errors.append((("notifications", "digest_template"), f"unknown template '{settings.digest_template}'"))
    for index, hook in enumerate(hooks):
        where: Location = ("hooks", index, "notify")
        if hook.notify.template not in settings.templates:
            errors.append(((*where, "template"), f"unknown template '{hook.notify.template}'"))
        for position, channel in enumerate(hook.notify.channels):
            if channel not in settings.channels:
                errors.append(((*where, "channels", position), f"unknown channel '{channel}'"))
        errors.extend(when_errors(index, hook))
    names = [hook.name for hook in hooks if hook.name]
    if len(names) != len(set(names)):
        errors.append((("hooks",), "hook names must be unique"))
    return errors


def when_errors(index: int, hook: HookSettings) -> list[tuple[Location, str]]:
    """Each `when` key must be a payload field of every event type the hook is `on`: a field some of them lack
    would be missing from those events, so the hook could never fire for them."""
    errors: list[tuple[Location, str]] = []
    fields = {event_type: payload_fields(EVENT_CLASSES[event_type]) for event_type in hook.on}
    for key in hook.when:
        lacking = [event_type for event_type, names in fields.items() if key not in names]
        if not lacking:
            continue
        known = "; ".join(f"{event_type}: {', '.join(names)}" for event_type, names in fields.items())
        if len(fields) == 1:
            message = f"{lacking[0]} events have no field '{key}' (fields: {', '.join(fields[lacking[0]])})"
        else:
            message = (
                f"'{key}' is not a field of {', '.join(lacking)}; a when field must be one of every event type "
                f"in `on` ({known})"
            )
        errors.append((("hooks", index, "when", key), message))
    return errors
