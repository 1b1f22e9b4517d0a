"""Prometheus metrics. Labels are bounded: route and upstream names from the config, never raw paths.

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
