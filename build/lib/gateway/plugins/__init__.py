"""Channel plugins, written against the public interface in gateway.notify (see README, "Plugins")."""

from __future__ import annotations

__all__: list[str] = []
