"""One queue per channel, at-least-once, behind one interface: Redis Streams, or a table in the database."""

from __future__ import annotations

from gateway.notify.queue.base import Queue, Received

__all__ = ["Queue", "Received"]
