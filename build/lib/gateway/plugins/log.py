"""Writes each message to the `gateway.notify.log` logger: the embedded default, and a sink for trying hooks out."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Literal

from gateway.notify.channel import (
    Channel,
    Message,
    Options,
    SendResult,
    parse_options,
)

logger = logging.getLogger("gateway.notify.log")


class LogOptions(Options):
    level: Literal["debug", "info", "warning"] = "info"


class LogChannel(Channel):
    def __init__(self, name: str, options: Mapping[str, Any], *, public_url: str = "") -> None:
        super().__init__(name, options, public_url=public_url)
        self.options = parse_options(LogOptions, options)
        self._level = logging.getLevelName(self.options.level.upper())

    async def send(self, message: Message) -> SendResult:
        record = {
            "message_id": message.id,
            "channel": self.name,
            "user_id": message.user_id,
            "notification_id": message.notification_id,
            "subject": message.subject,
            "body": message.body,
            "items": len(message.items),
        }
        logger.log(self._level, "notification %s", json.dumps(record, separators=(",", ":")))
        return SendResult(provider_id=message.id, delivered=True)
