"""The configuration schema: immutable models, unknown keys refused, defaults as module constants."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import Model
from gateway.config.notifications import HookSettings, NotificationSettings, notification_errors
from gateway.config.ratelimit import IdentitySettings, RateLimitSettings
from gateway.config.routes import RouteSettings, Timeouts
from gateway.config.shortener import ShortenerSettings, shortener_errors
from gateway.config.units import ByteSize, Duration

DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_DRAIN_S = 10.0
DEFAULT_FAIL_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 200
DEFAULT_REDIS_DEADLINE_S = 0.025
DEFAULT_BREAKER_COOLDOWN_S = 30.0

EngineKind = Literal["embedded", "redis"]


class EdgeLimits(Model):
    """What one client may make the gateway hold (gateway/server.py enforces the head limits)."""

    #: The request target; longer is 414.
    max_request_line: ByteSize = 8 * 1024
    #: One header field (name and value); longer is 431.
    max_header_line: ByteSize = 8 * 1024
    #: The whole request head; the parser is never fed more of one head than this (431).
    max_header_bytes: ByteSize = 32 * 1024
    #: Header fields per request (431).
    max_headers: int = Field(100, ge=1)
    #: Time to send a complete request head, from its first byte (408); 0 disables it.
    header_timeout: Duration = 10.0
    #: Open connections per client address; 0 disables it. Peers in trusted_proxies are exempt.
    max_connections_per_ip: int = Field(256, ge=0)
    #: Body of a request to the gateway's own JSON API (413), checked before reading and before authentication.
    max_api_body: ByteSize = 64 * 1024

    @model_validator(mode="after")
    def _line_within_head(self) -> EdgeLimits:
        if max(self.max_request_line, self.max_header_line) > self.max_header_bytes:
            raise ValueError("max_request_line and max_header_line cannot exceed max_header_bytes")
        return self


class ServerSettings(Model):
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    #: The URL clients use to reach the gateway (short links are built from it).
    public_url: str = f"http://localhost:{DEFAULT_PORT}"
    #: Peers whose X-Forwarded-For / -Proto / -Host and identity headers are believed.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_body_bytes: ByteSize = DEFAULT_MAX_BODY_BYTES
    #: How long in-flight requests may finish after a shutdown signal.
    drain_timeout: Duration = DEFAULT_DRAIN_S
    access_log: bool = True
    health_path: str = "/healthz"
    ready_path: str = "/readyz"
    metrics_path: str = "/metrics"
    #: Poll the config file and reload it when it changes (SIGHUP always reloads).
    watch_config: bool = True
    limits: EdgeLimits = EdgeLimits()
    #: Forward %2F and %5C in paths (as one segment) instead of refusing them with 400; see gateway/paths.py.
    allow_encoded_slashes: bool = False

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(ipaddress.ip_network(str(item), strict=False) for item in value)
        return value

    @field_validator("health_path", "ready_path", "metrics_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/': {value!r}")
        return value


class BreakerSettings(Model):
    #: Failures (errors or slow calls) within `window` that open the breaker.
    failures: int = Field(5, ge=1)
    window: Duration = 10.0
    cooldown: Duration = DEFAULT_BREAKER_COOLDOWN_S
    #: A call slower than this counts as a failure even if it succeeds.
    slow_call: Duration = 0.050


class RedisSettings(Model):
    url: str = "redis://127.0.0.1:6379/0"
    cluster: bool = False
    #: A round trip whose reply has not started this long after it was written fails (gateway/engines/redis.py).
    deadline: Duration = DEFAULT_REDIS_DEADLINE_S
    #: Calls that may wait for a round trip; one more is shed at once (the `overloaded` result).
    max_queue: int = Field(10_000, ge=1)
    #: slow_call: a round trip whose reply has not started by then counts as a failure. A short cooldown: the
    #: half-open probe finds a recovered Redis within about a second.
    breaker: BreakerSettings = BreakerSettings(cooldown=1.0, slow_call=0.010)


class DatabaseSettings(Model):
    #: sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://user@host:port/db
    url: str = "sqlite:///./var/gateway.db"
    #: Longest a database call may take, waiting for a pooled connection included; past it, StorageError (503).
    deadline: Duration = 1.0

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError(f"must be a sqlite:// or postgresql:// URL, got {value!r}")
        return value


class EngineSettings(Model):
    kind: EngineKind = "embedded"
    redis: RedisSettings = RedisSettings()
    database: DatabaseSettings = DatabaseSettings()


class UpstreamSettings(Model):
    targets: tuple[str, ...] = Field(min_length=1)
    timeouts: Timeouts = Timeouts()
    #: Extra attempts for idempotent requests, on connect errors only.
    retries: int = Field(1, ge=0, le=5)
    max_connections: int = Field(DEFAULT_MAX_CONNECTIONS, ge=1)
    #: A target that fails to connect is skipped for this long (passive health).
    fail_timeout: Duration = DEFAULT_FAIL_TIMEOUT_S

    @field_validator("targets")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for target in value:
            if not target.startswith(("http://", "https://")):
                raise ValueError(f"target must be an http:// or https:// URL, got {target!r}")
        return tuple(target.rstrip("/") for target in value)


class Settings(Model):
    server: ServerSettings = ServerSettings()
    engine: EngineSettings = EngineSettings()
    upstreams: dict[str, UpstreamSettings] = {}
    routes: tuple[RouteSettings, ...] = ()
    identities: IdentitySettings = IdentitySettings()
    ratelimit: RateLimitSettings = RateLimitSettings()
    shortener: ShortenerSettings = ShortenerSettings()
    notifications: NotificationSettings = NotificationSettings()
    hooks: tuple[HookSettings, ...] = ()

    def reference_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems that span sections (a route naming a missing upstream...), each with its location."""
        errors: list[tuple[tuple[str | int, ...], str]] = []
        seen: set[str] = set()
        for index, route in enumerate(self.routes):
            if route.upstream not in self.upstreams:
                errors.append((("routes", index, "upstream"), f"unknown upstream '{route.upstream}'"))
            if route.name in seen:
                errors.append((("routes", index, "name"), f"duplicate route name '{route.name}'"))
            seen.add(route.name)
        tiers = set(self.ratelimit.tiers)

        def check_tier(location: tuple[str | int, ...], tier: str) -> None:
            if tier not in tiers:
                errors.append((location, f"unknown tier '{tier}' (declared: {', '.join(self.ratelimit.tiers)})"))

        identities = self.identities
        check_tier(("identities", "anonymous_tier"), identities.anonymous_tier)
        if identities.user_header is not None:
            check_tier(("identities", "user_header", "default_tier"), identities.user_header.default_tier)
        if identities.jwt is not None:
            check_tier(("identities", "jwt", "default_tier"), identities.jwt.default_tier)
        keys: set[str] = set()
        for index, api_key in enumerate(identities.api_keys):
            check_tier(("identities", "api_keys", index, "tier"), api_key.tier)
            if api_key.key in keys:
                errors.append((("identities", "api_keys", index, "key"), "duplicate API key"))
            keys.add(api_key.key)
        for index, rule in enumerate(self.ratelimit.rules):
            for tier in rule.tiers or ():
                check_tier(("ratelimit", "rules", index, "tier"), tier)
        errors.extend(notification_errors(self.notifications, self.hooks))
        errors.extend(shortener_errors(self.shortener, self.routes, self.server.public_url))
        return errors
