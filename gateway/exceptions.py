"""The gateway's errors. Third-party errors are translated into these once, at the boundary.

GatewayError
├── ConfigError             the YAML is invalid (carries every problem, file:line: field: message)
├── InvalidRequest          the request cannot be forwarded unambiguously (framing, path)      → 400 / 501
├── InvalidBody             a body sent to the gateway's own API is not strict JSON            → 400
├── InvalidField            a field of an own-API request breaks a rule (`field` names it)    → 400
├── ApiKeyRequired          the call needs an API key (shortener.require_api_key)             → 401
├── Forbidden               the caller's identity may not do this                              → 403
├── NotFound                no such resource (or route)                                        → 404
├── MethodNotAllowed        the path exists, the method does not                               → 405
├── Conflict                the request conflicts with the state (a taken alias...)            → 409
├── IdempotencyKeyReused    an Idempotency-Key sent again with another body                    → 422
├── UnsupportedMediaType    a body sent to the gateway's own API is not declared as JSON       → 415
├── BodyTooLarge            a request body is over its limit (the route's, or the own API's)   → 413
├── ShuttingDown            the request was still running when the drain ended                  → 503
├── StorageError            a state engine (Redis, the database) failed or missed its deadline → 503
│   ├── CircuitOpen             its circuit breaker refused the call without trying it           → 503
│   └── EngineOverloaded        too many calls already wait for it (backpressure, not an outage) → 503
└── UpstreamError           the upstream could not give a response                             → 502
    ├── UpstreamConnectError    connection refused, reset or unresolvable                        → 502
    └── UpstreamTimeout         connect or read deadline passed                                  → 504

Each HTTP-facing error carries its status and a short machine-readable `error` code for the JSON body; the own
API's endpoints raise them and one handler renders them (gateway/responses.py), Retry-After included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ApiKeyRequired",
    "BodyTooLarge",
    "CircuitOpen",
    "ConfigError",
    "Conflict",
    "EngineOverloaded",
    "Forbidden",
    "GatewayError",
    "IdempotencyKeyReused",
    "InvalidBody",
    "InvalidField",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
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
    #: More members of the JSON body: context a client can act on (a template error's variables...).
    extra: Mapping[str, Any] = {}

    def retry_after_s(self) -> int | None:
        """The Retry-After header's seconds, when waiting is what the client should do."""
        return None


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

    def retry_after_s(self) -> int | None:
        return 1


class InvalidBody(GatewayError):
    """A body for the gateway's own API is not strict JSON (or not the shape asked for)."""

    status = 400
    error = "invalid_body"

    def __init__(self, detail: str, field: str = "body") -> None:
        super().__init__(detail)
        self.field = field


class InvalidField(GatewayError):
    """A field of an own-API request breaks a rule; `field` names it (a body member, a parameter, a header)."""

    status = 400
    error = "invalid_field"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


class ApiKeyRequired(GatewayError):
    status = 401
    error = "api_key_required"


class Forbidden(GatewayError):
    status = 403
    error = "forbidden"


class NotFound(GatewayError):
    status = 404
    error = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    error = "method_not_allowed"


class Conflict(GatewayError):
    """The request conflicts with the current state; `error` says which conflict, and Retry-After when waiting
    resolves it (an idempotent twin still running)."""

    status = 409

    def __init__(self, error: str, detail: str, *, field: str | None = None, retry_after_s: int | None = None):
        super().__init__(detail)
        self.error = error
        self.field = field
        self._retry_after_s = retry_after_s

    def retry_after_s(self) -> int | None:
        return self._retry_after_s


class IdempotencyKeyReused(GatewayError):
    status = 422
    error = "idempotency_key_reused"


class UnsupportedMediaType(GatewayError):
    """A body for the gateway's own API is not declared as JSON."""

    status = 415
    error = "unsupported_media_type"


#: Retry-After of an unavailable store whose breaker cannot say when it will be back.
STORAGE_RETRY_AFTER_S = 5


class StorageError(GatewayError):
    """A state engine (Redis, the database) failed or missed its deadline."""

    status = 503
    error = "storage_unavailable"

    def retry_after_s(self) -> int | None:
        return STORAGE_RETRY_AFTER_S


class CircuitOpen(StorageError):
    """A circuit breaker refused the call without trying the dependency."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is open; next probe in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after

    def retry_after_s(self) -> int | None:
        return max(1, math.ceil(self.retry_after))


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
