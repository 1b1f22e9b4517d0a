"""Typed gateway events and the bus that carries them to subscribers (the hook pipeline).

Emitting never blocks and never raises: events go into a bounded buffer that a background task drains.
When the buffer is full the oldest event is dropped and counted; a request is never slowed by its events.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import Counter

EventType = Literal[
    "ratelimit.exceeded",
    "url.created",
    "url.clicked",
    "upstream.error",
    "circuit.opened",
    "circuit.closed",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
DEFAULT_BUFFER = 10_000

EVENTS = Counter("gateway_events", "Events emitted, by type.", ["type"])
EVENTS_DROPPED = Counter("gateway_events_dropped", "Events dropped because the bus buffer was full.", ["type"])
logger = logging.getLogger("gateway.events")

Subscriber = Callable[["Event"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: Mapping[str, Any]
    at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class EventBus:
    def __init__(self, buffer: int = DEFAULT_BUFFER) -> None:
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

    def emit(self, type: str, **data: Any) -> None:
        EVENTS.labels(type).inc()
        if not self._subscribers:
            return
        if len(self._pending) >= self._buffer:
            dropped = self._pending.popleft()
            EVENTS_DROPPED.labels(dropped.type).inc()
        self._pending.append(Event(type, data))
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
