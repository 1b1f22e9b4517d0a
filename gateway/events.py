"""Typed gateway events and the bus that carries them to subscribers (the hook pipeline).

Each event type is a frozen dataclass whose fields are its payload: what a hook's `when` filters on and what its
template reads. Every event also has an `id` and the time it was emitted (`emitted_at`), which are not payload.
Emitting never blocks and never raises: events go into a bounded buffer that a background task drains.
When the buffer is full the oldest event is dropped and counted; a request is never slowed by its events.

This module is imported by the configuration (to check hooks' `on:` and `when:`), so it registers no metrics
itself: the bus takes its counters from gateway.metrics when it is built.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

DEFAULT_BUFFER = 10_000
logger = logging.getLogger("gateway.events")


@dataclass(frozen=True, slots=True)
class Event:
    """The base of every event type; a subclass names its `type` and declares its payload fields."""

    type: ClassVar[str]
    id: str = field(default_factory=lambda: uuid.uuid4().hex, kw_only=True)
    emitted_at: float = field(default_factory=time.time, kw_only=True)

    @property
    def data(self) -> dict[str, Any]:
        """The payload: every field but `id` and `emitted_at`, by name."""
        return {name: getattr(self, name) for name in payload_fields(type(self))}


@dataclass(frozen=True, slots=True)
class RateLimitExceeded(Event):
    """A request was refused by a rate-limit rule (not in shadow mode)."""

    type: ClassVar[str] = "ratelimit.exceeded"
    user_id: str
    identity_kind: str
    tier: str
    rule: str
    path: str
    #: The limit and name ("1m") of the tightest window.
    limit: int
    window: str
    retry_after: float


@dataclass(frozen=True, slots=True)
class UpstreamFailed(Event):
    """An upstream exchange failed: `kind` is "timeout" or "protocol"."""

    type: ClassVar[str] = "upstream.error"
    upstream: str
    route: str
    kind: str
    target: str | None
    detail: str
    request_id: str


@dataclass(frozen=True, slots=True)
class UrlCreated(Event):
    """A short link was created."""

    type: ClassVar[str] = "url.created"
    short_code: str
    short_url: str
    long_url: str
    owner: str | None
    custom_alias: bool
    expires_at: float | None
    max_visits: int | None


@dataclass(frozen=True, slots=True)
class UrlClicked(Event):
    """`count` redirects to one code with one referrer and agent class, the first of them at `at`."""

    type: ClassVar[str] = "url.clicked"
    short_code: str
    at: float
    referrer: str | None
    agent: str
    count: int


@dataclass(frozen=True, slots=True)
class CircuitOpened(Event):
    """A circuit breaker opened: its dependency (Redis, the database, a channel) is failing."""

    type: ClassVar[str] = "circuit.opened"
    breaker: str
    previous: str


@dataclass(frozen=True, slots=True)
class CircuitClosed(Event):
    """A circuit breaker closed again: its dependency answers."""

    type: ClassVar[str] = "circuit.closed"
    breaker: str
    previous: str


EVENT_CLASSES: dict[str, type[Event]] = {
    cls.type: cls for cls in (RateLimitExceeded, UrlCreated, UrlClicked, UpstreamFailed, CircuitOpened, CircuitClosed)
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_CLASSES)
_ENVELOPE = frozenset(f.name for f in dataclasses.fields(Event))


_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def catalog() -> list[dict[str, Any]]:
    """Every event type with its payload fields and their JSON types: what a hook's `when` and template, or a
    receiver, can read."""
    entries = []
    for name, cls in EVENT_CLASSES.items():
        annotations = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        fields = []
        for field_name in payload_fields(cls):
            spelled = [part.strip() for part in annotations[field_name].split("|")]
            types = [_JSON_TYPES.get(part, "null" if part == "None" else "string") for part in spelled]
            fields.append({"name": field_name, "type": types[0] if len(types) == 1 else types})
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        entries.append({"type": name, "description": doc, "fields": fields})
    return entries


def payload_fields(cls: type[Event]) -> tuple[str, ...]:
    """The payload field names of an event type, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _ENVELOPE)


Subscriber = Callable[[Event], Awaitable[None]]


class EventBus:
    def __init__(self, buffer: int = DEFAULT_BUFFER) -> None:
        # Here, not at import: the configuration imports this module before `gateway run` sets up metrics.
        from gateway import metrics

        self._emitted = metrics.EVENTS
        self._dropped = metrics.EVENTS_DROPPED
        self._pending: deque[Event] = deque()
        self._buffer = buffer
        self._subscribers: list[Subscriber] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget `subscriber` (a retired runtime's hooks); unknown subscribers are ignored."""
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def emit(self, event: Event) -> None:
        self._emitted.labels(event.type).inc()
        if not self._subscribers:
            return
        if len(self._pending) >= self._buffer:
            dropped = self._pending.popleft()
            self._dropped.labels(dropped.type).inc()
        self._pending.append(event)
        if self._wakeup is not None:
            self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def aclose(self) -> None:
        """Deliver what is pending, then stop."""
        if self._task is None:
            return
        await self.flush()
        self._task.cancel()
        self._task = None

    async def flush(self) -> None:
        while self._pending:
            await self._deliver(self._pending.popleft())

    async def _drain(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.flush()

    async def _deliver(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                await subscriber(event)
            except Exception:
                logger.exception("event subscriber failed on %s", event.type)
