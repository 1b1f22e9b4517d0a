"""Notifications: the public channel plugin interface (see gateway.notify.channel); the rest is internal."""

from __future__ import annotations

from gateway.notify.channel import (
    Channel,
    ChannelError,
    HttpSupport,
    Message,
    PermanentError,
    Receipt,
    ReceiptSupport,
    RetryableError,
    SendResult,
    parse_options,
)

__all__ = [
    "Channel",
    "ChannelError",
    "HttpSupport",
    "Message",
    "PermanentError",
    "Receipt",
    "ReceiptSupport",
    "RetryableError",
    "SendResult",
    "parse_options",
]
