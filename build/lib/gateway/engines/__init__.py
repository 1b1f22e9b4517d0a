"""State engines: where atomic scripts run (Redis, Redis Cluster, or in-process Lua)."""

from __future__ import annotations
