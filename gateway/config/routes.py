"""Routes: what a request is matched on, and how it is forwarded to its upstream."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from gateway.config.base import Model, upper_methods
from gateway.config.units import ByteSize, Duration
from gateway.patterns import PathPattern

DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_READ_TIMEOUT_S = 30.0


class Timeouts(Model):
    connect: Duration = DEFAULT_CONNECT_TIMEOUT_S
    #: Longest wait for the next bytes from the upstream; 0 disables it (long polls, SSE).
    read: Duration = DEFAULT_READ_TIMEOUT_S
    #: Deadline for the whole exchange up to the response headers; 0 disables it.
    total: Duration = 0.0


class RouteMatch(Model):
    #: Exact host ("api.example.com") or a leading wildcard ("*.example.com").
    host: str | None = None
    #: Segment-aware prefix: "/app" matches /app and /app/x, not /apple.
    path_prefix: str | None = None
    #: A path pattern (gateway/patterns.py): exact, "*" for one segment ("/users/*/orders"), a final "**" for
    #: everything below.
    path: str | None = None
    methods: tuple[str, ...] | None = None

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return upper_methods(value)

    @field_validator("path_prefix", "path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"must start with '/': {value!r}")
        if value is not None:
            PathPattern.parse(value)  # `**` only last
        return value

    @model_validator(mode="after")
    def _one_path_kind(self) -> RouteMatch:
        if self.path_prefix is not None and self.path is not None:
            raise ValueError("give either path_prefix or path, not both")
        return self


class RouteSettings(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    match: RouteMatch
    upstream: str
    #: Remove the matched path_prefix before forwarding.
    strip_prefix: bool = False
    #: Replace the matched path_prefix with this one before forwarding.
    rewrite_prefix: str | None = None
    #: Forward the client's Host header instead of the target's.
    preserve_host: bool = False
    #: Forward the API key, user and tier headers the client sent (by default they stop at the gateway).
    forward_identity_headers: bool = False
    websocket: bool = False
    timeouts: Timeouts | None = None
    max_body_bytes: ByteSize | None = None

    @model_validator(mode="after")
    def _prefix_options(self) -> RouteSettings:
        if (self.strip_prefix or self.rewrite_prefix is not None) and self.match.path_prefix is None:
            raise ValueError("strip_prefix and rewrite_prefix need match.path_prefix")
        if self.strip_prefix and self.rewrite_prefix is not None:
            raise ValueError("give either strip_prefix or rewrite_prefix, not both")
        return self
