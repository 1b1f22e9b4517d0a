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
