"""The gateway's errors. Third-party errors are translated into these once, at the boundary.

GatewayError
├── ConfigError             the YAML is invalid (carries every problem, file:line: field: message)
├── InvalidRequest          the request cannot be forwarded unambiguously (framing, path)      → 400 / 501
├── InvalidBody             a body sent to the gateway's own API is not strict JSON            → 400
├── UnsupportedMediaType    a body sent to the gateway's own API is not declared as JSON       → 415
├── BodyTooLarge            a request body is over its limit (the route's, or the own API's)   → 413
├── ShuttingDown            the request was still running when the drain ended                  → 503
├── StorageError            a state engine (Redis, the database) failed or missed its deadline → 503
│   ├── CircuitOpen             its circuit breaker refused the call without trying it           → 503
│   └── EngineOverloaded        too many calls already wait for it (backpressure, not an outage) → 503
└── UpstreamError           the upstream could not give a response                             → 502
    ├── UpstreamConnectError    connection refused, reset or unresolvable                        → 502
    └── UpstreamTimeout         connect or read deadline passed                                  → 504

Each HTTP-facing error carries its status and a short machine-readable `error` code for the JSON body.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BodyTooLarge",
    "CircuitOpen",
    "ConfigError",
    "EngineOverloaded",
    "GatewayError",
    "InvalidBody",
    "InvalidRequest",
    "ShuttingDown",
    "StorageError",
    "UpstreamConnectError",
    "UpstreamError",
    "UnsupportedMediaType",
    "UpstreamTimeout",
]


class GatewayError(Exception):
    """The root of every error the gateway raises on purpose."""

    status: int = 500
    error: str = "internal_error"
    #: The request field, header or part at fault, named in the JSON body; None when there is none.
    field: str | None = None


class ConfigError(GatewayError):
    """The configuration is invalid; `errors` holds one line per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


class InvalidRequest(GatewayError):
    """The request cannot be forwarded as one unambiguous message; `field` names the part at fault."""

    error = "invalid_request"

    def __init__(self, status: int, field: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.field = field


class ShuttingDown(GatewayError):
    """The request was still running when the drain after a shutdown signal ended."""

    status = 503
    error = "shutting_down"


class InvalidBody(GatewayError):
    """A body for the gateway's own API is not strict JSON (or not the shape asked for)."""

    status = 400
    error = "invalid_body"

    def __init__(self, detail: str, field: str = "body") -> None:
        super().__init__(detail)
        self.field = field


class UnsupportedMediaType(GatewayError):
    """A body for the gateway's own API is not declared as JSON."""

    status = 415
    error = "unsupported_media_type"


class StorageError(GatewayError):
    """A state engine (Redis, the database) failed or missed its deadline."""

    status = 503
    error = "storage_unavailable"


class CircuitOpen(StorageError):
    """A circuit breaker refused the call without trying the dependency."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is open; next probe in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


class EngineOverloaded(StorageError):
    """More calls than the engine's queue bound already wait for it: shed at once, not an outage."""


class UpstreamError(GatewayError):
    """The upstream could not give a response."""

    status = 502
    error = "bad_gateway"


class UpstreamConnectError(UpstreamError):
    """The upstream refused or dropped the connection."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect or answer in time."""

    status = 504
    error = "gateway_timeout"


class BodyTooLarge(GatewayError):
    """The request body is over its limit."""

    status = 413
    error = "payload_too_large"
