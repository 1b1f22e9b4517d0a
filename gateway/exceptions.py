"""The gateway's errors. Third-party errors are translated into these once, at the boundary.

GatewayError
├── ConfigError             the YAML is invalid (carries every problem, file:line: field: message)
├── InvalidRequest          the request cannot be forwarded unambiguously (framing, path)      → 400 / 501
├── StorageError            a state engine (Redis, the database) failed or missed its deadline → 503
│   └── CircuitOpen             its circuit breaker refused the call without trying it           → 503
└── UpstreamError           the upstream could not give a response                             → 502
    ├── UpstreamConnectError    connection refused, reset or unresolvable                        → 502
    ├── UpstreamTimeout         connect or read deadline passed                                  → 504
    └── BodyTooLarge            request body over the route's limit                              → 413

Each HTTP-facing error carries its status and a short machine-readable `error` code for the JSON body.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BodyTooLarge",
    "CircuitOpen",
    "ConfigError",
    "GatewayError",
    "InvalidRequest",
    "StorageError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamTimeout",
]


class GatewayError(Exception):
    """The root of every error the gateway raises on purpose."""

    status: int = 500
    error: str = "internal_error"


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


class BodyTooLarge(UpstreamError):
    """The request body is over the route's limit."""

    status = 413
    error = "payload_too_large"
