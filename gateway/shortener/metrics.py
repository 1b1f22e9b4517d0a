"""Prometheus metrics of the shortener. Labels are closed sets; short codes never become labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LAYERS = ("lru", "redis", "database", "negative")

KEY_POOL_SIZE = Gauge(
    "gateway_shortener_key_pool_size",
    "Pre-generated codes left in the key pool, as last seen by this process.",
    multiprocess_mode="livemax",
)
KEY_POOL_MIN = Gauge(
    "gateway_shortener_key_pool_min",
    "shortener.key_pool.min: the filler tops the pool up below it (alerts compare the size with it).",
    multiprocess_mode="livemax",
)
CODES = Counter(
    "gateway_shortener_codes",
    "Generated codes handed to creations, by source (pool, or database when the pool was empty or unreachable).",
    ["source"],
)
CODE_COLLISIONS = Counter(
    "gateway_shortener_code_collisions", "Generated codes that were already taken (by an alias); the create retried."
)
CREATED = Counter("gateway_shortener_urls_created", "Short links created, by kind (generated, alias).", ["kind"])
ARCHIVED = Counter(
    "gateway_shortener_urls_archived", "Links archived by the expiry job (expired longer than expired_retention)."
)
CACHE_HITS = Counter(
    "gateway_shortener_cache_hits",
    "Redirect lookups by the layer that answered: lru, redis, database, or negative (a cached unknown code).",
    ["layer"],
)
REDIRECTS = Counter("gateway_shortener_redirects", "Answers to GET /{code}, by status.", ["status"])
CLICKS_DROPPED = Counter(
    "gateway_shortener_clicks_dropped", "Click events dropped because the in-memory buffer was full (storage down)."
)
CLICK_BUFFER = Gauge(
    "gateway_shortener_click_buffer",
    "Clicks waiting in memory because no storage took them at the last flush.",
    multiprocess_mode="livesum",
)
CLICK_LAG = Histogram(
    "gateway_shortener_click_lag_seconds",
    "Seconds from a redirect to its click being folded into the link's count; one observation per group of "
    "identical clicks (code, referrer host, agent class) flushed together, timed from the group's first click.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)

#: Children resolved once: `.labels()` is the costly part on the redirect path.
HITS = {layer: CACHE_HITS.labels(layer) for layer in LAYERS}
REDIRECT_STATUSES = {status: REDIRECTS.labels(str(status)) for status in (301, 302, 307, 308, 404, 410, 503)}
