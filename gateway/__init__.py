"""gateway: an API gateway sidecar with rate limits, short links and notifications."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.version import __version__

__all__ = ["RateLimitMiddleware", "Settings", "__version__", "create_app"]

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.config import Settings
    from gateway.ratelimit.middleware import RateLimitMiddleware

# Imported on first use: `gateway --version` and the CLI must not load the app (and its metrics) up front.
_LAZY = {
    "create_app": ("gateway.app", "create_app"),
    "Settings": ("gateway.config", "Settings"),
    "RateLimitMiddleware": ("gateway.ratelimit.middleware", "RateLimitMiddleware"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(module), attribute)
