"""Prometheus metrics of the notification system, all prefixed gateway_notify_; labels are channel names only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ACCEPTED = Counter("gateway_notify_accepted", "Notifications accepted, by priority.", ["priority"])
REPLAYED = Counter("gateway_notify_idempotent_replays", "POSTs answered from an Idempotency-Key's first response.")
DELIVERIES = Counter(
    "gateway_notify_deliveries",
    "Delivery outcomes by channel and result (sent, delivered, retry, failed, skipped, duplicate, deferred).",
    ["channel", "result"],
)
ATTEMPTS = Counter("gateway_notify_attempts", "Send attempts, by channel.", ["channel"])
QUEUE_DEPTH = Gauge(
    "gateway_notify_queue_depth", "Messages waiting or in flight, by channel.", ["channel"], multiprocess_mode="max"
)
DLQ_SIZE = Gauge("gateway_notify_dlq_size", "Dead-letter entries waiting for a replay.", multiprocess_mode="max")
DIGESTS = Counter("gateway_notify_digests", "Digests flushed to the queue.")
HOOKS = Counter(
    "gateway_notify_hooks", "Hook outcomes, by hook and result (created, throttled, failed).", ["hook", "result"]
)
RECEIPTS = Counter(
    "gateway_notify_receipts", "Provider receipts applied, by channel and status.", ["channel", "status"]
)
DESTINATION_BREAKER_OPENED = Counter(
    "gateway_notify_destination_breaker_opened",
    "Breakers of users' own destinations (webhook URLs) that opened, by channel.",
    ["channel"],
)
