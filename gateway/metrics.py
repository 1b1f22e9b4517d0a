"""Every Prometheus metric of the gateway, registered here and nowhere else. Labels are bounded: route, upstream,
rule and channel names from the config, never raw paths.

With several workers, PROMETHEUS_MULTIPROC_DIR is set by `gateway run` before this module is imported,
and /metrics aggregates every worker's files.
"""

from __future__ import annotations

import os

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# The _created series double the exposition for no use here.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "gateway_requests", "Requests answered, by route, method and status class.", ["route", "method", "status"]
)
REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds", "Time to the last response byte, by route.", ["route"], buckets=LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("gateway_requests_in_flight", "Requests being handled.", multiprocess_mode="livesum")
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors", "Failed upstream exchanges, by upstream and kind.", ["upstream", "kind"]
)
UPSTREAM_RETRIES = Counter(
    "gateway_upstream_retries", "Requests retried on another attempt after a connect error.", ["upstream"]
)
CLIENT_DISCONNECTS = Counter(
    "gateway_client_disconnects", "Clients that went away before their response was complete.", ["route"]
)
RATELIMIT_DECISIONS = Counter(
    "gateway_ratelimit_decisions",
    "Rate-limit decisions by rule, tier and result (allowed, refused, shadow_refused, failed_open, failed_closed, "
    "local_allowed, local_refused, overloaded, overloaded_closed).",
    ["rule", "tier", "result"],
)
RATELIMIT_NEAR_LIMIT = Counter(
    "gateway_ratelimit_near_limit",
    "Allowed requests that left less than 20% of a window, by rule and tier.",
    ["rule", "tier"],
)
RATELIMIT_ENGINE_SECONDS = Histogram(
    "gateway_ratelimit_engine_seconds",
    "Time of one rate-limit engine call.",
    ["engine"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
)
REDIS_ROUND_TRIP_SECONDS = Histogram(
    "gateway_redis_round_trip_seconds",
    "One pipelined round trip of the Redis engine, from write to the last reply read.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
ENGINE_OVERLOADED = Counter(
    "gateway_engine_overloaded", "Redis engine calls shed because engine.redis.max_queue calls already waited."
)
EVENTS = Counter("gateway_events", "Events emitted, by type.", ["type"])
EVENTS_DROPPED = Counter("gateway_events_dropped", "Events dropped because the bus buffer was full.", ["type"])
BREAKER_STATE = Gauge(
    "gateway_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    ["breaker"],
    multiprocess_mode="max",
)
HTTP_REFUSED = Counter(
    "gateway_http_refused",
    "Requests and connections refused at the edge before the pipeline, by reason (the error code).",
    ["reason"],
)
EVENT_LOOP_LAG = Gauge(
    "gateway_event_loop_lag_seconds",
    "The worst delay of a 100 ms timer over the last 5 s: how far behind the event loop runs.",
    multiprocess_mode="max",
)
CONFIG_RELOADS = Counter("gateway_config_reloads", "Configuration reload attempts, by result.", ["result"])

_request_children: dict[tuple[str, str, str], Counter] = {}
_duration_children: dict[str, Histogram] = {}


# Prometheus metrics of the notification system, all prefixed gateway_notify_; labels are channel names only.
NOTIFY_FALLBACKS = Counter(
    "gateway_notify_fallbacks",
    "Deliveries planned on a fallback channel (notifications.fallback), by that channel.",
    ["channel"],
)
NOTIFY_ACCEPTED = Counter("gateway_notify_accepted", "Notifications accepted, by priority.", ["priority"])
NOTIFY_REPLAYED = Counter(
    "gateway_notify_idempotent_replays", "POSTs answered from an Idempotency-Key's first response."
)
NOTIFY_DELIVERIES = Counter(
    "gateway_notify_deliveries",
    "Delivery outcomes by channel and result (sent, delivered, retry, failed, skipped, duplicate, deferred).",
    ["channel", "result"],
)
NOTIFY_ATTEMPTS = Counter("gateway_notify_attempts", "Send attempts, by channel.", ["channel"])
NOTIFY_QUEUE_DEPTH = Gauge(
    "gateway_notify_queue_depth", "Messages waiting or in flight, by channel.", ["channel"], multiprocess_mode="max"
)
NOTIFY_DLQ_SIZE = Gauge("gateway_notify_dlq_size", "Dead-letter entries waiting for a replay.", multiprocess_mode="max")
NOTIFY_DIGESTS = Counter("gateway_notify_digests", "Digests flushed to the queue.")
NOTIFY_HOOKS = Counter(
    "gateway_notify_hooks", "Hook outcomes, by hook and result (created, throttled, failed).", ["hook", "result"]
)
NOTIFY_RECEIPTS = Counter(
    "gateway_notify_receipts", "Provider receipts applied, by channel and status.", ["channel", "status"]
)
NOTIFY_DESTINATION_BREAKER_OPENED = Counter(
    "gateway_notify_destination_breaker_opened",
    "Breakers of users' own destinations (webhook URLs) that opened, by channel.",
    ["channel"],
)


# Prometheus metrics of the shortener. Labels are closed sets; short codes never become labels.
SHORTENER_LAYERS = ("lru", "redis", "database", "negative")

SHORTENER_KEY_POOL_SIZE = Gauge(
    "gateway_shortener_key_pool_size",
    "Pre-generated codes left in the key pool, as last seen by this process.",
    multiprocess_mode="livemax",
)
SHORTENER_KEY_POOL_MIN = Gauge(
    "gateway_shortener_key_pool_min",
    "shortener.key_pool.min: the filler tops the pool up below it (alerts compare the size with it).",
    multiprocess_mode="livemax",
)
SHORTENER_CODES = Counter(
    "gateway_shortener_codes",
    "Generated codes handed to creations, by source (pool, or database when the pool was empty or unreachable).",
    ["source"],
)
SHORTENER_CODE_COLLISIONS = Counter(
    "gateway_shortener_code_collisions", "Generated codes that were already taken (by an alias); the create retried."
)
SHORTENER_CREATED = Counter(
    "gateway_shortener_urls_created", "Short links created, by kind (generated, alias).", ["kind"]
)
SHORTENER_ARCHIVED = Counter(
    "gateway_shortener_urls_archived", "Links archived by the expiry job (expired longer than expired_retention)."
)
SHORTENER_CACHE_HITS = Counter(
    "gateway_shortener_cache_hits",
    "Redirect lookups by the layer that answered: lru, redis, database, or negative (a cached unknown code).",
    ["layer"],
)
SHORTENER_REDIRECTS = Counter("gateway_shortener_redirects", "Answers to GET /{code}, by status.", ["status"])
SHORTENER_CLICKS_DROPPED = Counter(
    "gateway_shortener_clicks_dropped", "Click events dropped because the in-memory buffer was full (storage down)."
)
SHORTENER_UNPARSED_AGENTS = Counter(
    "gateway_shortener_unparsed_agents",
    "Click groups whose browser was left unparsed: more new User-Agents in one flush than its parse budget.",
)
SHORTENER_CLICK_BUFFER = Gauge(
    "gateway_shortener_click_buffer",
    "Clicks waiting in memory because no storage took them at the last flush.",
    multiprocess_mode="livesum",
)
SHORTENER_CLICK_LAG = Histogram(
    "gateway_shortener_click_lag_seconds",
    "Seconds from a redirect to its click being folded into the link's count; one observation per group of "
    "identical clicks (code, referrer host, agent class) flushed together, timed from the group's first click.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)

#: Children resolved once: `.labels()` is the costly part on the redirect path.
SHORTENER_HITS = {layer: SHORTENER_CACHE_HITS.labels(layer) for layer in SHORTENER_LAYERS}
SHORTENER_REDIRECT_STATUSES = {
    status: SHORTENER_REDIRECTS.labels(str(status)) for status in (301, 302, 307, 308, 404, 410, 503)
}


def observe_request(route: str, method: str, status: int, duration: float) -> None:
    """Record one finished request; the labelled children are cached because .labels() is the costly part."""
    key = (route, method if method in KNOWN_METHODS else "OTHER", f"{status // 100}xx")
    child = _request_children.get(key)
    if child is None:
        child = _request_children[key] = REQUESTS.labels(*key)
    child.inc()
    histogram = _duration_children.get(route)
    if histogram is None:
        histogram = _duration_children[route] = REQUEST_DURATION.labels(route)
    histogram.observe(duration)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
