"""What every config model shares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


class Model(BaseModel):
    """Immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def upper_methods(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    methods = tuple(method.upper() for method in value)
    unknown = sorted(set(methods) - HTTP_METHODS)
    if unknown:
        raise ValueError(f"unknown HTTP method(s): {', '.join(unknown)}")
    return methods


def with_head(methods: tuple[str, ...] | None) -> frozenset[str] | None:
    """The methods a route or rule matches: HEAD is a GET without the body (RFC 9110 §9.3.2), so GET implies it."""
    if not methods:
        return None
    return frozenset(methods) | ({"HEAD"} if "GET" in methods else set())
