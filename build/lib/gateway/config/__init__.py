"""Configuration: one YAML file parsed into typed, immutable settings."""

from __future__ import annotations

from gateway.config.loader import load_settings, parse_settings
from gateway.config.models import Settings

__all__ = ["Settings", "load_settings", "parse_settings"]
