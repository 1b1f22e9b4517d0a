"""gateway: an API gateway sidecar with rate limits, short links and notifications."""

from __future__ import annotations

__version__ = "0.1.0"
