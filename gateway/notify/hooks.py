"""The YAML hook pipeline: gateway events → filter (`when`) → throttle → a notification from a template.

A HookPipeline is one EventBus subscriber. The bus already keeps emitting from blocking or failing a request;
here a hook that fails (a template the event cannot fill, the database down) is logged and counted, and the
next hook still runs. Throttle counters go through the engine's scripts (lua/notify_throttle.lua), so replicas
sharing Redis share them; when Redis is unavailable the in-process engine counts instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import metrics
from gateway.config.notifications import HookSettings, Throttle, parse_throttle
from gateway.engines.base import ScriptEngine
from gateway.engines.scripts import load_script
from gateway.events import Event
from gateway.exceptions import StorageError
from gateway.notify.models import NotificationRequest
from gateway.timestamps import format_time

logger = logging.getLogger("gateway.notify")


#: The pipeline subscribed to each bus: a reloaded configuration's hooks replace the old ones at once.
class Notifier(Protocol):
    """What the pipeline needs of the notification service."""

    @property
    def ready(self) -> bool: ...

    async def create(self, request: NotificationRequest, *, created_by: str) -> str: ...


@dataclass(frozen=True, slots=True)
class _Hook:
    name: str
    settings: HookSettings
    throttle: Throttle | None


def matches(when: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Every `when` field equals the event's (a list: any of its values)."""
    for field, expected in when.items():
        actual = data.get(field)
        if isinstance(expected, list):
            if actual not in expected:
                return False
        elif actual != expected:
            return False
    return True


def recipients(users: Sequence[str], data: Mapping[str, Any]) -> tuple[str, ...]:
    """Literal user ids, and "$field" for the id in an event field (skipped when the event has none)."""
    found = []
    for user in users:
        if user.startswith("$"):
            value = data.get(user[1:])
            if value in (None, ""):
                continue
            user = str(value)
        found.append(user)
    return tuple(dict.fromkeys(found))


class HookPipeline:
    def __init__(
        self,
        hooks: Sequence[HookSettings],
        service: Notifier,
        scripts: ScriptEngine,
        local: ScriptEngine,
    ) -> None:
        self.service = service
        self.scripts = scripts
        self.local = local
        self._script = load_script("notify_throttle")
        self._by_type: dict[str, list[_Hook]] = {}
        for index, settings in enumerate(hooks):
            hook = _Hook(
                settings.name or f"hook{index}",
                settings,
                parse_throttle(settings.throttle) if settings.throttle else None,
            )
            for event_type in settings.on:
                self._by_type.setdefault(event_type, []).append(hook)

    def __bool__(self) -> bool:
        return bool(self._by_type)

    async def __call__(self, event: Event) -> None:
        hooks = self._by_type.get(event.type)
        if not hooks:
            return
        fields = event.data
        for hook in hooks:
            if matches(hook.settings.when, fields):
                await self._fire(hook, event, fields)

    async def _fire(self, hook: _Hook, event: Event, fields: Mapping[str, Any]) -> None:
        notify = hook.settings.notify
        users = recipients(notify.users, fields)
        if not users or not self.service.ready:
            return
        if hook.throttle is not None and not await self._allowed(hook, hook.throttle, fields):
            metrics.NOTIFY_HOOKS.labels(hook.name, "throttled").inc()
            return
        # The template data: the hook's own `data`, the event's payload fields, and `event` (type, id, time).
        data = {
            **notify.data,
            **fields,
            "event": {"type": event.type, "id": event.id, "at": format_time(event.emitted_at)},
        }
        request = NotificationRequest(users, notify.template, notify.channels, data, notify.priority)
        try:
            await self.service.create(request, created_by=f"hook:{hook.name}")
        except Exception as exc:
            metrics.NOTIFY_HOOKS.labels(hook.name, "failed").inc()
            logger.warning("hook %s on %s could not create a notification: %s", hook.name, event.type, exc)
            return
        metrics.NOTIFY_HOOKS.labels(hook.name, "created").inc()

    async def _allowed(self, hook: _Hook, throttle: Throttle, data: Mapping[str, Any]) -> bool:
        value = str(data.get(throttle.per, "")) if throttle.per else "*"
        keys = [f"notify:throttle:{hook.name}:{value}"]
        args = [throttle.limit, int(throttle.window * 1000)]
        try:
            allowed, _ = await self.scripts.eval(self._script, keys, args)
        except StorageError:
            allowed, _ = await self.local.eval(self._script, keys, args)
        return int(allowed) == 1
