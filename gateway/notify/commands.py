"""What `gateway worker` and `gateway dlq list|replay` run: the notification service without the HTTP side."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator

from gateway.config.models import Settings
from gateway.engines import Engines
from gateway.events import EventBus
from gateway.notify import dlq
from gateway.notify.service import NotificationService


@contextlib.asynccontextmanager
async def notification_service(settings: Settings, *, workers: bool) -> AsyncIterator[NotificationService]:
    events = EventBus()
    engines = Engines(settings.engine, events)
    events.start()
    await engines.start()
    service = NotificationService(settings, engines, events)
    try:
        if not service.enabled:
            raise SystemExit("notifications.channels is empty: there is nothing to work on")
        await service.start(workers=workers)
        if not service.ready:
            raise SystemExit("the notification store is not reachable")
        events.subscribe(service.hooks)  # the circuit events of this process's channel breakers
        yield service
    finally:
        events.unsubscribe(service.hooks)
        await service.aclose()
        await events.aclose()
        await engines.aclose()


async def run_worker(settings: Settings) -> None:
    """Consume every channel's queue until SIGTERM or SIGINT; sends in flight finish within shutdown_grace."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with notification_service(settings, workers=True) as service:
        print(f"gateway worker: consuming {', '.join(service.channels)} ({service.queue.name} queue)", file=sys.stderr)
        await stop.wait()


async def list_dead_letters(settings: Settings, limit: int) -> list[dict[str, object]]:
    async with notification_service(settings, workers=False) as service:
        return [dlq.describe(row) for row in await dlq.entries(service.store.db, limit=limit)]


async def replay_dead_letter(settings: Settings, entry_id: str) -> bool:
    async with notification_service(settings, workers=False) as service:
        return await dlq.replay(service.store.db, service.queue, entry_id, now=time.time()) is not None


def print_entries(entries: list[dict[str, object]]) -> None:
    for entry in entries:
        print(json.dumps(entry, separators=(",", ":")))


def main(command: str, settings: Settings, *, action: str | None, entry_id: str | None, limit: int) -> int:
    """`gateway worker` and `gateway dlq list|replay ID`; returns the exit status."""
    if command == "worker":
        asyncio.run(run_worker(settings))
        return 0
    if action == "list":
        print_entries(asyncio.run(list_dead_letters(settings, limit)))
        return 0
    if not entry_id:
        print("gateway dlq replay needs the entry ID (see gateway dlq list)", file=sys.stderr)
        return 2
    if asyncio.run(replay_dead_letter(settings, entry_id)):
        print(f"{entry_id}: requeued")
        return 0
    print(f"{entry_id}: no dead-letter entry with this id is waiting", file=sys.stderr)
    return 1
